package tfjs

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"testing"
)

// tolerance is the largest absolute difference accepted between ONNX Runtime
// and the float64-accumulating reference.
const tolerance = 1e-4

// check converts g, runs x through ONNX Runtime and compares every output
// with want; the converted model must expose exactly want's outputs.
func check(t *testing.T, g *tgraph, opts Options, x *tensor, want map[string]*tensor) {
	t.Helper()
	got := runModel(t, g.convert(t, opts), x)
	var gotNames, wantNames []string
	for n := range got {
		gotNames = append(gotNames, n)
	}
	for n := range want {
		wantNames = append(wantNames, n)
	}
	sort.Strings(gotNames)
	sort.Strings(wantNames)
	if !slices.Equal(gotNames, wantNames) {
		t.Fatalf("outputs %v, want %v", gotNames, wantNames)
	}
	for _, name := range wantNames {
		d := maxAbsDiff(t, name, got[name], want[name])
		if d > tolerance {
			t.Fatalf("output %q: max abs error %.3g > %g", name, d, tolerance)
		}
		t.Logf("output %q %v: max abs error %.2g", name, want[name].shape, d)
	}
}

func convAttrs(sh, sw int64, padding string) map[string]any {
	return map[string]any{
		"strides": aInts(1, sh, sw, 1), "padding": aStr(padding), "data_format": aStr("NHWC"),
		"dilations": aInts(1, 1, 1, 1), "explicit_paddings": aInts(),
	}
}

func fusedAttrs(sh, sw int64, padding string, ops ...string) map[string]any {
	a := convAttrs(sh, sw, padding)
	a["fused_ops"] = aStrs(ops...)
	a["num_args"] = map[string]any{"i": "1"}
	return a
}

func input(g *tgraph, h, w, c int) *tensor {
	g.placeholder("x", -1, int64(h), int64(w), int64(c))
	return randTensor(g.rng, -1, 1, 2, h, w, c)
}

func TestConv2D(t *testing.T) {
	cases := []struct {
		h, w, kh, kw, cin, cout int
		stride                  int64
		padding                 string
	}{
		{7, 7, 3, 3, 3, 4, 1, "SAME"},  // odd size, symmetric pads
		{8, 8, 3, 3, 2, 5, 1, "SAME"},  // even size
		{6, 5, 2, 2, 3, 2, 1, "SAME"},  // even kernel: extra pixel bottom/right at stride 1
		{7, 8, 3, 3, 3, 4, 2, "SAME"},  // stride 2: H pads 1/1, W pads 0/1
		{8, 8, 3, 3, 3, 6, 2, "SAME"},  // stride 2 even: pads 0/1 on both
		{9, 7, 5, 3, 2, 3, 2, "SAME"},  // rectangular kernel
		{7, 6, 3, 3, 3, 4, 1, "VALID"}, // VALID
		{8, 7, 3, 2, 3, 4, 2, "VALID"}, // VALID stride 2, odd remainder dropped
	}
	for i, tc := range cases {
		t.Run(fmt.Sprintf("%dx%d_k%dx%d_s%d_%s", tc.h, tc.w, tc.kh, tc.kw, tc.stride, tc.padding), func(t *testing.T) {
			g := newGraph(uint64(100 + i))
			x := input(g, tc.h, tc.w, tc.cin)
			k := g.constRand("k", tc.kh, tc.kw, tc.cin, tc.cout)
			g.op("y", "Conv2D", []string{"x", "k"}, convAttrs(tc.stride, tc.stride, tc.padding))
			check(t, g, Options{}, x, map[string]*tensor{"y": refConv(x, k, int(tc.stride), int(tc.stride), tc.padding)})
		})
	}
}

