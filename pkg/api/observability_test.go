package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/facegate/facegate/pkg/apiauth"
	"github.com/facegate/facegate/pkg/bus"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// TestSpansLogsMetrics: one server span per request named by the route
// pattern, continuing the caller's trace; one access log line with request
// id, principal, route, status and duration; the request counter by route
// and code. Nothing of the request body reaches the log.
func TestSpansLogsMetrics(t *testing.T) {
	e := newEnv(t, generous())
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	core, logs := observer.New(zapcore.InfoLevel)
	cfg := e.server.cfg
	cfg.Tracer = tp.Tracer("api-test")
	cfg.Log = zap.New(core)
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequest("POST", hs.URL+"/v1/people", strings.NewReader(`{"person_id":"obs-1","display_name":"Secret Name","site":"hq"}`))
	req.Header.Set("Authorization", "Bearer "+tokOperator)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	req.Header.Set("X-Request-Id", "req-42")
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("X-Request-Id") != "req-42" {
		t.Fatalf("status %d, request id %q", resp.StatusCode, resp.Header.Get("X-Request-Id"))
	}

	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	if spans[0].Name() != "POST /v1/people" || spans[0].SpanContext().TraceID().String() != traceID {
		t.Fatalf("span %q in trace %s, want POST /v1/people in %s", spans[0].Name(), spans[0].SpanContext().TraceID(), traceID)
	}
	entries := logs.FilterMessage("request").All()
	if len(entries) != 1 {
		t.Fatalf("%d access log lines", len(entries))
	}
	f := entries[0].ContextMap()
	if f["request_id"] != "req-42" || f["principal"] != "olga-operator" || f["route"] != "POST /v1/people" || f["status"] != int64(201) {
		t.Fatalf("access log fields %v", f)
	}
	if _, ok := f["duration"]; !ok {
		t.Fatal("access log without duration")
	}
	for _, en := range logs.All() {
		for k, v := range en.ContextMap() {
			if s, ok := v.(string); ok && strings.Contains(s, "Secret Name") {
				t.Fatalf("log field %s carries request data: %q", k, s)
			}
		}
	}
	if n := testutil.ToFloat64(s.m.requests.WithLabelValues("POST /v1/people", "201")); n != 1 {
		t.Fatalf("facegate_api_requests_total = %v", n)
	}
	if n, err := testutil.GatherAndCount(reg, "facegate_api_request_seconds"); err != nil || n != 1 {
		t.Fatalf("facegate_api_request_seconds series: %d, %v", n, err)
	}
}

// TestConcurrentCreateIsAtomic: of several simultaneous creates of one id
// exactly one wins; the rest get 409 (the publish is conditional on the
// person's subject being empty).
func TestConcurrentCreateIsAtomic(t *testing.T) {
	e := newEnv(t, generous())
	const n = 8
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", e.http.URL+"/v1/people", strings.NewReader(`{"person_id":"same-id","display_name":"X","site":"hq"}`))
			req.Header.Set("Authorization", "Bearer "+tokAdmin)
			resp, err := e.http.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes[i] = resp.StatusCode
		})
	}
	wg.Wait()
	created, conflicts := 0, 0
	for _, c := range codes {
		switch c {
		case http.StatusCreated:
			created++
		case http.StatusConflict:
			conflicts++
		}
	}
	if created != 1 || conflicts != n-1 {
		t.Fatalf("codes %v: want one 201 and %d 409", codes, n-1)
	}
	// The stream holds one PersonUpsert: no loser slipped a second one in
	// between the directory check and its publish.
	upserts := 0
	for _, m := range e.stored(t, bus.StreamEnrolments) {
		var ch facegatev1.EnrolmentChange
		if err := bus.Decode(m.Data, &ch); err == nil && ch.GetPersonUpsert().GetPersonId() == "same-id" {
			upserts++
		}
	}
	if upserts != 1 {
		t.Fatalf("%d PersonUpsert messages for same-id, want 1", upserts)
	}
	// The conditional publish itself, bypassing the directory check.
	c := &call{ctx: testCtx(t), principal: apiauth.Principal{Name: "t"}}
	if _, err := e.server.publish(c, upsertChange(personFields{ID: "same-id", DisplayName: "Y"}), true); !errors.Is(err, errExists) {
		t.Fatalf("conditional publish over an existing person: %v", err)
	}
	if _, err := e.server.publish(c, upsertChange(personFields{ID: "other-id", DisplayName: "Y"}), true); err != nil {
		t.Fatalf("conditional publish of a new person: %v", err)
	}
}
