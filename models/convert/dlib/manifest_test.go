package dlib

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// archWeights lists FaceRecognitionNet's weights in face-api's order.
func archWeights() []weightEntry {
	var ws []weightEntry
	convLayer := func(prefix string, k, in, out int64) {
		ws = append(ws,
			weightEntry{Name: prefix + "/conv/filters", Shape: []int64{k, k, in, out}},
			weightEntry{Name: prefix + "/conv/bias", Shape: []int64{out}},
			weightEntry{Name: prefix + "/scale/weights", Shape: []int64{out}},
			weightEntry{Name: prefix + "/scale/biases", Shape: []int64{out}})
	}
	convLayer("conv32_down", 7, 3, 32)
	in := int64(32)
	for _, b := range []struct {
		name string
		out  int64
	}{
		{"conv32_1", 32}, {"conv32_2", 32}, {"conv32_3", 32},
		{"conv64_down", 64}, {"conv64_1", 64}, {"conv64_2", 64}, {"conv64_3", 64},
		{"conv128_down", 128}, {"conv128_1", 128}, {"conv128_2", 128},
		{"conv256_down", 256}, {"conv256_1", 256}, {"conv256_2", 256}, {"conv256_down_out", 256},
	} {
		convLayer(b.name+"/conv1", 3, in, b.out)
		convLayer(b.name+"/conv2", 3, b.out, b.out)
		in = b.out
	}
	return append(ws, weightEntry{Name: "fc", Shape: []int64{256, 128}})
}

func f64(v float64) *float64 { return &v }

// storage cycles through every storage form tfjs defines (raw float32,
// uint8, uint16, float16) by weight index.
func storage(i int) *quantization {
	switch i % 4 {
	case 1:
		return &quantization{Dtype: "uint8", Scale: f64(0.001), Min: f64(-0.12)}
	case 2:
		return &quantization{Dtype: "uint16", Scale: f64(1e-5), Min: f64(-0.3)}
	case 3:
		return &quantization{Dtype: "float16"}
	}
	return nil
}

// syntheticManifest is the full architecture's manifest in mixed storage.
func syntheticManifest() []weightEntry {
	ws := archWeights()
	for i := range ws {
		ws[i].Dtype = "float32"
		ws[i].Quantization = storage(i)
	}
	return ws
}

// synthetic adds random weight bytes to syntheticManifest, so that
// conversion is tested without the model cache.
func synthetic(t testing.TB) ([]weightEntry, []byte) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	ws := syntheticManifest()
	var blob []byte
	for _, w := range ws {
		n := int64(1)
		for _, d := range w.Shape {
			n *= d
		}
		q := ""
		if w.Quantization != nil {
			q = w.Quantization.Dtype
		}
		switch q {
		case "":
			for range n {
				blob = binary.LittleEndian.AppendUint32(blob, math.Float32bits(float32(rng.Float64()*0.2-0.1)))
			}
		case "uint8":
			for range n {
				blob = append(blob, byte(rng.IntN(256)))
			}
		case "uint16":
			for range n {
				blob = binary.LittleEndian.AppendUint16(blob, uint16(rng.IntN(65536)))
			}
		case "float16":
			for range n {
				// sign, exponent 10..14 (2^-5..2^-1), any fraction
				h := uint16(rng.IntN(2))<<15 | uint16(10+rng.IntN(5))<<10 | uint16(rng.IntN(1024))
				blob = binary.LittleEndian.AppendUint16(blob, h)
			}
		}
	}
	return ws, blob
}

