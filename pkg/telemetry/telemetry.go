// Package telemetry is the one place services get their observability
// plumbing from: a Prometheus registry served on /metrics (with /healthz and
// /readyz), and OpenTelemetry trace context carried in NATS headers so a
// trace follows a frame from the gateway to the decision.
//
// No trace exporter is built in: the module proxy here has the OTel SDK but
// no collector to send to. Services create spans with the Tracer they are
// given; a deployment that wants traces installs an exporting
// TracerProvider (tests use the SDK's in-memory recorder).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/propagation"

	"github.com/facegate/facegate/pkg/bus"
	"go.uber.org/zap"
)

// propagator is W3C trace context; stateless, so a value, not a global.
var propagator = propagation.TraceContext{}

// Inject writes ctx's span context into a NATS header (traceparent,
// tracestate). A context without a span writes nothing.
func Inject(ctx context.Context, h nats.Header) {
	if h == nil {
		return
	}
	propagator.Inject(ctx, bus.HeaderCarrier(h))
}

// Extract returns ctx carrying the remote span context found in h, if any.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return propagator.Extract(ctx, bus.HeaderCarrier(h))
}

// NewRegistry returns a registry with the Go runtime and process collectors,
// which every service exports.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Server serves /metrics, /healthz and /readyz.
type Server struct {
	srv   *http.Server
	ln    net.Listener
	ready atomic.Bool
}

// Listen starts serving on addr (":9090", "127.0.0.1:0"). Readiness starts
// false; call SetReady when the service can do its work.
func Listen(addr string, reg *prometheus.Registry, log *zap.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("telemetry: listen for metrics on %s: %w", addr, err)
	}
	s := &Server{ln: ln}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && log != nil {
			log.Error("metrics server stopped", zap.Error(err))
		}
	}()
	return s, nil
}

// Addr is the address the server listens on ("" for a nil Server).
func (s *Server) Addr() string {
	if s == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// SetReady sets what /readyz answers.
func (s *Server) SetReady(ready bool) {
	if s != nil {
		s.ready.Store(ready)
	}
}

// Close stops the server, waiting up to 5 s for requests in flight.
func (s *Server) Close() error {
	if s == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}

// NewLogger builds the services' zap logger: JSON lines on stderr at the
// given level ("debug", "info", "warn", "error"); dev selects the
// human-readable console encoder.
func NewLogger(level string, dev bool) (*zap.Logger, error) {
	lvl, err := zap.ParseAtomicLevel(level)
	if err != nil {
		return nil, fmt.Errorf("telemetry: log level %q: %w", level, err)
	}
	cfg := zap.NewProductionConfig()
	if dev {
		cfg = zap.NewDevelopmentConfig()
	}
	cfg.Level = lvl
	cfg.OutputPaths = []string{"stderr"}
	l, err := cfg.Build()
	if err != nil {
		return nil, fmt.Errorf("telemetry: build logger: %w", err)
	}
	return l, nil
}

// ListenIfSet is Listen when addr is not empty; otherwise it returns a nil
// *Server, whose methods do nothing, so services need no branches for an
// optional metrics endpoint.
func ListenIfSet(addr string, reg *prometheus.Registry, log *zap.Logger) (*Server, error) {
	if addr == "" {
		return nil, nil
	}
	s, err := Listen(addr, reg, log)
	if err == nil && log != nil {
		log.Info("metrics", zap.String("addr", s.Addr()))
	}
	return s, err
}
