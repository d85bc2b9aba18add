package bus_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
)

var allStreams = []string{bus.StreamFrames, bus.StreamFaces, bus.StreamClaims, bus.StreamDecisions, bus.StreamEnrolments, bus.StreamErrors, bus.StreamAudit}

func streamInfos(t *testing.T, js jetstream.JetStream) map[string]*jetstream.StreamInfo {
	t.Helper()
	ctx := testCtx(t)
	out := map[string]*jetstream.StreamInfo{}
	for _, name := range allStreams {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatalf("stream %s info: %v", name, err)
		}
		out[name] = info
	}
	return out
}

func TestEnsureStreamsCreatesWhatWasAsked(t *testing.T) {
	ctx := testCtx(t)
	_, _, js := natstest.Run(t, embedded.Options{})
	cfg := bus.DefaultConfig()
	if err := bus.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatalf("EnsureStreams: %v", err)
	}
	infos := streamInfos(t, js)
	want, err := cfg.StreamConfigs()
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != len(allStreams) {
		t.Fatalf("StreamConfigs returned %d streams, want %d", len(want), len(allStreams))
	}
	for _, w := range want {
		got := infos[w.Name].Config
		if !slices.Equal(got.Subjects, w.Subjects) || got.MaxAge != w.MaxAge || got.MaxBytes != w.MaxBytes ||
			got.Storage != w.Storage || got.Duplicates != w.Duplicates || got.Discard != w.Discard ||
			got.MaxMsgSize != w.MaxMsgSize || got.Retention != jetstream.LimitsPolicy || got.DenyPurge || got.DenyDelete {
			t.Errorf("stream %s on the server:\n got %+v\nwant %+v", w.Name, got, w)
		}
	}
	// The limits the design depends on.
	if c := infos[bus.StreamFrames].Config; c.MaxAge != 10*time.Second || c.Discard != jetstream.DiscardOld || c.MaxBytes <= 0 {
		t.Errorf("FRAMES: max age %v, discard %v, max bytes %d; want 10s, old, bounded", c.MaxAge, c.Discard, c.MaxBytes)
	}
	if c := infos[bus.StreamDecisions].Config; c.MaxAge != 90*24*time.Hour {
		t.Errorf("DECISIONS: max age %v, want 90 days", c.MaxAge)
	}
	if c := infos[bus.StreamEnrolments].Config; c.MaxAge != 0 || c.Storage != jetstream.FileStorage || c.Discard != jetstream.DiscardNew {
		t.Errorf("ENROLMENTS: max age %v, storage %v, discard %v; want forever, file, new", c.MaxAge, c.Storage, c.Discard)
	}
}

func TestEnsureStreamsIdempotentAndUpdates(t *testing.T) {
	ctx := testCtx(t)
	_, _, js := natstest.Run(t, embedded.Options{})
	cfg := bus.DefaultConfig()
	if err := bus.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatalf("first EnsureStreams: %v", err)
	}
	first := streamInfos(t, js)
	subj, _ := bus.DecisionsSubject("hq", "main-entrance")
	if _, err := bus.Publish(ctx, js, subj, testDecision("d-1"), nil); err != nil {
		t.Fatalf("publish: %v", err)
	}

	if err := bus.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatalf("second EnsureStreams: %v", err)
	}
	second := streamInfos(t, js)
	for _, name := range allStreams {
		a, b := first[name], second[name]
		if !a.Created.Equal(b.Created) {
			t.Errorf("%s was re-created (created %v, then %v)", name, a.Created, b.Created)
		}
		ac, bc := a.Config, b.Config
		ac.Metadata, bc.Metadata = nil, nil // server-managed version stamps
		if !configsEqual(ac, bc) {
			t.Errorf("%s config changed on an identical EnsureStreams:\n%+v\n%+v", name, ac, bc)
		}
	}
	if n := second[bus.StreamDecisions].State.Msgs; n != 1 {
		t.Fatalf("DECISIONS holds %d messages after the second EnsureStreams, want 1", n)
	}

	cfg.Decisions.MaxAge = 30 * 24 * time.Hour
	cfg.Frames.MaxBytes = 256 << 20
	cfg.Frames.MaxAge = 5 * time.Second
	cfg.Frames.Duplicates = 5 * time.Second
	if err := bus.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatalf("EnsureStreams with a changed config: %v", err)
	}
	third := streamInfos(t, js)
	if got := third[bus.StreamDecisions].Config.MaxAge; got != 30*24*time.Hour {
		t.Errorf("DECISIONS max age = %v after update, want 720h", got)
	}
	if c := third[bus.StreamFrames].Config; c.MaxBytes != 256<<20 || c.MaxAge != 5*time.Second || c.Duplicates != 5*time.Second {
		t.Errorf("FRAMES after update: max bytes %d, max age %v, duplicates %v", c.MaxBytes, c.MaxAge, c.Duplicates)
	}
	if !third[bus.StreamDecisions].Created.Equal(first[bus.StreamDecisions].Created) || third[bus.StreamDecisions].State.Msgs != 1 {
		t.Errorf("updating DECISIONS re-created it or lost its message")
	}
}

