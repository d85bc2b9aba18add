package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	mrand "math/rand/v2"
	"strings"
	"testing"
)

// The tamper tests use one 30-record log with checkpoints after 10, 20, 30:
// lines 0..9 records 1..10, line 10 checkpoint 10, and so on.
func tamperLog(t *testing.T) (*fixture, [][]byte) {
	t.Helper()
	fx := newFixture(t)
	return fx, lines(fx.writeLog(t, 30, 10))
}

func TestVerifyEmpty(t *testing.T) {
	r := verifyBytes(nil, nil)
	if !r.OK() || r.Records != 0 || r.LastSeq != 0 {
		t.Fatalf("empty log: %+v", r)
	}
}

func TestFlipEveryByteOfARecord(t *testing.T) {
	fx, ls := tamperLog(t)
	i := lineOf(t, ls, 15, false)
	for pos := range ls[i] {
		for _, mask := range []byte{0x01, 0x20, 0x80} {
			mod := cloneLines(ls)
			mod[i][pos] ^= mask
			r := verifyBytes(join(mod), fx.pub)
			if r.OK() {
				t.Fatalf("flip %#x at byte %d of record 15 not detected", mask, pos)
			}
			found := false
			for _, p := range r.Problems {
				found = found || p.Seq == 15
			}
			if !found {
				t.Fatalf("flip %#x at byte %d (%q): no problem about seq 15:%s", mask, pos, ls[i][pos], describe(r))
			}
			// Only a flipped newline may touch the next record (two lines
			// become one).
			if pos == len(ls[i])-1 {
				requireOnlySeqs(t, r, 15, 16)
			} else {
				requireOnlySeqs(t, r, 15)
			}
		}
	}
}

func cloneLines(ls [][]byte) [][]byte {
	out := make([][]byte, len(ls))
	for i, l := range ls {
		out[i] = bytes.Clone(l)
	}
	return out
}

func TestEditedFieldIsAltered(t *testing.T) {
	fx, ls := tamperLog(t)
	i := lineOf(t, ls, 15, false)
	ls[i] = bytes.Replace(ls[i], []byte(`"outcome":"deny"`), []byte(`"outcome":"open"`), 1)
	r := verifyBytes(join(ls), fx.pub)
	requireProblem(t, r, ProblemAltered, 15)
	requireOnlySeqs(t, r, 15)
}

func TestDroppedRecord(t *testing.T) {
	fx, ls := tamperLog(t)
	for _, seq := range []uint64{1, 15, 20, 30} {
		i := lineOf(t, ls, seq, false)
		mod := append(cloneLines(ls[:i]), cloneLines(ls[i+1:])...)
		r := verifyBytes(join(mod), fx.pub)
		requireProblem(t, r, ProblemMissing, seq)
		requireOnlySeqs(t, r, seq)
	}
}

func TestDroppedRange(t *testing.T) {
	fx, ls := tamperLog(t)
	i, j := lineOf(t, ls, 13, false), lineOf(t, ls, 17, false)
	mod := append(cloneLines(ls[:i]), cloneLines(ls[j+1:])...)
	r := verifyBytes(join(mod), fx.pub)
	requireProblem(t, r, ProblemMissing, 13)
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0].Detail, "13..17") {
		t.Fatalf("want one problem naming 13..17:%s", describe(r))
	}
}

func TestSwappedRecords(t *testing.T) {
	fx, ls := tamperLog(t)
	i := lineOf(t, ls, 15, false)
	mod := cloneLines(ls)
	mod[i], mod[i+1] = mod[i+1], mod[i]
	r := verifyBytes(join(mod), fx.pub)
	requireProblem(t, r, ProblemOutOfOrder, 15)
	requireOnlySeqs(t, r, 15)

	// Moved far: record 3 placed after record 18.
	mod = cloneLines(ls)
	k := lineOf(t, mod, 3, false)
	moved := mod[k]
	mod = append(mod[:k], mod[k+1:]...)
	j := lineOf(t, mod, 18, false)
	mod = append(mod[:j+1], append([][]byte{moved}, mod[j+1:]...)...)
	r = verifyBytes(join(mod), fx.pub)
	requireProblem(t, r, ProblemOutOfOrder, 3)
}

// forge builds a record with a correctly computed hash, as an attacker who
// knows the format but not the signing key can.
func forge(seq uint64, prev Digest, actor string) []byte {
	r := Record{Seq: seq, Time: testClock()(), Kind: KindAdmin, Actor: actor, Payload: json.RawMessage(`{"door":"d9","change":"grant"}`), Prev: prev}
	r.Hash = r.ComputeHash()
	return r.marshalLine()
}

