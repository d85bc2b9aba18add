package tfjs

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/facegate/facegate/pkg/onnx/onnxbuild"
)

// value is a converted TF tensor. shape is always in TF's own terms (NHWC for
// rank 4, -1 for the dynamic batch). A non-constant rank-4 value is stored
// NCHW in the ONNX graph, because that is the only layout ONNX Conv and pool
// ops accept; every other value is stored exactly as TF lays it out.
// Constants stay in Go until an op needs them, so each can be written in the
// layout that op wants.
type value struct {
	name  string
	shape []int64
	konst *constTensor
}

func (v *value) rank() int { return len(v.shape) }

// nchw reports whether the ONNX tensor behind v is the NCHW transpose of TF's.
func (v *value) nchw() bool { return v.konst == nil && len(v.shape) == 4 }

type converter struct {
	g       *onnxbuild.Graph
	weights map[string]*constTensor
	vals    map[string]*value
	cache   map[string]string // initializer names by content key
	batch   int64             // the placeholder's declared batch (-1 if free)
	err     error             // first failure of a helper that returns only a name
}

// nchwAxis maps an NHWC axis to its position in NCHW.
func nchwAxis(a int) int { return [4]int{0, 2, 3, 1}[a] }

func permToNCHW() []int64 { return []int64{0, 3, 1, 2} }
func permToNHWC() []int64 { return []int64{0, 2, 3, 1} }

// Limits that keep size arithmetic far from overflow on corrupt graphs.
const (
	maxSpatial = 1 << 20
	maxStride  = 1 << 16
)

var errUnsupported = errors.New("unsupported")

// supportedOp lists every TF op the converter handles; checked for the whole
// graph before any weight is read, so the error names the real problem.
func supportedOp(op string) bool {
	switch op {
	case "Placeholder", "Const", "Identity", "StopGradient", "Snapshot",
		"Add", "AddV2", "BiasAdd", "Sub", "Mul", "RealDiv", "Div", "Maximum", "Minimum",
		"Relu", "Relu6", "Sigmoid", "Tanh", "Abs", "Exp", "Neg", "Sqrt", "Rsqrt", "Square", "Softmax",
		"Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative",
		"MaxPool", "AvgPool", "Pad", "PadV2", "Reshape", "Squeeze", "Mean", "Sum",
		"MatMul", "_FusedMatMul":
		return true
	}
	return false
}

func (c *converter) input(n *tfNode, opts Options) (*value, error) {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("tfjs: input placeholder %q: %s", n.Name, fmt.Sprintf(format, a...))
	}
	shape, err := n.attrShape("shape")
	if err != nil {
		return nil, fail("%v", err)
	}
	if t := n.attrType("dtype"); t != "" && t != "DT_FLOAT" {
		return nil, fail("dtype %s; only DT_FLOAT images are supported", t)
	}
	if len(shape) != 4 {
		return nil, fail("shape %v; only a rank-4 NHWC image input is supported", shape)
	}
	c.batch = shape[0]
	h, w, ch := shape[1], shape[2], shape[3]
	if ch <= 0 || ch > maxSpatial {
		return nil, fail("channel count %d", ch)
	}
	if opts.InputHW != [2]int{} {
		oh, ow := int64(opts.InputHW[0]), int64(opts.InputHW[1])
		if oh <= 0 || ow <= 0 {
			return nil, fail("Options.InputHW %v must be positive", opts.InputHW)
		}
		if (h > 0 && h != oh) || (w > 0 && w != ow) {
			return nil, fail("graph fixes the input at %dx%d but Options.InputHW is %dx%d", h, w, oh, ow)
		}
		h, w = oh, ow
	}
	if h <= 0 || w <= 0 {
		return nil, fail("input height/width unknown in the graph (%v); set Options.InputHW", shape)
	}
	if h > maxSpatial || w > maxSpatial {
		return nil, fail("input %dx%d too large", h, w)
	}
	x, err := c.g.Input(InputName, -1, h, w, ch)
	if err != nil {
		return nil, fail("%v", err)
	}
	scale, bias := scaleBias(opts)
	if scale != 1 {
		x = c.g.Node("Mul", "preprocess_scale", []string{x, c.scalar(scale)})
	}
	if bias != 0 {
		x = c.g.Node("Add", "preprocess_bias", []string{x, c.scalar(bias)})
	}
	x = c.g.Node("Transpose", "input_nchw", []string{x}, onnxbuild.Ints("perm", permToNCHW()...))
	return &value{name: x, shape: []int64{-1, h, w, ch}}, nil
}

// Initializer names contain ':' which TF node names cannot, so they never
// collide with outputs named after TF nodes; Fresh names end in "__N".

func (c *converter) scalar(f float32) string {
	key := "scalar:" + strconv.FormatUint(uint64(math.Float32bits(f)), 16)
	if name, ok := c.cache[key]; ok {
		return name
	}
	name, err := c.g.Float(key, []int64{}, []float32{f})
	if err != nil && c.err == nil {
		c.err = err
	}
	c.cache[key] = name
	return name
}

