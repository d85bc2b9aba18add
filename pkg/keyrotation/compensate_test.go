package keyrotation

import (
	"context"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	dt "github.com/facegate/facegate/pkg/directory/directorytest"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

// A PersonDelete that lands between the person check and the republish
// (on the person's subject, which the photo subject's sequence check does
// not see) is detected after the publish: the copy is undone with a
// PhotoRemove after it and deleted, so neither a live directory nor a
// replay keeps the deleted person's template.
func TestKeysRotateCompensatesDeleteInWindow(t *testing.T) {
	ctx := context.Background()
	_, _, js := natstest.Run(t, embedded.Options{})
	if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	kp := dt.Keys(t)
	vec := make([]float32, 128)
	vec[0] = 1
	dt.Publish(t, js, dt.Person("carol", "hq"), dt.PhotoAdd(t, kp, "s", "carol", "p-c1", vec))
	oldKey := kp.ActiveKeyID()
	if _, err := kp.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	fired := false
	cfg := Config{Keys: kp, JetStream: js, Log: zaptest.NewLogger(t), beforePublish: func() {
		if !fired {
			fired = true
			dt.Publish(t, js, &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PersonDelete{PersonDelete: &fv1.PersonDelete{PersonId: "carol"}}})
		}
	}}
	sum, err := Rotate(ctx, cfg, RotateOptions{NoNewKey: true})
	if err != nil {
		t.Fatal(err)
	}
	if !fired || sum.Stream.Compensated != 1 || sum.Stream.Republished != 0 || sum.Stream.Dropped != 1 {
		t.Fatalf("summary: %+v", sum.Stream)
	}
	if u, _ := sum.After.Key(oldKey); u.Total() != 0 {
		t.Fatalf("old key still used: %s", u.Uses())
	}
	// The stream: no PhotoAdd left, and after the PersonDelete a
	// PhotoRemove of the photo (what undoes the copy for live directories).
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	sc, err := scanStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.adds) != 0 {
		t.Fatalf("%d PhotoAdds left in the stream", len(sc.adds))
	}
	s, _ := js.Stream(ctx, bus.StreamEnrolments)
	m, err := s.GetLastMsgForSubject(ctx, "facegate.enrolments.photo.carol")
	if err != nil {
		t.Fatal(err)
	}
	ch := &fv1.EnrolmentChange{}
	if err := bus.Decode(m.Data, ch); err != nil || ch.GetPhotoRemove().GetPhotoId() != "p-c1" {
		t.Fatalf("last change on the photo subject: %v %v", ch, err)
	}
}
