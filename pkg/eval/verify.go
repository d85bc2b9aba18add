package eval

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// Scored is a labelled pair with the distance a model gave it.
type Scored struct {
	Fold     int // used by KFold only
	Same     bool
	Distance float64
}

// ErrNoData is returned when there is nothing (or only one class) to evaluate.
var ErrNoData = errors.New("eval: not enough labelled pairs")

func checkScored(pairs []Scored, needBoth bool) (pos, neg int, err error) {
	for i, p := range pairs {
		if math.IsNaN(p.Distance) {
			return 0, 0, fmt.Errorf("eval: pair %d has a NaN distance", i)
		}
		if p.Same {
			pos++
		} else {
			neg++
		}
	}
	if len(pairs) == 0 || (needBoth && (pos == 0 || neg == 0)) {
		return pos, neg, fmt.Errorf("%w: %d same-person and %d different-person pairs", ErrNoData, pos, neg)
	}
	return pos, neg, nil
}

// sortedCopy returns the pairs sorted by distance.
func sortedCopy(pairs []Scored) []Scored {
	s := append([]Scored(nil), pairs...)
	sort.SliceStable(s, func(i, j int) bool { return s[i].Distance < s[j].Distance })
	return s
}

// Rates are the outcomes at one threshold (accept when distance < Threshold).
type Rates struct {
	Threshold      float64
	TP, FN, FP, TN int
	Accuracy       float64 // (TP+TN)/all
	TAR            float64 // TP/(TP+FN): genuine pairs accepted
	FAR            float64 // FP/(FP+TN): impostor pairs accepted
	FRR            float64 // 1-TAR
}

// RatesAt counts the outcomes at threshold t.
func RatesAt(pairs []Scored, t float64) Rates {
	r := Rates{Threshold: t}
	for _, p := range pairs {
		acc := p.Distance < t
		switch {
		case p.Same && acc:
			r.TP++
		case p.Same:
			r.FN++
		case acc:
			r.FP++
		default:
			r.TN++
		}
	}
	r.fill()
	return r
}

func (r *Rates) fill() {
	if n := r.TP + r.FN + r.FP + r.TN; n > 0 {
		r.Accuracy = float64(r.TP+r.TN) / float64(n)
	}
	if r.TP+r.FN > 0 {
		r.TAR = float64(r.TP) / float64(r.TP+r.FN)
		r.FRR = 1 - r.TAR
	}
	if r.FP+r.TN > 0 {
		r.FAR = float64(r.FP) / float64(r.FP+r.TN)
	}
}

// BestThreshold returns the threshold of highest accuracy on the pairs.
// Candidates are the midpoints between consecutive distinct distances
// (plus "accept none" at the smallest distance and "accept all" just above
// the largest), so the optimum is exact rather than read off a grid. When
// several thresholds tie, the smallest wins: in access control the lower
// threshold accepts fewer impostors for the same accuracy.
func BestThreshold(pairs []Scored) (Rates, error) {
	pos, neg, err := checkScored(pairs, false)
	if err != nil {
		return Rates{}, err
	}
	s := sortedCopy(pairs)
	// Threshold below everything: all rejected.
	best := Rates{Threshold: s[0].Distance, FN: pos, TN: neg}
	cur := best
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j].Distance == s[i].Distance {
			if s[j].Same {
				cur.TP++
				cur.FN--
			} else {
				cur.FP++
				cur.TN--
			}
			j++
		}
		if j < len(s) {
			cur.Threshold = s[i].Distance + (s[j].Distance-s[i].Distance)/2
		} else {
			cur.Threshold = math.Nextafter(s[i].Distance, math.Inf(1))
		}
		if cur.TP+cur.TN > best.TP+best.TN {
			best = cur
		}
		i = j
	}
	best.fill()
	return best, nil
}

// FoldResult is one held-out fold of KFold.
type FoldResult struct {
	Fold          int
	Threshold     float64 // chosen on the other folds
	TrainAccuracy float64 // on the other folds, at Threshold
	Accuracy      float64 // on this fold, at Threshold
}

