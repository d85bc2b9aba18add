// Package artifact validates a FaceModel's ONNX file before anything runs it:
// the operator downloads it, checks its SHA-256 (and size), and reads the
// graph's declared input and output shapes to check them against the spec.
// Weights are never executed here; the embedder verifies the hash again when
// it loads the file.
package artifact

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/facegate/facegate/pkg/onnx/onnxpb"
)

// Reasons classify failures; they become the Validated condition's reason.
const (
	ReasonUnavailable       = "ArtifactUnavailable"
	ReasonChecksumMismatch  = "ChecksumMismatch"
	ReasonInputSpecMismatch = "InputSpecMismatch"
)

// Error is a validation failure with its reason.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the reason of a validation error, or ReasonUnavailable.
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonUnavailable
}

// Expect is what the FaceModel declares.
type Expect struct {
	URL    string
	SHA256 string
	// SizeBytes, when non-zero, must match.
	SizeBytes int64
	// MaxBytes bounds the download (the whole file is held in memory to
	// read its graph).
	MaxBytes int64

	// InputName selects the graph input; empty means the first input that is
	// not an initializer.
	InputName     string
	Width, Height int64
	Channels      int64
	// Layout is NHWC or NCHW.
	Layout string
	// OutputName selects the embedding output; empty means the first.
	OutputName    string
	EmbeddingSize int64
}

// Result is what was verified.
type Result struct {
	SHA256 string
	Size   int64
}

