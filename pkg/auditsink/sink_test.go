package auditsink_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/audit"
	"github.com/facegate/facegate/pkg/auditsink"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/events"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// Distinctive values that must never reach the log.
const (
	personA     = "person-7f3a9c1e"
	personB     = "person-b2d4e6f8"
	displayName = "Alice Zebedee-Example"
	badgeID     = "badge-991357"
	photoID     = "photo-of-" + personA
)

var sealedMarker = []byte("SEALED-TEMPLATE-BYTES-0123456789")

type env struct {
	js      jetstream.JetStream
	path    string
	key     *audit.SigningKey
	subject []byte
	reg     *prometheus.Registry
}

func newEnv(t *testing.T) *env {
	t.Helper()
	_, _, js := natstest.Run(t, embedded.Options{})
	ctx := context.Background()
	if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	k, err := audit.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return &env{js: js, path: filepath.Join(t.TempDir(), "audit.log"), key: k, subject: bytes.Repeat([]byte{7}, 32)}
}

func (e *env) config(mod ...func(*auditsink.Config)) auditsink.Config {
	e.reg = prometheus.NewRegistry()
	c := auditsink.Config{
		JetStream: e.js, Path: e.path, Signer: e.key, SubjectKey: e.subject, CheckpointEvery: 5,
		CreateConsumers: true, FetchWait: 200 * time.Millisecond, Batch: 4, Registerer: e.reg,
	}
	for _, m := range mod {
		m(&c)
	}
	return c
}

// start runs a sink until the returned stop is called; stop returns Run's
// error.
func (e *env) start(t *testing.T, cfg auditsink.Config) (*auditsink.Sink, func() error) {
	t.Helper()
	s, err := auditsink.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("auditsink.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	stopped := false
	var runErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			runErr = <-done
		}
		return runErr
	}
	t.Cleanup(func() { stop() })
	return s, stop
}

