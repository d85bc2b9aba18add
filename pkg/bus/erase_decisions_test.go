package bus_test

import (
	"fmt"
	"testing"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/events"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

func TestEraseDecisions(t *testing.T) {
	ctx := testCtx(t)
	_, _, js := natstest.Run(t, embedded.Options{})
	ensure(t, js, bus.DefaultConfig())

	publish := func(i int, person string) {
		t.Helper()
		d := &facegatev1.Decision{
			SchemaVersion: events.SchemaVersion, DecisionId: fmt.Sprintf("d-%d", i), Site: "hq", Door: "main",
			Camera: "lobby", Outcome: facegatev1.Outcome_OUTCOME_DENY, Mode: facegatev1.Mode_MODE_IDENTIFY,
			Threshold: 0.4,
		}
		if person != "" {
			d.PersonId = &person
		}
		subj, err := bus.DecisionsSubject("hq", "main")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bus.Publish(ctx, js, subj, d, nil); err != nil {
			t.Fatal(err)
		}
	}
	// 600 decisions (more than one fetch batch): every 7th names p-erase,
	// others name p-erase-not (a prefix look-alike), p-keep or nobody.
	want := 0
	for i := 0; i < 600; i++ {
		switch {
		case i%7 == 0:
			publish(i, "p-erase")
			want++
		case i%7 == 1:
			publish(i, "p-erase-not")
		case i%7 == 2:
			publish(i, "")
		default:
			publish(i, "p-keep")
		}
	}
	n, err := bus.EraseDecisions(ctx, js, "p-erase")
	if err != nil {
		t.Fatal(err)
	}
	if n != want {
		t.Fatalf("deleted %d, want %d", n, want)
	}
	s, err := js.Stream(ctx, bus.StreamDecisions)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if int(info.State.Msgs) != 600-want {
		t.Fatalf("%d messages left, want %d", info.State.Msgs, 600-want)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		var d facegatev1.Decision
		if err := bus.Decode(m.Data, &d); err != nil {
			t.Fatal(err)
		}
		if d.GetPersonId() == "p-erase" {
			t.Fatalf("seq %d still names the erased person", seq)
		}
	}
	// Idempotent: a second run finds nothing.
	if n, err := bus.EraseDecisions(ctx, js, "p-erase"); err != nil || n != 0 {
		t.Fatalf("second run: %d, %v", n, err)
	}
	if _, err := bus.EraseDecisions(ctx, js, "bad.id"); err == nil {
		t.Fatal("invalid person id accepted")
	}
}

func TestEraseDecisionsEmptyStream(t *testing.T) {
	ctx := testCtx(t)
	_, _, js := natstest.Run(t, embedded.Options{})
	ensure(t, js, bus.DefaultConfig())
	if n, err := bus.EraseDecisions(ctx, js, "p-1"); err != nil || n != 0 {
		t.Fatalf("empty stream: %d, %v", n, err)
	}
}
