package directory

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	dt "github.com/facegate/facegate/pkg/directory/directorytest"
	"github.com/facegate/facegate/pkg/index"
	"github.com/facegate/facegate/pkg/policy"
	"github.com/facegate/facegate/pkg/sealed"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

const img = "face-api.js/examples/images/"

func space(t *testing.T) Space {
	name, dim := dt.Space(t)
	return Space{Name: name, Dim: dim}
}

func setup(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, _, js := natstest.Run(t, embedded.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	return js
}

// start creates a directory and runs it until the test ends.
func start(t *testing.T, cfg Config) *Directory {
	t.Helper()
	d := create(t, cfg)
	run(t, d)
	return d
}

func create(t *testing.T, cfg Config) *Directory {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = zaptest.NewLogger(t)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	d, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// run runs d until the returned stop is called (or the test ends) and
// waits for it to be ready.
func run(t *testing.T, d *Directory) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	if err := d.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	return stop
}

func waitApplied(t *testing.T, d *Directory, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.WaitApplied(ctx, seq); err != nil {
		t.Fatalf("WaitApplied(%d): %v (applied %d)", seq, err, d.Applied())
	}
}

// nearest identifies a probe image against the space's collection.
func nearest(t *testing.T, d *Directory, space Space, probe string) index.PersonHit {
	t.Helper()
	coll, err := d.Collection(space.Name)
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.Index().Search(context.Background(), coll, dt.Encoding(t, img+probe), index.SearchOptions{K: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Persons) == 0 {
		return index.PersonHit{}
	}
	return res.Persons[0]
}

func templatesOf(t *testing.T, d *Directory, space Space, person string) int {
	t.Helper()
	coll, _ := d.Collection(space.Name)
	l, err := d.Index().List(context.Background(), coll, index.ListOptions{Person: person})
	if err != nil {
		t.Fatal(err)
	}
	return len(l)
}

// enrol publishes the gallery most tests use: amy and sheldon with two
// photos each, at site hq.
func enrol(t *testing.T, js jetstream.JetStream, kp sealed.KeyProvider, sp Space) uint64 {
	return dt.Publish(t, js,
		dt.Person("amy", "hq", "B-AMY"), dt.Person("sheldon", "hq", "B-SHELDON"),
		dt.PhotoAdd(t, kp, sp.Name, "amy", "amy-1", dt.Encoding(t, img+"amy/amy1.png")),
		dt.PhotoAdd(t, kp, sp.Name, "amy", "amy-2", dt.Encoding(t, img+"amy/amy2.png")),
		dt.PhotoAdd(t, kp, sp.Name, "sheldon", "sheldon-1", dt.Encoding(t, img+"sheldon/sheldon1.png")),
		dt.PhotoAdd(t, kp, sp.Name, "sheldon", "sheldon-2", dt.Encoding(t, img+"sheldon/sheldon2.png")),
		dt.Member("amy", "staff"),
		dt.Door("hq", "front", fv1.Mode_MODE_IDENTIFY, "cam1"),
		dt.Policy("staff-front", "hq", []string{"staff"}, []string{"front"}, "", fv1.Effect_EFFECT_ALLOW, 0),
	)
}

func TestReplayThenFollow(t *testing.T) {
	sp := space(t)
	js := setup(t)
	kp := dt.Keys(t)
	seq := enrol(t, js, kp, sp)
	// Things to skip without stopping: garbage bytes, an invalid change, a
	// template of another space, a template sealed for another photo.
	if _, err := js.Publish(context.Background(), "facegate.enrolments.person.junk", []byte("\xff\x00 not protobuf")); err != nil {
		t.Fatal(err)
	}
	other := Space{Name: "other-model", Dim: sp.Dim}
	wrongCtx := dt.PhotoAdd(t, kp, sp.Name, "amy", "amy-x", dt.Encoding(t, img+"amy/amy4.png"))
	wrongCtx.GetPhotoAdd().PhotoId = "amy-y" // sealed for amy-x: must not open as amy-y
	seq = dt.Publish(t, js,
		dt.Policy("bad", "hq", []string{"staff"}, []string{"front"}, "Mon 25:00-26:00", fv1.Effect_EFFECT_ALLOW, 0),
		dt.PhotoAdd(t, kp, other.Name, "amy", "amy-other", dt.Encoding(t, img+"amy/amy4.png")),
		wrongCtx,
	)

	d := start(t, Config{JetStream: js, Keys: kp, Spaces: []Space{sp}})
	if d.Applied() < seq {
		t.Fatalf("ready at %d, stream had %d", d.Applied(), seq)
	}
	if n := d.TemplateCount(sp.Name); n != 4 {
		t.Fatalf("templates = %d, want 4", n)
	}
	if h := nearest(t, d, sp, "amy/amy4.png"); h.Person != "amy" {
		t.Fatalf("amy4 nearest = %+v", h)
	}
	if h := nearest(t, d, sp, "sheldon/sheldon3.png"); h.Person != "sheldon" {
		t.Fatalf("sheldon3 nearest = %+v", h)
	}
	p, ok := d.Person("amy")
	if !ok || len(p.Photos) != 4 || p.Groups[0] != "staff" {
		// amy-1, amy-2, amy-other (recorded, template skipped), amy-y (recorded, unseal failed)
		t.Fatalf("amy = %+v", p)
	}
	d.View(func(s *policy.State) {
		if v := s.Decide("amy", "hq", "front", time.Now()); !v.Allow || v.Rule != "staff-front" {
			t.Errorf("amy at front: %+v", v)
		}
		if _, ok := s.Policy("bad"); ok {
			t.Error("policy with a bad schedule was applied")
		}
	})
	if got := testutil.ToFloat64(d.m.malformed); got != 1 {
		t.Errorf("malformed = %v, want 1", got)
	}
	if got := testutil.ToFloat64(d.m.skipped.WithLabelValues("unknown_space")); got != 1 {
		t.Errorf("skipped unknown_space = %v", got)
	}
	if got := testutil.ToFloat64(d.m.skipped.WithLabelValues("unseal")); got != 1 {
		t.Errorf("skipped unseal = %v", got)
	}
	if got := testutil.ToFloat64(d.m.rejected); got != 2 { // bad policy, unsealable template
		t.Errorf("rejected = %v, want 2", got)
	}
	if got := testutil.ToFloat64(d.m.templates.WithLabelValues(sp.Name)); got != 4 {
		t.Errorf("templates gauge = %v", got)
	}

	// Follow: a new person appears, a photo goes, a person is deleted.
	seq = dt.Publish(t, js, dt.Person("leonard", "hq"),
		dt.PhotoAdd(t, kp, sp.Name, "leonard", "leonard-1", dt.Encoding(t, img+"leonard/leonard1.png")))
	waitApplied(t, d, seq)
	if h := nearest(t, d, sp, "leonard/leonard3.png"); h.Person != "leonard" {
		t.Fatalf("leonard3 nearest = %+v", h)
	}
	seq = dt.Publish(t, js, &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PhotoRemove{PhotoRemove: &fv1.PhotoRemove{PersonId: "amy", PhotoId: "amy-1"}}})
	waitApplied(t, d, seq)
	if n := templatesOf(t, d, sp, "amy"); n != 1 {
		t.Fatalf("amy has %d templates after removing one of 2", n)
	}
	seq = dt.Publish(t, js, &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PersonDelete{PersonDelete: &fv1.PersonDelete{PersonId: "sheldon"}}})
	waitApplied(t, d, seq)
	if n := templatesOf(t, d, sp, "sheldon"); n != 0 {
		t.Fatalf("sheldon has %d templates after deletion", n)
	}
	if _, ok := d.Person("sheldon"); ok {
		t.Fatal("sheldon still in the state")
	}
	if got := testutil.ToFloat64(d.m.appliedSeq); got != float64(seq) {
		t.Errorf("applied gauge = %v, want %d", got, seq)
	}
	// A person changing site moves their templates with them.
	seq = dt.Publish(t, js, dt.Person("leonard", "annex"))
	waitApplied(t, d, seq)
	coll, _ := d.Collection(sp.Name)
	if l, _ := d.Index().List(context.Background(), coll, index.ListOptions{Person: "leonard"}); len(l) != 1 || l[0].Site != "annex" {
		t.Fatalf("leonard's templates: %+v", l)
	}
}

