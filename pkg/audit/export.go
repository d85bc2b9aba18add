package audit

import (
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// Format is an export format.
type Format int

const (
	// FormatJSONL is the log's own line format: an export verifies with
	// Verifier{Partial: true}.Verify.
	FormatJSONL Format = iota + 1
	// FormatCSV has one row per line of the JSONL form, under a header row
	// (csvHeader); it verifies with Verifier{Partial: true}.VerifyCSV.
	FormatCSV
)

// ParseFormat reads "jsonl" or "csv".
func ParseFormat(s string) (Format, error) {
	switch s {
	case "jsonl", "json":
		return FormatJSONL, nil
	case "csv":
		return FormatCSV, nil
	}
	return 0, fmt.Errorf("audit: unknown export format %q (want jsonl or csv)", s)
}

var csvHeader = []string{"type", "seq", "time", "kind", "actor", "subject", "payload", "prev", "hash", "digest", "every", "key_id", "sig"}

// Export copies records from..to (inclusive; 0 means the log's start or end)
// of the log read from r to w, with what makes the export verifiable on its
// own: the checkpoints inside the range, and after the range the chain up to
// the next checkpoint, each record there replaced by a link line (seq,
// content digest, prev, hash) that discloses nothing of it. The first
// exported record's prev is the export's starting point; records before it
// are not needed.
//
// Export does not verify: verify the export (or the log) afterwards. It
// stops with an error at a line it cannot parse.
func Export(w io.Writer, r io.Reader, from, to uint64, format Format) error {
	if from == 0 {
		from = 1
	}
	if to == 0 {
		to = math.MaxUint64
	}
	if from > to {
		return fmt.Errorf("audit: export: range %d..%d is empty", from, to)
	}
	var out lineWriter
	switch format {
	case FormatJSONL:
		out = jsonlWriter{w}
	case FormatCSV:
		cw := csv.NewWriter(w)
		if err := cw.Write(csvHeader); err != nil {
			return fmt.Errorf("audit: export: %w", err)
		}
		out = csvWriter{cw}
	default:
		return fmt.Errorf("audit: export: unknown format %d", format)
	}
	lr := newLineReader(r)
	exported := false
	for {
		line, terminated, tooLong, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("audit: export: read: %w", err)
		}
		if tooLong || !terminated {
			return fmt.Errorf("audit: export: line %d is incomplete or too long: verify the log", lr.line)
		}
		e, err := parseLine(line)
		if err != nil {
			return fmt.Errorf("audit: export: line %d: %w: verify the log", lr.line, err)
		}
		seq := entrySeq(e)
		switch {
		case seq < from:
			continue
		case e.typ == entCheckpoint:
			if !exported {
				continue
			}
			if err := out.checkpoint(&e.ckpt); err != nil {
				return err
			}
			if seq >= to {
				return out.flush()
			}
		case seq <= to:
			exported = true
			if e.typ == entLink {
				err = out.link(&e.link)
			} else {
				err = out.record(&e.rec)
			}
			if err != nil {
				return err
			}
		case !exported:
			// The range holds no record of this log.
			return out.flush()
		default:
			l := e.link
			if e.typ == entRecord {
				l = link{Seq: e.rec.Seq, Digest: e.rec.ContentDigest(), Prev: e.rec.Prev, Hash: e.rec.Hash}
			}
			if err := out.link(&l); err != nil {
				return err
			}
		}
	}
	return out.flush()
}

type lineWriter interface {
	record(*Record) error
	checkpoint(*Checkpoint) error
	link(*link) error
	flush() error
}

type jsonlWriter struct{ w io.Writer }

func (j jsonlWriter) put(b []byte) error {
	if _, err := j.w.Write(b); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	return nil
}
func (j jsonlWriter) record(r *Record) error         { return j.put(r.marshalLine()) }
func (j jsonlWriter) checkpoint(c *Checkpoint) error { return j.put(c.marshalLine()) }
func (j jsonlWriter) link(l *link) error             { return j.put(l.marshalLine()) }
func (j jsonlWriter) flush() error                   { return nil }

type csvWriter struct{ w *csv.Writer }

func (c csvWriter) put(row []string) error {
	if err := c.w.Write(row); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	return nil
}

func (c csvWriter) record(r *Record) error {
	return c.put([]string{"record", u64(r.Seq), formatTime(r.Time), string(r.Kind), r.Actor, r.Subject, string(r.Payload), r.Prev.String(), r.Hash.String(), "", "", "", ""})
}

func (c csvWriter) checkpoint(k *Checkpoint) error {
	return c.put([]string{"checkpoint", u64(k.Seq), formatTime(k.Time), "", "", "", "", "", k.Hash.String(), "", u64(k.Every), k.KeyID, hex.EncodeToString(k.Signature)})
}

func (c csvWriter) link(l *link) error {
	return c.put([]string{"link", u64(l.Seq), "", "", "", "", "", l.Prev.String(), l.Hash.String(), l.Digest.String(), "", "", ""})
}

func (c csvWriter) flush() error {
	c.w.Flush()
	if err := c.w.Error(); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	return nil
}

func u64(v uint64) string { return strconv.FormatUint(v, 10) }

// VerifyCSV checks a CSV export the way Verify checks JSON lines. Line
// numbers in the report count the header as line 1. CSV quoting is not
// canonical, so here only values are checked (which is all the hashes and
// signatures cover).
func (v Verifier) VerifyCSV(r io.Reader) Report {
	s := newVerifyState(v)
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = len(csvHeader)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		s.problem(ProblemMalformed, 0, 1, fmt.Sprintf("no CSV header: %v", err))
		return s.finish()
	}
	for i, h := range csvHeader {
		if header[i] != h {
			s.problem(ProblemMalformed, 0, 1, fmt.Sprintf("CSV header column %d is %q, want %q", i+1, short(header[i]), h))
			return s.finish()
		}
	}
	for row := 2; ; row++ {
		fields, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) && !errors.Is(pe.Err, csv.ErrFieldCount) {
				// The reader cannot resynchronise after a quoting error.
				s.problem(ProblemMalformed, s.maxSeq+1, row, err.Error())
				break
			}
			s.malformed(row, nil, err.Error())
			continue
		}
		e, err := csvEntry(fields)
		if err != nil {
			s.malformed(row, nil, err.Error())
			continue
		}
		s.entry(e, row)
	}
	return s.finish()
}

func csvEntry(f []string) (entry, error) {
	w := wireLine{Type: f[0], Time: f[2], Kind: f[3], Actor: f[4], Subject: f[5], Prev: f[7], Hash: f[8], Digest: f[9], KeyID: f[11], Sig: f[12]}
	var err error
	if w.Seq, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return entry{}, fmt.Errorf("seq: %w", err)
	}
	if f[6] != "" {
		w.Payload = []byte(f[6])
	}
	if f[10] != "" {
		if w.Every, err = strconv.ParseUint(f[10], 10, 64); err != nil {
			return entry{}, fmt.Errorf("every: %w", err)
		}
	}
	return w.entry()
}