func manifestJSON(t testing.TB, ws []weightEntry) []byte {
	t.Helper()
	data, err := json.Marshal([]weightGroup{{Paths: []string{"face_recognition_model.bin"}, Weights: ws}})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestConvertSynthetic(t *testing.T) {
	ws, blob := synthetic(t)
	m, err := Convert(t.Context(), manifestJSON(t, ws), blob, Options{ModelID: "test-model"})
	if err != nil {
		t.Fatalf("Convert: %v", err)
	}
	if m.GetGraph().GetName() != "test-model" {
		t.Errorf("graph name %q, want the model id", m.GetGraph().GetName())
	}
	found := false
	for _, p := range m.GetMetadataProps() {
		if p.GetKey() == "model_id" {
			found = p.GetValue() == "test-model"
		}
	}
	if !found {
		t.Error("model_id metadata is not the requested id")
	}
	var bytes int
	for _, init := range m.GetGraph().GetInitializer() {
		bytes += len(init.GetRawData())
	}
	// Every weight becomes float32, except the scale layers' weights and
	// biases, which are folded into the convolutions.
	var want int
	for _, w := range ws {
		if !strings.HasSuffix(w.Name, "/scale/weights") && !strings.HasSuffix(w.Name, "/scale/biases") {
			n := 1
			for _, d := range w.Shape {
				n *= int(d)
			}
			want += 4 * n
		}
	}
	want += 4*3 + 4 // mean RGB and the 255 divisor
	if bytes != want {
		t.Errorf("initializers hold %d float bytes, want %d", bytes, want)
	}
}

func TestConvertCancelled(t *testing.T) {
	ws, blob := synthetic(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := Convert(ctx, manifestJSON(t, ws), blob, Options{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Convert on a cancelled context: %v, want context.Canceled", err)
	}
}

func TestDequantise(t *testing.T) {
	blob := []byte{
		200, 0, // uint8 [2]: 200*0.5-1 = 99, 0*0.5-1 = -1
		0x10, 0x27, // uint16 [1]: 10000*0.001+2 = 12
		0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, 0xff, 0x7b, 0x00, 0x7c, // float16 [5]: 1, -2, 2^-24, 65504, +Inf
	}
	blob = binary.LittleEndian.AppendUint32(blob, math.Float32bits(-0.15625)) // float32 [1]
	ws := []weightEntry{
		{Name: "a", Shape: []int64{2}, Dtype: "float32", Quantization: &quantization{Dtype: "uint8", Scale: f64(0.5), Min: f64(-1)}},
		{Name: "b", Shape: []int64{1}, Dtype: "float32", Quantization: &quantization{Dtype: "uint16", Scale: f64(0.001), Min: f64(2)}},
		{Name: "c", Shape: []int64{5}, Dtype: "float32", Quantization: &quantization{Dtype: "float16"}},
		{Name: "d", Shape: []int64{1}, Dtype: "float32"},
	}
	m, err := parseManifest(manifestJSON(t, ws))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.checkSize(int64(len(blob))); err != nil {
		t.Fatal(err)
	}
	want := map[string][]float32{
		"a": {99, -1},
		"b": {12},
		"c": {1, -2, float32(math.Ldexp(1, -24)), 65504, float32(math.Inf(1))},
		"d": {-0.15625},
	}
	for _, spec := range m.weights {
		got := m.decode(spec, blob).data
		for i := range want[spec.name] {
			if got[i] != want[spec.name][i] {
				t.Errorf("%s[%d] = %v, want %v", spec.name, i, got[i], want[spec.name][i])
			}
		}
	}
}

func TestBadInputs(t *testing.T) {
	ws, blob := synthetic(t)
	good := manifestJSON(t, ws)
	sizeOf := func(w weightEntry) int {
		n := 1
		for _, d := range w.Shape {
			n *= int(d)
		}
		width := 4
		if q := w.Quantization; q != nil {
			width = map[string]int{"uint8": 1, "uint16": 2, "float16": 2}[q.Dtype]
		}
		return n * width
	}
	// without removes weight i from the manifest and its bytes from the blob.
	without := func(name string) ([]byte, []byte) {
		var kept []weightEntry
		var data []byte
		off := 0
		for _, w := range ws {
			n := sizeOf(w)
			if w.Name != name {
				kept = append(kept, w)
				data = append(data, blob[off:off+n]...)
			}
			off += n
		}
		return manifestJSON(t, kept), data
	}
	edit := func(f func([]weightEntry)) []byte {
		c := make([]weightEntry, len(ws))
		for i, w := range ws {
			c[i] = w
			c[i].Shape = append([]int64(nil), w.Shape...)
			if w.Quantization != nil {
				q := *w.Quantization
				c[i].Quantization = &q
			}
		}
		f(c)
		return manifestJSON(t, c)
	}
	index := func(name string) int {
		for i, w := range ws {
			if w.Name == name {
				return i
			}
		}
		t.Fatalf("no weight %q", name)
		return -1
	}

	missingManifest, missingBlob := without("conv128_1/conv2/scale/biases")
	shapeIdx := index("conv64_1/conv1/conv/filters")
	// Same byte count, wrong layout: [3,3,32,128] has as many values as
	// [3,3,64,64], so only the shape check can catch it.
	wrongShape := edit(func(c []weightEntry) { c[shapeIdx].Shape = []int64{3, 3, 32, 128} })
	quantIdx := index("conv32_2/conv1/conv/bias")
	if ws[quantIdx].Quantization == nil {
		t.Fatal("test setup: expected a quantised weight")
	}

	cases := []struct {
		name     string
		manifest []byte
		blob     []byte
		want     []string
		is       error
	}{
		{"truncated weights", good, blob[:len(blob)-1], []string{`"fc"`, "truncated"}, ErrTruncated},
		{"truncated mid-network", good, blob[:len(blob)/2], []string{"conv256", "truncated"}, ErrTruncated},
		{"trailing bytes", good, append(append([]byte(nil), blob...), 0), []string{"manifest describes"}, nil},
		{"missing weight", missingManifest, missingBlob, []string{`"conv128_1/conv2/scale/biases"`, "missing"}, nil},
		{"wrong shape", wrongShape, blob, []string{`"conv64_1/conv1/conv/filters"`, "[3 3 32 128]", "want [3 3 64 64]"}, nil},
		{"unknown quantization dtype", edit(func(c []weightEntry) { c[quantIdx].Quantization.Dtype = "int4" }), blob,
			[]string{`"conv32_2/conv1/conv/bias"`, `unknown quantization dtype "int4"`}, nil},
		{"uint8 without scale", edit(func(c []weightEntry) { c[quantIdx].Quantization = &quantization{Dtype: "uint8", Min: f64(0)} }), blob,
			[]string{`"conv32_2/conv1/conv/bias"`, "needs scale and min"}, nil},
		{"int32 weight", edit(func(c []weightEntry) { c[0].Dtype = "int32" }), blob, []string{`"conv32_down/conv/filters"`, "int32"}, nil},
		{"negative dimension", edit(func(c []weightEntry) { c[1].Shape = []int64{-32} }), blob, []string{`"conv32_down/conv/bias"`, "negative"}, nil},
		{"duplicate weight", edit(func(c []weightEntry) { c[2].Name = c[1].Name }), blob, []string{`"conv32_down/conv/bias"`, "twice"}, nil},
		{"not JSON", []byte("<html>"), blob, []string{"not a tfjs weights manifest"}, nil},
		{"empty manifest", []byte("[]"), blob, []string{"no weight groups"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Convert(t.Context(), c.manifest, c.blob, Options{})
			if err == nil {
				t.Fatal("Convert accepted bad input")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %q does not wrap %v", err, c.is)
			}
		})
	}
}

func TestConvertDirBadInputs(t *testing.T) {
	ws, blob := synthetic(t)
	write := func(dir string, manifest, bin []byte, binName string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, ManifestFile), manifest, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, binName), bin, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("escaping path", func(t *testing.T) {
		dir := t.TempDir()
		sub := filepath.Join(dir, "model")
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal([]weightGroup{{Paths: []string{"../secret.bin"}, Weights: ws}})
		if err != nil {
			t.Fatal(err)
		}
		write(sub, data, blob, "../secret.bin")
		_, err = ConvertDir(t.Context(), sub, Options{})
		if err == nil || !strings.Contains(err.Error(), "outside the model folder") {
			t.Fatalf("ConvertDir with a ../ weight path: %v", err)
		}
	})
	t.Run("missing bin", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, ManifestFile), manifestJSON(t, ws), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ConvertDir(t.Context(), dir, Options{})
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("ConvertDir without the .bin: %v, want a not-exist error", err)
		}
	})
	t.Run("synthetic ok", func(t *testing.T) {
		dir := t.TempDir()
		write(dir, manifestJSON(t, ws), blob, "face_recognition_model.bin")
		if _, err := ConvertDir(t.Context(), dir, Options{}); err != nil {
			t.Fatalf("ConvertDir: %v", err)
		}
	})
	t.Run("real weights truncated", func(t *testing.T) {
		src := modelDir(t)
		manifest, err := os.ReadFile(filepath.Join(src, ManifestFile))
		if err != nil {
			t.Fatal(err)
		}
		bin, err := os.ReadFile(filepath.Join(src, "face_recognition_model.bin"))
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		write(dir, manifest, bin[:len(bin)-1000], "face_recognition_model.bin")
		_, err = ConvertDir(t.Context(), dir, Options{})
		if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), `"fc"`) {
			t.Fatalf("ConvertDir on a truncated .bin: %v, want a truncation error naming fc", err)
		}
	})
}

