package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/directory"
	dt "github.com/facegate/facegate/pkg/directory/directorytest"
	"github.com/facegate/facegate/pkg/keyrotation"
	"github.com/facegate/facegate/pkg/photostore"
	"github.com/facegate/facegate/pkg/sealed"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

const keysSpace = "dlib-resnet34-128+mirror"

func keysVector(r *rand.Rand) []float32 {
	v := make([]float32, 128)
	var ss float64
	for i := range v {
		v[i] = float32(r.NormFloat64())
		ss += float64(v[i]) * float64(v[i])
	}
	for i := range v {
		v[i] /= float32(math.Sqrt(ss))
	}
	return v
}

// keysReplay replays the stream into a fresh directory and returns its
// templates (photo id -> vector), read back from the snapshot it writes.
func keysReplay(t *testing.T, url, keysDir string) map[string][]float32 {
	t.Helper()
	ctx := context.Background()
	_, js := natstest.Connect(t, url)
	kp := dt.OpenKeys(t, keysDir)
	snapDir := t.TempDir()
	d, err := directory.New(ctx, directory.Config{JetStream: js, Keys: kp, Spaces: []directory.Space{{Name: keysSpace, Dim: 128}},
		SnapshotDir: snapDir, Log: zap.NewNop(), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := d.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteSnapshot(ctx); err != nil {
		t.Fatal(err)
	}
	snap, err := directory.ReadSnapshotFile(ctx, kp, filepath.Join(snapDir, directory.SnapshotFile))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	for _, sp := range snap.Spaces {
		for _, tpl := range sp.Templates {
			if out[tpl.ID], err = directory.DecodeVector(tpl.Vector, sp.Dim); err != nil {
				t.Fatal(err)
			}
		}
	}
	return out
}

func keysJSON(t *testing.T, r run, v any) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("stdout is not JSON: %q: %v", r.stdout, err)
	}
}

