package events_test

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/events"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// topLevel is every message published on the bus or written to the audit
// log; each must carry schema_version.
func topLevel() []proto.Message {
	return []proto.Message{
		&facegatev1.Frame{}, &facegatev1.FrameMeta{}, &facegatev1.FaceEvent{}, &facegatev1.Claim{},
		&facegatev1.Decision{}, &facegatev1.EnrolmentChange{}, &facegatev1.AuditRecord{}, &facegatev1.ErrorEvent{},
	}
}

func TestEveryEventHasSchemaVersionOne(t *testing.T) {
	for _, m := range topLevel() {
		fd := m.ProtoReflect().Descriptor().Fields().ByNumber(1)
		name := m.ProtoReflect().Descriptor().FullName()
		if fd == nil || fd.Name() != "schema_version" || fd.Kind() != protoreflect.Uint32Kind {
			t.Errorf("%s: field 1 is %v, want uint32 schema_version", name, fd)
		}
		if err := events.CheckSchemaVersion(m); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("%s with schema_version 0: %v, want ErrInvalid", name, err)
		}
	}
	if _, ok := events.SchemaVersionOf(&facegatev1.Box{}); ok {
		t.Error("Box reports a schema_version")
	}
}

// Events live for months in JetStream and services upgrade one at a time, so
// every event must survive a consumer that predates some of its fields.
func TestUnknownFieldsSurviveRoundTrip(t *testing.T) {
	// Fields numbered far above anything in use, of every wire type.
	var unknown []byte
	unknown = protowire.AppendVarint(protowire.AppendTag(unknown, 1001, protowire.VarintType), 300)
	unknown = protowire.AppendFixed32(protowire.AppendTag(unknown, 1002, protowire.Fixed32Type), math.Float32bits(0.25))
	unknown = protowire.AppendFixed64(protowire.AppendTag(unknown, 1003, protowire.Fixed64Type), 42)
	unknown = protowire.AppendString(protowire.AppendTag(unknown, 1004, protowire.BytesType), "from-a-newer-producer")

	for _, m := range topLevel() {
		name := m.ProtoReflect().Descriptor().FullName()
		m.ProtoReflect().Set(m.ProtoReflect().Descriptor().Fields().ByNumber(1), protoreflect.ValueOfUint32(events.SchemaVersion))
		known, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		wire := append(append([]byte(nil), known...), unknown...)

		got := m.ProtoReflect().Type().New().Interface()
		if err := proto.Unmarshal(wire, got); err != nil {
			t.Fatalf("%s: decode with unknown fields: %v", name, err)
		}
		if v, _ := events.SchemaVersionOf(got); v != events.SchemaVersion {
			t.Errorf("%s: known field lost next to unknown ones (schema_version %d)", name, v)
		}
		if !bytes.Equal(got.ProtoReflect().GetUnknown(), unknown) {
			t.Errorf("%s: unknown fields after decode = %x, want %x", name, got.ProtoReflect().GetUnknown(), unknown)
		}
		again, err := proto.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, wire) {
			t.Errorf("%s: re-encoding changed the bytes:\n got %x\nwant %x", name, again, wire)
		}
	}
}

// Decisions and audit records are kept for months and exported; they must
// not be able to carry an embedding or a face image. The check walks every
// field reachable from them, so adding one anywhere fails here.
func TestNoBiometricsInDecisionsOrAudit(t *testing.T) {
	for _, m := range []proto.Message{&facegatev1.Decision{}, &facegatev1.AuditRecord{}} {
		walkFields(m.ProtoReflect().Descriptor(), string(m.ProtoReflect().Descriptor().Name()), map[protoreflect.FullName]bool{}, func(path string, fd protoreflect.FieldDescriptor) {
			name := strings.ToLower(string(fd.Name()))
			if fd.IsList() && (fd.Kind() == protoreflect.FloatKind || fd.Kind() == protoreflect.DoubleKind) {
				t.Errorf("%s is a repeated float: decisions and audit records must not carry vectors", path)
			}
			for _, banned := range []string{"embedding", "crop", "image", "jpeg", "template", "vector"} {
				if strings.Contains(name, banned) {
					t.Errorf("%s: field name suggests biometric data (%q)", path, banned)
				}
			}
			if fd.Kind() == protoreflect.BytesKind && !strings.HasSuffix(name, "hash") {
				t.Errorf("%s is a bytes field that is not a hash", path)
			}
		})
	}
	// And the check itself catches what it should: FaceEvent has both.
	var found []string
	walkFields((&facegatev1.FaceEvent{}).ProtoReflect().Descriptor(), "FaceEvent", map[protoreflect.FullName]bool{}, func(path string, fd protoreflect.FieldDescriptor) {
		if fd.IsList() && fd.Kind() == protoreflect.FloatKind || fd.Kind() == protoreflect.BytesKind {
			found = append(found, path)
		}
	})
	if len(found) != 2 {
		t.Fatalf("walk found %v in FaceEvent, want the embedding and the crop", found)
	}
}

