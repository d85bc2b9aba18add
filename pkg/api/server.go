// Package api is facegate's enrolment and access HTTP API (JSON under /v1,
// documented in api/openapi.yaml): people, enrolment photos, groups, doors,
// access policies, and verify/identify against the gallery.
//
// Writes are enrolment changes published to the ENROLMENTS stream (the
// source of truth); a handler returns only after the directory has applied
// its change, so a GET that follows sees it (read-your-writes). Photos are
// analysed in-process with face.Engine: exactly one face passing the quality
// gate, else 422 with the reason. The face encoding leaves this process only
// sealed (package sealed) in PhotoAdd.sealed_template, and the photo only
// sealed in the photo store.
//
// Every authenticated call publishes an AuditRecord to facegate.audit.<service>
// naming the principal, the route pattern (never a concrete path, which could
// carry a person id), the site and the outcome; a person appears only as
// events.PersonHash. Deleting a person erases them (see Server.erasePerson).
//
// Security (package apiauth): bearer tokens or mTLS client certificates,
// roles admin/operator/auditor with per-site scope, token-bucket rate limits
// per principal and endpoint class.
package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/apiauth"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/index"
	"github.com/facegate/facegate/pkg/photostore"
	"github.com/facegate/facegate/pkg/policy"
	"github.com/facegate/facegate/pkg/sealed"
	"github.com/facegate/facegate/pkg/telemetry"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// Directory is what the API needs of pkg/directory.
type Directory interface {
	WaitApplied(ctx context.Context, seq uint64) error
	Person(id string) (policy.Person, bool)
	People(site string) []policy.Person
	View(fn func(s *policy.State))
	Index() index.Index
	Collection(space string) (string, error)
}

// Analyzer is what the API needs of face.Engine.
type Analyzer interface {
	Analyze(ctx context.Context, data []byte) (*face.Result, error)
	Space() string
	Dim() int
}

// Limits on requests.
const (
	MaxJSONBody  = 64 << 10
	MaxPhotoSize = 10 << 20
	MaxPhotos    = 8
)

// Config configures a Server. JetStream, Directory, Engine, Keys, Photos
// and Guard are required.
type Config struct {
	JetStream jetstream.JetStream
	Directory Directory
	Engine    Analyzer
	// Threshold is the L2 distance below which two faces of Engine's space
	// are the same person (models.ThresholdFor).
	Threshold float64
	Keys      sealed.KeyProvider
	Photos    *photostore.Store
	Guard     *apiauth.Guard
	// Service is the audit subject token, facegate.audit.<Service>;
	// default "api".
	Service string
	// ApplyTimeout bounds the wait for the directory to apply a write;
	// default 10 s.
	ApplyTimeout time.Duration
	// Analyses bounds concurrent face analyses (CPU-heavy); default 2.
	Analyses   int
	Log        *zap.Logger
	Registerer prometheus.Registerer
	Tracer     trace.Tracer
}

// Server is the API.
type Server struct {
	cfg      Config
	log      *zap.Logger
	mux      *http.ServeMux
	analyses chan struct{}
	m        metrics

	seqMu   sync.Mutex
	lastSeq uint64
}

type metrics struct {
	requests      *prometheus.CounterVec
	seconds       *prometheus.HistogramVec
	auditFailures prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "facegate_api_requests_total", Help: "API requests by route pattern and HTTP status code.",
		}, []string{"route", "code"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "facegate_api_request_seconds", Help: "API request latency by route pattern.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		auditFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "facegate_api_audit_publish_failures_total", Help: "Audit records that could not be published.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.seconds, m.auditFailures} {
		if err := reg.Register(c); err != nil {
			return m, fmt.Errorf("api: register metrics: %w", err)
		}
	}
	return m, nil
}

