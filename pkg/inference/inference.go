// Package inference runs ONNX models on ONNX Runtime (through
// github.com/yalue/onnxruntime_go): it finds the runtime library, opens
// sessions with settings that suit a shared CPU machine, and runs float32
// tensors with shape checks and context cancellation.
//
// Execution providers: CPU is the default and the only one tested. The CUDA
// and TensorRT options append those providers, but their provider libraries
// (libonnxruntime_providers_cuda.so, ..._tensorrt.so) ship in no package this
// project can fetch, so that path is UNTESTED here: it fails with a clear
// error when the provider library is missing.
package inference

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/facegate/facegate/pkg/modelcache"
)

// EnvLibrary names the environment variable that points at libonnxruntime.so.
const EnvLibrary = "FACEGATE_ORT_LIB"

// Provider selects the execution provider.
type Provider string

// Execution providers. Only CPU is tested on this project's machines.
const (
	CPU      Provider = "cpu"
	CUDA     Provider = "cuda"     // untested: provider library not obtainable here
	TensorRT Provider = "tensorrt" // untested: provider library not obtainable here
)

// Errors callers may test for.
var (
	ErrLibraryNotFound = errors.New("onnx runtime library not found")
	ErrShape           = errors.New("wrong input shape")
	ErrClosed          = errors.New("closed")
)

// Options configure the runtime and the sessions it opens.
type Options struct {
	// LibraryPath is libonnxruntime.so; empty means $FACEGATE_ORT_LIB, then
	// the model cache's copy from onnxruntime-node.
	LibraryPath string
	// IntraOpThreads per session; 0 means 1. One thread per session and one
	// session call per core beats ORT's own threading on a shared machine
	// (measured: spinning threads hurt under contention).
	IntraOpThreads int
	// Spinning lets ORT's worker threads busy-wait between ops; off by default
	// for the same reason.
	Spinning bool
	// Provider is the execution provider; empty means CPU.
	Provider Provider
	// DeviceID for GPU providers.
	DeviceID int
}

// The ONNX Runtime environment is process-wide inside the C library and the
// Go binding; this guard mirrors that single global so that several Runtimes
// in one process share it and agree on the library path.
var env struct {
	sync.Mutex
	refs int
	lib  string
}

// Runtime is an open ONNX Runtime environment.
type Runtime struct {
	opts   Options
	lib    string
	mu     sync.Mutex
	closed bool
}

// ResolveLibrary returns the library path Open would use, or an error that
// says how to get one.
func ResolveLibrary(explicit string) (string, error) {
	lib := explicit
	if lib == "" {
		lib = os.Getenv(EnvLibrary)
	}
	if lib == "" {
		c, err := modelcache.New("", nil)
		if err != nil {
			return "", err
		}
		lib = c.LibraryPath()
	}
	abs, err := filepath.Abs(lib)
	if err != nil {
		return "", fmt.Errorf("inference: library path %q: %w", lib, err)
	}
	fi, err := os.Stat(abs)
	if err != nil || fi.IsDir() {
		return "", fmt.Errorf("inference: %w at %s: run `facegate models fetch` (or `go tool task models`) to get ONNX Runtime 1.30.0, or set %s: %v", ErrLibraryNotFound, abs, EnvLibrary, err)
	}
	return abs, nil
}

// Open loads the ONNX Runtime library and initialises its environment.
func Open(opts Options) (*Runtime, error) {
	lib, err := ResolveLibrary(opts.LibraryPath)
	if err != nil {
		return nil, err
	}
	if opts.IntraOpThreads <= 0 {
		opts.IntraOpThreads = 1
	}
	if opts.Provider == "" {
		opts.Provider = CPU
	}
	switch opts.Provider {
	case CPU, CUDA, TensorRT:
	default:
		return nil, fmt.Errorf("inference: unknown execution provider %q (want cpu, cuda or tensorrt)", opts.Provider)
	}
	env.Lock()
	defer env.Unlock()
	if env.refs > 0 {
		if env.lib != lib {
			return nil, fmt.Errorf("inference: ONNX Runtime is already loaded from %s in this process; cannot also load %s", env.lib, lib)
		}
	} else {
		ort.SetSharedLibraryPath(lib)
		if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
			return nil, fmt.Errorf("inference: load ONNX Runtime from %s (is it the linux/x64 build of 1.30, with glibc >= 2.28 and libstdc++?): %w", lib, err)
		}
		env.lib = lib
	}
	env.refs++
	return &Runtime{opts: opts, lib: lib}, nil
}

// Library is the path of the loaded runtime library.
func (r *Runtime) Library() string { return r.lib }

// Version is the ONNX Runtime version string.
func (r *Runtime) Version() string { return ort.GetVersion() }

