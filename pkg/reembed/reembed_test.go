package reembed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"image"
	"image/png"
	"path/filepath"
	"sync"
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
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/index"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/photostore"
	"github.com/facegate/facegate/pkg/sealed"
	"github.com/facegate/facegate/pkg/testenv"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

const (
	img      = "face-api.js/examples/images/"
	newModel = "mobileface-256"
)

var newEng struct {
	once sync.Once
	e    *face.Engine
	err  error
}

// newEngine opens the new model's engine once per test binary.
func newEngine(t *testing.T) *face.Engine {
	t.Helper()
	root := testenv.Models(t)
	newEng.once.Do(func() {
		c, err := modelcache.New(root, nil)
		if err != nil {
			newEng.err = err
			return
		}
		rt, err := inference.Open(inference.Options{LibraryPath: c.LibraryPath(), IntraOpThreads: 1})
		if err != nil {
			newEng.err = err
			return
		}
		newEng.e, newEng.err = face.Open(context.Background(), rt, c, face.Options{Encoder: newModel})
	})
	if newEng.err != nil {
		t.Fatalf("open %s: %v", newModel, newEng.err)
	}
	return newEng.e
}

type fixture struct {
	js     jetstream.JetStream
	kp     *sealed.FileKeyProvider
	photos *photostore.Store
	old    directory.Space
	new    directory.Space
}

func setup(t *testing.T) *fixture {
	t.Helper()
	_, _, js := natstest.Run(t, embedded.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	kp := dt.Keys(t)
	ps, err := photostore.New(filepath.Join(t.TempDir(), "photos"), kp)
	if err != nil {
		t.Fatal(err)
	}
	oldName, oldDim := dt.Space(t)
	e := newEngine(t)
	return &fixture{js: js, kp: kp, photos: ps, old: directory.Space{Name: oldName, Dim: oldDim},
		new: directory.Space{Name: e.Space(), Dim: e.Dim()}}
}

// photo enrols a dataset photo as the API does: the photo sealed in the
// store, the default model's template sealed into a PhotoAdd carrying the
// photo's real content hash and storage ref.
func (f *fixture) photo(t *testing.T, person, photoID, rel string) *fv1.EnrolmentChange {
	t.Helper()
	data := dt.Image(t, rel)
	ref, err := f.photos.Put(context.Background(), person, photoID, data)
	if err != nil {
		t.Fatal(err)
	}
	ch := dt.PhotoAdd(t, f.kp, f.old.Name, person, photoID, dt.Encoding(t, rel))
	sum := sha256.Sum256(data)
	a := ch.GetPhotoAdd()
	a.ContentSha256, a.StorageRef = hex.EncodeToString(sum[:]), ref
	return ch
}

func (f *fixture) config(t *testing.T) Config {
	return Config{JetStream: f.js, Keys: f.kp, Photos: f.photos, Engine: newEngine(t), Log: zaptest.NewLogger(t)}
}

func (f *fixture) run(t *testing.T, cfg Config) *Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sum, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return sum
}

// directory starts a fresh directory configured with both spaces and
// waits until it has replayed the stream.
func (f *fixture) directory(t *testing.T) *directory.Directory {
	t.Helper()
	d, err := directory.New(context.Background(), directory.Config{JetStream: f.js, Keys: f.kp,
		Spaces: []directory.Space{f.old, f.new}, Log: zaptest.NewLogger(t), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("directory Run: %v", err)
		}
	})
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	if err := d.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	return d
}

func templates(t *testing.T, d *directory.Directory, sp directory.Space, person string) []string {
	t.Helper()
	coll, err := d.Collection(sp.Name)
	if err != nil {
		t.Fatal(err)
	}
	l, err := d.Index().List(context.Background(), coll, index.ListOptions{Person: person})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ti := range l {
		ids = append(ids, ti.ID)
	}
	return ids
}

func removePhoto(person, photo string) *fv1.EnrolmentChange {
	return &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PhotoRemove{PhotoRemove: &fv1.PhotoRemove{PersonId: person, PhotoId: photo}}}
}

