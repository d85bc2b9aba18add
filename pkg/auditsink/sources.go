package auditsink

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"
)

// seenSet is the sources appended within the dedup horizon, with the time
// each was appended.
type seenSet map[Source]time.Time

// prune forgets sources appended before cutoff.
func (s seenSet) prune(cutoff time.Time) {
	for k, t := range s {
		if t.Before(cutoff) {
			delete(s, k)
		}
	}
}

// tailLine is the part of a log line the sink reads back.
type tailLine struct {
	Type    string `json:"type"`
	Time    string `json:"time"`
	Payload struct {
		Source string `json:"source"`
	} `json:"payload"`
}

// ParseTailLine reads the source and time of one record line of the log.
// ok is false for checkpoints, links, records without a source (other
// writers' records, recovery records) and lines that do not parse: the
// writer (audit.Open) has already checked the tail's integrity, so a line
// this cannot read simply names no source.
func ParseTailLine(line []byte) (src Source, t time.Time, ok bool) {
	if !bytes.HasPrefix(line, []byte(`{"type":"record"`)) || !bytes.Contains(line, []byte(`"source":`)) {
		return Source{}, time.Time{}, false
	}
	var tl tailLine
	if err := json.Unmarshal(line, &tl); err != nil || tl.Type != "record" || tl.Payload.Source == "" {
		return Source{}, time.Time{}, false
	}
	s, err := ParseSource(tl.Payload.Source)
	if err != nil {
		return Source{}, time.Time{}, false
	}
	ts, err := time.Parse(time.RFC3339Nano, tl.Time)
	if err != nil {
		return Source{}, time.Time{}, false
	}
	return s, ts.UTC(), true
}

// readRecentSources reads the log at path backwards from its end and
// returns every source recorded within horizon of the last sourced record's
// time. Only the tail is read, so start-up cost does not grow with the
// log's age. A missing file has no sources.
func readRecentSources(path string, horizon time.Duration) (seenSet, error) {
	seen := seenSet{}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return seen, nil
	}
	if err != nil {
		return nil, fmt.Errorf("auditsink: read log tail: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("auditsink: read log tail: %w", err)
	}
	var cutoff time.Time
	first := true
	err = scanBackwards(f, st.Size(), 64<<10, func(line []byte) bool {
		src, t, ok := ParseTailLine(line)
		if !ok {
			return true
		}
		if first {
			// The newest sourced record sets the horizon.
			first, cutoff = false, t.Add(-horizon)
		} else if t.Before(cutoff) {
			return false
		}
		if _, dup := seen[src]; !dup {
			seen[src] = t
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("auditsink: read log tail: %w", err)
	}
	return seen, nil
}

// scanBackwards calls fn with every complete line of r[0:size] (without
// its newline), last line first, until fn returns false. A final line
// without a newline (a torn write) is skipped.
func scanBackwards(r io.ReaderAt, size int64, chunk int, fn func(line []byte) bool) error {
	// pending holds file bytes not yet handed to fn; once trimmed, it ends
	// with a newline and may start in the middle of a line.
	var pending []byte
	trimmed := false
	pos := size
	for pos > 0 {
		n := min(int64(chunk), pos)
		pos -= n
		buf := make([]byte, n, n+int64(len(pending)))
		if _, err := r.ReadAt(buf, pos); err != nil && err != io.EOF {
			return err
		}
		pending = append(buf, pending...)
		if !trimmed {
			i := bytes.LastIndexByte(pending, '\n')
			if i < 0 {
				pending = pending[:0]
				continue
			}
			pending = pending[:i+1]
			trimmed = true
		}
		for len(pending) > 0 {
			i := bytes.LastIndexByte(pending[:len(pending)-1], '\n')
			if i < 0 {
				break
			}
			if !fn(pending[i+1 : len(pending)-1]) {
				return nil
			}
			pending = pending[:i+1]
		}
		pending = bytes.Clone(pending)
	}
	if len(pending) > 0 {
		fn(pending[:len(pending)-1])
	}
	return nil
}