func TestSnapshotRestart(t *testing.T) {
	sp := space(t)
	js := setup(t)
	kp := dt.Keys(t)
	snapDir := t.TempDir()
	seq := enrol(t, js, kp, sp)
	cfg := Config{JetStream: js, Keys: kp, Spaces: []Space{sp}, SnapshotDir: snapDir, SnapshotEvery: 3}
	d1 := create(t, cfg)
	stop := run(t, d1)
	waitApplied(t, d1, seq)
	stop() // writes a final snapshot
	snap, err := ReadSnapshotFile(context.Background(), kp, filepath.Join(snapDir, SnapshotFile))
	if err != nil {
		t.Fatal(err)
	}
	if snap.Sequence != seq || len(snap.Spaces) != 1 || len(snap.Spaces[0].Templates) != 4 {
		t.Fatalf("snapshot: seq %d (want %d), spaces %+v", snap.Sequence, seq, len(snap.Spaces))
	}

	// Changes while the directory is down.
	seq2 := dt.Publish(t, js, dt.Person("leonard", "hq"),
		dt.PhotoAdd(t, kp, sp.Name, "leonard", "leonard-1", dt.Encoding(t, img+"leonard/leonard1.png")))

	d2 := create(t, cfg)
	// Loaded from the snapshot before reading the stream.
	if d2.Applied() != seq || d2.TemplateCount(sp.Name) != 4 {
		t.Fatalf("after load: applied %d (want %d), templates %d", d2.Applied(), seq, d2.TemplateCount(sp.Name))
	}
	if got := testutil.ToFloat64(d2.m.snapshots.WithLabelValues("loaded")); got != 1 {
		t.Fatalf("snapshot loads = %v", got)
	}
	run(t, d2)
	waitApplied(t, d2, seq2)
	if h := nearest(t, d2, sp, "amy/amy4.png"); h.Person != "amy" {
		t.Fatalf("amy4 nearest after restart = %+v", h)
	}
	if h := nearest(t, d2, sp, "leonard/leonard3.png"); h.Person != "leonard" {
		t.Fatalf("leonard3 nearest after restart = %+v", h)
	}
	// Only the two changes after the snapshot were read from the stream.
	var applied float64
	for _, k := range []string{"person_upsert", "photo_add", "group_membership", "door_upsert", "policy_upsert"} {
		applied += testutil.ToFloat64(d2.m.applied.WithLabelValues(k))
	}
	if applied != 2 {
		t.Fatalf("restart applied %v changes from the stream, want 2", applied)
	}
	d2.View(func(s *policy.State) {
		if v := s.Decide("amy", "hq", "front", time.Now()); !v.Allow {
			t.Errorf("amy at front after restart: %+v", v)
		}
		if p, ok := s.PersonByBadge("B-SHELDON"); !ok || p.ID != "sheldon" {
			t.Error("badge lost in the snapshot")
		}
	})
}

