// Package tfjs converts TensorFlow.js graph models (model.json + weight
// files) into ONNX models that follow facegate's model contract: one float32
// NHWC RGB input named "input" holding raw 0..255 pixels, the model's own
// normalisation baked in, NCHW inside, outputs under their TensorFlow names.
//
// Only the ops used by the face models facegate ships are supported; any
// other op is reported by name instead of being guessed at.
package tfjs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/facegate/facegate/pkg/onnx/onnxbuild"
	"github.com/facegate/facegate/pkg/onnx/onnxpb"
)

// Options controls one conversion.
type Options struct {
	// ModelID is recorded in the ONNX metadata ("model_id").
	ModelID string
	// InputHW is the input height and width. Required when the graph's
	// placeholder leaves them unknown (-1); must match when it does not.
	InputHW [2]int
	// Scale and Bias bake preprocessing into the graph: the network sees
	// x*Scale + Bias for 0..255 RGB input x. Scale == 0 means identity.
	Scale, Bias float32
	// ExtraOutputs are TF node names exposed in addition to the sinks.
	ExtraOutputs []string
	// OnlyOutputs, if set, are exactly the TF node names exposed (in order).
	OnlyOutputs []string
}

// InputName is the name of the single graph input of every converted model.
const InputName = "input"

// ConvertFile converts the graph model at modelJSONPath, reading its weight
// files from the same directory, and returns the serialised ONNX model.
func ConvertFile(ctx context.Context, modelJSONPath string, opts Options) ([]byte, error) {
	data, err := os.ReadFile(modelJSONPath)
	if err != nil {
		return nil, fmt.Errorf("tfjs: read model: %w", err)
	}
	dir := filepath.Dir(modelJSONPath)
	readFile := func(name string) ([]byte, error) {
		// The manifest is untrusted input: it must not name files outside
		// the model's own directory.
		if !filepath.IsLocal(name) {
			return nil, fmt.Errorf("weights path %q leaves the model directory", name)
		}
		return os.ReadFile(filepath.Join(dir, name))
	}
	m, err := Convert(ctx, data, readFile, opts)
	if err != nil {
		return nil, fmt.Errorf("%w (model %s)", err, modelJSONPath)
	}
	return onnxbuild.Marshal(m)
}

// Convert converts a graph model given the bytes of its model.json and a
// function returning the contents of the weight files it names.
func Convert(ctx context.Context, modelJSON []byte, readFile func(name string) ([]byte, error), opts Options) (*onnxpb.ModelProto, error) {
	m, err := parseModel(modelJSON)
	if err != nil {
		return nil, err
	}
	nodes := map[string]*tfNode{}
	for i := range m.ModelTopology.Node {
		n := &m.ModelTopology.Node[i]
		if n.Name == "" {
			return nil, fmt.Errorf("tfjs: node %d has no name", i)
		}
		if n.Op == "" {
			return nil, fmt.Errorf("tfjs: node %q has no op", n.Name)
		}
		if _, dup := nodes[n.Name]; dup {
			return nil, fmt.Errorf("tfjs: node %q defined twice", n.Name)
		}
		nodes[n.Name] = n
	}
	outputs, err := pickOutputs(m.ModelTopology.Node, nodes, opts)
	if err != nil {
		return nil, err
	}
	order, err := topoOrder(nodes, outputs)
	if err != nil {
		return nil, err
	}
	var placeholders []*tfNode
	for _, n := range order {
		if !supportedOp(n.Op) {
			return nil, fmt.Errorf("tfjs: node %q: unsupported op %q", n.Name, n.Op)
		}
		if n.Op == "Placeholder" {
			placeholders = append(placeholders, n)
		}
	}
	if len(placeholders) != 1 {
		return nil, fmt.Errorf("tfjs: the requested outputs depend on %d placeholders; exactly one image input is supported", len(placeholders))
	}
	weights, err := loadWeights(m.WeightsManifest, readFile)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	c := &converter{
		g:       onnxbuild.New(graphName(opts.ModelID)),
		weights: weights,
		vals:    map[string]*value{},
		cache:   map[string]string{},
	}
	for i, n := range order {
		if i%32 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		var v *value
		if n.Op == "Placeholder" {
			v, err = c.input(n, opts)
		} else {
			v, err = c.convertNode(n)
		}
		if err == nil {
			err = c.err
		}
		if err != nil {
			return nil, err
		}
		c.vals[n.Name] = v
	}
	for _, name := range outputs {
		if err := c.output(name); err != nil {
			return nil, err
		}
	}
	meta := map[string]string{
		"source_format": "tfjs-graph-model",
		"input_layout":  "NHWC RGB 0..255",
		"preprocess":    preprocessText(opts),
	}
	if opts.ModelID != "" {
		meta["model_id"] = opts.ModelID
	}
	if s, ok := m.GeneratedBy.(string); ok && s != "" {
		meta["generated_by"] = s
	}
	if s, ok := m.ConvertedBy.(string); ok && s != "" {
		meta["converted_by"] = s
	}
	return c.g.Model("facegate-tfjs", meta), nil
}

