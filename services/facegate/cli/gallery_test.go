package cli_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/directory"
	dt "github.com/facegate/facegate/pkg/directory/directorytest"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/index"
	"github.com/facegate/facegate/pkg/natsauth"
	"github.com/facegate/facegate/pkg/natsauth/natsauthtest"
	"github.com/facegate/facegate/pkg/photostore"
	"github.com/facegate/facegate/pkg/reembed"
	"github.com/facegate/facegate/pkg/testenv"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

const galleryImg = "face-api.js/examples/images/"

// authServer starts a real nats-server from a natsauth configuration with
// an admin and a reembed user; it returns the URL, the admin's JetStream
// and the reembed user's seed file.
func authServer(t *testing.T) (string, jetstream.JetStream, string) {
	t.Helper()
	url, seeds := natsauthtest.Start(t, []natsauth.User{{Name: "admin", Role: natsauth.RoleAdmin}, {Name: "reembed", Role: natsauth.RoleReembed}})
	seed, err := nats.NkeyOptionFromSeed(natsauth.SeedFile(seeds, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	return url, js, natsauth.SeedFile(seeds, "reembed")
}

// TestGalleryReembed runs `facegate gallery reembed` as the least-privilege
// reembed NATS user on a gallery enrolled with the default model, with a
// removed photo and an erased person, then checks what a fresh directory
// configured with both spaces holds, and that a second run does nothing.
func TestGalleryReembed(t *testing.T) {
	models := testenv.Models(t)
	url, js, seed := authServer(t)
	keysDir := dt.KeyDir(t)
	kp := dt.OpenKeys(t, keysDir)
	photoDir := filepath.Join(t.TempDir(), "photos")
	photos, err := photostore.New(photoDir, kp)
	if err != nil {
		t.Fatal(err)
	}
	oldSpace, oldDim := dt.Space(t)
	enrol := func(person, photoID, rel string) *fv1.EnrolmentChange {
		data := dt.Image(t, galleryImg+rel)
		ref, err := photos.Put(context.Background(), person, photoID, data)
		if err != nil {
			t.Fatal(err)
		}
		ch := dt.PhotoAdd(t, kp, oldSpace, person, photoID, dt.Encoding(t, galleryImg+rel))
		sum := sha256.Sum256(data)
		ch.GetPhotoAdd().ContentSha256, ch.GetPhotoAdd().StorageRef = hex.EncodeToString(sum[:]), ref
		return ch
	}
	dt.Publish(t, js, dt.Person("amy", "hq"), dt.Person("sheldon", "hq"), dt.Person("howard", "hq"),
		enrol("amy", "amy-1", "amy/amy1.png"), enrol("amy", "amy-2", "amy/amy2.png"),
		enrol("sheldon", "sheldon-1", "sheldon/sheldon1.png"), enrol("howard", "howard-1", "howard/howard1.png"),
		&fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PhotoRemove{PhotoRemove: &fv1.PhotoRemove{PersonId: "amy", PhotoId: "amy-2"}}},
		dt.Tombstone("howard"))
	if err := bus.PurgePerson(context.Background(), js, "howard", 0); err != nil {
		t.Fatal(err)
	}
	if err := photos.DeletePerson(context.Background(), "howard"); err != nil {
		t.Fatal(err)
	}

	// The inbox prefix comes from the environment, as in the operator's Job.
	t.Setenv("FACEGATE_NATS_INBOX_PREFIX", "_INBOX.reembed")
	args := []string{"--cache", models, "--json", "gallery", "reembed", "--nats-url", url, "--nats-creds", seed,
		"--keys", keysDir, "--photos", photoDir, "--model", "mobileface-256"}
	r := facegate(t, args...)
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	var sum reembed.Summary
	if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil {
		t.Fatalf("summary %q: %v", r.stdout, err)
	}
	if sum.Space != "mobileface-256+mirror" || sum.Dim != 256 || sum.Seen != 2 || sum.Reembedded != 2 || sum.AlreadyDone != 0 || len(sum.Refused) != 0 {
		t.Errorf("summary %+v; want amy-1 and sheldon-1 re-embedded into mobileface-256+mirror (256)", sum)
	}

	newSpace := directory.Space{Name: sum.Space, Dim: 256}
	d, err := directory.New(context.Background(), directory.Config{JetStream: js, Keys: kp,
		Spaces: []directory.Space{{Name: oldSpace, Dim: oldDim}, newSpace}, Log: zap.NewNop(), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	if err := d.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	coll, err := d.Collection(newSpace.Name)
	if err != nil {
		t.Fatal(err)
	}
	for person, want := range map[string][]string{"amy": {"amy-1"}, "sheldon": {"sheldon-1"}, "howard": nil} {
		l, err := d.Index().List(context.Background(), coll, index.ListOptions{Person: person})
		if err != nil {
			t.Fatal(err)
		}
		if len(l) != len(want) || (len(want) == 1 && l[0].ID != want[0]) {
			t.Errorf("%s in %s: %+v, want %v", person, newSpace.Name, l, want)
		}
	}

	again := facegate(t, args...)
	if again.code != 0 {
		t.Fatalf("second run: exit %d: %s", again.code, again.stderr)
	}
	var sum2 reembed.Summary
	if err := json.Unmarshal([]byte(again.stdout), &sum2); err != nil {
		t.Fatal(err)
	}
	if sum2.Reembedded != 0 || sum2.AlreadyDone != 2 {
		t.Errorf("second run %+v; want nothing re-embedded, 2 already done", sum2)
	}

	// A photo the store lacks is refused, named by the person's hash only,
	// and the run still succeeds (human output).
	dt.Publish(t, js, dt.Person("leonard", "hq"), dt.PhotoAdd(t, kp, oldSpace, "leonard", "p-9", dt.Encoding(t, galleryImg+"leonard/leonard1.png")))
	human := facegate(t, slices.DeleteFunc(append([]string(nil), args...), func(s string) bool { return s == "--json" })...)
	if human.code != 0 || !strings.Contains(human.stdout, "0 re-embedded, 2 already done, 1 refused") ||
		!strings.Contains(human.stdout, events.PersonHash("leonard")) || !strings.Contains(human.stdout, "p-9") ||
		!strings.Contains(human.stdout, reembed.ReasonPhotoMissing) || strings.Contains(human.stdout, "leonard") {
		t.Errorf("human output (exit %d):\n%s\n%s", human.code, human.stdout, human.stderr)
	}

	// Usage errors exit 2 before anything is published.
	for name, extra := range map[string][]string{
		"unknown model":    {"--model", "no-such-model"},
		"no photo store":   {"--photos", filepath.Join(t.TempDir(), "missing")},
		"no model":         {"--model", ""},
		"bad inbox prefix": {"--nats-inbox-prefix", "_INBOX.*"},
	} {
		if r := facegate(t, append(append([]string(nil), args...), extra...)...); r.code != 2 {
			t.Errorf("%s: exit %d, want 2 (stderr %s)", name, r.code, r.stderr)
		}
	}
	t.Setenv("FACEGATE_NO_MIRROR", "maybe")
	if r := facegate(t, args...); r.code != 2 || !strings.Contains(r.stderr, "FACEGATE_NO_MIRROR") {
		t.Errorf("bad FACEGATE_NO_MIRROR: exit %d, stderr %s; want 2 naming the variable", r.code, r.stderr)
	}
}