func (c *converter) ints(data ...int64) string {
	parts := make([]string, len(data))
	for i, d := range data {
		parts[i] = strconv.FormatInt(d, 10)
	}
	key := "ints:" + strings.Join(parts, ",")
	if name, ok := c.cache[key]; ok {
		return name
	}
	name, err := c.g.Int64(key, []int64{int64(len(data))}, data)
	if err != nil && c.err == nil {
		c.err = err
	}
	c.cache[key] = name
	return name
}

// floatInit adds (once) an initializer for constant k under a layout tag.
func (c *converter) floatInit(k *constTensor, tag string, dims []int64, data func() []float32) (string, error) {
	key := k.name + ":" + tag
	if name, ok := c.cache[key]; ok {
		return name, nil
	}
	name, err := c.g.Float(key, dims, data())
	if err != nil {
		return "", err
	}
	c.cache[key] = name
	return name, nil
}

// constOperand writes k for use next to values of rank outRank: with
// outRank 4 it is broadcast-aligned to NHWC (leading 1s) and transposed to
// NCHW so numpy broadcasting in ONNX pairs the same elements TF pairs.
func (c *converter) constOperand(k *constTensor, outRank int) (string, error) {
	if k.isInt() {
		return "", fmt.Errorf("int32 constant %q used as float data", k.name)
	}
	if outRank != 4 || len(k.shape) == 0 {
		return c.floatInit(k, "plain", k.shape, func() []float32 { return k.f })
	}
	if len(k.shape) > 4 {
		return "", fmt.Errorf("constant %q of rank %d in a rank-4 expression", k.name, len(k.shape))
	}
	nhwc := make([]int64, 4)
	for i := range nhwc {
		nhwc[i] = 1
	}
	copy(nhwc[4-len(k.shape):], k.shape)
	data, dims := transposeData(k.f, nhwc, permToNCHW())
	return c.floatInit(k, "nchw", dims, func() []float32 { return data })
}

// operand returns v as an ONNX value ready to broadcast in a result of rank outRank.
func (c *converter) operand(v *value, outRank int) (string, error) {
	if v.konst != nil {
		return c.constOperand(v.konst, outRank)
	}
	if outRank == 4 && v.rank() > 0 && v.rank() < 4 {
		axes := make([]int64, 4-v.rank())
		for i := range axes {
			axes[i] = int64(i)
		}
		u := c.g.Node("Unsqueeze", "to4d", []string{v.name, c.ints(axes...)})
		return c.g.Node("Transpose", "to4d_nchw", []string{u}, onnxbuild.Ints("perm", permToNCHW()...)), nil
	}
	return v.name, nil
}

// plainOperand returns v in TF's own layout whatever its rank.
func (c *converter) plainOperand(v *value) (string, error) {
	if v.konst != nil {
		return c.constOperand(v.konst, 0)
	}
	if v.nchw() {
		return c.g.Node("Transpose", "to_nhwc", []string{v.name}, onnxbuild.Ints("perm", permToNHWC()...)), nil
	}
	return v.name, nil
}

func transposeData(data []float32, shape, perm []int64) ([]float32, []int64) {
	r := len(shape)
	outShape := make([]int64, r)
	for i, p := range perm {
		outShape[i] = shape[p]
	}
	inStride := make([]int64, r)
	s := int64(1)
	for i := r - 1; i >= 0; i-- {
		inStride[i] = s
		s *= shape[i]
	}
	out := make([]float32, len(data))
	idx := make([]int64, r) // index in the output
	for o := range out {
		off := int64(0)
		for i := range r {
			off += idx[i] * inStride[perm[i]]
		}
		out[o] = data[off]
		for i := r - 1; i >= 0; i-- {
			idx[i]++
			if idx[i] < outShape[i] {
				break
			}
			idx[i] = 0
		}
	}
	return out, outShape
}

// intValues reads an int32 constant used as shape, axes or paddings.
func intValues(v *value, what string) ([]int64, error) {
	if v.konst == nil {
		return nil, fmt.Errorf("%s must be a constant, computed %s is not supported", what, what)
	}
	if !v.konst.isInt() {
		return nil, fmt.Errorf("%s constant %q is not int32", what, v.konst.name)
	}
	out := make([]int64, len(v.konst.i))
	for i, x := range v.konst.i {
		out[i] = int64(x)
	}
	return out, nil
}

