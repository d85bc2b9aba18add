package bus

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Header names. NATS headers are case-sensitive; these exact spellings are
// the contract.
const (
	// HeaderMsgID is JetStream's de-duplication id: a second message with the
	// same id within the stream's duplicate window is acknowledged but not
	// stored.
	HeaderMsgID = jetstream.MsgIDHeader
	// HeaderSite, HeaderCamera and HeaderDoor repeat subject tokens so that
	// a consumer bound to a wildcard does not have to parse subjects.
	HeaderSite   = "facegate-site"
	HeaderCamera = "facegate-camera"
	HeaderDoor   = "facegate-door"
	// HeaderCaptureTime is when the frame was captured, RFC 3339 with
	// nanoseconds, UTC. Consumers measure end-to-end latency from it without
	// decoding the payload.
	HeaderCaptureTime = "facegate-capture-time"
	// HeaderSeq is the gateway's per-camera frame sequence, decimal.
	HeaderSeq = "facegate-seq"
	// HeaderSchema names the payload type and schema version, e.g.
	// "facegate.v1.Decision;v=1", so a consumer can refuse a payload it would
	// otherwise decode as the wrong message (protobuf cannot tell).
	HeaderSchema = "facegate-schema"
	// HeaderTraceParent and HeaderTraceState carry W3C trace context, the
	// names OpenTelemetry's propagator reads and writes (see HeaderCarrier).
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
)

// FrameHeaders are the frame identity headers a gateway sets on every frame
// and an embedder copies onto the frame's FaceEvent.
type FrameHeaders struct {
	Site        string
	Camera      string
	Seq         uint64
	CaptureTime time.Time
}

// Apply writes the headers into h (which must be non-nil).
func (f FrameHeaders) Apply(h nats.Header) {
	h.Set(HeaderSite, f.Site)
	h.Set(HeaderCamera, f.Camera)
	h.Set(HeaderSeq, strconv.FormatUint(f.Seq, 10))
	h.Set(HeaderCaptureTime, f.CaptureTime.UTC().Format(time.RFC3339Nano))
}

// ParseFrameHeaders reads the frame identity headers back, refusing missing
// or malformed values.
func ParseFrameHeaders(h nats.Header) (FrameHeaders, error) {
	var f FrameHeaders
	f.Site = h.Get(HeaderSite)
	if err := ValidateToken("site", f.Site); err != nil {
		return f, fmt.Errorf("bus: header %s: %w", HeaderSite, err)
	}
	f.Camera = h.Get(HeaderCamera)
	if err := ValidateToken("camera", f.Camera); err != nil {
		return f, fmt.Errorf("bus: header %s: %w", HeaderCamera, err)
	}
	seq, err := strconv.ParseUint(h.Get(HeaderSeq), 10, 64)
	if err != nil {
		return f, fmt.Errorf("bus: header %s: %w", HeaderSeq, err)
	}
	f.Seq = seq
	t, err := time.Parse(time.RFC3339Nano, h.Get(HeaderCaptureTime))
	if err != nil {
		return f, fmt.Errorf("bus: header %s: %w", HeaderCaptureTime, err)
	}
	f.CaptureTime = t
	return f, nil
}

// FrameMsgID is the de-duplication id of a frame: the same camera frame
// published twice (a gateway retry, or two gateway replicas reading the same
// camera) is stored once. The capture time is part of it because the
// sequence restarts with the gateway.
func FrameMsgID(site, camera string, seq uint64, captured time.Time) string {
	return site + "." + camera + "." + strconv.FormatUint(seq, 10) + "." + strconv.FormatInt(captured.UnixNano(), 10)
}

// SchemaHeader formats the HeaderSchema value for a message type and version.
func SchemaHeader(fullName string, version uint32) string {
	return fullName + ";v=" + strconv.FormatUint(uint64(version), 10)
}

// ParseSchemaHeader splits a HeaderSchema value into message name and version.
func ParseSchemaHeader(v string) (fullName string, version uint32, err error) {
	name, ver, ok := strings.Cut(v, ";v=")
	if !ok || name == "" {
		return "", 0, fmt.Errorf("bus: header %s %q: want <message>;v=<version>", HeaderSchema, v)
	}
	n, err := strconv.ParseUint(ver, 10, 32)
	if err != nil {
		return "", 0, fmt.Errorf("bus: header %s %q: version: %w", HeaderSchema, v, err)
	}
	return name, uint32(n), nil
}

// HeaderCarrier adapts nats.Header to OpenTelemetry's TextMapCarrier
// interface (Get, Set, Keys), so a propagator can inject and extract trace
// context without this package depending on OpenTelemetry:
//
//	otel.GetTextMapPropagator().Inject(ctx, bus.HeaderCarrier(h))
//
// The W3C propagator uses lower-case keys (traceparent, tracestate), which is
// how they are stored.
type HeaderCarrier nats.Header

// Get returns the first value of key.
func (c HeaderCarrier) Get(key string) string { return nats.Header(c).Get(key) }

// Set replaces key's values with value.
func (c HeaderCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

// Keys lists the header names present.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
