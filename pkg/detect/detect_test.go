package detect

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/facegate/facegate/pkg/imaging"
)

// raw builds BlazeFace-256 outputs by hand: every logit is -10 (score
// 4.5e-5) until a row is set.
type raw struct {
	n          int
	s512, s384 []float32
	r512, r384 []float32
}

func newRaw(n int) *raw {
	r := &raw{n: n, s512: make([]float32, n*512), s384: make([]float32, n*384),
		r512: make([]float32, n*512*16), r384: make([]float32, n*384*16)}
	for i := range r.s512 {
		r.s512[i] = -10
	}
	for i := range r.s384 {
		r.s384[i] = -10
	}
	return r
}

// set writes one anchor row (0..895, in concatenated order) of image b.
func (r *raw) set(b, row int, logit float32, reg [16]float32) {
	if row < 512 {
		r.s512[b*512+row] = logit
		copy(r.r512[(b*512+row)*16:], reg[:])
		return
	}
	row -= 512
	r.s384[b*384+row] = logit
	copy(r.r384[(b*384+row)*16:], reg[:])
}

// tensors returns the four outputs in a deliberately scrambled order
// (regressors 384, scores 512, scores 384, regressors 512).
func (r *raw) tensors() []Tensor {
	n := int64(r.n)
	return []Tensor{
		{Shape: []int64{n, 384, 16}, Data: r.r384},
		{Shape: []int64{n, 512, 1}, Data: r.s512},
		{Shape: []int64{n, 384, 1}, Data: r.s384},
		{Shape: []int64{n, 512, 16}, Data: r.r512},
	}
}

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestAnchors(t *testing.T) {
	a := Anchors(Layers(256))
	if len(a) != 896 {
		t.Fatalf("%d anchors", len(a))
	}
	for _, tc := range []struct {
		i    int
		x, y float64
	}{
		{0, 8, 8}, {1, 8, 8}, {2, 24, 8}, {31, 248, 8}, {32, 8, 24}, {511, 248, 248},
		{512, 16, 16}, {517, 16, 16}, {518, 48, 16}, {895, 240, 240},
	} {
		if a[tc.i].X != tc.x || a[tc.i].Y != tc.y {
			t.Errorf("anchor %d = %v, want (%v,%v)", tc.i, a[tc.i], tc.x, tc.y)
		}
	}
}

func faceReg(dx, dy, w, h float32) [16]float32 {
	reg := [16]float32{dx, dy, w, h}
	// keypoints relative to the anchor: eyes, nose, mouth, ears
	kp := [6][2]float32{{-10, -8}, {12, -9}, {1, 3}, {0, 15}, {-25, 0}, {26, 1}}
	for k, p := range kp {
		reg[4+2*k], reg[5+2*k] = p[0]+dx, p[1]+dy
	}
	return reg
}

func TestDecodeFaceAtKnownAnchors(t *testing.T) {
	layers := Layers(256)
	anchors := Anchors(layers)
	r := newRaw(1)
	rowA := (7*16+5)*2 + 1      // stride-16 grid, cell (5,7), second anchor: centre (88,120)
	rowB := 512 + (3*8+2)*6 + 4 // stride-32 grid, cell (2,3), fifth anchor: centre (80,112)
	r.set(0, rowA, 2, faceReg(3, -2, 60, 70))
	r.set(0, rowB, -1, faceReg(-4, 5, 100, 90))
	for _, outs := range [][]Tensor{r.tensors(), dropBatch(r.tensors())} {
		got, err := DecodeOutputs(outs, 1, layers, anchors, 0.2)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || len(got[0]) != 2 {
			t.Fatalf("got %v", got)
		}
		a, b := got[0][0], got[0][1]
		wantA := Box{88 + 3 - 30, 120 - 2 - 35, 60, 70}
		if a.Box != wantA || !near(a.Score, 1/(1+math.Exp(-2)), 1e-12) {
			t.Errorf("face A: %+v score %v, want %+v", a.Box, a.Score, wantA)
		}
		if a.Keypoints[LeftEye] != (imaging.Point{X: 88 - 10 + 3, Y: 120 - 8 - 2}) || a.Keypoints[RightEar] != (imaging.Point{X: 88 + 26 + 3, Y: 120 + 1 - 2}) {
			t.Errorf("face A keypoints %v", a.Keypoints)
		}
		wantB := Box{80 - 4 - 50, 112 + 5 - 45, 100, 90}
		if b.Box != wantB || !near(b.Score, 1/(1+math.Exp(1)), 1e-12) {
			t.Errorf("face B: %+v score %v, want %+v", b.Box, b.Score, wantB)
		}
	}
}

