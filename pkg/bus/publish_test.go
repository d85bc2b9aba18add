package bus_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/events"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

func testFrame(seq uint64, image []byte) *facegatev1.Frame {
	return &facegatev1.Frame{
		SchemaVersion: events.SchemaVersion,
		Meta: &facegatev1.FrameMeta{
			SchemaVersion: events.SchemaVersion,
			Site:          "hq", Camera: "lobby-1",
			CaptureTime: timestamppb.New(captured.Add(time.Duration(seq) * 200 * time.Millisecond)),
			Sequence:    seq, Width: 640, Height: 480,
			Encoding: facegatev1.ImageEncoding_IMAGE_ENCODING_JPEG,
		},
		Image: image,
	}
}

func ensure(t *testing.T, js jetstream.JetStream, cfg bus.Config) {
	t.Helper()
	if err := bus.EnsureStreams(testCtx(t), js, cfg); err != nil {
		t.Fatalf("EnsureStreams: %v", err)
	}
}

func msgCount(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	ctx := testCtx(t)
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestDeduplicateByMsgID(t *testing.T) {
	ctx := testCtx(t)
	_, _, js := natstest.Run(t, embedded.Options{})
	ensure(t, js, bus.DefaultConfig())
	subj, _ := bus.FramesSubject("hq", "lobby-1")

	hdr := nats.Header{}
	hdr.Set(bus.HeaderMsgID, bus.FrameMsgID("hq", "lobby-1", 1, captured))
	first, err := bus.Publish(ctx, js, subj, testFrame(1, []byte("jpeg-1")), hdr)
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate {
		t.Fatal("first publish reported as a duplicate")
	}
	// The same frame id with different bytes (a gateway retry that
	// re-encoded the frame) is still the same frame.
	again, err := bus.Publish(ctx, js, subj, testFrame(1, []byte("jpeg-1-reencoded")), hdr)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Sequence != first.Sequence {
		t.Fatalf("second publish with the same Nats-Msg-Id: duplicate=%v seq=%d, want duplicate of seq %d", again.Duplicate, again.Sequence, first.Sequence)
	}
	if n := msgCount(t, js, bus.StreamFrames); n != 1 {
		t.Fatalf("FRAMES holds %d messages, want 1", n)
	}

	hdr2 := nats.Header{}
	hdr2.Set(bus.HeaderMsgID, bus.FrameMsgID("hq", "lobby-1", 2, captured))
	if ack, err := bus.Publish(ctx, js, subj, testFrame(2, []byte("jpeg-2")), hdr2); err != nil || ack.Duplicate {
		t.Fatalf("a new id: ack %+v, err %v; want a stored message", ack, err)
	}
	if n := msgCount(t, js, bus.StreamFrames); n != 2 {
		t.Fatalf("FRAMES holds %d messages, want 2", n)
	}
}

// Without a caller-set id, resending the same event is de-duplicated by its
// content, and a different event is not.
func TestDeduplicateByContent(t *testing.T) {
	ctx := testCtx(t)
	_, _, js := natstest.Run(t, embedded.Options{})
	ensure(t, js, bus.DefaultConfig())
	subj, _ := bus.DecisionsSubject("hq", "main-entrance")

	for i, want := range []bool{false, true} {
		ack, err := bus.Publish(ctx, js, subj, testDecision("d-1"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if ack.Duplicate != want {
			t.Fatalf("publish %d of the same decision: duplicate=%v, want %v", i+1, ack.Duplicate, want)
		}
	}
	if ack, err := bus.Publish(ctx, js, subj, testDecision("d-2"), nil); err != nil || ack.Duplicate {
		t.Fatalf("a different decision: ack %+v, err %v", ack, err)
	}
	if n := msgCount(t, js, bus.StreamDecisions); n != 2 {
		t.Fatalf("DECISIONS holds %d messages, want 2", n)
	}
}

func TestFramesExpire(t *testing.T) {
	ctx := testCtx(t)
	_, _, js := natstest.Run(t, embedded.Options{})
	cfg := bus.DefaultConfig()
	cfg.Frames.MaxAge = time.Second
	cfg.Frames.Duplicates = time.Second
	ensure(t, js, cfg)
	subj, _ := bus.FramesSubject("hq", "lobby-1")

	start := time.Now()
	for seq := uint64(1); seq <= 3; seq++ {
		if _, err := bus.Publish(ctx, js, subj, testFrame(seq, []byte{byte(seq)}), nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := msgCount(t, js, bus.StreamFrames); n != 3 {
		t.Fatalf("FRAMES holds %d messages right after publishing, want 3", n)
	}
	for msgCount(t, js, bus.StreamFrames) != 0 {
		if time.Since(start) > 15*time.Second {
			t.Fatalf("frames older than the 1s max age are still stored after %v", time.Since(start))
		}
		time.Sleep(100 * time.Millisecond)
	}
	gone := time.Since(start)
	if gone < 900*time.Millisecond {
		t.Fatalf("frames vanished after %v, before their 1s max age", gone)
	}
	s, _ := js.Stream(ctx, bus.StreamFrames)
	if _, err := s.GetMsg(ctx, 1); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("get expired seq 1: %v, want ErrMsgNotFound", err)
	}
	// Age, not a wipe: a fresh frame is kept.
	if _, err := bus.Publish(ctx, js, subj, testFrame(4, []byte{4}), nil); err != nil {
		t.Fatal(err)
	}
	if n := msgCount(t, js, bus.StreamFrames); n != 1 {
		t.Fatalf("a fresh frame: FRAMES holds %d, want 1", n)
	}
	t.Logf("frames with max age 1s were gone after %v", gone.Round(10*time.Millisecond))
}

func TestPublishOverServerMaxPayload(t *testing.T) {
	ctx := testCtx(t)
	const maxPayload = 32 << 10
	_, nc, js := natstest.Run(t, embedded.Options{MaxPayload: maxPayload})
	ensure(t, js, bus.DefaultConfig())
	subj, _ := bus.FramesSubject("hq", "lobby-1")

	_, err := bus.Publish(ctx, js, subj, testFrame(1, make([]byte, maxPayload+1)), nil)
	if err == nil {
		t.Fatalf("a %d-byte frame was accepted by a server with max_payload %d", maxPayload+1, maxPayload)
	}
	if !errors.Is(err, bus.ErrTooLarge) || !errors.Is(err, nats.ErrMaxPayload) {
		t.Fatalf("error %v: want ErrTooLarge wrapping nats.ErrMaxPayload", err)
	}
	if !strings.Contains(err.Error(), "32768") || !strings.Contains(err.Error(), subj) {
		t.Fatalf("error %q should name the limit and the subject", err)
	}
	t.Logf("refused: %v", err)
	if n := msgCount(t, js, bus.StreamFrames); n != 0 {
		t.Fatalf("FRAMES holds %d messages after a refused publish", n)
	}
	// The connection survives: the client refused before sending.
	if !nc.IsConnected() {
		t.Fatal("connection lost after the oversize publish")
	}
	if _, err := bus.Publish(ctx, js, subj, testFrame(2, make([]byte, 1024)), nil); err != nil {
		t.Fatalf("a small frame after the refusal: %v", err)
	}
}

func TestPublishOverStreamMaxMsgSize(t *testing.T) {
	ctx := testCtx(t)
	_, _, js := natstest.Run(t, embedded.Options{})
	cfg := bus.DefaultConfig()
	ensure(t, js, cfg)
	subj, _ := bus.ClaimsSubject("hq", "main-entrance")
	claim := &facegatev1.Claim{
		SchemaVersion: events.SchemaVersion, ClaimId: "c-1", Site: "hq", Door: "main-entrance",
		BadgeId: "b-1", Reader: strings.Repeat("r", int(cfg.Claims.MaxMsgSize)), Time: timestamppb.New(captured),
	}
	_, err := bus.Publish(ctx, js, subj, claim, nil)
	if !errors.Is(err, bus.ErrTooLarge) || !strings.Contains(err.Error(), bus.StreamClaims) {
		t.Fatalf("a claim over CLAIMS' MaxMsgSize: error %v, want ErrTooLarge naming the stream", err)
	}
	t.Logf("refused: %v", err)
	if n := msgCount(t, js, bus.StreamClaims); n != 0 {
		t.Fatalf("CLAIMS holds %d messages after a refused publish", n)
	}
}

func TestPublishRefusesBadInput(t *testing.T) {
	ctx := testCtx(t)
	_, _, js := natstest.Run(t, embedded.Options{})
	ensure(t, js, bus.DefaultConfig())
	subj, _ := bus.DecisionsSubject("hq", "main-entrance")

	noVersion := testDecision("d-1")
	noVersion.SchemaVersion = 0
	if _, err := bus.Publish(ctx, js, subj, noVersion, nil); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("decision without schema_version: %v, want events.ErrInvalid", err)
	}
	future := testDecision("d-1")
	future.SchemaVersion = events.SchemaVersion + 1
	if _, err := bus.Publish(ctx, js, subj, future, nil); !errors.Is(err, events.ErrUnsupportedVersion) {
		t.Errorf("decision from the future: %v, want ErrUnsupportedVersion", err)
	}
	// Not a top-level event.
	if _, err := bus.Publish(ctx, js, subj, &facegatev1.Box{}, nil); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("a Box: %v, want events.ErrInvalid", err)
	}
	for _, s := range []string{"facegate.decisions.hq.*", "facegate.decisions.>", "facegate.decisions.hq", "other.subject", "facegate.decisions.hq.a b"} {
		if _, err := bus.Publish(ctx, js, s, testDecision("d-1"), nil); !errors.Is(err, bus.ErrInvalidSubject) && !errors.Is(err, bus.ErrInvalidToken) {
			t.Errorf("subject %q: %v, want an invalid subject error", s, err)
		}
	}
	if n := msgCount(t, js, bus.StreamDecisions); n != 0 {
		t.Fatalf("DECISIONS holds %d messages after refused publishes", n)
	}
}

// A stream other than ours capturing facegate subjects is a misconfiguration
// that would silently route events away; Publish must refuse.
func TestPublishExpectsOwnStream(t *testing.T) {
	ctx := testCtx(t)
	_, _, js := natstest.Run(t, embedded.Options{})
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FOREIGN", Subjects: []string{"facegate.errors.>"}}); err != nil {
		t.Fatal(err)
	}
	subj, _ := bus.ErrorsSubject("embedder")
	ev := &facegatev1.ErrorEvent{SchemaVersion: events.SchemaVersion, Service: "embedder", Code: "decode_failed"}
	_, err := bus.Publish(ctx, js, subj, ev, nil)
	if err == nil || !strings.Contains(err.Error(), bus.StreamErrors) {
		t.Fatalf("publish into a foreign stream: %v, want a refusal naming %s", err, bus.StreamErrors)
	}
	t.Logf("refused: %v", err)
	if n := msgCount(t, js, "FOREIGN"); n != 0 {
		t.Fatalf("FOREIGN stored %d messages", n)
	}
}

func TestPublishHeadersAndDecode(t *testing.T) {
	ctx := testCtx(t)
	_, _, js := natstest.Run(t, embedded.Options{})
	ensure(t, js, bus.DefaultConfig())
	subj, _ := bus.FramesSubject("hq", "lobby-1")
	frame := testFrame(9, []byte("\xff\xd8jpeg"))

	hdr := nats.Header{}
	fh := bus.FrameHeaders{Site: "hq", Camera: "lobby-1", Seq: 9, CaptureTime: frame.GetMeta().GetCaptureTime().AsTime()}
	fh.Apply(hdr)
	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	bus.HeaderCarrier(hdr).Set(bus.HeaderTraceParent, traceparent)
	before := len(hdr)

	ack, err := bus.Publish(ctx, js, subj, frame, hdr)
	if err != nil {
		t.Fatal(err)
	}
	if len(hdr) != before || hdr.Get(bus.HeaderSchema) != "" || hdr.Get(bus.HeaderMsgID) != "" {
		t.Fatalf("Publish modified the caller's header: %v", hdr)
	}
	s, _ := js.Stream(ctx, bus.StreamFrames)
	m, err := s.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(bus.HeaderSchema); got != "facegate.v1.Frame;v=1" {
		t.Errorf("%s = %q", bus.HeaderSchema, got)
	}
	data, _ := proto.MarshalOptions{Deterministic: true}.Marshal(frame)
	if got, want := m.Header.Get(bus.HeaderMsgID), bus.ContentMsgID(subj, data); got != want {
		t.Errorf("%s = %q, want the content id %q", bus.HeaderMsgID, got, want)
	}
	if got := m.Header.Get(bus.HeaderTraceParent); got != traceparent {
		t.Errorf("traceparent = %q, want %q", got, traceparent)
	}
	got, err := bus.ParseFrameHeaders(m.Header)
	if err != nil {
		t.Fatal(err)
	}
	if got.Site != fh.Site || got.Camera != fh.Camera || got.Seq != fh.Seq || !got.CaptureTime.Equal(fh.CaptureTime) {
		t.Errorf("frame headers %+v, want %+v", got, fh)
	}

	var decoded facegatev1.Frame
	if err := bus.DecodeMsg(m.Header, m.Data, &decoded); err != nil {
		t.Fatalf("DecodeMsg: %v", err)
	}
	if !proto.Equal(&decoded, frame) || !bytes.Equal(decoded.GetImage(), frame.GetImage()) {
		t.Fatalf("decoded frame differs from the published one")
	}
	var wrong facegatev1.Decision
	err = bus.DecodeMsg(m.Header, m.Data, &wrong)
	if !errors.Is(err, bus.ErrWrongType) {
		t.Fatalf("decoding a Frame message as a Decision: %v, want ErrWrongType", err)
	}
}

func TestFrameHeadersRefuseBadValues(t *testing.T) {
	good := func() nats.Header {
		h := nats.Header{}
		bus.FrameHeaders{Site: "hq", Camera: "lobby-1", Seq: 3, CaptureTime: captured}.Apply(h)
		return h
	}
	if _, err := bus.ParseFrameHeaders(good()); err != nil {
		t.Fatalf("good headers: %v", err)
	}
	for name, mutate := range map[string]func(nats.Header){
		"no site":    func(h nats.Header) { h.Del(bus.HeaderSite) },
		"dotted cam": func(h nats.Header) { h.Set(bus.HeaderCamera, "a.b") },
		"bad seq":    func(h nats.Header) { h.Set(bus.HeaderSeq, "-1") },
		"bad time":   func(h nats.Header) { h.Set(bus.HeaderCaptureTime, "yesterday") },
		"no time":    func(h nats.Header) { h.Del(bus.HeaderCaptureTime) },
		"wrong case": func(h nats.Header) { h["Facegate-Site"] = h[bus.HeaderSite]; h.Del(bus.HeaderSite) },
	} {
		h := good()
		mutate(h)
		if _, err := bus.ParseFrameHeaders(h); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for _, v := range []string{"", "facegate.v1.Frame", "facegate.v1.Frame;v=x", ";v=1", "facegate.v1.Frame;v=-1"} {
		if _, _, err := bus.ParseSchemaHeader(v); err == nil {
			t.Errorf("ParseSchemaHeader(%q) accepted", v)
		}
	}
	name, v, err := bus.ParseSchemaHeader(bus.SchemaHeader("facegate.v1.Decision", 3))
	if err != nil || name != "facegate.v1.Decision" || v != 3 {
		t.Errorf("schema header round trip: %q %d %v", name, v, err)
	}
}
