package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"
)

// Errors Open and Append return (wrapped with details).
var (
	// ErrTornTail: the log ends in a partial line and Options.TornTail is
	// TornTailRefuse.
	ErrTornTail = errors.New("audit log ends in a partial line")
	// ErrCorrupt: the end of the log does not verify, so the writer will not
	// extend it. Run Verify on the file and investigate.
	ErrCorrupt = errors.New("audit log tail does not verify")
	// ErrLocked: another writer has the log open.
	ErrLocked = errors.New("audit log is open by another writer")
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("audit log is closed")
)

// DefaultCheckpointEvery is the checkpoint interval when Options leaves it 0.
const DefaultCheckpointEvery = 1000

// SyncPolicy says when appended records are forced to stable storage.
// Records are always written to the file (the OS) before Append returns, so
// a process crash loses nothing; the policy bounds what an OS crash or power
// loss can lose. Checkpoints are always synced.
type SyncPolicy struct {
	// EveryRecords: fsync after this many records (1: every record).
	EveryRecords int
	// Interval: fsync this often while there are unsynced records.
	Interval time.Duration
}

// TornTailPolicy says what Open does when the log ends in a partial line (a
// crash in the middle of a write).
type TornTailPolicy int

const (
	// TornTailRecover cuts the partial line off, logs a warning, and appends
	// a "recovery" record saying how many bytes were discarded and their
	// SHA-256, followed by a checkpoint. The discarded bytes never were a
	// complete record, so no acknowledged record is lost; the recovery
	// record makes the cut visible to every later verification.
	TornTailRecover TornTailPolicy = iota
	// TornTailRefuse makes Open fail with ErrTornTail, for deployments where
	// a person must look at the file first.
	TornTailRefuse
)

// Options configure a Log.
type Options struct {
	Path string
	// Signer signs checkpoints. It may change between runs (key rotation):
	// auditors then need both public keys.
	Signer *SigningKey
	// SubjectKey is the per-deployment secret for SubjectHash, 32 bytes or
	// more. Keep it apart from the log: with it, anyone holding a person id
	// can find that person's records.
	SubjectKey []byte
	// CheckpointEvery: a checkpoint after this many records (and on Close).
	CheckpointEvery int
	// Sync: zero value = fsync every record.
	Sync     SyncPolicy
	TornTail TornTailPolicy
	Logger   *zap.Logger      // nil: no logging
	Now      func() time.Time // nil: time.Now
}

// Recovery describes a torn final line that Open discarded.
type Recovery struct {
	Offset         int64  // where the discarded bytes started
	DiscardedBytes int64  // how many were cut off
	DiscardedHash  string // their SHA-256, hex
	RecordSeq      uint64 // the recovery record appended for it
}

// Log is an open audit log. Its methods are safe for concurrent use; appends
// are serialised, each written with a single write call.
type Log struct {
	opts   Options
	every  int
	logger *zap.Logger
	now    func() time.Time

	// sem serialises writers; a channel rather than a mutex so a caller
	// waiting to append can give up when its context ends.
	sem chan struct{}

	f          *os.File
	unlock     func() error
	size       int64
	seq        uint64
	head       Digest
	lastCkpt   *Checkpoint
	sinceCkpt  int
	unsynced   int
	err        error // sticky: once a write fails the log state is unknown
	closed     bool
	recovery   *Recovery
	stopSync   chan struct{}
	syncerDone sync.WaitGroup
}

