package artifact

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/facegate/facegate/pkg/onnx/onnxbuild"
	"github.com/facegate/facegate/pkg/testenv"
)

// tinyEncoder is a valid ONNX graph with a face encoder's interface: NHWC
// pixels in, a 128-d vector out (mean colour times a fixed projection).
func tinyEncoder(t *testing.T, h, w, dim int64) []byte {
	t.Helper()
	g := onnxbuild.New("tiny")
	in, err := g.Input("image", -1, h, w, 3)
	if err != nil {
		t.Fatal(err)
	}
	proj := make([]float32, 3*dim)
	for i := range proj {
		proj[i] = float32(i%7) / 7
	}
	p, err := g.Float("proj", []int64{3, dim}, proj)
	if err != nil {
		t.Fatal(err)
	}
	mean := g.Node("ReduceMean", "mean", []string{in}, onnxbuild.Ints("axes", 1, 2), onnxbuild.Int("keepdims", 0))
	out := g.Node("MatMul", "embedding", []string{mean, p})
	g.Output(out, -1, dim)
	b, err := onnxbuild.Marshal(g.Model("facegate-operator-test", nil))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func serve(t *testing.T, files map[string][]byte) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func expect(url string, b []byte) Expect {
	return Expect{URL: url, SHA256: hash(b), MaxBytes: 1 << 20, Width: 112, Height: 112, Channels: 3, Layout: "NHWC", EmbeddingSize: 128}
}

func TestVerifyAcceptsAMatchingModel(t *testing.T) {
	model := tinyEncoder(t, 112, 112, 128)
	base := serve(t, map[string][]byte{"/m.onnx": model})
	e := expect(base+"/m.onnx", model)
	e.SizeBytes = int64(len(model))
	res, err := Verify(context.Background(), http.DefaultClient, e)
	if err != nil {
		t.Fatal(err)
	}
	if res.SHA256 != hash(model) || res.Size != int64(len(model)) {
		t.Fatalf("result %+v", res)
	}
}

func TestVerifyRejections(t *testing.T) {
	model := tinyEncoder(t, 112, 112, 128)
	other := tinyEncoder(t, 112, 112, 64)
	base := serve(t, map[string][]byte{"/m.onnx": model, "/junk": []byte("this is not a protobuf \xff\xff\xff\xff")})
	cases := []struct {
		name   string
		mod    func(*Expect)
		reason string
		msg    string
	}{
		{"checksum", func(e *Expect) { e.SHA256 = hash(other) }, ReasonChecksumMismatch, "has SHA-256 " + hash(model) + ", the FaceModel declares " + hash(other)},
		{"size", func(e *Expect) { e.SizeBytes = 10 }, ReasonChecksumMismatch, "the FaceModel declares 10"},
		{"not found", func(e *Expect) { e.URL = base + "/missing.onnx" }, ReasonUnavailable, "HTTP 404"},
		{"too large", func(e *Expect) { e.MaxBytes = 100 }, ReasonUnavailable, "larger than the operator's limit of 100 bytes"},
		{"declared too large", func(e *Expect) { e.MaxBytes = 100; e.SizeBytes = 1000 }, ReasonUnavailable, "declared size 1000 exceeds"},
		{"width", func(e *Expect) { e.Width = 160 }, ReasonInputSpecMismatch, `input "image" width is 112, the FaceModel declares 160 (graph shape [?,112,112,3], layout NHWC)`},
		{"layout", func(e *Expect) { e.Layout = "NCHW" }, ReasonInputSpecMismatch, "width is 3, the FaceModel declares 112 (graph shape [?,112,112,3], layout NCHW)"},
		{"input name", func(e *Expect) { e.InputName = "input_1" }, ReasonInputSpecMismatch, `input "input_1" not found; the graph's inputs are image`},
		{"embedding", func(e *Expect) { e.EmbeddingSize = 512 }, ReasonInputSpecMismatch, "has shape [?,128], want the embedding size 512"},
		{"output name", func(e *Expect) { e.OutputName = "features" }, ReasonInputSpecMismatch, `output "features" not found; the graph's outputs are `},
		{"unreachable", func(e *Expect) { e.URL = "http://127.0.0.1:1/m.onnx" }, ReasonUnavailable, "fetch http://127.0.0.1:1/m.onnx"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := expect(base+"/m.onnx", model)
			c.mod(&e)
			_, err := Verify(context.Background(), http.DefaultClient, e)
			if err == nil {
				t.Fatal("accepted")
			}
			if ReasonOf(err) != c.reason || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("reason %s error %q, want %s containing %q", ReasonOf(err), err, c.reason, c.msg)
			}
		})
	}
	junk := []byte("this is not a protobuf \xff\xff\xff\xff")
	_, err := Verify(context.Background(), http.DefaultClient, expect(base+"/junk", junk))
	if ReasonOf(err) != ReasonInputSpecMismatch || !strings.Contains(err.Error(), "not an ONNX model") {
		t.Fatalf("junk: %v", err)
	}
}

// The converted encoders must pass the same check the operator runs on
// their FaceModels (shapes from models/manifest.json).
func TestCheckGraphOnTheConvertedEncoders(t *testing.T) {
	root := testenv.Models(t)
	cases := []struct {
		id     string
		side   int64
		output string
		dim    int64
	}{
		{"dlib-resnet34-128", 150, "", 128},
		{"mobileface-256", 112, "", 256},
		{"hse-faceres-1024", 224, "global_pooling/Mean", 1024},
	}
	for _, c := range cases {
		t.Run(c.id, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(root, "onnx", c.id+".onnx"))
			if err != nil {
				t.Fatal(err)
			}
			e := Expect{Width: c.side, Height: c.side, Channels: 3, Layout: "NHWC", OutputName: c.output, EmbeddingSize: c.dim}
			if err := CheckGraph(b, e); err != nil {
				t.Fatal(err)
			}
			e.EmbeddingSize = c.dim * 2
			if err := CheckGraph(b, e); ReasonOf(err) != ReasonInputSpecMismatch {
				t.Fatalf("wrong embedding size accepted: %v", err)
			}
			e.EmbeddingSize, e.Width = c.dim, c.side+2
			if err := CheckGraph(b, e); ReasonOf(err) != ReasonInputSpecMismatch {
				t.Fatalf("wrong width accepted: %v", err)
			}
		})
	}
}