func dropBatch(ts []Tensor) []Tensor {
	for i := range ts {
		ts[i].Shape = ts[i].Shape[1:]
	}
	return ts
}

func TestDecodeRejectsBadOutputs(t *testing.T) {
	layers := Layers(256)
	anchors := Anchors(layers)
	good := func() []Tensor { return newRaw(1).tensors() }
	for _, tc := range []struct {
		name string
		outs func() []Tensor
		n    int
		want string
	}{
		{"missing", func() []Tensor { return good()[:3] }, 1, "missing"},
		{"duplicate", func() []Tensor { o := good(); return append(o, o[1]) }, 1, "two score outputs"},
		{"width", func() []Tensor { o := good(); o[0].Shape[2] = 8; o[0].Data = o[0].Data[:384*8]; return o }, 1, "last dimension"},
		{"rows", func() []Tensor { o := good(); o[1].Shape[1] = 500; o[1].Data = o[1].Data[:500]; return o }, 1, "match no anchor layer"},
		{"short data", func() []Tensor { o := good(); o[3].Data = o[3].Data[:100]; return o }, 1, "needs"},
		{"batch", good, 2, "batch"},
		{"rank", func() []Tensor { o := good(); o[2].Shape = []int64{1, 1, 384, 1}; return o }, 1, "want [n, rows"},
	} {
		_, err := DecodeOutputs(tc.outs(), tc.n, layers, anchors, 0.5)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestDecodeThresholdAndNaN(t *testing.T) {
	layers := Layers(256)
	r := newRaw(1)
	below := float32(math.Log(0.49 / 0.51))
	above := float32(math.Log(0.51 / 0.49))
	r.set(0, 10, below, faceReg(0, 0, 30, 30))
	r.set(0, 100, above, faceReg(0, 0, 30, 30))
	r.set(0, 200, 5, faceReg(float32(math.NaN()), 0, 30, 30))
	r.set(0, 300, float32(math.NaN()), faceReg(0, 0, 30, 30))
	r.set(0, 400, 5, faceReg(0, 0, -3, 30)) // negative width
	got, err := DecodeOutputs(r.tensors(), 1, layers, Anchors(layers), 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if len(got[0]) != 1 || !near(got[0][0].Score, 0.51, 1e-6) {
		t.Fatalf("want only the 0.51 face, got %+v", got[0])
	}
}

func face(x, y, w, h, score float64) Face {
	f := Face{Box: Box{x, y, w, h}, Score: score}
	for k := range f.Keypoints {
		f.Keypoints[k] = imaging.Point{X: x + float64(k), Y: y + float64(k)}
	}
	return f
}

func TestSuppress(t *testing.T) {
	a := face(0, 0, 100, 100, 0.9)
	b := face(10, 0, 100, 100, 0.6) // IoU with a = 90/110 = 0.818
	c := face(300, 300, 50, 50, 0.7)
	d := face(60, 0, 100, 100, 0.8) // IoU with a = 40/160 = 0.25: below 0.3, kept
	if iou := IoU(a.Box, b.Box); !near(iou, 90.0/110, 1e-12) {
		t.Fatalf("IoU %v", iou)
	}
	hard := Suppress([]Face{b, c, a, d}, HardNMS, 0.3)
	if len(hard) != 3 || hard[0].Box != a.Box || hard[1].Box != d.Box || hard[2].Box != c.Box {
		t.Fatalf("hard NMS: %+v", hard)
	}
	w := Suppress([]Face{b, c, a, d}, WeightedNMS, 0.3)
	if len(w) != 3 {
		t.Fatalf("weighted NMS kept %d", len(w))
	}
	// a and b merge: x = (0.9*0 + 0.6*10)/1.5 = 4; d is compared with a only (IoU 0.25) and survives
	if !near(w[0].Box.X, 4, 1e-12) || !near(w[0].Box.W, 100, 1e-12) || w[0].Score != 0.9 {
		t.Errorf("merged box %+v score %v", w[0].Box, w[0].Score)
	}
	if !near(w[0].Keypoints[2].X, 2+4, 1e-12) {
		t.Errorf("merged keypoint %v", w[0].Keypoints[2])
	}
	// a lower IoU threshold swallows d into a with hard NMS (Human's 0.1)
	if got := Suppress([]Face{a, d, c}, HardNMS, 0.1); len(got) != 2 {
		t.Errorf("IoU 0.1: %d faces", len(got))
	}
}

// squareRunner stands in for BlazeFace on synthetic pictures: it "detects"
// pure red squares on its input tensor that are at most maxSide input
// pixels wide (BlazeFace-back likewise misses faces that fill its input),
// emitting the square's box and keypoints at fixed fractions of it on the
// stride-16 anchor nearest its centre, plus an identical duplicate on a
// stride-32 anchor at a lower score for NMS to merge.
type squareRunner struct {
	// logits, when set, is the main anchor's logit on each successive call
	// (the first pass, then each recheck); otherwise 3 (score 0.95).
	logits  []float32
	calls   int
	maxSide float64
	biasX   float64 // shifts every keypoint by this many input pixels
	batches []int64
	err     error
}

var kpFrac = [6][2]float64{{0.3, 0.4}, {0.7, 0.4}, {0.5, 0.6}, {0.5, 0.8}, {0, 0.45}, {1, 0.45}}

func (s *squareRunner) Run(ctx context.Context, in Tensor) ([]Tensor, error) {
	if s.err != nil {
		return nil, s.err
	}
	n, size := int(in.Shape[0]), int(in.Shape[1])
	s.batches = append(s.batches, in.Shape[0])
	main := float32(3)
	if s.calls < len(s.logits) {
		main = s.logits[s.calls]
	}
	s.calls++
	r := newRaw(n)
	for b := 0; b < n; b++ {
		img := in.Data[b*size*size*3 : (b+1)*size*size*3]
		x0, y0, x1, y1 := size, size, -1, -1
		for y := 0; y < size; y++ {
			for x := 0; x < size; x++ {
				p := img[3*(y*size+x):]
				if p[0] > 200 && p[1] < 60 {
					x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x), max(y1, y)
				}
			}
		}
		if x1 < 0 {
			continue
		}
		w, h := float64(x1+1-x0), float64(y1+1-y0)
		if w > s.maxSide {
			continue
		}
		cx, cy := float64(x0)+w/2, float64(y0)+h/2
		emit := func(row int, ax, ay float64, logit float32) {
			reg := [16]float32{float32(cx - ax), float32(cy - ay), float32(w), float32(h)}
			for k, f := range kpFrac {
				reg[4+2*k] = float32(float64(x0) + f[0]*w - ax + s.biasX)
				reg[5+2*k] = float32(float64(y0) + f[1]*h - ay)
			}
			r.set(b, row, logit, reg)
		}
		gx, gy := min(int(cx/16), 15), min(int(cy/16), 15)
		emit((gy*16+gx)*2, 16*(float64(gx)+0.5), 16*(float64(gy)+0.5), main)
		gx, gy = min(int(cx/32), 7), min(int(cy/32), 7)
		second := float32(1)
		if s.logits != nil {
			second = -9 // scripted runs: only the main anchor speaks
		}
		emit(512+(gy*8+gx)*6, 32*(float64(gx)+0.5), 32*(float64(gy)+0.5), second)
	}
	return r.tensors(), nil
}

func scene(w, h int, squares ...[3]int) *imaging.RGB {
	m := imaging.NewRGB(w, h)
	for i := range m.Pix {
		m.Pix[i] = 128
	}
	for _, s := range squares {
		for y := s[1]; y < s[1]+s[2]; y++ {
			for x := s[0]; x < s[0]+s[2]; x++ {
				m.SetRGB(x, y, 255, 0, 0)
			}
		}
	}
	return m
}

func checkFace(t *testing.T, f Face, x, y, side, tol float64) {
	t.Helper()
	if !near(f.Box.X, x, tol) || !near(f.Box.Y, y, tol) || !near(f.Box.W, side, 2*tol) || !near(f.Box.H, side, 2*tol) {
		t.Errorf("box %+v, want (%v,%v,%v,%v) within %v", f.Box, x, y, side, side, tol)
	}
	for k, fr := range kpFrac {
		p := f.Keypoints[k]
		if !near(p.X, x+fr[0]*side, 2*tol) || !near(p.Y, y+fr[1]*side, 2*tol) {
			t.Errorf("keypoint %d at %v, want (%v,%v)", k, p, x+fr[0]*side, y+fr[1]*side)
		}
	}
}

// A 640x480 frame is letterboxed to 256 (scale 0.4, 32-pixel bars top and
// bottom); the face found on the tensor must map back to the square's
// original position. One input pixel is 2.5 original pixels, hence the
// tolerance. The runner's duplicate anchor must be merged, and a frame
// with a face needs one plain pass only.
func TestDetectorMapsBackThroughLetterbox(t *testing.T) {
	run := &squareRunner{maxSide: 150}
	d, err := New(run, Options{NoRecheck: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.Detect(context.Background(), scene(640, 480, [3]int{400, 100, 80}))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Faces) != 1 || res.Padded || res.Dropped != 0 {
		t.Fatalf("result %+v", res)
	}
	checkFace(t, res.Faces[0], 400, 100, 80, 2.5)
	if len(run.batches) != 1 || run.batches[0] != 1 {
		t.Errorf("runner calls %v, want one batch of 1", run.batches)
	}
	// Portrait frame: bars left and right.
	res, err = d.Detect(context.Background(), scene(300, 500, [3]int{20, 350, 100}))
	if err != nil || len(res.Faces) != 1 {
		t.Fatalf("portrait: %+v %v", res, err)
	}
	checkFace(t, res.Faces[0], 20, 350, 100, 500.0/256)
}

// A face filling an ID crop is too big for the model; the padded pass
// (crop shrunk to half the input inside a black border) finds it, and the
// box maps back onto the crop. Small images run both passes in one batch
// of two.
func TestDetectorPadsCrops(t *testing.T) {
	for _, side := range []int{96, 112, 150} {
		run := &squareRunner{maxSide: 150}
		d, err := New(run, Options{NoRecheck: true})
		if err != nil {
			t.Fatal(err)
		}
		res, err := d.Detect(context.Background(), scene(side, side, [3]int{0, 0, side}))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Faces) != 1 || !res.Padded {
			t.Fatalf("%d px crop: %+v", side, res)
		}
		checkFace(t, res.Faces[0], 0, 0, float64(side), float64(side)/128)
		if len(run.batches) != 1 || run.batches[0] != 2 {
			t.Errorf("%d px crop: runner calls %v, want one batch of 2", side, run.batches)
		}
	}
	// Without padding the crop yields nothing.
	d, _ := New(&squareRunner{maxSide: 150}, Options{Pad: PadNever, NoRecheck: true})
	res, err := d.Detect(context.Background(), scene(112, 112, [3]int{0, 0, 112}))
	if err != nil || len(res.Faces) != 0 || res.Padded {
		t.Fatalf("PadNever: %+v %v", res, err)
	}
}

// A large frame filled by one face: the plain pass finds nothing, so a
// second, padded call is made.
func TestDetectorPadsWhenEmpty(t *testing.T) {
	run := &squareRunner{maxSide: 150}
	d, _ := New(run, Options{NoRecheck: true})
	res, err := d.Detect(context.Background(), scene(640, 480, [3]int{80, 0, 480}))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Faces) != 1 || !res.Padded {
		t.Fatalf("%+v", res)
	}
	checkFace(t, res.Faces[0], 80, 0, 480, 5)
	if len(run.batches) != 2 || run.batches[0] != 1 || run.batches[1] != 1 {
		t.Errorf("runner calls %v, want two batches of 1", run.batches)
	}
	// A frame with no face at all also gets the second pass, and stays empty.
	run = &squareRunner{maxSide: 150}
	d, _ = New(run, Options{NoRecheck: true})
	res, err = d.Detect(context.Background(), scene(640, 480))
	if err != nil || len(res.Faces) != 0 || !res.Padded || len(run.batches) != 2 {
		t.Fatalf("empty frame: %+v %v calls %v", res, err, run.batches)
	}
}

// When both passes see the face (a face at half the crop), NMS merges the
// two detections into one.
func TestDetectorMergesPasses(t *testing.T) {
	d, _ := New(&squareRunner{maxSide: 150}, Options{NoRecheck: true})
	res, err := d.Detect(context.Background(), scene(200, 200, [3]int{50, 50, 100}))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Faces) != 1 {
		t.Fatalf("%d faces, want the two passes merged into 1", len(res.Faces))
	}
	checkFace(t, res.Faces[0], 50, 50, 100, 200.0/128)
}

