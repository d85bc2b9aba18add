package quality_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/facegate/facegate/pkg/detect"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/imaging"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/quality"
	"github.com/facegate/facegate/pkg/testenv"
)

// The engine is process-wide: loading the models costs seconds.
var shared struct {
	once  sync.Once
	eng   *face.Engine
	cache *modelcache.Cache
	err   error
}

func engine(t *testing.T) (*face.Engine, *modelcache.Cache) {
	t.Helper()
	root := testenv.Models(t)
	shared.once.Do(func() {
		c, err := modelcache.New(root, nil)
		if err != nil {
			shared.err = err
			return
		}
		rt, err := inference.Open(inference.Options{LibraryPath: c.LibraryPath(), IntraOpThreads: 1})
		if err != nil {
			shared.err = err
			return
		}
		shared.eng, shared.err = face.Open(context.Background(), rt, c, face.Options{})
		shared.cache = c
	})
	if shared.err != nil {
		t.Fatalf("open face engine: %v", shared.err)
	}
	return shared.eng, shared.cache
}

func analyzeImage(t *testing.T, e *face.Engine, img *imaging.RGB) *face.Result {
	t.Helper()
	res, err := e.AnalyzeImage(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func readImage(t *testing.T, path string) *imaging.RGB {
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

func demoPhotos(t *testing.T, c *modelcache.Cache) []string {
	t.Helper()
	var out []string
	for i := 1; i <= 6; i++ {
		p, err := c.File("@vladmandic/face-api", fmt.Sprintf("demo/sample%d.jpg", i))
		if err != nil {
			testenv.Missing(t, "the face-api demo photos", "run `facegate models fetch`")
		}
		out = append(out, p)
	}
	return out
}

// TestPoseDemoPhotos: the face-api demo group photos hold 22 faces: most
// turned by up to about 30 degrees, two tilted sideways by 33 and 47
// degrees and one in profile (its eye keypoints collapse to 9 px apart).
// The old pose model read 36-85 degrees of yaw for 16 of them and let 4
// through the gate. Now only the profile may read beyond 35 degrees, at
// least half read within MaxYaw, and the gate passes those and refuses
// the profile.
func TestPoseDemoPhotos(t *testing.T) {
	e, c := engine(t)
	th := quality.DefaultThresholds()
	var n, pass, over35, withinYaw int
	for _, p := range demoPhotos(t, c) {
		res := analyzeImage(t, e, readImage(t, p))
		for i, f := range res.Faces {
			n++
			q := f.Quality
			s := q.Scores
			profile := s.InterOcular < 0.1*f.Box.W
			if q.OK {
				pass++
			}
			if math.Abs(s.Yaw) > 35 && !profile {
				over35++
			}
			if math.Abs(s.Yaw) <= th.MaxYaw {
				withinYaw++
			}
			t.Logf("%s face %d: yaw %5.1f pitch %5.1f roll %5.1f iod %5.1f %v", filepath.Base(p), i, s.Yaw, s.Pitch, s.Roll, s.InterOcular, q.Reasons)
			if profile && q.OK {
				t.Errorf("%s face %d: profile face (iod %.1f, box %.0f) passed", filepath.Base(p), i, s.InterOcular, f.Box.W)
			}
		}
	}
	t.Logf("%d of %d demo faces pass the gate; %d within MaxYaw %g; %d non-profile faces read over 35 degrees", pass, n, withinYaw, th.MaxYaw, over35)
	if n != 22 {
		t.Fatalf("found %d faces in the demo photos, want 22", n)
	}
	if over35 > 0 || withinYaw < 11 || pass < 10 {
		t.Errorf("%d faces read over 35 degrees of yaw, %d within %g, %d pass: want 0, at least 11 and at least 10", over35, withinYaw, th.MaxYaw, pass)
	}
}

// TestPoseLFWDistribution: LFW is mostly near-frontal. Through the detector,
// every 20th image's yaw must be small (the old model read a median of
// about 16 degrees and a 95th percentile of about 35), and its pitch near
// zero (the old model read about 22 degrees down for frontal faces).
func TestPoseLFWDistribution(t *testing.T) {
	e, _ := engine(t)
	root := testenv.Dataset(t, "lfw_pairs_aligned")
	files, err := filepath.Glob(filepath.Join(root, "data/*/*.jpg"))
	if err != nil || len(files) < 7000 {
		testenv.Missing(t, "the LFW images", "the shared datasets are incomplete")
	}
	sort.Strings(files)
	var absYaw, pitch []float64
	for i := 0; i < len(files); i += 20 {
		res := analyzeImage(t, e, readImage(t, files[i]))
		if len(res.Faces) == 0 {
			continue
		}
		f := res.Faces[0]
		for _, g := range res.Faces[1:] {
			if g.Box.W*g.Box.H > f.Box.W*f.Box.H {
				f = g
			}
		}
		absYaw = append(absYaw, math.Abs(f.Quality.Scores.Yaw))
		pitch = append(pitch, f.Quality.Scores.Pitch)
	}
	sort.Float64s(absYaw)
	sort.Float64s(pitch)
	q := func(v []float64, p float64) float64 { return v[int(p*float64(len(v)-1))] }
	t.Logf("%d LFW faces: |yaw| p50 %.1f p90 %.1f p95 %.1f p99 %.1f; pitch p5 %.1f p50 %.1f p95 %.1f",
		len(absYaw), q(absYaw, .5), q(absYaw, .9), q(absYaw, .95), q(absYaw, .99), q(pitch, .05), q(pitch, .5), q(pitch, .95))
	if len(absYaw) < 370 {
		t.Fatalf("only %d of %d sampled LFW images had a face", len(absYaw), (len(files)+19)/20)
	}
	if q(absYaw, .5) > 8 || q(absYaw, .95) > 15 {
		t.Errorf("LFW |yaw| median %.1f, 95th percentile %.1f: want at most 8 and 15", q(absYaw, .5), q(absYaw, .95))
	}
	if math.Abs(q(pitch, .5)) > 4 {
		t.Errorf("LFW median pitch %.1f, want within 4 degrees of level", q(pitch, .5))
	}
}

// TestPoseMirroredImages: a face and its mirror image have yaw of opposite
// sign and equal size. Through the real detector the two differ by its
// left-right keypoint bias (nose about 0.08 half-eye-distances to the
// image's left, about 3 degrees of yaw, doubled between the two runs) and
// by its keypoint noise between the two runs, which is largest for faces
// that are also rolled (sample4's faces 1 and 3, rolled 26 and 18 degrees:
// sums of 9 and 10 degrees). So: the median |yaw + mirrored yaw| at most 4
// degrees, every face within 12, and clearly turned faces flip sign.
func TestPoseMirroredImages(t *testing.T) {
	e, c := engine(t)
	var sums []float64
	for _, p := range demoPhotos(t, c) {
		img := readImage(t, p)
		m := imaging.NewRGB(img.W, img.H)
		for y := 0; y < img.H; y++ {
			for x := 0; x < img.W; x++ {
				r, g, b := img.RGBAt(img.W-1-x, y)
				m.SetRGB(x, y, r, g, b)
			}
		}
		a, b := analyzeImage(t, e, img), analyzeImage(t, e, m)
		for i, f := range a.Faces {
			if f.Quality.Scores.InterOcular < 0.1*f.Box.W {
				continue // profile: keypoints are not a pose
			}
			// the mirrored face: the box whose mirror overlaps this one most
			best, bestIoU := -1, 0.0
			for j, g := range b.Faces {
				mb := detect.Box{X: float64(img.W) - g.Box.X - g.Box.W, Y: g.Box.Y, W: g.Box.W, H: g.Box.H}
				if v := iou(f.Box, mb); v > bestIoU {
					best, bestIoU = j, v
				}
			}
			if bestIoU < 0.5 {
				t.Errorf("%s face %d: not found in the mirror image (IoU %.2f)", filepath.Base(p), i, bestIoU)
				continue
			}
			y, ym := f.Quality.Scores.Yaw, b.Faces[best].Quality.Scores.Yaw
			sums = append(sums, math.Abs(y+ym))
			if math.Abs(y+ym) > 12 || (math.Abs(y) > 12 && math.Signbit(y) == math.Signbit(ym)) {
				t.Errorf("%s face %d: yaw %.1f, mirrored %.1f", filepath.Base(p), i, y, ym)
			}
			t.Logf("%s face %d: yaw %.1f, mirrored %.1f", filepath.Base(p), i, y, ym)
		}
	}
	if len(sums) < 20 {
		t.Fatalf("only %d faces compared with their mirror images", len(sums))
	}
	sort.Float64s(sums)
	if med := sums[len(sums)/2]; med > 4 {
		t.Errorf("median |yaw + mirrored yaw| %.1f degrees over %d faces, want at most 4", med, len(sums))
	}
}

func iou(a, b detect.Box) float64 {
	x0, y0 := math.Max(a.X, b.X), math.Max(a.Y, b.Y)
	x1, y1 := math.Min(a.X+a.W, b.X+b.W), math.Min(a.Y+a.H, b.Y+b.H)
	if x1 <= x0 || y1 <= y0 {
		return 0
	}
	in := (x1 - x0) * (y1 - y0)
	return in / (a.W*a.H + b.W*b.H - in)
}