// Verify downloads and checks the artefact.
func Verify(ctx context.Context, hc *http.Client, e Expect) (Result, error) {
	if e.MaxBytes <= 0 {
		return Result{}, fmt.Errorf("artifact: MaxBytes must be positive")
	}
	if e.SizeBytes > e.MaxBytes {
		return Result{}, &Error{ReasonUnavailable, fmt.Errorf("artifact: %s: declared size %d exceeds the operator's limit of %d bytes", e.URL, e.SizeBytes, e.MaxBytes)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.URL, nil)
	if err != nil {
		return Result{}, &Error{ReasonUnavailable, fmt.Errorf("artifact: %s: %w", e.URL, err)}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Result{}, &Error{ReasonUnavailable, fmt.Errorf("artifact: fetch %s: %w", e.URL, err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Result{}, &Error{ReasonUnavailable, fmt.Errorf("artifact: fetch %s: HTTP %s", e.URL, resp.Status)}
	}
	h := sha256.New()
	data, err := io.ReadAll(io.TeeReader(io.LimitReader(resp.Body, e.MaxBytes+1), h))
	if err != nil {
		return Result{}, &Error{ReasonUnavailable, fmt.Errorf("artifact: read %s: %w", e.URL, err)}
	}
	if int64(len(data)) > e.MaxBytes {
		return Result{}, &Error{ReasonUnavailable, fmt.Errorf("artifact: %s is larger than the operator's limit of %d bytes", e.URL, e.MaxBytes)}
	}
	res := Result{SHA256: hex.EncodeToString(h.Sum(nil)), Size: int64(len(data))}
	if res.SHA256 != e.SHA256 {
		return res, &Error{ReasonChecksumMismatch, fmt.Errorf("artifact: %s has SHA-256 %s, the FaceModel declares %s", e.URL, res.SHA256, e.SHA256)}
	}
	if e.SizeBytes != 0 && res.Size != e.SizeBytes {
		return res, &Error{ReasonChecksumMismatch, fmt.Errorf("artifact: %s is %d bytes, the FaceModel declares %d", e.URL, res.Size, e.SizeBytes)}
	}
	if err := CheckGraph(data, e); err != nil {
		return res, err
	}
	return res, nil
}

// CheckGraph checks an ONNX model's declared input and output shapes.
func CheckGraph(onnx []byte, e Expect) error {
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(onnx, &m); err != nil {
		return &Error{ReasonInputSpecMismatch, fmt.Errorf("artifact: not an ONNX model: %w", err)}
	}
	g := m.GetGraph()
	if g == nil {
		return &Error{ReasonInputSpecMismatch, errors.New("artifact: ONNX model has no graph")}
	}
	inits := map[string]bool{}
	for _, t := range g.GetInitializer() {
		inits[t.GetName()] = true
	}
	var in *onnxpb.ValueInfoProto
	var names []string
	for _, v := range g.GetInput() {
		if inits[v.GetName()] {
			continue
		}
		names = append(names, v.GetName())
		if in == nil && (e.InputName == "" || v.GetName() == e.InputName) {
			in = v
		}
	}
	if in == nil {
		return mismatch("input %q not found; the graph's inputs are %s", e.InputName, strings.Join(names, ", "))
	}
	dims, err := tensorDims(in)
	if err != nil {
		return mismatch("input %q: %v", in.GetName(), err)
	}
	if len(dims) != 4 {
		return mismatch("input %q has rank %d, want 4 (%s)", in.GetName(), len(dims), e.Layout)
	}
	var h, w, c int64
	switch e.Layout {
	case "NHWC", "":
		h, w, c = dims[1], dims[2], dims[3]
	case "NCHW":
		c, h, w = dims[1], dims[2], dims[3]
	default:
		return mismatch("layout %q is neither NHWC nor NCHW", e.Layout)
	}
	// A symbolic spatial dimension accepts any size; a fixed one must match.
	for _, chk := range []struct {
		what      string
		got, want int64
	}{{"height", h, e.Height}, {"width", w, e.Width}, {"channels", c, e.Channels}} {
		if chk.got >= 0 && chk.want > 0 && chk.got != chk.want {
			return mismatch("input %q %s is %d, the FaceModel declares %d (graph shape %s, layout %s)",
				in.GetName(), chk.what, chk.got, chk.want, shapeString(dims), layoutOr(e.Layout))
		}
	}
	var out *onnxpb.ValueInfoProto
	var outs []string
	for _, v := range g.GetOutput() {
		outs = append(outs, v.GetName())
		if out == nil && (e.OutputName == "" || v.GetName() == e.OutputName) {
			out = v
		}
	}
	if out == nil {
		return mismatch("output %q not found; the graph's outputs are %s", e.OutputName, strings.Join(outs, ", "))
	}
	od, err := tensorDims(out)
	if err != nil {
		return mismatch("output %q: %v", out.GetName(), err)
	}
	if len(od) < 1 || od[len(od)-1] != e.EmbeddingSize {
		return mismatch("output %q has shape %s, want the embedding size %d as its last dimension", out.GetName(), shapeString(od), e.EmbeddingSize)
	}
	return nil
}

func mismatch(format string, args ...any) error {
	return &Error{ReasonInputSpecMismatch, fmt.Errorf("artifact: "+format, args...)}
}

func layoutOr(l string) string {
	if l == "" {
		return "NHWC"
	}
	return l
}

// tensorDims returns a float tensor's dimensions, -1 for symbolic ones.
func tensorDims(v *onnxpb.ValueInfoProto) ([]int64, error) {
	tt := v.GetType().GetTensorType()
	if tt == nil {
		return nil, errors.New("is not a tensor")
	}
	if tt.GetElemType() != int32(onnxpb.TensorProto_FLOAT) {
		return nil, fmt.Errorf("has element type %s, want FLOAT", onnxpb.TensorProto_DataType(tt.GetElemType()))
	}
	if tt.GetShape() == nil {
		return nil, errors.New("declares no shape")
	}
	dims := make([]int64, 0, len(tt.GetShape().GetDim()))
	for _, d := range tt.GetShape().GetDim() {
		if _, ok := d.GetValue().(*onnxpb.TensorShapeProto_Dimension_DimValue); ok && d.GetDimValue() >= 0 {
			dims = append(dims, d.GetDimValue())
		} else {
			dims = append(dims, -1)
		}
	}
	return dims, nil
}

func shapeString(dims []int64) string {
	parts := make([]string, len(dims))
	for i, d := range dims {
		if d < 0 {
			parts[i] = "?"
		} else {
			parts[i] = fmt.Sprint(d)
		}
	}
	return "[" + strings.Join(parts, ",") + "]"
}