// A model that places keypoints 4 input pixels too far left (as the real
// BlazeFace does by 1-2.7 px) is corrected by MirrorAverage: the mirrored
// run errs the other way and weighted NMS averages the two.
func TestDetectorMirrorAverage(t *testing.T) {
	img := scene(640, 480, [3]int{400, 100, 80})
	run := &squareRunner{maxSide: 150, biasX: -4}
	d, _ := New(run, Options{NoRecheck: true})
	res, err := d.Detect(context.Background(), img)
	if err != nil || len(res.Faces) != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	if nose := res.Faces[0].Keypoints[Nose].X; !near(nose, 400+0.5*80-10, 2.5) {
		t.Fatalf("without mirroring the nose should carry the bias (-10 px): %v", nose)
	}
	run = &squareRunner{maxSide: 150, biasX: -4}
	d, _ = New(run, Options{MirrorAverage: true, NoRecheck: true})
	res, err = d.Detect(context.Background(), img)
	if err != nil || len(res.Faces) != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	checkFace(t, res.Faces[0], 400, 100, 80, 2.5)
	if len(run.batches) != 1 || run.batches[0] != 2 {
		t.Errorf("runner calls %v, want one batch of 2 (plain and mirrored)", run.batches)
	}
	// A crop: plain, padded, and both mirrored in one batch of four.
	run = &squareRunner{maxSide: 150, biasX: -4}
	d, _ = New(run, Options{MirrorAverage: true, NoRecheck: true})
	res, err = d.Detect(context.Background(), scene(112, 112, [3]int{0, 0, 112}))
	if err != nil || len(res.Faces) != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	checkFace(t, res.Faces[0], 0, 0, 112, 1)
	if len(run.batches) != 1 || run.batches[0] != 4 {
		t.Errorf("runner calls %v, want one batch of 4", run.batches)
	}
}