func (c *converter) convertNode(n *tfNode) (*value, error) {
	if n.Op == "Const" {
		k := c.weights[n.Name]
		if k == nil {
			return nil, fmt.Errorf("tfjs: node %q: constant's weight missing from manifest", n.Name)
		}
		return &value{shape: k.shape, konst: k}, nil
	}
	var ins []*value
	for _, ref := range n.Input {
		name, control, err := inputRef(ref)
		if err != nil {
			return nil, fmt.Errorf("tfjs: node %q: %w", n.Name, err)
		}
		if !control {
			ins = append(ins, c.vals[name])
		}
	}
	v, err := c.op(n, ins)
	if err == nil {
		err = c.err
	}
	if errors.Is(err, errUnsupported) {
		return nil, fmt.Errorf("tfjs: node %q: unsupported op %q", n.Name, n.Op)
	}
	if err != nil {
		return nil, fmt.Errorf("tfjs: node %q: %s: %w", n.Name, n.Op, err)
	}
	return v, nil
}

func wantInputs(ins []*value, min, max int) error {
	if len(ins) < min || len(ins) > max {
		if min == max {
			return fmt.Errorf("has %d inputs, want %d", len(ins), min)
		}
		return fmt.Errorf("has %d inputs, want %d to %d", len(ins), min, max)
	}
	return nil
}

func (c *converter) op(n *tfNode, ins []*value) (*value, error) {
	switch n.Op {
	case "Identity", "StopGradient", "Snapshot":
		if err := wantInputs(ins, 1, 1); err != nil {
			return nil, err
		}
		return ins[0], nil
	case "Add", "AddV2", "BiasAdd", "Sub", "Mul", "RealDiv", "Div", "Maximum", "Minimum":
		if err := wantInputs(ins, 2, 2); err != nil {
			return nil, err
		}
		if df, ok, _ := n.attrString("data_format"); ok && df != "NHWC" && n.Op == "BiasAdd" {
			return nil, fmt.Errorf("data_format %q; only NHWC is supported", df)
		}
		op := map[string]string{"Add": "Add", "AddV2": "Add", "BiasAdd": "Add", "Sub": "Sub", "Mul": "Mul",
			"RealDiv": "Div", "Div": "Div", "Maximum": "Max", "Minimum": "Min"}[n.Op]
		return c.binary(n, op, ins[0], ins[1])
	case "Square":
		if err := wantInputs(ins, 1, 1); err != nil {
			return nil, err
		}
		return c.binary(n, "Mul", ins[0], ins[0])
	case "Relu", "Sigmoid", "Tanh", "Abs", "Exp", "Neg", "Sqrt", "Rsqrt", "Relu6", "Softmax":
		if err := wantInputs(ins, 1, 1); err != nil {
			return nil, err
		}
		return c.unary(n, ins[0])
	case "Conv2D", "DepthwiseConv2dNative":
		return c.conv(n, ins, n.Op == "DepthwiseConv2dNative", false)
	case "_FusedConv2D", "FusedDepthwiseConv2dNative":
		return c.conv(n, ins, n.Op == "FusedDepthwiseConv2dNative", true)
	case "MaxPool", "AvgPool":
		return c.pool(n, ins)
	case "Pad", "PadV2":
		return c.pad(n, ins)
	case "Reshape":
		return c.reshape(n, ins)
	case "Squeeze":
		return c.squeeze(n, ins)
	case "Mean", "Sum":
		return c.reduce(n, ins)
	case "MatMul", "_FusedMatMul":
		return c.matmul(n, ins)
	}
	return nil, errUnsupported
}

// broadcast is numpy/TF broadcasting of static shapes; -1 (the batch) pairs
// with 1 or -1.
func broadcast(a, b []int64) ([]int64, error) {
	r := max(len(a), len(b))
	out := make([]int64, r)
	for i := range r {
		x, y := int64(1), int64(1)
		if j := len(a) - r + i; j >= 0 {
			x = a[j]
		}
		if j := len(b) - r + i; j >= 0 {
			y = b[j]
		}
		switch {
		case x == y:
			out[i] = x
		case x == 1:
			out[i] = y
		case y == 1:
			out[i] = x
		case x == -1:
			out[i] = y
		case y == -1:
			out[i] = x
		default:
			return nil, fmt.Errorf("shapes %v and %v do not broadcast", a, b)
		}
	}
	return out, nil
}

func (c *converter) binary(n *tfNode, op string, a, b *value) (*value, error) {
	shape, err := broadcast(a.shape, b.shape)
	if err != nil {
		return nil, err
	}
	r := len(shape)
	if r > 4 && (a.nchw() || b.nchw()) {
		return nil, fmt.Errorf("result of rank %d from an image tensor is not supported", r)
	}
	an, err := c.operand(a, r)
	if err != nil {
		return nil, err
	}
	bn, err := c.operand(b, r)
	if err != nil {
		return nil, err
	}
	return &value{name: c.g.Node(op, n.Name, []string{an, bn}), shape: shape}, nil
}

