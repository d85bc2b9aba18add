package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	facegatev1 "github.com/facegate/facegate/operator/api/v1alpha1"
	"github.com/facegate/facegate/operator/internal/lag"
	"github.com/facegate/facegate/operator/internal/natstest"
	"github.com/facegate/facegate/operator/internal/testcluster"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/onnx/onnxbuild"
	"github.com/facegate/facegate/pkg/testenv"
)

// env is the shared control plane, NATS server and running manager: starting
// kube-apiserver and etcd takes seconds, so every test of the package uses
// one, each in its own namespace.
type env struct {
	missing string
	cfg     *rest.Config
	c       client.WithWatch
	js      jetstream.JetStream
	clock   *fakeClock
	// models maps a path of the artefact server to its bytes.
	models  map[string][]byte
	baseURL string
}

// suite is only written by TestMain, before any test runs.
var suite env

// fakeClock runs with real time plus an offset that tests advance to pass
// stabilisation, cooldown and rollback windows without sleeping.
type fakeClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	assets, missing := testcluster.AssetsDir()
	if missing != "" {
		suite.missing = missing
		return m.Run()
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.Level(zapLevel())))
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	start := time.Now()
	te, cfg, err := testcluster.Start(assets, filepath.Join(root, "operator", "config", "crd", "bases"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = te.Stop() }()
	fmt.Fprintf(os.Stderr, "envtest: kube-apiserver and etcd up in %s\n", time.Since(start).Round(10*time.Millisecond))

	natsDir, err := os.MkdirTemp("", "facegate-operator-nats-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(natsDir)
	ns, err := natstest.Run(natsDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer ns.Shutdown()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The streams every facegate service creates, with frames kept long
	// enough that the lag a test builds up does not expire under it.
	busCfg := bus.DefaultConfig()
	busCfg.Frames.MaxAge = time.Hour
	if err := bus.EnsureStreams(ctx, js, busCfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	models := map[string][]byte{}
	for _, mdl := range []struct {
		path      string
		side, dim int64
	}{{"/enc-150-128.onnx", 150, 128}, {"/enc-112-64.onnx", 112, 64}, {"/enc-112-96.onnx", 112, 96}} {
		b, err := tinyEncoder(mdl.side, mdl.dim)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		models[mdl.path] = b
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := models[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	}))
	defer srv.Close()

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(facegatev1.AddToScheme(scheme))
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	clock := &fakeClock{}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptrTo(true)},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	reader := lag.NewJetStream(ns.ClientURL())
	defer reader.Close()
	if err := Setup(ctx, mgr, Config{
		Lag: reader, NATSURL: ns.ClientURL(),
		EmbedderImage: "facegate/embedder:test", ReembedImage: "facegate/embedder:test",
		HTTP: srv.Client(), MaxArtifactBytes: 1 << 20, ArtifactRetry: 2 * time.Second,
		Now: clock.Now,
	}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()

	suite = env{cfg: cfg, c: c, js: js, clock: clock, models: models, baseURL: srv.URL}
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		code = 1
	}
	return code
}

// zapLevel keeps the controllers quiet unless FACEGATE_OPERATOR_TEST_LOG is set.
func zapLevel() zapcore.Level {
	if os.Getenv("FACEGATE_OPERATOR_TEST_LOG") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}

func ptrTo[T any](v T) *T { return &v }

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// cluster returns the shared environment or skips (fails under CI) when the
// envtest binaries are absent.
func cluster(t *testing.T) *env {
	t.Helper()
	if suite.missing != "" {
		testenv.Missing(t, suite.missing, testcluster.HowToGet)
	}
	return &suite
}

// tinyEncoder is a valid ONNX graph with a face encoder's interface: NHWC
// pixels in, a dim-d vector out.
func tinyEncoder(side, dim int64) ([]byte, error) {
	g := onnxbuild.New("tiny")
	in, err := g.Input("image", -1, side, side, 3)
	if err != nil {
		return nil, err
	}
	proj := make([]float32, 3*dim)
	for i := range proj {
		proj[i] = float32(i%5) / 5
	}
	p, err := g.Float("proj", []int64{3, dim}, proj)
	if err != nil {
		return nil, err
	}
	mean := g.Node("ReduceMean", "mean", []string{in}, onnxbuild.Ints("axes", 1, 2), onnxbuild.Int("keepdims", 0))
	g.Output(g.Node("MatMul", "embedding", []string{mean, p}), -1, dim)
	return onnxbuild.Marshal(g.Model("facegate-operator-test", nil))
}

var nsCounter atomic.Int64

// namespace creates a fresh namespace for one test (envtest has no
// namespace controller, so they are never deleted; names are unique).
func (e *env) namespace(t *testing.T, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s-%d-%d", prefix, time.Now().Unix()%100000, nsCounter.Add(1))
	if err := e.c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	return name
}

func (e *env) sha(path string) string {
	s := sha256.Sum256(e.models[path])
	return hex.EncodeToString(s[:])
}

// model creates a FaceModel served by the test's artefact server.
func (e *env) model(t *testing.T, ns, name, path string, side, dim int32) *facegatev1.FaceModel {
	t.Helper()
	m := &facegatev1.FaceModel{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: facegatev1.FaceModelSpec{
			ModelID:       "tiny-" + strings.TrimSuffix(strings.TrimPrefix(path, "/"), ".onnx"),
			Version:       "1",
			Artifact:      facegatev1.ArtifactSource{URL: e.baseURL + path, SHA256: e.sha(path)},
			Input:         facegatev1.InputSpec{Width: side, Height: side, Channels: 3, Layout: facegatev1.LayoutNHWC},
			EmbeddingSize: dim,
			Threshold:     0.6,
			Detector:      facegatev1.DetectorRef{ModelID: "blazeface-256"},
		},
	}
	if err := e.c.Create(context.Background(), m); err != nil {
		t.Fatalf("create FaceModel %s: %v", name, err)
	}
	return m
}

// validModel creates a FaceModel and waits until the operator validated it.
func (e *env) validModel(t *testing.T, ns, name, path string, side, dim int32) *facegatev1.FaceModel {
	t.Helper()
	m := e.model(t, ns, name, path, side, dim)
	e.eventually(t, 30*time.Second, func() error {
		if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(m), m); err != nil {
			return err
		}
		if m.Status.Phase != facegatev1.FaceModelValidated {
			return fmt.Errorf("FaceModel %s phase %q, conditions %+v", name, m.Status.Phase, m.Status.Conditions)
		}
		return nil
	})
	return m
}