// gridRunner reports n faces on a grid with decreasing scores, whatever the input.
type gridRunner struct{ n int }

func (g gridRunner) Run(ctx context.Context, in Tensor) ([]Tensor, error) {
	r := newRaw(int(in.Shape[0]))
	for b := 0; b < int(in.Shape[0]); b++ {
		for i := 0; i < g.n; i++ {
			gx, gy := (i%8)*2, (i/8)*2 // every other cell: boxes 20 px wide never overlap
			r.set(b, (gy*16+gx)*2, float32(5-0.1*float64(i)), faceReg(0, 0, 20, 20))
		}
	}
	return r.tensors(), nil
}

func TestDetectorMaxFaces(t *testing.T) {
	img := scene(512, 512)
	d, _ := New(gridRunner{25}, Options{NoRecheck: true})
	res, err := d.Detect(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Faces) != 20 || res.Dropped != 5 {
		t.Fatalf("%d faces, %d dropped; want 20 and 5", len(res.Faces), res.Dropped)
	}
	for i := 1; i < len(res.Faces); i++ {
		if res.Faces[i].Score > res.Faces[i-1].Score {
			t.Fatal("faces not sorted by score")
		}
	}
	// the best face is the first grid cell: anchor (8,8) in the input = (16,16) in the 512 image
	if b := res.Faces[0].Box; !near(b.X, -4, 1e-9) || !near(b.W, 40, 1e-9) {
		t.Errorf("best face box %+v", b)
	}
	d, _ = New(gridRunner{25}, Options{MaxFaces: 3, NoRecheck: true})
	if res, _ = d.Detect(context.Background(), img); len(res.Faces) != 3 || res.Dropped != 22 {
		t.Fatalf("MaxFaces 3: %d faces, %d dropped", len(res.Faces), res.Dropped)
	}
}

