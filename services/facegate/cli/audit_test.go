package cli_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

const auditPerson = "person-c0ffee-4711"

// auditFixture runs the real audit consumer against embedded NATS with keys
// made by `facegate audit keygen`, publishes decisions, enrolment changes
// (with an erasure tombstone) and admin records, and returns the log.
type auditFixture struct {
	dir, log, pub string
	data          []byte
}

func newAuditFixture(t *testing.T) *auditFixture {
	t.Helper()
	fx := &auditFixture{dir: t.TempDir()}
	keys := filepath.Join(fx.dir, "keys")
	r := facegate(t, "audit", "keygen", "--out", keys, "--json")
	if r.code != 0 {
		t.Fatalf("keygen: exit %d: %s", r.code, r.stderr)
	}
	var kg map[string]string
	if err := json.Unmarshal([]byte(r.stdout), &kg); err != nil || kg["key_id"] == "" {
		t.Fatalf("keygen JSON %q: %v", r.stdout, err)
	}
	for _, f := range []string{"checkpoint.key", "subject.key"} {
		st, err := os.Stat(filepath.Join(keys, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v mode %v", f, err, st.Mode())
		}
	}
	if r := facegate(t, "audit", "keygen", "--out", keys); r.code != 2 {
		t.Fatalf("keygen over existing keys: exit %d", r.code)
	}
	fx.pub = filepath.Join(keys, "checkpoint.pub")
	signer, err := audit.LoadKeyFile(filepath.Join(keys, "checkpoint.key"))
	if err != nil {
		t.Fatal(err)
	}
	subject, err := auditsink.LoadSubjectKey(filepath.Join(keys, "subject.key"))
	if err != nil {
		t.Fatal(err)
	}

	_, _, js := natstest.Run(t, embedded.Options{})
	ctx := context.Background()
	if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	fx.log = filepath.Join(fx.dir, "audit.log")
	s, err := auditsink.New(ctx, auditsink.Config{JetStream: js, Path: fx.log, Signer: signer, SubjectKey: subject,
		CheckpointEvery: 5, CreateConsumers: true, FetchWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()

	publish := func(subject string, m proto.Message) {
		if _, err := bus.Publish(ctx, js, subject, m, nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 6; i++ {
		d := &facegatev1.Decision{SchemaVersion: 1, DecisionId: fmt.Sprintf("dec-%d", i), Site: "hq", Door: fmt.Sprintf("door-%d", i),
			Camera: "cam-1", Outcome: facegatev1.Outcome_OUTCOME_GRANT, Mode: facegatev1.Mode_MODE_IDENTIFY,
			PersonId: proto.String(auditPerson), Distance: proto.Float32(0.3), Threshold: 0.4163, PolicyRule: "staff"}
		publish("facegate.decisions.hq."+d.Door, d)
	}
	user := &facegatev1.Actor{Kind: facegatev1.ActorKind_ACTOR_KIND_USER, Id: "operator-1"}
	for i, ch := range []*facegatev1.EnrolmentChange{
		{Change: &facegatev1.EnrolmentChange_PersonUpsert{PersonUpsert: &facegatev1.PersonUpsert{PersonId: auditPerson, DisplayName: "Carla Coffee"}}},
		{Change: &facegatev1.EnrolmentChange_GroupMembership{GroupMembership: &facegatev1.GroupMembership{PersonId: auditPerson, GroupId: "staff", Member: true}}},
		{Change: &facegatev1.EnrolmentChange_PersonDelete{PersonDelete: &facegatev1.PersonDelete{PersonIdSha256: events.PersonHash(auditPerson)}}},
	} {
		ch.SchemaVersion, ch.ChangeId, ch.Actor = 1, fmt.Sprintf("ch-%d", i), user
		kind, key, _ := events.EnrolmentRoute(ch)
		subj, err := bus.EnrolmentsSubject(kind, key)
		if err != nil {
			t.Fatal(err)
		}
		publish(subj, ch)
	}
	sum := sha256.Sum256([]byte(auditPerson))
	publish("facegate.audit.api", &facegatev1.AuditRecord{SchemaVersion: 1, Kind: facegatev1.AuditKind_AUDIT_KIND_ERASURE,
		Time: timestamppb.Now(), Actor: user, SubjectHash: sum[:], Summary: []*facegatev1.AuditAttribute{{Key: "action", Value: "erase_person"}}})

	deadline := time.Now().Add(30 * time.Second)
	for s.Head() < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("log has %d records, want 10", s.Head())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if fx.data, err = os.ReadFile(fx.log); err != nil {
		t.Fatal(err)
	}
	return fx
}

// lines of the log with their newlines.
func (fx *auditFixture) lines() [][]byte {
	return bytes.SplitAfter(fx.data, []byte{'\n'})
}

func (fx *auditFixture) write(t *testing.T, name string, ls [][]byte) string {
	t.Helper()
	p := filepath.Join(fx.dir, name)
	if err := os.WriteFile(p, bytes.Join(ls, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func recordLine(t *testing.T, ls [][]byte, seq int) int {
	t.Helper()
	for i, l := range ls {
		if bytes.HasPrefix(l, fmt.Appendf(nil, `{"type":"record","seq":%d,`, seq)) {
			return i
		}
	}
	t.Fatalf("no record %d", seq)
	return -1
}

func TestAuditVerifyAndTamper(t *testing.T) {
	fx := newAuditFixture(t)
	if bytes.Contains(fx.data, []byte(auditPerson)) || bytes.Contains(fx.data, []byte("Carla Coffee")) {
		t.Fatal("the audit log contains the person id or name")
	}

	r := facegate(t, "audit", "verify", "--log", fx.log, "--pubkey", fx.pub)
	if r.code != 0 {
		t.Fatalf("intact log: exit %d: %s", r.code, r.stderr)
	}
	sum := decodeJSON(t, r.stdout)
	if sum["ok"] != true || sum["records"] != 10.0 || sum["last_seq"] != 10.0 || sum["signed_through"] != 10.0 {
		t.Fatalf("summary %v", sum)
	}

	// The person's records are found by their subject hash, computed with
	// the subject key: 6 decisions, 2 enrolments, the tombstone (which only
	// had the hash) and the API's erasure record.
	keyFile := filepath.Join(fx.dir, "keys", "subject.key")
	r = facegate(t, "audit", "subject", "--subject-key", keyFile, "--person", auditPerson)
	subject := strings.TrimSpace(r.stdout)
	if r.code != 0 || len(subject) != 64 {
		t.Fatalf("audit subject: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if n := bytes.Count(fx.data, []byte(`"subject":"`+subject+`"`)); n != 10 {
		t.Fatalf("%d records carry the person's subject, want 10", n)
	}
	r = facegate(t, "audit", "subject", "--subject-key", keyFile, "--person-hash", strings.ToUpper(events.PersonHash(auditPerson)), "--json")
	if r.code != 0 || decodeJSON(t, r.stdout)["subject"] != subject {
		t.Fatalf("subject from the hash differs: %s %s", r.stdout, r.stderr)
	}
	if r := facegate(t, "audit", "subject", "--subject-key", keyFile); r.code != 2 {
		t.Fatalf("no person: exit %d", r.code)
	}

	ls := fx.lines()
	clone := func() [][]byte {
		out := make([][]byte, len(ls))
		for i, l := range ls {
			out[i] = bytes.Clone(l)
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		edit    func([][]byte) [][]byte
		seq     float64
		words   string
		problem string
	}{
		{"flipped byte", func(l [][]byte) [][]byte {
			i := recordLine(t, l, 3)
			k := bytes.Index(l[i], []byte(`"actor":"`)) + len(`"actor":"`)
			l[i][k] ^= 1 // a letter stays a letter: the line still parses
			return l
		}, 3, "altered", "altered"},
		{"dropped record", func(l [][]byte) [][]byte {
			i := recordLine(t, l, 7)
			return append(l[:i], l[i+1:]...)
		}, 7, "removed", "missing"},
		{"swapped records", func(l [][]byte) [][]byte {
			i, j := recordLine(t, l, 2), recordLine(t, l, 3)
			l[i], l[j] = l[j], l[i]
			return l
		}, 2, "re-ordered", "out-of-order"},
		{"inserted record", func(l [][]byte) [][]byte {
			i := recordLine(t, l, 4)
			forged := bytes.Clone(l[i])
			k := bytes.Index(forged, []byte(`"actor":"`)) + len(`"actor":"`)
			forged[k] ^= 1
			return append(l[:i+1], append([][]byte{forged}, l[i+1:]...)...)
		}, 4, "inserted", ""},
		{"bad checkpoint signature", func(l [][]byte) [][]byte {
			for i, line := range l {
				if bytes.HasPrefix(line, []byte(`{"type":"checkpoint","seq":5,`)) {
					k := bytes.Index(line, []byte(`"sig":"`)) + len(`"sig":"`)
					if line[k] == 'a' {
						line[k] = 'b'
					} else {
						line[k] = 'a'
					}
					l[i] = line
				}
			}
			return l
		}, 5, "bad checkpoint signature", "bad-signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := fx.write(t, strings.ReplaceAll(tc.name, " ", "-")+".log", tc.edit(clone()))
			r := facegate(t, "audit", "verify", "--log", p, "--pubkey", fx.pub)
			if r.code != 4 {
				t.Fatalf("exit %d, want 4: %s", r.code, r.stderr)
			}
			t.Log(strings.TrimSpace(r.stderr))
			sum := decodeJSON(t, r.stdout)
			if sum["ok"] != false || sum["first_bad_seq"] != tc.seq {
				t.Fatalf("first_bad_seq %v, want %v: %s", sum["first_bad_seq"], tc.seq, r.stdout)
			}
			if !strings.Contains(r.stderr, fmt.Sprintf("seq %d ", int(tc.seq))) || !strings.Contains(r.stderr, tc.words) {
				t.Fatalf("stderr does not name seq %v and %q: %s", tc.seq, tc.words, r.stderr)
			}
			if tc.problem != "" {
				found := false
				for _, p := range sum["problems"].([]any) {
					pm := p.(map[string]any)
					found = found || pm["kind"] == tc.problem && pm["seq"] == tc.seq
				}
				if !found {
					t.Fatalf("no %s problem about seq %v: %s", tc.problem, tc.seq, r.stdout)
				}
			}
		})
	}
	// A re-ordering is named as such.
	p := fx.write(t, "swap-far.log", func() [][]byte {
		l := clone()
		i, j := recordLine(t, l, 6), recordLine(t, l, 8)
		l[i], l[j] = l[j], l[i]
		return l
	}())
	if r := facegate(t, "audit", "verify", "--log", p, "--pubkey", fx.pub); r.code != 4 || !strings.Contains(r.stdout, `"re-ordered"`) {
		t.Fatalf("far swap: exit %d: %s", r.code, r.stdout)
	}
	// The wrong public key: every checkpoint is unknown.
	other := filepath.Join(t.TempDir(), "k")
	facegate(t, "audit", "keygen", "--out", other)
	if r := facegate(t, "audit", "verify", "--log", fx.log, "--pubkey", filepath.Join(other, "checkpoint.pub")); r.code != 4 {
		t.Fatalf("wrong key: exit %d", r.code)
	}
	// Usage errors.
	if r := facegate(t, "audit", "verify", "--log", filepath.Join(fx.dir, "absent"), "--pubkey", fx.pub); r.code != 2 {
		t.Fatalf("absent log: exit %d", r.code)
	}
	if r := facegate(t, "audit", "verify", "--log", fx.log, "--pubkey", fx.log); r.code != 2 {
		t.Fatalf("log as key: exit %d", r.code)
	}
}

func TestAuditExport(t *testing.T) {
	fx := newAuditFixture(t)
	// Whole log, JSONL: identical to the log.
	r := facegate(t, "audit", "export", "--log", fx.log, "--format", "jsonl")
	if r.code != 0 || r.stdout != string(fx.data) {
		t.Fatalf("full export: exit %d, %d bytes vs %d: %s", r.code, len(r.stdout), len(fx.data), r.stderr)
	}
	// Only erasures, to a file: the other records become links and the
	// export verifies on its own.
	out := filepath.Join(fx.dir, "erasures.jsonl")
	r = facegate(t, "audit", "export", "--log", fx.log, "--kind", "erasure", "--out", out, "--json")
	if r.code != 0 {
		t.Fatalf("kind export: exit %d: %s", r.code, r.stderr)
	}
	sum := decodeJSON(t, r.stdout)
	if sum["records"] != 2.0 || sum["links"] != 8.0 {
		t.Fatalf("kind export summary %v", sum)
	}
	exp, _ := os.ReadFile(out)
	for _, line := range bytes.Split(bytes.TrimSpace(exp), []byte{'\n'}) {
		if bytes.HasPrefix(line, []byte(`{"type":"record"`)) && !bytes.Contains(line, []byte(`"kind":"erasure"`)) {
			t.Fatalf("non-erasure record exported: %s", line)
		}
	}
	if r := facegate(t, "audit", "verify", "--partial", "--log", out, "--pubkey", fx.pub); r.code != 0 {
		t.Fatalf("kind export does not verify: %s %s", r.stdout, r.stderr)
	}
	// Editing the export is detected.
	bad := bytes.Replace(exp, []byte(`"kind":"erasure"`), []byte(`"kind":"enrolment"`), 1)
	badPath := filepath.Join(fx.dir, "bad.jsonl")
	os.WriteFile(badPath, bad, 0o600)
	if r := facegate(t, "audit", "verify", "--partial", "--log", badPath, "--pubkey", fx.pub); r.code != 4 {
		t.Fatalf("edited export: exit %d", r.code)
	}

	// CSV of a time range: everything since the start of the log's day,
	// decisions only; verifies as CSV.
	first := bytes.SplitN(fx.data, []byte{'\n'}, 2)[0]
	var rec struct{ Time string }
	json.Unmarshal(first, &rec)
	day := rec.Time[:10]
	csvPath := filepath.Join(fx.dir, "decisions.csv")
	r = facegate(t, "audit", "export", "--log", fx.log, "--format", "csv", "--since", day, "--kind", "decision", "--out", csvPath)
	if r.code != 0 {
		t.Fatalf("csv export: exit %d: %s", r.code, r.stderr)
	}
	f, _ := os.Open(csvPath)
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	decisions := 0
	for _, row := range rows[1:] {
		if row[0] == "record" {
			if row[3] != "decision" {
				t.Fatalf("csv row of kind %s", row[3])
			}
			decisions++
		}
	}
	if decisions != 6 {
		t.Fatalf("%d decision rows", decisions)
	}
	if r := facegate(t, "audit", "verify", "--partial", "--log", csvPath, "--pubkey", fx.pub); r.code != 0 {
		t.Fatalf("csv export does not verify: %s %s", r.stdout, r.stderr)
	}
	// A range after the log: an empty export.
	r = facegate(t, "audit", "export", "--log", fx.log, "--since", "2999-01-01")
	if r.code != 0 || r.stdout != "" {
		t.Fatalf("empty range: exit %d, %q", r.code, r.stdout)
	}
	for _, args := range [][]string{
		{"--format", "xml"}, {"--since", "yesterday"}, {"--since", "2026-02-01", "--until", "2026-01-01"}, {"--kind", "Decision"},
	} {
		if r := facegate(t, append([]string{"audit", "export", "--log", fx.log}, args...)...); r.code != 2 {
			t.Errorf("export %v: exit %d, want 2", args, r.code)
		}
	}
}

// FuzzAuditExport feeds arbitrary files to `audit export`, whose kind
// filter and time range parse log lines: it must end with a defined exit
// code (0, or 1/2 with a message), never a panic, and whatever it exports
// of a valid log must contain only the kind asked for.
func FuzzAuditExport(f *testing.F) {
	f.Add([]byte(`{"type":"record","seq":1,"time":"2026-01-01T00:00:00Z","kind":"decision","actor":"a","subject":"","payload":{},"prev":"`+
		strings.Repeat("0", 64)+`","hash":"`+strings.Repeat("1", 64)+`"}`+"\n"), "decision", "2026-01-01")
	f.Add([]byte("{\"type\":\"link\"}\n"), "erasure", "")
	f.Add([]byte("not json\n"), "", "2026-01-01T00:00:00Z")
	f.Fuzz(func(t *testing.T, log []byte, kind, since string) {
		p := filepath.Join(t.TempDir(), "log")
		if err := os.WriteFile(p, log, 0o600); err != nil {
			t.Fatal(err)
		}
		args := []string{"audit", "export", "--log", p, "--since", since}
		if kind != "" {
			args = append(args, "--kind", kind)
		}
		r := facegate(t, args...)
		switch r.code {
		case 0:
			for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
				if strings.HasPrefix(line, `{"type":"record"`) && kind != "" && !strings.Contains(line, `"kind":`+string(must(json.Marshal(kind)))) {
					t.Fatalf("exported a record of another kind than %q: %s", kind, line)
				}
			}
		case 1, 2:
			if r.stderr == "" {
				t.Fatal("failed without a message")
			}
		default:
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