func TestDepthwiseConv2dNative(t *testing.T) {
	cases := []struct {
		h, w, k, c, mult int
		stride           int64
		padding          string
	}{
		{8, 7, 3, 4, 1, 2, "SAME"}, // blazeface's stride-2 depthwise
		{7, 7, 3, 3, 2, 2, "SAME"}, // channel multiplier 2
		{9, 9, 5, 2, 1, 1, "SAME"},
		{8, 8, 3, 3, 1, 1, "VALID"}, // mobileface pads explicitly, then VALID
	}
	for i, tc := range cases {
		t.Run(fmt.Sprintf("%dx%d_k%d_m%d_s%d_%s", tc.h, tc.w, tc.k, tc.mult, tc.stride, tc.padding), func(t *testing.T) {
			g := newGraph(uint64(200 + i))
			x := input(g, tc.h, tc.w, tc.c)
			k := g.constRand("k", tc.k, tc.k, tc.c, tc.mult)
			g.op("y", "DepthwiseConv2dNative", []string{"x", "k"}, convAttrs(tc.stride, tc.stride, tc.padding))
			check(t, g, Options{}, x, map[string]*tensor{"y": refDepthwise(x, k, int(tc.stride), int(tc.stride), tc.padding)})
		})
	}
}

func TestFusedConv(t *testing.T) {
	t.Run("conv_bias_relu_s2", func(t *testing.T) {
		g := newGraph(300)
		x := input(g, 8, 8, 3)
		k := g.constRand("k", 3, 3, 3, 4)
		b := g.constRand("b", 4)
		g.op("y", "_FusedConv2D", []string{"x", "k", "b"}, fusedAttrs(2, 2, "SAME", "BiasAdd", "Relu"))
		want := refMap(refBinary(refConv(x, k, 2, 2, "SAME"), b, func(a, b float32) float32 { return a + b }), relu)
		check(t, g, Options{}, x, map[string]*tensor{"y": want})
	})
	t.Run("conv_bias_valid", func(t *testing.T) {
		g := newGraph(301)
		x := input(g, 6, 6, 3)
		k := g.constRand("k", 1, 1, 3, 5)
		b := g.constRand("b", 5)
		g.op("y", "_FusedConv2D", []string{"x", "k", "b"}, fusedAttrs(1, 1, "VALID", "BiasAdd"))
		want := refBinary(refConv(x, k, 1, 1, "VALID"), b, func(a, b float32) float32 { return a + b })
		check(t, g, Options{}, x, map[string]*tensor{"y": want})
	})
	t.Run("conv_bias_relu6", func(t *testing.T) {
		g := newGraph(302)
		x := input(g, 5, 5, 3)
		k := g.constF("k", refMap(randTensor(g.rng, -1, 1, 3, 3, 3, 4), func(v float32) float32 { return 3 * v }))
		b := g.constRand("b", 4)
		g.op("y", "_FusedConv2D", []string{"x", "k", "b"}, fusedAttrs(1, 1, "SAME", "BiasAdd", "Relu6"))
		want := refMap(refBinary(refConv(x, k, 1, 1, "SAME"), b, func(a, b float32) float32 { return a + b }),
			func(v float32) float32 { return min(max(v, 0), 6) })
		check(t, g, Options{}, x, map[string]*tensor{"y": want})
	})
	t.Run("depthwise_bias_relu_s2", func(t *testing.T) {
		g := newGraph(303)
		x := input(g, 7, 8, 4)
		k := g.constRand("k", 3, 3, 4, 1)
		b := g.constRand("b", 4)
		g.op("y", "FusedDepthwiseConv2dNative", []string{"x", "k", "b"}, fusedAttrs(2, 2, "SAME", "BiasAdd", "Relu"))
		want := refMap(refBinary(refDepthwise(x, k, 2, 2, "SAME"), b, func(a, b float32) float32 { return a + b }), relu)
		check(t, g, Options{}, x, map[string]*tensor{"y": want})
	})
}

// Quantised weights must decode to exactly q*scale+min (or the half value).
func TestQuantizedWeights(t *testing.T) {
	for i, q := range []string{"float16", "uint8", "uint16"} {
		t.Run(q, func(t *testing.T) {
			g := newGraph(uint64(400 + i))
			x := input(g, 6, 6, 3)
			raw := randTensor(g.rng, -1, 1, 3, 3, 3, 4)
			var k *tensor
			if q == "float16" {
				k = g.constF16("k", raw)
			} else {
				k = g.constQ("k", q, raw)
			}
			g.op("y", "Conv2D", []string{"x", "k"}, convAttrs(1, 1, "SAME"))
			check(t, g, Options{}, x, map[string]*tensor{"y": refConv(x, k, 1, 1, "SAME")})
		})
	}
}

