package audit

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// ProblemKind classifies what Verify found wrong.
type ProblemKind string

// Problems Verify reports. Each names the seq it is about.
const (
	// ProblemMalformed: a line that is not the canonical encoding of a
	// record, checkpoint or link (any edited byte that does not change a
	// value still changes the encoding).
	ProblemMalformed ProblemKind = "malformed"
	// ProblemAltered: the record's hash is not the hash of its content and
	// prev: some field was edited.
	ProblemAltered ProblemKind = "altered"
	// ProblemForeign: a record whose hash does not verify and that fits
	// nowhere in the chain: inserted, or altered beyond recognition.
	ProblemForeign ProblemKind = "foreign"
	// ProblemPrevMismatch: the record's prev is not the hash of the record
	// before it: a record before it was replaced.
	ProblemPrevMismatch ProblemKind = "prev-mismatch"
	// ProblemMissing: records absent from the sequence: removed.
	ProblemMissing ProblemKind = "missing"
	// ProblemOutOfOrder: a record that appears after a later one: moved.
	ProblemOutOfOrder ProblemKind = "out-of-order"
	// ProblemDuplicate: two records with the same seq, neither provably the
	// genuine one.
	ProblemDuplicate ProblemKind = "duplicate"
	// ProblemInserted: a record with the seq of another record, not linked
	// into the chain by its successor or a checkpoint.
	ProblemInserted ProblemKind = "inserted"
	// ProblemCheckpointMismatch: a validly signed checkpoint whose hash is
	// not the record's: the chain up to it was rewritten.
	ProblemCheckpointMismatch ProblemKind = "checkpoint-mismatch"
	// ProblemCheckpointMisplaced: a checkpoint not directly after its record
	// or going backwards.
	ProblemCheckpointMisplaced ProblemKind = "checkpoint-misplaced"
	// ProblemBadSignature: a checkpoint whose signature does not verify
	// (edited, or signed by another key claiming a known key id).
	ProblemBadSignature ProblemKind = "bad-signature"
	// ProblemUnknownKey: a checkpoint signed by a key the verifier was not
	// given.
	ProblemUnknownKey ProblemKind = "unknown-key"
	// ProblemMissingCheckpoint: the last valid checkpoint promised another
	// one within its interval, and the log goes on without it.
	ProblemMissingCheckpoint ProblemKind = "missing-checkpoint"
	// ProblemTruncated: the last line is incomplete (no newline).
	ProblemTruncated ProblemKind = "truncated"
	// ProblemForbiddenPayload: a payload carrying biometric-looking data.
	ProblemForbiddenPayload ProblemKind = "forbidden-payload"
	// ProblemAnchor: a checkpoint the auditor held from earlier is no longer
	// in the log (truncated or rolled back) or its record changed.
	ProblemAnchor ProblemKind = "anchor"
	// ProblemUnexpectedLink: a link line (records elided) in a full log.
	ProblemUnexpectedLink ProblemKind = "unexpected-link"
	// ProblemRead: the input could not be read.
	ProblemRead ProblemKind = "read-error"
)

// Problem is one finding: which record (Seq), where (Line, from 1) and what.
type Problem struct {
	Kind   ProblemKind
	Seq    uint64
	Line   int
	Detail string
}

func (p Problem) String() string {
	return fmt.Sprintf("line %d, seq %d: %s: %s", p.Line, p.Seq, p.Kind, p.Detail)
}

// Report is what Verify found.
type Report struct {
	Records     int
	Checkpoints int // checkpoint lines, valid or not
	Links       int // elided records (exports only)
	FirstSeq    uint64
	LastSeq     uint64
	LastHash    Digest
	// SignedThrough is the highest seq covered by a valid checkpoint.
	SignedThrough uint64
	// LastCheckpoint is the last valid checkpoint; keep it and pass it as an
	// anchor next time to detect truncation and rollback.
	LastCheckpoint *Checkpoint
	// UnsignedFrom..UnsignedTo are the records after the last valid
	// checkpoint: not an error (the writer may still be running or have
	// crashed), but only the hash chain vouches for them.
	UnsignedFrom, UnsignedTo uint64
	// Recoveries lists recovery records: the writer discarded a torn line.
	Recoveries []uint64
	Problems   []Problem
}

