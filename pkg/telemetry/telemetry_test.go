package telemetry

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func TestTraceContextRoundTripsThroughNATSHeaders(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, span := tp.Tracer("test").Start(context.Background(), "gateway.publish")
	defer span.End()

	h := nats.Header{}
	Inject(ctx, h)
	if h.Get("traceparent") == "" {
		t.Fatalf("no traceparent header after Inject: %v", h)
	}
	got := trace.SpanContextFromContext(Extract(context.Background(), h))
	if got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() || !got.IsRemote() {
		t.Fatalf("extracted %v, want trace %v span %v (remote)", got, span.SpanContext().TraceID(), span.SpanContext().SpanID())
	}

	// No span: nothing written, nothing extracted.
	h2 := nats.Header{}
	Inject(context.Background(), h2)
	if len(h2) != 0 {
		t.Fatalf("Inject without a span wrote %v", h2)
	}
	if trace.SpanContextFromContext(Extract(context.Background(), nats.Header{"traceparent": {"garbage"}})).IsValid() {
		t.Fatal("a malformed traceparent yielded a valid span context")
	}
}

func TestServerServesMetricsAndReadiness(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "facegate_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	s, err := Listen("127.0.0.1:0", reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + s.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "facegate_test_total 3") || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics: %d %q", code, body[:min(len(body), 300)])
	}
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before SetReady: %d, want 503", code)
	}
	s.SetReady(true)
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("/readyz after SetReady: %d, want 200", code)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
}
