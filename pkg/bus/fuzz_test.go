package bus_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/events"
)

// checkDecodeResult is the contract every decode helper keeps on arbitrary
// input: no panic; an error is a *DecodeError with a known reason and the
// input's size; a success validates, and survives an encode/decode round
// trip unchanged.
func checkDecodeResult(t *testing.T, data []byte, msg proto.Message, err error, validate func(proto.Message) error, decode func([]byte) (proto.Message, error)) {
	t.Helper()
	if err != nil {
		var de *bus.DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("error %T %v is not a *DecodeError", err, err)
		}
		if !errors.Is(err, bus.ErrMalformed) && !errors.Is(err, bus.ErrUnsupportedSchema) {
			t.Fatalf("error %v has an unexpected reason", err)
		}
		if de.Size != len(data) {
			t.Fatalf("DecodeError.Size = %d, input is %d bytes", de.Size, len(data))
		}
		return
	}
	if err := validate(msg); err != nil {
		t.Fatalf("decoded message does not validate: %v", err)
	}
	again, err := proto.Marshal(msg)
	if err != nil {
		t.Fatalf("re-encode: %v", err)
	}
	back, err := decode(again)
	if err != nil {
		t.Fatalf("decoding the re-encoded message: %v", err)
	}
	if !proto.Equal(back, msg) {
		t.Fatal("round trip changed the message")
	}
}

func seedCorpus(f *testing.F, valid []byte) {
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x01})
	f.Add([]byte{0x08, 0x02})
	f.Add(append(append([]byte(nil), valid...), protowire.AppendTag(nil, 999, protowire.Fixed32Type)...))
	f.Add(protowire.AppendString(protowire.AppendTag([]byte{0x08, 0x01}, 2, protowire.BytesType), "\x0a\x02hq"))
}

func FuzzDecodeFaceEvent(f *testing.F) {
	valid, err := proto.Marshal(testFaceEvent(5))
	if err != nil {
		f.Fatal(err)
	}
	seedCorpus(f, valid)
	noFaces := testFaceEvent(6)
	noFaces.Faces = nil
	empty, err := proto.Marshal(noFaces)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(empty)
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := bus.DecodeFaceEvent(data)
		checkDecodeResult(t, data, ev, err,
			func(m proto.Message) error { return events.ValidateFaceEvent(ev) },
			func(b []byte) (proto.Message, error) { return bus.DecodeFaceEvent(b) })
	})
}

func FuzzDecodeDecision(f *testing.F) {
	valid, err := proto.Marshal(testDecision("d-fuzz"))
	if err != nil {
		f.Fatal(err)
	}
	seedCorpus(f, valid)
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := bus.DecodeDecision(data)
		checkDecodeResult(t, data, d, err,
			func(m proto.Message) error { return events.ValidateDecision(d) },
			func(b []byte) (proto.Message, error) { return bus.DecodeDecision(b) })
	})
}