func (c *converter) unary(n *tfNode, x *value) (*value, error) {
	in, err := c.operand(x, x.rank())
	if err != nil {
		return nil, err
	}
	var out string
	switch n.Op {
	case "Rsqrt":
		out = c.g.Node("Reciprocal", n.Name, []string{c.g.Node("Sqrt", n.Name, []string{in})})
	case "Relu6":
		out = c.g.Node("Clip", n.Name, []string{in, c.scalar(0), c.scalar(6)})
	case "Softmax":
		if x.rank() == 0 {
			return nil, fmt.Errorf("softmax of a scalar")
		}
		axis := int64(-1)
		if x.rank() == 4 {
			axis = 1 // TF's last axis (channels) sits at 1 in NCHW
		}
		out = c.g.Node("Softmax", n.Name, []string{in}, onnxbuild.Int("axis", axis))
	default:
		out = c.g.Node(n.Op, n.Name, []string{in}) // ONNX spells these the same
	}
	return &value{name: out, shape: slices.Clone(x.shape)}, nil
}

// activation applies the fused activation that follows BiasAdd in fused_ops.
func (c *converter) activation(n *tfNode, ops []string, x string, rank int, alpha *value) (string, error) {
	if len(ops) == 0 {
		return x, nil
	}
	if len(ops) > 1 {
		return "", fmt.Errorf("fused_ops %v: only one activation after BiasAdd is supported", ops)
	}
	switch ops[0] {
	case "Relu", "Sigmoid", "Tanh":
		return c.g.Node(ops[0], n.Name, []string{x}), nil
	case "Relu6":
		return c.g.Node("Clip", n.Name, []string{x, c.scalar(0), c.scalar(6)}), nil
	case "Elu":
		return c.g.Node("Elu", n.Name, []string{x}, onnxbuild.Float32("alpha", 1)), nil
	case "LeakyRelu":
		a := n.attrFloat("leakyrelu_alpha", 0.2)
		return c.g.Node("LeakyRelu", n.Name, []string{x}, onnxbuild.Float32("alpha", float32(a))), nil
	case "PRelu":
		if alpha == nil {
			return "", fmt.Errorf("fused PRelu without its alpha argument")
		}
		an, err := c.operand(alpha, rank)
		if err != nil {
			return "", err
		}
		return c.g.Node("PRelu", n.Name, []string{x, an}), nil
	}
	return "", fmt.Errorf("unsupported fused activation %q in fused_ops", ops[0])
}

// fusedOps validates fused_ops/num_args of a _Fused* node. It returns the
// bias, the activations after BiasAdd and PRelu's alpha (if any).
func fusedOps(n *tfNode, args []*value) (bias *value, acts []string, alpha *value, err error) {
	ops, _, err := n.attrStrings("fused_ops")
	if err != nil {
		return nil, nil, nil, err
	}
	if len(ops) == 0 || ops[0] != "BiasAdd" {
		return nil, nil, nil, fmt.Errorf("fused_ops %v: only [BiasAdd, activation?] is supported", ops)
	}
	want := 1
	if len(ops) > 1 && ops[1] == "PRelu" {
		want = 2
	}
	if len(args) != want {
		return nil, nil, nil, fmt.Errorf("fused_ops %v needs %d extra inputs, node has %d", ops, want, len(args))
	}
	if want == 2 {
		alpha = args[1]
	}
	return args[0], ops[1:], alpha, nil
}

// spatialAttr reads an NHWC 4-vector attribute ([1, h, w, 1]) such as strides.
func spatialAttr(n *tfNode, key string) (int64, int64, error) {
	v, ok := n.attrInts(key)
	if !ok {
		return 1, 1, nil
	}
	if len(v) != 4 || v[0] != 1 || v[3] != 1 || v[1] < 1 || v[2] < 1 || v[1] > maxStride || v[2] > maxStride {
		return 0, 0, fmt.Errorf("attribute %s %v: want [1, h, w, 1] with positive h, w", key, v)
	}
	return v[1], v[2], nil
}

type padMode struct {
	kind     string   // SAME, VALID, EXPLICIT
	explicit [4]int64 // top, bottom, left, right (EXPLICIT only)
}

func readPadding(n *tfNode) (padMode, error) {
	p, ok, err := n.attrString("padding")
	if err != nil {
		return padMode{}, err
	}
	if !ok {
		return padMode{}, fmt.Errorf("padding attribute missing")
	}
	switch p {
	case "SAME", "VALID":
		return padMode{kind: p}, nil
	case "EXPLICIT":
		e, _ := n.attrInts("explicit_paddings")
		if len(e) != 8 || e[0] != 0 || e[1] != 0 || e[6] != 0 || e[7] != 0 {
			return padMode{}, fmt.Errorf("explicit_paddings %v: want 8 values padding only H and W", e)
		}
		m := padMode{kind: p, explicit: [4]int64{e[2], e[3], e[4], e[5]}}
		for _, x := range m.explicit {
			if x < 0 || x > maxSpatial {
				return padMode{}, fmt.Errorf("explicit_paddings %v out of range", e)
			}
		}
		return m, nil
	}
	return padMode{}, fmt.Errorf("padding %q; want SAME, VALID or EXPLICIT", p)
}

