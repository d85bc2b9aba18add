package liveness_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/facegate/facegate/pkg/detect"
	"github.com/facegate/facegate/pkg/imaging"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/liveness"
	leval "github.com/facegate/facegate/pkg/liveness/eval"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/testenv"
)

// The runtime, gate and detector are opened once per test binary: ONNX
// Runtime's environment is process-wide.
var shared struct {
	once  sync.Once
	rt    *inference.Runtime
	cache *modelcache.Cache
	gate  *liveness.Gate
	det   leval.Detector
	err   error
}

func open(t testing.TB) (*liveness.Gate, leval.Detector) {
	t.Helper()
	root := testenv.Models(t)
	shared.once.Do(func() {
		ctx := context.Background()
		if shared.cache, shared.err = modelcache.New(root, nil); shared.err != nil {
			return
		}
		if shared.rt, shared.err = inference.Open(inference.Options{LibraryPath: shared.cache.LibraryPath()}); shared.err != nil {
			return
		}
		if shared.gate, shared.err = liveness.Open(ctx, shared.rt, shared.cache, liveness.Options{}); shared.err != nil {
			return
		}
		shared.det, _, shared.err = leval.OpenDetector(ctx, shared.rt, shared.cache)
	})
	if shared.err != nil {
		t.Fatalf("open liveness gate: %v", shared.err)
	}
	return shared.gate, shared.det
}

func decode(t testing.TB, path string) *imaging.RGB {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, _, err := imaging.Decode(b, imaging.Limits{})
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return img
}

type faceImage struct {
	name string
	img  *imaging.RGB
	face detect.Face
}

// realFaces detects the best face of a few real photos of different people.
func realFaces(t testing.TB, det leval.Detector) []faceImage {
	t.Helper()
	var out []faceImage
	for _, rel := range []string{
		"face-api.js/examples/images/amy/amy1.png",
		"face-api.js/examples/images/sheldon/sheldon1.png",
		"detector/single/skimage_astronaut.png",
		"detector/single/insightface_Tom_Hanks_54745.png",
		"deepface/dataset/img1.jpg",
	} {
		img := decode(t, testenv.Dataset(t, rel))
		faces, err := det(context.Background(), img)
		if err != nil {
			t.Fatal(err)
		}
		if len(faces) == 0 {
			t.Fatalf("%s: the detector finds no face", rel)
		}
		out = append(out, faceImage{filepath.Base(rel), img, faces[0]})
	}
	return out
}

func inUnit(v float32) bool { return v >= 0 && v <= 1 && !math.IsNaN(float64(v)) }

// Real models on real faces: scores are probabilities, the combination
// follows the rule, repeated calls agree exactly, a batch agrees with
// single calls, and different faces score differently.
func TestScoresOnRealFaces(t *testing.T) {
	g, det := open(t)
	ctx := context.Background()
	faces := realFaces(t, det)
	seen := map[float32]string{}
	for _, f := range faces {
		s, err := g.Score(ctx, f.img, f.face)
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		t.Logf("%s: %+v", f.name, s)
		if !inUnit(s.Antispoof) || !inUnit(s.Liveness) || !inUnit(s.Combined) {
			t.Errorf("%s: scores %+v outside [0,1]", f.name, s)
		}
		if s.Combined != min(s.Antispoof, s.Liveness) {
			t.Errorf("%s: combined %v is not min(%v, %v) under the default rule", f.name, s.Combined, s.Antispoof, s.Liveness)
		}
		again, err := g.Score(ctx, f.img, f.face)
		if err != nil || again != s {
			t.Errorf("%s: second run %+v (%v), first %+v: not deterministic", f.name, again, err, s)
		}
		if other, dup := seen[s.Antispoof]; dup {
			t.Errorf("%s and %s get the same antispoof score %v: the model ignores its input", f.name, other, s.Antispoof)
		}
		seen[s.Antispoof] = f.name
	}
	// A batch of two faces of one image gives each face its single score.
	f := faces[0]
	shifted := f.face
	shifted.Box.X += f.face.Box.W / 4
	batch, err := g.ScoreFaces(ctx, f.img, []detect.Face{f.face, shifted})
	if err != nil {
		t.Fatal(err)
	}
	for i, one := range []detect.Face{f.face, shifted} {
		s, err := g.Score(ctx, f.img, one)
		if err != nil {
			t.Fatal(err)
		}
		if d := math.Abs(float64(s.Antispoof - batch[i].Antispoof)); d > 1e-5 {
			t.Errorf("face %d: antispoof %v alone, %v in a batch", i, s.Antispoof, batch[i].Antispoof)
		}
		if d := math.Abs(float64(s.Liveness - batch[i].Liveness)); d > 1e-5 {
			t.Errorf("face %d: liveness %v alone, %v in a batch", i, s.Liveness, batch[i].Liveness)
		}
	}
	if batch[0] == batch[1] {
		t.Errorf("a shifted crop scores exactly like the face: %+v", batch[0])
	}
	if s, err := g.ScoreFaces(ctx, f.img, nil); err != nil || s != nil {
		t.Errorf("no faces: %v, %v; want nil, nil", s, err)
	}
}