func TestPooling(t *testing.T) {
	cases := []struct {
		h, w, k int
		stride  int64
		padding string
	}{
		{7, 7, 2, 2, "SAME"}, // odd size: the padded last row/column must not win
		{8, 8, 3, 2, "SAME"},
		{8, 8, 2, 2, "VALID"},
		{7, 9, 2, 2, "VALID"},
	}
	for i, tc := range cases {
		t.Run(fmt.Sprintf("max_%dx%d_k%d_s%d_%s", tc.h, tc.w, tc.k, tc.stride, tc.padding), func(t *testing.T) {
			g := newGraph(uint64(500 + i))
			g.placeholder("x", -1, int64(tc.h), int64(tc.w), 3)
			// All negative, so zero padding would show up as a wrong maximum.
			x := randTensor(g.rng, -2, -1, 2, tc.h, tc.w, 3)
			k := int64(tc.k)
			g.op("y", "MaxPool", []string{"x"}, map[string]any{
				"ksize": aInts(1, k, k, 1), "strides": aInts(1, tc.stride, tc.stride, 1),
				"padding": aStr(tc.padding), "data_format": aStr("NHWC"),
			})
			check(t, g, Options{}, x, map[string]*tensor{"y": refMaxPool(x, tc.k, tc.k, int(tc.stride), int(tc.stride), tc.padding)})
		})
	}
	t.Run("avg_7x7_k2_s2_SAME", func(t *testing.T) {
		g := newGraph(510)
		x := input(g, 7, 7, 2)
		g.op("y", "AvgPool", []string{"x"}, map[string]any{
			"ksize": aInts(1, 2, 2, 1), "strides": aInts(1, 2, 2, 1), "padding": aStr("SAME"),
		})
		// TF averages over the real cells only: the last row/column average 2 (or 1) values.
		want := newTensor(2, 4, 4, 2)
		forEachIndex(want.shape, func(idx []int) {
			var sum float64
			n := 0
			for dy := range 2 {
				for dx := range 2 {
					y, xx := idx[1]*2+dy, idx[2]*2+dx
					if y < 7 && xx < 7 {
						sum += float64(x.data[x.offset(idx[0], y, xx, idx[3])])
						n++
					}
				}
			}
			want.data[want.offset(idx...)] = float32(sum / float64(n))
		})
		check(t, g, Options{}, x, map[string]*tensor{"y": want})
	})
}

func TestPad(t *testing.T) {
	t.Run("channels", func(t *testing.T) { // blazeface widens a residual this way
		g := newGraph(600)
		x := input(g, 4, 4, 3)
		g.constI("p", []int{4, 2}, 0, 0, 0, 0, 0, 0, 0, 5)
		g.op("y", "Pad", []string{"x", "p"}, nil)
		check(t, g, Options{}, x, map[string]*tensor{"y": refPad(x, [][2]int{{0, 0}, {0, 0}, {0, 0}, {0, 5}})})
	})
	t.Run("spatial_then_valid_conv", func(t *testing.T) { // mobileface
		g := newGraph(601)
		x := input(g, 5, 6, 2)
		g.constI("p", []int{4, 2}, 0, 0, 1, 2, 2, 1, 0, 0)
		g.op("pad", "Pad", []string{"x", "p"}, nil)
		k := g.constRand("k", 3, 3, 2, 3)
		g.op("y", "Conv2D", []string{"pad", "k"}, convAttrs(1, 1, "VALID"))
		padded := refPad(x, [][2]int{{0, 0}, {1, 2}, {2, 1}, {0, 0}})
		check(t, g, Options{}, x, map[string]*tensor{"y": refConv(padded, k, 1, 1, "VALID")})
	})
	t.Run("padv2_value", func(t *testing.T) {
		g := newGraph(602)
		x := input(g, 3, 3, 2)
		g.constI("p", []int{4, 2}, 0, 0, 1, 0, 0, 1, 0, 0)
		g.scalarConst("v", -3)
		g.op("y", "PadV2", []string{"x", "p", "v"}, nil)
		want := refPad(x, [][2]int{{0, 0}, {1, 0}, {0, 1}, {0, 0}})
		forEachIndex(want.shape, func(idx []int) {
			if idx[1] == 0 || idx[2] == 3 {
				want.data[want.offset(idx...)] = -3
			}
		})
		check(t, g, Options{}, x, map[string]*tensor{"y": want})
	})
}