// waitHead polls until the log has at least n records. The deadline only
// bounds a hung test; the assertions are on content.
func waitHead(t *testing.T, s *auditsink.Sink, n uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.Head() < n {
		if time.Now().After(deadline) {
			t.Fatalf("log has %d records, waited for %d", s.Head(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pub(t *testing.T, js jetstream.JetStream, subject string, m proto.Message) uint64 {
	t.Helper()
	ack, err := bus.Publish(context.Background(), js, subject, m, nil)
	if err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
	return ack.Sequence
}

func decision(i int, person string) *facegatev1.Decision {
	d := &facegatev1.Decision{
		SchemaVersion: events.SchemaVersion, DecisionId: fmt.Sprintf("dec-%04d", i), Site: "site-a", Door: "door-1",
		Camera: "cam-1", Outcome: facegatev1.Outcome_OUTCOME_GRANT, Mode: facegatev1.Mode_MODE_IDENTIFY,
		Threshold: 0.4163, ModelId: "dlib-resnet34-128", PolicyRule: "rule-staff",
		DecidedTime: timestamppb.New(time.Date(2026, 11, 27, 9, 0, i, 0, time.UTC)),
	}
	if person != "" {
		d.PersonId = proto.String(person)
		d.Distance = proto.Float32(0.31)
	} else {
		d.Outcome = facegatev1.Outcome_OUTCOME_UNKNOWN
	}
	return d
}

func publishDecision(t *testing.T, js jetstream.JetStream, d *facegatev1.Decision) uint64 {
	subj, err := bus.DecisionsSubject(d.GetSite(), d.GetDoor())
	if err != nil {
		t.Fatal(err)
	}
	return pub(t, js, subj, d)
}

func publishChange(t *testing.T, js jetstream.JetStream, ch *facegatev1.EnrolmentChange) uint64 {
	t.Helper()
	ch.SchemaVersion = events.SchemaVersion
	if ch.Actor == nil {
		ch.Actor = &facegatev1.Actor{Kind: facegatev1.ActorKind_ACTOR_KIND_USER, Id: "operator-ann"}
	}
	kind, key, err := events.EnrolmentRoute(ch)
	if err != nil {
		t.Fatal(err)
	}
	subj, err := bus.EnrolmentsSubject(kind, key)
	if err != nil {
		t.Fatal(err)
	}
	return pub(t, js, subj, ch)
}

func enrolmentChanges() []*facegatev1.EnrolmentChange {
	return []*facegatev1.EnrolmentChange{
		{ChangeId: "ch-1", Change: &facegatev1.EnrolmentChange_PersonUpsert{PersonUpsert: &facegatev1.PersonUpsert{
			PersonId: personA, DisplayName: displayName, BadgeIds: []string{badgeID}, Site: "site-a"}}},
		{ChangeId: "ch-2", Change: &facegatev1.EnrolmentChange_PhotoAdd{PhotoAdd: &facegatev1.PhotoAdd{
			PersonId: personA, PhotoId: photoID, ContentSha256: strings.Repeat("ab", 32), MediaType: "image/jpeg",
			StorageRef: "photos/" + personA + "/1.jpg", SealedTemplate: sealedMarker,
			EmbeddingSpace: "dlib-resnet34-128+mirror", EmbeddingDimension: 128}}},
		{ChangeId: "ch-3", Change: &facegatev1.EnrolmentChange_GroupMembership{GroupMembership: &facegatev1.GroupMembership{
			PersonId: personA, GroupId: "staff", Member: true}}},
		{ChangeId: "ch-4", Change: &facegatev1.EnrolmentChange_DoorUpsert{DoorUpsert: &facegatev1.DoorUpsert{
			Site: "site-a", Door: "door-1", Mode: facegatev1.Mode_MODE_IDENTIFY, Cameras: []string{"cam-1"}}}},
		// The erasure tombstone: only the hash.
		{ChangeId: "ch-5", Actor: &facegatev1.Actor{Kind: facegatev1.ActorKind_ACTOR_KIND_SERVICE, Id: "enrolment-api"},
			Change: &facegatev1.EnrolmentChange_PersonDelete{PersonDelete: &facegatev1.PersonDelete{
				PersonIdSha256: events.PersonHash(personA)}}},
	}
}

func adminRecord(i int, person string) *facegatev1.AuditRecord {
	sum := sha256.Sum256([]byte(person))
	return &facegatev1.AuditRecord{
		SchemaVersion: events.SchemaVersion, Time: timestamppb.New(time.Date(2026, 11, 27, 10, 0, i, 0, time.UTC)),
		Kind:        facegatev1.AuditKind_AUDIT_KIND_ERASURE,
		Actor:       &facegatev1.Actor{Kind: facegatev1.ActorKind_ACTOR_KIND_USER, Id: "admin-bob"},
		SubjectHash: sum[:],
		Summary: []*facegatev1.AuditAttribute{
			{Key: "action", Value: "erase_person"}, {Key: "call", Value: fmt.Sprint(i)},
		},
	}
}

func publishAdmin(t *testing.T, js jetstream.JetStream, r *facegatev1.AuditRecord) uint64 {
	subj, err := bus.AuditSubject("api")
	if err != nil {
		t.Fatal(err)
	}
	return pub(t, js, subj, r)
}

type logRecord struct {
	Type    string         `json:"type"`
	Seq     uint64         `json:"seq"`
	Kind    string         `json:"kind"`
	Actor   string         `json:"actor"`
	Subject string         `json:"subject"`
	Payload map[string]any `json:"payload"`
}

func readLog(t *testing.T, path string) ([]logRecord, []byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var recs []logRecord
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte{'\n'}) {
		var r logRecord
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if r.Type == "record" {
			recs = append(recs, r)
		}
	}
	return recs, data
}

func verify(t *testing.T, e *env) audit.Report {
	t.Helper()
	f, err := os.Open(e.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return audit.Verify(f, []ed25519.PublicKey{e.key.PublicKey()})
}

// bySource groups records by stream and checks every source appears once
// and, per stream, in stream order.
func bySource(t *testing.T, recs []logRecord) map[string][]uint64 {
	t.Helper()
	out := map[string][]uint64{}
	seen := map[string]bool{}
	for _, r := range recs {
		s, _ := r.Payload["source"].(string)
		src, err := auditsink.ParseSource(s)
		if err != nil {
			t.Fatalf("record %d has source %q: %v", r.Seq, s, err)
		}
		if seen[s] {
			t.Fatalf("source %s appended twice (again at seq %d)", s, r.Seq)
		}
		seen[s] = true
		out[src.Stream] = append(out[src.Stream], src.Seq)
	}
	return out
}

func TestSinkChainsDecisionsEnrolmentsAndAdminRecords(t *testing.T) {
	e := newEnv(t)
	s, stop := e.start(t, e.config())

	var decSeqs, enrSeqs, admSeqs []uint64
	decSeqs = append(decSeqs, publishDecision(t, e.js, decision(1, personA)))
	decSeqs = append(decSeqs, publishDecision(t, e.js, decision(2, "")))
	decSeqs = append(decSeqs, publishDecision(t, e.js, decision(3, personB)))
	for _, ch := range enrolmentChanges() {
		enrSeqs = append(enrSeqs, publishChange(t, e.js, ch))
	}
	admSeqs = append(admSeqs, publishAdmin(t, e.js, adminRecord(1, personA)))
	total := uint64(len(decSeqs) + len(enrSeqs) + len(admSeqs))
	waitHead(t, s, total)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	recs, data := readLog(t, e.path)
	if uint64(len(recs)) != total {
		t.Fatalf("log has %d records, want %d", len(recs), total)
	}
	src := bySource(t, recs)
	for stream, want := range map[string][]uint64{bus.StreamDecisions: decSeqs, bus.StreamEnrolments: enrSeqs, bus.StreamAudit: admSeqs} {
		if fmt.Sprint(src[stream]) != fmt.Sprint(want) {
			t.Errorf("%s sources in log order %v, want %v", stream, src[stream], want)
		}
	}

	// Nothing that identifies a person or is biometric reaches the file.
	for _, secret := range [][]byte{[]byte(personA), []byte(personB), []byte(displayName), []byte(badgeID), []byte(photoID), sealedMarker,
		[]byte(events.PersonHash(personA)) /* the plain hash is kept only keyed */} {
		if bytes.Contains(data, secret) {
			t.Errorf("the log contains %q", secret)
		}
	}

	// One subject for person A across a decision, an enrolment, the
	// tombstone (which only knew the hash) and the API's erasure record.
	wantA := auditsink.PersonSubject(e.subject, personA)
	wantB := audit.SubjectHash(e.subject, events.PersonHash(personB))
	kinds := map[string]int{}
	for _, r := range recs {
		kinds[r.Kind]++
		s := r.Payload["source"].(string)
		switch {
		case s == fmt.Sprintf("DECISIONS/%d", decSeqs[0]):
			if r.Subject != wantA || r.Payload["outcome"] != "GRANT" || r.Payload["mode"] != "IDENTIFY" || r.Payload["door"] != "door-1" ||
				r.Payload["decision_id"] != "dec-0001" || r.Payload["policy_rule"] != "rule-staff" || r.Payload["camera"] != "cam-1" {
				t.Errorf("decision record %+v", r)
			}
			if d, _ := r.Payload["distance"].(float64); d < 0.30 || d > 0.32 {
				t.Errorf("distance %v", r.Payload["distance"])
			}
		case s == fmt.Sprintf("DECISIONS/%d", decSeqs[1]):
			if r.Subject != "" || r.Payload["outcome"] != "UNKNOWN" {
				t.Errorf("no-match decision %+v", r)
			}
		case s == fmt.Sprintf("DECISIONS/%d", decSeqs[2]):
			if r.Subject != wantB {
				t.Errorf("decision for B has subject %q", r.Subject)
			}
		case s == fmt.Sprintf("ENROLMENTS/%d", enrSeqs[0]):
			if r.Kind != "enrolment" || r.Subject != wantA || r.Actor != "user:operator-ann" || r.Payload["change"] != "person_upsert" || r.Payload["badge_count"] != 1.0 {
				t.Errorf("person upsert record %+v", r)
			}
		case s == fmt.Sprintf("ENROLMENTS/%d", enrSeqs[1]):
			if r.Subject != wantA || r.Payload["change"] != "photo_add" || r.Payload["sealed"] != true {
				t.Errorf("photo add record %+v", r)
			}
		case s == fmt.Sprintf("ENROLMENTS/%d", enrSeqs[3]):
			if r.Subject != "" || r.Payload["change"] != "door_upsert" {
				t.Errorf("door record %+v", r)
			}
		case s == fmt.Sprintf("ENROLMENTS/%d", enrSeqs[4]):
			if r.Kind != "erasure" || r.Subject != wantA || r.Actor != "service:enrolment-api" || r.Payload["tombstone"] != true {
				t.Errorf("tombstone record %+v", r)
			}
		case s == fmt.Sprintf("AUDIT/%d", admSeqs[0]):
			if r.Kind != "erasure" || r.Subject != wantA || r.Actor != "user:admin-bob" || r.Payload["action"] != "erase_person" || r.Payload["service"] != "api" {
				t.Errorf("admin record %+v", r)
			}
		}
	}
	if kinds["decision"] != 3 || kinds["enrolment"] != 4 || kinds["erasure"] != 2 {
		t.Errorf("record kinds %v", kinds)
	}
	if got := testutil.ToFloat64(mustCounter(t, e.reg, "facegate_audit_records_total", "decision")); got != 3 {
		t.Errorf("facegate_audit_records_total{kind=decision} = %v", got)
	}

	// The lag gauge has a series per stream.
	if n := testutil.CollectAndCount(e.reg, "facegate_audit_lag"); n != 3 {
		t.Errorf("facegate_audit_lag has %d series, want 3", n)
	}

	r := verify(t, e)
	if !r.OK() || r.LastSeq != total || r.SignedThrough != total {
		t.Fatalf("verify: ok=%v last=%d signed=%d: %v", r.OK(), r.LastSeq, r.SignedThrough, r.Err())
	}
	// With CheckpointEvery 5, 9 records: checkpoints at 5 and (Close) 9.
	if r.Checkpoints != 2 {
		t.Errorf("%d checkpoints, want 2", r.Checkpoints)
	}
}

func mustCounter(t *testing.T, reg *prometheus.Registry, name, label string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == label {
					c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
					c.Add(m.GetCounter().GetValue())
					return c
				}
			}
		}
	}
	t.Fatalf("no %s{%s}", name, label)
	return nil
}

// A sink whose acks never arrive sees every message again after AckWait,
// in the same run and after a restart; the log still has each once.
func TestSinkRedeliveryAppendsOnce(t *testing.T) {
	e := newEnv(t)
	lossy := e.config(auditsink.DropAcks, func(c *auditsink.Config) { c.AckWait = time.Second })
	s, stop := e.start(t, lossy)
	for i := 1; i <= 6; i++ {
		publishDecision(t, e.js, decision(i, personA))
	}
	publishChange(t, e.js, enrolmentChanges()[0])
	publishAdmin(t, e.js, adminRecord(1, personA))
	waitHead(t, s, 8)
	// Wait until the server has redelivered at least one message and the
	// sink skipped it.
	deadline := time.Now().Add(30 * time.Second)
	for testutil.ToFloat64(skipped(t, e.reg)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no redelivery was skipped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Restart with working acks: the unacked messages are delivered again,
	// plus new ones.
	for i := 7; i <= 9; i++ {
		publishDecision(t, e.js, decision(i, personB))
	}
	s2, stop2 := e.start(t, e.config())
	waitHead(t, s2, 11)
	// Everything must end up acknowledged, without new records.
	cons, err := e.js.Consumer(context.Background(), bus.StreamDecisions, "audit")
	if err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		info, err := cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream == 9 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("decisions consumer never caught up: %+v", info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	recs, _ := readLog(t, e.path)
	src := bySource(t, recs) // fails on any duplicate
	if len(src[bus.StreamDecisions]) != 9 || len(src[bus.StreamEnrolments]) != 1 || len(src[bus.StreamAudit]) != 1 {
		t.Fatalf("sources %v", src)
	}
	if r := verify(t, e); !r.OK() {
		t.Fatal(r.Err())
	}
}

func skipped(t *testing.T, reg *prometheus.Registry) prometheus.Collector {
	t.Helper()
	mfs, _ := reg.Gather()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	for _, mf := range mfs {
		if mf.GetName() == "facegate_audit_redeliveries_skipped_total" {
			for _, m := range mf.GetMetric() {
				c.Add(m.GetCounter().GetValue())
			}
		}
	}
	return c
}

// Garbage on each stream becomes a "malformed" record without its bytes
// and the message is terminated, not redelivered.
func TestSinkRecordsMalformedMessages(t *testing.T) {
	e := newEnv(t)
	s, stop := e.start(t, e.config())
	ctx := context.Background()
	garbage := []byte("\xff\xfe not protobuf " + personA)
	var seqs []uint64
	for _, subj := range []string{"facegate.decisions.site-a.door-1", "facegate.enrolments.person." + personA, "facegate.audit.api"} {
		ack, err := e.js.Publish(ctx, subj, garbage)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ack.Sequence)
	}
	// A decision valid for the bus but whose payload the log refuses (an
	// over-long policy rule could smuggle data) and an admin record
	// carrying a biometric-looking key.
	d := decision(1, personA)
	d.PolicyRule = strings.Repeat("x", 2000)
	publishDecision(t, e.js, d)
	bad := adminRecord(2, personA)
	bad.Summary = append(bad.Summary, &facegatev1.AuditAttribute{Key: "face_embedding", Value: "0.1,0.2"})
	publishAdmin(t, e.js, bad)
	// Then a good one, to show the stream goes on.
	publishDecision(t, e.js, decision(2, personA))
	waitHead(t, s, 6)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	recs, data := readLog(t, e.path)
	if len(recs) != 6 {
		t.Fatalf("%d records", len(recs))
	}
	bySource(t, recs)
	malformed := 0
	for _, r := range recs {
		if r.Kind == string(auditsink.KindMalformed) {
			malformed++
			if r.Payload["reason"] == "" || r.Payload["size"] == nil {
				t.Errorf("malformed record without reason or size: %+v", r)
			}
		}
	}
	if malformed != 5 {
		t.Fatalf("%d malformed records, want 5", malformed)
	}
	if bytes.Contains(data, []byte(personA)) || bytes.Contains(data, []byte("not protobuf")) || bytes.Contains(data, []byte("0.1,0.2")) {
		t.Fatal("a malformed message's content reached the log")
	}
	for _, stream := range []string{bus.StreamDecisions, bus.StreamEnrolments, bus.StreamAudit} {
		cons, _ := e.js.Consumer(ctx, stream, "audit")
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending != 0 || info.NumRedelivered != 0 {
			t.Errorf("%s: %d pending, %d redelivered after Term", stream, info.NumAckPending, info.NumRedelivered)
		}
	}
	if r := verify(t, e); !r.OK() {
		t.Fatal(r.Err())
	}
}

// A quiet log is signed on time, not only every CheckpointEvery records.
func TestSinkTimedCheckpoint(t *testing.T) {
	e := newEnv(t)
	s, stop := e.start(t, e.config(func(c *auditsink.Config) {
		c.CheckpointEvery = 1000
		c.CheckpointInterval = 100 * time.Millisecond
	}))
	publishDecision(t, e.js, decision(1, personA))
	waitHead(t, s, 1)
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := verify(t, e)
		if r.SignedThrough == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("record 1 never signed while running: %+v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
}

func TestNewRefusesBadConfig(t *testing.T) {
	e := newEnv(t)
	for name, mod := range map[string]func(*auditsink.Config){
		"no jetstream":   func(c *auditsink.Config) { c.JetStream = nil },
		"no path":        func(c *auditsink.Config) { c.Path = "" },
		"no signer":      func(c *auditsink.Config) { c.Signer = nil },
		"short key":      func(c *auditsink.Config) { c.SubjectKey = []byte("short") },
		"bad durable":    func(c *auditsink.Config) { c.Durable = "a.b" },
		"no consumer":    func(c *auditsink.Config) { c.CreateConsumers = false; c.Durable = "never-created" },
		"negative batch": func(c *auditsink.Config) { c.Batch = -1 },
	} {
		if s, err := auditsink.New(context.Background(), e.config(mod)); err == nil {
			s.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}

// BenchmarkSinkDecisions measures end-to-end throughput: decisions already
// in the stream, appended with one fsync per fetched batch and acked.
// Run: go test -run XXX -bench SinkDecisions -benchtime 3000x ./pkg/auditsink/
func BenchmarkSinkDecisions(b *testing.B) {
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			_, _, js := natstest.Run(b, embedded.Options{})
			ctx := context.Background()
			if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
				b.Fatal(err)
			}
			for i := 0; i < b.N; i++ {
				d := decision(i, personA)
				if _, err := bus.Publish(ctx, js, "facegate.decisions.site-a.door-1", d, nil); err != nil {
					b.Fatal(err)
				}
			}
			k, _ := audit.GenerateKey()
			s, err := auditsink.New(ctx, auditsink.Config{JetStream: js, Path: filepath.Join(b.TempDir(), "audit.log"), Signer: k,
				SubjectKey: bytes.Repeat([]byte{1}, 32), CreateConsumers: true, Batch: batch, FetchWait: 100 * time.Millisecond})
			if err != nil {
				b.Fatal(err)
			}
			runCtx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			b.ResetTimer()
			go func() { done <- s.Run(runCtx) }()
			for s.Head() < uint64(b.N) {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// A sink that died holding fetched, unappended messages: its successor is
// handed newer messages first and the old ones only after AckWait. They
// must still be appended (a per-stream high-water mark would skip them as
// already seen), and nothing twice.
func TestSinkAppendsMessagesAPredecessorHeld(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cons, err := e.js.CreateConsumer(ctx, bus.StreamDecisions, jetstream.ConsumerConfig{
		Durable: "audit", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 2 * time.Second, MaxAckPending: 100})
	if err != nil {
		t.Fatal(err)
	}
	var held []uint64
	for i := 1; i <= 3; i++ {
		held = append(held, publishDecision(t, e.js, decision(i, personA)))
	}
	// The "predecessor": fetches and dies without appending or acking.
	batch, err := cons.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range batch.Messages() {
		n++
	}
	if n != 3 {
		t.Fatalf("predecessor fetched %d", n)
	}
	var fresh []uint64
	for i := 4; i <= 5; i++ {
		fresh = append(fresh, publishDecision(t, e.js, decision(i, personA)))
	}
	s, stop := e.start(t, e.config())
	waitHead(t, s, 5)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	recs, _ := readLog(t, e.path)
	got := bySource(t, recs)[bus.StreamDecisions] // fails on duplicates
	if len(got) != 5 {
		t.Fatalf("decision sources in the log: %v, want %v and %v", got, fresh, held)
	}
	// The held messages came after the fresh ones: the case a high-water
	// mark gets wrong.
	if got[0] != fresh[0] {
		t.Logf("log order %v (the redelivery came first; the test still checks completeness)", got)
	}
}
