package modelbench_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/facegate/facegate/models"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/modelbench"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/onnx/onnxbuild"
	"github.com/facegate/facegate/pkg/testenv"
)

func runtimeOrSkip(t testing.TB) *inference.Runtime {
	t.Helper()
	if _, err := inference.ResolveLibrary(""); err != nil {
		testenv.Missing(t, "the ONNX Runtime library", err.Error())
	}
	rt, err := inference.Open(inference.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// A conv (stride 2, 3x3, 3->8 on 16x16), a Relu, a MatMul: FLOPs by hand.
func TestCountFLOPsByHand(t *testing.T) {
	rt := runtimeOrSkip(t)
	g := onnxbuild.New("hand")
	x, _ := g.Input("x", -1, 3, 16, 16)
	w, _ := g.Float("w", []int64{8, 3, 3, 3}, make([]float32, 8*3*3*3))
	conv := g.Node("Conv", "conv", []string{x, w}, onnxbuild.Ints("strides", 2, 2), onnxbuild.Ints("pads", 1, 1, 1, 1))
	relu := g.Node("Relu", "relu", []string{conv})
	shape, _ := g.Int64("shape", []int64{2}, []int64{-1, 8 * 8 * 8})
	flat := g.Node("Reshape", "flat", []string{relu, shape})
	fc, _ := g.Float("fc", []int64{512, 10}, make([]float32, 5120))
	if err := g.NodeOut("MatMul", []string{flat, fc}, []string{"y"}); err != nil {
		t.Fatal(err)
	}
	g.Output("y", -1, 10)
	data, err := onnxbuild.Marshal(g.Model("test", nil))
	if err != nil {
		t.Fatal(err)
	}
	prof, err := modelbench.CountFLOPs(context.Background(), rt, data)
	if err != nil {
		t.Fatal(err)
	}
	conv8 := int64(2 * 8 * 8 * 8 * 3 * 3 * 3) // out 8x8x8, 27 MACs each
	relu8 := int64(8 * 8 * 8)
	mm := int64(2 * 10 * 512)
	if prof.DenseFLOPs != conv8+mm || prof.FLOPs != conv8+mm+relu8 {
		t.Fatalf("FLOPs = %d (dense %d), want %d (dense %d)", prof.FLOPs, prof.DenseFLOPs, conv8+mm+relu8, conv8+mm)
	}
	if prof.Params != 8*27+2+5120 {
		t.Fatalf("params = %d", prof.Params)
	}
}

func TestPeakIsPlausible(t *testing.T) {
	rt := runtimeOrSkip(t)
	p, err := modelbench.MeasurePeak(context.Background(), rt, 2)
	if err != nil {
		t.Fatal(err)
	}
	// One AVX2 core cannot exceed 2 FMA units x 8 lanes x 2 FLOPs x ~5 GHz = 160 GFLOP/s;
	// a result above that means the FLOP count or the timer is wrong.
	if p.GFLOPS <= 0 || p.GFLOPS > 160 {
		t.Fatalf("peak %.1f GFLOP/s is not physically plausible for one core", p.GFLOPS)
	}
}

// BenchmarkModels reports ms per image and GFLOP/s for every converted model
// on one intra-op thread; compare runs with benchstat.
func BenchmarkModels(b *testing.B) {
	root := testenv.Models(b)
	m, err := models.Load()
	if err != nil {
		b.Fatal(err)
	}
	c := &modelcache.Cache{Root: root, Manifest: m}
	rt := runtimeOrSkip(b)
	ctx := context.Background()
	for _, md := range m.Models {
		b.Run(md.ID, func(b *testing.B) {
			data, err := os.ReadFile(c.ONNXPath(md.ID))
			if err != nil {
				b.Fatal(err)
			}
			prof, err := modelbench.CountFLOPs(ctx, rt, data)
			if err != nil {
				b.Fatal(err)
			}
			sess, err := rt.Load(ctx, data)
			if err != nil {
				b.Fatal(err)
			}
			defer sess.Close()
			in := sess.Inputs()[0]
			shape := append([]int64(nil), in.Shape...)
			shape[0] = 1
			x := inference.Tensor{Shape: shape}
			x.Data = make([]float32, x.Len())
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if _, err := sess.Run(ctx, x); err != nil {
					b.Fatal(err)
				}
			}
			sec := time.Since(start).Seconds() / float64(b.N)
			b.ReportMetric(sec*1e3, "ms/img")
			b.ReportMetric(float64(prof.FLOPs)/sec/1e9, "GFLOP/s")
		})
	}
}