func TestMeanSumSqueeze(t *testing.T) {
	cases := []struct {
		op   string
		axes []int32
		keep bool
	}{
		{"Mean", []int32{1, 2}, false}, // faceres global pooling -> [N, C]
		{"Mean", []int32{1, 2}, true},
		{"Mean", []int32{3}, false},      // [N, H, W]
		{"Mean", []int32{1}, false},      // [N, W, C]: order differs from NCHW, needs a transpose
		{"Sum", []int32{-1}, true},       // channel sum, negative axis
		{"Sum", []int32{2, 1, 3}, false}, // unordered axes
	}
	for i, tc := range cases {
		t.Run(fmt.Sprintf("%s%v_keep%v", tc.op, tc.axes, tc.keep), func(t *testing.T) {
			g := newGraph(uint64(700 + i))
			x := input(g, 4, 5, 3)
			g.constI("axes", []int{len(tc.axes)}, tc.axes...)
			g.op("y", tc.op, []string{"x", "axes"}, map[string]any{"keep_dims": aBool(tc.keep)})
			var axes []int
			for _, a := range tc.axes {
				axes = append(axes, (int(a)+4)%4)
			}
			check(t, g, Options{}, x, map[string]*tensor{"y": refReduce(x, axes, tc.keep, tc.op == "Mean")})
		})
	}
	t.Run("mean_keep_then_squeeze", func(t *testing.T) {
		g := newGraph(710)
		x := input(g, 4, 4, 6)
		g.constI("axes", []int{2}, 1, 2)
		g.op("m", "Mean", []string{"x", "axes"}, map[string]any{"keep_dims": aBool(true)})
		g.op("y", "Squeeze", []string{"m"}, map[string]any{"squeeze_dims": aInts(1, 2)})
		check(t, g, Options{}, x, map[string]*tensor{"y": refReduce(x, []int{1, 2}, false, true)})
	})
}

func TestReshape(t *testing.T) {
	t.Run("flatten_4d", func(t *testing.T) { // antispoof/liveness/mobileface flatten
		g := newGraph(800)
		x := input(g, 4, 3, 2)
		g.constI("s", []int{2}, -1, 24)
		g.op("y", "Reshape", []string{"x", "s"}, nil)
		check(t, g, Options{}, x, map[string]*tensor{"y": reshaped(x, 2, 24)})
	})
	t.Run("fixed_batch_graph_runs_batch_2", func(t *testing.T) { // blazeface: [1, 512, 1]
		g := newGraph(801)
		g.placeholder("x", 1, 4, 4, 3)
		x := randTensor(g.rng, -1, 1, 2, 4, 4, 3)
		k := g.constRand("k", 1, 1, 3, 2)
		g.op("c", "Conv2D", []string{"x", "k"}, convAttrs(1, 1, "SAME"))
		g.constI("s", []int{3}, 1, 32, 1)
		g.op("r", "Reshape", []string{"c", "s"}, nil)
		g.op("Identity", "Identity", []string{"r"}, nil)
		check(t, g, Options{}, x, map[string]*tensor{"Identity": reshaped(refConv(x, k, 1, 1, "SAME"), 2, 32, 1)})
	})
	t.Run("2d_to_4d_then_conv", func(t *testing.T) {
		g := newGraph(802)
		x := input(g, 4, 3, 2)
		g.constI("s1", []int{2}, -1, 24)
		g.op("flat", "Reshape", []string{"x", "s1"}, nil)
		g.constI("s2", []int{4}, -1, 3, 4, 2)
		g.op("img", "Reshape", []string{"flat", "s2"}, nil)
		k := g.constRand("k", 3, 3, 2, 2)
		g.op("y", "Conv2D", []string{"img", "k"}, convAttrs(1, 1, "SAME"))
		check(t, g, Options{}, x, map[string]*tensor{"y": refConv(reshaped(x, 2, 3, 4, 2), k, 1, 1, "SAME")})
	})
}

