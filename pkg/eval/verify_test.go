package eval

import (
	"bytes"
	"errors"
	"image"
	"image/png"
	"math"
	"math/rand"
	"testing"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func scored(fold int, same []float64, diff []float64) []Scored {
	var out []Scored
	for _, d := range same {
		out = append(out, Scored{Fold: fold, Same: true, Distance: d})
	}
	for _, d := range diff {
		out = append(out, Scored{Fold: fold, Distance: d})
	}
	return out
}

func TestBestThresholdByHand(t *testing.T) {
	// sorted: .1S .2S .4D .5S .6D .7D; accuracy 5/6 at t=0.3 and t=0.55:
	// the smaller one wins.
	r, err := BestThreshold(scored(0, []float64{0.5, 0.1, 0.2}, []float64{0.7, 0.4, 0.6}))
	if err != nil {
		t.Fatal(err)
	}
	if !near(r.Threshold, 0.3, 1e-12) || !near(r.Accuracy, 5.0/6, 1e-12) || r.TP != 2 || r.TN != 3 {
		t.Errorf("%+v", r)
	}
	// Everything the same distance: accepting none (3 of 6 right) ties with
	// accepting all; the smaller threshold (accept none) wins.
	r, _ = BestThreshold(scored(0, []float64{1, 1, 1}, []float64{1, 1, 1}))
	if r.Threshold != 1 || r.TP != 0 || r.Accuracy != 0.5 {
		t.Errorf("all tied: %+v", r)
	}
	// Only same pairs: accept all.
	r, _ = BestThreshold(scored(0, []float64{2, 3}, nil))
	if r.Accuracy != 1 || !(r.Threshold > 3) || RatesAt(scored(0, []float64{2, 3}, nil), r.Threshold).TP != 2 {
		t.Errorf("only same: %+v", r)
	}
	if _, err := BestThreshold([]Scored{{Distance: math.NaN()}}); err == nil {
		t.Error("NaN accepted")
	}
}

// Three folds worked out by hand in the comments.
func TestKFoldByHand(t *testing.T) {
	var pairs []Scored
	pairs = append(pairs, scored(0, []float64{1, 2}, []float64{3, 4})...)
	pairs = append(pairs, scored(1, []float64{1, 2}, []float64{3, 4})...)
	pairs = append(pairs, scored(2, []float64{1, 3.5}, []float64{0.5, 4})...)
	// Holding out fold 0 (or 1): training distances .5D 1S 1S 2S 3D 3.5S 4D 4D
	// reach 6/8 at t=2.5 and t=3.75; 2.5 wins and fold 0 scores 4/4.
	// Holding out fold 2: folds 0+1 separate perfectly at 2.5; fold 2 then
	// gets S1 right, S3.5 wrong, D0.5 wrong, D4 right: 2/4.
	res, err := KFold(pairs)
	if err != nil {
		t.Fatal(err)
	}
	want := []FoldResult{{0, 2.5, 0.75, 1}, {1, 2.5, 0.75, 1}, {2, 2.5, 1, 0.5}}
	for i, w := range want {
		if res.Folds[i] != w {
			t.Errorf("fold %d: %+v, want %+v", i, res.Folds[i], w)
		}
	}
	// mean 5/6; deviations 1/6, 1/6, -1/3: sum of squares 1/6
	if !near(res.Mean, 5.0/6, 1e-12) || !near(res.StdPopulation, math.Sqrt(1.0/18), 1e-12) ||
		!near(res.StdSample, math.Sqrt(1.0/12), 1e-12) || !near(res.StdErr, math.Sqrt(1.0/36), 1e-12) {
		t.Errorf("summary %+v", res)
	}
	if _, err := KFold(scored(0, []float64{1}, []float64{2})); !errors.Is(err, ErrNoData) {
		t.Errorf("one fold: %v", err)
	}
}

func TestKFoldSeparable(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	var pairs []Scored
	for f := 0; f < 10; f++ {
		for i := 0; i < 300; i++ {
			pairs = append(pairs, Scored{Fold: f, Same: true, Distance: rng.Float64() * 0.6})
			pairs = append(pairs, Scored{Fold: f, Distance: 0.7 + rng.Float64()*0.6})
		}
	}
	res, err := KFold(pairs)
	if err != nil {
		t.Fatal(err)
	}
	if res.Mean != 1 || res.StdPopulation != 0 || len(res.Folds) != 10 {
		t.Errorf("%+v", res)
	}
	for _, f := range res.Folds {
		if !(f.Threshold > 0.6 && f.Threshold < 0.7) {
			t.Errorf("fold %d threshold %v outside the gap", f.Fold, f.Threshold)
		}
	}
	roc, _ := ComputeROC(pairs)
	if roc.AUC() != 1 {
		t.Errorf("AUC %v", roc.AUC())
	}
	if eer, _ := roc.EER(); eer != 0 {
		t.Errorf("EER %v", eer)
	}
}

func TestROCByHand(t *testing.T) {
	// 1S 2D 3S 4D: ROC (0,0) (0,.5) (.5,.5) (.5,1) (1,1); AUC 3/4; EER .5
	roc, err := ComputeROC(scored(0, []float64{3, 1}, []float64{4, 2}))
	if err != nil {
		t.Fatal(err)
	}
	want := []ROCPoint{{1, 0, 0}, {2, 0, 0.5}, {3, 0.5, 0.5}, {4, 0.5, 1}, {math.Nextafter(4, 5), 1, 1}}
	if len(roc.Points) != len(want) {
		t.Fatalf("%+v", roc.Points)
	}
	for i, w := range want {
		if roc.Points[i] != w {
			t.Errorf("point %d: %+v want %+v", i, roc.Points[i], w)
		}
	}
	if roc.AUC() != 0.75 {
		t.Errorf("AUC %v", roc.AUC())
	}
	if eer, th := roc.EER(); eer != 0.5 || th != 3 {
		t.Errorf("EER %v at %v", eer, th)
	}
	// A tie between a genuine and an impostor pair counts one half.
	roc, _ = ComputeROC(scored(0, []float64{1}, []float64{1}))
	if roc.AUC() != 0.5 {
		t.Errorf("tied AUC %v", roc.AUC())
	}
	if _, err := ComputeROC(scored(0, []float64{1}, nil)); !errors.Is(err, ErrNoData) {
		t.Errorf("no impostors: %v", err)
	}
}

// AUC by the trapezoid rule equals the Mann-Whitney statistic counted
// pair by pair.
func TestAUCMatchesMannWhitney(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	var same, diff []float64
	for i := 0; i < 400; i++ {
		same = append(same, math.Round(rng.NormFloat64()*10)/10)     // rounding makes ties
		diff = append(diff, math.Round((rng.NormFloat64()+1)*10)/10) // shifted: AUC about 0.76
	}
	roc, _ := ComputeROC(scored(0, same, diff))
	var mw float64
	for _, s := range same {
		for _, d := range diff {
			if d > s {
				mw++
			} else if d == s {
				mw += 0.5
			}
		}
	}
	mw /= float64(len(same) * len(diff))
	if !near(roc.AUC(), mw, 1e-12) {
		t.Errorf("AUC %v, Mann-Whitney %v", roc.AUC(), mw)
	}
	// EER: at the returned threshold FAR and FRR straddle the EER.
	eer, th := roc.EER()
	r := RatesAt(scored(0, same, diff), th)
	if !(eer > 0.1 && eer < 0.5) || math.Abs(r.FAR-r.FRR) > 0.06 {
		t.Errorf("EER %v at %v: FAR %v FRR %v", eer, th, r.FAR, r.FRR)
	}
}

// LFW's size: 3000 impostor pairs at distances 1500..4499 and 3000
// genuine pairs at 0..2999.
func lfwLike() []Scored {
	var p []Scored
	for i := 0; i < 3000; i++ {
		p = append(p, Scored{Same: true, Distance: float64(i)}, Scored{Distance: float64(1500 + i)})
	}
	return p
}

func TestTARAtFAR(t *testing.T) {
	roc, _ := ComputeROC(lfwLike())
	for _, tc := range []struct {
		far       float64
		k         int
		resolved  bool
		threshold float64
		tar, gotF float64
	}{
		{1e-3, 3, true, 1503, 1503.0 / 3000, 3.0 / 3000},
		{1e-2, 30, true, 1530, 1530.0 / 3000, 30.0 / 3000},
		{1e-4, 0, false, 1500, 0.5, 0},
		{1, 3000, true, math.Nextafter(4499, 5000), 1, 1},
	} {
		op, err := roc.TARAtFAR(tc.far)
		if err != nil {
			t.Fatal(err)
		}
		if op.MaxFalseAccepts != tc.k || op.Resolved != tc.resolved || op.Threshold != tc.threshold || op.TAR != tc.tar || op.FAR != tc.gotF {
			t.Errorf("FAR %v: %+v", tc.far, op)
		}
	}
	// Ties at the threshold distance lower the achieved FAR, never raise it.
	p := lfwLike()
	p[1].Distance, p[3].Distance, p[5].Distance, p[7].Distance = 1500, 1500, 1500, 1500 // four impostors tied
	roc, _ = ComputeROC(p)
	op, _ := roc.TARAtFAR(1e-3)
	if op.FP != 0 || op.Threshold != 1500 {
		t.Errorf("tied impostors: %+v", op)
	}
	if _, err := roc.TARAtFAR(2); err == nil {
		t.Error("FAR 2 accepted")
	}
}

func TestCalibrate(t *testing.T) {
	p := lfwLike()
	r, err := Calibrate(p, AtTargetFAR, 1e-3)
	if err != nil {
		t.Fatal(err)
	}
	if r.Threshold != 1503 || r.FP != 3 || r.TP != 1503 {
		t.Errorf("target FAR: %+v", r)
	}
	if _, err := Calibrate(p, AtTargetFAR, 1e-4); err == nil {
		t.Error("unresolvable FAR accepted")
	}
	// Max accuracy: genuine 0..2999, impostors 1500..4499; every threshold
	// in the overlap is equally good (4500/6000): the smallest, just above
	// 1499 (midpoint 1499.5), wins.
	r, err = Calibrate(p, MaxAccuracy, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r.Threshold != 1499.5 || r.Accuracy != 0.75 {
		t.Errorf("max accuracy: %+v", r)
	}
	if _, err := Calibrate(p, CalibrationMode(9), 0); err == nil {
		t.Error("unknown mode accepted")
	}
}

func decodePlot(t *testing.T, curves []Curve, opt PlotOptions) *image.RGBA {
	t.Helper()
	var buf bytes.Buffer
	if err := PlotROC(&buf, curves, opt); err != nil {
		t.Fatal(err)
	}
	m, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return m.(*image.RGBA)
}

// columnHits lists the rows where a column has the curve's colour.
func columnHits(m *image.RGBA, x int, c [3]uint8) []int {
	var ys []int
	for y := 0; y < m.Rect.Dy(); y++ {
		o := m.PixOffset(x, y)
		if m.Pix[o] == c[0] && m.Pix[o+1] == c[1] && m.Pix[o+2] == c[2] {
			ys = append(ys, y)
		}
	}
	return ys
}

func TestPlotROC(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	var perfect, chance []Scored
	for i := 0; i < 3000; i++ {
		perfect = append(perfect, Scored{Same: true, Distance: rng.Float64()}, Scored{Distance: 2 + rng.Float64()})
	}
	for i := 0; i < 20000; i++ {
		chance = append(chance, Scored{Same: i%2 == 0, Distance: rng.Float64()})
	}
	rp, _ := ComputeROC(perfect)
	m := decodePlot(t, []Curve{{"perfect", rp}}, PlotOptions{})
	if m.Rect.Dx() != 640 || m.Rect.Dy() != 480 {
		t.Fatalf("size %v", m.Rect)
	}
	blue := [3]uint8{0, 90, 200}
	// plot area: left 60, top 20, right 620, bottom 430; TAR 1 is row 20.
	for _, x := range []int{100, 300, 600} {
		ys := columnHits(m, x, blue)
		if len(ys) == 0 || ys[0] != 20 {
			t.Errorf("perfect classifier: column %d has the curve at rows %v, want row 20", x, ys)
		}
	}
	rc, _ := ComputeROC(chance)
	m = decodePlot(t, []Curve{{"chance", rc}}, PlotOptions{MinFAR: 1e-3})
	// At FAR f the chance curve sits at TAR f: row 430 - 410 f.
	for _, f := range []float64{0.01, 0.1, 0.5} {
		x := 60 + int(math.Round((math.Log10(f)+3)/3*560))
		ys := columnHits(m, x, blue)
		want := 430 - 410*f
		ok := false
		for _, y := range ys {
			if math.Abs(float64(y)-want) < 410*0.03+2 {
				ok = true
			}
		}
		if !ok {
			t.Errorf("chance curve at FAR %v: rows %v, want near %.0f", f, ys, want)
		}
	}
	if err := PlotROC(&bytes.Buffer{}, nil, PlotOptions{}); err == nil {
		t.Error("no curves accepted")
	}
	if err := PlotROC(&bytes.Buffer{}, []Curve{{"x", rc}}, PlotOptions{MinFAR: 2}); err == nil {
		t.Error("MinFAR 2 accepted")
	}
}
