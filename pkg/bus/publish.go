package bus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/facegate/facegate/pkg/events"
)

// ErrTooLarge is wrapped when a message is refused for its size, by the
// server's max_payload or by the stream's MaxMsgSize.
var ErrTooLarge = errors.New("message too large")

// Publish encodes msg, publishes it on subject and waits for JetStream's
// acknowledgement, so a nil error means the message is stored (or was a
// duplicate: ack.Duplicate reports that, and the message is not stored
// twice).
//
// hdr is copied, not modified. Publish adds HeaderSchema and, unless hdr
// already has one, a Nats-Msg-Id derived from the subject and the encoded
// bytes, so re-sending the same event is de-duplicated. A producer that may
// rebuild an event rather than resend the same bytes (an embedder
// re-processing a redelivered frame stamps a new processed_time) must set
// its own Nats-Msg-Id from the event's identity, e.g. FrameMsgID.
//
// The message must carry a supported schema_version, and subject must be a
// concrete facegate subject; the publish also asserts that the subject lands
// in the stream this package assigns it, which catches a foreign stream
// capturing facegate subjects.
func Publish(ctx context.Context, js jetstream.JetStream, subject string, msg proto.Message, hdr nats.Header) (*jetstream.PubAck, error) {
	if msg == nil {
		return nil, fmt.Errorf("bus: publish to %s: message is nil", subject)
	}
	name := msg.ProtoReflect().Descriptor().FullName()
	stream, err := StreamOf(subject)
	if err != nil {
		return nil, fmt.Errorf("bus: publish %s: %w", name, err)
	}
	if err := events.CheckSchemaVersion(msg); err != nil {
		return nil, fmt.Errorf("bus: publish %s to %s: %w", name, subject, err)
	}
	version, _ := events.SchemaVersionOf(msg)
	// Deterministic so that the content-derived message id is stable.
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("bus: publish %s to %s: encode: %w", name, subject, err)
	}

	h := make(nats.Header, len(hdr)+2)
	for k, vs := range hdr {
		h[k] = append([]string(nil), vs...)
	}
	h.Set(HeaderSchema, SchemaHeader(string(name), version))
	if h.Get(HeaderMsgID) == "" {
		h.Set(HeaderMsgID, ContentMsgID(subject, data))
	}

	ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data, Header: h}, jetstream.WithExpectStream(stream))
	if err != nil {
		var apiErr *jetstream.APIError
		switch {
		case errors.Is(err, nats.ErrMaxPayload):
			return nil, fmt.Errorf("bus: publish %s to %s: %d-byte payload plus headers exceeds the server's max_payload of %d bytes: %w: %w",
				name, subject, len(data), js.Conn().MaxPayload(), ErrTooLarge, err)
		case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum:
			return nil, fmt.Errorf("bus: publish %s to %s: %d-byte payload exceeds stream %s's MaxMsgSize: %w: %w",
				name, subject, len(data), stream, ErrTooLarge, err)
		}
		return nil, fmt.Errorf("bus: publish %s to %s (stream %s): %w", name, subject, stream, err)
	}
	return ack, nil
}

// ContentMsgID is the Nats-Msg-Id Publish uses when the caller sets none: the
// first 128 bits of SHA-256 over the subject and the payload, in hex.
func ContentMsgID(subject string, data []byte) string {
	h := sha256.New()
	h.Write([]byte(subject))
	h.Write([]byte{0})
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil)[:16])
}
