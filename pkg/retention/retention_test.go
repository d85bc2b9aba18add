package retention_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/retention"
)

func setup(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, _, js := natstest.Run(t, embedded.Options{})
	cfg := bus.DefaultConfig()
	// Long enough that the server's own MaxAge removes nothing during the
	// test: what disappears is the janitor's doing.
	cfg.Frames.MaxAge, cfg.Faces.MaxAge = time.Hour, time.Hour
	if err := bus.EnsureStreams(context.Background(), js, cfg); err != nil {
		t.Fatal(err)
	}
	return js
}

type published struct {
	subject string
	seq     uint64
}

func publishAll(t *testing.T, js jetstream.JetStream, tag string) []published {
	t.Helper()
	var out []published
	for _, site := range []string{"site-a", "site-b", "site-a2"} {
		for _, subj := range []string{
			"facegate.frames." + site + ".cam-1", "facegate.faces." + site + ".cam-1", "facegate.decisions." + site + ".door-1",
			"facegate.frames." + site + ".cam-2",
		} {
			ack, err := js.Publish(context.Background(), subj, []byte(tag))
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, published{subj, ack.Sequence})
		}
	}
	return out
}

func exists(t *testing.T, js jetstream.JetStream, p published) bool {
	t.Helper()
	stream, err := bus.StreamOf(p.subject)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.GetMsg(context.Background(), p.seq)
	return err == nil
}

