package eval

import (
	"fmt"
	"math"
)

// DefaultAlpha is FaceNet's margin, the seed project's value.
const DefaultAlpha = 0.2

// TripletStats summarises a batch of triplets. Distances are squared L2,
// the quantity the loss uses, so "hard" and "semi-hard" are measured on the
// same scale as the margin (as in the FaceNet paper).
type TripletStats struct {
	// Loss is sum_i max(|A_i-P_i|^2 - |A_i-N_i|^2 + alpha, 0), summed (not
	// averaged) over the batch.
	Loss float64
	N    int // triplets
	// Active counts triplets with a positive loss term.
	Active int
	// Hard: d(A,N) < d(A,P), the negative is closer than the positive.
	Hard int
	// SemiHard: d(A,P) < d(A,N) < d(A,P) + alpha, correctly ordered but
	// inside the margin.
	SemiHard int
}

// TripletLoss computes the loss and counts over a batch: a[i], p[i], n[i]
// are the anchor, positive and negative embeddings of triplet i. All
// vectors must have the same, non-zero length.
func TripletLoss(a, p, n [][]float32, alpha float64) (TripletStats, error) {
	if len(a) != len(p) || len(a) != len(n) {
		return TripletStats{}, fmt.Errorf("eval: triplets: %d anchors, %d positives, %d negatives", len(a), len(p), len(n))
	}
	if math.IsNaN(alpha) || math.IsInf(alpha, 0) {
		return TripletStats{}, fmt.Errorf("eval: triplets: alpha %v is not finite", alpha)
	}
	st := TripletStats{N: len(a)}
	if len(a) == 0 {
		return st, nil
	}
	dim := len(a[0])
	if dim == 0 {
		return TripletStats{}, fmt.Errorf("eval: triplets: empty embedding")
	}
	for i := range a {
		if len(a[i]) != dim || len(p[i]) != dim || len(n[i]) != dim {
			return TripletStats{}, fmt.Errorf("eval: triplet %d: lengths %d/%d/%d, want %d", i, len(a[i]), len(p[i]), len(n[i]), dim)
		}
		dp, dn := sqDist(a[i], p[i]), sqDist(a[i], n[i])
		if math.IsNaN(dp) || math.IsNaN(dn) || math.IsInf(dp, 0) || math.IsInf(dn, 0) {
			return TripletStats{}, fmt.Errorf("eval: triplet %d: non-finite embedding", i)
		}
		if term := dp - dn + alpha; term > 0 {
			st.Loss += term
			st.Active++
		}
		switch {
		case dn < dp:
			st.Hard++
		case dp < dn && dn < dp+alpha:
			st.SemiHard++
		}
	}
	return st, nil
}

func sqDist(x, y []float32) float64 {
	var s float64
	for i := range x {
		d := float64(x[i]) - float64(y[i])
		s += d * d
	}
	return s
}