func TestInsertedRecord(t *testing.T) {
	fx, ls := tamperLog(t)
	i := lineOf(t, ls, 15, false)
	r15 := parseRecordLine(t, ls[i])

	// A well-formed record claiming seq 16, chained to 15, before the real 16.
	mod := cloneLines(ls)
	mod = append(mod[:i+1], append([][]byte{forge(16, r15.Hash, "intruder")}, mod[i+1:]...)...)
	r := verifyBytes(join(mod), fx.pub)
	requireProblem(t, r, ProblemInserted, 16)
	requireOnlySeqs(t, r, 16)
	if r.Problems[0].Line != i+2 {
		t.Fatalf("inserted record reported on line %d, it is on line %d", r.Problems[0].Line, i+2)
	}

	// The same after the real 16.
	mod = cloneLines(ls)
	mod = append(mod[:i+2], append([][]byte{forge(16, r15.Hash, "intruder")}, mod[i+2:]...)...)
	r = verifyBytes(join(mod), fx.pub)
	requireProblem(t, r, ProblemInserted, 16)
	requireOnlySeqs(t, r, 16)

	// A record with a made-up hash.
	mod = cloneLines(ls)
	bad := forge(16, r15.Hash, "intruder")
	bad = bytes.Replace(bad, []byte(`"hash":"`), []byte(`"hash":"00`), 1)
	bad = append(bad[:len(bad)-5], "\"}\n"...)
	mod = append(mod[:i+1], append([][]byte{bad}, mod[i+1:]...)...)
	r = verifyBytes(join(mod), fx.pub)
	if r.OK() || !(r.Has(ProblemAltered, 16) || r.Has(ProblemInserted, 16)) {
		t.Fatalf("forged record with a made-up hash:%s", describe(r))
	}
	requireOnlySeqs(t, r, 16)

	// Inserted with the following records renumbered and the whole chain
	// recomputed: only the checkpoint signatures can tell.
	mod = cloneLines(ls[:i+1])
	prev := r15.Hash
	mod = append(mod, forge(16, prev, "intruder"))
	prev = parseRecordLine(t, mod[len(mod)-1]).Hash
	for _, l := range ls[i+1:] {
		e, _ := parseLine(bytes.TrimSuffix(l, []byte{'\n'}))
		if e.typ != entRecord {
			mod = append(mod, l)
			continue
		}
		rec := e.rec
		rec.Seq++
		rec.Prev = prev
		rec.Hash = rec.ComputeHash()
		prev = rec.Hash
		mod = append(mod, rec.marshalLine())
	}
	r = verifyBytes(join(mod), fx.pub)
	requireProblem(t, r, ProblemCheckpointMismatch, 20)
	if p := findProblem(r, ProblemCheckpointMismatch, 20); !strings.Contains(p.Detail, "11..20") {
		t.Fatalf("mismatch should bound the rewrite to 11..20:%s", describe(r))
	}
}

func TestTruncated(t *testing.T) {
	fx, ls := tamperLog(t)
	full := join(ls)
	i := lineOf(t, ls, 25, false)
	start := len(join(ls[:i]))
	// Cut inside record 25 at every offset.
	for cut := start + 1; cut < start+len(ls[i]); cut++ {
		r := verifyBytes(full[:cut], fx.pub)
		requireProblem(t, r, ProblemTruncated, 25)
		requireOnlySeqs(t, r, 25)
	}
	// Cut at a line boundary: whole lines gone, the rest verifies with an
	// unsigned tail, and an anchor reveals the cut.
	cut := join(ls[:i+1])
	r := verifyBytes(cut, fx.pub)
	if !r.OK() || r.UnsignedFrom != 21 || r.UnsignedTo != 25 || r.SignedThrough != 20 {
		t.Fatalf("cut at a line boundary: unsigned %d..%d signed %d:%s", r.UnsignedFrom, r.UnsignedTo, r.SignedThrough, describe(r))
	}
	anchor := verifyBytes(full, fx.pub).LastCheckpoint
	if anchor == nil || anchor.Seq != 30 {
		t.Fatalf("full log's last checkpoint %+v", anchor)
	}
	r = Verifier{Keys: fx.pub, Anchors: []Checkpoint{*anchor}}.Verify(bytes.NewReader(cut))
	requireProblem(t, r, ProblemAnchor, 30)
	// Rolled back to an earlier checkpoint: still caught by the anchor.
	r = Verifier{Keys: fx.pub, Anchors: []Checkpoint{*anchor}}.Verify(bytes.NewReader(join(ls[:lineOf(t, ls, 20, true)+1])))
	requireProblem(t, r, ProblemAnchor, 30)
	// The untouched log satisfies its anchor.
	if r := (Verifier{Keys: fx.pub, Anchors: []Checkpoint{*anchor}}).Verify(bytes.NewReader(full)); !r.OK() {
		t.Fatalf("anchor on the intact log:%s", describe(r))
	}
}

