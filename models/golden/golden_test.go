package golden_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/facegate/facegate/models/golden"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/testenv"
)

// The requirement: the converted models reproduce the originals within these.
const (
	maxAbsDiff = 1e-3
	minCosine  = 0.9999
)

// relFloat32 is the one allowance beyond maxAbsDiff: a value may also differ
// by this fraction of its magnitude. float32 cannot hold 1e-3 absolute
// agreement for large values: BlazeFace's score logits reach -1,600, where
// one float32 step is 1.2e-4. Measured with tfjs alone, feeding the original
// x*(1/127.5)-1 instead of x/127.5-1 (the same numbers up to one rounding)
// moves those logits by up to 2.6e-3 (1.7e-6 relative); ONNX Runtime differs
// from tfjs by at most 2.7e-6 relative there. Every value within maxAbsDiff
// needs no allowance; the test logs how many values used it.
const relFloat32 = 4e-6

// embeddings names each encoder's descriptor output, which must also keep
// its direction (cosine), since that is what matching uses.
var embeddings = map[string]string{
	"hse-faceres-1024":  "global_pooling/Mean",
	"mobileface-256":    "batchnorm0/add_1",
	"dlib-resnet34-128": "descriptor",
}

type goldenFile struct {
	Model       string       `json:"model"`
	Package     string       `json:"package"`
	TFJSVersion string       `json:"tfjs_version"`
	Backend     string       `json:"backend"`
	Cases       []goldenCase `json:"cases"`
}

type goldenCase struct {
	Name        string                  `json:"name"`
	Source      string                  `json:"source"`
	InputSHA256 string                  `json:"input_sha256"`
	Outputs     map[string]goldenOutput `json:"outputs"`
}

type goldenOutput struct {
	Shape   []int64 `json:"shape"`
	DataB64 string  `json:"data_b64"`
}

func (o goldenOutput) decode() ([]float32, error) {
	b, err := base64.StdEncoding.DecodeString(o.DataB64)
	if err != nil {
		return nil, err
	}
	n := int64(1)
	for _, d := range o.Shape {
		n *= d
	}
	if int64(len(b)) != 4*n {
		return nil, fmt.Errorf("%d bytes for shape %v, want %d", len(b), o.Shape, 4*n)
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out, nil
}

func loadGolden(t *testing.T, id string) goldenFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", id+".json"))
	if err != nil {
		t.Fatalf("golden outputs for %s: %v (regenerate with models/golden/regen.sh)", id, err)
	}
	var g goldenFile
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatalf("golden outputs for %s: %v", id, err)
	}
	if g.Model != id {
		t.Fatalf("testdata/%s.json is for model %q", id, g.Model)
	}
	return g
}

func datasetsDir(t *testing.T) string {
	if d := os.Getenv("FACEGATE_DATASETS"); d != "" {
		return d
	}
	return filepath.Join(testenv.RepoRoot(t), "..", "shared", "datasets")
}

// loadCase rebuilds a case's input from its image, skipping (failing under
// CI) when the image is absent, and checks it is the input the golden
// outputs were computed from.
func loadCase(t *testing.T, m golden.Model, im golden.Image, want string) golden.Case {
	t.Helper()
	p := im.Path(datasetsDir(t), modelcache.DefaultRoot())
	px, err := golden.LoadRGB(p)
	if errors.Is(err, fs.ErrNotExist) {
		how := "the shared datasets sit beside the repository; set FACEGATE_DATASETS to use another copy"
		if im.Root == golden.Cache {
			how = "run `go tool task models` to fetch the model packages"
		}
		testenv.Missing(t, "image "+p, how)
	}
	if err != nil {
		t.Fatalf("image %s: %v", im.Name, err)
	}
	c := golden.NewCase(m, im, px)
	if got := c.SHA256(); got != want {
		t.Fatalf("input %s/%s: sha256 %s, the golden outputs were made from %s: the image or the resize changed; regenerate with models/golden/regen.sh", m.ID, im.Name, got, want)
	}
	return c
}

