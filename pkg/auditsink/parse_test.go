package auditsink

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/facegate/facegate/pkg/audit"
	"github.com/facegate/facegate/pkg/events"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

func TestScanBackwardsEveryChunkSize(t *testing.T) {
	lines := []string{"a", "", "bbb", strings.Repeat("c", 40), "d"}
	data := []byte(strings.Join(lines, "\n") + "\n" + "torn-without-newline")
	for chunk := 1; chunk <= len(data)+1; chunk++ {
		var got []string
		err := scanBackwards(bytes.NewReader(data), int64(len(data)), chunk, func(l []byte) bool {
			got = append(got, string(l))
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"d", strings.Repeat("c", 40), "bbb", "", "a"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("chunk %d: %q, want %q", chunk, got, want)
		}
	}
	// Stops when told.
	n := 0
	scanBackwards(bytes.NewReader(data), int64(len(data)), 3, func([]byte) bool { n++; return n < 2 })
	if n != 2 {
		t.Fatalf("called %d times after stop", n)
	}
	// No complete line at all.
	scanBackwards(bytes.NewReader([]byte("x")), 1, 4, func([]byte) bool { t.Fatal("called"); return true })
}

func TestParseSource(t *testing.T) {
	if s, err := ParseSource("DECISIONS/42"); err != nil || s != (Source{"DECISIONS", 42}) {
		t.Fatalf("%v %v", s, err)
	}
	for _, bad := range []string{"", "/1", "DECISIONS/", "DECISIONS/0", "DECISIONS/01", "DECISIONS/-1", "dec/1", "A B/1", "X/18446744073709551616"} {
		if _, err := ParseSource(bad); err == nil {
			t.Errorf("ParseSource(%q) accepted", bad)
		}
	}
}

// The sources read back from a log's tail are exactly those within the
// horizon of its last record.
func TestReadRecentSources(t *testing.T) {
	k, _ := audit.GenerateKey()
	path := filepath.Join(t.TempDir(), "audit.log")
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	i := 0
	l, err := audit.Open(t.Context(), audit.Options{Path: path, Signer: k, SubjectKey: bytes.Repeat([]byte{1}, 32), CheckpointEvery: 3,
		Now: func() time.Time { i++; return base.Add(time.Duration(i) * time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 10; n++ {
		p := map[string]any{"source": fmt.Sprintf("DECISIONS/%d", n)}
		if n == 5 {
			p = map[string]any{"note": "no source"}
		}
		if _, err := l.Append(t.Context(), audit.Event{Kind: "decision", Actor: "t", Payload: p}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	// Checkpoints also advance the clock; records are >= 1 minute apart.
	seen, err := readRecentSources(path, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for n := uint64(1); n <= 10; n++ {
		_, ok := seen[Source{"DECISIONS", n}]
		if n >= 8 && !ok {
			t.Errorf("DECISIONS/%d within the horizon not read", n)
		}
		if n <= 5 && ok {
			t.Errorf("DECISIONS/%d beyond the horizon read", n)
		}
	}
	if s, err := readRecentSources(filepath.Join(t.TempDir(), "absent"), time.Hour); err != nil || len(s) != 0 {
		t.Fatalf("absent log: %v %v", s, err)
	}
}

func TestSubjectKeyFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "subject.key")
	if err := GenerateSubjectKey(p); err != nil {
		t.Fatal(err)
	}
	if err := GenerateSubjectKey(p); err == nil {
		t.Fatal("overwrote a subject key")
	}
	k, err := LoadSubjectKey(p)
	if err != nil || len(k) != SubjectKeySize {
		t.Fatalf("%d bytes, %v", len(k), err)
	}
	os.Chmod(p, 0o644)
	if _, err := LoadSubjectKey(p); !errors.Is(err, audit.ErrKeyPermissions) {
		t.Fatalf("0644 key: %v", err)
	}
	for _, bad := range []string{"zz", "abcd", ""} {
		if _, err := ParseSubjectKey([]byte(bad)); err == nil {
			t.Errorf("ParseSubjectKey(%q) accepted", bad)
		}
	}
}

func TestConvertRefusals(t *testing.T) {
	for name, ch := range map[string]*facegatev1.EnrolmentChange{
		"no actor":  {SchemaVersion: 1, Change: &facegatev1.EnrolmentChange_GroupDelete{GroupDelete: &facegatev1.GroupDelete{GroupId: "g"}}},
		"no change": {SchemaVersion: 1, Actor: &facegatev1.Actor{Kind: facegatev1.ActorKind_ACTOR_KIND_USER, Id: "u"}},
		"bad tombstone": {SchemaVersion: 1, Actor: &facegatev1.Actor{Kind: facegatev1.ActorKind_ACTOR_KIND_USER, Id: "u"},
			Change: &facegatev1.EnrolmentChange_PersonDelete{PersonDelete: &facegatev1.PersonDelete{PersonIdSha256: "nothex"}}},
		"control actor": {SchemaVersion: 1, Actor: &facegatev1.Actor{Kind: facegatev1.ActorKind_ACTOR_KIND_USER, Id: "a\nb"},
			Change: &facegatev1.EnrolmentChange_GroupDelete{GroupDelete: &facegatev1.GroupDelete{GroupId: "g"}}},
	} {
		b, _ := proto.Marshal(ch)
		if _, err := EnrolmentEvent(nil, b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	r := &facegatev1.AuditRecord{SchemaVersion: 1, Kind: facegatev1.AuditKind_AUDIT_KIND_MODEL,
		Actor: &facegatev1.Actor{Kind: facegatev1.ActorKind_ACTOR_KIND_SERVICE, Id: "operator"}, SubjectHash: []byte("short")}
	b, _ := proto.Marshal(r)
	if _, err := AdminEvent(nil, b); !errors.Is(err, ErrMalformed) {
		t.Errorf("short subject hash: %v", err)
	}
	r.SubjectHash = []byte(strings.ToUpper(events.PersonHash("p")))
	r.Summary = []*facegatev1.AuditAttribute{{Key: "Bad Key", Value: "v"}}
	b, _ = proto.Marshal(r)
	if _, err := AdminEvent(nil, b); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad summary key: %v", err)
	}
	r.Summary = []*facegatev1.AuditAttribute{{Key: "rollout", Value: "v2"}}
	b, _ = proto.Marshal(r)
	ev, err := AdminEvent(nil, b)
	if err != nil || ev.SubjectID != events.PersonHash("p") || ev.Kind != "model" || ev.Actor != "service:operator" {
		t.Errorf("upper-case hex subject: %+v %v", ev, err)
	}
}

// Fuzz targets: every converter and the tail parser take bytes from the
// bus or the disk. They must not panic, and a converted event must never
// carry the raw person id of the message.
// idMarker replaces the person id of fuzzed messages: the converted event
// must not contain it unless the rest of the message already did.
const idMarker = "person-id-marker-5e1f"

func FuzzDecisionEvent(f *testing.F) {
	d := &facegatev1.Decision{SchemaVersion: 1, DecisionId: "d", Site: "s", Door: "d", Outcome: 1, Mode: 2, PersonId: proto.String("p")}
	b, _ := proto.Marshal(d)
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var d facegatev1.Decision
		if proto.Unmarshal(data, &d) == nil && d.PersonId != nil {
			d.PersonId = nil
			rest, _ := proto.Marshal(&d)
			d.PersonId = proto.String(idMarker)
			if bytes.Contains(rest, []byte(idMarker)) {
				return
			}
			data, _ = proto.Marshal(&d)
		}
		ev, err := DecisionEvent(nil, data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if d.PersonId != nil {
			checkNoID(t, ev, idMarker)
		}
	})
}

func FuzzEnrolmentEvent(f *testing.F) {
	for _, ch := range []*facegatev1.EnrolmentChange{
		{SchemaVersion: 1, Actor: &facegatev1.Actor{Kind: 1, Id: "u"}, Change: &facegatev1.EnrolmentChange_PersonUpsert{PersonUpsert: &facegatev1.PersonUpsert{PersonId: "p", DisplayName: "N"}}},
		{SchemaVersion: 1, Actor: &facegatev1.Actor{Kind: 2, Id: "s"}, Change: &facegatev1.EnrolmentChange_PersonDelete{PersonDelete: &facegatev1.PersonDelete{PersonIdSha256: events.PersonHash("x")}}},
		{SchemaVersion: 1, Actor: &facegatev1.Actor{Kind: 1, Id: "u"}, Change: &facegatev1.EnrolmentChange_PhotoAdd{PhotoAdd: &facegatev1.PhotoAdd{PersonId: "p", PhotoId: "ph", SealedTemplate: []byte{1, 2}}}},
	} {
		b, _ := proto.Marshal(ch)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var ch facegatev1.EnrolmentChange
		marked := false
		if proto.Unmarshal(data, &ch) == nil {
			// Put the marker where the person id goes, if the change has one.
			set := func(id *string) {
				*id = ""
				rest, _ := proto.Marshal(&ch)
				if !bytes.Contains(rest, []byte(idMarker)) {
					*id, marked = idMarker, true
				}
			}
			switch c := ch.GetChange().(type) {
			case *facegatev1.EnrolmentChange_PersonUpsert:
				set(&c.PersonUpsert.PersonId)
			case *facegatev1.EnrolmentChange_PhotoAdd:
				set(&c.PhotoAdd.PersonId)
			case *facegatev1.EnrolmentChange_PhotoRemove:
				set(&c.PhotoRemove.PersonId)
			case *facegatev1.EnrolmentChange_GroupMembership:
				set(&c.GroupMembership.PersonId)
			case *facegatev1.EnrolmentChange_PersonDelete:
				if c.PersonDelete.GetPersonId() != "" {
					set(&c.PersonDelete.PersonId)
				}
			}
			if marked {
				data, _ = proto.Marshal(&ch)
			}
		}
		ev, err := EnrolmentEvent(nil, data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if marked {
			checkNoID(t, ev, idMarker)
		}
	})
}

func FuzzAdminEvent(f *testing.F) {
	r := &facegatev1.AuditRecord{SchemaVersion: 1, Kind: 3, Actor: &facegatev1.Actor{Kind: 1, Id: "u"}, SubjectHash: make([]byte, 32),
		Summary: []*facegatev1.AuditAttribute{{Key: "a", Value: "b"}}}
	b, _ := proto.Marshal(r)
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := AdminEvent(nil, data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if ev.SubjectID != "" && len(ev.SubjectID) != 64 {
			t.Fatalf("subject %q is not a hash", ev.SubjectID)
		}
	})
}

func FuzzParseTailLine(f *testing.F) {
	f.Add([]byte(`{"type":"record","seq":1,"time":"2026-01-01T00:00:00Z","kind":"decision","actor":"a","subject":"","payload":{"source":"DECISIONS/3"},"prev":"00","hash":"00"}`))
	f.Add([]byte(`{"type":"checkpoint","seq":1}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		src, _, ok := ParseTailLine(line)
		if ok && (src.Seq == 0 || src.Stream == "") {
			t.Fatalf("accepted %+v", src)
		}
		if ok {
			if again, err := ParseSource(src.String()); err != nil || again != src {
				t.Fatalf("source %v does not round-trip: %v", src, err)
			}
		}
	})
}

func checkNoID(t *testing.T, ev Event, id string) {
	t.Helper()
	if id == "" {
		return
	}
	if ev.SubjectID != events.PersonHash(id) {
		t.Fatalf("subject %q is not the person hash", ev.SubjectID)
	}
	if strings.Contains(fmt.Sprint(ev.Payload), id) || strings.Contains(ev.Actor, id) {
		t.Fatalf("event carries the person id %q: %+v", id, ev)
	}
}

// Event is audit.Event, named here for checkNoID's signature.
type Event = audit.Event