// eventually polls f until it returns nil or the timeout passes.
func (e *env) eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not reached within %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// events lists the events about the named object.
func (e *env) events(t *testing.T, ns, name string) []eventsv1.Event {
	t.Helper()
	var list eventsv1.EventList
	if err := e.c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatalf("list events: %v", err)
	}
	var out []eventsv1.Event
	for _, ev := range list.Items {
		if ev.Regarding.Name == name {
			out = append(out, ev)
		}
	}
	return out
}

// waitEvent waits for an event with the reason about the object, whose note
// contains every fragment, and returns it.
func (e *env) waitEvent(t *testing.T, ns, name, reason string, fragments ...string) eventsv1.Event {
	t.Helper()
	var found eventsv1.Event
	e.eventually(t, 30*time.Second, func() error {
		var seen []string
	next:
		for _, ev := range e.events(t, ns, name) {
			seen = append(seen, ev.Reason+": "+ev.Note)
			if ev.Reason != reason {
				continue
			}
			for _, f := range fragments {
				if !strings.Contains(ev.Note, f) {
					continue next
				}
			}
			found = ev
			return nil
		}
		return fmt.Errorf("no %s event on %s with %q; events: %s", reason, name, fragments, strings.Join(seen, " | "))
	})
	return found
}

// poke changes an annotation, which makes the controllers reconcile now
// (after the clock moved, instead of waiting for the next requeue).
func (e *env) poke(t *testing.T, obj client.Object) {
	t.Helper()
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{"test.facegate.io/poke":"%d"}}}`, time.Now().UnixNano())
	if err := e.c.Patch(context.Background(), obj, client.RawPatch("application/merge-patch+json", patch)); err != nil {
		t.Fatalf("poke %s: %v", obj.GetName(), err)
	}
}

func condition(conds []metav1.Condition, typ string) string {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return typ + "=<none>"
	}
	return fmt.Sprintf("%s=%s/%s: %s", typ, c.Status, c.Reason, c.Message)
}

// siteFilter is the consumer filter of one site's frames; tests use their
// namespace as the site.
func siteFilter(t *testing.T, site string) string {
	t.Helper()
	f, err := bus.SiteFilter(bus.KindFrames, site)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func framesSubject(t *testing.T, site, camera string) string {
	t.Helper()
	s, err := bus.FramesSubject(site, camera)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