// Open opens or creates the log at opts.Path, continuing its chain. It
// re-reads only the tail: the records since the last checkpoint, which it
// checks (chain, hashes, and the checkpoint's signature when it is the
// signer's). A tail that does not verify is refused (ErrCorrupt): the writer
// does not extend a log that may have been tampered with.
func Open(ctx context.Context, opts Options) (*Log, error) {
	if opts.Path == "" {
		return nil, errors.New("audit: open: no path")
	}
	if opts.Signer == nil {
		return nil, errors.New("audit: open: no checkpoint signing key")
	}
	if len(opts.SubjectKey) < 32 {
		return nil, fmt.Errorf("audit: open: subject key has %d bytes, need at least 32", len(opts.SubjectKey))
	}
	if opts.CheckpointEvery < 0 || opts.Sync.EveryRecords < 0 || opts.Sync.Interval < 0 {
		return nil, errors.New("audit: open: negative checkpoint interval or sync policy")
	}
	l := &Log{opts: opts, every: opts.CheckpointEvery, logger: opts.Logger, now: opts.Now, sem: make(chan struct{}, 1)}
	if l.every == 0 {
		l.every = DefaultCheckpointEvery
	}
	if l.logger == nil {
		l.logger = zap.NewNop()
	}
	if l.now == nil {
		l.now = time.Now
	}
	if opts.Sync.EveryRecords == 0 && opts.Sync.Interval == 0 {
		l.opts.Sync.EveryRecords = 1
	}
	// The log holds pseudonymous data about people: owner-only.
	_, statErr := os.Stat(opts.Path)
	created := errors.Is(statErr, os.ErrNotExist)
	f, err := os.OpenFile(opts.Path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: open: %w", err)
	}
	unlock, err := lockFile(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: open %s: %w", opts.Path, err)
	}
	l.f, l.unlock = f, unlock
	if err := l.load(ctx, created); err != nil {
		l.unlock()
		f.Close()
		return nil, err
	}
	if l.opts.Sync.Interval > 0 {
		l.stopSync = make(chan struct{})
		l.syncerDone.Add(1)
		go l.syncLoop(l.opts.Sync.Interval, l.stopSync)
	}
	return l, nil
}

func (l *Log) load(ctx context.Context, created bool) error {
	st, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("audit: open: %w", err)
	}
	if created {
		// Make the new directory entry durable too, or a crash can lose
		// the whole file even though its records were synced.
		if d, err := os.Open(filepath.Dir(l.opts.Path)); err == nil {
			d.Sync()
			d.Close()
		}
	}
	tail, err := readTail(l.f, st.Size(), l.opts.Signer)
	if err != nil {
		return fmt.Errorf("audit: open %s: %w", l.opts.Path, err)
	}
	l.size = st.Size()
	if tail.torn != nil {
		if l.opts.TornTail == TornTailRefuse {
			return fmt.Errorf("audit: open %s: %w: %d bytes after offset %d", l.opts.Path, ErrTornTail, len(tail.torn), tail.tornAt)
		}
		if err := l.f.Truncate(tail.tornAt); err != nil {
			return fmt.Errorf("audit: open %s: cut torn line: %w", l.opts.Path, err)
		}
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("audit: open %s: sync after cutting torn line: %w", l.opts.Path, err)
		}
		sum := sha256.Sum256(tail.torn)
		l.recovery = &Recovery{Offset: tail.tornAt, DiscardedBytes: int64(len(tail.torn)), DiscardedHash: hex.EncodeToString(sum[:])}
		l.size = tail.tornAt
		l.logger.Warn("audit log ended in a partial line; cut it off and recording a recovery record",
			zap.String("path", l.opts.Path), zap.Int64("offset", tail.tornAt), zap.Int("bytes", len(tail.torn)))
	}
	l.seq, l.head, l.lastCkpt, l.sinceCkpt = tail.seq, tail.head, tail.ckpt, tail.since
	if l.recovery != nil {
		rec, err := l.appendLocked(ctx, Record{
			Kind:  KindRecovery,
			Actor: "facegate/audit",
			Payload: mustPayload(map[string]any{
				"reason":           "partial final line discarded on open",
				"offset":           l.recovery.Offset,
				"discarded_bytes":  l.recovery.DiscardedBytes,
				"discarded_sha256": l.recovery.DiscardedHash,
			}),
		})
		if err != nil {
			return err
		}
		l.recovery.RecordSeq = rec.Seq
	}
	// Checkpoint at once if records are unsigned (a crash before the last
	// checkpoint) or the interval or key changed, so the promise in the last
	// checkpoint always matches what this writer will do.
	if l.seq > 0 && (l.sinceCkpt > 0 || l.lastCkpt == nil ||
		l.lastCkpt.Every != uint64(l.every) || l.lastCkpt.KeyID != l.opts.Signer.ID()) {
		if _, err := l.checkpointLocked(); err != nil {
			return err
		}
	}
	return nil
}