// TestGoldenFiles checks the committed reference itself: one file per model,
// one case per image with its source, outputs that decode to their shapes,
// are finite and differ between images (a reference that ignored its input
// would make the ONNX comparison meaningless).
func TestGoldenFiles(t *testing.T) {
	for _, m := range golden.Models() {
		t.Run(m.ID, func(t *testing.T) {
			g := loadGolden(t, m.ID)
			if g.Backend != "cpu" || g.TFJSVersion != "4.22.0" {
				t.Errorf("made with tfjs %s on backend %q, want 4.22.0 on cpu", g.TFJSVersion, g.Backend)
			}
			var names []string
			for _, c := range g.Cases {
				names = append(names, c.Name)
			}
			var want []string
			for _, im := range golden.Images() {
				want = append(want, im.Name)
				i := slices.Index(names, im.Name)
				if i < 0 {
					continue
				}
				if g.Cases[i].Source != im.Source() {
					t.Errorf("case %s: source %q, want %q", im.Name, g.Cases[i].Source, im.Source())
				}
			}
			if !slices.Equal(names, want) {
				t.Fatalf("cases %v, want %v", names, want)
			}
			seen := map[string][][]float32{}
			for _, c := range g.Cases {
				if len(c.Outputs) == 0 {
					t.Fatalf("case %s has no outputs", c.Name)
				}
				for name, o := range c.Outputs {
					v, err := o.decode()
					if err != nil {
						t.Fatalf("case %s output %s: %v", c.Name, name, err)
					}
					for i, x := range v {
						if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
							t.Fatalf("case %s output %s[%d] = %v", c.Name, name, i, x)
						}
					}
					for j, prev := range seen[name] {
						if slices.Equal(prev, v) {
							t.Errorf("output %s is identical for %s and %s", name, g.Cases[j].Name, c.Name)
						}
					}
					seen[name] = append(seen[name], v)
				}
			}
			if e, ok := embeddings[m.ID]; ok {
				if _, ok := seen[e]; !ok {
					t.Errorf("embedding output %q missing", e)
				}
			}
		})
	}
}

// TestInputsReproduce recomputes every input from its image and checks it is
// bit-identical to what the golden outputs were made from.
func TestInputsReproduce(t *testing.T) {
	for _, m := range golden.Models() {
		g := loadGolden(t, m.ID)
		for i, im := range golden.Images() {
			t.Run(m.ID+"/"+im.Name, func(t *testing.T) {
				if i >= len(g.Cases) || g.Cases[i].Name != im.Name {
					t.Fatalf("no golden case %s (see TestGoldenFiles)", im.Name)
				}
				c := loadCase(t, m, im, g.Cases[i].InputSHA256)
				if len(c.Input) != m.H*m.W*3 {
					t.Fatalf("input has %d values, want %d", len(c.Input), m.H*m.W*3)
				}
			})
		}
	}
}

