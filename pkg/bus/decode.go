package bus

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/facegate/facegate/pkg/events"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// Reasons a payload is refused; a *DecodeError wraps exactly one of them.
var (
	// ErrMalformed: not valid protobuf for the type, no schema_version, or
	// structurally invalid (see package events).
	ErrMalformed = errors.New("malformed payload")
	// ErrUnsupportedSchema: a schema_version newer than this code knows.
	ErrUnsupportedSchema = events.ErrUnsupportedVersion
	// ErrWrongType: the facegate-schema header names another message type.
	ErrWrongType = errors.New("payload is another message type")
)

// DecodeError is a refused payload. A consumer should terminate the message
// (it will not decode better on redelivery) and report it on the errors
// subject. The error text never includes payload bytes.
type DecodeError struct {
	Type   protoreflect.FullName // the message type decoded into
	Size   int                   // payload length in bytes
	Reason error                 // ErrMalformed, ErrUnsupportedSchema or ErrWrongType
	Err    error                 // the underlying cause
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("bus: decode %s from %d bytes: %v: %v", e.Type, e.Size, e.Reason, e.Err)
}

// Unwrap exposes both the reason and the cause to errors.Is and errors.As.
func (e *DecodeError) Unwrap() []error { return []error{e.Reason, e.Err} }

// Decode decodes data into msg and checks its schema_version. Fields msg's
// type does not know are kept and are written back by a later Marshal, so a
// service can pass on events from newer producers without losing data.
func Decode(data []byte, msg proto.Message) error {
	name := msg.ProtoReflect().Descriptor().FullName()
	if err := proto.Unmarshal(data, msg); err != nil {
		return &DecodeError{Type: name, Size: len(data), Reason: ErrMalformed, Err: err}
	}
	if err := events.CheckSchemaVersion(msg); err != nil {
		reason := ErrMalformed
		if errors.Is(err, events.ErrUnsupportedVersion) {
			reason = ErrUnsupportedSchema
		}
		return &DecodeError{Type: name, Size: len(data), Reason: reason, Err: err}
	}
	return nil
}

// DecodeMsg is Decode for a message with headers: when the facegate-schema
// header is present it must name msg's type, because protobuf will happily
// decode one message's bytes as another.
func DecodeMsg(hdr nats.Header, data []byte, msg proto.Message) error {
	name := msg.ProtoReflect().Descriptor().FullName()
	if v := hdr.Get(HeaderSchema); v != "" {
		got, _, err := ParseSchemaHeader(v)
		if err != nil {
			return &DecodeError{Type: name, Size: len(data), Reason: ErrMalformed, Err: err}
		}
		if got != string(name) {
			return &DecodeError{Type: name, Size: len(data), Reason: ErrWrongType,
				Err: fmt.Errorf("header %s names %s", HeaderSchema, got)}
		}
	}
	return Decode(data, msg)
}

// DecodeFaceEvent decodes and validates a FaceEvent (events.ValidateFaceEvent).
func DecodeFaceEvent(data []byte) (*facegatev1.FaceEvent, error) {
	ev := &facegatev1.FaceEvent{}
	if err := Decode(data, ev); err != nil {
		return nil, err
	}
	if err := events.ValidateFaceEvent(ev); err != nil {
		return nil, &DecodeError{Type: ev.ProtoReflect().Descriptor().FullName(), Size: len(data), Reason: ErrMalformed, Err: err}
	}
	return ev, nil
}

// DecodeDecision decodes and validates a Decision (events.ValidateDecision).
func DecodeDecision(data []byte) (*facegatev1.Decision, error) {
	d := &facegatev1.Decision{}
	if err := Decode(data, d); err != nil {
		return nil, err
	}
	if err := events.ValidateDecision(d); err != nil {
		return nil, &DecodeError{Type: d.ProtoReflect().Descriptor().FullName(), Size: len(data), Reason: ErrMalformed, Err: err}
	}
	return d, nil
}