func TestEditedCheckpoint(t *testing.T) {
	fx, ls := tamperLog(t)
	i := lineOf(t, ls, 20, true)
	for pos := range ls[i] {
		mod := cloneLines(ls)
		mod[i][pos] ^= 0x01
		r := verifyBytes(join(mod), fx.pub)
		if r.OK() {
			t.Fatalf("flip at byte %d of checkpoint 20 not detected", pos)
		}
		if pos == len(ls[i])-1 {
			requireOnlySeqs(t, r, 20, 21)
			continue
		}
		found := false
		for _, p := range r.Problems {
			found = found || p.Seq == 20
		}
		if !found {
			t.Fatalf("flip at byte %d (%q) of checkpoint 20: not reported at seq 20:%s", pos, ls[i][pos], describe(r))
		}
		requireOnlySeqs(t, r, 20)
	}
	// A removed checkpoint in the middle loses nothing: the next one covers
	// the same records.
	mod := append(cloneLines(ls[:i]), cloneLines(ls[i+1:])...)
	if r := verifyBytes(join(mod), fx.pub); !r.OK() || r.SignedThrough != 30 {
		t.Fatalf("middle checkpoint removed:%s", describe(r))
	}
}

func TestOtherSigningKey(t *testing.T) {
	fx, ls := tamperLog(t)
	i := lineOf(t, ls, 20, true)
	e, _ := parseLine(bytes.TrimSuffix(ls[i], []byte{'\n'}))
	other, _ := GenerateKey()

	// Re-signed by another key, honestly naming it.
	c := newCheckpoint(other, e.ckpt.Seq, e.ckpt.Hash, e.ckpt.Time, e.ckpt.Every)
	mod := cloneLines(ls)
	mod[i] = c.marshalLine()
	r := verifyBytes(join(mod), fx.pub)
	requireProblem(t, r, ProblemUnknownKey, 20)
	requireOnlySeqs(t, r, 20)

	// Signed by another key, claiming the genuine key id.
	c.KeyID = fx.key.ID()
	c.Signature = ed25519.Sign(other.priv, c.signedMessage())
	mod[i] = c.marshalLine()
	r = verifyBytes(join(mod), fx.pub)
	requireProblem(t, r, ProblemBadSignature, 20)
	requireOnlySeqs(t, r, 20)

	// A verifier given the wrong key entirely rejects every checkpoint.
	r = verifyBytes(join(ls), []ed25519.PublicKey{other.PublicKey()})
	for _, seq := range []uint64{10, 20, 30} {
		requireProblem(t, r, ProblemUnknownKey, seq)
	}
	if r.SignedThrough != 0 {
		t.Fatalf("signed through %d with no trusted key", r.SignedThrough)
	}
}

// Rewriting records after the last checkpoint (and recomputing the chain)
// cannot be told from the original; going beyond the signed interval can.
func TestRewrittenTail(t *testing.T) {
	fx, ls := tamperLog(t)
	i := lineOf(t, ls, 20, true)
	mod := cloneLines(ls[:i+1])
	prev := parseRecordLine(t, ls[i-1]).Hash
	for seq := uint64(21); seq <= 31; seq++ {
		mod = append(mod, forge(seq, prev, "rewriter"))
		prev = parseRecordLine(t, mod[len(mod)-1]).Hash
	}
	r := verifyBytes(join(mod), fx.pub)
	requireProblem(t, r, ProblemMissingCheckpoint, 30)
	if r.UnsignedFrom != 21 || r.UnsignedTo != 31 {
		t.Fatalf("unsigned %d..%d", r.UnsignedFrom, r.UnsignedTo)
	}
}

func TestDuplicatedLine(t *testing.T) {
	fx, ls := tamperLog(t)
	i := lineOf(t, ls, 15, false)
	mod := cloneLines(ls)
	mod = append(mod[:i+1], append([][]byte{bytes.Clone(ls[i])}, mod[i+1:]...)...)
	r := verifyBytes(join(mod), fx.pub)
	requireProblem(t, r, ProblemDuplicate, 15)
	requireOnlySeqs(t, r, 15)
}

func TestVerifyFlagsForbiddenPayload(t *testing.T) {
	fx, ls := tamperLog(t)
	// A record written around the writer, hash and all.
	last := parseRecordLine(t, ls[len(ls)-2])
	r := Record{Seq: 31, Time: testClock()(), Kind: KindDecision, Actor: "x", Payload: json.RawMessage(`{"embedding":[0.1,0.2]}`), Prev: last.Hash}
	r.Hash = r.ComputeHash()
	rep := verifyBytes(append(join(ls), r.marshalLine()...), fx.pub)
	requireProblem(t, rep, ProblemForbiddenPayload, 31)
}