// erase erases a person as the API does: tombstone, purge, photos deleted.
func (f *fixture) erase(t *testing.T, person string) {
	t.Helper()
	dt.Publish(t, f.js, dt.Tombstone(person))
	if err := bus.PurgePerson(context.Background(), f.js, person, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.photos.DeletePerson(context.Background(), person); err != nil {
		t.Fatal(err)
	}
}

// newPhotoAdds reads the PhotoAdds of the new space from the stream.
func (f *fixture) newPhotoAdds(t *testing.T) map[string]*fv1.PhotoAdd {
	t.Helper()
	sc, err := scan(context.Background(), Config{JetStream: f.js, Stream: bus.StreamEnrolments})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*fv1.PhotoAdd{}
	for k, a := range sc.adds {
		if k.space == f.new.Name {
			out[k.photo] = a
		}
	}
	return out
}

func TestReembedGalleryIntoNewSpace(t *testing.T) {
	f := setup(t)
	if f.new.Dim != 256 || f.new.Name == f.old.Name {
		t.Fatalf("new space %+v, old %+v: want a 256-dimensional space of its own", f.new, f.old)
	}
	amy1 := f.photo(t, "amy", "amy-1", img+"amy/amy1.png")
	dt.Publish(t, f.js,
		dt.Person("amy", "hq", "B-AMY"), dt.Person("sheldon", "hq", "B-SHELDON"), dt.Person("howard", "hq"), dt.Person("penny", "hq"),
		amy1,
		f.photo(t, "amy", "amy-2", img+"amy/amy2.png"),
		f.photo(t, "sheldon", "sheldon-1", img+"sheldon/sheldon1.png"),
		f.photo(t, "sheldon", "sheldon-2", img+"sheldon/sheldon2.png"),
		f.photo(t, "howard", "howard-1", img+"howard/howard1.png"),
		// penny's PhotoAdd names a photo the store does not have.
		dt.PhotoAdd(t, f.kp, f.old.Name, "penny", "penny-1", dt.Encoding(t, img+"leonard/leonard1.png")),
	)
	// Removed before the run: its photo is still in the store, but the
	// photo is no longer enrolled.
	dt.Publish(t, f.js, removePhoto("amy", "amy-2"))
	f.erase(t, "howard")

	var progress []int
	cfg := f.config(t)
	cfg.Progress = func(done, total int) { progress = append(progress, done, total) }
	sum := f.run(t, cfg)
	if sum.Space != f.new.Name || sum.Dim != 256 {
		t.Errorf("summary space %q dim %d", sum.Space, sum.Dim)
	}
	if sum.Seen != 4 || sum.Reembedded != 3 || sum.AlreadyDone != 0 || sum.Left != 0 || sum.Conflicts != 0 {
		t.Errorf("first run: %+v; want seen 4 (amy-1, sheldon-1, sheldon-2, penny-1), re-embedded 3", sum)
	}
	if len(sum.Refused) != 1 || sum.Refused[0].PhotoID != "penny-1" || sum.Refused[0].Reason != ReasonPhotoMissing ||
		sum.Refused[0].PersonHash != events.PersonHash("penny") {
		t.Errorf("refused %+v; want penny-1 (by hash) with %s", sum.Refused, ReasonPhotoMissing)
	}
	if len(progress) < 2 || progress[len(progress)-2] != progress[len(progress)-1] {
		t.Errorf("progress %v does not end at its total", progress)
	}

	// The new PhotoAdds keep the photo's identity and carry the new space.
	adds := f.newPhotoAdds(t)
	if len(adds) != 3 {
		t.Fatalf("%d new-space PhotoAdds in the stream, want 3", len(adds))
	}
	a := adds["amy-1"]
	old := amy1.GetPhotoAdd()
	if a == nil || a.GetPersonId() != "amy" || a.GetContentSha256() != old.GetContentSha256() || a.GetStorageRef() != old.GetStorageRef() ||
		a.GetMediaType() != old.GetMediaType() || a.GetEmbeddingDimension() != 256 || a.GetEmbeddingSpace() != f.new.Name || !a.GetQuality().GetPassed() {
		t.Errorf("new PhotoAdd of amy-1 %+v does not match the original %+v", a, old)
	}
	if _, err := sealed.Open(context.Background(), f.kp, a.GetSealedTemplate(), sealed.TemplateContext(f.old.Name, "amy-1")); !errors.Is(err, sealed.ErrWrongContext) && !errors.Is(err, sealed.ErrTampered) {
		t.Errorf("new template opens in the old space's context: %v", err)
	}

	d := f.directory(t)
	for person, want := range map[string]int{"amy": 1, "sheldon": 2, "howard": 0, "penny": 0} {
		if got := templates(t, d, f.new, person); len(got) != want {
			t.Errorf("%s has templates %v in %s, want %d", person, got, f.new.Name, want)
		}
	}
	if got := templates(t, d, f.new, "amy"); len(got) != 1 || got[0] != "amy-1" {
		t.Errorf("amy's new templates %v, want [amy-1] (amy-2 was removed)", got)
	}
	if got := templates(t, d, f.old, "sheldon"); len(got) != 2 {
		t.Errorf("sheldon's old-space templates %v: the old collection must stay", got)
	}
	if _, ok := d.Person("howard"); ok {
		t.Error("howard was erased and is back in the directory")
	}
	// The template in the new collection is the new model's encoding of
	// the retained photo: searching with that encoding finds it at
	// distance ~0. (Identification quality of the new model is the
	// rollout's shadow gate, not this package's business: on these photos
	// mobileface-256 ranks the same person first for 11 of 20, the default
	// model for 20 of 20.)
	res, err := newEngine(t).Analyze(context.Background(), dt.Image(t, img+"sheldon/sheldon2.png"))
	if err != nil || len(res.Faces) == 0 {
		t.Fatalf("analyze sheldon2: %v", err)
	}
	coll, _ := d.Collection(f.new.Name)
	hits, err := d.Index().Search(context.Background(), coll, res.Faces[0].Encoding, index.SearchOptions{K: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(hits.Persons) == 0 || hits.Persons[0].Template != "sheldon-2" || hits.Persons[0].Distance > 1e-3 {
		t.Errorf("new-model encoding of sheldon2.png in the new space: %+v, want template sheldon-2 at distance ~0", hits.Persons)
	}

	// A second run finds everything done.
	again := f.run(t, f.config(t))
	if again.Reembedded != 0 || again.AlreadyDone != 3 || again.Seen != 4 || len(again.Refused) != 1 {
		t.Errorf("second run: %+v; want nothing re-embedded, 3 already done, penny-1 refused again", again)
	}
	if n := len(f.newPhotoAdds(t)); n != 3 {
		t.Errorf("%d new-space PhotoAdds after the second run, want 3", n)
	}
}

func TestReembedRefusesPhotoWithoutOneGoodFace(t *testing.T) {
	f := setup(t)
	// The stored photo is not the enrolled one: sheldon-1's record, a
	// store entry whose content hash does not match (a replaced file) ...
	ch := f.photo(t, "sheldon", "sheldon-1", img+"sheldon/sheldon1.png")
	if _, err := f.photos.Put(context.Background(), "sheldon", "sheldon-1", dt.Image(t, img+"sheldon/sheldon2.png")); err != nil {
		t.Fatal(err)
	}
	// ... and a photo with no content hash whose stored image has no face
	// at all (a blank PNG).
	blank := dt.PhotoAdd(t, f.kp, f.old.Name, "amy", "amy-blank", dt.Encoding(t, img+"amy/amy1.png"))
	blank.GetPhotoAdd().ContentSha256 = ""
	if _, err := f.photos.Put(context.Background(), "amy", "amy-blank", blankPNG(t)); err != nil {
		t.Fatal(err)
	}
	dt.Publish(t, f.js, dt.Person("amy", "hq"), dt.Person("sheldon", "hq"), ch, blank)
	sum := f.run(t, f.config(t))
	reasons := map[string]string{}
	for _, r := range sum.Refused {
		reasons[r.PhotoID] = r.Reason
	}
	if sum.Reembedded != 0 || reasons["sheldon-1"] != ReasonHashMismatch || reasons["amy-blank"] != ReasonNoFace {
		t.Errorf("summary %+v; want sheldon-1 refused as %s and amy-blank as %s", sum, ReasonHashMismatch, ReasonNoFace)
	}
	if n := len(f.newPhotoAdds(t)); n != 0 {
		t.Errorf("%d PhotoAdds published for refused photos", n)
	}
}

// A change to the person landing while the run works must win.
func TestReembedConcurrentChangesWin(t *testing.T) {
	f := setup(t)
	dt.Publish(t, f.js, dt.Person("amy", "hq"), dt.Person("sheldon", "hq"), dt.Person("leonard", "hq"),
		f.photo(t, "amy", "amy-1", img+"amy/amy1.png"),
		f.photo(t, "sheldon", "sheldon-1", img+"sheldon/sheldon1.png"),
		f.photo(t, "leonard", "leonard-1", img+"leonard/leonard1.png"))
	cfg := f.config(t)
	hit := map[string]bool{}
	cfg.beforePublish = func(person string) {
		if hit[person] {
			return
		}
		hit[person] = true
		switch person {
		case "amy": // the photo is removed just before the publish
			dt.Publish(t, f.js, removePhoto("amy", "amy-1"))
		case "sheldon": // sheldon is erased (tombstone, then purge)
			f.erase(t, "sheldon")
		}
	}
	sum := f.run(t, cfg)
	if sum.Reembedded != 1 || sum.Conflicts != 2 || sum.Left != 0 || sum.Passes != 2 {
		t.Errorf("summary %+v; want leonard re-embedded, amy and sheldon conflicting once, done in 2 passes", sum)
	}
	d := f.directory(t)
	if got := templates(t, d, f.new, "amy"); len(got) != 0 {
		t.Errorf("amy's removed photo re-embedded: %v", got)
	}
	if _, ok := d.Person("sheldon"); ok || len(templates(t, d, f.new, "sheldon")) != 0 {
		t.Error("sheldon, erased during the run, is in the directory")
	}
	if got := templates(t, d, f.new, "leonard"); len(got) != 1 {
		t.Errorf("leonard's new templates %v, want 1", got)
	}
}

// A tombstone landing after the person check but before the publish is
// compensated by a PhotoRemove, so a directory that follows the stream
// does not keep the template.
func TestReembedCompensatesDeleteInTheWindow(t *testing.T) {
	f := setup(t)
	dt.Publish(t, f.js, dt.Person("amy", "hq"), f.photo(t, "amy", "amy-1", img+"amy/amy1.png"))
	live := f.directory(t)
	cfg := f.config(t)
	cfg.beforePublish = func(person string) {
		// Only the tombstone: the purge comes after the publish.
		dt.Publish(t, f.js, dt.Tombstone(person))
	}
	// beforePublish runs after the person check: the tombstone lands in
	// the window the check cannot see.
	sum := f.run(t, cfg)
	if sum.Compensated != 1 || sum.Reembedded != 0 {
		t.Fatalf("summary %+v; want the publish compensated", sum)
	}
	info, err := f.js.Stream(context.Background(), bus.StreamEnrolments)
	if err != nil {
		t.Fatal(err)
	}
	si, err := info.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := live.WaitApplied(ctx, si.State.LastSeq); err != nil {
		t.Fatal(err)
	}
	if got := templates(t, live, f.new, "amy"); len(got) != 0 {
		t.Errorf("a running directory kept the template of a person deleted during the run: %v", got)
	}
	if got := templates(t, f.directory(t), f.new, "amy"); len(got) != 0 {
		t.Errorf("a replay has the template of a person deleted during the run: %v", got)
	}
}

func TestConfigErrors(t *testing.T) {
	_, _, js := natstest.Run(t, embedded.Options{})
	kp := dt.Keys(t)
	ps, err := photostore.New(filepath.Join(t.TempDir(), "photos"), kp)
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]Config{
		"no jetstream": {Keys: kp, Photos: ps},
		"no keys":      {JetStream: js, Photos: ps},
		"no photos":    {JetStream: js, Keys: kp},
		"no engine":    {JetStream: js, Keys: kp, Photos: ps},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%s: Run accepted the config", name)
		}
	}
}

// blankPNG is a plain grey image: no face.
func blankPNG(t *testing.T) []byte {
	t.Helper()
	im := image.NewGray(image.Rect(0, 0, 320, 240))
	for i := range im.Pix {
		im.Pix[i] = 128
	}
	var b bytes.Buffer
	if err := png.Encode(&b, im); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