func TestKeysCommand(t *testing.T) {
	ctx := context.Background()
	srv, _, js := natstest.Run(t, embedded.Options{})
	if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	keysDir := dt.KeyDir(t)
	kp := dt.OpenKeys(t, keysDir)
	oldKey := kp.ActiveKeyID()
	data := t.TempDir()
	photoDir, snapFile := keyrotation.DataLayout(data)
	photos, err := photostore.New(photoDir, kp)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(7, 8))
	vecs := map[string][]float32{}
	dt.Publish(t, js, dt.Person("alice", "hq"), dt.Person("bob", "hq"))
	for _, p := range [][2]string{{"alice", "p-a1"}, {"bob", "p-b1"}, {"bob", "p-b2"}} {
		vecs[p[1]] = keysVector(r)
		if _, err := photos.Put(ctx, p[0], p[1], []byte("photo "+p[1])); err != nil {
			t.Fatal(err)
		}
		dt.Publish(t, js, dt.PhotoAdd(t, kp, keysSpace, p[0], p[1], vecs[p[1]]))
	}
	dt.Publish(t, js, &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PhotoRemove{PhotoRemove: &fv1.PhotoRemove{PersonId: "bob", PhotoId: "p-b2"}}})
	// The snapshot, as a directory writes it.
	if err := os.MkdirAll(filepath.Dir(snapFile), 0o700); err != nil {
		t.Fatal(err)
	}
	snapBlob, err := sealed.Seal(ctx, kp, []byte(`{"version":1}`), directory.SnapshotContext)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(snapFile, snapBlob, 0o600); err != nil {
		t.Fatal(err)
	}
	stores := []string{"--keys", keysDir, "--data", data, "--nats-url", srv.URL()}
	keys := func(args ...string) run { return facegate(t, append(append([]string{"keys"}, args...), stores...)...) }

	var st keyrotation.Status
	keysJSON(t, keys("status", "--json"), &st)
	if u, _ := st.Key(oldKey); !u.Active || u.Stream != 3 || u.Photos != 3 || u.Snapshots != 1 {
		t.Fatalf("status before: %+v", st)
	}
	if r := keys("status"); r.code != 0 || !strings.Contains(r.stdout, oldKey) || !strings.Contains(r.stdout, "STREAM TEMPLATES") {
		t.Fatalf("status table: exit %d %q %s", r.code, r.stdout, r.stderr)
	}

	var sum keyrotation.Summary
	keysJSON(t, keys("rotate", "--json"), &sum)
	newKey := sum.Active
	if !sum.Created || newKey == oldKey || sum.Stream.Republished != 2 || sum.Stream.Dropped != 1 ||
		sum.Photos.Rewrapped != 3 || sum.Snapshots.Rewrapped != 1 {
		t.Fatalf("rotate summary: %+v", sum)
	}
	keysJSON(t, keys("status", "--json"), &st)
	if u, _ := st.Key(oldKey); u.Total() != 0 {
		t.Fatalf("old key still used after rotate: %s", u.Uses())
	}
	if u, _ := st.Key(newKey); !u.Active || u.Stream != 2 || u.Photos != 3 || u.Snapshots != 1 {
		t.Fatalf("new key after rotate: %+v", u)
	}
	// The removed photo stays removed; the others match bit for bit.
	tpls := keysReplay(t, srv.URL(), keysDir)
	if len(tpls) != 2 || !slices.Equal(tpls["p-a1"], vecs["p-a1"]) || !slices.Equal(tpls["p-b1"], vecs["p-b1"]) {
		t.Fatalf("replayed templates after rotate: %d (%v)", len(tpls), tpls["p-b2"] != nil)
	}

	// A second rotate with nothing to do changes nothing.
	s, _ := js.Stream(ctx, bus.StreamEnrolments)
	before, _ := s.Info(ctx)
	photoBefore, _ := os.ReadFile(filepath.Join(photos.PersonDir("alice"), "p-a1"))
	var sum2 keyrotation.Summary
	keysJSON(t, keys("rotate", "--no-new-key", "--json"), &sum2)
	after, _ := s.Info(ctx)
	photoAfter, _ := os.ReadFile(filepath.Join(photos.PersonDir("alice"), "p-a1"))
	if sum2.Created || sum2.Active != newKey || sum2.Stream.Republished+sum2.Stream.Dropped+sum2.Photos.Rewrapped+sum2.Snapshots.Rewrapped != 0 ||
		after.State.LastSeq != before.State.LastSeq || !bytes.Equal(photoAfter, photoBefore) {
		t.Fatalf("second rotate changed something: %+v (last seq %d -> %d)", sum2, before.State.LastSeq, after.State.LastSeq)
	}

	// A service that has not reloaded the keys seals under the old one:
	// retire refuses and names it; rotate finishes; retire succeeds.
	stalePhotos, err := photostore.New(photoDir, kp) // kp still has oldKey active
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stalePhotos.Put(ctx, "alice", "p-a9", []byte("late")); err != nil {
		t.Fatal(err)
	}
	if r := keys("retire", "--key", oldKey); r.code != 5 || !strings.Contains(r.stderr, "1 photo file") {
		t.Fatalf("retire while in use: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(keysDir, oldKey+".kek")); err != nil {
		t.Fatalf("refused retire removed the key: %v", err)
	}
	if r := facegate(t, "keys", "retire", "--keys", keysDir, "--key", oldKey, "--data", data); r.code != 2 {
		t.Fatalf("retire without the stream: exit %d, stderr %q", r.code, r.stderr)
	}
	keysJSON(t, keys("rotate", "--json"), &sum2)
	if sum2.Created || !sum2.Resumed || sum2.Photos.Rewrapped != 1 {
		t.Fatalf("rotate after a stale write: %+v", sum2)
	}
	var ret keyrotation.RetireResult
	keysJSON(t, keys("retire", "--key", oldKey, "--json"), &ret)
	if !ret.Removed || ret.Forced {
		t.Fatalf("retire: %+v", ret)
	}
	fresh := dt.OpenKeys(t, keysDir)
	if got := fresh.KeyIDs(); !slices.Equal(got, []string{newKey}) {
		t.Fatalf("keys after retire: %v", got)
	}
	freshPhotos, _ := photostore.New(photoDir, fresh)
	for _, p := range [][2]string{{"alice", "p-a1"}, {"bob", "p-b1"}, {"alice", "p-a9"}} {
		if _, err := freshPhotos.Get(ctx, p[0], p[1]); err != nil {
			t.Fatalf("photo %s after retire: %v", p[1], err)
		}
	}
	if _, err := sealed.Open(ctx, fresh, mustRead(t, snapFile), directory.SnapshotContext); err != nil {
		t.Fatalf("snapshot after retire: %v", err)
	}
	if tpls := keysReplay(t, srv.URL(), keysDir); len(tpls) != 2 || !slices.Equal(tpls["p-a1"], vecs["p-a1"]) {
		t.Fatalf("replayed templates after retire: %d", len(tpls))
	}

	// --force shreds: a photo left under a key that is then removed no
	// longer opens; everything else does.
	keysJSON(t, keys("rotate", "--json"), &sum2)
	third := sum2.Active
	if !sum2.Created || third == newKey {
		t.Fatalf("third rotate: %+v", sum2)
	}
	if _, err := freshPhotos.Put(ctx, "bob", "p-b9", []byte("left behind")); err != nil { // fresh still wraps under newKey
		t.Fatal(err)
	}
	keysJSON(t, keys("retire", "--key", newKey, "--force", "--json"), &ret)
	if !ret.Removed || !ret.Forced || ret.Shredded.Photos != 1 || ret.Shredded.Total() != 1 {
		t.Fatalf("forced retire: %+v", ret)
	}
	last := dt.OpenKeys(t, keysDir)
	lastPhotos, _ := photostore.New(photoDir, last)
	if _, err := lastPhotos.Get(ctx, "bob", "p-b9"); !errors.Is(err, sealed.ErrUnknownKey) {
		t.Fatalf("shredded photo: %v, want ErrUnknownKey", err)
	}
	if _, err := lastPhotos.Get(ctx, "alice", "p-a1"); err != nil {
		t.Fatalf("photo after forced retire: %v", err)
	}
	if r := facegate(t, "keys", "status"); r.code != 2 {
		t.Fatalf("status without --keys: exit %d", r.code)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