func TestJanitorPurgesOnlyTheSitesOldMessages(t *testing.T) {
	js := setup(t)
	old := publishAll(t, js, "old")
	// The server stamps messages with its clock; the boundary lies strictly
	// between the old and the new ones.
	time.Sleep(20 * time.Millisecond)
	boundary := time.Now()
	time.Sleep(20 * time.Millisecond)
	fresh := publishAll(t, js, "new")

	policy, err := retention.ParseConfig([]byte(`{"site-a": {"frames": "10s", "faces": "2m", "decisions": "30d"}}`))
	if err != nil {
		t.Fatal(err)
	}
	// The janitor's clock is set so that the retention ends exactly at the
	// boundary: now - retention = boundary. One janitor per stream, since
	// the retentions differ.
	var now time.Time
	clock := func() time.Time { return now }
	for _, step := range []struct {
		stream string
		only   retention.Site
		keep   time.Duration
	}{
		{bus.StreamFrames, retention.Site{Frames: policy["site-a"].Frames}, 10 * time.Second},
		{bus.StreamFaces, retention.Site{Faces: policy["site-a"].Faces}, 2 * time.Minute},
		{bus.StreamDecisions, retention.Site{Decisions: policy["site-a"].Decisions}, 30 * 24 * time.Hour},
	} {
		reg := prometheus.NewRegistry()
		j, err := retention.New(retention.Config{JetStream: js, Policy: retention.Policy{"site-a": step.only}, Registerer: reg, Now: clock})
		if err != nil {
			t.Fatal(err)
		}
		now = boundary.Add(step.keep)
		if err := j.Sweep(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, p := range old {
			st, _ := bus.StreamOf(p.subject)
			if st != step.stream {
				continue
			}
			want := !strings.Contains(p.subject, ".site-a.")
			if got := exists(t, js, p); got != want {
				t.Errorf("after the %s sweep: old %s (seq %d) exists=%v, want %v", step.stream, p.subject, p.seq, got, want)
			}
		}
		if n := testutil.ToFloat64(purges(t, reg, step.stream, "site-a")); n != 1 {
			t.Errorf("facegate_retention_purges_total{stream=%s,site=site-a} = %v", step.stream, n)
		}
	}
	for _, p := range fresh {
		if !exists(t, js, p) {
			t.Errorf("new %s (seq %d) was purged", p.subject, p.seq)
		}
	}

	// Later, with no message of site-a newer than the cutoff, every
	// site-a message goes, and one published afterwards stays.
	j, err := retention.New(retention.Config{JetStream: js, Policy: policy, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	now = time.Now().Add(31 * 24 * time.Hour)
	if err := j.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, p := range append(old, fresh...) {
		want := !strings.Contains(p.subject, ".site-a.")
		if got := exists(t, js, p); got != want {
			t.Errorf("far future: %s (seq %d) exists=%v, want %v", p.subject, p.seq, got, want)
		}
	}
	ack, err := js.Publish(context.Background(), "facegate.decisions.site-a.door-1", []byte("later"))
	if err != nil {
		t.Fatal(err)
	}
	now = time.Now().Add(-time.Hour) // a clock behind: nothing is old
	if err := j.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !exists(t, js, published{"facegate.decisions.site-a.door-1", ack.Sequence}) {
		t.Error("a message newer than the cutoff was purged")
	}
	// No probe consumers are left behind.
	for _, stream := range []string{bus.StreamFrames, bus.StreamFaces, bus.StreamDecisions} {
		s, _ := js.Stream(context.Background(), stream)
		info, err := s.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Consumers != 0 {
			t.Errorf("%s has %d consumers left", stream, info.State.Consumers)
		}
	}
}

func purges(t *testing.T, reg *prometheus.Registry, stream, site string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	for _, mf := range mfs {
		if mf.GetName() != "facegate_retention_purges_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["stream"] == stream && labels["site"] == site {
				c.Add(m.GetCounter().GetValue())
			}
		}
	}
	return c
}

func TestJanitorRunStopsWithContext(t *testing.T) {
	js := setup(t)
	old := publishAll(t, js, "old")
	time.Sleep(20 * time.Millisecond)
	j, err := retention.New(retention.Config{JetStream: js, Policy: retention.Policy{"site-b": {Decisions: time.Millisecond}}, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if j.Interval() != time.Hour {
		t.Fatalf("interval %v", j.Interval())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	// Run sweeps at once: poll for the effect, then stop.
	deadline := time.Now().Add(30 * time.Second)
	target := published{"facegate.decisions.site-b.door-1", 0}
	for _, p := range old {
		if p.subject == target.subject {
			target = p
		}
	}
	for exists(t, js, target) {
		if time.Now().After(deadline) {
			t.Fatal("the first sweep never happened")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestDefaultInterval(t *testing.T) {
	js := setup(t)
	for _, tc := range []struct {
		p    retention.Policy
		want time.Duration
	}{
		{retention.Policy{"a": {Frames: 10 * time.Second, Decisions: 30 * 24 * time.Hour}}, 2500 * time.Millisecond},
		{retention.Policy{"a": {Decisions: 30 * 24 * time.Hour}}, time.Minute},
		{retention.Policy{"a": {Frames: time.Second}}, time.Second},
	} {
		j, err := retention.New(retention.Config{JetStream: js, Policy: tc.p})
		if err != nil {
			t.Fatal(err)
		}
		if j.Interval() != tc.want {
			t.Errorf("%v: interval %v, want %v", tc.p, j.Interval(), tc.want)
		}
	}
	if _, err := retention.New(retention.Config{JetStream: js, Policy: retention.Policy{"a.b": {Frames: time.Second}}}); err == nil {
		t.Error("site with a dot accepted")
	}
	if _, err := retention.New(retention.Config{JetStream: js, Policy: retention.Policy{"a": {Frames: -time.Second}}}); err == nil {
		t.Error("negative retention accepted")
	}
}

func TestParseDuration(t *testing.T) {
	day := 24 * time.Hour
	for in, want := range map[string]time.Duration{
		"10s": 10 * time.Second, "2m": 2 * time.Minute, "30d": 30 * day, "2w": 14 * day, "1d12h": 36 * time.Hour,
		"1w1d": 8 * day, "1.5h": 90 * time.Minute, "3650d": retention.MaxRetention,
	} {
		got, err := retention.ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0s", "-1s", "d", "10", "3651d", "1x", "1d-1h", "99999999999d", "1d1w", " 1s", "1h ", "2562048h"} {
		if d, err := retention.ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) = %v, accepted", bad, d)
		}
	}
}

func TestParseConfig(t *testing.T) {
	p, err := retention.ParseConfig([]byte(`{"hq": {"frames": "5s", "decisions": "30d"}, "lab": {}}`))
	if err != nil {
		t.Fatal(err)
	}
	if p["hq"].Frames != 5*time.Second || p["hq"].Faces != 0 || p["hq"].Decisions != 30*24*time.Hour || len(p) != 2 {
		t.Fatalf("%+v", p)
	}
	for _, bad := range []string{
		``, `[]`, `null`, `{"hq": {"decision": "30d"}}`, `{"hq": {"frames": "forever"}}`, `{"h.q": {}}`, `{"hq": {"frames": 10}}`, `{"hq": []}`,
	} {
		if _, err := retention.ParseConfig([]byte(bad)); err == nil {
			t.Errorf("ParseConfig(%s) accepted", bad)
		}
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"10s", "30d", "2w3d4h", "1.5h", "", "d", "9999999999w"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := retention.ParseDuration(s)
		if err == nil && (d <= 0 || d > retention.MaxRetention) {
			t.Fatalf("ParseDuration(%q) = %v", s, d)
		}
	})
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"hq": {"frames": "10s", "faces": "2m", "decisions": "30d"}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := retention.ParseConfig(data)
		if err != nil {
			return
		}
		for site, r := range p {
			if err := bus.ValidateToken("site", site); err != nil {
				t.Fatalf("site %q accepted: %v", site, err)
			}
			for _, d := range []time.Duration{r.Frames, r.Faces, r.Decisions} {
				if d < 0 || d > retention.MaxRetention {
					t.Fatalf("%s: retention %v", site, d)
				}
			}
		}
		_ = fmt.Sprint(p)
	})
}