// window computes one spatial dimension of a conv/pool the way TF does:
// SAME puts the odd padding pixel after (bottom/right).
func window(m padMode, in, k, s, d int64, before, after int64) (pb, pa, out int64, err error) {
	eff := (k-1)*d + 1
	switch m.kind {
	case "VALID":
		if in >= eff {
			out = (in-eff)/s + 1
		}
	case "SAME":
		out = (in + s - 1) / s
		total := max((out-1)*s+eff-in, 0)
		pb = total / 2
		pa = total - pb
	case "EXPLICIT":
		pb, pa = before, after
		if in+pb+pa >= eff {
			out = (in+pb+pa-eff)/s + 1
		}
	}
	if out <= 0 {
		return 0, 0, 0, fmt.Errorf("window %d (dilated %d) does not fit input size %d with %s padding", k, eff, in, m.kind)
	}
	return pb, pa, out, nil
}

func imageInput(x *value) error {
	if !x.nchw() {
		return fmt.Errorf("input must be a computed rank-4 NHWC tensor, got shape %v", x.shape)
	}
	if x.shape[1] <= 0 || x.shape[2] <= 0 || x.shape[3] <= 0 {
		return fmt.Errorf("input shape %v has unknown spatial or channel size", x.shape)
	}
	return nil
}

func (c *converter) conv(n *tfNode, ins []*value, depthwise, fused bool) (*value, error) {
	if len(ins) < 2 {
		return nil, fmt.Errorf("has %d inputs, want at least 2", len(ins))
	}
	x, k := ins[0], ins[1]
	var bias, alpha *value
	var acts []string
	if fused {
		var err error
		if bias, acts, alpha, err = fusedOps(n, ins[2:]); err != nil {
			return nil, err
		}
	} else if len(ins) != 2 {
		return nil, fmt.Errorf("has %d inputs, want 2", len(ins))
	}
	if err := imageInput(x); err != nil {
		return nil, err
	}
	if df, ok, _ := n.attrString("data_format"); ok && df != "NHWC" {
		return nil, fmt.Errorf("data_format %q; only NHWC is supported", df)
	}
	if k.konst == nil || k.konst.isInt() || k.rank() != 4 {
		return nil, fmt.Errorf("filter must be a rank-4 float constant, got shape %v", k.shape)
	}
	sh, sw, err := spatialAttr(n, "strides")
	if err != nil {
		return nil, err
	}
	dh, dw, err := spatialAttr(n, "dilations")
	if err != nil {
		return nil, err
	}
	pm, err := readPadding(n)
	if err != nil {
		return nil, err
	}
	kh, kw, ki, ko := k.shape[0], k.shape[1], k.shape[2], k.shape[3]
	h, w, ch := x.shape[1], x.shape[2], x.shape[3]
	if kh <= 0 || kw <= 0 || ki <= 0 || ko <= 0 {
		return nil, fmt.Errorf("filter shape %v has an empty dimension", k.shape)
	}
	var cout, group int64
	var wdims []int64
	var tag string
	if depthwise {
		if ki != ch {
			return nil, fmt.Errorf("depthwise filter %v does not match %d input channels", k.shape, ch)
		}
		cout, group, tag = ch*ko, ch, "dw"
		// TF's depthwise output channel c*M+m is filter[:, :, c, m]: exactly
		// the HWIO->OIHW transpose of [H, W, 1, C*M], i.e. the same bytes.
		wdims = []int64{cout, 1, kh, kw}
	} else {
		if ch%ki != 0 || ko%(ch/ki) != 0 {
			return nil, fmt.Errorf("filter %v does not match %d input channels", k.shape, ch)
		}
		cout, group, tag = ko, ch/ki, "oihw"
		wdims = []int64{ko, ki, kh, kw}
	}
	kdata := k.konst.f
	wname, err := c.floatInit(k.konst, tag, wdims, func() []float32 {
		// Both cases are a transpose of [kh, kw, I, O] to [O, I, kh, kw];
		// depthwise views the filter as [kh, kw, 1, C*M].
		src := []int64{kh, kw, ki, ko}
		if depthwise {
			src = []int64{kh, kw, 1, ki * ko}
		}
		d, _ := transposeData(kdata, src, []int64{3, 2, 0, 1})
		return d
	})
	if err != nil {
		return nil, err
	}
	pt, pb, oh, err := window(pm, h, kh, sh, dh, pm.explicit[0], pm.explicit[1])
	if err != nil {
		return nil, err
	}
	pl, pr, ow, err := window(pm, w, kw, sw, dw, pm.explicit[2], pm.explicit[3])
	if err != nil {
		return nil, err
	}
	inputs := []string{x.name, wname}
	if bias != nil {
		if bias.konst == nil || bias.konst.isInt() || bias.rank() != 1 || bias.shape[0] != cout {
			return nil, fmt.Errorf("bias must be a float constant of shape [%d], got %v", cout, bias.shape)
		}
		bname, err := c.constOperand(bias.konst, 1)
		if err != nil {
			return nil, err
		}
		inputs = append(inputs, bname)
	}
	out := c.g.Node("Conv", n.Name, inputs,
		onnxbuild.Ints("kernel_shape", kh, kw),
		onnxbuild.Ints("strides", sh, sw),
		onnxbuild.Ints("dilations", dh, dw),
		onnxbuild.Ints("pads", pt, pl, pb, pr),
		onnxbuild.Int("group", group))
	if out, err = c.activation(n, acts, out, 4, alpha); err != nil {
		return nil, err
	}
	return &value{name: out, shape: []int64{x.shape[0], oh, ow, cout}}, nil
}

