package inference_test

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/onnx/onnxbuild"
	"github.com/facegate/facegate/pkg/testenv"
)

func openRuntime(t *testing.T) *inference.Runtime {
	t.Helper()
	if _, err := inference.ResolveLibrary(""); err != nil {
		testenv.Missing(t, "the ONNX Runtime library", err.Error())
	}
	rt, err := inference.Open(inference.Options{})
	if err != nil {
		t.Fatalf("open runtime: %v", err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// affineModel computes y = relu(x * w + b) over [N,4] -> [N,3] with MatMul,
// Add and Relu, small enough to check by hand.
func affineModel(t *testing.T) ([]byte, []float32, []float32) {
	t.Helper()
	g := onnxbuild.New("affine")
	x, err := g.Input("x", -1, 4)
	if err != nil {
		t.Fatal(err)
	}
	w := []float32{1, -1, 0.5, 2, 0, 1, -3, 1, 1, 0.25, 0.5, -1}
	b := []float32{0.1, -0.2, 0.3}
	wn, _ := g.Float("w", []int64{4, 3}, w)
	bn, _ := g.Float("b", []int64{3}, b)
	mm := g.Node("MatMul", "mm", []string{x, wn})
	add := g.Node("Add", "add", []string{mm, bn})
	if err := g.NodeOut("Relu", []string{add}, []string{"y"}); err != nil {
		t.Fatal(err)
	}
	g.Output("y", -1, 3)
	data, err := onnxbuild.Marshal(g.Model("test", map[string]string{"facegate.model_id": "affine"}))
	if err != nil {
		t.Fatal(err)
	}
	return data, w, b
}

func reference(x, w, b []float32, n int) []float32 {
	out := make([]float32, n*3)
	for i := 0; i < n; i++ {
		for j := 0; j < 3; j++ {
			s := b[j]
			for k := 0; k < 4; k++ {
				s += x[i*4+k] * w[k*3+j]
			}
			out[i*3+j] = float32(math.Max(0, float64(s)))
		}
	}
	return out
}

func TestRunMatchesReference(t *testing.T) {
	rt := openRuntime(t)
	data, w, b := affineModel(t)
	s, err := rt.Load(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.Inputs(); len(got) != 1 || got[0].Name != "x" || got[0].Shape[0] != -1 || got[0].Shape[1] != 4 {
		t.Fatalf("inputs = %+v", got)
	}
	if got := s.Metadata()["facegate.model_id"]; got != "affine" {
		t.Fatalf("metadata model id = %q", got)
	}
	x := []float32{1, 2, 3, 4, -1, 0.5, 2, -2}
	out, err := s.Run(context.Background(), inference.Tensor{Shape: []int64{2, 4}, Data: x})
	if err != nil {
		t.Fatal(err)
	}
	want := reference(x, w, b, 2)
	if len(out) != 1 || len(out[0].Data) != 6 || out[0].Shape[0] != 2 || out[0].Shape[1] != 3 {
		t.Fatalf("output = %+v", out)
	}
	for i := range want {
		if math.Abs(float64(out[0].Data[i]-want[i])) > 1e-5 {
			t.Fatalf("output[%d] = %v, want %v", i, out[0].Data[i], want[i])
		}
	}
}

func TestConcurrentRuns(t *testing.T) {
	rt := openRuntime(t)
	data, w, b := affineModel(t)
	s, err := rt.Load(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				x := []float32{float32(g), float32(i), 1, -1}
				out, err := s.Run(context.Background(), inference.Tensor{Shape: []int64{1, 4}, Data: x})
				if err != nil {
					errs <- err
					return
				}
				want := reference(x, w, b, 1)
				for j := range want {
					if math.Abs(float64(out[0].Data[j]-want[j])) > 1e-4 {
						errs <- errors.New("concurrent result differs from reference")
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestWrongInputShape(t *testing.T) {
	rt := openRuntime(t)
	data, _, _ := affineModel(t)
	s, err := rt.Load(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cases := map[string]inference.Tensor{
		"wrong width":   {Shape: []int64{1, 5}, Data: make([]float32, 5)},
		"wrong rank":    {Shape: []int64{4}, Data: make([]float32, 4)},
		"short data":    {Shape: []int64{2, 4}, Data: make([]float32, 5)},
		"zero batch":    {Shape: []int64{0, 4}, Data: nil},
		"negative dims": {Shape: []int64{-1, 4}, Data: make([]float32, 4)},
	}
	for name, in := range cases {
		if _, err := s.Run(context.Background(), in); !errors.Is(err, inference.ErrShape) {
			t.Errorf("%s: err = %v, want ErrShape", name, err)
		}
	}
	if _, err := s.Run(context.Background()); !errors.Is(err, inference.ErrShape) {
		t.Errorf("no inputs: err = %v, want ErrShape", err)
	}
}

func TestClosedSession(t *testing.T) {
	rt := openRuntime(t)
	data, _, _ := affineModel(t)
	s, err := rt.Load(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = s.Run(context.Background(), inference.Tensor{Shape: []int64{1, 4}, Data: make([]float32, 4)})
	if !errors.Is(err, inference.ErrClosed) {
		t.Fatalf("run after close: %v, want ErrClosed", err)
	}
}

func TestCancelledContext(t *testing.T) {
	rt := openRuntime(t)
	// A chain of large matrix products takes long enough for a cancel to land mid-run.
	g := onnxbuild.New("slow")
	x, _ := g.Input("x", 512, 512)
	w := make([]float32, 512*512)
	for i := range w {
		w[i] = 1.0 / 512
	}
	wn, _ := g.Float("w", []int64{512, 512}, w)
	cur := x
	for i := 0; i < 400; i++ {
		cur = g.Node("MatMul", "mm", []string{cur, wn})
	}
	if err := g.NodeOut("Identity", []string{cur}, []string{"y"}); err != nil {
		t.Fatal(err)
	}
	g.Output("y", 512, 512)
	data, _ := onnxbuild.Marshal(g.Model("test", nil))
	s, err := rt.Load(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = s.Run(ctx, inference.Tensor{Shape: []int64{512, 512}, Data: make([]float32, 512*512)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("run with expired deadline: %v, want context.DeadlineExceeded", err)
	}
	// Already-cancelled contexts fail before running.
	done, stop := context.WithCancel(context.Background())
	stop()
	if _, err := s.Run(done, inference.Tensor{Shape: []int64{512, 512}, Data: make([]float32, 512*512)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("run with cancelled context: %v", err)
	}
}

func TestLibraryNotFound(t *testing.T) {
	_, err := inference.Open(inference.Options{LibraryPath: filepath.Join(t.TempDir(), "libonnxruntime.so.1")})
	if !errors.Is(err, inference.ErrLibraryNotFound) {
		t.Fatalf("open with missing library: %v, want ErrLibraryNotFound", err)
	}
	t.Setenv(inference.EnvLibrary, "/nonexistent/libonnxruntime.so")
	if _, err := inference.ResolveLibrary(""); !errors.Is(err, inference.ErrLibraryNotFound) {
		t.Fatalf("resolve via env: %v", err)
	}
}

func TestNotALibrary(t *testing.T) {
	if _, err := inference.ResolveLibrary(""); err != nil {
		testenv.Missing(t, "the ONNX Runtime library", err.Error())
	}
	fake := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	if err := os.WriteFile(fake, []byte("not an ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := inference.Open(inference.Options{LibraryPath: fake}); err == nil {
		t.Fatal("opening a text file as the runtime library succeeded")
	}
	// A failed load must not poison the process: the real library still opens.
	rt := openRuntime(t)
	if rt.Version() == "" {
		t.Fatal("empty ONNX Runtime version")
	}
}

func TestCorruptModel(t *testing.T) {
	rt := openRuntime(t)
	if _, err := rt.Load(context.Background(), []byte("this is not an onnx model")); err == nil {
		t.Fatal("loading garbage succeeded")
	}
	data, _, _ := affineModel(t)
	if _, err := rt.Load(context.Background(), data[:len(data)/2]); err == nil {
		t.Fatal("loading a truncated model succeeded")
	}
}

func TestUnknownProvider(t *testing.T) {
	if _, err := inference.ResolveLibrary(""); err != nil {
		testenv.Missing(t, "the ONNX Runtime library", err.Error())
	}
	if _, err := inference.Open(inference.Options{Provider: "tpu"}); err == nil {
		t.Fatal("unknown provider accepted")
	}
}
