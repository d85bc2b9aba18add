// Package erasure_test checks that deleting a person erases them from every
// store facegate keeps: it runs the all-in-one (embedded NATS with
// JetStream on disk, directory + index, matcher, API, photo store, audit
// log), enrols a person, lets them through a door, deletes them through the
// API, and then searches everything for their id, their photo bytes and
// their encodings.
package erasure_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/protobuf/proto"

	"github.com/facegate/facegate/pkg/allinone"
	"github.com/facegate/facegate/pkg/api"
	"github.com/facegate/facegate/pkg/apiclient"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/directory"
	"github.com/facegate/facegate/pkg/gateway"
	"github.com/facegate/facegate/pkg/gateway/source"
	"github.com/facegate/facegate/pkg/sealed"
	"github.com/facegate/facegate/pkg/testenv"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// syncBuffer collects the stack's logs (JSON lines, info level: what a
// production deployment keeps).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) Sync() error { return nil }
func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

func photo(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(testenv.Dataset(t, filepath.Join("face-api.js", "examples", "images", strings.TrimRight(name, "0123456789"), name+".png")))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestErasureLeavesNothing(t *testing.T) {
	testenv.Models(t)
	const (
		person = "erasure-subject-5c1e9a"
		other  = "bystander-77d2"
		site   = "hq"
	)
	enrolPhotos := [][]byte{photo(t, "amy1"), photo(t, "amy2")}
	framePhoto := photo(t, "amy4")
	// After the erasure another photo of her passes the camera: a
	// passer-by the system no longer knows.
	laterPhoto := photo(t, "amy5")

	data, keysDir := t.TempDir(), t.TempDir()
	logs := &syncBuffer{}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), logs, zap.InfoLevel))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	upCtx, stopUp := context.WithCancel(ctx)
	infoc, upErr := make(chan allinone.Info, 1), make(chan error, 1)
	go func() {
		upErr <- allinone.Run(upCtx, allinone.Config{DataDir: data, KeysDir: keysDir, APIAddr: "127.0.0.1:0", Log: log}, func(i allinone.Info) { infoc <- i })
	}()
	var info allinone.Info
	select {
	case info = <-infoc:
	case err := <-upErr:
		t.Fatalf("allinone: %v", err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopUp()
			if err := <-upErr; err != nil {
				t.Errorf("allinone stopped with %v", err)
			}
		}
	}
	defer stop()
	token, err := os.ReadFile(info.AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	cl := apiclient.New(info.APIURL, string(token), nil)

	// Enrol the person (two photos) and a bystander, a door and a policy.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cl.PutGroup(ctx, "staff", "Staff"))
	_, err = cl.CreatePerson(ctx, apiclient.Person{PersonID: person, DisplayName: "Amy", Site: site, BadgeIDs: []string{"badge-" + person}, Groups: []string{"staff"}})
	must(err)
	_, err = cl.AddPhotos(ctx, person, apiclient.Photo{Name: "a.png", Data: enrolPhotos[0]}, apiclient.Photo{Name: "b.png", Data: enrolPhotos[1]})
	must(err)
	_, err = cl.CreatePerson(ctx, apiclient.Person{PersonID: other, DisplayName: "Sheldon", Site: site, Groups: []string{"staff"}})
	must(err)
	_, err = cl.AddPhotos(ctx, other, apiclient.Photo{Name: "s.png", Data: photo(t, "sheldon1")})
	must(err)
	must(cl.PutDoor(ctx, site, "lobby", apiclient.Door{DisplayName: "Lobby", Mode: "identify", Cameras: []string{"cam-1"}}))
	must(cl.PutPolicy(ctx, "staff-in", apiclient.Policy{DisplayName: "Staff", Groups: []string{"staff"},
		Doors: []api.DoorRef{{Site: site, Door: "lobby"}}, Effect: "allow"}))

	nc, err := nats.Connect(info.NATSURL)
	must(err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	must(err)

	// The person's templates as stored (sealed in the stream): decrypted
	// here with the KEKs so their plaintext bytes can be searched for.
	kp, err := sealed.OpenFileKeyProvider(filepath.Join(keysDir, "kek"))
	must(err)
	defer kp.Close()
	var templates [][]byte
	for _, m := range streamMessages(t, ctx, js, bus.StreamEnrolments) {
		var ch facegatev1.EnrolmentChange
		must(proto.Unmarshal(m.Data, &ch))
		if pa := ch.GetPhotoAdd(); pa != nil && pa.GetPersonId() == person {
			plain, err := sealed.Open(ctx, kp, pa.GetSealedTemplate(), sealed.TemplateContext(pa.GetEmbeddingSpace(), pa.GetPhotoId()))
			must(err)
			templates = append(templates, plain)
		}
	}
	if len(templates) != 2 {
		t.Fatalf("found %d sealed templates of the person in ENROLMENTS, want 2", len(templates))
	}

	// Use them: a camera frame of the person at the door -> a grant that
	// names them.
	decisions := make(chan *facegatev1.Decision, 16)
	sub, err := nc.Subscribe("facegate.decisions.>", func(m *nats.Msg) {
		var d facegatev1.Decision
		if proto.Unmarshal(m.Data, &d) == nil {
			decisions <- &d
		}
	})
	must(err)
	defer sub.Unsubscribe() //nolint:errcheck
	fr, hdr, err := gateway.FrameMessage(site, "test-gw", "cam-1", 1, source.Frame{Data: framePhoto,
		Encoding: facegatev1.ImageEncoding_IMAGE_ENCODING_PNG, Width: 150, Height: 150, Captured: time.Now()})
	must(err)
	subj, _ := bus.FramesSubject(site, "cam-1")
	_, err = bus.Publish(ctx, js, subj, fr, hdr)
	must(err)
	select {
	case d := <-decisions:
		if d.GetOutcome() != facegatev1.Outcome_OUTCOME_GRANT || d.GetPersonId() != person {
			t.Fatalf("decision %v for %q, want a grant for the person", d.GetOutcome(), d.GetPersonId())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no decision for the person's frame within 60 s")
	}

	// The live embedding of the granted frame (FACES), to search for too.
	var live []byte
	for _, m := range streamMessages(t, ctx, js, bus.StreamFaces) {
		var ev facegatev1.FaceEvent
		must(proto.Unmarshal(m.Data, &ev))
		if ev.GetFrame().GetSequence() == 1 && len(ev.GetFaces()) > 0 {
			for _, v := range ev.GetFaces()[0].GetEmbedding() {
				live = binary.LittleEndian.AppendUint32(live, math.Float32bits(v))
			}
		}
	}
	if len(live) == 0 {
		t.Fatal("no face event with an embedding for the granted frame")
	}

	// Erase.
	must(cl.DeletePerson(ctx, person))
	var ae *apiclient.Error
	if _, err := cl.GetPerson(ctx, person); !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("GET after erasure: %v, want 404", err)
	}
	// The same frame again: nobody is recognised any more (the index).
	fr2, hdr2, err := gateway.FrameMessage(site, "test-gw", "cam-1", 2, source.Frame{Data: laterPhoto,
		Encoding: facegatev1.ImageEncoding_IMAGE_ENCODING_PNG, Width: 150, Height: 150, Captured: time.Now().Add(6 * time.Second)})
	must(err)
	_, err = bus.Publish(ctx, js, subj, fr2, hdr2)
	must(err)
	select {
	case d := <-decisions:
		if d.GetPersonId() == person {
			t.Fatalf("after erasure a decision still names the person: %v", d)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no decision for the frame after erasure within 60 s")
	}
	// Let the audit consumer chain the erasure, then stop everything so
	// the snapshot and the audit log are final on disk.
	time.Sleep(2 * time.Second)
	streams := map[string][]*jetstream.RawStreamMsg{}
	names := js.StreamNames(ctx)
	for n := range names.Name() {
		streams[n] = streamMessages(t, ctx, js, n)
	}
	if len(streams) < 7 {
		t.Fatalf("only %d streams listed: %v", len(streams), streams)
	}
	stop()

	// What must not be found anywhere.
	needles := map[string][]byte{"person id": []byte(person)}
	for i, p := range enrolPhotos {
		needles["enrolment photo "+string(rune('1'+i))] = p[len(p)/2 : len(p)/2+256]
	}
	needles["granted camera frame"] = framePhoto[len(framePhoto)/2 : len(framePhoto)/2+256]
	needles["live embedding of the granted frame"] = live
	for i, tb := range templates {
		needles["template "+string(rune('1'+i))] = tb
		needles["template "+string(rune('1'+i))+" first 8 values"] = tb[:32]
		// The same values as float64 (JSON or other encoders).
		f64 := make([]byte, 0, 64)
		for j := 0; j < 8; j++ {
			f64 = binary.LittleEndian.AppendUint64(f64, math.Float64bits(float64(math.Float32frombits(binary.LittleEndian.Uint32(tb[4*j:])))))
		}
		needles["template "+string(rune('1'+i))+" as float64"] = f64
	}
	search := func(where string, hay []byte) {
		for what, n := range needles {
			if bytes.Contains(hay, n) {
				t.Errorf("%s still holds the %s", where, what)
			}
		}
	}

	// 1. Every stream, through the JetStream API (subjects, headers, data).
	for name, msgs := range streams {
		for _, m := range msgs {
			var h bytes.Buffer
			for k, vs := range m.Header {
				h.WriteString(k + ":" + strings.Join(vs, ",") + "\n")
			}
			search("stream "+name+" message "+m.Subject, append(append([]byte(m.Subject+"\n"), h.Bytes()...), m.Data...))
		}
	}
	// 2. Every file under the data and keys directories (JetStream store,
	// photo store, snapshots, audit log, tokens).
	files := 0
	for _, root := range []string{data, keysDir} {
		must(filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			files++
			search("file "+strings.TrimPrefix(p, root), b)
			return nil
		}))
	}
	if files < 5 {
		t.Fatalf("only %d files searched", files)
	}
	// 3. The sealed stores, opened with the keys: the directory snapshot
	// (access state + every template) and the photo store.
	snap, err := directory.ReadSnapshotFile(ctx, kp, filepath.Join(data, "directory", directory.SnapshotFile))
	must(err)
	plainSnap, err := json.Marshal(snap)
	must(err)
	search("the directory snapshot (decrypted)", plainSnap)
	var bystander bool
	for _, sp := range snap.Spaces {
		for _, tp := range sp.Templates {
			if tp.Person == person {
				t.Errorf("the snapshot still holds template %s of the person", tp.ID)
			}
			bystander = bystander || tp.Person == other
		}
	}
	if !bystander {
		t.Error("the bystander's template is missing from the snapshot: the search above proves nothing")
	}
	photoFiles := 0
	must(filepath.WalkDir(filepath.Join(data, "photos"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		photoFiles++
		return nil
	}))
	if photoFiles != 1 {
		t.Errorf("%d files in the photo store, want 1 (the bystander's photo)", photoFiles)
	}
	// 4. The logs of every service.
	search("the service logs", logs.Bytes())
	if len(logs.Bytes()) == 0 {
		t.Error("no logs captured: the log search proves nothing")
	}
	// 5. The audit log recorded the erasure (by hash only, searched above).
	al, err := os.ReadFile(info.AuditLog)
	must(err)
	if !bytes.Contains(al, []byte("erasure")) {
		t.Error("the audit log has no erasure record")
	}
}

// streamMessages reads every message of a stream through an ordered
// consumer.
func streamMessages(t *testing.T, ctx context.Context, js jetstream.JetStream, name string) []*jetstream.RawStreamMsg {
	t.Helper()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("stream %s seq %d: %v", name, seq, err)
		}
		out = append(out, m)
	}
	return out
}