func (c *converter) pool(n *tfNode, ins []*value) (*value, error) {
	if err := wantInputs(ins, 1, 1); err != nil {
		return nil, err
	}
	x := ins[0]
	if err := imageInput(x); err != nil {
		return nil, err
	}
	if df, ok, _ := n.attrString("data_format"); ok && df != "NHWC" {
		return nil, fmt.Errorf("data_format %q; only NHWC is supported", df)
	}
	if _, ok := n.attrInts("ksize"); !ok {
		return nil, fmt.Errorf("ksize attribute missing")
	}
	kh, kw, err := spatialAttr(n, "ksize")
	if err != nil {
		return nil, err
	}
	sh, sw, err := spatialAttr(n, "strides")
	if err != nil {
		return nil, err
	}
	pm, err := readPadding(n)
	if err != nil {
		return nil, err
	}
	if pm.kind == "EXPLICIT" {
		return nil, fmt.Errorf("EXPLICIT padding for pooling is not supported")
	}
	pt, pb, oh, err := window(pm, x.shape[1], kh, sh, 1, 0, 0)
	if err != nil {
		return nil, err
	}
	pl, pr, ow, err := window(pm, x.shape[2], kw, sw, 1, 0, 0)
	if err != nil {
		return nil, err
	}
	attrs := []onnxbuild.Attr{
		onnxbuild.Ints("kernel_shape", kh, kw),
		onnxbuild.Ints("strides", sh, sw),
		onnxbuild.Ints("pads", pt, pl, pb, pr),
	}
	// ONNX MaxPool never picks a padded cell and AveragePool's default
	// count_include_pad=0 averages over real cells only: both match TF SAME.
	op := "MaxPool"
	if n.Op == "AvgPool" {
		op = "AveragePool"
	}
	out := c.g.Node(op, n.Name, []string{x.name}, attrs...)
	return &value{name: out, shape: []int64{x.shape[0], oh, ow, x.shape[3]}}, nil
}

func (c *converter) pad(n *tfNode, ins []*value) (*value, error) {
	if n.Op == "PadV2" {
		if err := wantInputs(ins, 3, 3); err != nil {
			return nil, err
		}
	} else if err := wantInputs(ins, 2, 2); err != nil {
		return nil, err
	}
	x := ins[0]
	p, err := intValues(ins[1], "paddings")
	if err != nil {
		return nil, err
	}
	r := x.rank()
	if len(p) != 2*r || ins[1].rank() != 2 {
		return nil, fmt.Errorf("paddings of shape %v for a rank-%d input", ins[1].shape, r)
	}
	pads := make([]int64, 2*r)
	shape := slices.Clone(x.shape)
	for a := range r {
		before, after := p[2*a], p[2*a+1]
		if before < 0 || after < 0 || before > maxSpatial || after > maxSpatial {
			return nil, fmt.Errorf("paddings %v: negative or huge padding", p)
		}
		pos := a
		if r == 4 {
			pos = nchwAxis(a)
		}
		pads[pos], pads[r+pos] = before, after
		if shape[a] >= 0 {
			shape[a] += before + after
		}
	}
	xn, err := c.operand(x, r)
	if err != nil {
		return nil, err
	}
	inputs := []string{xn, c.ints(pads...)}
	if n.Op == "PadV2" {
		cv := ins[2]
		if cv.konst == nil || cv.konst.isInt() || len(cv.konst.f) != 1 {
			return nil, fmt.Errorf("constant_values must be a float scalar constant")
		}
		inputs = append(inputs, c.scalar(cv.konst.f[0]))
	}
	return &value{name: c.g.Node("Pad", n.Name, inputs, onnxbuild.String("mode", "constant")), shape: shape}, nil
}

func product(dims []int64) (int64, error) {
	p := int64(1)
	for _, d := range dims {
		if d < 0 {
			return 0, fmt.Errorf("unknown dimension in %v", dims)
		}
		if d != 0 && p > math.MaxInt32/d {
			return 0, fmt.Errorf("shape %v too large", dims)
		}
		p *= d
	}
	return p, nil
}

