package face_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/facegate/facegate/pkg/align"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/imaging"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/testenv"
)

func engine(t *testing.T, opts face.Options) *face.Engine {
	t.Helper()
	root := testenv.Models(t)
	c, err := modelcache.New(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := inference.Open(inference.Options{LibraryPath: c.LibraryPath()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	e, err := face.Open(context.Background(), rt, c, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// The 40 face-api.js crops (8 people x 5) through detect + align + encode:
// every crop's nearest other crop is the same person, and the calibrated
// threshold separates same from different people on most pairs.
func TestCropsNearestNeighbourIsSamePerson(t *testing.T) {
	e := engine(t, face.Options{})
	files, err := filepath.Glob(filepath.Join(testenv.Datasets(t), "face-api.js", "examples", "images", "*", "*.png"))
	if err != nil || len(files) != 40 {
		t.Fatalf("want 40 crops, found %d (%v)", len(files), err)
	}
	type enc struct {
		who string
		v   []float32
	}
	var encs []enc
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r, err := e.Analyze(context.Background(), b)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Faces) != 1 {
			t.Fatalf("%s: %d faces, want 1", f, len(r.Faces))
		}
		v := r.Faces[0].Encoding
		var n float64
		for _, x := range v {
			n += float64(x) * float64(x)
		}
		if math.Abs(n-1) > 1e-5 || len(v) != 128 {
			t.Fatalf("%s: encoding of length %d and norm² %v, want 128 and 1", f, len(v), n)
		}
		encs = append(encs, enc{filepath.Base(filepath.Dir(f)), v})
	}
	correct, same, diff, sameOK, diffOK := 0, 0, 0, 0, 0
	const threshold = 0.4163 // the manifest's LFW calibration
	for i := range encs {
		best, bd := -1, math.Inf(1)
		for j := range encs {
			if i == j {
				continue
			}
			d := face.Distance(encs[i].v, encs[j].v)
			if d < bd {
				best, bd = j, d
			}
			if j > i {
				if encs[i].who == encs[j].who {
					same++
					if d < threshold {
						sameOK++
					}
				} else {
					diff++
					if d >= threshold {
						diffOK++
					}
				}
			}
		}
		if encs[best].who == encs[i].who {
			correct++
		}
	}
	t.Logf("nearest neighbour correct %d/40; at threshold %.4f: %d/%d same-person pairs accepted, %d/%d different-person pairs rejected", correct, threshold, sameOK, same, diffOK, diff)
	if correct < 39 {
		t.Errorf("nearest neighbour correct for %d of 40 crops", correct)
	}
	if float64(sameOK)/float64(same) < 0.85 || float64(diffOK)/float64(diff) < 0.97 {
		t.Errorf("threshold separates poorly: %d/%d same accepted, %d/%d different rejected", sameOK, same, diffOK, diff)
	}
}

// A batch must give each face the encoding it gets alone, and concurrent
// callers must not disturb each other.
func TestBatchAndConcurrencyAreConsistent(t *testing.T) {
	e := engine(t, face.Options{})
	root := testenv.Datasets(t)
	var chips []*imaging.RGB
	for _, p := range []string{"Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0003.jpg", "Abdullah_Gul/Abdullah_Gul_0001.jpg"} {
		b, err := os.ReadFile(filepath.Join(root, "lfw_pairs_aligned", "data", p))
		if err != nil {
			t.Fatal(err)
		}
		img, _, err := imaging.Decode(b, imaging.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		chips = append(chips, img)
	}
	batch, err := e.EncodeArcFace112(context.Background(), chips)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, c := range chips {
				one, err := e.EncodeArcFace112(context.Background(), []*imaging.RGB{c})
				if err != nil {
					errs <- err.Error()
					return
				}
				if d := face.Distance(one[0], batch[i]); d > 1e-4 {
					errs <- "batch and single encodings differ"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	same, diff := face.Distance(batch[0], batch[1]), face.Distance(batch[0], batch[2])
	if !(same < diff) {
		t.Fatalf("same person %.3f is not closer than another person %.3f", same, diff)
	}
	if _, err := e.EncodeArcFace112(context.Background(), []*imaging.RGB{imaging.NewRGB(100, 100)}); err == nil {
		t.Fatal("a 100x100 chip was accepted as ArcFace-aligned")
	}
}

func TestMirrorIsItsOwnSpace(t *testing.T) {
	mirrored, plain := engine(t, face.Options{}), engine(t, face.Options{NoMirror: true})
	if mirrored.Space() == plain.Space() || mirrored.Space() != "dlib-resnet34-128+mirror" {
		t.Fatalf("spaces %q and %q", mirrored.Space(), plain.Space())
	}
	b, err := os.ReadFile(filepath.Join(testenv.Datasets(t), "lfw_pairs_aligned", "data", "Aaron_Peirsol", "Aaron_Peirsol_0001.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	img, _, _ := imaging.Decode(b, imaging.Limits{})
	chip, err := align.ArcFaceToDlib150(img, align.Border{Mode: align.BorderReplicate})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := mirrored.EncodeChips(context.Background(), []*imaging.RGB{chip})
	p, _ := plain.EncodeChips(context.Background(), []*imaging.RGB{chip})
	flipped, _ := plain.EncodeChips(context.Background(), []*imaging.RGB{imaging.Orient(chip, 2)})
	// The mirrored encoding is the normalised sum of the plain encodings of the face and its mirror image.
	sum := make([]float32, len(p[0]))
	for i := range sum {
		sum[i] = p[0][i] + flipped[0][i]
	}
	if err := face.Normalize(sum); err != nil {
		t.Fatal(err)
	}
	if d := face.Distance(sum, m[0]); d > 1e-3 {
		t.Fatalf("mirror-averaged encoding is %.5f from the sum of its parts", d)
	}
}

func TestDistanceAndNormalize(t *testing.T) {
	a, b := []float32{3, 4}, []float32{0, 0}
	if d := face.Distance(a, b); d != 5 {
		t.Fatalf("L2 distance (not squared) of (3,4) and (0,0) = %v, want 5", d)
	}
	if err := face.Normalize(a); err != nil || math.Abs(float64(a[0])-0.6) > 1e-7 || math.Abs(float64(a[1])-0.8) > 1e-7 {
		t.Fatalf("normalise (3,4) = %v %v", a, err)
	}
	for _, bad := range [][]float32{{0, 0}, {float32(math.NaN()), 1}, {float32(math.Inf(1)), 0}} {
		if err := face.Normalize(bad); err == nil {
			t.Errorf("normalising %v succeeded", bad)
		}
	}
}