func TestLinkLineInFullLog(t *testing.T) {
	fx, ls := tamperLog(t)
	i := lineOf(t, ls, 15, false)
	rec := parseRecordLine(t, ls[i])
	l := link{Seq: 15, Digest: rec.ContentDigest(), Prev: rec.Prev, Hash: rec.Hash}
	mod := cloneLines(ls)
	mod[i] = l.marshalLine()
	r := verifyBytes(join(mod), fx.pub)
	requireProblem(t, r, ProblemUnexpectedLink, 15)
	requireOnlySeqs(t, r, 15)
}

// The property the format is built for: every byte is significant. A
// 200-record log, 200 seeded random positions, each changed to a random
// other value: every change is detected and located at its line or seq.
func TestRandomByteChangesAlwaysDetected(t *testing.T) {
	fx := newFixture(t)
	data := fx.writeLog(t, 200, 25)
	ls := lines(data)
	// Map each byte offset to its line index and that line's seq.
	lineAt := make([]int, len(data))
	seqOf := make([]uint64, len(ls))
	off := 0
	for i, l := range ls {
		for range l {
			lineAt[off] = i
			off++
		}
		e, err := parseLine(bytes.TrimSuffix(l, []byte{'\n'}))
		if err != nil {
			t.Fatal(err)
		}
		seqOf[i] = entrySeq(e)
	}
	rng := mrand.New(mrand.NewPCG(20260301, 7))
	for n := 0; n < 200; n++ {
		pos := rng.IntN(len(data))
		delta := byte(1 + rng.IntN(255))
		mod := bytes.Clone(data)
		mod[pos] += delta
		r := verifyBytes(mod, fx.pub)
		if r.OK() {
			t.Fatalf("change #%d at offset %d (%q -> %q) not detected", n, pos, data[pos], mod[pos])
		}
		li := lineAt[pos]
		located := false
		for _, p := range r.Problems {
			located = located || p.Line == li+1 || p.Seq == seqOf[li]
		}
		if !located {
			t.Fatalf("change #%d at offset %d (line %d, seq %d, %q -> %q) reported elsewhere:%s", n, pos, li+1, seqOf[li], data[pos], mod[pos], describe(r))
		}
	}
}

func TestVerifyWindowLongLog(t *testing.T) {
	// Longer than the verifier's window, with a removal late in the log:
	// eviction must not lose or invent problems.
	if testing.Short() {
		t.Skip("writes 20000 records")
	}
	fx := newFixture(t)
	fx.sync = SyncPolicy{EveryRecords: 1000}
	data := fx.writeLog(t, verifyWindow+3000, 1000)
	ls := lines(data)
	if r := verifyBytes(data, fx.pub); !r.OK() {
		t.Fatalf("long log:%s", describe(r))
	}
	i := lineOf(t, ls, verifyWindow+2500, false)
	mod := append(cloneLines(ls[:i]), ls[i+1:]...)
	r := verifyBytes(join(mod), fx.pub)
	requireProblem(t, r, ProblemMissing, verifyWindow+2500)
	requireOnlySeqs(t, r, verifyWindow+2500)
}

func TestVerifyGarbage(t *testing.T) {
	junk := make([]byte, 4096)
	rand.Read(junk)
	for _, in := range [][]byte{junk, []byte("\n\n\n"), []byte("{}\n"), []byte(strings.Repeat("x", maxLineBytes+10) + "\n")} {
		r := verifyBytes(in, nil)
		if r.OK() {
			t.Fatalf("garbage %q... verified", in[:min(20, len(in))])
		}
	}
}

func FuzzVerify(f *testing.F) {
	// A fixed key: every fuzz worker process then sees the same seeds, so
	// the stored corpus stays meaningful across runs.
	fx := newFixture(f)
	k, err := NewSigningKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)))
	if err != nil {
		f.Fatal(err)
	}
	fx.key, fx.pub = k, []ed25519.PublicKey{k.PublicKey()}
	data := fx.writeLog(f, 12, 5)
	f.Add(data)
	f.Add(data[:len(data)/2])
	ls := lines(data)
	f.Add(join(append([][]byte{ls[3]}, ls...)))
	f.Add([]byte(`{"type":"checkpoint","seq":1,"hash":"` + strings.Repeat("0", 64) + `"}` + "\n"))
	f.Add([]byte(`{"type":"link","seq":18446744073709551615,"digest":"","prev":"","hash":""}` + "\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, v := range []Verifier{{Keys: fx.pub}, {Keys: fx.pub, Partial: true}} {
			r := v.Verify(bytes.NewReader(in))
			for _, p := range r.Problems {
				if p.Kind == "" || p.Detail == "" {
					t.Fatalf("empty problem %+v", p)
				}
			}
			if r.OK() && len(in) > 0 && in[len(in)-1] != '\n' {
				t.Fatalf("input without final newline verified")
			}
			v.VerifyCSV(bytes.NewReader(in))
		}
	})
}
