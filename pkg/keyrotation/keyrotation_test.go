package keyrotation_test

import (
	"bytes"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

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

const testSpace = "dlib-resnet34-128+mirror"

// fixture is a small enrolled system: two people with sealed templates in
// the stream, their photos in a photo store, a directory snapshot.
type fixture struct {
	js       jetstream.JetStream
	keysDir  string
	kp       *sealed.FileKeyProvider
	oldKey   string
	data     string
	photos   *photostore.Store
	snapshot string
	vecs     map[string][]float32 // photo id -> vector
	images   map[string][]byte    // person/photo -> photo bytes
}

func unitVector(r *rand.Rand) []float32 {
	v := make([]float32, 128)
	var ss float64
	for i := range v {
		v[i] = float32(r.NormFloat64())
		ss += float64(v[i]) * float64(v[i])
	}
	n := float32(math.Sqrt(ss))
	for i := range v {
		v[i] /= n
	}
	return v
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	_, _, js := natstest.Run(t, embedded.Options{})
	if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	f := &fixture{js: js, keysDir: dt.KeyDir(t), data: t.TempDir(), vecs: map[string][]float32{}, images: map[string][]byte{}}
	f.kp = dt.OpenKeys(t, f.keysDir)
	f.oldKey = f.kp.ActiveKeyID()
	photoDir, snap := keyrotation.DataLayout(f.data)
	f.snapshot = snap
	var err error
	if f.photos, err = photostore.New(photoDir, f.kp); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	dt.Publish(t, js, dt.Person("alice", "hq", "b-1"), dt.Person("bob", "hq", "b-2"))
	for _, p := range [][2]string{{"alice", "p-a1"}, {"alice", "p-a2"}, {"bob", "p-b1"}, {"bob", "p-b2"}} {
		f.addPhoto(t, p[0], p[1], unitVector(r))
	}
	// A photo removed before any rotation: it must stay removed.
	dt.Publish(t, js, photoRemove("bob", "p-b2"))
	if err := f.photos.Delete(ctx, "bob", "p-b2"); err != nil {
		t.Fatal(err)
	}
	// The directory writes its snapshot, then stops (so it does not write
	// another one, under the key it loaded, while the test rotates).
	d := f.directory(t, filepath.Dir(f.snapshot))
	stop := runDirectory(t, d)
	if err := d.WriteSnapshot(ctx); err != nil {
		t.Fatal(err)
	}
	stop()
	if _, err := os.Stat(f.snapshot); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) addPhoto(t *testing.T, person, photo string, vec []float32) {
	t.Helper()
	f.vecs[photo] = vec
	img := []byte("jpeg of " + person + "/" + photo + strings.Repeat("x", 1000))
	f.images[person+"/"+photo] = img
	if _, err := f.photos.Put(context.Background(), person, photo, img); err != nil {
		t.Fatal(err)
	}
	dt.Publish(t, f.js, dt.PhotoAdd(t, f.kp, testSpace, person, photo, vec))
}

func photoRemove(person, photo string) *fv1.EnrolmentChange {
	return &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PhotoRemove{PhotoRemove: &fv1.PhotoRemove{PersonId: person, PhotoId: photo}}}
}

func (f *fixture) cfg(t *testing.T) keyrotation.Config {
	photoDir, _ := keyrotation.DataLayout(f.data)
	return keyrotation.Config{Keys: f.kp, KeysDir: f.keysDir, JetStream: f.js, PhotoDirs: []string{photoDir},
		SnapshotFiles: []string{f.snapshot}, Log: zaptest.NewLogger(t)}
}