func TestCorruptSnapshotReplays(t *testing.T) {
	sp := space(t)
	js := setup(t)
	kp := dt.Keys(t)
	snapDir := t.TempDir()
	seq := enrol(t, js, kp, sp)
	for name, content := range map[string][]byte{
		"garbage":   []byte("this is not a sealed snapshot"),
		"truncated": nil, // filled below from a real snapshot
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(snapDir, SnapshotFile)
			if content == nil {
				d := create(t, Config{JetStream: js, Keys: kp, Spaces: []Space{sp}, SnapshotDir: snapDir})
				stop := run(t, d)
				waitApplied(t, d, seq)
				if err := d.WriteSnapshot(context.Background()); err != nil {
					t.Fatal(err)
				}
				stop()
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				content = b[:len(b)-20]
			}
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			d := create(t, Config{JetStream: js, Keys: kp, Spaces: []Space{sp}, SnapshotDir: snapDir})
			if got := testutil.ToFloat64(d.m.snapshots.WithLabelValues("load_error")); got != 1 {
				t.Fatalf("load errors = %v", got)
			}
			if d.Applied() != 0 || d.TemplateCount(sp.Name) != 0 {
				t.Fatalf("corrupt snapshot partly loaded: applied %d, %d templates", d.Applied(), d.TemplateCount(sp.Name))
			}
			run(t, d)
			waitApplied(t, d, seq)
			if d.TemplateCount(sp.Name) != 4 {
				t.Fatalf("full replay: %d templates", d.TemplateCount(sp.Name))
			}
			if h := nearest(t, d, sp, "amy/amy4.png"); h.Person != "amy" {
				t.Fatalf("amy4 nearest = %+v", h)
			}
		})
	}
	// A snapshot sealed with a key the provider does not have is also
	// unusable, with an error naming the key.
	other := dt.Keys(t)
	if _, err := ReadSnapshotFile(context.Background(), other, filepath.Join(snapDir, SnapshotFile)); err == nil ||
		!errors.Is(err, sealed.ErrUnknownKey) {
		t.Fatalf("snapshot under another key: %v", err)
	}
}