func FuzzManifest(f *testing.F) {
	// Small seeds (the stem and the first block, in every storage form) keep
	// each run, and the engine's minimisation of every new input, cheap; the
	// full 20 KB manifest made that minimisation the whole fuzzing budget.
	// Only manifests are generated: this body runs in every fuzz worker.
	ws := syntheticManifest()
	f.Add(manifestJSON(f, ws[:12]))
	f.Add(manifestJSON(f, ws[:3]))
	f.Add([]byte(`[{"paths":["a.bin"],"weights":[{"name":"fc","shape":[256,128],"dtype":"float32","quantization":{"dtype":"uint8","scale":0.1,"min":-1}}]}]`))
	f.Add([]byte(`[{"paths":["a.bin"],"weights":[{"name":"x","shape":[4294967296,4294967296],"dtype":"float32"}]}]`))
	f.Add([]byte(`[{"paths":["a.bin","b.bin"],"weights":[{"name":"conv32_down/conv/bias","shape":[32],"dtype":"float32","quantization":{"dtype":"float16"}}]},{"paths":["c.bin"],"weights":[]}]`))
	f.Add([]byte(`[{"paths":[],"weights":[]}]`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseManifest(data)
		if err != nil {
			return
		}
		var off int64
		for _, w := range m.weights {
			if w.offset != off || w.size < 0 || w.count < 0 || w.count > maxElements {
				t.Fatalf("weight %q: offset %d size %d count %d after %d bytes", w.name, w.offset, w.size, w.count, off)
			}
			off += w.size
		}
		if off != m.total {
			t.Fatalf("sizes add up to %d, manifest total %d", off, m.total)
		}
		if m.checkSize(m.total) != nil || m.checkSize(m.total+1) == nil {
			t.Fatal("checkSize disagrees with the manifest's total")
		}
		if m.total > 0 && !errors.Is(m.checkSize(m.total-1), ErrTruncated) {
			t.Fatal("one byte short is not reported as truncation")
		}
		if m.total <= 1<<20 {
			blob := make([]byte, m.total)
			for _, w := range m.weights {
				if got := len(m.decode(w, blob).data); int64(got) != w.count {
					t.Fatalf("weight %q decoded to %d values, want %d", w.name, got, w.count)
				}
			}
			// Must return a model or an error, never panic.
			_, _ = Convert(context.Background(), data, blob, Options{})
		}
	})
}