func TestMatMul(t *testing.T) {
	flat := func(g *tgraph) *tensor {
		x := input(g, 2, 3, 4)
		g.constI("s", []int{2}, -1, 24)
		g.op("flat", "Reshape", []string{"x", "s"}, nil)
		return x
	}
	t.Run("plain", func(t *testing.T) {
		g := newGraph(900)
		x := flat(g)
		w := g.constRand("w", 24, 5)
		g.op("y", "MatMul", []string{"flat", "w"}, map[string]any{"transpose_a": aBool(false), "transpose_b": aBool(false)})
		check(t, g, Options{}, x, map[string]*tensor{"y": refMatMul(reshaped(x, 2, 24), w, false, false)})
	})
	t.Run("fused_bias_relu", func(t *testing.T) {
		g := newGraph(901)
		x := flat(g)
		w := g.constRand("w", 24, 7)
		b := g.constRand("b", 7)
		g.op("y", "_FusedMatMul", []string{"flat", "w", "b"}, map[string]any{
			"fused_ops": aStrs("BiasAdd", "Relu"), "num_args": map[string]any{"i": "1"},
			"transpose_a": aBool(false), "transpose_b": aBool(false),
		})
		mm := refMatMul(reshaped(x, 2, 24), w, false, false)
		check(t, g, Options{}, x, map[string]*tensor{"y": refMap(refBinary(mm, b, func(a, b float32) float32 { return a + b }), relu)})
	})
	t.Run("fused_bias_transpose_b", func(t *testing.T) {
		g := newGraph(902)
		x := flat(g)
		w := g.constRand("w", 6, 24)
		b := g.constRand("b", 6)
		g.op("y", "_FusedMatMul", []string{"flat", "w", "b"}, map[string]any{
			"fused_ops": aStrs("BiasAdd"), "num_args": map[string]any{"i": "1"},
			"transpose_a": aBool(false), "transpose_b": aBool(true),
		})
		mm := refMatMul(reshaped(x, 2, 24), w, false, true)
		check(t, g, Options{}, x, map[string]*tensor{"y": refBinary(mm, b, func(a, b float32) float32 { return a + b })})
	})
}

func TestElementwise(t *testing.T) {
	add := func(a, b float32) float32 { return a + b }
	sub := func(a, b float32) float32 { return a - b }
	mul := func(a, b float32) float32 { return a * b }
	div := func(a, b float32) float32 { return a / b }
	maxf := func(a, b float32) float32 { return max(a, b) }
	minf := func(a, b float32) float32 { return min(a, b) }
	cases := []struct {
		name, op   string
		constFirst bool
		shape      []int // constant's shape; nil = scalar
		f          func(a, b float32) float32
	}{
		{"add_scalar_first", "Add", true, nil, add},
		{"addv2_channels", "AddV2", false, []int{3}, add},
		{"biasadd", "BiasAdd", false, []int{3}, add},
		{"sub_scalar", "Sub", false, nil, sub},
		{"sub_const_first", "Sub", true, []int{3}, sub},
		{"mul_gamma_first", "Mul", true, []int{3}, mul}, // mobileface PReLU
		{"mul_rank3", "Mul", false, []int{1, 5, 3}, mul},
		{"mul_rank4", "Mul", false, []int{1, 4, 1, 3}, mul},
		{"maximum_zero_first", "Maximum", true, nil, maxf},
		{"minimum_six", "Minimum", false, nil, minf}, // faceres clip
		{"minimum_zero_first", "Minimum", true, nil, minf},
		{"realdiv", "RealDiv", false, []int{3}, div},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newGraph(uint64(1000 + i))
			x := input(g, 4, 5, 3)
			var c *tensor
			if tc.shape == nil {
				v := float32(0)
				if tc.op == "Minimum" && !tc.constFirst {
					v = 0.5
				}
				if tc.op == "Add" || tc.op == "Sub" {
					v = 1.5
				}
				c = g.scalarConst("c", v)
			} else {
				c = g.constF("c", randTensor(g.rng, 0.5, 2, tc.shape...))
			}
			in := []string{"x", "c"}
			want := refBinary(x, c, tc.f)
			if tc.constFirst {
				in = []string{"c", "x"}
				want = refBinary(c, x, tc.f)
			}
			g.op("y", tc.op, in, nil)
			check(t, g, Options{}, x, map[string]*tensor{"y": want})
		})
	}
	t.Run("residual_add", func(t *testing.T) {
		g := newGraph(1100)
		x := input(g, 4, 4, 3)
		k := g.constRand("k", 3, 3, 3, 3)
		g.op("c", "Conv2D", []string{"x", "k"}, convAttrs(1, 1, "SAME"))
		g.op("y", "AddV2", []string{"x", "c"}, nil)
		check(t, g, Options{}, x, map[string]*tensor{"y": refBinary(x, refConv(x, k, 1, 1, "SAME"), add)})
	})
	t.Run("rank2_with_rank4", func(t *testing.T) { // [N, C] broadcast against [N, H, W, C] (N must be 1 in TF)
		g := newGraph(1101)
		g.placeholder("x", -1, 3, 3, 4)
		x := randTensor(g.rng, -1, 1, 1, 3, 3, 4)
		g.constI("axes", []int{2}, 1, 2)
		g.op("m", "Mean", []string{"x", "axes"}, map[string]any{"keep_dims": aBool(false)})
		g.op("y", "Mul", []string{"x", "m"}, nil)
		check(t, g, Options{}, x, map[string]*tensor{"y": refBinary(x, refReduce(x, []int{1, 2}, false, true), mul)})
	})
}