func TestTombstoneErasesEverywhere(t *testing.T) {
	sp := space(t)
	js := setup(t)
	kp := dt.Keys(t)
	snapDir := t.TempDir()
	seq := enrol(t, js, kp, sp)
	cfg := Config{JetStream: js, Keys: kp, Spaces: []Space{sp}, SnapshotDir: snapDir, SnapshotEvery: 1000, SnapshotInterval: time.Hour}
	d := create(t, cfg)
	stop := run(t, d)
	waitApplied(t, d, seq)
	if err := d.WriteSnapshot(context.Background()); err != nil { // amy is in this snapshot
		t.Fatal(err)
	}
	snapPath := filepath.Join(snapDir, SnapshotFile)
	if snap, err := ReadSnapshotFile(context.Background(), kp, snapPath); err != nil || !snapshotHas(snap, "amy") {
		t.Fatalf("amy missing from the first snapshot (%v)", err)
	}

	// Erasure as the API does it: tombstone by hash, then purge by id.
	tomb := dt.Publish(t, js, dt.Tombstone("amy"))
	if err := bus.PurgePerson(context.Background(), js, "amy", 0); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, d, tomb)
	if n := templatesOf(t, d, sp, "amy"); n != 0 {
		t.Fatalf("amy has %d templates after the tombstone", n)
	}
	if _, ok := d.Person("amy"); ok {
		t.Fatal("amy is still in the state")
	}
	if h := nearest(t, d, sp, "amy/amy4.png"); h.Person == "amy" {
		t.Fatal("amy is still identified")
	}
	// The snapshot was rewritten right away (SnapshotEvery and the interval
	// are far off).
	snap, err := ReadSnapshotFile(context.Background(), kp, snapPath)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Sequence < tomb || snapshotHas(snap, "amy") {
		t.Fatalf("snapshot after erasure: seq %d (tombstone %d), still has amy: %v", snap.Sequence, tomb, snapshotHas(snap, "amy"))
	}
	if !snapshotHas(snap, "sheldon") {
		t.Fatal("sheldon lost from the snapshot")
	}
	stop()

	// Restart from the snapshot, and a replay from scratch of the purged
	// stream: amy is gone in both.
	d2 := start(t, cfg)
	if _, ok := d2.Person("amy"); ok || templatesOf(t, d2, sp, "amy") != 0 {
		t.Fatal("amy back after restart from the snapshot")
	}
	d3 := start(t, Config{JetStream: js, Keys: kp, Spaces: []Space{sp}})
	if _, ok := d3.Person("amy"); ok || templatesOf(t, d3, sp, "amy") != 0 {
		t.Fatal("amy back after a full replay")
	}
	if _, ok := d3.Person("sheldon"); !ok || templatesOf(t, d3, sp, "sheldon") != 2 {
		t.Fatal("sheldon lost in the full replay")
	}
}

// TestTombstoneAfterSnapshotReplay: the directory was down while the erasure
// happened; it loads a snapshot that still holds the person and must drop
// them when it replays the tombstone.
func TestTombstoneAfterSnapshotReplay(t *testing.T) {
	sp := space(t)
	js := setup(t)
	kp := dt.Keys(t)
	snapDir := t.TempDir()
	seq := enrol(t, js, kp, sp)
	cfg := Config{JetStream: js, Keys: kp, Spaces: []Space{sp}, SnapshotDir: snapDir}
	d := create(t, cfg)
	stop := run(t, d)
	waitApplied(t, d, seq)
	stop()
	tomb := dt.Publish(t, js, dt.Tombstone("sheldon"))
	if err := bus.PurgePerson(context.Background(), js, "sheldon", 0); err != nil {
		t.Fatal(err)
	}
	d2 := create(t, cfg)
	if _, ok := d2.Person("sheldon"); !ok {
		t.Fatal("precondition: the snapshot holds sheldon")
	}
	run(t, d2)
	waitApplied(t, d2, tomb)
	if _, ok := d2.Person("sheldon"); ok || templatesOf(t, d2, sp, "sheldon") != 0 {
		t.Fatal("sheldon survives the replayed tombstone")
	}
	snap, err := ReadSnapshotFile(context.Background(), kp, filepath.Join(snapDir, SnapshotFile))
	if err != nil {
		t.Fatal(err)
	}
	if snapshotHas(snap, "sheldon") {
		t.Fatal("sheldon survives in the rewritten snapshot")
	}
}

func snapshotHas(s *Snapshot, person string) bool {
	for _, p := range s.State.People {
		if p.ID == person {
			return true
		}
	}
	if len(s.State.Photos[person]) > 0 || len(s.State.Memberships[person]) > 0 {
		return true
	}
	for _, sp := range s.Spaces {
		for _, tm := range sp.Templates {
			if tm.Person == person {
				return true
			}
		}
	}
	return false
}

func TestConfigErrors(t *testing.T) {
	js := setup(t)
	kp := dt.Keys(t)
	for name, cfg := range map[string]Config{
		"no jetstream": {Keys: kp},
		"no keys":      {JetStream: js},
		"bad dim":      {JetStream: js, Keys: kp, Spaces: []Space{{Name: "x", Dim: 0}}},
		"twice":        {JetStream: js, Keys: kp, Spaces: []Space{{Name: "x", Dim: 4}, {Name: "x", Dim: 4}}},
		"collide":      {JetStream: js, Keys: kp, Spaces: []Space{{Name: "a+b", Dim: 4}, {Name: "a-b", Dim: 4}}},
		"bad name":     {JetStream: js, Keys: kp, Spaces: []Space{{Name: "9lives", Dim: 4}}},
	} {
		if _, err := New(context.Background(), cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if c, err := CollectionName("dlib-resnet34-128+mirror"); err != nil || c != "dlib-resnet34-128-mirror" {
		t.Errorf("CollectionName = %q, %v", c, err)
	}
}
