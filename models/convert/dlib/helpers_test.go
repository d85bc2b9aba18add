package dlib

import (
	"context"
	"errors"
	"image"
	"image/color"
	_ "image/jpeg"
	_ "image/png"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/testenv"
)

const fetchHint = "run `facegate models fetch` (or `go tool task models`) to fetch the pinned packages"

// faceAPIModelDir is face-api's model folder in the package cache.
func faceAPIModelDir() (string, error) {
	c, err := modelcache.New("", nil)
	if err != nil {
		return "", err
	}
	p, err := c.File("@vladmandic/face-api", "model/"+ManifestFile)
	if err != nil {
		return "", err
	}
	return filepath.Dir(p), nil
}

// modelDir returns face-api's model folder, skipping (failing under CI) when
// the weights have not been fetched.
func modelDir(t testing.TB) string {
	t.Helper()
	dir, err := faceAPIModelDir()
	if err != nil {
		t.Fatalf("model cache: %v", err)
	}
	for _, f := range []string{ManifestFile, "face_recognition_model.bin"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			testenv.Missing(t, "face-api model file "+filepath.Join(dir, f), fetchHint)
		}
	}
	return dir
}

func datasets(t testing.TB) string {
	t.Helper()
	return testenv.Datasets(t)
}

// realModel converts the cached face-api weights once per test binary.
var realModel = sync.OnceValues(func() ([]byte, error) {
	dir, err := faceAPIModelDir()
	if err != nil {
		return nil, err
	}
	return ConvertDir(context.Background(), dir, Options{})
})

func convertedModel(t testing.TB) []byte {
	t.Helper()
	modelDir(t)
	data, err := realModel()
	if err != nil {
		t.Fatalf("ConvertDir: %v", err)
	}
	return data
}

// runtime is opened once per test binary: ONNX Runtime's environment is
// process-wide. One intra-op thread, no spinning, as the embedder runs it.
var runtime = sync.OnceValues(func() (*inference.Runtime, error) {
	return inference.Open(inference.Options{IntraOpThreads: 1})
})

type session struct {
	s *inference.Session
}

func newSession(t testing.TB, model []byte) *session {
	t.Helper()
	rt, err := runtime()
	if errors.Is(err, inference.ErrLibraryNotFound) {
		testenv.Missing(t, "the ONNX Runtime library", fetchHint)
	}
	if err != nil {
		t.Fatalf("open ONNX Runtime: %v", err)
	}
	s, err := rt.Load(context.Background(), model)
	if err != nil {
		t.Fatalf("ORT load: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return &session{s: s}
}

// run feeds n images of 150x150x3 (concatenated) and returns n descriptors.
func (s *session) run(t testing.TB, pixels []float32) [][]float32 {
	t.Helper()
	per := InputSize * InputSize * 3
	if len(pixels)%per != 0 {
		t.Fatalf("run: %d values is not a whole number of images", len(pixels))
	}
	n := len(pixels) / per
	outs, err := s.s.Run(context.Background(), inference.Tensor{Shape: []int64{int64(n), InputSize, InputSize, 3}, Data: pixels})
	if err != nil {
		t.Fatalf("ORT run: %v", err)
	}
	if len(outs) != 1 {
		t.Fatalf("%d outputs, want 1", len(outs))
	}
	out := outs[0]
	if len(out.Shape) != 2 || out.Shape[0] != int64(n) || out.Shape[1] != DescriptorSize {
		t.Fatalf("output shape %v, want [%d %d]", out.Shape, n, DescriptorSize)
	}
	res := make([][]float32, n)
	for i := range res {
		res[i] = out.Data[i*DescriptorSize : (i+1)*DescriptorSize]
	}
	return res
}

// loadRGB decodes an image into HWC float32 RGB 0..255, dropping alpha
// without premultiplying, as tf.browser.fromPixels does.
func loadRGB(t testing.TB, path string) (px []float32, w, h int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	b := img.Bounds()
	w, h = b.Dx(), b.Dy()
	px = make([]float32, 0, w*h*3)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
			px = append(px, float32(c.R), float32(c.G), float32(c.B))
		}
	}
	return px, w, h
}

// loadChip loads an image that must already be 150x150.
func loadChip(t testing.TB, path string) []float32 {
	t.Helper()
	px, w, h := loadRGB(t, path)
	if w != InputSize || h != InputSize {
		t.Fatalf("%s is %dx%d, want %dx%d", path, w, h, InputSize, InputSize)
	}
	return px
}

func dist(a, b []float32) float64 {
	var s float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		s += d * d
	}
	return math.Sqrt(s)
}

func l2normalise(v []float32) []float32 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	n := math.Sqrt(s)
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(float64(x) / n)
	}
	return out
}