// Close releases this runtime; the environment is destroyed with the last one.
func (r *Runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	env.Lock()
	defer env.Unlock()
	env.refs--
	if env.refs == 0 {
		env.lib = ""
		if err := ort.DestroyEnvironment(); err != nil {
			return fmt.Errorf("inference: destroy environment: %w", err)
		}
	}
	return nil
}

// IOInfo names one input or output and its shape (-1 for a dynamic dimension).
type IOInfo struct {
	Name  string  `json:"name"`
	Shape []int64 `json:"shape"`
}

// Tensor is a dense float32 tensor in row-major order.
type Tensor struct {
	Shape []int64
	Data  []float32
}

// Len is the number of elements the shape calls for.
func (t Tensor) Len() int {
	n := 1
	for _, d := range t.Shape {
		n *= int(d)
	}
	return n
}

// Session is one loaded model. It is safe for concurrent use: ONNX Runtime
// allows concurrent Run calls on one session, which is how a pool shares a
// model across goroutines without copying weights.
type Session struct {
	name    string
	s       *ort.DynamicAdvancedSession
	inputs  []IOInfo
	outputs []IOInfo
	meta    map[string]string
	mu      sync.RWMutex // guards s against Close during Run
}

// LoadFile opens a session on an .onnx file.
func (r *Runtime) LoadFile(ctx context.Context, path string) (*Session, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("inference: read model: %w", err)
	}
	s, err := r.load(ctx, filepath.Base(path), data)
	if err != nil {
		return nil, fmt.Errorf("inference: model %s: %w", path, err)
	}
	return s, nil
}

// Load opens a session on serialised ONNX bytes.
func (r *Runtime) Load(ctx context.Context, onnx []byte) (*Session, error) {
	s, err := r.load(ctx, "model", onnx)
	if err != nil {
		return nil, fmt.Errorf("inference: %w", err)
	}
	return s, nil
}

func (r *Runtime) load(ctx context.Context, name string, data []byte) (*Session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("runtime %w", ErrClosed)
	}
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(data)
	if err != nil {
		return nil, fmt.Errorf("read inputs and outputs: %w", err)
	}
	so, err := r.sessionOptions()
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	s := &Session{name: name, meta: map[string]string{}}
	for _, in := range ins {
		if in.DataType != ort.TensorElementDataTypeFloat {
			return nil, fmt.Errorf("input %q has element type %v; facegate models take float32", in.Name, in.DataType)
		}
		s.inputs = append(s.inputs, IOInfo{Name: in.Name, Shape: append([]int64(nil), in.Dimensions...)})
	}
	for _, out := range outs {
		s.outputs = append(s.outputs, IOInfo{Name: out.Name, Shape: append([]int64(nil), out.Dimensions...)})
	}
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(data, names(s.inputs), names(s.outputs), so)
	if err != nil {
		return nil, fmt.Errorf("create session: %w", err)
	}
	s.s = sess
	if md, err := sess.GetModelMetadata(); err == nil {
		if keys, err := md.GetCustomMetadataMapKeys(); err == nil {
			for _, k := range keys {
				if v, ok, err := md.LookupCustomMetadataMap(k); err == nil && ok {
					s.meta[k] = v
				}
			}
		}
		md.Destroy()
	}
	return s, nil
}

func (r *Runtime) sessionOptions() (*ort.SessionOptions, error) {
	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	fail := func(what string, err error) (*ort.SessionOptions, error) {
		so.Destroy()
		return nil, fmt.Errorf("session options: %s: %w", what, err)
	}
	if err := so.SetIntraOpNumThreads(r.opts.IntraOpThreads); err != nil {
		return fail("intra-op threads", err)
	}
	if err := so.SetInterOpNumThreads(1); err != nil {
		return fail("inter-op threads", err)
	}
	spin := "0"
	if r.opts.Spinning {
		spin = "1"
	}
	for _, k := range []string{"session.intra_op.allow_spinning", "session.inter_op.allow_spinning"} {
		if err := so.AddSessionConfigEntry(k, spin); err != nil {
			return fail(k, err)
		}
	}
	switch r.opts.Provider {
	case CUDA:
		// UNTESTED: no CUDA provider library is obtainable on this project's machines.
		cu, err := ort.NewCUDAProviderOptions()
		if err != nil {
			return fail("CUDA provider options", err)
		}
		defer cu.Destroy()
		if err := cu.Update(map[string]string{"device_id": fmt.Sprint(r.opts.DeviceID)}); err != nil {
			return fail("CUDA device", err)
		}
		if err := so.AppendExecutionProviderCUDA(cu); err != nil {
			return fail("CUDA execution provider (needs libonnxruntime_providers_cuda.so next to the runtime library, CUDA and cuDNN)", err)
		}
	case TensorRT:
		// UNTESTED: no TensorRT provider library is obtainable on this project's machines.
		trt, err := ort.NewTensorRTProviderOptions()
		if err != nil {
			return fail("TensorRT provider options", err)
		}
		defer trt.Destroy()
		if err := trt.Update(map[string]string{"device_id": fmt.Sprint(r.opts.DeviceID)}); err != nil {
			return fail("TensorRT device", err)
		}
		if err := so.AppendExecutionProviderTensorRT(trt); err != nil {
			return fail("TensorRT execution provider (needs libonnxruntime_providers_tensorrt.so and TensorRT)", err)
		}
	}
	return so, nil
}

