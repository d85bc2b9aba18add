package audit

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

type tailInfo struct {
	torn   []byte // a final line without newline, if any
	tornAt int64  // its offset
	seq    uint64 // last record
	head   Digest // its hash
	ckpt   *Checkpoint
	since  int // records after ckpt
}

const (
	tailChunk = 64 << 10
	// maxTailScan bounds how far back Open looks for the last checkpoint. A
	// log written by this package has one every CheckpointEvery records, so
	// this is only reached by logs from elsewhere; then the records found are
	// checked and a checkpoint is written at once.
	maxTailScan = 64 << 20
)

// readTail reads the log backwards from its end until it holds the last
// checkpoint (or the start of the file), and checks what it read.
func readTail(f *os.File, size int64, signer *SigningKey) (tailInfo, error) {
	var info tailInfo
	if size == 0 {
		return info, nil
	}
	var buf []byte
	pos := size
	for {
		n := min(int64(tailChunk), pos)
		pos -= n
		chunk := make([]byte, n, n+int64(len(buf)))
		if _, err := f.ReadAt(chunk, pos); err != nil && err != io.EOF {
			return info, fmt.Errorf("read tail: %w", err)
		}
		buf = append(chunk, buf...)
		final := pos == 0 || size-pos >= maxTailScan
		done, err := analyzeTail(&info, buf, pos, signer, final)
		if err != nil || done {
			return info, err
		}
		if final {
			return info, fmt.Errorf("%w: no complete line in the last %d bytes", ErrCorrupt, size-pos)
		}
	}
}

// analyzeTail looks at buf, which holds the file from offset pos to its end.
// It reports done once it found a checkpoint or reached the file's start,
// or when final (the scan limit) and it found at least one record.
func analyzeTail(info *tailInfo, buf []byte, pos int64, signer *SigningKey, final bool) (bool, error) {
	*info = tailInfo{}
	end := len(buf)
	if buf[end-1] != '\n' {
		nl := bytes.LastIndexByte(buf, '\n')
		if nl < 0 && pos > 0 {
			return false, nil // the torn line began further back
		}
		info.torn = bytes.Clone(buf[nl+1:])
		info.tornAt = pos + int64(nl+1)
		end = nl + 1
	}
	complete := buf[:end]
	if pos > 0 {
		// The first segment may start mid-line.
		nl := bytes.IndexByte(complete, '\n')
		if nl < 0 {
			return false, nil
		}
		complete = complete[nl+1:]
	}
	lines := bytes.Split(bytes.TrimSuffix(complete, []byte{'\n'}), []byte{'\n'})
	if len(complete) == 0 {
		lines = nil
	}
	// Walk back to the last checkpoint, collecting the records after it.
	var recs []Record
	found := -1
	for i := len(lines) - 1; i >= 0; i-- {
		e, err := parseLine(lines[i])
		if err != nil {
			return true, fmt.Errorf("%w: line %d from the end: %v", ErrCorrupt, len(lines)-i, err)
		}
		switch e.typ {
		case entLink:
			return true, fmt.Errorf("%w: line %d from the end is a link line (an export, not a log)", ErrCorrupt, len(lines)-i)
		case entCheckpoint:
			c := e.ckpt
			info.ckpt = &c
			found = i
		case entRecord:
			recs = append(recs, e.rec)
		}
		if found >= 0 {
			break
		}
	}
	if found < 0 && pos > 0 && (!final || len(recs) == 0) {
		return false, nil
	}
	// recs is newest first; check it as a chain from the checkpoint (or from
	// the start of the log) forwards.
	var seq uint64
	var head Digest
	if c := info.ckpt; c != nil {
		if c.KeyID == signer.ID() && !c.VerifySignature(signer.PublicKey()) {
			return true, fmt.Errorf("%w: the last checkpoint (seq %d) has a bad signature", ErrCorrupt, c.Seq)
		}
		seq, head = c.Seq, c.Hash
		if found > 0 {
			// The record the checkpoint signs must still be the one signed.
			e, err := parseLine(lines[found-1])
			if err != nil {
				return true, fmt.Errorf("%w: the line before the last checkpoint: %v", ErrCorrupt, err)
			}
			ok := e.typ == entRecord && e.rec.Seq == c.Seq && e.rec.ComputeHash() == c.Hash && e.rec.Hash == c.Hash
			ok = ok || e.typ == entCheckpoint && e.ckpt.Seq == c.Seq && e.ckpt.Hash == c.Hash
			if !ok {
				return true, fmt.Errorf("%w: the last checkpoint (seq %d) does not match the line before it", ErrCorrupt, c.Seq)
			}
		}
	} else if pos > 0 {
		// Scan limit reached without a checkpoint: the oldest record read
		// is taken as given and the chain checked from there.
		oldest := &recs[len(recs)-1]
		seq, head = oldest.Seq-1, oldest.Prev
	}
	for i := len(recs) - 1; i >= 0; i-- {
		r := &recs[i]
		if r.Seq != seq+1 || r.Prev != head || r.ComputeHash() != r.Hash {
			return true, fmt.Errorf("%w: record %d does not continue the chain from %d", ErrCorrupt, r.Seq, seq)
		}
		seq, head = r.Seq, r.Hash
	}
	info.seq, info.head, info.since = seq, head, len(recs)
	return true, nil
}
