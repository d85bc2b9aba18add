package natsauth

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/facegate/facegate/pkg/bus"
)

func TestReembedPermissionsExact(t *testing.T) {
	p, err := PermissionsFor(User{Name: "reembed", Role: RoleReembed})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"$JS.API.CONSUMER.CREATE.ENROLMENTS.>",
		"$JS.API.CONSUMER.DELETE.ENROLMENTS.*",
		"$JS.API.CONSUMER.INFO.ENROLMENTS.*",
		"$JS.API.CONSUMER.MSG.NEXT.ENROLMENTS.*",
		"$JS.API.DIRECT.GET.ENROLMENTS.facegate.enrolments.person.*",
		"$JS.API.STREAM.INFO.ENROLMENTS",
		"facegate.enrolments.photo.*",
	}
	if len(p.Publish) != len(want) {
		t.Fatalf("publish %v, want %v", p.Publish, want)
	}
	for i := range want {
		if p.Publish[i] != want[i] {
			t.Fatalf("publish %v, want %v", p.Publish, want)
		}
	}
	if len(p.Subscribe) != 1 || p.Subscribe[0] != "_INBOX.reembed.>" {
		t.Errorf("subscribe %v, want only the own inbox", p.Subscribe)
	}
	for _, u := range []User{{Name: "r", Role: RoleReembed, Site: "north"}, {Name: "r", Role: RoleReembed, Durable: "d"}} {
		if err := u.Validate(); !errors.Is(err, ErrInvalidUser) {
			t.Errorf("%+v: Validate = %v, want ErrInvalidUser", u, err)
		}
	}
}

// TestRealServerReembedRole runs what pkg/reembed does (replay ENROLMENTS
// with an ordered consumer, look at a person's last change, publish on the
// person's photo subject with an expected last subject sequence) as the
// reembed user on a real server started from the generated configuration,
// and every forbidden step next to it. (pkg/reembed's own tests run the
// whole re-embedding under this credential.)
func TestRealServerReembedRole(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	srv := startServer(t, Deployment{ServerName: "natsauth-reembed", Listen: "127.0.0.1:-1",
		StoreDir: filepath.Join(t.TempDir(), "js"),
		Users:    []User{{Name: "admin", Role: RoleAdmin}, {Name: "reembed", Role: RoleReembed}}})
	admin := srv.connect(t, "admin")
	if err := bus.EnsureStreams(ctx, admin.js, bus.DefaultConfig()); err != nil {
		t.Fatalf("admin EnsureStreams: %v", err)
	}
	person, photo := "facegate.enrolments.person.p1", "facegate.enrolments.photo.p1"
	for _, s := range []string{person, photo, "facegate.enrolments.group.g1"} {
		if _, err := admin.js.Publish(ctx, s, []byte("change on "+s)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.js.Publish(ctx, "facegate.frames.north.cam1", []byte("frame")); err != nil {
		t.Fatal(err)
	}
	r := srv.connect(t, "reembed")

	t.Run("replays the enrolment stream", func(t *testing.T) {
		cons, err := r.js.OrderedConsumer(ctx, bus.StreamEnrolments, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
		if err != nil {
			t.Fatalf("ordered consumer: %v", err)
		}
		var got []string
		for len(got) < 3 {
			m, err := cons.Next(jetstream.FetchMaxWait(3 * time.Second))
			if err != nil {
				t.Fatalf("read ENROLMENTS after %v: %v", got, err)
			}
			got = append(got, m.Subject())
		}
		if got[0] != person || got[1] != photo {
			t.Errorf("read %v", got)
		}
		r.expectNoViolation(t)
	})

	t.Run("looks at a person's last change", func(t *testing.T) {
		s, err := r.js.Stream(ctx, bus.StreamEnrolments)
		if err != nil {
			t.Fatalf("stream info: %v", err)
		}
		m, err := s.GetLastMsgForSubject(ctx, person)
		if err != nil || string(m.Data) != "change on "+person {
			t.Fatalf("last on %s: %v", person, err)
		}
		if _, err := s.GetLastMsgForSubject(ctx, "facegate.enrolments.person.nobody"); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Errorf("last on an empty person subject: %v, want ErrMsgNotFound", err)
		}
		r.expectNoViolation(t)
	})

	t.Run("publishes on photo subjects with an expected sequence", func(t *testing.T) {
		s, _ := admin.js.Stream(ctx, bus.StreamEnrolments)
		last, err := s.GetLastMsgForSubject(ctx, photo)
		if err != nil {
			t.Fatal(err)
		}
		msg := func(seq uint64) *nats.Msg {
			m := nats.NewMsg(photo)
			m.Data = []byte("re-embedded")
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(seq, 10))
			return m
		}
		if _, err := r.js.PublishMsg(ctx, msg(last.Sequence)); err != nil {
			t.Fatalf("publish PhotoAdd: %v", err)
		}
		// A stale expectation is the stream's refusal, not a permission
		// error: the concurrent change wins.
		var apiErr *jetstream.APIError
		if _, err := r.js.PublishMsg(ctx, msg(last.Sequence)); !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
			t.Errorf("stale publish: %v, want wrong last sequence", err)
		}
		r.expectNoViolation(t)
	})

	t.Run("changes nothing else", func(t *testing.T) {
		for _, s := range []string{
			person, "facegate.enrolments.person." + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			"facegate.enrolments.membership.p1", "facegate.enrolments.group.g1", "facegate.enrolments.door.north",
			"facegate.enrolments.policy.p", "facegate.enrolments.photo.p1.extra",
			"facegate.decisions.north.door1", "facegate.audit.reembed",
			"$JS.API.STREAM.PURGE.ENROLMENTS", "$JS.API.STREAM.MSG.DELETE.ENROLMENTS", "$JS.API.STREAM.DELETE.ENROLMENTS",
			"$JS.API.STREAM.UPDATE.ENROLMENTS", "$JS.API.STREAM.MSG.GET.ENROLMENTS",
			"$JS.API.CONSUMER.CREATE.FRAMES.spy", "$JS.API.CONSUMER.CREATE.DECISIONS.spy",
			"$JS.API.DIRECT.GET.FRAMES", "$JS.API.DIRECT.GET.ENROLMENTS.facegate.enrolments.membership.p1",
		} {
			r.denyPublish(t, s)
		}
		if _, err := r.js.OrderedConsumer(short(t, ctx), bus.StreamFrames, jetstream.OrderedConsumerConfig{}); err == nil {
			t.Error("reembed user read FRAMES")
		}
		r.denySubscribe(t, "facegate.enrolments.>", photo, admin)
		r.denySubscribe(t, "_INBOX.admin.>", "_INBOX.admin.x", admin)
	})
}
