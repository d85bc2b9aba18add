package tfjs

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/onnx/onnxbuild"
	"github.com/facegate/facegate/pkg/testenv"
)

// The ONNX Runtime environment is process-global, so the test binary opens
// it once (TestMain) and every test shares it.
var testRuntime struct {
	rt  *inference.Runtime
	err error
}

func TestMain(m *testing.M) {
	testRuntime.rt, testRuntime.err = inference.Open(inference.Options{IntraOpThreads: 1})
	code := m.Run()
	if testRuntime.rt != nil {
		_ = testRuntime.rt.Close()
	}
	os.Exit(code)
}

func ortRuntime(t testing.TB) *inference.Runtime {
	t.Helper()
	if testRuntime.err != nil {
		testenv.Missing(t, "ONNX Runtime ("+testRuntime.err.Error()+")", "run `facegate models fetch` or set "+inference.EnvLibrary)
	}
	return testRuntime.rt
}

// tensor is a dense row-major float32 tensor used by the reference code.
type tensor struct {
	shape []int
	data  []float32
}

func newTensor(shape ...int) *tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return &tensor{shape: shape, data: make([]float32, n)}
}

func (t *tensor) offset(idx ...int) int {
	off := 0
	for i, x := range idx {
		off = off*t.shape[i] + x
	}
	return off
}

func randTensor(rng *rand.Rand, lo, hi float32, shape ...int) *tensor {
	t := newTensor(shape...)
	for i := range t.data {
		t.data[i] = lo + (hi-lo)*rng.Float32()
	}
	return t
}

// tgraph builds a tfjs graph model (model.json + one weights file) in memory.
type tgraph struct {
	nodes   []map[string]any
	weights []map[string]any
	bin     []byte
	rng     *rand.Rand
}

func newGraph(seed uint64) *tgraph {
	return &tgraph{rng: rand.New(rand.NewPCG(seed, 0x7f4a7c15))}
}

func dims(shape []int64) []map[string]any {
	out := []map[string]any{}
	for _, d := range shape {
		out = append(out, map[string]any{"size": strconv.FormatInt(d, 10)})
	}
	return out
}

func (g *tgraph) placeholder(name string, shape ...int64) {
	g.nodes = append(g.nodes, map[string]any{"name": name, "op": "Placeholder", "attr": map[string]any{
		"shape": map[string]any{"shape": map[string]any{"dim": dims(shape)}},
		"dtype": map[string]any{"type": "DT_FLOAT"},
	}})
}

func (g *tgraph) constNode(name, dtype string) {
	g.nodes = append(g.nodes, map[string]any{"name": name, "op": "Const", "attr": map[string]any{
		"dtype": map[string]any{"type": dtype},
		"value": map[string]any{"tensor": map[string]any{"dtype": dtype}},
	}})
}

func ishape(shape []int) []int64 {
	out := make([]int64, len(shape))
	for i, d := range shape {
		out[i] = int64(d)
	}
	return out
}

// constF adds a float32 constant stored plainly.
func (g *tgraph) constF(name string, t *tensor) *tensor {
	g.constNode(name, "DT_FLOAT")
	g.weights = append(g.weights, map[string]any{"name": name, "shape": t.shape, "dtype": "float32"})
	for _, v := range t.data {
		g.bin = binary.LittleEndian.AppendUint32(g.bin, math.Float32bits(v))
	}
	return t
}

// constRand adds a random float32 constant in [-1, 1].
func (g *tgraph) constRand(name string, shape ...int) *tensor {
	return g.constF(name, randTensor(g.rng, -1, 1, shape...))
}

func (g *tgraph) scalarConst(name string, v float32) *tensor {
	return g.constF(name, &tensor{shape: []int{}, data: []float32{v}})
}

// constF16 stores t as float16-quantised float32 (faceres' form) and returns
// the values a reader must decode (t rounded to half precision).
func (g *tgraph) constF16(name string, t *tensor) *tensor {
	g.constNode(name, "DT_FLOAT")
	g.weights = append(g.weights, map[string]any{"name": name, "shape": t.shape, "dtype": "float32",
		"quantization": map[string]any{"dtype": "float16", "original_dtype": "float32"}})
	out := &tensor{shape: t.shape, data: make([]float32, len(t.data))}
	for i, v := range t.data {
		h := floatToHalf(v)
		g.bin = binary.LittleEndian.AppendUint16(g.bin, h)
		out.data[i] = halfRef(h)
	}
	return out
}

// constQ stores t as uint8 or uint16 codes (value = q*scale + min).
func (g *tgraph) constQ(name, qtype string, t *tensor) *tensor {
	lo, hi := t.data[0], t.data[0]
	for _, v := range t.data {
		lo, hi = min(lo, v), max(hi, v)
	}
	levels := 255.0
	if qtype == "uint16" {
		levels = 65535
	}
	scale := (float64(hi) - float64(lo)) / levels
	g.constNode(name, "DT_FLOAT")
	g.weights = append(g.weights, map[string]any{"name": name, "shape": t.shape, "dtype": "float32",
		"quantization": map[string]any{"dtype": qtype, "scale": scale, "min": float64(lo)}})
	out := &tensor{shape: t.shape, data: make([]float32, len(t.data))}
	for i, v := range t.data {
		q := math.Round((float64(v) - float64(lo)) / scale)
		if qtype == "uint8" {
			g.bin = append(g.bin, byte(q))
		} else {
			g.bin = binary.LittleEndian.AppendUint16(g.bin, uint16(q))
		}
		out.data[i] = float32(q*scale + float64(lo))
	}
	return out
}

