// Package modelbench measures the face models against the machine's limit:
// FLOPs per image counted from the ONNX graph, the convolution peak ONNX
// Runtime reaches on this CPU, and milliseconds per image on one thread and
// on all cores.
package modelbench

import (
	"context"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/onnx/onnxpb"
)

// OpFLOPs is the work of all nodes of one operator type.
type OpFLOPs struct {
	Op    string `json:"op"`
	Nodes int    `json:"nodes"`
	FLOPs int64  `json:"flops"`
}

// Profile is the arithmetic of one image through a model.
type Profile struct {
	// FLOPs counts multiply and add separately (2 per multiply-accumulate) in
	// convolutions and matrix products, plus one per output element of
	// element-wise, pooling and reduction ops.
	FLOPs int64 `json:"flops"`
	// DenseFLOPs is the convolution and matrix-product part: the part a
	// conv peak speaks of.
	DenseFLOPs int64     `json:"dense_flops"`
	ByOp       []OpFLOPs `json:"by_op"`
	Params     int64     `json:"params"`
}

// CountFLOPs computes the per-image arithmetic of an ONNX model. Shapes come
// from ONNX Runtime itself: every intermediate value is exposed as an output
// and the model is run once on a batch of one, so no shape inference of our
// own can disagree with what the runtime actually computes.
func CountFLOPs(ctx context.Context, rt *inference.Runtime, onnx []byte) (Profile, error) {
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(onnx, &m); err != nil {
		return Profile{}, fmt.Errorf("modelbench: parse model: %w", err)
	}
	g := m.GetGraph()
	dims := map[string][]int64{}
	var prof Profile
	for _, init := range g.GetInitializer() {
		dims[init.GetName()] = init.GetDims()
		n := int64(1)
		for _, d := range init.GetDims() {
			n *= d
		}
		prof.Params += n
	}
	probe := proto.Clone(&m).(*onnxpb.ModelProto)
	pg := probe.GetGraph()
	isOut := map[string]bool{}
	for _, o := range pg.GetOutput() {
		isOut[o.GetName()] = true
	}
	for _, n := range pg.GetNode() {
		for _, o := range n.GetOutput() {
			if o == "" || isOut[o] {
				continue
			}
			isOut[o] = true
			pg.Output = append(pg.Output, &onnxpb.ValueInfoProto{
				Name: proto.String(o),
				Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT))}}},
			})
		}
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(probe)
	if err != nil {
		return Profile{}, fmt.Errorf("modelbench: marshal probe: %w", err)
	}
	sess, err := rt.Load(ctx, data)
	if err != nil {
		return Profile{}, fmt.Errorf("modelbench: load probe model: %w", err)
	}
	defer sess.Close()
	var inputs []inference.Tensor
	for _, in := range sess.Inputs() {
		shape := append([]int64(nil), in.Shape...)
		for i := range shape {
			if shape[i] < 0 {
				shape[i] = 1
			}
		}
		t := inference.Tensor{Shape: shape}
		t.Data = make([]float32, t.Len())
		for i := range t.Data {
			t.Data[i] = float32(i%251) + 1 // non-zero pixels keep Rsqrt and friends finite
		}
		inputs = append(inputs, t)
		dims[in.Name] = shape
	}
	outs, err := sess.Run(ctx, inputs...)
	if err != nil {
		return Profile{}, fmt.Errorf("modelbench: run probe model: %w", err)
	}
	for i, o := range sess.Outputs() {
		dims[o.Name] = outs[i].Shape
	}
	byOp := map[string]*OpFLOPs{}
	for _, n := range g.GetNode() {
		f, dense := nodeFLOPs(n, dims)
		prof.FLOPs += f
		if dense {
			prof.DenseFLOPs += f
		}
		e := byOp[n.GetOpType()]
		if e == nil {
			e = &OpFLOPs{Op: n.GetOpType()}
			byOp[n.GetOpType()] = e
		}
		e.Nodes++
		e.FLOPs += f
	}
	for _, e := range byOp {
		prof.ByOp = append(prof.ByOp, *e)
	}
	slices.SortFunc(prof.ByOp, func(a, b OpFLOPs) int {
		if a.FLOPs != b.FLOPs {
			if a.FLOPs > b.FLOPs {
				return -1
			}
			return 1
		}
		if a.Op < b.Op {
			return -1
		}
		return 1
	})
	return prof, nil
}

func numel(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

func attrInts(n *onnxpb.NodeProto, name string) []int64 {
	for _, a := range n.GetAttribute() {
		if a.GetName() == name {
			return a.GetInts()
		}
	}
	return nil
}

// nodeFLOPs returns the node's FLOPs and whether they are dense (conv/matmul).
func nodeFLOPs(n *onnxpb.NodeProto, dims map[string][]int64) (int64, bool) {
	if len(n.GetOutput()) == 0 {
		return 0, false
	}
	out := dims[n.GetOutput()[0]]
	in := func(i int) []int64 {
		if i < len(n.GetInput()) {
			return dims[n.GetInput()[i]]
		}
		return nil
	}
	switch n.GetOpType() {
	case "Conv":
		w := in(1) // [Cout, Cin/group, kh, kw]
		if len(w) != 4 || len(out) != 4 {
			return 0, true
		}
		return 2 * numel(out) * w[1] * w[2] * w[3], true
	case "MatMul", "Gemm":
		a := in(0)
		if len(a) == 0 {
			return 0, true
		}
		k := a[len(a)-1]
		if n.GetOpType() == "Gemm" {
			for _, at := range n.GetAttribute() {
				if at.GetName() == "transA" && at.GetI() == 1 {
					k = a[0]
				}
			}
		}
		return 2 * numel(out) * k, true
	case "MaxPool", "AveragePool":
		k := attrInts(n, "kernel_shape")
		return numel(out) * numel(k), false
	case "GlobalAveragePool", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceSumSquare":
		return numel(in(0)), false
	case "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Flatten", "Concat", "Pad", "Slice", "Gather", "Shape", "Constant":
		return 0, false // data movement, no arithmetic
	default:
		return numel(out), false
	}
}
