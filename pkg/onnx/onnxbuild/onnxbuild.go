// Package onnxbuild assembles ONNX models from Go: initializers, nodes and
// typed graph inputs/outputs. The converters in models/convert use it so that
// each of them only has to describe its network, not the protobuf plumbing.
package onnxbuild

import (
	"fmt"
	"maps"
	"math"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/facegate/facegate/pkg/onnx/onnxpb"
)

// Opset is the ONNX operator set every converted model targets. ORT rejects
// some old-opset forms (BatchNormalization 6); 17 is well supported by ORT 1.30.
const Opset = 17

// Graph accumulates one ONNX graph. It is not safe for concurrent use.
type Graph struct {
	name   string
	g      *onnxpb.GraphProto
	names  map[string]bool
	serial int
}

// New starts an empty graph.
func New(name string) *Graph {
	return &Graph{name: name, g: &onnxpb.GraphProto{Name: proto.String(name)}, names: map[string]bool{}}
}

// Fresh returns a value name not used before in this graph, derived from hint.
func (b *Graph) Fresh(hint string) string {
	for {
		b.serial++
		n := fmt.Sprintf("%s__%d", hint, b.serial)
		if !b.names[n] {
			b.names[n] = true
			return n
		}
	}
}

func (b *Graph) claim(name string) error {
	if name == "" {
		return fmt.Errorf("onnxbuild: empty value name")
	}
	if b.names[name] {
		return fmt.Errorf("onnxbuild: value %q defined twice", name)
	}
	b.names[name] = true
	return nil
}

func valueInfo(name string, elem onnxpb.TensorProto_DataType, shape []int64) *onnxpb.ValueInfoProto {
	dims := make([]*onnxpb.TensorShapeProto_Dimension, len(shape))
	for i, d := range shape {
		if d < 0 {
			dims[i] = &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: fmt.Sprintf("d%d", i)}}
		} else {
			dims[i] = &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}}
		}
	}
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(elem)),
			Shape:    &onnxpb.TensorShapeProto{Dim: dims},
		}}},
	}
}

// Input declares a float32 graph input; a negative dimension is symbolic (batch).
func (b *Graph) Input(name string, shape ...int64) (string, error) {
	if err := b.claim(name); err != nil {
		return "", err
	}
	b.g.Input = append(b.g.Input, valueInfo(name, onnxpb.TensorProto_FLOAT, shape))
	return name, nil
}

// Output declares an existing value as a float32 graph output.
func (b *Graph) Output(name string, shape ...int64) {
	b.g.Output = append(b.g.Output, valueInfo(name, onnxpb.TensorProto_FLOAT, shape))
}

// Float adds a float32 initializer and returns its name.
func (b *Graph) Float(name string, dims []int64, data []float32) (string, error) {
	if err := checkCount(name, dims, len(data)); err != nil {
		return "", err
	}
	if err := b.claim(name); err != nil {
		return "", err
	}
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		u := math.Float32bits(v)
		raw[4*i], raw[4*i+1], raw[4*i+2], raw[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
	}
	b.g.Initializer = append(b.g.Initializer, &onnxpb.TensorProto{
		Name: proto.String(name), Dims: dims, DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), RawData: raw,
	})
	return name, nil
}

// Int64 adds an int64 initializer (shapes, axes, pads) and returns its name.
func (b *Graph) Int64(name string, dims []int64, data []int64) (string, error) {
	if err := checkCount(name, dims, len(data)); err != nil {
		return "", err
	}
	if err := b.claim(name); err != nil {
		return "", err
	}
	b.g.Initializer = append(b.g.Initializer, &onnxpb.TensorProto{
		Name: proto.String(name), Dims: dims, DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Int64Data: append([]int64(nil), data...),
	})
	return name, nil
}

func checkCount(name string, dims []int64, n int) error {
	want := int64(1)
	for _, d := range dims {
		if d < 0 {
			return fmt.Errorf("onnxbuild: initializer %q has negative dimension in %v", name, dims)
		}
		want *= d
	}
	if want != int64(n) {
		return fmt.Errorf("onnxbuild: initializer %q: shape %v needs %d values, got %d", name, dims, want, n)
	}
	return nil
}

// Attr is one node attribute; build them with Ints, Int, Floats, Float32, String.
type Attr = *onnxpb.AttributeProto

// Ints is an INTS attribute.
func Ints(name string, v ...int64) Attr {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
}

// Int is an INT attribute.
func Int(name string, v int64) Attr {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

// Floats is a FLOATS attribute.
func Floats(name string, v ...float32) Attr {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOATS.Enum(), Floats: v}
}

// Float32 is a FLOAT attribute.
func Float32(name string, v float32) Attr {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(v)}
}

// String is a STRING attribute.
func String(name, v string) Attr {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_STRING.Enum(), S: []byte(v)}
}

// Node appends a node whose single output gets a fresh name derived from hint,
// and returns that name. Use NodeOut for nodes with several or named outputs.
func (b *Graph) Node(op, hint string, inputs []string, attrs ...Attr) string {
	out := b.Fresh(hint)
	b.g.Node = append(b.g.Node, &onnxpb.NodeProto{
		OpType: proto.String(op), Name: proto.String(out), Input: inputs, Output: []string{out}, Attribute: attrs,
	})
	return out
}

// NodeOut appends a node with the given, caller-chosen output names.
func (b *Graph) NodeOut(op string, inputs, outputs []string, attrs ...Attr) error {
	for _, o := range outputs {
		if err := b.claim(o); err != nil {
			return err
		}
	}
	b.g.Node = append(b.g.Node, &onnxpb.NodeProto{
		OpType: proto.String(op), Name: proto.String(outputs[0]), Input: inputs, Output: outputs, Attribute: attrs,
	})
	return nil
}

// Model wraps the graph into a model at Opset with producer metadata and
// optional key/value metadata (model id, source package, ...).
func (b *Graph) Model(producer string, meta map[string]string) *onnxpb.ModelProto {
	m := &onnxpb.ModelProto{
		IrVersion:       proto.Int64(8),
		ProducerName:    proto.String(producer),
		ProducerVersion: proto.String("1"),
		OpsetImport:     []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(Opset)}},
		Graph:           b.g,
	}
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		m.MetadataProps = append(m.MetadataProps, &onnxpb.StringStringEntryProto{Key: proto.String(k), Value: proto.String(meta[k])})
	}
	return m
}

// Marshal serialises the model deterministically (same network, same bytes),
// so converted files can be checksummed.
func Marshal(m *onnxpb.ModelProto) ([]byte, error) {
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("onnxbuild: marshal model: %w", err)
	}
	return data, nil
}
