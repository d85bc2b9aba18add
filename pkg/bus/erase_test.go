package bus_test

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/events"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

func change(seq uint64, c any) *facegatev1.EnrolmentChange {
	ch := &facegatev1.EnrolmentChange{
		SchemaVersion: events.SchemaVersion,
		ChangeId:      "chg-" + string(rune('a'+seq)),
		Sequence:      seq,
		Time:          timestamppb.New(captured),
		Actor:         &facegatev1.Actor{Kind: facegatev1.ActorKind_ACTOR_KIND_USER, Id: "admin-1"},
	}
	switch c := c.(type) {
	case *facegatev1.PersonUpsert:
		ch.Change = &facegatev1.EnrolmentChange_PersonUpsert{PersonUpsert: c}
	case *facegatev1.PersonDelete:
		ch.Change = &facegatev1.EnrolmentChange_PersonDelete{PersonDelete: c}
	case *facegatev1.PhotoAdd:
		ch.Change = &facegatev1.EnrolmentChange_PhotoAdd{PhotoAdd: c}
	case *facegatev1.GroupMembership:
		ch.Change = &facegatev1.EnrolmentChange_GroupMembership{GroupMembership: c}
	case *facegatev1.GroupUpsert:
		ch.Change = &facegatev1.EnrolmentChange_GroupUpsert{GroupUpsert: c}
	default:
		panic("unsupported change in test")
	}
	return ch
}

// Erasing a person removes every earlier enrolment change about them and
// nothing else, and leaves the deletion itself as a tombstone.
func TestPurgePerson(t *testing.T) {
	ctx := testCtx(t)
	_, _, js := natstest.Run(t, embedded.Options{})
	ensure(t, js, bus.DefaultConfig())

	publish := func(ch *facegatev1.EnrolmentChange) uint64 {
		t.Helper()
		kind, key, err := events.EnrolmentRoute(ch)
		if err != nil {
			t.Fatal(err)
		}
		subj, err := bus.EnrolmentsSubject(kind, key)
		if err != nil {
			t.Fatal(err)
		}
		ack, err := bus.Publish(ctx, js, subj, ch, nil)
		if err != nil {
			t.Fatalf("publish %s: %v", subj, err)
		}
		return ack.Sequence
	}
	var erased, kept []uint64
	erased = append(erased,
		publish(change(1, &facegatev1.PersonUpsert{PersonId: "p-a", DisplayName: "Ada", BadgeIds: []string{"b-1"}})),
		publish(change(2, &facegatev1.PhotoAdd{PersonId: "p-a", PhotoId: "ph-1", ContentSha256: "aa"})))
	kept = append(kept,
		publish(change(3, &facegatev1.PersonUpsert{PersonId: "p-b", DisplayName: "Bob"})),
		publish(change(4, &facegatev1.PhotoAdd{PersonId: "p-b", PhotoId: "ph-2", ContentSha256: "bb"})),
		publish(change(5, &facegatev1.GroupUpsert{GroupId: "staff"})))
	erased = append(erased,
		publish(change(6, &facegatev1.GroupMembership{PersonId: "p-a", GroupId: "staff", Member: true})))
	// A person whose id merely starts like p-a's must not be touched.
	kept = append(kept, publish(change(7, &facegatev1.PersonUpsert{PersonId: "p-ab"})))
	tombstone := publish(change(8, &facegatev1.PersonDelete{PersonId: "p-a"}))
	kept = append(kept, tombstone)

	if err := bus.PurgePerson(ctx, js, "p-a", tombstone); err != nil {
		t.Fatalf("PurgePerson: %v", err)
	}
	s, err := js.Stream(ctx, bus.StreamEnrolments)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range erased {
		if m, err := s.GetMsg(ctx, seq); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Errorf("seq %d survived the erasure (subject %v, err %v)", seq, subjectOf(m), err)
		}
	}
	for _, seq := range kept {
		if _, err := s.GetMsg(ctx, seq); err != nil {
			t.Errorf("seq %d was removed by p-a's erasure: %v", seq, err)
		}
	}
	m, err := s.GetMsg(ctx, tombstone)
	if err != nil {
		t.Fatal(err)
	}
	var del facegatev1.EnrolmentChange
	if err := bus.DecodeMsg(m.Header, m.Data, &del); err != nil || del.GetPersonDelete().GetPersonId() != "p-a" {
		t.Fatalf("tombstone: %v, %v", &del, err)
	}
	if n := msgCount(t, js, bus.StreamEnrolments); n != uint64(len(kept)) {
		t.Fatalf("ENROLMENTS holds %d messages, want %d", n, len(kept))
	}

	if err := bus.PurgePerson(ctx, js, "p.a", 0); !errors.Is(err, bus.ErrInvalidToken) {
		t.Fatalf("PurgePerson with a dotted id: %v, want ErrInvalidToken", err)
	}
}

func subjectOf(m *jetstream.RawStreamMsg) string {
	if m == nil {
		return ""
	}
	return m.Subject
}
