package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

func TestAppendVerifies(t *testing.T) {
	fx := newFixture(t)
	data := fx.writeLog(t, 25, 10)
	ls := lines(data)
	// 25 records, checkpoints after 10, 20 and (on Close) 25.
	if len(ls) != 28 {
		t.Fatalf("%d lines, want 28", len(ls))
	}
	for _, want := range []uint64{10, 20, 25} {
		i := lineOf(t, ls, want, true)
		if j := lineOf(t, ls, want, false); j != i-1 {
			t.Fatalf("checkpoint %d on line %d, its record on line %d", want, i, j)
		}
	}
	r := verifyBytes(data, fx.pub)
	if !r.OK() {
		t.Fatalf("fresh log does not verify:%s", describe(r))
	}
	if r.Records != 25 || r.Checkpoints != 3 || r.FirstSeq != 1 || r.LastSeq != 25 || r.SignedThrough != 25 {
		t.Fatalf("report %+v", r)
	}
	if r.UnsignedFrom != 0 || r.UnsignedTo != 0 {
		t.Fatalf("unsigned tail %d..%d after Close", r.UnsignedFrom, r.UnsignedTo)
	}
	last := parseRecordLine(t, ls[len(ls)-2])
	if r.LastHash != last.Hash || r.LastCheckpoint == nil || r.LastCheckpoint.Hash != last.Hash {
		t.Fatalf("last hash %s, checkpoint %+v, record %s", r.LastHash, r.LastCheckpoint, last.Hash)
	}
}