// TestONNXMatchesTFJS runs each converted model in ONNX Runtime on the golden
// inputs and compares every output with the original TensorFlow.js model's.
func TestONNXMatchesTFJS(t *testing.T) {
	cache := modelcache.DefaultRoot()
	var rt *inference.Runtime
	for _, m := range golden.Models() {
		t.Run(m.ID, func(t *testing.T) {
			g := loadGolden(t, m.ID)
			if len(g.Cases) != len(golden.Images()) {
				t.Fatalf("%d golden cases, want %d (see TestGoldenFiles)", len(g.Cases), len(golden.Images()))
			}
			path := filepath.Join(cache, "onnx", m.ID+".onnx")
			if _, err := os.Stat(path); err != nil {
				testenv.Missing(t, "converted model "+path, "run `go tool task models` to fetch and convert the pinned models")
			}
			if rt == nil {
				var err error
				rt, err = inference.Open(inference.Options{})
				if err != nil {
					t.Fatalf("open ONNX Runtime: %v", err)
				}
			}
			sess, err := rt.LoadFile(context.Background(), path)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			defer sess.Close()
			var outNames []string
			for _, o := range sess.Outputs() {
				outNames = append(outNames, o.Name)
				if _, ok := g.Cases[0].Outputs[o.Name]; !ok {
					t.Errorf("ONNX output %q has no TensorFlow.js reference: record it in golden.mjs", o.Name)
				}
			}

			worst, minCos, compared := 0.0, 1.0, 0
			worstRel, allowed := 0.0, 0
			for i, im := range golden.Images() {
				gc := g.Cases[i]
				if gc.Name != im.Name {
					t.Fatalf("golden case %d is %s, want %s (see TestGoldenFiles)", i, gc.Name, im.Name)
				}
				t.Run(im.Name, func(t *testing.T) {
					c := loadCase(t, m, im, gc.InputSHA256)
					res, err := sess.Run(context.Background(), inference.Tensor{
						Shape: []int64{1, int64(c.H), int64(c.W), 3},
						Data:  c.Input,
					})
					if err != nil {
						t.Fatalf("run: %v", err)
					}
					for name, o := range gc.Outputs {
						k := slices.Index(outNames, name)
						if k < 0 {
							t.Fatalf("the ONNX model has no output %q; it has %v", name, outNames)
						}
						want, err := o.decode()
						if err != nil {
							t.Fatalf("golden output %s: %v", name, err)
						}
						got := res[k]
						if !slices.Equal(got.Shape, o.Shape) {
							t.Fatalf("output %s: shape %v, TensorFlow.js gave %v", name, got.Shape, o.Shape)
						}
						st := compare(got.Data, want)
						worst = max(worst, st.maxAbs)
						if st.maxAbs > maxAbsDiff {
							worstRel = max(worstRel, st.maxRel)
							allowed += st.beyondAbs
						}
						if st.bad >= 0 {
							t.Errorf("output %s: difference %.3g at [%d] (ONNX %v, tfjs %v), want <= %g or <= %g relative", name, math.Abs(float64(got.Data[st.bad])-float64(want[st.bad])), st.bad, got.Data[st.bad], want[st.bad], maxAbsDiff, relFloat32)
						}
						if name == embeddings[m.ID] {
							cs := cosine(got.Data, want)
							minCos = min(minCos, cs)
							if !(cs >= minCosine) {
								t.Errorf("output %s: cosine %.7f, want >= %g", name, cs, minCosine)
							}
						}
					}
					compared++
				})
			}
			if compared == 0 {
				t.Fatalf("no case could be compared")
			}
			msg := fmt.Sprintf("%s: %d images: max abs diff %.3g", m.ID, compared, worst)
			if _, ok := embeddings[m.ID]; ok {
				msg += fmt.Sprintf(", min cosine %.10f (1-cos %.2g)", minCos, 1-minCos)
			}
			if allowed > 0 {
				msg += fmt.Sprintf(" (%d values beyond %g; largest relative difference among them %.2g)", allowed, maxAbsDiff, worstRel)
			}
			t.Log(msg)
		})
	}
	if rt != nil {
		if err := rt.Close(); err != nil {
			t.Errorf("close runtime: %v", err)
		}
	}
}

type diffStats struct {
	maxAbs    float64 // largest |got-want|
	beyondAbs int     // values with |got-want| > maxAbsDiff
	maxRel    float64 // largest |got-want|/|want| among those
	bad       int     // first value outside both tolerances, or -1
}

func compare(got, want []float32) diffStats {
	st := diffStats{bad: -1}
	for i := range got {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		st.maxAbs = max(st.maxAbs, d)
		if d <= maxAbsDiff {
			continue
		}
		st.beyondAbs++
		rel := d / math.Abs(float64(want[i]))
		st.maxRel = max(st.maxRel, rel)
		if !(rel <= relFloat32) && st.bad < 0 {
			st.bad = i
		}
	}
	return st
}

func cosine(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	return ab / math.Sqrt(aa*bb)
}