func configsEqual(a, b jetstream.StreamConfig) bool {
	return a.Name == b.Name && a.Description == b.Description && slices.Equal(a.Subjects, b.Subjects) &&
		a.Retention == b.Retention && a.MaxConsumers == b.MaxConsumers && a.MaxMsgs == b.MaxMsgs &&
		a.MaxBytes == b.MaxBytes && a.Discard == b.Discard && a.MaxAge == b.MaxAge &&
		a.MaxMsgsPerSubject == b.MaxMsgsPerSubject && a.MaxMsgSize == b.MaxMsgSize && a.Storage == b.Storage &&
		a.Replicas == b.Replicas && a.Duplicates == b.Duplicates && a.DenyDelete == b.DenyDelete &&
		a.DenyPurge == b.DenyPurge && a.AllowDirect == b.AllowDirect
}

// The server cannot move a stream between storage types; the error must say
// which stream refused.
func TestEnsureStreamsImmutableChange(t *testing.T) {
	ctx := testCtx(t)
	_, _, js := natstest.Run(t, embedded.Options{})
	cfg := bus.DefaultConfig()
	if err := bus.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Frames.Storage = jetstream.MemoryStorage
	err := bus.EnsureStreams(ctx, js, cfg)
	if err == nil {
		t.Fatal("changing FRAMES from file to memory storage succeeded; the server should refuse")
	}
	if !strings.Contains(err.Error(), bus.StreamFrames) {
		t.Fatalf("error %q does not name the stream", err)
	}
	t.Logf("refused as expected: %v", err)
}

func TestStreamConfigValidation(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*bus.Config)
		want   string
	}{
		{"enrolments age out", func(c *bus.Config) { c.Enrolments.MaxAge = time.Hour }, "ENROLMENTS"},
		{"enrolments in memory", func(c *bus.Config) { c.Enrolments.Storage = jetstream.MemoryStorage }, "storage must be file"},
		{"frames unbounded", func(c *bus.Config) { c.Frames.MaxBytes = -1 }, "bounded"},
		{"faces unbounded", func(c *bus.Config) { c.Faces.MaxBytes = -1 }, "bounded"},
		{"zero max bytes", func(c *bus.Config) { c.Claims.MaxBytes = 0 }, "MaxBytes 0"},
		{"negative age", func(c *bus.Config) { c.Decisions.MaxAge = -time.Second }, "negative"},
		{"tiny age", func(c *bus.Config) { c.Frames.MaxAge = 50 * time.Millisecond }, "minimum"},
		{"dup window > age", func(c *bus.Config) { c.Frames.Duplicates = time.Minute }, "longer than MaxAge"},
		{"no dup window", func(c *bus.Config) { c.Errors.Duplicates = 0 }, "de-duplication window"},
		{"replicas", func(c *bus.Config) { c.Decisions.Replicas = 0 }, "Replicas 0"},
		{"storage", func(c *bus.Config) { c.Faces.Storage = 7 }, "storage type"},
		{"msg size", func(c *bus.Config) { c.Claims.MaxMsgSize = 0 }, "MaxMsgSize"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := bus.DefaultConfig()
			c.mutate(&cfg)
			_, err := cfg.StreamConfigs()
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, bus.ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q: want ErrInvalidConfig mentioning %q", err, c.want)
			}
		})
	}
	if _, err := bus.DefaultConfig().StreamConfigs(); err != nil {
		t.Fatalf("DefaultConfig is invalid: %v", err)
	}
}