func TestUnary(t *testing.T) {
	cases := []struct {
		op string
		f  func(float32) float32
	}{
		{"Relu", relu},
		{"Relu6", func(v float32) float32 { return min(max(v, 0), 6) }},
		{"Sigmoid", sigmoid},
		{"Tanh", func(v float32) float32 { return float32(math.Tanh(float64(v))) }},
		{"Abs", func(v float32) float32 { return float32(math.Abs(float64(v))) }},
		{"Exp", func(v float32) float32 { return float32(math.Exp(float64(v))) }},
		{"Neg", func(v float32) float32 { return -v }},
		{"Square", func(v float32) float32 { return v * v }},
	}
	for i, tc := range cases {
		t.Run(tc.op, func(t *testing.T) {
			g := newGraph(uint64(1200 + i))
			g.placeholder("x", -1, 3, 4, 2)
			x := randTensor(g.rng, -8, 8, 2, 3, 4, 2)
			g.op("y", tc.op, []string{"x"}, nil)
			check(t, g, Options{}, x, map[string]*tensor{"y": refMap(x, tc.f)})
		})
	}
	for i, op := range []string{"Sqrt", "Rsqrt"} {
		t.Run(op, func(t *testing.T) {
			g := newGraph(uint64(1250 + i))
			g.placeholder("x", -1, 3, 4, 2)
			x := randTensor(g.rng, 0.25, 4, 2, 3, 4, 2)
			g.op("y", op, []string{"x"}, nil)
			f := func(v float32) float32 { return float32(math.Sqrt(float64(v))) }
			if op == "Rsqrt" {
				f = func(v float32) float32 { return float32(1 / math.Sqrt(float64(v))) }
			}
			check(t, g, Options{}, x, map[string]*tensor{"y": refMap(x, f)})
		})
	}
}

func TestSoftmax(t *testing.T) {
	t.Run("2d", func(t *testing.T) { // liveness
		g := newGraph(1300)
		x := input(g, 2, 2, 3)
		g.constI("s", []int{2}, -1, 12)
		g.op("flat", "Reshape", []string{"x", "s"}, nil)
		g.op("y", "Softmax", []string{"flat"}, nil)
		check(t, g, Options{}, x, map[string]*tensor{"y": refSoftmax(reshaped(x, 2, 12))})
	})
	t.Run("4d_channels", func(t *testing.T) {
		g := newGraph(1301)
		x := input(g, 3, 4, 5)
		g.op("y", "Softmax", []string{"x"}, nil)
		check(t, g, Options{}, x, map[string]*tensor{"y": refSoftmax(x)})
	})
}