func graphName(id string) string {
	if id == "" {
		return "tfjs"
	}
	return id
}

func scaleBias(opts Options) (float32, float32) {
	if opts.Scale == 0 {
		return 1, 0
	}
	return opts.Scale, opts.Bias
}

func preprocessText(opts Options) string {
	s, b := scaleBias(opts)
	return "x*" + strconv.FormatFloat(float64(s), 'g', -1, 32) + "+" + strconv.FormatFloat(float64(b), 'g', -1, 32)
}

// pickOutputs decides which TF nodes become graph outputs. Sinks (nodes no
// other node reads) are sorted naturally so "Identity_2" precedes "Identity_10".
func pickOutputs(list []tfNode, nodes map[string]*tfNode, opts Options) ([]string, error) {
	check := func(kind string, names []string) error {
		seen := map[string]bool{}
		for _, name := range names {
			n, ok := nodes[name]
			if !ok {
				return fmt.Errorf("tfjs: %s %q: no such node in the graph", kind, name)
			}
			if n.Op == "Const" {
				return fmt.Errorf("tfjs: %s %q: is a constant, not a computed tensor", kind, name)
			}
			if seen[name] {
				return fmt.Errorf("tfjs: %s %q listed twice", kind, name)
			}
			seen[name] = true
		}
		return nil
	}
	if len(opts.OnlyOutputs) > 0 {
		if err := check("output", opts.OnlyOutputs); err != nil {
			return nil, err
		}
		return slices.Clone(opts.OnlyOutputs), nil
	}
	if err := check("extra output", opts.ExtraOutputs); err != nil {
		return nil, err
	}
	consumed := map[string]bool{}
	for i := range list {
		for _, ref := range list[i].Input {
			name, _, err := inputRef(ref)
			if err == nil {
				consumed[name] = true
			}
		}
	}
	var sinks []string
	for i := range list {
		n := &list[i]
		if consumed[n.Name] || n.Op == "Const" || n.Op == "Placeholder" || n.Op == "NoOp" {
			continue
		}
		sinks = append(sinks, n.Name)
	}
	slices.SortFunc(sinks, naturalCompare)
	for _, e := range opts.ExtraOutputs {
		if !slices.Contains(sinks, e) {
			sinks = append(sinks, e)
		}
	}
	if len(sinks) == 0 {
		return nil, fmt.Errorf("tfjs: graph has no output nodes")
	}
	return sinks, nil
}

// naturalCompare orders strings with embedded decimal numbers by value.
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		da, db := digitPrefix(a), digitPrefix(b)
		if da > 0 && db > 0 {
			na := strings.TrimLeft(a[:da], "0")
			nb := strings.TrimLeft(b[:db], "0")
			if c := len(na) - len(nb); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func digitPrefix(s string) int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

// topoOrder returns the nodes the outputs depend on, each after its inputs.
// It is iterative so that a long or cyclic (corrupt) graph cannot exhaust
// the stack.
func topoOrder(nodes map[string]*tfNode, outputs []string) ([]*tfNode, error) {
	const (
		unseen = iota
		active
		done
	)
	state := map[string]int{}
	var order []*tfNode
	type frame struct {
		n    *tfNode
		next int
	}
	for _, out := range outputs {
		if state[out] == done {
			continue
		}
		stack := []frame{{n: nodes[out]}}
		state[out] = active
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.next == len(top.n.Input) {
				state[top.n.Name] = done
				order = append(order, top.n)
				stack = stack[:len(stack)-1]
				continue
			}
			ref := top.n.Input[top.next]
			top.next++
			name, control, err := inputRef(ref)
			if err != nil {
				return nil, fmt.Errorf("tfjs: node %q: %w", top.n.Name, err)
			}
			if control {
				continue
			}
			dep, ok := nodes[name]
			if !ok {
				return nil, fmt.Errorf("tfjs: node %q: input %q is not a node of the graph", top.n.Name, name)
			}
			switch state[name] {
			case active:
				return nil, fmt.Errorf("tfjs: node %q: graph has a cycle through %q", top.n.Name, name)
			case unseen:
				state[name] = active
				stack = append(stack, frame{n: dep})
			}
		}
	}
	return order, nil
}