func walkFields(md protoreflect.MessageDescriptor, path string, seen map[protoreflect.FullName]bool, visit func(string, protoreflect.FieldDescriptor)) {
	if seen[md.FullName()] {
		return
	}
	seen[md.FullName()] = true
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		p := path + "." + string(fd.Name())
		visit(p, fd)
		if fd.IsMap() {
			visit(p+".value", fd.MapValue())
			if fd.MapValue().Message() != nil {
				walkFields(fd.MapValue().Message(), p+".value", seen, visit)
			}
			continue
		}
		if fd.Message() != nil {
			walkFields(fd.Message(), p, seen, visit)
		}
	}
}

func unit(dim int) []float32 {
	v := make([]float32, dim)
	for i := range v {
		v[i] = float32(1 / math.Sqrt(float64(dim)))
	}
	return v
}

func faceEvent() *facegatev1.FaceEvent {
	return &facegatev1.FaceEvent{
		SchemaVersion: events.SchemaVersion,
		Frame:         &facegatev1.FrameRef{Site: "hq", Camera: "c1", Sequence: 1, CaptureTime: timestamppb.Now()},
		ModelId:       "dlib-resnet34-128",
		Faces: []*facegatev1.Face{
			{Index: 0, Box: &facegatev1.Box{X: 1, Y: 2, Width: 50, Height: 60}, Embedding: unit(128), EmbeddingDimension: 128},
			// Rejected by the quality gate: no embedding.
			{Index: 1, Box: &facegatev1.Box{X: 200, Y: 2, Width: 10, Height: 12}, Quality: &facegatev1.Quality{
				RejectionReasons: []facegatev1.RejectionReason{facegatev1.RejectionReason_REJECTION_REASON_TOO_SMALL}}},
		},
	}
}

func TestValidateFaceEvent(t *testing.T) {
	if err := events.ValidateFaceEvent(faceEvent()); err != nil {
		t.Fatalf("valid event: %v", err)
	}
	cases := map[string]func(*facegatev1.FaceEvent){
		"no version":      func(e *facegatev1.FaceEvent) { e.SchemaVersion = 0 },
		"no frame":        func(e *facegatev1.FaceEvent) { e.Frame = nil },
		"no camera":       func(e *facegatev1.FaceEvent) { e.Frame.Camera = "" },
		"no capture time": func(e *facegatev1.FaceEvent) { e.Frame.CaptureTime = nil },
		"no model":        func(e *facegatev1.FaceEvent) { e.ModelId = "" },
		"index mismatch":  func(e *facegatev1.FaceEvent) { e.Faces[1].Index = 0 },
		"no box":          func(e *facegatev1.FaceEvent) { e.Faces[0].Box = nil },
		"empty box":       func(e *facegatev1.FaceEvent) { e.Faces[0].Box.Width = 0 },
		"NaN box":         func(e *facegatev1.FaceEvent) { e.Faces[0].Box.X = float32(math.NaN()) },
		"dim mismatch":    func(e *facegatev1.FaceEvent) { e.Faces[0].EmbeddingDimension = 127 },
		"no dim":          func(e *facegatev1.FaceEvent) { e.Faces[0].EmbeddingDimension = 0 },
		"huge dim":        func(e *facegatev1.FaceEvent) { e.Faces[0].EmbeddingDimension = events.MaxEmbeddingDimension + 1 },
		"NaN component":   func(e *facegatev1.FaceEvent) { e.Faces[0].Embedding[5] = float32(math.NaN()) },
		"inf component":   func(e *facegatev1.FaceEvent) { e.Faces[0].Embedding[5] = float32(math.Inf(1)) },
		"not normalised":  func(e *facegatev1.FaceEvent) { e.Faces[0].Embedding[0] += 0.05 },
		"zero vector":     func(e *facegatev1.FaceEvent) { e.Faces[0].Embedding = make([]float32, 128) },
		"version too new": func(e *facegatev1.FaceEvent) { e.SchemaVersion = events.SchemaVersion + 1 },
	}
	for name, mutate := range cases {
		ev := faceEvent()
		mutate(ev)
		err := events.ValidateFaceEvent(ev)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !errors.Is(err, events.ErrInvalid) && !errors.Is(err, events.ErrUnsupportedVersion) {
			t.Errorf("%s: error %v wraps neither ErrInvalid nor ErrUnsupportedVersion", name, err)
		}
	}
	// Float32 normalisation leaves ~1e-7 of error; that must pass.
	ev := faceEvent()
	ev.Faces[0].Embedding[0] *= 1 + 1e-6
	if err := events.ValidateFaceEvent(ev); err != nil {
		t.Fatalf("float32 rounding rejected: %v", err)
	}
}

