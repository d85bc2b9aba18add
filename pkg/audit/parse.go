package audit

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"time"
)

// maxLineBytes bounds one line. A record is at most a few KiB (payload limit
// plus fixed fields); anything far longer is not a line this package wrote.
const maxLineBytes = 64 << 10

type entryType int

const (
	entRecord entryType = iota + 1
	entCheckpoint
	entLink
)

func (t entryType) String() string {
	switch t {
	case entRecord:
		return "record"
	case entCheckpoint:
		return "checkpoint"
	case entLink:
		return "link"
	}
	return "unknown"
}

type entry struct {
	typ  entryType
	rec  Record
	ckpt Checkpoint
	link link
}

// wireLine has every field any line type may carry; which ones are allowed
// is settled by re-encoding the parsed entry and comparing bytes.
type wireLine struct {
	Type    string          `json:"type"`
	Seq     uint64          `json:"seq"`
	Time    string          `json:"time"`
	Kind    string          `json:"kind"`
	Actor   string          `json:"actor"`
	Subject string          `json:"subject"`
	Payload json.RawMessage `json:"payload"`
	Prev    string          `json:"prev"`
	Hash    string          `json:"hash"`
	Digest  string          `json:"digest"`
	Every   uint64          `json:"every"`
	KeyID   string          `json:"key_id"`
	Sig     string          `json:"sig"`
}

// parseLine turns one line (without its newline) into an entry. The line
// must be exactly the canonical encoding of what it parses to; this is what
// makes every byte of the file significant.
func parseLine(line []byte) (entry, error) {
	var w wireLine
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return entry{}, fmt.Errorf("not a JSON line of the log: %w", err)
	}
	if dec.InputOffset() != int64(len(line)) {
		return entry{}, errors.New("data after the JSON object")
	}
	e, err := w.entry()
	if err != nil {
		return entry{}, err
	}
	var canon []byte
	switch e.typ {
	case entRecord:
		canon = e.rec.marshalLine()
	case entCheckpoint:
		canon = e.ckpt.marshalLine()
	case entLink:
		canon = e.link.marshalLine()
	}
	canon = canon[:len(canon)-1]
	if !bytes.Equal(canon, line) {
		return entry{}, fmt.Errorf("%s line is not in canonical form (first difference at byte %d)", e.typ, firstDiff(canon, line))
	}
	return e, nil
}

func (w *wireLine) entry() (entry, error) {
	var e entry
	var err error
	switch w.Type {
	case "record":
		e.typ = entRecord
		r := &e.rec
		r.Seq = w.Seq
		if r.Time, err = parseTime(w.Time); err != nil {
			return e, err
		}
		r.Kind = Kind(w.Kind)
		if err := validateKind(r.Kind); err != nil {
			return e, err
		}
		r.Actor = w.Actor
		r.Subject = w.Subject
		if err := validateSubject(r.Subject); err != nil {
			return e, err
		}
		if len(w.Payload) == 0 {
			return e, errors.New("record has no payload")
		}
		r.Payload = w.Payload
		if r.Prev, err = ParseDigest(w.Prev); err != nil {
			return e, fmt.Errorf("prev: %w", err)
		}
		if r.Hash, err = ParseDigest(w.Hash); err != nil {
			return e, fmt.Errorf("hash: %w", err)
		}
	case "checkpoint":
		e.typ = entCheckpoint
		c := &e.ckpt
		c.Seq = w.Seq
		if c.Hash, err = ParseDigest(w.Hash); err != nil {
			return e, fmt.Errorf("hash: %w", err)
		}
		if c.Time, err = parseTime(w.Time); err != nil {
			return e, err
		}
		c.Every = w.Every
		c.KeyID = w.KeyID
		if c.Signature, err = hex.DecodeString(w.Sig); err != nil {
			return e, fmt.Errorf("signature: %w", err)
		}
	case "link":
		e.typ = entLink
		l := &e.link
		l.Seq = w.Seq
		if l.Digest, err = ParseDigest(w.Digest); err != nil {
			return e, fmt.Errorf("digest: %w", err)
		}
		if l.Prev, err = ParseDigest(w.Prev); err != nil {
			return e, fmt.Errorf("prev: %w", err)
		}
		if l.Hash, err = ParseDigest(w.Hash); err != nil {
			return e, fmt.Errorf("hash: %w", err)
		}
	default:
		return e, fmt.Errorf("unknown line type %q", short(w.Type))
	}
	if w.Seq == 0 {
		return e, errors.New("seq 0: sequence numbers start at 1")
	}
	return e, nil
}

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time: %w", err)
	}
	return t.UTC(), nil
}

func firstDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// seqHint recovers the seq from a damaged line when its prefix survived, so
// a malformed line can be attributed to the record it was.
var seqHint = regexp.MustCompile(`^\{"type":"(record|checkpoint|link)","seq":([1-9][0-9]{0,19})[,}]`)

func lineHint(line []byte) (typ string, seq uint64, ok bool) {
	m := seqHint.FindSubmatch(line)
	if m == nil {
		return "", 0, false
	}
	s, err := strconv.ParseUint(string(m[2]), 10, 64)
	if err != nil {
		return "", 0, false
	}
	return string(m[1]), s, true
}

// lineReader yields lines with a length bound, telling whether each ended
// with a newline (a last line without one is a torn write or a truncation).
type lineReader struct {
	br   *bufio.Reader
	line int
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 64<<10)}
}

// next returns the next line without its newline. tooLong reports a line
// beyond maxLineBytes (its content is dropped). err is io.EOF at the end.
func (lr *lineReader) next() (line []byte, terminated, tooLong bool, err error) {
	var buf []byte
	for {
		frag, e := lr.br.ReadSlice('\n')
		if !tooLong {
			if len(buf)+len(frag) > maxLineBytes+1 {
				tooLong = true
				buf = nil
			} else {
				buf = append(buf, frag...)
			}
		}
		switch {
		case e == nil:
			lr.line++
			if !tooLong {
				buf = buf[:len(buf)-1]
			}
			return buf, true, tooLong, nil
		case errors.Is(e, bufio.ErrBufferFull):
			continue
		case errors.Is(e, io.EOF):
			if len(buf) == 0 && !tooLong {
				return nil, false, false, io.EOF
			}
			lr.line++
			return buf, false, tooLong, nil
		default:
			return nil, false, false, e
		}
	}
}