// resolveShape fills TF's single -1 in target so it holds total elements.
func resolveShape(target []int64, total int64) ([]int64, error) {
	out := slices.Clone(target)
	free := -1
	known := int64(1)
	for i, d := range target {
		switch {
		case d == -1 && free < 0:
			free = i
		case d <= 0:
			return nil, fmt.Errorf("target shape %v: unsupported dimension %d", target, d)
		default:
			if known > math.MaxInt32/d {
				return nil, fmt.Errorf("target shape %v too large", target)
			}
			known *= d
		}
	}
	if free >= 0 {
		if total%known != 0 {
			return nil, fmt.Errorf("cannot reshape %d elements to %v", total, target)
		}
		out[free] = total / known
	} else if known != total {
		return nil, fmt.Errorf("cannot reshape %d elements to %v", total, target)
	}
	return out, nil
}

func (c *converter) reshape(n *tfNode, ins []*value) (*value, error) {
	if err := wantInputs(ins, 2, 2); err != nil {
		return nil, err
	}
	x := ins[0]
	t, err := intValues(ins[1], "shape")
	if err != nil {
		return nil, err
	}
	if ins[1].rank() != 1 {
		return nil, fmt.Errorf("shape operand must be 1-D, got %v", ins[1].shape)
	}
	var outShape, onnxShape []int64
	if x.rank() > 0 && x.shape[0] < 0 {
		// The batch is dynamic in ONNX even when the graph was exported with
		// a fixed batch (blazeface: [1, 512, 1]); keep dim 0 as the batch.
		rest, err := product(x.shape[1:])
		if err != nil {
			return nil, fmt.Errorf("input %v: %w", x.shape, err)
		}
		if len(t) == 0 || (t[0] != -1 && t[0] != 1 && t[0] != c.batch) {
			return nil, fmt.Errorf("target shape %v does not keep the batch dimension of %v", t, x.shape)
		}
		tail, err := resolveShape(t[1:], rest)
		if err != nil {
			return nil, fmt.Errorf("target shape %v mixes the batch dimension of %v: %w", t, x.shape, err)
		}
		outShape = append([]int64{-1}, tail...)
		onnxShape = append([]int64{0}, tail...) // 0 copies the batch size
	} else {
		total, err := product(x.shape)
		if err != nil {
			return nil, err
		}
		if outShape, err = resolveShape(t, total); err != nil {
			return nil, err
		}
		onnxShape = outShape
	}
	data, err := c.plainOperand(x) // TF reshapes in NHWC element order
	if err != nil {
		return nil, err
	}
	out := c.g.Node("Reshape", n.Name, []string{data, c.ints(onnxShape...)})
	if len(outShape) == 4 {
		out = c.g.Node("Transpose", n.Name, []string{out}, onnxbuild.Ints("perm", permToNCHW()...))
	}
	return &value{name: out, shape: outShape}, nil
}

func normAxes(axes []int64, r int) ([]int, error) {
	var out []int
	for _, a := range axes {
		if a < -int64(r) || a >= int64(r) {
			return nil, fmt.Errorf("axis %d out of range for rank %d", a, r)
		}
		if a < 0 {
			a += int64(r)
		}
		if !slices.Contains(out, int(a)) {
			out = append(out, int(a))
		}
	}
	slices.Sort(out)
	return out, nil
}

func (c *converter) squeeze(n *tfNode, ins []*value) (*value, error) {
	if err := wantInputs(ins, 1, 1); err != nil {
		return nil, err
	}
	x := ins[0]
	dims, ok := n.attrInts("squeeze_dims")
	if !ok {
		dims, ok = n.attrInts("axis")
	}
	var axes []int
	if ok && len(dims) > 0 {
		var err error
		if axes, err = normAxes(dims, x.rank()); err != nil {
			return nil, err
		}
	} else {
		for i, d := range x.shape {
			if d == 1 {
				axes = append(axes, i)
			}
		}
	}
	for _, a := range axes {
		if x.shape[a] != 1 {
			return nil, fmt.Errorf("cannot squeeze axis %d of shape %v", a, x.shape)
		}
	}
	return c.dropAxes(n, "Squeeze", x, axes, false)
}

func (c *converter) reduce(n *tfNode, ins []*value) (*value, error) {
	if err := wantInputs(ins, 2, 2); err != nil {
		return nil, err
	}
	raw, err := intValues(ins[1], "reduction axes")
	if err != nil {
		return nil, err
	}
	axes, err := normAxes(raw, ins[0].rank())
	if err != nil {
		return nil, err
	}
	op := map[string]string{"Mean": "ReduceMean", "Sum": "ReduceSum"}[n.Op]
	return c.dropAxes(n, op, ins[0], axes, n.attrBool("keep_dims"))
}