func TestValidateDecision(t *testing.T) {
	person, dist := "p-1", float32(0.3)
	valid := func() *facegatev1.Decision {
		return &facegatev1.Decision{
			SchemaVersion: events.SchemaVersion, DecisionId: "d-1", Site: "hq", Door: "main",
			Outcome: facegatev1.Outcome_OUTCOME_GRANT, Mode: facegatev1.Mode_MODE_VERIFY, ClaimId: "c-1",
			PersonId: &person, Distance: &dist, Threshold: 0.6,
		}
	}
	if err := events.ValidateDecision(valid()); err != nil {
		t.Fatalf("valid decision: %v", err)
	}
	noFace := valid()
	noFace.Outcome, noFace.PersonId, noFace.Distance = facegatev1.Outcome_OUTCOME_NO_FACE, nil, nil
	if err := events.ValidateDecision(noFace); err != nil {
		t.Fatalf("NO_FACE without person or distance: %v", err)
	}
	cases := map[string]func(*facegatev1.Decision){
		"no id":                func(d *facegatev1.Decision) { d.DecisionId = "" },
		"no door":              func(d *facegatev1.Decision) { d.Door = "" },
		"unspecified outcome":  func(d *facegatev1.Decision) { d.Outcome = facegatev1.Outcome_OUTCOME_UNSPECIFIED },
		"unspecified mode":     func(d *facegatev1.Decision) { d.Mode = facegatev1.Mode_MODE_UNSPECIFIED },
		"grant without person": func(d *facegatev1.Decision) { d.PersonId = nil },
		"NaN distance":         func(d *facegatev1.Decision) { nan := float32(math.NaN()); d.Distance = &nan },
		"inf threshold":        func(d *facegatev1.Decision) { d.Threshold = float32(math.Inf(1)) },
		"verify without claim": func(d *facegatev1.Decision) { d.ClaimId = "" },
	}
	for name, mutate := range cases {
		d := valid()
		mutate(d)
		if err := events.ValidateDecision(d); !errors.Is(err, events.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

func TestEnrolmentRoute(t *testing.T) {
	cases := []struct {
		ch   *facegatev1.EnrolmentChange
		kind events.EnrolmentKind
		key  string
	}{
		{&facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_PersonUpsert{PersonUpsert: &facegatev1.PersonUpsert{PersonId: "p1"}}}, events.KindPerson, "p1"},
		{&facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_PersonDelete{PersonDelete: &facegatev1.PersonDelete{PersonId: "p1"}}}, events.KindPerson, "p1"},
		{&facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_PhotoAdd{PhotoAdd: &facegatev1.PhotoAdd{PersonId: "p1", PhotoId: "x"}}}, events.KindPhoto, "p1"},
		{&facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_PhotoRemove{PhotoRemove: &facegatev1.PhotoRemove{PersonId: "p1", PhotoId: "x"}}}, events.KindPhoto, "p1"},
		{&facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_GroupMembership{GroupMembership: &facegatev1.GroupMembership{PersonId: "p1", GroupId: "g"}}}, events.KindMembership, "p1"},
		{&facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_GroupUpsert{GroupUpsert: &facegatev1.GroupUpsert{GroupId: "g"}}}, events.KindGroup, "g"},
		{&facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_GroupDelete{GroupDelete: &facegatev1.GroupDelete{GroupId: "g"}}}, events.KindGroup, "g"},
		{&facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_DoorUpsert{DoorUpsert: &facegatev1.DoorUpsert{Site: "hq", Door: "d"}}}, events.KindDoor, "hq"},
		{&facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_DoorDelete{DoorDelete: &facegatev1.DoorDelete{Site: "hq", Door: "d"}}}, events.KindDoor, "hq"},
		{&facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_PolicyUpsert{PolicyUpsert: &facegatev1.PolicyUpsert{PolicyId: "pol"}}}, events.KindPolicy, "pol"},
		{&facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_PolicyDelete{PolicyDelete: &facegatev1.PolicyDelete{PolicyId: "pol"}}}, events.KindPolicy, "pol"},
	}
	// Every oneof case of the schema must have a route.
	oneof := (&facegatev1.EnrolmentChange{}).ProtoReflect().Descriptor().Oneofs().ByName("change")
	if oneof.Fields().Len() != len(cases) {
		t.Fatalf("the change oneof has %d cases, the test covers %d", oneof.Fields().Len(), len(cases))
	}
	for _, c := range cases {
		kind, key, err := events.EnrolmentRoute(c.ch)
		if err != nil || kind != c.kind || key != c.key {
			t.Errorf("%T: route %s/%s (%v), want %s/%s", c.ch.GetChange(), kind, key, err, c.kind, c.key)
		}
	}
	// A change kind from a newer schema arrives as an unknown field.
	newer := protowire.AppendString(protowire.AppendTag([]byte{0x08, 0x01}, 99, protowire.BytesType), "\x0a\x01x")
	var ch facegatev1.EnrolmentChange
	if err := proto.Unmarshal(newer, &ch); err != nil {
		t.Fatal(err)
	}
	if _, _, err := events.EnrolmentRoute(&ch); !errors.Is(err, events.ErrInvalid) {
		t.Fatalf("change of an unknown kind: %v, want ErrInvalid", err)
	}
}