func mustPayload(m map[string]any) []byte {
	b, err := encodePayload(m)
	if err != nil {
		panic("audit: internal payload invalid: " + err.Error())
	}
	return b
}

// Recovery returns what Open discarded, or nil if the log was intact.
func (l *Log) Recovery() *Recovery { return l.recovery }

// Head returns the last record's seq and hash.
func (l *Log) Head() (uint64, Digest) {
	l.sem <- struct{}{}
	defer func() { <-l.sem }()
	return l.seq, l.head
}

// Append writes one record and returns it with its seq, time, prev and hash.
// It waits for earlier appends; ctx bounds that wait.
func (l *Log) Append(ctx context.Context, ev Event) (Record, error) {
	if ev.Kind == KindRecovery {
		return Record{}, errors.New("audit: append: kind \"recovery\" is reserved for the log itself")
	}
	if err := validateKind(ev.Kind); err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", err)
	}
	if err := validateActor(ev.Actor); err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", err)
	}
	payload, err := encodePayload(ev.Payload)
	if err != nil {
		return Record{}, fmt.Errorf("audit: append %s: %w", ev.Kind, err)
	}
	rec := Record{Kind: ev.Kind, Actor: ev.Actor, Payload: payload}
	if ev.SubjectID != "" {
		rec.Subject = SubjectHash(l.opts.SubjectKey, ev.SubjectID)
	}
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return Record{}, fmt.Errorf("audit: append: %w", ctx.Err())
	}
	defer func() { <-l.sem }()
	return l.appendLocked(ctx, rec)
}

// validateActor keeps actors to one printable line that a spreadsheet will
// not read as a formula when a security team opens the CSV export.
func validateActor(a string) error {
	if a == "" {
		return errors.New("actor is empty: every record says who acted")
	}
	if len(a) > maxFieldBytes {
		return fmt.Errorf("actor is %d bytes, the limit is %d", len(a), maxFieldBytes)
	}
	if !utf8.ValidString(a) {
		return errors.New("actor is not valid UTF-8")
	}
	for _, r := range a {
		if unicode.IsControl(r) {
			return fmt.Errorf("actor %q contains a control character", short(a))
		}
	}
	switch a[0] {
	case '=', '+', '-', '@':
		return fmt.Errorf("actor %q starts with %q, which spreadsheets execute as a formula", short(a), a[0])
	}
	return nil
}

func (l *Log) usable() error {
	if l.closed {
		return fmt.Errorf("audit: %w", ErrClosed)
	}
	if l.err != nil {
		return fmt.Errorf("audit: an earlier write failed, reopen the log: %w", l.err)
	}
	return nil
}

func (l *Log) appendLocked(ctx context.Context, rec Record) (Record, error) {
	if err := l.usable(); err != nil {
		return Record{}, err
	}
	if err := ctx.Err(); err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", err)
	}
	rec.Seq = l.seq + 1
	rec.Time = l.now().UTC()
	rec.Prev = l.head
	rec.Hash = rec.ComputeHash()
	if err := l.write(rec.marshalLine()); err != nil {
		return Record{}, err
	}
	l.seq, l.head = rec.Seq, rec.Hash
	l.sinceCkpt++
	l.unsynced++
	if l.sinceCkpt >= l.every {
		if _, err := l.checkpointLocked(); err != nil {
			return rec, err
		}
	} else if n := l.opts.Sync.EveryRecords; n > 0 && l.unsynced >= n {
		if err := l.syncLocked(); err != nil {
			return rec, err
		}
	}
	return rec, nil
}

// write puts one line into the file with one write call (O_APPEND), so a
// crash leaves at most one partial line, which Open detects.
func (l *Log) write(line []byte) error {
	n, err := l.f.Write(line)
	l.size += int64(n)
	if err != nil {
		l.err = err
		return fmt.Errorf("audit: write %s: %w", l.opts.Path, err)
	}
	return nil
}