// dropAxes emits Squeeze/ReduceMean/ReduceSum over TF axes. On an NCHW
// value it works in place when the surviving axes keep TF's order (e.g. a
// mean over H, W leaving [N, C]); otherwise it transposes back to NHWC first.
func (c *converter) dropAxes(n *tfNode, op string, x *value, axes []int, keep bool) (*value, error) {
	if len(axes) == 0 { // TF reduces nothing, ONNX would reduce everything
		return x, nil
	}
	var shape []int64
	var kept []int
	for i, d := range x.shape {
		switch {
		case !slices.Contains(axes, i):
			shape = append(shape, d)
			kept = append(kept, i)
		case keep:
			shape = append(shape, 1)
		}
	}
	var data string
	onnxAxes := make([]int64, len(axes))
	for i, a := range axes {
		onnxAxes[i] = int64(a)
	}
	inPlace := x.nchw()
	if inPlace && !keep {
		for i := 1; i < len(kept); i++ {
			if nchwAxis(kept[i]) < nchwAxis(kept[i-1]) {
				inPlace = false
			}
		}
	}
	var err error
	switch {
	case inPlace:
		data = x.name
		for i, a := range axes {
			onnxAxes[i] = int64(nchwAxis(a))
		}
		slices.Sort(onnxAxes)
	default:
		if data, err = c.plainOperand(x); err != nil {
			return nil, err
		}
	}
	var out string
	switch op {
	case "Squeeze":
		out = c.g.Node("Squeeze", n.Name, []string{data, c.ints(onnxAxes...)})
	case "ReduceSum":
		k := int64(0)
		if keep {
			k = 1
		}
		out = c.g.Node("ReduceSum", n.Name, []string{data, c.ints(onnxAxes...)}, onnxbuild.Int("keepdims", k))
	case "ReduceMean":
		k := int64(0)
		if keep {
			k = 1
		}
		out = c.g.Node("ReduceMean", n.Name, []string{data}, onnxbuild.Ints("axes", onnxAxes...), onnxbuild.Int("keepdims", k))
	}
	if len(shape) == 4 && !inPlace {
		// Only reachable from a non-NCHW 4-D input (a constant): store the
		// result NCHW like every computed 4-D value.
		out = c.g.Node("Transpose", n.Name, []string{out}, onnxbuild.Ints("perm", permToNCHW()...))
	}
	return &value{name: out, shape: shape}, nil
}

func (c *converter) matmul(n *tfNode, ins []*value) (*value, error) {
	if len(ins) < 2 {
		return nil, fmt.Errorf("has %d inputs, want at least 2", len(ins))
	}
	a, b := ins[0], ins[1]
	var bias, alpha *value
	var acts []string
	if n.Op == "_FusedMatMul" {
		var err error
		if bias, acts, alpha, err = fusedOps(n, ins[2:]); err != nil {
			return nil, err
		}
	} else if len(ins) != 2 {
		return nil, fmt.Errorf("has %d inputs, want 2", len(ins))
	}
	if a.rank() != 2 || b.rank() != 2 {
		return nil, fmt.Errorf("only 2-D MatMul is supported, got %v x %v", a.shape, b.shape)
	}
	ta, tb := n.attrBool("transpose_a"), n.attrBool("transpose_b")
	m, k1 := a.shape[0], a.shape[1]
	if ta {
		m, k1 = k1, m
	}
	k2, cols := b.shape[0], b.shape[1]
	if tb {
		k2, cols = cols, k2
	}
	if k1 >= 0 && k2 >= 0 && k1 != k2 {
		return nil, fmt.Errorf("inner dimensions differ: %v x %v (transpose_a=%v, transpose_b=%v)", a.shape, b.shape, ta, tb)
	}
	an, err := c.operand(a, 2)
	if err != nil {
		return nil, err
	}
	bn, err := c.operand(b, 2)
	if err != nil {
		return nil, err
	}
	inputs := []string{an, bn}
	if bias != nil {
		if bias.rank() > 1 || (bias.rank() == 1 && bias.shape[0] != cols && bias.shape[0] != 1) {
			return nil, fmt.Errorf("bias shape %v does not match %d columns", bias.shape, cols)
		}
		bb, err := c.operand(bias, 1)
		if err != nil {
			return nil, err
		}
		inputs = append(inputs, bb)
	}
	var attrs []onnxbuild.Attr
	if ta {
		attrs = append(attrs, onnxbuild.Int("transA", 1))
	}
	if tb {
		attrs = append(attrs, onnxbuild.Int("transB", 1))
	}
	out := c.g.Node("Gemm", n.Name, inputs, attrs...)
	if out, err = c.activation(n, acts, out, 2, alpha); err != nil {
		return nil, err
	}
	return &value{name: out, shape: []int64{m, cols}}, nil
}

// output exposes a converted TF tensor under its TF name, in TF's layout.
func (c *converter) output(name string) error {
	v := c.vals[name]
	var err error
	if v.nchw() {
		err = c.g.NodeOut("Transpose", []string{v.name}, []string{name}, onnxbuild.Ints("perm", permToNHWC()...))
	} else {
		var src string
		if src, err = c.plainOperand(v); err == nil {
			err = c.g.NodeOut("Identity", []string{src}, []string{name})
		}
	}
	if err != nil {
		return fmt.Errorf("tfjs: output %q: %w", name, err)
	}
	c.g.Output(name, v.shape...)
	return nil
}
