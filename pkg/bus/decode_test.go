package bus_test

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/events"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeValid(t *testing.T) {
	ev := testFaceEvent(3)
	got, err := bus.DecodeFaceEvent(mustMarshal(t, ev))
	if err != nil {
		t.Fatalf("DecodeFaceEvent: %v", err)
	}
	if !proto.Equal(got, ev) {
		t.Fatal("decoded face event differs")
	}
	d := testDecision("d-9")
	gotD, err := bus.DecodeDecision(mustMarshal(t, d))
	if err != nil {
		t.Fatalf("DecodeDecision: %v", err)
	}
	if !proto.Equal(gotD, d) {
		t.Fatal("decoded decision differs")
	}
}

func TestDecodeMalformed(t *testing.T) {
	// A crop whose bytes must never show up in an error message.
	const marker = "CROP-BYTES-MARKER"
	ev := testFaceEvent(1)
	ev.Faces[0].CropJpeg = []byte(marker + marker)
	valid := mustMarshal(t, ev)

	future := testFaceEvent(1)
	future.SchemaVersion = events.SchemaVersion + 1

	wrongDim := testFaceEvent(1)
	wrongDim.Faces[0].EmbeddingDimension = 512

	notUnit := testFaceEvent(1)
	for i := range notUnit.Faces[0].Embedding {
		notUnit.Faces[0].Embedding[i] *= 2
	}

	cases := []struct {
		name   string
		data   []byte
		reason error
	}{
		{"garbage", []byte{0xff, 0xff, 0xff, 0xff}, bus.ErrMalformed},
		{"truncated", valid[:len(valid)-5], bus.ErrMalformed},
		{"length past end", append(protowire.AppendVarint(protowire.AppendTag([]byte{0x08, 0x01}, 9, protowire.BytesType), 100), "abc"...), bus.ErrMalformed},
		{"reserved wire type", []byte{0x0f}, bus.ErrMalformed},
		{"empty (no schema_version)", nil, bus.ErrMalformed},
		{"schema_version as bytes", protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "1"), bus.ErrMalformed},
		{"newer schema", mustMarshal(t, future), bus.ErrUnsupportedSchema},
		{"embedding dimension mismatch", mustMarshal(t, wrongDim), bus.ErrMalformed},
		{"embedding not normalised", mustMarshal(t, notUnit), bus.ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := bus.DecodeFaceEvent(c.data)
			if err == nil {
				t.Fatal("decoded")
			}
			if !errors.Is(err, c.reason) {
				t.Fatalf("error %v does not wrap %v", err, c.reason)
			}
			var de *bus.DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %T is not a *DecodeError", err)
			}
			if de.Size != len(c.data) || de.Type != "facegate.v1.FaceEvent" {
				t.Fatalf("DecodeError reports %s from %d bytes, want facegate.v1.FaceEvent from %d", de.Type, de.Size, len(c.data))
			}
			if strings.Contains(err.Error(), marker) {
				t.Fatalf("error message leaks payload bytes: %q", err)
			}
		})
	}
}

func TestDecodeDecisionInvalid(t *testing.T) {
	grantNoPerson := testDecision("d-1")
	grantNoPerson.PersonId = nil
	verifyNoClaim := testDecision("d-1")
	verifyNoClaim.Mode = facegatev1.Mode_MODE_VERIFY
	noOutcome := testDecision("d-1")
	noOutcome.Outcome = facegatev1.Outcome_OUTCOME_UNSPECIFIED
	for name, d := range map[string]*facegatev1.Decision{
		"grant without person": grantNoPerson, "verify without claim": verifyNoClaim, "no outcome": noOutcome,
	} {
		if _, err := bus.DecodeDecision(mustMarshal(t, d)); !errors.Is(err, bus.ErrMalformed) || !errors.Is(err, events.ErrInvalid) {
			t.Errorf("%s: %v, want ErrMalformed wrapping events.ErrInvalid", name, err)
		}
	}
}

// A consumer built against this schema must pass on fields added by a newer
// producer: decode, re-encode, and the unknown field is still there.
func TestDecodeKeepsUnknownFields(t *testing.T) {
	d := testDecision("d-1")
	// Field 900 does not exist in this version of Decision.
	unknown := protowire.AppendString(protowire.AppendTag(nil, 900, protowire.BytesType), "added-by-v1.1-producer")
	data := append(mustMarshal(t, d), unknown...)

	got, err := bus.DecodeDecision(data)
	if err != nil {
		t.Fatalf("decision with an unknown field: %v", err)
	}
	if string(got.ProtoReflect().GetUnknown()) != string(unknown) {
		t.Fatalf("unknown fields after decode = %x, want %x", got.ProtoReflect().GetUnknown(), unknown)
	}
	again := mustMarshal(t, got)
	if !strings.Contains(string(again), string(unknown)) {
		t.Fatal("re-encoding dropped the unknown field")
	}
}