// KFoldResult is the protocol's outcome.
type KFoldResult struct {
	Folds []FoldResult
	Mean  float64
	// StdPopulation is the standard deviation over folds with divisor k
	// (numpy's default), which is what facenet's and insightface's LFW
	// evaluations print as "accuracy: mean+-std" and hence what most
	// published model tables report.
	StdPopulation float64
	// StdSample uses divisor k-1; StdErr = StdSample/sqrt(k) is the
	// "standard error of the mean" LFW's own results page asks for.
	StdSample, StdErr float64
}

// KFold runs the k-fold verification protocol (LFW's View 2 with the pairs'
// Fold set from pairs.txt): for each fold the accuracy-maximising
// threshold is chosen on all other folds and the accuracy measured on the
// held-out fold.
func KFold(pairs []Scored) (KFoldResult, error) {
	if _, _, err := checkScored(pairs, true); err != nil {
		return KFoldResult{}, err
	}
	byFold := map[int][]Scored{}
	for _, p := range pairs {
		byFold[p.Fold] = append(byFold[p.Fold], p)
	}
	if len(byFold) < 2 {
		return KFoldResult{}, fmt.Errorf("%w: %d fold(s), need at least 2", ErrNoData, len(byFold))
	}
	ids := make([]int, 0, len(byFold))
	for f := range byFold {
		ids = append(ids, f)
	}
	sort.Ints(ids)
	var res KFoldResult
	for _, f := range ids {
		var train []Scored
		for _, g := range ids {
			if g != f {
				train = append(train, byFold[g]...)
			}
		}
		best, err := BestThreshold(train)
		if err != nil {
			return KFoldResult{}, err
		}
		test := RatesAt(byFold[f], best.Threshold)
		res.Folds = append(res.Folds, FoldResult{Fold: f, Threshold: best.Threshold, TrainAccuracy: best.Accuracy, Accuracy: test.Accuracy})
	}
	k := float64(len(res.Folds))
	for _, fr := range res.Folds {
		res.Mean += fr.Accuracy
	}
	res.Mean /= k
	var ss float64
	for _, fr := range res.Folds {
		ss += (fr.Accuracy - res.Mean) * (fr.Accuracy - res.Mean)
	}
	res.StdPopulation = math.Sqrt(ss / k)
	res.StdSample = math.Sqrt(ss / (k - 1))
	res.StdErr = res.StdSample / math.Sqrt(k)
	return res, nil
}

// ROCPoint is one operating point.
type ROCPoint struct {
	Threshold float64 // accept distance < Threshold
	FAR, TAR  float64
}

// ROC is the receiver operating characteristic over all pairs: one point
// per distinct distance, from (0,0) to (1,1), FAR and TAR non-decreasing.
type ROC struct {
	Points   []ROCPoint
	Pos, Neg int
	sorted   []Scored
}

// ComputeROC builds the ROC of the pairs.
func ComputeROC(pairs []Scored) (ROC, error) {
	pos, neg, err := checkScored(pairs, true)
	if err != nil {
		return ROC{}, err
	}
	s := sortedCopy(pairs)
	r := ROC{Pos: pos, Neg: neg, sorted: s}
	r.Points = append(r.Points, ROCPoint{Threshold: s[0].Distance})
	tp, fp := 0, 0
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && s[j].Distance == s[i].Distance {
			if s[j].Same {
				tp++
			} else {
				fp++
			}
			j++
		}
		t := math.Nextafter(s[i].Distance, math.Inf(1))
		if j < len(s) {
			t = s[j].Distance
		}
		r.Points = append(r.Points, ROCPoint{Threshold: t, FAR: float64(fp) / float64(neg), TAR: float64(tp) / float64(pos)})
		i = j
	}
	return r, nil
}

// AUC is the area under the ROC by the trapezoid rule, which equals the
// probability that a random impostor pair is farther than a random genuine
// pair, ties counting one half.
func (r ROC) AUC() float64 {
	var a float64
	for i := 1; i < len(r.Points); i++ {
		p, q := r.Points[i-1], r.Points[i]
		a += (q.FAR - p.FAR) * (q.TAR + p.TAR) / 2
	}
	return a
}