func names(infos []IOInfo) []string {
	out := make([]string, len(infos))
	for i, in := range infos {
		out[i] = in.Name
	}
	return out
}

// Inputs describes the model's inputs.
func (s *Session) Inputs() []IOInfo { return s.inputs }

// Outputs describes the model's outputs.
func (s *Session) Outputs() []IOInfo { return s.outputs }

// Metadata is the model's custom metadata (model id, source, converter).
func (s *Session) Metadata() map[string]string { return s.meta }

// Run feeds one tensor per input, in the order of Inputs, and returns one
// tensor per output, in the order of Outputs. Shapes are checked first so a
// caller learns which dimension is wrong; a cancelled context stops a long
// run at the next operator.
func (s *Session) Run(ctx context.Context, inputs ...Tensor) ([]Tensor, error) {
	if len(inputs) != len(s.inputs) {
		return nil, fmt.Errorf("inference: %s: %d inputs given, model takes %d (%v): %w", s.name, len(inputs), len(s.inputs), names(s.inputs), ErrShape)
	}
	for i, in := range inputs {
		if err := checkShape(s.inputs[i], in); err != nil {
			return nil, fmt.Errorf("inference: %s: %w", s.name, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.s == nil {
		return nil, fmt.Errorf("inference: %s: session %w", s.name, ErrClosed)
	}
	vals := make([]ort.Value, len(inputs))
	defer func() {
		for _, v := range vals {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	for i, in := range inputs {
		t, err := ort.NewTensor(ort.NewShape(in.Shape...), in.Data)
		if err != nil {
			return nil, fmt.Errorf("inference: %s: input %q: %w", s.name, s.inputs[i].Name, err)
		}
		vals[i] = t
	}
	outs := make([]ort.Value, len(s.outputs))
	var err error
	if done := ctx.Done(); done != nil {
		err = s.runCancellable(ctx, vals, outs)
	} else {
		err = s.s.Run(vals, outs)
	}
	defer func() {
		for _, v := range outs {
			if v != nil {
				v.Destroy()
			}
		}
	}()
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("inference: %s: %w", s.name, cerr)
		}
		return nil, fmt.Errorf("inference: %s: run: %w", s.name, err)
	}
	res := make([]Tensor, len(outs))
	for i, v := range outs {
		t, ok := v.(*ort.Tensor[float32])
		if !ok {
			return nil, fmt.Errorf("inference: %s: output %q is %T, want a float32 tensor", s.name, s.outputs[i].Name, v)
		}
		res[i] = Tensor{Shape: append([]int64(nil), t.GetShape()...), Data: append([]float32(nil), t.GetData()...)}
	}
	return res, nil
}

func (s *Session) runCancellable(ctx context.Context, in, out []ort.Value) error {
	ro, err := ort.NewRunOptions()
	if err != nil {
		return fmt.Errorf("run options: %w", err)
	}
	defer ro.Destroy()
	stop := context.AfterFunc(ctx, func() { _ = ro.Terminate() })
	defer stop()
	return s.s.RunWithOptions(in, out, ro)
}

func checkShape(info IOInfo, t Tensor) error {
	if len(t.Shape) != len(info.Shape) {
		return fmt.Errorf("input %q: shape %v has %d dimensions, model wants %v: %w", info.Name, t.Shape, len(t.Shape), info.Shape, ErrShape)
	}
	for d := range t.Shape {
		if t.Shape[d] <= 0 {
			return fmt.Errorf("input %q: shape %v: dimension %d must be positive: %w", info.Name, t.Shape, d, ErrShape)
		}
		if info.Shape[d] >= 0 && t.Shape[d] != info.Shape[d] {
			return fmt.Errorf("input %q: shape %v, model wants %v (dimension %d): %w", info.Name, t.Shape, info.Shape, d, ErrShape)
		}
	}
	if t.Len() != len(t.Data) {
		return fmt.Errorf("input %q: shape %v needs %d values, got %d: %w", info.Name, t.Shape, t.Len(), len(t.Data), ErrShape)
	}
	return nil
}

// Close releases the session; Run calls in flight finish first.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.s == nil {
		return nil
	}
	err := s.s.Destroy()
	s.s = nil
	if err != nil {
		return fmt.Errorf("inference: close %s: %w", s.name, err)
	}
	return nil
}