func TestDetectorErrors(t *testing.T) {
	if _, err := New(nil, Options{}); err == nil {
		t.Error("nil runner accepted")
	}
	for _, o := range []Options{{ScoreThreshold: 1.5}, {IoUThreshold: -1}, {MaxFaces: -1}, {PadFactor: 0.5}, {InputSize: 100}, {NMS: 7}, {ScoreThreshold: 0.5, CandidateThreshold: 0.6}, {RecheckScore: 1.2}} {
		if _, err := New(gridRunner{}, o); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
	boom := errors.New("session closed")
	d, _ := New(&squareRunner{err: boom}, Options{})
	if _, err := d.Detect(context.Background(), scene(64, 64)); !errors.Is(err, boom) {
		t.Errorf("runner error: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, _ = New(&squareRunner{maxSide: 100}, Options{})
	if _, err := d.Detect(ctx, scene(64, 64)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
	if _, err := d.Detect(context.Background(), &imaging.RGB{W: 3, H: 3}); err == nil {
		t.Error("malformed image accepted")
	}
}

func logit(p float64) float32 { return float32(math.Log(p / (1 - p))) }

// The recheck keeps a detection only when the crop around it confirms it,
// more strongly for a weak first-pass score.
func TestRecheck(t *testing.T) {
	img := imaging.NewRGB(640, 480)
	for y := 200; y < 260; y++ {
		for x := 300; x < 360; x++ {
			img.SetRGB(x, y, 255, 0, 0)
		}
	}
	for _, tc := range []struct {
		name         string
		first, again float64
		want         int
	}{
		{"strong and confirmed", 0.8, 0.75, 1},
		{"strong, not confirmed", 0.8, 0.6, 0},
		{"confirmed by its own score", 0.95, 0.1, 1},
		{"weak, strongly confirmed", 0.45, 0.9, 1},
		{"weak, confirmed only weakly", 0.45, 0.8, 0},
		{"below candidates", 0.35, 0.99, 0},
	} {
		run := &squareRunner{maxSide: 200, logits: []float32{logit(tc.first), logit(tc.again)}}
		d, err := New(run, Options{Pad: PadNever})
		if err != nil {
			t.Fatal(err)
		}
		res, err := d.Detect(context.Background(), img)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Faces) != tc.want {
			t.Errorf("%s: %d faces (%d rejected, %d runs), want %d", tc.name, len(res.Faces), res.Rejected, len(run.batches), tc.want)
		}
		if tc.want == 1 && math.Abs(res.Faces[0].Score-tc.first) > 0.01 {
			t.Errorf("%s: score %.3f, want the first pass's %.3f", tc.name, res.Faces[0].Score, tc.first)
		}
	}
}

// A face crop (no larger than SmallImageSide) is taken as a face without the
// zoomed recheck, which would mostly read border.
func TestCropsAreNotRechecked(t *testing.T) {
	img := imaging.NewRGB(150, 150)
	for y := 40; y < 100; y++ {
		for x := 40; x < 100; x++ {
			img.SetRGB(x, y, 255, 0, 0)
		}
	}
	run := &squareRunner{maxSide: 200, logits: []float32{logit(0.8), logit(0.1)}}
	d, err := New(run, Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.Detect(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Faces) != 1 || len(run.batches) != 1 {
		t.Fatalf("%d faces after %d runs, want the face from one (plain + padded) batch", len(res.Faces), len(run.batches))
	}
}
