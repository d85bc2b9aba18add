package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/gateway/source"
	"github.com/facegate/facegate/pkg/telemetry"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// ErrNATSUnavailable is returned without trying when the connection is not
// up: a publish would otherwise wait for its timeout on every frame.
var ErrNATSUnavailable = errors.New("NATS connection is not up")

// ErrInvalidFrame is wrapped when a frame is refused before publishing.
var ErrInvalidFrame = errors.New("invalid frame")

// Publisher publishes a site's frames.
type Publisher struct {
	js      jetstream.JetStream
	site    string
	gateway string
	tracer  trace.Tracer
	timeout time.Duration
	m       *Metrics
}

// FrameMessage builds the Frame event and its headers (frame identity,
// Nats-Msg-Id) for a camera's seq-th frame.
func FrameMessage(site, gateway, camera string, seq uint64, f source.Frame) (*facegatev1.Frame, nats.Header, error) {
	msg := &facegatev1.Frame{
		SchemaVersion: events.SchemaVersion,
		Meta: &facegatev1.FrameMeta{
			SchemaVersion: events.SchemaVersion,
			Site:          site,
			Camera:        camera,
			CaptureTime:   timestamppb.New(f.Captured),
			Sequence:      seq,
			Width:         uint32(f.Width),
			Height:        uint32(f.Height),
			Encoding:      f.Encoding,
			Gateway:       gateway,
		},
		Image: f.Data,
	}
	if err := ValidateFrame(msg); err != nil {
		return nil, nil, err
	}
	h := nats.Header{}
	bus.FrameHeaders{Site: site, Camera: camera, Seq: seq, CaptureTime: f.Captured}.Apply(h)
	h.Set(bus.HeaderMsgID, bus.FrameMsgID(site, camera, seq, f.Captured))
	return msg, h, nil
}

// ValidateFrame checks what consumers of FRAMES rely on. pkg/events has no
// frame validator (frames are only ever produced here), so the rules live
// with the producer.
func ValidateFrame(f *facegatev1.Frame) error {
	m := f.GetMeta()
	fail := func(format string, a ...any) error {
		return fmt.Errorf("gateway: frame %s/%s#%d: %s: %w", m.GetSite(), m.GetCamera(), m.GetSequence(), fmt.Sprintf(format, a...), ErrInvalidFrame)
	}
	switch {
	case m == nil:
		return fmt.Errorf("gateway: frame has no meta: %w", ErrInvalidFrame)
	case f.GetSchemaVersion() != events.SchemaVersion || m.GetSchemaVersion() != events.SchemaVersion:
		return fail("schema_version %d/%d, want %d", f.GetSchemaVersion(), m.GetSchemaVersion(), events.SchemaVersion)
	case m.GetSequence() == 0:
		return fail("sequence starts at 1")
	case m.GetCaptureTime() == nil || m.GetCaptureTime().AsTime().IsZero():
		return fail("capture_time is missing")
	case m.GetEncoding() != facegatev1.ImageEncoding_IMAGE_ENCODING_JPEG && m.GetEncoding() != facegatev1.ImageEncoding_IMAGE_ENCODING_PNG:
		return fail("encoding %v is not JPEG or PNG", m.GetEncoding())
	case m.GetWidth() == 0 || m.GetHeight() == 0:
		return fail("size %dx%d", m.GetWidth(), m.GetHeight())
	case len(f.GetImage()) == 0:
		return fail("image is empty")
	}
	if err := bus.ValidateToken("site", m.GetSite()); err != nil {
		return fmt.Errorf("gateway: frame: %w: %w", err, ErrInvalidFrame)
	}
	if err := bus.ValidateToken("camera", m.GetCamera()); err != nil {
		return fmt.Errorf("gateway: frame: %w: %w", err, ErrInvalidFrame)
	}
	return nil
}

// Publish publishes a camera's seq-th frame and waits for its
// acknowledgement, at most the publish timeout. The same frame published
// twice is stored once (ack.Duplicate on the second).
func (p *Publisher) Publish(ctx context.Context, camera string, seq uint64, f source.Frame) (*jetstream.PubAck, error) {
	msg, h, err := FrameMessage(p.site, p.gateway, camera, seq, f)
	if err != nil {
		return nil, err
	}
	subject, err := bus.FramesSubject(p.site, camera)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w: %w", err, ErrInvalidFrame)
	}
	if st := p.js.Conn().Status(); st != nats.CONNECTED {
		return nil, fmt.Errorf("gateway: publish frame %s#%d: connection %s: %w", camera, seq, st, ErrNATSUnavailable)
	}
	ctx, span := p.tracer.Start(ctx, "gateway.publish_frame", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("facegate.site", p.site), attribute.String("facegate.camera", camera),
			attribute.Int64("facegate.sequence", int64(seq)), attribute.Int("facegate.image_bytes", len(f.Data))))
	defer span.End()
	// The embedder and matcher continue this frame's trace.
	telemetry.Inject(ctx, h)
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	start := time.Now()
	ack, err := bus.Publish(ctx, p.js, subject, msg, h)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "publish failed")
		return nil, fmt.Errorf("gateway: publish frame %s#%d: %w", camera, seq, err)
	}
	p.m.PublishSec.Observe(time.Since(start).Seconds())
	span.SetAttributes(attribute.Bool("facegate.duplicate", ack.Duplicate), attribute.Int64("facegate.stream_seq", int64(ack.Sequence)))
	return ack, nil
}