// New checks cfg and builds the server's routes.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.JetStream == nil:
		return nil, errors.New("api: config: JetStream is nil")
	case cfg.Directory == nil:
		return nil, errors.New("api: config: Directory is nil")
	case cfg.Engine == nil:
		return nil, errors.New("api: config: Engine is nil")
	case cfg.Keys == nil:
		return nil, errors.New("api: config: Keys is nil")
	case cfg.Photos == nil:
		return nil, errors.New("api: config: Photos is nil")
	case cfg.Guard == nil:
		return nil, errors.New("api: config: Guard is nil")
	case !(cfg.Threshold > 0 && cfg.Threshold < 2):
		return nil, fmt.Errorf("api: config: threshold %v outside (0, 2)", cfg.Threshold)
	}
	if cfg.Service == "" {
		cfg.Service = "api"
	}
	if _, err := bus.AuditSubject(cfg.Service); err != nil {
		return nil, fmt.Errorf("api: config: service: %w", err)
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = 10 * time.Second
	}
	if cfg.Analyses <= 0 {
		cfg.Analyses = 2
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Log.Named("api"), mux: http.NewServeMux(),
		analyses: make(chan struct{}, cfg.Analyses), m: m}
	for _, rt := range s.routes() {
		s.mux.Handle(rt.Method+" "+rt.Path, s.wrap(rt))
	}
	// Everything else: a JSON 404 (or 405) instead of the mux's text.
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.m.requests.WithLabelValues("unmatched", "404").Inc()
		apiauth.WriteError(w, http.StatusNotFound, "no such route: "+r.Method+" "+r.URL.Path)
	})
	return s, nil
}

// Handler is the API's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// Route is one registered route.
type Route struct {
	Method, Path string
	class        apiauth.Class
	kind         facegatev1.AuditKind
	handle       func(c *call) (int, any, error)
}

// Routes lists the registered routes ("METHOD /path"), for documentation
// checks.
func (s *Server) Routes() []Route { return s.routes() }

func (s *Server) routes() []Route {
	enrol := facegatev1.AuditKind_AUDIT_KIND_ENROLMENT
	r := func(method, path string, class apiauth.Class, kind facegatev1.AuditKind, h func(c *call) (int, any, error)) Route {
		return Route{Method: method, Path: path, class: class, kind: kind, handle: h}
	}
	return []Route{
		r("POST", "/v1/people", apiauth.ClassWrite, enrol, s.createPerson),
		r("GET", "/v1/people", apiauth.ClassRead, enrol, s.listPeople),
		r("GET", "/v1/people/{id}", apiauth.ClassRead, enrol, s.getPerson),
		r("PUT", "/v1/people/{id}", apiauth.ClassWrite, enrol, s.putPerson),
		r("PATCH", "/v1/people/{id}", apiauth.ClassWrite, enrol, s.patchPerson),
		r("DELETE", "/v1/people/{id}", apiauth.ClassWrite, facegatev1.AuditKind_AUDIT_KIND_ERASURE, s.erasePerson),
		r("POST", "/v1/people/{id}/photos", apiauth.ClassWrite, enrol, s.addPhotos),
		r("DELETE", "/v1/people/{id}/photos/{photo}", apiauth.ClassWrite, enrol, s.removePhoto),
		r("PUT", "/v1/people/{id}/groups/{group}", apiauth.ClassWrite, enrol, s.joinGroup),
		r("DELETE", "/v1/people/{id}/groups/{group}", apiauth.ClassWrite, enrol, s.leaveGroup),
		r("PUT", "/v1/groups/{id}", apiauth.ClassWrite, enrol, s.putGroup),
		r("DELETE", "/v1/groups/{id}", apiauth.ClassWrite, enrol, s.deleteGroup),
		r("PUT", "/v1/sites/{site}/doors/{door}", apiauth.ClassWrite, enrol, s.putDoor),
		r("DELETE", "/v1/sites/{site}/doors/{door}", apiauth.ClassWrite, enrol, s.deleteDoor),
		r("PUT", "/v1/policies/{id}", apiauth.ClassWrite, enrol, s.putPolicy),
		r("DELETE", "/v1/policies/{id}", apiauth.ClassWrite, enrol, s.deletePolicy),
		r("POST", "/v1/verify", apiauth.ClassMatch, facegatev1.AuditKind_AUDIT_KIND_DECISION, s.verify),
		r("POST", "/v1/identify", apiauth.ClassMatch, facegatev1.AuditKind_AUDIT_KIND_DECISION, s.identify),
	}
}

// call is one request in flight: what the handler learned for the audit
// record and the log.
type call struct {
	w         http.ResponseWriter
	r         *http.Request
	ctx       context.Context
	principal apiauth.Principal
	route     string
	requestID string
	// Filled by handlers for the audit record.
	site    string
	subject string // a person id; the record carries only its hash
	source  string // e.g. "ENROLMENTS/42"
	attrs   []*facegatev1.AuditAttribute
}