// EER is the equal error rate: where the ROC polyline crosses FAR = FRR
// (= 1 - TAR), linearly interpolated along the segment that crosses it,
// together with the threshold interpolated the same way.
func (r ROC) EER() (rate, threshold float64) {
	for i := 1; i < len(r.Points); i++ {
		p, q := r.Points[i-1], r.Points[i]
		gp, gq := p.FAR+p.TAR-1, q.FAR+q.TAR-1 // FAR - FRR
		if gp <= 0 && gq >= 0 {
			if gq == gp {
				return p.FAR, p.Threshold
			}
			s := -gp / (gq - gp)
			return p.FAR + s*(q.FAR-p.FAR), p.Threshold + s*(q.Threshold-p.Threshold)
		}
	}
	return math.NaN(), math.NaN() // unreachable: the curve runs from g=-1 to g=+1
}

// OperatingPoint is TAR at a target FAR.
type OperatingPoint struct {
	TargetFAR float64
	// MaxFalseAccepts = floor(TargetFAR * impostor pairs): with LFW's 3000
	// impostor pairs, FAR 1e-2 allows 30 and FAR 1e-3 allows 3. Below one
	// impostor pair the target cannot be resolved and the point is TAR at
	// zero false accepts (Resolved is false).
	MaxFalseAccepts int
	Resolved        bool
	Rates
}

// TARAtFAR returns the operating point with the largest threshold whose
// false accepts do not exceed MaxFalseAccepts: the threshold is the
// (MaxFalseAccepts+1)-th smallest impostor distance (accept strictly
// below it), or just above every distance if all impostors may pass. Ties
// at that distance can make the achieved FAR lower than allowed, never
// higher.
func (r ROC) TARAtFAR(target float64) (OperatingPoint, error) {
	if !(target >= 0 && target <= 1) {
		return OperatingPoint{}, fmt.Errorf("eval: target FAR %v outside [0,1]", target)
	}
	k := int(math.Floor(target*float64(r.Neg) + 1e-9))
	op := OperatingPoint{TargetFAR: target, MaxFalseAccepts: k, Resolved: target*float64(r.Neg) >= 1-1e-9}
	t := math.Inf(1)
	seen := 0
	for _, p := range r.sorted {
		if !p.Same {
			if seen == k {
				t = p.Distance
				break
			}
			seen++
		}
	}
	if math.IsInf(t, 1) {
		t = math.Nextafter(r.sorted[len(r.sorted)-1].Distance, math.Inf(1))
	}
	op.Rates = RatesAt(r.sorted, t)
	return op, nil
}

// CalibrationMode chooses what Calibrate optimises.
type CalibrationMode int

const (
	// MaxAccuracy picks the accuracy-maximising threshold (BestThreshold).
	MaxAccuracy CalibrationMode = iota
	// AtTargetFAR picks the largest threshold whose FAR does not exceed the
	// target (TARAtFAR): the usual choice for access control, where the
	// false-accept rate is the security requirement.
	AtTargetFAR
)

// Calibrate chooses a model's operating threshold from labelled pairs and
// returns it with the rates it achieves on them. targetFAR is used by
// AtTargetFAR only. The rates are measured on the same pairs the threshold
// was chosen on, so they are optimistic; KFold gives the honest estimate.
func Calibrate(pairs []Scored, mode CalibrationMode, targetFAR float64) (Rates, error) {
	switch mode {
	case MaxAccuracy:
		if _, _, err := checkScored(pairs, true); err != nil {
			return Rates{}, err
		}
		return BestThreshold(pairs)
	case AtTargetFAR:
		roc, err := ComputeROC(pairs)
		if err != nil {
			return Rates{}, err
		}
		op, err := roc.TARAtFAR(targetFAR)
		if err != nil {
			return Rates{}, err
		}
		if !op.Resolved && targetFAR > 0 {
			return Rates{}, fmt.Errorf("eval: target FAR %v needs at least %.0f impostor pairs, have %d", targetFAR, math.Ceil(1/targetFAR), roc.Neg)
		}
		return op.Rates, nil
	}
	return Rates{}, fmt.Errorf("eval: unknown calibration mode %d", mode)
}
