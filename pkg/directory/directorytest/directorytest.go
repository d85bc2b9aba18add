// Package directorytest helps tests that need an enrolled gallery: a real
// face engine, real encodings of dataset images, a file key provider, and
// EnrolmentChanges published the way the enrolment API publishes them.
package directorytest

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/sealed"
	"github.com/facegate/facegate/pkg/testenv"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

var shared struct {
	once   sync.Once
	engine *face.Engine
	err    error
	mu     sync.Mutex
	encs   map[string][]float32
}

// Engine opens the default face engine once per test binary (skipping when
// the model cache is absent).
func Engine(t testing.TB) *face.Engine {
	t.Helper()
	root := testenv.Models(t)
	shared.once.Do(func() {
		c, err := modelcache.New(root, nil)
		if err != nil {
			shared.err = err
			return
		}
		rt, err := inference.Open(inference.Options{LibraryPath: c.LibraryPath(), IntraOpThreads: 1})
		if err != nil {
			shared.err = err
			return
		}
		shared.engine, shared.err = face.Open(context.Background(), rt, c, face.Options{})
	})
	if shared.err != nil {
		t.Fatalf("directorytest: open face engine: %v", shared.err)
	}
	return shared.engine
}

// Space is the engine's embedding space name and dimension.
func Space(t testing.TB) (string, int) {
	e := Engine(t)
	return e.Space(), e.Dim()
}

// Image reads a dataset image (path relative to the shared datasets).
func Image(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(testenv.Dataset(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Analyze runs the engine on a dataset image.
func Analyze(t testing.TB, rel string) *face.Result {
	t.Helper()
	res, err := Engine(t).Analyze(context.Background(), Image(t, rel))
	if err != nil {
		t.Fatalf("directorytest: analyze %s: %v", rel, err)
	}
	return res
}

// Encoding is the encoding of the one face passing quality in a dataset
// image, as the enrolment API requires; cached per image.
func Encoding(t testing.TB, rel string) []float32 {
	t.Helper()
	shared.mu.Lock()
	v, ok := shared.encs[rel]
	shared.mu.Unlock()
	if ok {
		return v
	}
	res := Analyze(t, rel)
	var good []face.Face
	for _, f := range res.Faces {
		if f.Quality.OK {
			good = append(good, f)
		}
	}
	if len(good) != 1 {
		t.Fatalf("directorytest: %s has %d faces passing quality (of %d), want 1", rel, len(good), len(res.Faces))
	}
	shared.mu.Lock()
	if shared.encs == nil {
		shared.encs = map[string][]float32{}
	}
	shared.encs[rel] = good[0].Encoding
	shared.mu.Unlock()
	return good[0].Encoding
}

// Keys returns a file key provider with one key in a fresh folder.
func Keys(t testing.TB) *sealed.FileKeyProvider {
	t.Helper()
	return OpenKeys(t, KeyDir(t))
}

// KeyDir creates a key folder holding one key and returns its path (for a
// service under test that opens the folder itself).
func KeyDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	kp := OpenKeys(t, dir)
	if _, err := kp.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return dir
}

// OpenKeys opens a key folder, closed when the test ends.
func OpenKeys(t testing.TB, dir string) *sealed.FileKeyProvider {
	t.Helper()
	kp, err := sealed.OpenFileKeyProvider(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kp.Close() })
	return kp
}

// PhotoAdd builds a PhotoAdd change with the template sealed as the API
// seals it (float32 little-endian, sealed.TemplateContext(space, photo)).
func PhotoAdd(t testing.TB, kp sealed.KeyProvider, space string, person, photoID string, vec []float32) *fv1.EnrolmentChange {
	t.Helper()
	plain := make([]byte, 4*len(vec))
	for i, x := range vec {
		binary.LittleEndian.PutUint32(plain[4*i:], math.Float32bits(x))
	}
	blob, err := sealed.Seal(context.Background(), kp, plain, sealed.TemplateContext(space, photoID))
	if err != nil {
		t.Fatal(err)
	}
	return &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PhotoAdd{PhotoAdd: &fv1.PhotoAdd{
		PersonId: person, PhotoId: photoID, ContentSha256: fmt.Sprintf("%064x", len(photoID)), MediaType: "image/png",
		StorageRef: "photos/" + photoID, SealedTemplate: blob, EmbeddingSpace: space, EmbeddingDimension: uint32(len(vec))}}}
}

// Person builds a PersonUpsert.
func Person(id, site string, badges ...string) *fv1.EnrolmentChange {
	return &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PersonUpsert{PersonUpsert: &fv1.PersonUpsert{
		PersonId: id, DisplayName: "Person " + id, BadgeIds: badges, Site: site}}}
}

// Member builds a GroupMembership adding person to group.
func Member(person, group string) *fv1.EnrolmentChange {
	return &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_GroupMembership{GroupMembership: &fv1.GroupMembership{
		PersonId: person, GroupId: group, Member: true}}}
}

// Door builds a DoorUpsert.
func Door(site, door string, mode fv1.Mode, cameras ...string) *fv1.EnrolmentChange {
	return &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_DoorUpsert{DoorUpsert: &fv1.DoorUpsert{
		Site: site, Door: door, DisplayName: door, Mode: mode, Cameras: cameras}}}
}

// Policy builds a PolicyUpsert for doors of one site.
func Policy(id, site string, groups, doors []string, schedule string, effect fv1.Effect, priority int32) *fv1.EnrolmentChange {
	var refs []*fv1.DoorRef
	for _, d := range doors {
		refs = append(refs, &fv1.DoorRef{Site: site, Door: d})
	}
	return &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PolicyUpsert{PolicyUpsert: &fv1.PolicyUpsert{
		PolicyId: id, GroupIds: groups, Doors: refs, Schedule: schedule, Effect: effect, Priority: priority}}}
}

// Tombstone builds an erasure tombstone for a person.
func Tombstone(person string) *fv1.EnrolmentChange {
	return &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PersonDelete{PersonDelete: &fv1.PersonDelete{
		PersonIdSha256: events.PersonHash(person)}}}
}

var counter atomic.Uint64

// Publish publishes changes as the API does (schema version, change id,
// sequence, time, actor, routed subject, Nats-Msg-Id = change id) and
// returns the stream sequence of the last one.
func Publish(t testing.TB, js jetstream.JetStream, chs ...*fv1.EnrolmentChange) uint64 {
	t.Helper()
	var last uint64
	for _, ch := range chs {
		n := counter.Add(1)
		ch.SchemaVersion = events.SchemaVersion
		if ch.ChangeId == "" {
			ch.ChangeId = fmt.Sprintf("chg-%d-%d", time.Now().UnixNano(), n)
		}
		ch.Sequence = n
		ch.Time = timestamppb.Now()
		ch.Actor = &fv1.Actor{Kind: fv1.ActorKind_ACTOR_KIND_USER, Id: "test"}
		kind, key, err := events.EnrolmentRoute(ch)
		if err != nil {
			t.Fatal(err)
		}
		subj, err := bus.EnrolmentsSubject(kind, key)
		if err != nil {
			t.Fatal(err)
		}
		hdr := nats.Header{}
		hdr.Set(bus.HeaderMsgID, ch.ChangeId)
		ack, err := bus.Publish(context.Background(), js, subj, ch, hdr)
		if err != nil {
			t.Fatalf("directorytest: publish %s: %v", subj, err)
		}
		last = ack.Sequence
	}
	return last
}