func (c *call) attr(k, v string) {
	c.attrs = append(c.attrs, &facegatev1.AuditAttribute{Key: k, Value: v})
}

// httpError is an error with its HTTP status; its message is shown to the
// caller, so it names the offending field and never internal detail.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// forbidden turns an apiauth authorisation error into a 403.
func forbidden(err error) error {
	if err == nil {
		return nil
	}
	return &httpError{status: http.StatusForbidden, msg: err.Error()}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); id != "" && bus.ValidateToken("request id", id) == nil {
		return id
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// wrap is every route's middleware: request id, span, authentication, rate
// limit, the handler, the audit record, metrics and the access log.
func (s *Server) wrap(rt Route) http.Handler {
	pattern := rt.Method + " " + rt.Path
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w := &statusWriter{ResponseWriter: rw}
		c := &call{w: w, r: r, route: pattern, requestID: requestID(r)}
		w.Header().Set("X-Request-Id", c.requestID)

		// Trace context from the caller's W3C headers (nats.Header is the
		// carrier telemetry.Extract reads; its keys are case-sensitive).
		hdr := nats.Header{}
		if v := r.Header.Get("Traceparent"); v != "" {
			hdr.Set(bus.HeaderTraceParent, v)
			if st := r.Header.Get("Tracestate"); st != "" {
				hdr.Set(bus.HeaderTraceState, st)
			}
		}
		ctx, span := s.cfg.Tracer.Start(telemetry.Extract(r.Context(), hdr), pattern,
			trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.route", rt.Path), attribute.String("http.request.method", rt.Method)))
		defer span.End()
		c.ctx = ctx

		defer func() {
			status := w.status
			if status == 0 {
				status = http.StatusOK
			}
			d := time.Since(start)
			s.m.requests.WithLabelValues(pattern, strconv.Itoa(status)).Inc()
			s.m.seconds.WithLabelValues(pattern).Observe(d.Seconds())
			span.SetAttributes(attribute.Int("http.response.status_code", status))
			if status >= 500 {
				span.SetStatus(codes.Error, http.StatusText(status))
			}
			s.log.Info("request", zap.String("request_id", c.requestID), zap.String("principal", c.principal.Name),
				zap.String("route", pattern), zap.Int("status", status), zap.Duration("duration", d))
		}()

		p, denial := s.cfg.Guard.Authenticate(r)
		if denial == nil {
			c.principal = p
			denial = s.cfg.Guard.RateLimit(p, rt.class)
		}
		if denial != nil {
			apiauth.WriteDenial(w, denial)
			return
		}
		c.ctx = apiauth.WithPrincipal(c.ctx, p)
		c.r = r.WithContext(c.ctx)

		status, body, err := s.run(c, rt)
		if err != nil {
			var he *httpError
			if !errors.As(err, &he) {
				s.log.Error("request failed", zap.String("request_id", c.requestID), zap.String("route", pattern), zap.Error(err))
				span.RecordError(err)
				he = &httpError{status: http.StatusInternalServerError, msg: "internal error (request " + c.requestID + ")"}
				if errors.Is(err, context.DeadlineExceeded) {
					he = &httpError{status: http.StatusServiceUnavailable, msg: "timed out (request " + c.requestID + ")"}
				}
			}
			status, body = he.status, map[string]string{"error": he.msg}
		}
		// The audit record goes out before the response, so a caller that
		// sees the response can rely on the record existing.
		if aerr := s.audit(c, rt.kind, status); aerr != nil {
			s.m.auditFailures.Inc()
			s.log.Error("audit record not published", zap.String("request_id", c.requestID), zap.String("route", pattern), zap.Error(aerr))
			if status < 400 && rt.kind == facegatev1.AuditKind_AUDIT_KIND_ERASURE {
				// An erasure without its audit record is reported, so the
				// caller retries (erasure is idempotent).
				status, body = http.StatusInternalServerError, map[string]string{"error": "erased, but the audit record could not be published; retry"}
			}
		}
		writeJSON(w, status, body)
	})
}

func (s *Server) run(c *call, rt Route) (status int, body any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("api: handler %s panicked: %v", c.route, p)
		}
	}()
	return rt.handle(c)
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	if status == http.StatusNoContent || body == nil {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
