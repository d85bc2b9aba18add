package tfjs

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/facegate/facegate/pkg/onnx/onnxbuild"
)

// smallGraph is a valid conv + relu graph used as the base of the bad-input cases.
func smallGraph() *tgraph {
	g := newGraph(42)
	g.placeholder("x", -1, 6, 6, 3)
	g.constRand("conv/kernel", 3, 3, 3, 4)
	g.op("conv/Conv2D", "Conv2D", []string{"x", "conv/kernel"}, convAttrs(1, 1, "SAME"))
	g.op("out", "Relu", []string{"conv/Conv2D"}, nil)
	return g
}

// editJSON decodes g's model.json, lets edit change it, and re-encodes it.
func editJSON(t *testing.T, g *tgraph, edit func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(g.modelJSON(), &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func manifestWeights(m map[string]any) []any {
	return m["weightsManifest"].([]any)[0].(map[string]any)["weights"].([]any)
}

func TestBadInput(t *testing.T) {
	type result struct {
		model []byte
		bin   []byte
		opts  Options
	}
	cases := []struct {
		name  string
		build func(t *testing.T) result
		want  []string // substrings the error must contain
	}{
		{"unsupported op", func(t *testing.T) result {
			g := smallGraph()
			g.op("head/erf", "Erf", []string{"out"}, nil)
			return result{model: g.modelJSON(), bin: g.bin}
		}, []string{`tfjs: node "head/erf": unsupported op "Erf"`}},
		{"unsupported fused activation", func(t *testing.T) result {
			g := smallGraph()
			g.constRand("b", 4)
			g.op("fused", "_FusedConv2D", []string{"x", "conv/kernel", "b"}, fusedAttrs(1, 1, "SAME", "BiasAdd", "Gelu"))
			return result{model: g.modelJSON(), bin: g.bin}
		}, []string{`node "fused"`, `"Gelu"`}},
		{"fused batch norm", func(t *testing.T) result {
			g := smallGraph()
			g.constRand("b", 4)
			g.op("fused", "_FusedConv2D", []string{"x", "conv/kernel", "b"}, fusedAttrs(1, 1, "SAME", "FusedBatchNorm"))
			return result{model: g.modelJSON(), bin: g.bin}
		}, []string{`node "fused"`, "FusedBatchNorm"}},
		{"truncated weights", func(t *testing.T) result {
			g := smallGraph()
			return result{model: g.modelJSON(), bin: g.bin[:len(g.bin)-6]}
		}, []string{`"conv/kernel"`, "w.bin", "truncated"}},
		{"weights file too long", func(t *testing.T) result {
			g := smallGraph()
			return result{model: g.modelJSON(), bin: append(g.bin, 0, 0, 0, 0)}
		}, []string{"w.bin", "436 bytes", "432"}},
		{"weight missing from manifest", func(t *testing.T) result {
			g := smallGraph()
			g.constNode("orphan", "DT_FLOAT")
			g.op("out2", "Add", []string{"out", "orphan"}, nil)
			return result{model: g.modelJSON(), bin: g.bin}
		}, []string{`node "orphan"`, "missing from manifest"}},
		{"unknown dtype", func(t *testing.T) result {
			g := smallGraph()
			return result{model: editJSON(t, g, func(m map[string]any) {
				manifestWeights(m)[0].(map[string]any)["dtype"] = "complex64"
			}), bin: g.bin}
		}, []string{`"conv/kernel"`, "w.bin", `unknown dtype "complex64"`}},
		{"unknown quantization", func(t *testing.T) result {
			g := smallGraph()
			return result{model: editJSON(t, g, func(m map[string]any) {
				manifestWeights(m)[0].(map[string]any)["quantization"] = map[string]any{"dtype": "int4"}
			}), bin: g.bin}
		}, []string{`"conv/kernel"`, `quantization dtype "int4"`}},
		{"uint8 quantization without scale", func(t *testing.T) result {
			g := smallGraph()
			return result{model: editJSON(t, g, func(m map[string]any) {
				manifestWeights(m)[0].(map[string]any)["quantization"] = map[string]any{"dtype": "uint8"}
			}), bin: g.bin}
		}, []string{`"conv/kernel"`, "without scale and min"}},
		{"weights file unreadable", func(t *testing.T) result {
			g := smallGraph()
			return result{model: editJSON(t, g, func(m map[string]any) {
				m["weightsManifest"].([]any)[0].(map[string]any)["paths"] = []string{"gone.bin"}
			}), bin: g.bin}
		}, []string{`"gone.bin"`}},
		{"malformed JSON", func(t *testing.T) result {
			return result{model: []byte(`{"modelTopology": {"node": [`)}
		}, []string{"parse model.json"}},
		{"not a graph model", func(t *testing.T) result {
			return result{model: []byte(`{"format": "layers-model", "weightsManifest": []}`)}
		}, []string{"no modelTopology"}},
		{"node list of wrong type", func(t *testing.T) result {
			return result{model: []byte(`{"modelTopology": {"node": {"name": "x"}}}`)}
		}, []string{"parse model.json"}},
		{"bad int attribute", func(t *testing.T) result {
			g := smallGraph()
			return result{model: editJSON(t, g, func(m map[string]any) {
				nodes := m["modelTopology"].(map[string]any)["node"].([]any)
				nodes[2].(map[string]any)["attr"].(map[string]any)["strides"] = map[string]any{"list": map[string]any{"i": []string{"one"}}}
			}), bin: g.bin}
		}, []string{"parse model.json", "one"}},
		{"input of unknown node", func(t *testing.T) result {
			g := smallGraph()
			g.op("out2", "Relu", []string{"nowhere"}, nil)
			return result{model: g.modelJSON(), bin: g.bin}
		}, []string{`node "out2"`, `"nowhere"`}},
		{"cycle", func(t *testing.T) result {
			g := smallGraph()
			g.op("a", "Add", []string{"out", "b"}, nil)
			g.op("b", "Relu", []string{"a"}, nil)
			g.op("c", "Relu", []string{"b"}, nil)
			return result{model: g.modelJSON(), bin: g.bin}
		}, []string{"cycle"}},
		{"duplicate node", func(t *testing.T) result {
			g := smallGraph()
			g.op("out", "Relu", []string{"x"}, nil)
			return result{model: g.modelJSON(), bin: g.bin}
		}, []string{`node "out" defined twice`}},
		{"unknown input size", func(t *testing.T) result {
			g := newGraph(1)
			g.placeholder("x", -1, -1, -1, 3)
			g.op("y", "Relu", []string{"x"}, nil)
			return result{model: g.modelJSON(), bin: g.bin}
		}, []string{`placeholder "x"`, "InputHW"}},
		{"input size contradicts graph", func(t *testing.T) result {
			g := smallGraph()
			return result{model: g.modelJSON(), bin: g.bin, opts: Options{InputHW: [2]int{8, 8}}}
		}, []string{"6x6", "8x8"}},
		{"unknown output", func(t *testing.T) result {
			g := smallGraph()
			return result{model: g.modelJSON(), bin: g.bin, opts: Options{OnlyOutputs: []string{"nope"}}}
		}, []string{`output "nope"`, "no such node"}},
		{"reshape across the batch", func(t *testing.T) result {
			g := smallGraph()
			g.constI("s", []int{2}, -1, 4)
			g.op("flat", "Reshape", []string{"out", "s"}, nil)
			return result{model: g.modelJSON(), bin: g.bin}
		}, []string{`node "flat"`, "batch"}},
		{"conv kernel not matching channels", func(t *testing.T) result {
			g := smallGraph()
			g.constRand("k5", 3, 3, 5, 4)
			g.op("bad", "Conv2D", []string{"x", "k5"}, convAttrs(1, 1, "SAME"))
			return result{model: g.modelJSON(), bin: g.bin}
		}, []string{`node "bad"`, "3 input channels"}},
		{"computed reshape target", func(t *testing.T) result {
			g := smallGraph()
			g.op("r", "Reshape", []string{"out", "out"}, nil)
			return result{model: g.modelJSON(), bin: g.bin}
		}, []string{`node "r"`, "must be a constant"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.build(t)
			_, err := Convert(context.Background(), r.model, binReader(r.bin), r.opts)
			if err == nil {
				t.Fatalf("Convert succeeded, want an error containing %q", tc.want)
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestBaseGraphIsValid(t *testing.T) {
	// The bad-input cases are edits of smallGraph; it must itself convert,
	// or they would pass for the wrong reason.
	g := smallGraph()
	if _, err := Convert(context.Background(), g.modelJSON(), binReader(g.bin), Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestConvertFile(t *testing.T) {
	dir := t.TempDir()
	g := smallGraph()
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("model.json", g.modelJSON())
	write("w.bin", g.bin)
	b, err := ConvertFile(context.Background(), filepath.Join(dir, "model.json"), Options{ModelID: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	x := randTensor(g.rng, -1, 1, 2, 6, 6, 3)
	// The kernel is the only weight: read it back from the file's bytes.
	k := newTensor(3, 3, 3, 4)
	for i := range k.data {
		k.data[i] = math.Float32frombits(binary.LittleEndian.Uint32(g.bin[4*i:]))
	}
	out := runModel(t, b, x)
	if d := maxAbsDiff(t, "out", out["out"], refMap(refConv(x, k, 1, 1, "SAME"), relu)); d > tolerance {
		t.Fatalf("max abs error %.3g", d)
	}

	t.Run("truncated file names the file", func(t *testing.T) {
		write("w.bin", g.bin[:100])
		_, err := ConvertFile(context.Background(), filepath.Join(dir, "model.json"), Options{})
		if err == nil || !strings.Contains(err.Error(), "w.bin") || !strings.Contains(err.Error(), "model.json") {
			t.Fatalf("error %v, want one naming w.bin and the model file", err)
		}
	})
	t.Run("weights path may not leave the directory", func(t *testing.T) {
		sub := filepath.Join(dir, "sub")
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		write("w.bin", g.bin) // a valid file one level up
		var m map[string]any
		if err := json.Unmarshal(g.modelJSON(), &m); err != nil {
			t.Fatal(err)
		}
		m["weightsManifest"].([]any)[0].(map[string]any)["paths"] = []string{"../w.bin"}
		data, _ := json.Marshal(m)
		if err := os.WriteFile(filepath.Join(sub, "model.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ConvertFile(context.Background(), filepath.Join(sub, "model.json"), Options{})
		if err == nil || !strings.Contains(err.Error(), "leaves the model directory") {
			t.Fatalf("error %v, want a refusal of ../w.bin", err)
		}
	})
	t.Run("missing model", func(t *testing.T) {
		if _, err := ConvertFile(context.Background(), filepath.Join(dir, "none.json"), Options{}); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("error %v, want not-exist", err)
		}
	})
}

func TestCancelledContext(t *testing.T) {
	g := smallGraph()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Convert(ctx, g.modelJSON(), binReader(g.bin), Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
}

// FuzzConvert feeds arbitrary model.json and weight bytes: the converter may
// refuse them but must never panic, and whatever it accepts must serialise.
func FuzzConvert(f *testing.F) {
	seeds := []*tgraph{smallGraph()}
	{
		g := newGraph(2)
		g.placeholder("x", 1, 4, 4, 2)
		g.constRand("k", 3, 3, 2, 1)
		g.constRand("b", 2)
		g.op("dw", "FusedDepthwiseConv2dNative", []string{"x", "k", "b"}, fusedAttrs(2, 2, "SAME", "BiasAdd", "Relu"))
		g.op("mp", "MaxPool", []string{"x"}, map[string]any{"ksize": aInts(1, 2, 2, 1), "strides": aInts(1, 2, 2, 1), "padding": aStr("SAME")})
		g.constI("p", []int{4, 2}, 0, 0, 0, 0, 0, 0, 0, 0)
		g.op("pad", "Pad", []string{"mp", "p"}, nil)
		g.op("sum", "AddV2", []string{"dw", "pad"}, nil)
		g.constI("s", []int{3}, 1, 8, 1)
		g.op("r", "Reshape", []string{"sum", "s"}, nil)
		g.op("Identity", "Identity", []string{"r"}, nil)
		seeds = append(seeds, g)
	}
	{
		g := newGraph(3)
		g.placeholder("x", -1, 4, 4, 2)
		g.constI("axes", []int{2}, 1, 2)
		g.op("m", "Mean", []string{"x", "axes"}, map[string]any{"keep_dims": aBool(false)})
		g.constRand("w", 2, 3)
		g.constRand("b", 3)
		g.op("fc", "_FusedMatMul", []string{"m", "w", "b"}, map[string]any{"fused_ops": aStrs("BiasAdd", "Relu"), "num_args": map[string]any{"i": "1"}})
		g.op("sm", "Softmax", []string{"fc"}, nil)
		g.op("sq", "Square", []string{"fc"}, nil)
		g.constI("ax", []int{1}, 1)
		g.op("ss", "Sum", []string{"sq", "ax"}, map[string]any{"keep_dims": aBool(true)})
		g.op("rs", "Rsqrt", []string{"ss"}, nil)
		g.scalarConst("zero", 0)
		g.op("mx", "Maximum", []string{"zero", "rs"}, nil)
		seeds = append(seeds, g)
	}
	for _, g := range seeds {
		f.Add(g.modelJSON(), g.bin)
	}
	f.Add([]byte(`{"modelTopology":{"node":[{"name":"x","op":"Placeholder"}]}}`), []byte{})
	f.Fuzz(func(t *testing.T, model, bin []byte) {
		read := func(string) ([]byte, error) { return bin, nil }
		m, err := Convert(context.Background(), model, read, Options{InputHW: [2]int{4, 4}})
		if err != nil {
			return
		}
		if len(m.GetGraph().GetOutput()) == 0 {
			t.Fatal("accepted model has no outputs")
		}
		if _, err := onnxbuild.Marshal(m); err != nil {
			t.Fatalf("accepted model does not serialise: %v", err)
		}
	})
}