// OK is true when nothing is wrong. An unsigned tail is not wrong.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// ErrVerify is wrapped by Report.Err.
var ErrVerify = errors.New("audit log does not verify")

// Err summarises the problems as an error, or nil.
func (r *Report) Err() error {
	if r.OK() {
		return nil
	}
	var b strings.Builder
	for i, p := range r.Problems {
		if i == 5 {
			fmt.Fprintf(&b, "; and %d more", len(r.Problems)-5)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return fmt.Errorf("%w: %s", ErrVerify, b.String())
}

// Has reports whether a problem of this kind was found about seq.
func (r *Report) Has(kind ProblemKind, seq uint64) bool {
	for _, p := range r.Problems {
		if p.Kind == kind && p.Seq == seq {
			return true
		}
	}
	return false
}

// Verifier checks a log or an export.
type Verifier struct {
	// Keys are the checkpoint public keys the auditor trusts.
	Keys []ed25519.PublicKey
	// Anchors are checkpoints kept from an earlier verification (or
	// received out of band); each must still be in the log with the same
	// hash. Without an anchor, cutting whole lines off the end of the log
	// is indistinguishable from a log that was never longer.
	Anchors []Checkpoint
	// Partial accepts an export: it may start after seq 1 (its first
	// record's prev is taken as given) and may carry link lines.
	Partial bool
}

// Verify checks a full log file against the trusted public keys.
func Verify(r io.Reader, keys []ed25519.PublicKey) Report {
	return Verifier{Keys: keys}.Verify(r)
}

// Verify reads JSON lines and reports every problem it finds. It never
// fails: unreadable input is itself reported. Memory stays bounded by a
// window of recent records, so a log of any length can be checked.
func (v Verifier) Verify(r io.Reader) Report {
	s := newVerifyState(v)
	lr := newLineReader(r)
	for {
		line, terminated, tooLong, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			s.problem(ProblemRead, s.maxSeq+1, lr.line+1, err.Error())
			break
		}
		n := lr.line
		if tooLong {
			s.malformed(n, nil, fmt.Sprintf("line is longer than %d bytes", maxLineBytes))
			if !terminated {
				s.problem(ProblemTruncated, s.maxSeq, n, "the log ends in the middle of a line")
			}
			continue
		}
		e, perr := parseLine(line)
		if perr != nil {
			if !terminated {
				s.truncatedLine(n, line)
			} else {
				s.malformed(n, line, perr.Error())
			}
			continue
		}
		s.entry(e, n)
		if !terminated {
			s.problem(ProblemTruncated, entrySeq(e), n, "the last line has no newline: the write was cut short or the file truncated")
		}
	}
	return s.finish()
}

func entrySeq(e entry) uint64 {
	switch e.typ {
	case entRecord:
		return e.rec.Seq
	case entCheckpoint:
		return e.ckpt.Seq
	default:
		return e.link.Seq
	}
}

// verifyWindow is how many recent seqs the verifier remembers: enough to
// pair up any realistic reordering, small enough for any log length.
const verifyWindow = 1 << 14

// cand is a chain element (record or link) the verifier has seen.
type cand struct {
	line     int
	seq      uint64
	prev     Digest
	stored   Digest // the hash field as written
	computed Digest // the hash the content gives
	linked   bool   // a successor or a checkpoint vouches for it
}

func (c *cand) matches(d Digest) bool { return d == c.stored || d == c.computed }

type verifyState struct {
	v    Verifier
	keys map[string]ed25519.PublicKey
	rep  Report

	started  bool   // a chain element was accepted (or genesis, for full logs)
	maxSeq   uint64 // highest seq placed in the sequence
	last     *cand  // the positionally last accepted chain element
	window   map[uint64][]*cand
	order    []uint64 // window seqs in insertion order, for eviction
	pending  map[uint64][]*cand
	pendCkpt map[uint64][]Checkpoint
	holes    ranges
	// malformedSeqs are seqs whose line exists but could not be parsed:
	// their absence from the chain is already reported.
	malformedSeqs map[uint64]bool
	// unattributed are malformed lines since the last chain element whose
	// seq is not known yet; a gap found next is attributed to them.
	unattributed []int
	anchors      map[uint64]*anchorState
	probs        []*Problem
}

type anchorState struct {
	ckpt  Checkpoint
	found bool
}

func newVerifyState(v Verifier) *verifyState {
	s := &verifyState{
		v:             v,
		keys:          map[string]ed25519.PublicKey{},
		window:        map[uint64][]*cand{},
		pending:       map[uint64][]*cand{},
		pendCkpt:      map[uint64][]Checkpoint{},
		malformedSeqs: map[uint64]bool{},
		anchors:       map[uint64]*anchorState{},
	}
	for _, k := range v.Keys {
		s.keys[KeyID(k)] = k
	}
	for _, a := range v.Anchors {
		s.anchors[a.Seq] = &anchorState{ckpt: a}
	}
	if !v.Partial {
		// A full log starts at seq 1 whose prev is all zeros: a virtual
		// record 0 with a zero hash.
		s.started = true
		s.last = &cand{}
		s.rep.FirstSeq = 1
	}
	return s
}

func (s *verifyState) problem(kind ProblemKind, seq uint64, line int, detail string) *Problem {
	p := &Problem{Kind: kind, Seq: seq, Line: line, Detail: detail}
	s.probs = append(s.probs, p)
	return p
}

func (s *verifyState) entry(e entry, line int) {
	switch e.typ {
	case entRecord:
		s.rep.Records++
		r := &e.rec
		c := &cand{line: line, seq: r.Seq, prev: r.Prev, stored: r.Hash, computed: r.ComputeHash()}
		seq, ok := s.chain(c, "record")
		if !ok {
			return
		}
		if r.Kind == KindRecovery {
			s.rep.Recoveries = append(s.rep.Recoveries, seq)
		}
		if err := CheckPayload(r.Payload); err != nil {
			s.problem(ProblemForbiddenPayload, seq, line, err.Error())
		}
	case entLink:
		s.rep.Links++
		l := &e.link
		c := &cand{line: line, seq: l.Seq, prev: l.Prev, stored: l.Hash, computed: l.computeHash()}
		seq, ok := s.chain(c, "link")
		if ok && !s.v.Partial {
			s.problem(ProblemUnexpectedLink, seq, line, "a record was replaced by its digest: links belong in exports, not in the log")
		}
	case entCheckpoint:
		s.rep.Checkpoints++
		s.checkpoint(e.ckpt, line)
	}
}

// chain places a record or link in the sequence and checks its links. It
// returns the seq the element is attributed to, and false when the element
// fits nowhere (reported as foreign and otherwise ignored).
func (s *verifyState) chain(c *cand, what string) (uint64, bool) {
	hashOK := c.stored == c.computed
	positional := s.last != nil && s.last.matches(c.prev)
	expect := s.maxSeq + 1
	if !s.started {
		expect = c.seq
	}
	if !hashOK {
		switch {
		case c.seq == expect:
			s.problem(ProblemAltered, c.seq, c.line, what+" content does not match its hash: a field was edited")
		case positional:
			// prev points at the record before, so this is that record's
			// successor whose seq field was edited (the seq is hashed).
			s.problem(ProblemAltered, expect, c.line, fmt.Sprintf("%s content does not match its hash: the seq field reads %d where %d belongs", what, c.seq, expect))
			c.seq = expect
		default:
			s.problem(ProblemForeign, c.seq, c.line, fmt.Sprintf("%s (seq field %d) has a hash that does not verify and does not link to the record before it: inserted or edited", what, c.seq))
			return c.seq, false
		}
	}
	if s.started {
		s.attribute(c.seq - 1)
	} else {
		s.unattributed = nil
	}

	// Place it in the sequence.
	switch {
	case !s.started:
		s.started = true
		s.maxSeq = c.seq
		s.rep.FirstSeq = c.seq
	case c.seq == s.maxSeq+1:
		s.maxSeq = c.seq
	case c.seq > s.maxSeq+1:
		s.addGap(s.maxSeq+1, c.seq-1, c.line)
		s.maxSeq = c.seq
	default:
		switch {
		case s.holes.remove(c.seq):
			s.problem(ProblemOutOfOrder, c.seq, c.line, fmt.Sprintf("%s %d appears after %d: records were reordered", what, c.seq, s.maxSeq))
		case len(s.window[c.seq]) > 0:
			// A second element with this seq: which one is genuine is
			// settled when the window moves on (duplicates).
		case s.maxSeq-c.seq >= verifyWindow:
			s.problem(ProblemOutOfOrder, c.seq, c.line, fmt.Sprintf("%s %d appears long after %d: duplicated or moved", what, c.seq, s.maxSeq))
		}
	}

	// Check its link to its predecessor.
	pred := c.seq - 1
	switch {
	case s.v.Partial && c.seq == s.rep.FirstSeq && len(s.window) == 0:
		// The first element of an export: its prev is the starting point.
	case pred == 0:
		if !c.prev.IsZero() && hashOK {
			s.problem(ProblemPrevMismatch, c.seq, c.line, "the first record must have an all-zero prev")
		}
	case len(s.window[pred]) > 0:
		if linkAll(s.window[pred], func(p *cand) bool { return p.matches(c.prev) }) {
			// linked
		} else if hashOK {
			s.problem(ProblemPrevMismatch, c.seq, c.line, fmt.Sprintf("prev is not the hash of record %d (line %d): the record before was replaced", pred, s.window[pred][0].line))
		}
	case s.malformedSeqs[pred]:
		// Already reported as malformed.
	case s.holes.contains(pred):
		s.pending[pred] = append(s.pending[pred], c)
	}

	s.window[c.seq] = append(s.window[c.seq], c)
	s.order = append(s.order, c.seq)
	if ps := s.pending[c.seq]; len(ps) > 0 {
		for _, p := range ps {
			if c.matches(p.prev) {
				c.linked = true
			} else if p.stored == p.computed {
				s.problem(ProblemPrevMismatch, p.seq, p.line, fmt.Sprintf("prev is not the hash of record %d (line %d)", c.seq, c.line))
			}
		}
		delete(s.pending, c.seq)
	}
	for _, ck := range s.pendCkpt[c.seq] {
		s.matchCheckpoint(ck, c.seq, c.line, []*cand{c})
	}
	delete(s.pendCkpt, c.seq)
	if a := s.anchors[c.seq]; a != nil {
		a.found = true
		if c.computed != a.ckpt.Hash {
			s.problem(ProblemAnchor, c.seq, c.line, "the record differs from the anchored checkpoint: the log was rewritten")
		}
	}
	s.last = c
	if c.seq == s.maxSeq {
		s.rep.LastHash = c.stored
	}
	s.evict()
	return c.seq, true
}

// linkAll marks every element that ok accepts as linked (an exact copy of a
// line links as well as the original) and reports whether there was one.
func linkAll(cs []*cand, ok func(*cand) bool) bool {
	found := false
	for _, c := range cs {
		if ok(c) {
			c.linked = true
			found = true
		}
	}
	return found
}

// attribute gives malformed lines seen since the last chain element the
// seqs after maxSeq, up to upTo, that a later line shows must exist: one
// damaged record is then reported once (malformed), not again as missing.
func (s *verifyState) attribute(upTo uint64) {
	idx := s.unattributed
	s.unattributed = nil
	if !s.started {
		return
	}
	next := s.maxSeq + 1
	for _, i := range idx {
		if next > upTo {
			break
		}
		s.probs[i].Seq = next
		s.malformedSeqs[next] = true
		s.maxSeq = next
		next++
	}
}

func (s *verifyState) addGap(from, to uint64, line int) {
	s.holes.add(from, to, line)
}

func (s *verifyState) malformed(line int, text []byte, detail string) {
	typ, seq, ok := lineHint(text)
	switch {
	case ok && typ == "checkpoint":
		s.problem(ProblemMalformed, seq, line, "checkpoint: "+detail)
	case !ok && s.last != nil && bytes.Contains(text, []byte(`"key_id":`)):
		// A checkpoint whose prefix was damaged: it belongs to the record
		// it follows.
		s.problem(ProblemMalformed, s.last.seq, line, "checkpoint: "+detail)
	case ok && s.started && seq == s.maxSeq+1:
		s.problem(ProblemMalformed, seq, line, typ+": "+detail)
		s.malformedSeqs[seq] = true
		s.maxSeq = seq
	case ok:
		s.problem(ProblemMalformed, seq, line, typ+": "+detail)
	default:
		s.problem(ProblemMalformed, s.maxSeq+1, line, detail)
		s.unattributed = append(s.unattributed, len(s.probs)-1)
	}
}

func (s *verifyState) truncatedLine(line int, text []byte) {
	seq := s.maxSeq + 1
	if _, h, ok := lineHint(text); ok {
		seq = h
	}
	s.problem(ProblemTruncated, seq, line, fmt.Sprintf("the log ends in the middle of a line (%d bytes): the write was cut short or the file truncated", len(text)))
}

func (s *verifyState) checkpoint(c Checkpoint, line int) {
	pub, known := s.keys[c.KeyID]
	sigOK := known && c.VerifySignature(pub)
	cands := s.window[c.Seq]
	if !sigOK {
		// Nothing in an unverified checkpoint can be trusted, its seq
		// included: report it at the record it follows.
		seq, claims := c.Seq, ""
		if s.last != nil && s.last.seq != 0 && s.last.seq != c.Seq {
			seq = s.last.seq
			claims = fmt.Sprintf(" (it claims seq %d)", c.Seq)
		}
		if !known {
			s.problem(ProblemUnknownKey, seq, line, fmt.Sprintf("checkpoint signed by key %q, which is not among the trusted keys%s", short(c.KeyID), claims))
		} else {
			s.problem(ProblemBadSignature, seq, line, "checkpoint signature does not verify: the checkpoint was edited or signed by another key"+claims)
		}
		return
	}
	if lc := s.rep.LastCheckpoint; lc != nil && c.Seq < lc.Seq {
		s.problem(ProblemCheckpointMisplaced, c.Seq, line, fmt.Sprintf("checkpoint for %d comes after the checkpoint for %d", c.Seq, lc.Seq))
		return
	}
	if len(cands) == 0 && s.started && c.Seq > s.maxSeq {
		// Malformed lines just before may be the records it vouches for.
		s.attribute(c.Seq)
	}
	switch {
	case len(cands) > 0:
		if s.last != nil && s.last.seq != c.Seq {
			s.problem(ProblemCheckpointMisplaced, c.Seq, line, fmt.Sprintf("checkpoint for %d follows record %d", c.Seq, s.last.seq))
		}
		s.matchCheckpoint(c, c.Seq, line, cands)
	case s.started && c.Seq > s.maxSeq:
		// A valid signature vouches that records up to c.Seq existed.
		s.addGap(s.maxSeq+1, c.Seq, line)
		s.maxSeq = c.Seq
		s.pendCkpt[c.Seq] = append(s.pendCkpt[c.Seq], c)
	case s.malformedSeqs[c.Seq] || s.holes.contains(c.Seq):
		// Its record is already reported; the signature is good, so the
		// checkpoint still vouches for the chain up to it.
		s.accept(c)
	default:
		s.problem(ProblemCheckpointMisplaced, c.Seq, line, fmt.Sprintf("checkpoint for %d, which is not among the recent records", c.Seq))
	}
}

func (s *verifyState) matchCheckpoint(c Checkpoint, seq uint64, line int, cands []*cand) {
	if linkAll(cands, func(k *cand) bool { return k.computed == c.Hash }) {
		s.accept(c)
		return
	}
	from := uint64(1)
	if lc := s.rep.LastCheckpoint; lc != nil {
		from = lc.Seq + 1
	}
	s.problem(ProblemCheckpointMismatch, seq, line, fmt.Sprintf("the signed hash differs from record %d's: records %d..%d were rewritten", seq, from, seq))
}

func (s *verifyState) accept(c Checkpoint) {
	cc := c
	s.rep.LastCheckpoint = &cc
	s.rep.SignedThrough = max(s.rep.SignedThrough, c.Seq)
}

func (s *verifyState) evict() {
	if s.maxSeq < verifyWindow {
		return
	}
	floor := s.maxSeq - verifyWindow
	for len(s.order) > 0 && s.order[0] < floor {
		seq := s.order[0]
		s.order = s.order[1:]
		if cs, ok := s.window[seq]; ok {
			s.settleDuplicates(cs)
			delete(s.window, seq)
		}
		delete(s.pending, seq)
	}
}

// settleDuplicates decides, once no successor can arrive any more, which of
// several elements sharing a seq is genuine: the one the chain links to.
func (s *verifyState) settleDuplicates(cs []*cand) {
	if len(cs) < 2 {
		return
	}
	var linked, unlinked []*cand
	for _, c := range cs {
		if c.linked {
			linked = append(linked, c)
		} else {
			unlinked = append(unlinked, c)
		}
	}
	if len(linked) > 0 && len(unlinked) > 0 {
		for _, c := range unlinked {
			s.problem(ProblemInserted, c.seq, c.line, fmt.Sprintf("a second record %d that neither its successor nor a checkpoint links to: inserted (the genuine one is on line %d)", c.seq, linked[0].line))
		}
		return
	}
	lines := make([]string, len(cs))
	for i, c := range cs {
		lines[i] = fmt.Sprint(c.line)
	}
	s.problem(ProblemDuplicate, cs[0].seq, cs[len(cs)-1].line, fmt.Sprintf("record %d appears %d times (lines %s)", cs[0].seq, len(cs), strings.Join(lines, ", ")))
}

func (s *verifyState) finish() Report {
	seqs := make([]uint64, 0, len(s.window))
	for seq := range s.window {
		seqs = append(seqs, seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	for _, seq := range seqs {
		s.settleDuplicates(s.window[seq])
	}
	for _, h := range s.holes.list {
		if h.from == h.to {
			s.problem(ProblemMissing, h.from, h.line, fmt.Sprintf("record %d is missing: removed", h.from))
		} else {
			s.problem(ProblemMissing, h.from, h.line, fmt.Sprintf("records %d..%d are missing: removed", h.from, h.to))
		}
	}
	anchorSeqs := make([]uint64, 0, len(s.anchors))
	for seq, a := range s.anchors {
		if !a.found {
			anchorSeqs = append(anchorSeqs, seq)
		}
	}
	sort.Slice(anchorSeqs, func(i, j int) bool { return anchorSeqs[i] < anchorSeqs[j] })
	for _, seq := range anchorSeqs {
		s.problem(ProblemAnchor, seq, 0, fmt.Sprintf("anchored record %d is not in the log (it ends at %d): truncated or rolled back", seq, s.maxSeq))
	}
	s.rep.LastSeq = s.maxSeq
	if s.rep.Records+s.rep.Links > 0 && s.maxSeq > s.rep.SignedThrough {
		s.rep.UnsignedFrom = max(s.rep.SignedThrough+1, s.rep.FirstSeq)
		s.rep.UnsignedTo = s.maxSeq
	}
	if lc := s.rep.LastCheckpoint; lc != nil && lc.Every > 0 && s.maxSeq > lc.Seq+lc.Every {
		s.problem(ProblemMissingCheckpoint, lc.Seq+lc.Every, 0, fmt.Sprintf("the checkpoint for %d promised the next one by %d, but the log goes on to %d without a valid one: the tail may have been rewritten", lc.Seq, lc.Seq+lc.Every, s.maxSeq))
	}
	sort.SliceStable(s.probs, func(i, j int) bool {
		a, b := s.probs[i], s.probs[j]
		if (a.Line == 0) != (b.Line == 0) {
			return b.Line == 0
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Seq < b.Seq
	})
	for _, p := range s.probs {
		s.rep.Problems = append(s.rep.Problems, *p)
	}
	return s.rep
}

// ranges is a small set of seq intervals: the gaps seen so far. It stays
// small because a gap only exists where something is wrong.
type ranges struct{ list []gap }

type gap struct {
	from, to uint64
	line     int
}

func (r *ranges) add(from, to uint64, line int) {
	if from > to {
		return
	}
	r.list = append(r.list, gap{from, to, line})
}

func (r *ranges) contains(seq uint64) bool {
	for _, g := range r.list {
		if seq >= g.from && seq <= g.to {
			return true
		}
	}
	return false
}

func (r *ranges) remove(seq uint64) bool {
	for i, g := range r.list {
		if seq < g.from || seq > g.to {
			continue
		}
		switch {
		case g.from == g.to:
			r.list = append(r.list[:i], r.list[i+1:]...)
		case seq == g.from:
			r.list[i].from++
		case seq == g.to:
			r.list[i].to--
		default:
			r.list = append(r.list, gap{seq + 1, g.to, g.line})
			r.list[i].to = seq - 1
		}
		return true
	}
	return false
}