func (f *fixture) directory(t *testing.T, snapDir string) *directory.Directory {
	t.Helper()
	kp := dt.OpenKeys(t, f.keysDir) // its own provider, as a service has
	d, err := directory.New(context.Background(), directory.Config{JetStream: f.js, Keys: kp,
		Spaces: []directory.Space{{Name: testSpace, Dim: 128}}, SnapshotDir: snapDir,
		Log: zaptest.NewLogger(t), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func runDirectory(t *testing.T, d *directory.Directory) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := d.WaitReady(wctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("directory: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return stop
}

// replayTemplates replays the stream into a fresh directory (no snapshot to
// start from) and returns its templates: photo id -> vector.
func (f *fixture) replayTemplates(t *testing.T) map[string][]float32 {
	t.Helper()
	dir := t.TempDir()
	d := f.directory(t, dir)
	stop := runDirectory(t, d)
	defer stop()
	if err := d.WriteSnapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	snap, err := directory.ReadSnapshotFile(context.Background(), dt.OpenKeys(t, f.keysDir), filepath.Join(dir, directory.SnapshotFile))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	for _, sp := range snap.Spaces {
		for _, tpl := range sp.Templates {
			v, err := directory.DecodeVector(tpl.Vector, sp.Dim)
			if err != nil {
				t.Fatal(err)
			}
			out[tpl.ID] = v
		}
	}
	return out
}

// streamAdds reads every PhotoAdd in the stream, message by message:
// photo id -> key ids of its messages.
func (f *fixture) streamAdds(t *testing.T) (map[string][]string, uint64) {
	t.Helper()
	ctx := context.Background()
	s, err := f.js.Stream(ctx, bus.StreamEnrolments)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		ch := &fv1.EnrolmentChange{}
		if err := bus.Decode(m.Data, ch); err != nil {
			t.Fatal(err)
		}
		if a := ch.GetPhotoAdd(); a != nil {
			id, err := sealed.BlobKeyID(a.GetSealedTemplate())
			if err != nil {
				t.Fatal(err)
			}
			out[a.GetPhotoId()] = append(out[a.GetPhotoId()], id)
		}
	}
	return out, info.State.LastSeq
}

func fileKey(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	id, err := sealed.BlobKeyID(b)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// checkAllUnder asserts every template, photo and the snapshot is wrapped
// under key, that the live templates are exactly want with identical
// vectors after a fresh replay, and that every photo opens.
func (f *fixture) checkAllUnder(t *testing.T, key string, want []string) {
	t.Helper()
	adds, _ := f.streamAdds(t)
	var photoIDs []string
	for photo, keys := range adds {
		photoIDs = append(photoIDs, photo)
		for _, k := range keys {
			if k != key {
				t.Errorf("stream template of %s under %s, want %s", photo, k, key)
			}
		}
		if len(keys) != 1 {
			t.Errorf("photo %s has %d PhotoAdd messages, want 1", photo, len(keys))
		}
	}
	slices.Sort(photoIDs)
	if !slices.Equal(photoIDs, want) {
		t.Errorf("PhotoAdds in the stream for %v, want %v", photoIDs, want)
	}
	if k := fileKey(t, f.snapshot); k != key {
		t.Errorf("snapshot under %s, want %s", k, key)
	}
	if _, err := directory.ReadSnapshotFile(context.Background(), dt.OpenKeys(t, f.keysDir), f.snapshot); err != nil {
		t.Errorf("snapshot does not open after rotation: %v", err)
	}
	for pp, img := range f.images {
		person, photo, _ := strings.Cut(pp, "/")
		path := filepath.Join(f.photos.PersonDir(person), photo)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			continue // deleted photo
		}
		if k := fileKey(t, path); k != key {
			t.Errorf("photo %s under %s, want %s", pp, k, key)
		}
		got, err := f.photos.Get(context.Background(), person, photo)
		if err != nil || !bytes.Equal(got, img) {
			t.Errorf("photo %s after rotation: %v (equal %v)", pp, err, bytes.Equal(got, img))
		}
	}
	tpls := f.replayTemplates(t)
	var ids []string
	for id, v := range tpls {
		ids = append(ids, id)
		if !slices.Equal(v, f.vecs[id]) {
			t.Errorf("template %s: vector differs after rotation", id)
		}
	}
	slices.Sort(ids)
	if !slices.Equal(ids, want) {
		t.Errorf("replayed directory has templates %v, want %v", ids, want)
	}
}

func TestKeysRotateEndToEnd(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	cfg := f.cfg(t)

	st, err := keyrotation.GetStatus(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := st.Key(f.oldKey)
	// 4 PhotoAdds (the removed photo's included), 3 photo files, 1 snapshot.
	if !old.Active || old.Stream != 4 || old.Photos != 3 || old.Snapshots != 1 {
		t.Fatalf("status before: %+v", old)
	}

	sum, err := keyrotation.Rotate(ctx, cfg, keyrotation.RotateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !sum.Created || sum.Resumed || sum.Active == f.oldKey || sum.Active != f.kp.ActiveKeyID() {
		t.Fatalf("summary: %+v", sum)
	}
	// Three photos in effect are republished; the removed one's PhotoAdd
	// is deleted, not republished.
	if sum.Stream.Republished != 3 || sum.Stream.Dropped != 1 || sum.Photos.Rewrapped != 3 || sum.Snapshots.Rewrapped != 1 {
		t.Fatalf("summary: %+v", sum)
	}
	after, _ := sum.After.Key(f.oldKey)
	if after.Total() != 0 {
		t.Fatalf("old key still used after rotation: %s", after.Uses())
	}
	newUse, _ := sum.After.Key(sum.Active)
	if newUse.Stream != 3 || newUse.Photos != 3 || newUse.Snapshots != 1 || !newUse.Active {
		t.Fatalf("new key use: %+v", newUse)
	}
	want := []string{"p-a1", "p-a2", "p-b1"}
	f.checkAllUnder(t, sum.Active, want)

	// A second pass with nothing to do changes nothing: no message, no
	// file write.
	_, lastBefore := f.streamAdds(t)
	snapBefore, _ := os.ReadFile(f.snapshot)
	photoBefore, _ := os.ReadFile(filepath.Join(f.photos.PersonDir("alice"), "p-a1"))
	sum2, err := keyrotation.Rotate(ctx, cfg, keyrotation.RotateOptions{NoNewKey: true})
	if err != nil {
		t.Fatal(err)
	}
	if sum2.Created || sum2.Stream.Republished+sum2.Stream.Dropped+sum2.Photos.Rewrapped+sum2.Snapshots.Rewrapped != 0 ||
		sum2.Photos.Current != 3 || sum2.Snapshots.Current != 1 || sum2.Active != sum.Active {
		t.Fatalf("second rotation did something: %+v", sum2)
	}
	_, lastAfter := f.streamAdds(t)
	snapAfter, _ := os.ReadFile(f.snapshot)
	photoAfter, _ := os.ReadFile(filepath.Join(f.photos.PersonDir("alice"), "p-a1"))
	if lastAfter != lastBefore || !bytes.Equal(snapAfter, snapBefore) || !bytes.Equal(photoAfter, photoBefore) {
		t.Fatalf("second rotation changed stored data (last seq %d -> %d)", lastBefore, lastAfter)
	}

	// Retire the old key; everything still opens (checked with a fresh
	// provider, as a restarted service would).
	res, err := keyrotation.Retire(ctx, cfg, f.oldKey, false)
	if err != nil || !res.Removed {
		t.Fatalf("retire: %+v, %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(f.keysDir, f.oldKey+".kek")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old key file still there: %v", err)
	}
	f.checkAllUnder(t, sum.Active, want)
	if _, err := keyrotation.Retire(ctx, cfg, sum.Active, false); err == nil {
		t.Fatal("retiring the active key succeeded")
	}
}

// A service that loaded the keys before the rotation keeps sealing under
// the old key: retire must refuse, naming what still uses it, and a second
// rotate (which resumes rather than making another key) fixes it.
func TestKeysRetireRefusesWhileInUse(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	stale := dt.OpenKeys(t, f.keysDir) // loaded before the rotation
	cfg := f.cfg(t)
	sum, err := keyrotation.Rotate(ctx, cfg, keyrotation.RotateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stalePhotos, err := photostore.New(f.photos.Dir(), stale)
	if err != nil {
		t.Fatal(err)
	}
	img := []byte("late photo")
	if _, err := stalePhotos.Put(ctx, "alice", "p-a3", img); err != nil {
		t.Fatal(err)
	}
	f.images["alice/p-a3"] = img
	vec := unitVector(rand.New(rand.NewPCG(3, 4)))
	f.vecs["p-a3"] = vec
	dt.Publish(t, f.js, dt.PhotoAdd(t, stale, testSpace, "alice", "p-a3", vec))

	res, err := keyrotation.Retire(ctx, cfg, f.oldKey, false)
	if !errors.Is(err, keyrotation.ErrInUse) || res == nil || res.Removed {
		t.Fatalf("retire while in use: %+v, %v", res, err)
	}
	if !strings.Contains(err.Error(), "1 stream template") || !strings.Contains(err.Error(), "1 photo file") {
		t.Fatalf("retire error does not say what uses the key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.keysDir, f.oldKey+".kek")); err != nil {
		t.Fatalf("refused retire removed the key: %v", err)
	}
	// Without the photo store, retire cannot know: refused too.
	noPhotos := cfg
	noPhotos.PhotoDirs = nil
	if _, err := keyrotation.Retire(ctx, noPhotos, f.oldKey, false); !errors.Is(err, keyrotation.ErrNotChecked) {
		t.Fatalf("retire without the photo store: %v", err)
	}

	sum2, err := keyrotation.Rotate(ctx, cfg, keyrotation.RotateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sum2.Created || !sum2.Resumed || sum2.Active != sum.Active || sum2.Stream.Republished != 1 || sum2.Photos.Rewrapped != 1 {
		t.Fatalf("resumed rotation: %+v", sum2)
	}
	if _, err := keyrotation.Retire(ctx, cfg, f.oldKey, false); err != nil {
		t.Fatal(err)
	}
	f.checkAllUnder(t, sum.Active, []string{"p-a1", "p-a2", "p-a3", "p-b1"})
}

// Changes that land while the rotation runs win: a PhotoRemove published
// after the replay but before the republish is not undone (the photo does
// not come back), nor is a PersonDelete (on another subject than the
// photo). The changes are injected when the stream pass has read the whole
// stream (the status read that decides about a new key is skipped with
// NoNewKey, so the first read is the pass's own).
func TestKeysRotateConcurrentChangesWin(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	if _, err := f.kp.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := f.cfg(t)
	injected := false
	cfg.Progress = func(what string, done, total int) {
		if strings.HasPrefix(what, "reading") && done == total && !injected {
			injected = true
			dt.Publish(t, f.js, photoRemove("alice", "p-a2"))
			dt.Publish(t, f.js, &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PersonDelete{PersonDelete: &fv1.PersonDelete{PersonId: "bob"}}})
		}
	}
	sum, err := keyrotation.Rotate(ctx, cfg, keyrotation.RotateOptions{NoNewKey: true})
	if err != nil {
		t.Fatal(err)
	}
	// alice/p-a2 failed on the subject sequence, bob's photo on the
	// person check; both were then found cancelled and deleted.
	if sum.Stream.Conflicts < 2 || sum.Stream.Passes < 2 || sum.Stream.Republished != 1 {
		t.Errorf("summary: %+v", sum.Stream)
	}
	f.checkAllUnder(t, f.kp.ActiveKeyID(), []string{"p-a1"})
}

// A rotation that crashed half-way (here: a copy republished but its
// original not deleted yet, and a run cancelled part-way) is finished by
// running rotate again, without making yet another key.
func TestKeysRotateResumesAfterCrash(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	newKey, err := f.kp.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// What a crash between the republish and the delete leaves: both.
	dt.Publish(t, f.js, dt.PhotoAdd(t, f.kp, testSpace, "alice", "p-a1", f.vecs["p-a1"]))
	cfg := f.cfg(t)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cfg.Progress = func(what string, done, total int) {
		if what == "re-wrapping photos" && done == 1 {
			cancel()
		}
	}
	if _, err := keyrotation.Rotate(cctx, cfg, keyrotation.RotateOptions{}); err == nil {
		t.Fatal("cancelled rotation reported success")
	}
	if got := f.kp.ActiveKeyID(); got != newKey {
		t.Fatalf("active key %s, want %s (the cancelled run resumed, it made no key)", got, newKey)
	}
	cfg.Progress = nil
	sum, err := keyrotation.Rotate(ctx, cfg, keyrotation.RotateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Created || !sum.Resumed || sum.Active != newKey || sum.Stream.Republished != 2 || sum.Stream.Dropped != 2 {
		t.Fatalf("resumed rotation: %+v", sum)
	}
	f.checkAllUnder(t, newKey, []string{"p-a1", "p-a2", "p-b1"})
}

// BenchmarkKeysRotateStream measures a rotation of n enrolled templates
// (one photo file each) against embedded NATS: republish + secure delete
// per template, plus the replays.
func BenchmarkKeysRotateStream(b *testing.B) {
	const n = 500
	ctx := context.Background()
	_, _, js := natstest.Run(b, embedded.Options{})
	if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
		b.Fatal(err)
	}
	keysDir := dt.KeyDir(b)
	kp := dt.OpenKeys(b, keysDir)
	photos, err := photostore.New(filepath.Join(b.TempDir(), "photos"), kp)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	img := bytes.Repeat([]byte{1}, 100<<10)
	for i := range n {
		person := "person-" + strconv.Itoa(i)
		dt.Publish(b, js, dt.Person(person, "hq"), dt.PhotoAdd(b, kp, testSpace, person, "photo-"+strconv.Itoa(i), unitVector(r)))
		if _, err := photos.Put(ctx, person, "photo-"+strconv.Itoa(i), img); err != nil {
			b.Fatal(err)
		}
	}
	cfg := keyrotation.Config{Keys: kp, JetStream: js, PhotoDirs: []string{photos.Dir()}}
	b.ResetTimer()
	for range b.N {
		sum, err := keyrotation.Rotate(ctx, cfg, keyrotation.RotateOptions{})
		if err != nil || sum.Stream.Republished != n || sum.Photos.Rewrapped != n {
			b.Fatalf("%+v %v", sum, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N*n), "ms/template")
}
