package eval

import (
	"math"
	"testing"
)

func v(x ...float32) []float32 { return x }

// The cases the brief fixes, including the one that tells a per-example sum
// over the wrong axis (4) from the right one (5).
func TestTripletLossKnownCases(t *testing.T) {
	for _, tc := range []struct {
		name    string
		a, p, n [][]float32
		alpha   float64
		want    float64
	}{
		{"all equal", [][]float32{v(1, 1)}, [][]float32{v(1, 1)}, [][]float32{v(1, 1)}, 5, 5},
		{"negative away", [][]float32{v(1, 1)}, [][]float32{v(1, 1)}, [][]float32{v(0, 0)}, 3, 1},
		{"negative on anchor", [][]float32{v(1, 1)}, [][]float32{v(0, 0)}, [][]float32{v(1, 1)}, 0, 2},
		{"zeros, negative margin", [][]float32{v(0, 0)}, [][]float32{v(0, 0)}, [][]float32{v(0, 0)}, -2, 0},
		{"batch of two", [][]float32{v(1, 0), v(1, 0)}, [][]float32{v(1, 0), v(1, 0)}, [][]float32{v(0, 1), v(0, 1)}, 3, 2},
		{"per-example axis", [][]float32{v(1, 1), v(2, 0)}, [][]float32{v(0, 3), v(1, 1)}, [][]float32{v(1, 0), v(0, 1)}, 1, 5},
	} {
		st, err := TripletLoss(tc.a, tc.p, tc.n, tc.alpha)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if math.Abs(st.Loss-tc.want) > 1e-12 {
			t.Errorf("%s: loss %v, want %v", tc.name, st.Loss, tc.want)
		}
	}
}

func TestTripletCounts(t *testing.T) {
	// d(A,P), d(A,N) squared: (1,0) hard; (1,1.1) semi-hard at alpha 0.2;
	// (1,1.5) easy; (1,1) tie: neither hard nor semi-hard but active.
	a := [][]float32{v(0, 0), v(0, 0), v(0, 0), v(0, 0)}
	p := [][]float32{v(1, 0), v(1, 0), v(1, 0), v(1, 0)}
	n := [][]float32{v(0, 0), v(0, float32(math.Sqrt(1.1))), v(0, float32(math.Sqrt(1.5))), v(0, 1)}
	st, err := TripletLoss(a, p, n, DefaultAlpha)
	if err != nil {
		t.Fatal(err)
	}
	if st.N != 4 || st.Hard != 1 || st.SemiHard != 1 || st.Active != 3 {
		t.Fatalf("%+v", st)
	}
	// loss = (1-0+.2) + (1-1.1+.2) + 0 + (1-1+.2) = 1.2 + 0.1 + 0.2
	if math.Abs(st.Loss-1.5) > 1e-6 {
		t.Errorf("loss %v, want 1.5", st.Loss)
	}
}

func TestTripletErrors(t *testing.T) {
	if _, err := TripletLoss([][]float32{v(1)}, [][]float32{v(1), v(2)}, [][]float32{v(1)}, 0.2); err == nil {
		t.Error("batch size mismatch accepted")
	}
	if _, err := TripletLoss([][]float32{v(1, 2)}, [][]float32{v(1)}, [][]float32{v(1, 2)}, 0.2); err == nil {
		t.Error("dimension mismatch accepted")
	}
	if _, err := TripletLoss([][]float32{v(float32(math.NaN()))}, [][]float32{v(1)}, [][]float32{v(1)}, 0.2); err == nil {
		t.Error("NaN accepted")
	}
	if _, err := TripletLoss([][]float32{v(1)}, [][]float32{v(1)}, [][]float32{v(1)}, math.Inf(1)); err == nil {
		t.Error("infinite alpha accepted")
	}
	if st, err := TripletLoss(nil, nil, nil, 0.2); err != nil || st.Loss != 0 || st.N != 0 {
		t.Errorf("empty batch: %+v %v", st, err)
	}
}