// The L2 normalisation of mobilefacenet: x * rsqrt(max(sum(x^2), eps)).
func TestL2Normalize(t *testing.T) {
	l2 := func(x *tensor, axis int) *tensor {
		ss := refReduce(refMap(x, func(v float32) float32 { return v * v }), []int{axis}, true, false)
		inv := refMap(ss, func(v float32) float32 { return float32(1 / math.Sqrt(math.Max(float64(v), 1e-10))) })
		return refBinary(x, inv, func(a, b float32) float32 { return a * b })
	}
	build := func(g *tgraph, src string, axis int32) {
		g.op("sq", "Square", []string{src}, nil)
		g.constI("axis", []int{1}, axis)
		g.op("sum", "Sum", []string{"sq", "axis"}, map[string]any{"keep_dims": aBool(true)})
		g.scalarConst("eps", 1e-10)
		g.op("mx", "Maximum", []string{"sum", "eps"}, nil)
		g.op("rs", "Rsqrt", []string{"mx"}, nil)
		g.op("y", "Mul", []string{src, "rs"}, nil)
	}
	t.Run("2d", func(t *testing.T) {
		g := newGraph(1400)
		x := input(g, 2, 2, 4)
		g.constI("s", []int{2}, -1, 16)
		g.op("flat", "Reshape", []string{"x", "s"}, nil)
		build(g, "flat", 1)
		check(t, g, Options{}, x, map[string]*tensor{"y": l2(reshaped(x, 2, 16), 1)})
	})
	t.Run("4d_channels", func(t *testing.T) {
		g := newGraph(1401)
		x := input(g, 3, 3, 8)
		build(g, "x", 3)
		check(t, g, Options{}, x, map[string]*tensor{"y": l2(x, 3)})
	})
}

func TestPreprocessingAndOutputs(t *testing.T) {
	t.Run("scale_bias", func(t *testing.T) {
		g := newGraph(1500)
		g.placeholder("x", -1, 3, 3, 3)
		x := randTensor(g.rng, 0, 255, 2, 3, 3, 3)
		g.op("y", "Relu", []string{"x"}, nil)
		want := refMap(x, func(v float32) float32 { return relu(v/127.5 - 1) })
		check(t, g, Options{Scale: 1 / 127.5, Bias: -1}, x, map[string]*tensor{"y": want})
	})
	// two heads; extra and only outputs choose what is exposed
	build := func() (*tgraph, *tensor, map[string]*tensor) {
		g := newGraph(1501)
		x := input(g, 4, 4, 2)
		g.constI("axes", []int{2}, 1, 2)
		g.op("pool/Mean", "Mean", []string{"x", "axes"}, map[string]any{"keep_dims": aBool(false)})
		w1, w2 := g.constRand("w1", 2, 3), g.constRand("w2", 2, 4)
		g.op("head_b", "MatMul", []string{"pool/Mean", "w2"}, nil)
		g.op("head_a", "MatMul", []string{"pool/Mean", "w1"}, nil)
		g.op("Identity_10", "Identity", []string{"head_a"}, nil)
		g.op("Identity_2", "Sigmoid", []string{"head_b"}, nil)
		pool := refReduce(x, []int{1, 2}, false, true)
		return g, x, map[string]*tensor{
			"pool/Mean":   pool,
			"Identity_10": refMatMul(pool, w1, false, false),
			"Identity_2":  refMap(refMatMul(pool, w2, false, false), sigmoid),
		}
	}
	t.Run("sinks_and_extra", func(t *testing.T) {
		g, x, all := build()
		m, err := Convert(t.Context(), g.modelJSON(), binReader(g.bin), Options{ExtraOutputs: []string{"pool/Mean"}})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, o := range m.GetGraph().GetOutput() {
			names = append(names, o.GetName())
		}
		if want := []string{"Identity_2", "Identity_10", "pool/Mean"}; !slices.Equal(names, want) {
			t.Fatalf("outputs %v, want %v (natural order of sinks, then extras)", names, want)
		}
		check(t, g, Options{ExtraOutputs: []string{"pool/Mean"}}, x, all)
	})
	t.Run("only", func(t *testing.T) {
		g, x, all := build()
		check(t, g, Options{OnlyOutputs: []string{"pool/Mean"}}, x, map[string]*tensor{"pool/Mean": all["pool/Mean"]})
	})
}