func TestRecordFields(t *testing.T) {
	fx := newFixture(t)
	l := fx.open(t, 100)
	defer l.Close()
	rec, err := l.Append(context.Background(), Event{
		Kind: KindEnrolment, Actor: "operator:alice", SubjectID: "person-8812",
		Payload: map[string]any{"samples": 3, "collection": "dlib-resnet34-128"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Seq != 1 || !rec.Prev.IsZero() || rec.Hash != rec.ComputeHash() {
		t.Fatalf("first record %+v", rec)
	}
	if rec.Time.Location() != time.UTC {
		t.Fatalf("time %v is not UTC", rec.Time)
	}
	if want := SubjectHash(testSubjectKey, "person-8812"); rec.Subject != want {
		t.Fatalf("subject %q, want %q", rec.Subject, want)
	}
	rec2, err := l.Append(context.Background(), Event{Kind: KindAdmin, Actor: "operator:alice", Payload: map[string]any{"door": "d1", "change": "policy"}})
	if err != nil {
		t.Fatal(err)
	}
	if rec2.Seq != 2 || rec2.Prev != rec.Hash || rec2.Subject != "" {
		t.Fatalf("second record %+v", rec2)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(fx.path)
	if bytes.Contains(data, []byte("person-8812")) {
		t.Fatal("the person id is stored in the log")
	}
	if got := bytes.Count(data, []byte(rec.Subject)); got != 1 {
		t.Fatalf("subject hash appears %d times, want 1", got)
	}
	// The canonical line is exactly what was written.
	if ls := lines(data); !bytes.Equal(ls[0], rec.marshalLine()) {
		t.Fatalf("line %q\nwant %q", ls[0], rec.marshalLine())
	}
}

func TestSubjectHash(t *testing.T) {
	k2 := bytes.Repeat([]byte{1}, 32)
	a := SubjectHash(testSubjectKey, "person-1")
	if len(a) != 64 || a != SubjectHash(testSubjectKey, "person-1") {
		t.Fatalf("hash %q not stable or not 64 hex", a)
	}
	if a == SubjectHash(testSubjectKey, "person-2") || a == SubjectHash(k2, "person-1") {
		t.Fatal("different id or key gives the same hash")
	}
	// Not a plain hash of the id: without the key it cannot be recomputed.
	plain := sha256.Sum256([]byte("person-1"))
	if a == hex.EncodeToString(plain[:]) {
		t.Fatal("subject hash is an unkeyed SHA-256")
	}
}

func TestForbiddenPayload(t *testing.T) {
	fx := newFixture(t)
	l := fx.open(t, 100)
	defer l.Close()
	vec := make([]any, 128)
	for i := range vec {
		vec[i] = 0.01 * float64(i)
	}
	bad := []map[string]any{
		{"embedding": []float64{0.1}},
		{"face_encoding": "x"},
		{"Encodings": 1},
		{"feature-vector": 1},
		{"Image": "x"},
		{"photoURL": "x"},
		{"crop_box": []int{1, 2, 3, 4}},
		{"meta": map[string]any{"thumbnail": "x"}},
		{"list": []any{map[string]any{"faceDescriptor": 1}}},
		{"scores": vec},
		{"note": string(bytes.Repeat([]byte("A"), 2000))},
	}
	for _, p := range bad {
		_, err := l.Append(context.Background(), Event{Kind: KindDecision, Actor: "matcher", Payload: p})
		if !errors.Is(err, ErrForbiddenPayload) {
			t.Errorf("payload %.60v: err %v, want ErrForbiddenPayload", p, err)
		}
	}
	big := map[string]any{}
	for i := 0; i < 200; i++ {
		big[fmt.Sprintf("field%03d", i)] = "some value"
	}
	if _, err := l.Append(context.Background(), Event{Kind: KindDecision, Actor: "matcher", Payload: big}); err == nil {
		t.Error("a payload over the size limit was accepted")
	}
	ok := map[string]any{"outcome": "open", "door": "d1", "site": "s1", "distance": 0.41, "threshold": 0.55,
		"model": "dlib-resnet34-128", "box": []int{10, 20, 110, 140}}
	if _, err := l.Append(context.Background(), Event{Kind: KindDecision, Actor: "matcher", Payload: ok}); err != nil {
		t.Fatalf("ordinary decision refused: %v", err)
	}
	if seq, _ := l.Head(); seq != 1 {
		t.Fatalf("head %d after one accepted append: a refused event was written", seq)
	}
}

func TestAppendValidation(t *testing.T) {
	fx := newFixture(t)
	l := fx.open(t, 100)
	defer l.Close()
	for _, ev := range []Event{
		{Kind: "", Actor: "a"},
		{Kind: "Decision", Actor: "a"},
		{Kind: KindRecovery, Actor: "a"},
		{Kind: KindDecision, Actor: ""},
		{Kind: KindDecision, Actor: "=HYPERLINK(\"x\")"},
		{Kind: KindDecision, Actor: "a\nb"},
	} {
		if _, err := l.Append(context.Background(), ev); err == nil {
			t.Errorf("event %+v accepted", ev)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Append(ctx, decisionEvent(1)); !errors.Is(err, context.Canceled) {
		t.Errorf("append with a cancelled context: %v", err)
	}
}

func TestOpenOptions(t *testing.T) {
	fx := newFixture(t)
	for name, o := range map[string]Options{
		"no path":         {Signer: fx.key, SubjectKey: testSubjectKey},
		"no signer":       {Path: fx.path, SubjectKey: testSubjectKey},
		"short subj key":  {Path: fx.path, Signer: fx.key, SubjectKey: []byte("short")},
		"negative every":  {Path: fx.path, Signer: fx.key, SubjectKey: testSubjectKey, CheckpointEvery: -1},
		"negative sync n": {Path: fx.path, Signer: fx.key, SubjectKey: testSubjectKey, Sync: SyncPolicy{EveryRecords: -1}},
	} {
		if l, err := Open(context.Background(), o); err == nil {
			l.Close()
			t.Errorf("%s: opened", name)
		}
	}
}

func TestFileMode(t *testing.T) {
	fx := newFixture(t)
	fx.writeLog(t, 1, 10)
	st, err := os.Stat(fx.path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("log file mode %04o, want 0600", st.Mode().Perm())
	}
}

func TestReopenContinuesChain(t *testing.T) {
	fx := newFixture(t)
	fx.writeLog(t, 15, 10)
	l := fx.open(t, 10)
	if seq, _ := l.Head(); seq != 15 {
		t.Fatalf("reopened at seq %d, want 15", seq)
	}
	for i := 0; i < 7; i++ {
		if _, err := l.Append(context.Background(), decisionEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	data, _ := os.ReadFile(fx.path)
	r := verifyBytes(data, fx.pub)
	if !r.OK() || r.LastSeq != 22 || r.SignedThrough != 22 {
		t.Fatalf("after reopen: last %d signed %d:%s", r.LastSeq, r.SignedThrough, describe(r))
	}
}

// A crash after a record but before its checkpoint leaves unsigned records;
// the next Open signs them at once.
func TestReopenSignsUnsignedTail(t *testing.T) {
	fx := newFixture(t)
	data := fx.writeLog(t, 13, 10)
	ls := lines(data)
	cut := join(ls[:len(ls)-1]) // drop the Close checkpoint: a crash
	if err := os.WriteFile(fx.path, cut, 0o600); err != nil {
		t.Fatal(err)
	}
	r := verifyBytes(cut, fx.pub)
	if !r.OK() || r.UnsignedFrom != 11 || r.UnsignedTo != 13 {
		t.Fatalf("crashed log: unsigned %d..%d:%s", r.UnsignedFrom, r.UnsignedTo, describe(r))
	}
	l := fx.open(t, 10)
	l.Close()
	after, _ := os.ReadFile(fx.path)
	r = verifyBytes(after, fx.pub)
	if !r.OK() || r.SignedThrough != 13 || r.UnsignedTo != 0 {
		t.Fatalf("reopened log: signed through %d:%s", r.SignedThrough, describe(r))
	}
}

func TestConcurrentAppends(t *testing.T) {
	fx := newFixture(t)
	l := fx.open(t, 64)
	var wg sync.WaitGroup
	seqs := make(chan uint64, 400)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				rec, err := l.Append(context.Background(), decisionEvent(g*50+i))
				if err != nil {
					t.Error(err)
					return
				}
				seqs <- rec.Seq
			}
		}(g)
	}
	wg.Wait()
	close(seqs)
	l.Close()
	seen := map[uint64]bool{}
	for s := range seqs {
		if seen[s] {
			t.Fatalf("seq %d handed out twice", s)
		}
		seen[s] = true
	}
	data, _ := os.ReadFile(fx.path)
	r := verifyBytes(data, fx.pub)
	if !r.OK() || r.Records != 400 || r.LastSeq != 400 {
		t.Fatalf("concurrent log: %d records, last %d:%s", r.Records, r.LastSeq, describe(r))
	}
}

func TestSecondWriterLocked(t *testing.T) {
	fx := newFixture(t)
	l := fx.open(t, 10)
	defer l.Close()
	_, err := Open(context.Background(), Options{Path: fx.path, Signer: fx.key, SubjectKey: testSubjectKey})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second writer: %v, want ErrLocked", err)
	}
}

func TestClose(t *testing.T) {
	fx := newFixture(t)
	l := fx.open(t, 10)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
	if _, err := l.Append(context.Background(), decisionEvent(1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	// An empty log stays empty: no checkpoint for nothing.
	if data, _ := os.ReadFile(fx.path); len(data) != 0 {
		t.Fatalf("empty log has %d bytes", len(data))
	}
}

func TestSyncInterval(t *testing.T) {
	fx := newFixture(t)
	l, err := Open(context.Background(), Options{Path: fx.path, Signer: fx.key, SubjectKey: testSubjectKey,
		Sync: SyncPolicy{Interval: 5 * time.Millisecond}, Now: testClock()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Append(context.Background(), decisionEvent(1)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		l.sem <- struct{}{}
		n := l.unsynced
		<-l.sem
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the interval syncer never synced")
		}
		time.Sleep(time.Millisecond)
	}
}

// Close must stop the interval syncer even while it is ticking (it once
// waited forever on a channel Close had cleared).
func TestCloseWithIntervalSyncer(t *testing.T) {
	fx := newFixture(t)
	for i := 0; i < 30; i++ {
		l, err := Open(context.Background(), Options{Path: fx.path, Signer: fx.key, SubjectKey: testSubjectKey,
			Sync: SyncPolicy{Interval: 100 * time.Microsecond}, Now: testClock()})
		if err != nil {
			t.Fatal(err)
		}
		l.Append(context.Background(), decisionEvent(i))
		time.Sleep(time.Duration(i%4) * 100 * time.Microsecond)
		done := make(chan error)
		go func() { done <- l.Close() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Close hung (cycle %d)", i)
		}
	}
}

func TestSyncEveryN(t *testing.T) {
	fx := newFixture(t)
	l, err := Open(context.Background(), Options{Path: fx.path, Signer: fx.key, SubjectKey: testSubjectKey,
		CheckpointEvery: 1000, Sync: SyncPolicy{EveryRecords: 3}, Now: testClock()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	want := []int{1, 2, 0, 1, 2, 0, 1}
	for i, w := range want {
		if _, err := l.Append(context.Background(), decisionEvent(i)); err != nil {
			t.Fatal(err)
		}
		if l.unsynced != w {
			t.Fatalf("after append %d: %d unsynced, want %d", i+1, l.unsynced, w)
		}
	}
}

func TestTornTailRecovered(t *testing.T) {
	fx := newFixture(t)
	data := fx.writeLog(t, 12, 5)
	// A crash half-way through writing record 13.
	l := fx.open(t, 5)
	rec, err := l.Append(context.Background(), decisionEvent(13))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	line := rec.marshalLine()
	torn := append(bytes.Clone(data), line[:len(line)/2]...)
	if err := os.WriteFile(fx.path, torn, 0o600); err != nil {
		t.Fatal(err)
	}
	r := verifyBytes(torn, fx.pub)
	requireProblem(t, r, ProblemTruncated, 13)
	requireOnlySeqs(t, r, 13)

	l = fx.open(t, 5)
	rv := l.Recovery()
	if rv == nil || rv.DiscardedBytes != int64(len(line)/2) || rv.Offset != int64(len(data)) || rv.RecordSeq != 13 {
		t.Fatalf("recovery %+v, want %d bytes at %d, record 13", rv, len(line)/2, len(data))
	}
	sum := sha256.Sum256(line[:len(line)/2])
	if rv.DiscardedHash != hex.EncodeToString(sum[:]) {
		t.Fatal("recovery hash is not the SHA-256 of the discarded bytes")
	}
	if _, err := l.Append(context.Background(), decisionEvent(14)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	after, _ := os.ReadFile(fx.path)
	r = verifyBytes(after, fx.pub)
	if !r.OK() || len(r.Recoveries) != 1 || r.Recoveries[0] != 13 || r.LastSeq != 14 {
		t.Fatalf("recovered log: recoveries %v last %d:%s", r.Recoveries, r.LastSeq, describe(r))
	}
	recLine := lines(after)[lineOf(t, lines(after), 13, false)]
	got := parseRecordLine(t, recLine)
	var p map[string]any
	if err := json.Unmarshal(got.Payload, &p); err != nil {
		t.Fatal(err)
	}
	if got.Kind != KindRecovery || p["discarded_bytes"] != float64(len(line)/2) || p["discarded_sha256"] != rv.DiscardedHash {
		t.Fatalf("recovery record %s %s", got.Kind, got.Payload)
	}
}

func TestTornTailRefused(t *testing.T) {
	fx := newFixture(t)
	data := fx.writeLog(t, 3, 5)
	torn := append(bytes.Clone(data), `{"type":"record","seq":4,"ti`...)
	os.WriteFile(fx.path, torn, 0o600)
	_, err := Open(context.Background(), Options{Path: fx.path, Signer: fx.key, SubjectKey: testSubjectKey, TornTail: TornTailRefuse})
	if !errors.Is(err, ErrTornTail) {
		t.Fatalf("open: %v, want ErrTornTail", err)
	}
	if after, _ := os.ReadFile(fx.path); !bytes.Equal(after, torn) {
		t.Fatal("refusing open changed the file")
	}
}

func TestOpenRefusesTamperedTail(t *testing.T) {
	fx := newFixture(t)
	data := fx.writeLog(t, 13, 10)
	// Record 13 is signed by the Close checkpoint; record 12 is unsigned
	// once that checkpoint is gone (a crash).
	for _, c := range []struct {
		seq  uint64
		drop bool
	}{{13, false}, {12, true}, {13, true}} {
		ls := lines(data)
		if c.drop {
			ls = ls[:len(ls)-1]
		}
		i := lineOf(t, ls, c.seq, false)
		ls[i] = bytes.Replace(ls[i], []byte("matcher@site-a"), []byte("matcher@site-b"), 1)
		os.WriteFile(fx.path, join(ls), 0o600)
		_, err := Open(context.Background(), Options{Path: fx.path, Signer: fx.key, SubjectKey: testSubjectKey})
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("open with record %d edited (checkpoint dropped: %v): %v, want ErrCorrupt", c.seq, c.drop, err)
		}
	}
}

// Open finds the last checkpoint across read chunks: a log longer than one
// chunk with the checkpoint far from the end.
func TestOpenLongTail(t *testing.T) {
	fx := newFixture(t)
	fx.sync = SyncPolicy{EveryRecords: 100}
	fx.writeLog(t, 900, 600) // checkpoint at 600, then 300 records: > 64 KiB
	ls := lines(func() []byte { d, _ := os.ReadFile(fx.path); return d }())
	os.WriteFile(fx.path, join(ls[:len(ls)-1]), 0o600) // crash before the Close checkpoint
	l := fx.open(t, 600)
	if seq, _ := l.Head(); seq != 900 || l.sinceCkpt != 0 {
		t.Fatalf("head %d, since checkpoint %d", seq, l.sinceCkpt)
	}
	l.Close()
	data, _ := os.ReadFile(fx.path)
	if r := verifyBytes(data, fx.pub); !r.OK() || r.SignedThrough != 900 {
		t.Fatalf("signed through %d:%s", r.SignedThrough, describe(r))
	}
}

// Rotating the signing key between runs: the new key signs from the next
// Open on, and a verifier holding both keys accepts the log.
func TestSigningKeyRotation(t *testing.T) {
	fx := newFixture(t)
	fx.writeLog(t, 5, 10)
	k2, _ := GenerateKey()
	l, err := Open(context.Background(), Options{Path: fx.path, Signer: k2, SubjectKey: testSubjectKey, CheckpointEvery: 10})
	if err != nil {
		t.Fatal(err)
	}
	l.Append(context.Background(), decisionEvent(6))
	l.Close()
	data, _ := os.ReadFile(fx.path)
	if r := verifyBytes(data, append(fx.pub, k2.PublicKey())); !r.OK() {
		t.Fatalf("both keys:%s", describe(r))
	}
	r := verifyBytes(data, fx.pub)
	requireProblem(t, r, ProblemUnknownKey, 6)
}
