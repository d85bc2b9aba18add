package embedder

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/telemetry"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// TestTraceContinuesThroughTheEmbedder checks that a frame's trace goes on:
// the embedder's span is a child of the gateway's (the frame's traceparent)
// and the face event carries the embedder's span on to the matcher.
func TestTraceContinuesThroughTheEmbedder(t *testing.T) {
	e := newEnv(t)
	_, crop, _ := images(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()

	gwCtx, gwSpan := tp.Tracer("gateway").Start(context.Background(), "gateway.publish")
	captured := time.Now()
	f := &facegatev1.Frame{SchemaVersion: events.SchemaVersion, Image: crop.data,
		Meta: &facegatev1.FrameMeta{SchemaVersion: events.SchemaVersion, Site: site, Camera: camera,
			CaptureTime: timestamppb.New(captured), Sequence: 1, Encoding: crop.enc, Gateway: "test"}}
	subject, _ := bus.FramesSubject(site, camera)
	hdr := nats.Header{}
	bus.FrameHeaders{Site: site, Camera: camera, Seq: 1, CaptureTime: captured}.Apply(hdr)
	telemetry.Inject(gwCtx, hdr)
	if _, err := bus.Publish(testCtx(t), e.js, subject, f, hdr); err != nil {
		t.Fatal(err)
	}
	gwSpan.End()

	cfg := e.config(t)
	cfg.Tracer = tp.Tracer("embedder")
	r := start(t, cfg)
	waitFor(t, "one face event", func() bool { return r.w.Stats().Published.Load() == 1 })
	r.stop(t)

	var span sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "embedder.frame" {
			span = s
		}
	}
	if span == nil {
		t.Fatalf("no embedder.frame span among %d ended spans", len(rec.Ended()))
	}
	if span.Parent().SpanID() != gwSpan.SpanContext().SpanID() || span.SpanContext().TraceID() != gwSpan.SpanContext().TraceID() {
		t.Fatalf("embedder span parent %v trace %v, want the gateway span %v", span.Parent().SpanID(), span.SpanContext().TraceID(), gwSpan.SpanContext())
	}
	msgs := e.stored(t, bus.StreamFaces)
	if len(msgs) != 1 {
		t.Fatalf("%d face events stored", len(msgs))
	}
	got := trace.SpanContextFromContext(telemetry.Extract(context.Background(), msgs[0].Header))
	if got.TraceID() != gwSpan.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() {
		t.Fatalf("face event carries trace %v span %v, want trace %v span %v (the embedder's)", got.TraceID(), got.SpanID(),
			gwSpan.SpanContext().TraceID(), span.SpanContext().SpanID())
	}
}