func (l *Log) syncLocked() error {
	if err := l.f.Sync(); err != nil {
		l.err = err
		return fmt.Errorf("audit: sync %s: %w", l.opts.Path, err)
	}
	l.unsynced = 0
	return nil
}

// Checkpoint signs the current head now (if any record is unsigned) and
// returns the latest checkpoint, e.g. to hand to an external witness that
// later serves as a Verifier anchor.
func (l *Log) Checkpoint(ctx context.Context) (Checkpoint, error) {
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return Checkpoint{}, fmt.Errorf("audit: checkpoint: %w", ctx.Err())
	}
	defer func() { <-l.sem }()
	if err := l.usable(); err != nil {
		return Checkpoint{}, err
	}
	if l.seq == 0 {
		return Checkpoint{}, errors.New("audit: checkpoint: the log is empty")
	}
	if l.sinceCkpt == 0 && l.lastCkpt != nil {
		return *l.lastCkpt, nil
	}
	return l.checkpointLocked()
}

func (l *Log) checkpointLocked() (Checkpoint, error) {
	c := newCheckpoint(l.opts.Signer, l.seq, l.head, l.now(), uint64(l.every))
	if err := l.write(c.marshalLine()); err != nil {
		return Checkpoint{}, err
	}
	if err := l.syncLocked(); err != nil {
		return Checkpoint{}, err
	}
	l.lastCkpt = &c
	l.sinceCkpt = 0
	return c, nil
}

// Sync forces written records to stable storage.
func (l *Log) Sync() error {
	l.sem <- struct{}{}
	defer func() { <-l.sem }()
	if err := l.usable(); err != nil {
		return err
	}
	return l.syncLocked()
}

// syncLoop gets its stop channel as an argument: Close clears the field.
func (l *Log) syncLoop(every time.Duration, stop <-chan struct{}) {
	defer l.syncerDone.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			l.sem <- struct{}{}
			if l.usable() == nil && l.unsynced > 0 {
				if err := l.syncLocked(); err != nil {
					l.logger.Error("audit log sync failed", zap.String("path", l.opts.Path), zap.Error(err))
				}
			}
			<-l.sem
		}
	}
}

// Close writes a final checkpoint if records are unsigned, syncs, and
// releases the file. A second Close returns ErrClosed.
func (l *Log) Close() error {
	l.sem <- struct{}{}
	stop := l.stopSync
	l.stopSync = nil
	<-l.sem
	if stop != nil {
		// Outside sem: the syncer may be waiting for it.
		close(stop)
		l.syncerDone.Wait()
	}
	l.sem <- struct{}{}
	defer func() { <-l.sem }()
	if l.closed {
		return fmt.Errorf("audit: close: %w", ErrClosed)
	}
	var errs []error
	if l.err == nil && l.sinceCkpt > 0 {
		if _, err := l.checkpointLocked(); err != nil {
			errs = append(errs, err)
		}
	}
	if l.err == nil && l.unsynced > 0 {
		errs = append(errs, l.syncLocked())
	}
	l.closed = true
	if err := l.unlock(); err != nil {
		errs = append(errs, fmt.Errorf("audit: unlock: %w", err))
	}
	if err := l.f.Close(); err != nil {
		errs = append(errs, fmt.Errorf("audit: close: %w", err))
	}
	return errors.Join(errs...)
}

// Export writes records from..to of this log (see Export) as they are on
// disk now. Appends may continue meanwhile: the file only grows, and the
// export reads no further than its size when Export started.
func (l *Log) Export(ctx context.Context, w io.Writer, from, to uint64, format Format) error {
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("audit: export: %w", ctx.Err())
	}
	size, closed := l.size, l.closed
	<-l.sem
	if closed {
		return fmt.Errorf("audit: export: %w", ErrClosed)
	}
	f, err := os.Open(l.opts.Path)
	if err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	defer f.Close()
	return Export(w, io.LimitReader(f, size), from, to, format)
}
