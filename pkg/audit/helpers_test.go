package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var testSubjectKey = bytes.Repeat([]byte{0x5a}, 32)

// testClock returns distinct, increasing times so every record differs.
func testClock() func() time.Time {
	var n atomic.Int64
	base := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	return func() time.Time { return base.Add(time.Duration(n.Add(1)) * 1500 * time.Microsecond) }
}

type fixture struct {
	sync SyncPolicy // zero: every record
	path string
	key  *SigningKey
	pub  []ed25519.PublicKey
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{path: filepath.Join(t.TempDir(), "audit.log"), key: k, pub: []ed25519.PublicKey{k.PublicKey()}}
}

func (fx *fixture) open(t testing.TB, every int) *Log {
	t.Helper()
	l, err := Open(context.Background(), Options{Path: fx.path, Signer: fx.key, SubjectKey: testSubjectKey, CheckpointEvery: every, Sync: fx.sync, Now: testClock()})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return l
}

func decisionEvent(i int) Event {
	return Event{
		Kind:      KindDecision,
		Actor:     "matcher@site-a",
		SubjectID: fmt.Sprintf("person-%04d", i%37),
		Payload: map[string]any{
			"outcome": []string{"open", "deny"}[i%2], "door": fmt.Sprintf("door-%d", i%5), "site": "site-a",
			"distance": 0.3 + float64(i%50)/100, "threshold": 0.55, "model": "dlib-resnet34-128",
		},
	}
}

// writeLog appends n decision records with a checkpoint every `every` and
// closes the log; it returns the file's bytes.
func (fx *fixture) writeLog(t testing.TB, n, every int) []byte {
	t.Helper()
	l := fx.open(t, every)
	for i := 1; i <= n; i++ {
		if _, err := l.Append(context.Background(), decisionEvent(i)); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	data, err := os.ReadFile(fx.path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// lines splits a log into its lines, each keeping its newline.
func lines(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			out = append(out, data)
			break
		}
		out = append(out, data[:i+1])
		data = data[i+1:]
	}
	return out
}

func join(ls [][]byte) []byte { return bytes.Join(ls, nil) }

// lineOf returns the index of the line for the record (or, with ckpt, the
// checkpoint) with the given seq.
func lineOf(t testing.TB, ls [][]byte, seq uint64, ckpt bool) int {
	t.Helper()
	want := fmt.Sprintf(`{"type":"record","seq":%d,`, seq)
	if ckpt {
		want = fmt.Sprintf(`{"type":"checkpoint","seq":%d,`, seq)
	}
	for i, l := range ls {
		if bytes.HasPrefix(l, []byte(want)) {
			return i
		}
	}
	t.Fatalf("no line for seq %d (checkpoint %v)", seq, ckpt)
	return -1
}

func parseRecordLine(t testing.TB, line []byte) Record {
	t.Helper()
	e, err := parseLine(bytes.TrimSuffix(line, []byte{'\n'}))
	if err != nil || e.typ != entRecord {
		t.Fatalf("not a record line: %v", err)
	}
	return e.rec
}

func verifyBytes(data []byte, keys []ed25519.PublicKey) Report {
	return Verify(bytes.NewReader(data), keys)
}

func describe(r Report) string {
	var b strings.Builder
	for _, p := range r.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// requireProblem fails unless the report has a problem of this kind about seq.
func requireProblem(t testing.TB, r Report, kind ProblemKind, seq uint64) {
	t.Helper()
	if !r.Has(kind, seq) {
		t.Fatalf("want a %s problem about seq %d; report:%s", kind, seq, describe(r))
	}
}

// requireOnlySeqs fails if any problem is about a seq outside allowed.
func requireOnlySeqs(t testing.TB, r Report, allowed ...uint64) {
	t.Helper()
	for _, p := range r.Problems {
		ok := false
		for _, a := range allowed {
			ok = ok || p.Seq == a
		}
		if !ok {
			t.Fatalf("problem about seq %d, want only %v; report:%s", p.Seq, allowed, describe(r))
		}
	}
}

func findProblem(r Report, kind ProblemKind, seq uint64) *Problem {
	for i := range r.Problems {
		if r.Problems[i].Kind == kind && r.Problems[i].Seq == seq {
			return &r.Problems[i]
		}
	}
	return nil
}