func (g *tgraph) constI(name string, shape []int, vals ...int32) {
	g.constNode(name, "DT_INT32")
	g.weights = append(g.weights, map[string]any{"name": name, "shape": shape, "dtype": "int32"})
	for _, v := range vals {
		g.bin = binary.LittleEndian.AppendUint32(g.bin, uint32(v))
	}
}

func (g *tgraph) op(name, op string, inputs []string, attrs map[string]any) {
	n := map[string]any{"name": name, "op": op, "input": inputs}
	if attrs != nil {
		n["attr"] = attrs
	}
	g.nodes = append(g.nodes, n)
}

func (g *tgraph) modelJSON() []byte {
	m := map[string]any{
		"format":        "graph-model",
		"generatedBy":   "facegate tfjs tests",
		"modelTopology": map[string]any{"node": g.nodes},
		"weightsManifest": []map[string]any{{
			"paths":   []string{"w.bin"},
			"weights": g.weights,
		}},
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func binReader(bin []byte) func(string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		if name != "w.bin" {
			return nil, fmt.Errorf("no file %q", name)
		}
		return bin, nil
	}
}

func (g *tgraph) convert(t testing.TB, opts Options) []byte {
	t.Helper()
	m, err := Convert(context.Background(), g.modelJSON(), binReader(g.bin), opts)
	if err != nil {
		t.Fatalf("Convert: %v", err)
	}
	b, err := onnxbuild.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func aInts(v ...int64) map[string]any {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatInt(x, 10)
	}
	return map[string]any{"list": map[string]any{"i": s}}
}

func aStr(s string) map[string]any {
	return map[string]any{"s": base64.StdEncoding.EncodeToString([]byte(s))}
}

func aStrs(ss ...string) map[string]any {
	enc := make([]string, len(ss))
	for i, s := range ss {
		enc[i] = base64.StdEncoding.EncodeToString([]byte(s))
	}
	return map[string]any{"list": map[string]any{"s": enc}}
}

func aBool(b bool) map[string]any { return map[string]any{"b": b} }

// runModel runs ONNX bytes on one NHWC input and returns outputs by name.
func runModel(t testing.TB, onnx []byte, x *tensor) map[string]*tensor {
	t.Helper()
	rt := ortRuntime(t)
	ctx := context.Background()
	s, err := rt.Load(ctx, onnx)
	if err != nil {
		t.Fatalf("ORT load: %v", err)
	}
	defer s.Close()
	return runSession(t, s, x)
}

func runSession(t testing.TB, s *inference.Session, x *tensor) map[string]*tensor {
	t.Helper()
	outs, err := s.Run(context.Background(), inference.Tensor{Shape: ishape(x.shape), Data: x.data})
	if err != nil {
		t.Fatalf("ORT run: %v", err)
	}
	res := map[string]*tensor{}
	for i, o := range s.Outputs() {
		shape := make([]int, len(outs[i].Shape))
		for j, d := range outs[i].Shape {
			shape[j] = int(d)
		}
		res[o.Name] = &tensor{shape: shape, data: outs[i].Data}
	}
	return res
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// maxAbsDiff compares two tensors of the same shape.
func maxAbsDiff(t testing.TB, what string, got, want *tensor) float64 {
	t.Helper()
	if !sameShape(got.shape, want.shape) {
		t.Fatalf("%s: shape %v, want %v", what, got.shape, want.shape)
	}
	worst := 0.0
	for i := range got.data {
		d := math.Abs(float64(got.data[i]) - float64(want.data[i]))
		if math.IsNaN(d) {
			t.Fatalf("%s: NaN at %d (got %v want %v)", what, i, got.data[i], want.data[i])
		}
		worst = max(worst, d)
	}
	return worst
}

// floatToHalf rounds to nearest-even binary16 (test data only, normal range).
func floatToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127 + 15
	mant := b & 0x7fffff
	if exp <= 0 {
		return sign // flush tiny test values to zero
	}
	h := uint32(exp)<<10 | mant>>13
	rest := mant & 0x1fff
	if rest > 0x1000 || (rest == 0x1000 && h&1 == 1) {
		h++
	}
	return sign | uint16(h)
}

// halfRef decodes binary16 with float64 arithmetic, independently of halfToFloat.
func halfRef(h uint16) float32 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	mant := float64(h & 0x3ff)
	switch exp {
	case 0:
		return float32(sign * mant * math.Pow(2, -24))
	case 31:
		if mant == 0 {
			return float32(sign * math.Inf(1))
		}
		return float32(math.NaN())
	}
	return float32(sign * (1 + mant/1024) * math.Pow(2, float64(exp-15)))
}