// Noise is not a face; whatever the models make of it, its scores must
// differ from a real face's (the models look at their input).
func TestNoiseScoresDifferFromFace(t *testing.T) {
	g, det := open(t)
	ctx := context.Background()
	f := realFaces(t, det)[0]
	noise := imaging.NewRGB(f.img.W, f.img.H)
	x := uint32(1)
	for i := range noise.Pix {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		noise.Pix[i] = uint8(x)
	}
	a, err := g.Score(ctx, f.img, f.face)
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Score(ctx, noise, f.face)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("face %+v, noise %+v", a, b)
	if a.Antispoof == b.Antispoof || a.Liveness == b.Liveness {
		t.Errorf("face %+v and noise %+v share a score", a, b)
	}
}

// The gate is shared by an embedder's goroutines: concurrent calls give
// exactly the serial results.
func TestConcurrentScoring(t *testing.T) {
	g, det := open(t)
	ctx := context.Background()
	faces := realFaces(t, det)
	want := make([]liveness.Scores, len(faces))
	for i, f := range faces {
		var err error
		if want[i], err = g.Score(ctx, f.img, f.face); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for w := range 8 {
		wg.Go(func() {
			for k := range 4 {
				i := (w + k) % len(faces)
				s, err := g.Score(ctx, faces[i].img, faces[i].face)
				if err != nil || s != want[i] {
					errs <- faces[i].name
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for name := range errs {
		t.Errorf("%s: a concurrent call disagreed with the serial one", name)
	}
}

func TestRuleCombine(t *testing.T) {
	for _, c := range []struct {
		r    liveness.Rule
		a, l float32
		want float32
	}{
		{liveness.RuleMin, 0.9, 0.2, 0.2},
		{liveness.RuleMin, 0.1, 0.7, 0.1},
		{liveness.RuleMean, 0.9, 0.2, 0.55},
		{liveness.RuleAntispoof, 0.9, 0.2, 0.9},
		{liveness.RuleLiveness, 0.9, 0.2, 0.2},
	} {
		if got := c.r.Combine(c.a, c.l); math.Abs(float64(got-c.want)) > 1e-6 {
			t.Errorf("%v.Combine(%v, %v) = %v, want %v", c.r, c.a, c.l, got, c.want)
		}
	}
	if liveness.Rule(9).String() != "Rule(9)" || liveness.RuleMin.String() != "min" {
		t.Errorf("rule names: %q %q", liveness.Rule(9), liveness.RuleMin)
	}
}

// Bad options fail before any model is loaded.
func TestOpenRejectsBadOptions(t *testing.T) {
	for _, o := range []liveness.Options{
		{Threshold: 1.5}, {Threshold: -0.1}, {Threshold: float32(math.NaN())},
		{Rule: liveness.Rule(7)}, {Rule: liveness.Rule(-1)},
		{Antispoof: liveness.Preprocess{Scale: 10}}, {Liveness: liveness.Preprocess{Scale: 0.1, BGR: true}},
		{Liveness: liveness.Preprocess{Scale: 1.4, Element: 2}},
	} {
		if g, err := liveness.Open(context.Background(), nil, nil, o); err == nil {
			g.Close()
			t.Errorf("Open(%+v) succeeded", o)
		}
	}
}

func TestLiveThreshold(t *testing.T) {
	g, _ := open(t)
	if g.Threshold() != liveness.DefaultThreshold {
		t.Fatalf("default threshold %v", g.Threshold())
	}
	if !g.Live(liveness.Scores{Combined: 0.5}) || g.Live(liveness.Scores{Combined: 0.4999}) {
		t.Errorf("Live is not Combined >= threshold")
	}
}

// Crop geometry on a synthetic picture: the crop is centred on the box,
// scaled by the factor, and black outside the image.
func TestCropGeometry(t *testing.T) {
	img := imaging.NewRGB(200, 100)
	for y := range img.H {
		for x := range img.W {
			// left half red, right half green
			if x < 100 {
				img.SetRGB(x, y, 200, 0, 0)
			} else {
				img.SetRGB(x, y, 0, 200, 0)
			}
		}
	}
	// A 40x40 box centred on (100, 50), scale 1: the crop's left half is
	// red, right half green.
	c, err := liveness.Crop(img, detect.Box{X: 80, Y: 30, W: 40, H: 40}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if c.W != liveness.CropSize || c.H != liveness.CropSize {
		t.Fatalf("crop %dx%d", c.W, c.H)
	}
	if r, g, _ := c.RGBAt(40, 96); r != 200 || g != 0 {
		t.Errorf("left of centre: %d %d, want red", r, g)
	}
	if r, g, _ := c.RGBAt(150, 96); r != 0 || g != 200 {
		t.Errorf("right of centre: %d %d, want green", r, g)
	}
	// Scale 4 on a 40 px box reaches 80 px above and below the centre: the
	// image is 100 px tall, so the crop's top and bottom rows are black.
	c, err = liveness.Crop(img, detect.Box{X: 80, Y: 30, W: 40, H: 40}, 4)
	if err != nil {
		t.Fatal(err)
	}
	if r, g, b := c.RGBAt(96, 2); r|g|b != 0 {
		t.Errorf("outside the image: %d %d %d, want black", r, g, b)
	}
	if r, _, _ := c.RGBAt(60, 96); r != 200 {
		t.Errorf("inside the image: red %d, want 200", r)
	}
	for _, bad := range []detect.Box{{W: 0, H: 0}, {X: math.NaN(), W: 10, H: 10}, {W: math.Inf(1), H: 1}, {W: 1e9, H: 1e9}} {
		if _, err := liveness.Crop(img, bad, 1.4); err == nil {
			t.Errorf("Crop(%+v) succeeded", bad)
		}
	}
	if _, err := liveness.Crop(nil, detect.Box{W: 10, H: 10}, 1); err == nil {
		t.Error("Crop(nil image) succeeded")
	}
	if _, err := liveness.Crop(&imaging.RGB{W: 10, H: 10, Pix: make([]byte, 5)}, detect.Box{W: 10, H: 10}, 1); err == nil {
		t.Error("Crop(short pixel buffer) succeeded")
	}
}

// FuzzCrop: any box either crops to CropSize or fails with an error.
func FuzzCrop(f *testing.F) {
	f.Add(10.0, 10.0, 30.0, 30.0, 1.4)
	f.Add(-50.0, -50.0, 5.0, 500.0, 1.0)
	f.Add(0.0, 0.0, 0.0, 0.0, 0.0)
	img := imaging.NewRGB(64, 48)
	for i := range img.Pix {
		img.Pix[i] = uint8(i)
	}
	f.Fuzz(func(t *testing.T, x, y, w, h, scale float64) {
		c, err := liveness.Crop(img, detect.Box{X: x, Y: y, W: w, H: h}, scale)
		if err != nil {
			return
		}
		if c.W != liveness.CropSize || c.H != liveness.CropSize || c.Valid() != nil {
			t.Fatalf("crop %dx%d valid=%v", c.W, c.H, c.Valid())
		}
	})
}

// BenchmarkScore is the cost the gate adds per face (both models, crops
// included).
func BenchmarkScore(b *testing.B) {
	g, det := open(b)
	f := realFaces(b, det)[0]
	ctx := context.Background()
	for b.Loop() {
		if _, err := g.Score(ctx, f.img, f.face); err != nil {
			b.Fatal(err)
		}
	}
}
