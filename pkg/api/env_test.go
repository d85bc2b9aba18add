package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/facegate/facegate/models"
	"github.com/facegate/facegate/pkg/apiauth"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/directory"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/photostore"
	"github.com/facegate/facegate/pkg/sealed"
	"github.com/facegate/facegate/pkg/testenv"
)

// The engine is opened once per test binary: ONNX Runtime's environment is
// process-wide and loading the models costs seconds.
var shared struct {
	once      sync.Once
	engine    *face.Engine
	threshold float64
	err       error
}

func engine(t testing.TB) (*face.Engine, float64) {
	t.Helper()
	root := testenv.Models(t)
	shared.once.Do(func() {
		c, err := modelcache.New(root, nil)
		if err != nil {
			shared.err = err
			return
		}
		rt, err := inference.Open(inference.Options{LibraryPath: c.LibraryPath(), IntraOpThreads: 1})
		if err != nil {
			shared.err = err
			return
		}
		e, err := face.Open(context.Background(), rt, c, face.Options{})
		if err != nil {
			shared.err = err
			return
		}
		th, err := models.ThresholdFor(c.Root, e.Model(), e.Mirrored())
		if err != nil {
			shared.err = err
			return
		}
		shared.engine, shared.threshold = e, th
	})
	if shared.err != nil {
		t.Fatalf("open face engine: %v", shared.err)
	}
	return shared.engine, shared.threshold
}

// Tokens of the test principals.
const (
	tokAdmin    = "tok-admin-0123456789"
	tokOperator = "tok-operator-hq-0123"
	tokBranch   = "tok-operator-branch-9"
	tokAuditor  = "tok-auditor-hq-4567"
)

func tokensYAML() string {
	return fmt.Sprintf(`principals:
- {name: alice-admin, token_sha256: %s, role: admin}
- {name: olga-operator, token_sha256: %s, role: operator, sites: [hq]}
- {name: bruno-branch, token_sha256: %s, role: operator, sites: [branch]}
- {name: audrey-auditor, token_sha256: %s, role: auditor, sites: [hq]}
`, apiauth.HashToken(tokAdmin), apiauth.HashToken(tokOperator), apiauth.HashToken(tokBranch), apiauth.HashToken(tokAuditor))
}

type env struct {
	js     jetstream.JetStream
	keys   *sealed.FileKeyProvider
	dir    *directory.Directory
	photos *photostore.Store
	engine *face.Engine
	server *Server
	http   *httptest.Server
	reg    *prometheus.Registry
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newEnv starts a real NATS server, the directory and the API.
func newEnv(t testing.TB, limits apiauth.Limits) *env {
	t.Helper()
	eng, threshold := engine(t)
	ctx := testCtx(t)
	_, _, js := natstest.Run(t, embedded.Options{})
	if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	keys, err := sealed.OpenFileKeyProvider(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	photos, err := photostore.New(filepath.Join(t.TempDir(), "photos"), keys)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := directory.New(ctx, directory.Config{JetStream: js, Keys: keys,
		Spaces: []directory.Space{{Name: eng.Space(), Dim: eng.Dim()}}, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dir.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	if err := dir.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	store, err := apiauth.Parse([]byte(tokensYAML()))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s, err := New(Config{JetStream: js, Directory: dir, Engine: eng, Threshold: threshold, Keys: keys, Photos: photos,
		Guard: apiauth.NewGuard(store, apiauth.NewLimiter(limits)), Log: zaptest.NewLogger(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return &env{js: js, keys: keys, dir: dir, photos: photos, engine: eng, server: s, http: hs, reg: reg}
}

// generous limits for functional tests; the rate-limit test sets its own.
func generous() apiauth.Limits {
	r := apiauth.Rate{PerSecond: 1000, Burst: 1000}
	return apiauth.Limits{Match: r, Write: r, Read: r, AuthFailures: r}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response %d %q is not a JSON object: %v", r.status, r.body, err)
	}
	return m
}

func (r response) errorText(t testing.TB) string {
	t.Helper()
	s, _ := r.json(t)["error"].(string)
	if s == "" {
		t.Fatalf("error response %d without an error text: %q", r.status, r.body)
	}
	return s
}

func (e *env) do(t testing.TB, token, method, path, contentType string, body io.Reader) response {
	t.Helper()
	req, err := http.NewRequest(method, e.http.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (e *env) call(t testing.TB, token, method, path, body string) response {
	t.Helper()
	var r io.Reader
	ct := ""
	if body != "" {
		r, ct = strings.NewReader(body), "application/json"
	}
	return e.do(t, token, method, path, ct, r)
}

type part struct {
	field, name string
	data        []byte
}

func multipartBody(t testing.TB, parts ...part) (string, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for _, p := range parts {
		var pw io.Writer
		var err error
		if p.name != "" {
			pw, err = w.CreateFormFile(p.field, p.name)
		} else {
			pw, err = w.CreateFormField(p.field)
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pw.Write(p.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return w.FormDataContentType(), &buf
}

func (e *env) upload(t testing.TB, token, path string, parts ...part) response {
	t.Helper()
	ct, body := multipartBody(t, parts...)
	return e.do(t, token, "POST", path, ct, body)
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// photo returns a dataset image as an upload part.
func photo(t testing.TB, rel string) part {
	t.Helper()
	return part{field: "photo", name: filepath.Base(rel), data: readFile(t, testenv.Dataset(t, rel))}
}

func crop(t testing.TB, who string, i int) part {
	return photo(t, fmt.Sprintf("face-api.js/examples/images/%s/%s%d.png", who, who, i))
}

// stored returns every message of a stream, in order.
func (e *env) stored(t testing.TB, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := testCtx(t)
	s, err := e.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted or purged
		}
		out = append(out, m)
	}
	return out
}

// rawBytes is everything a stored message carries: subject, headers, data.
func rawBytes(m *jetstream.RawStreamMsg) []byte {
	var b bytes.Buffer
	b.WriteString(m.Subject)
	for k, vs := range m.Header {
		b.WriteString(k)
		for _, v := range vs {
			b.WriteString(v)
		}
	}
	b.Write(m.Data)
	return b.Bytes()
}
