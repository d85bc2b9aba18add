package embedded

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/facegate/facegate/pkg/index"
)

// Snapshot format, version 1, all integers little-endian:
//
//	magic   "FGGALLRY"
//	version u32 (1), flags u32 (0)
//	seq     u64: the enrolment stream sequence the gallery reflects
//	ncoll   u32, then per collection (in name order):
//	  name str, dim u32, rows u64, then per row:
//	    id str, person str, site str, photo str, vector dim x f32
//	naliases u32, then per alias (in name order): alias str, collection str
//	crc     u32: CRC-32C of every byte before it
//
// where str is a u16 length and that many bytes. Vectors are stored as
// float32 only: int8 codes are derived on load, so one snapshot serves both
// precisions.
var snapshotMagic = [8]byte{'F', 'G', 'G', 'A', 'L', 'L', 'R', 'Y'}

const snapshotVersion = 1

// ErrCorruptSnapshot reports a snapshot that is truncated, altered or not a
// snapshot at all.
var ErrCorruptSnapshot = errors.New("corrupt snapshot")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// WriteSnapshot writes the gallery to path atomically: to a temporary file in
// the same directory, synced, then renamed over path. seq is the enrolment
// stream sequence the gallery reflects; Load returns it so the caller can
// resume the stream after it.
//
// Writes may continue while the snapshot is written: each collection is
// captured under its lock, so the snapshot can hold some changes after seq.
// Resuming from seq replays them; upserts and deletes are idempotent per
// template and person, so the replayed gallery ends in the same state.
//
// After an erasure, write a new snapshot: older snapshot files still hold
// the erased templates until replaced.
func (x *Index) WriteSnapshot(ctx context.Context, path string, seq uint64) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, base+".tmp-*")
	if err != nil {
		return fmt.Errorf("embedded: snapshot: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = x.WriteSnapshotTo(ctx, f, seq); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("embedded: snapshot: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("embedded: snapshot: %w", err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("embedded: snapshot: %w", err)
	}
	// The rename is durable only once the directory is synced.
	if d, derr := os.Open(dir); derr == nil {
		derr = d.Sync()
		d.Close()
		if derr != nil {
			return fmt.Errorf("embedded: snapshot: sync %s: %w", dir, derr)
		}
	}
	return nil
}

// WriteSnapshotTo writes the snapshot format to w.
func (x *Index) WriteSnapshotTo(ctx context.Context, w io.Writer, seq uint64) error {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.closed {
		return fmt.Errorf("embedded: %w", index.ErrClosed)
	}
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 1<<20)
	sw := &snapWriter{w: bw}
	sw.bytes(snapshotMagic[:])
	sw.u32(snapshotVersion)
	sw.u32(0)
	sw.u64(seq)
	names := make([]string, 0, len(x.collections))
	for n := range x.collections {
		names = append(names, n)
	}
	sort.Strings(names)
	sw.u32(uint32(len(names)))
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := x.collections[n]
		c.mu.RLock()
		writeCollection(sw, n, c.st)
		c.mu.RUnlock()
	}
	aliases := make([]string, 0, len(x.aliases))
	for a := range x.aliases {
		aliases = append(aliases, a)
	}
	sort.Strings(aliases)
	sw.u32(uint32(len(aliases)))
	for _, a := range aliases {
		sw.str(a)
		sw.str(x.aliases[a])
	}
	if sw.err == nil {
		sw.err = bw.Flush()
	}
	if sw.err != nil {
		return fmt.Errorf("embedded: snapshot: %w", sw.err)
	}
	var tail [4]byte
	binary.LittleEndian.PutUint32(tail[:], crc.Sum32())
	if _, err := w.Write(tail[:]); err != nil {
		return fmt.Errorf("embedded: snapshot: %w", err)
	}
	return nil
}

func writeCollection(sw *snapWriter, name string, st *store) {
	sw.str(name)
	sw.u32(uint32(st.dim))
	sw.u64(uint64(st.n))
	buf := make([]byte, 4*st.dim)
	for r := 0; r < st.n; r++ {
		t := st.info(r)
		sw.str(t.ID)
		sw.str(t.Person)
		sw.str(t.Site)
		sw.str(t.Photo)
		for i, v := range st.row(r) {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		}
		sw.bytes(buf)
	}
}

type snapWriter struct {
	w   *bufio.Writer
	err error
	b   [8]byte
}

func (s *snapWriter) bytes(b []byte) {
	if s.err == nil {
		_, s.err = s.w.Write(b)
	}
}

func (s *snapWriter) u32(v uint32) {
	binary.LittleEndian.PutUint32(s.b[:4], v)
	s.bytes(s.b[:4])
}

func (s *snapWriter) u64(v uint64) {
	binary.LittleEndian.PutUint64(s.b[:8], v)
	s.bytes(s.b[:8])
}

func (s *snapWriter) str(v string) {
	binary.LittleEndian.PutUint16(s.b[:2], uint16(len(v)))
	s.bytes(s.b[:2])
	if s.err == nil {
		_, s.err = s.w.WriteString(v)
	}
}

// LoadSnapshot reads a snapshot file into a new index with the given
// options, returning it and the stream sequence stored in it.
func LoadSnapshot(ctx context.Context, path string, opts Options) (*Index, uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("embedded: load snapshot: %w", err)
	}
	defer f.Close()
	x, seq, err := ReadSnapshot(ctx, f, opts)
	if err != nil {
		return nil, 0, fmt.Errorf("%w (file %s)", err, path)
	}
	return x, seq, nil
}

// ReadSnapshot reads the snapshot format from r. Everything is checked:
// structure, names, ids, vectors and the checksum; a snapshot that fails any
// check is ErrCorruptSnapshot and yields no index.
func ReadSnapshot(ctx context.Context, r io.Reader, opts Options) (*Index, uint64, error) {
	x, err := New(opts)
	if err != nil {
		return nil, 0, err
	}
	crc := crc32.New(castagnoli)
	sr := &snapReader{r: bufio.NewReaderSize(r, 1<<20), crc: crc}
	seq, err := x.readSnapshot(ctx, sr)
	if err != nil {
		x.Close()
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, 0, err
		}
		return nil, 0, fmt.Errorf("embedded: load snapshot: %w: %w", ErrCorruptSnapshot, err)
	}
	return x, seq, nil
}

func (x *Index) readSnapshot(ctx context.Context, sr *snapReader) (uint64, error) {
	var magic [8]byte
	sr.read(magic[:])
	if sr.err != nil {
		return 0, sr.err
	}
	if magic != snapshotMagic {
		return 0, errors.New("not a gallery snapshot (bad magic)")
	}
	if v := sr.u32(); sr.err == nil && v != snapshotVersion {
		return 0, fmt.Errorf("version %d, this build reads %d", v, snapshotVersion)
	}
	if flags := sr.u32(); sr.err == nil && flags != 0 {
		return 0, fmt.Errorf("unknown flags %#x", flags)
	}
	seq := sr.u64()
	ncoll := sr.u32()
	if sr.err != nil {
		return 0, sr.err
	}
	prev := ""
	for i := uint32(0); i < ncoll; i++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		name := sr.str()
		dim := sr.u32()
		rows := sr.u64()
		if sr.err != nil {
			return 0, sr.err
		}
		if name <= prev && i > 0 {
			return 0, fmt.Errorf("collection %q out of order", name)
		}
		prev = name
		if err := index.ValidateCollection(index.Collection{Name: name, Dim: int(dim)}); err != nil {
			return 0, fmt.Errorf("collection %d: %v", i, err)
		}
		st := newStore(int(dim), x.opts.Precision == Int8)
		if err := readRows(ctx, sr, st, rows); err != nil {
			return 0, fmt.Errorf("collection %q: %w", name, err)
		}
		x.collections[name] = &collection{name: name, dim: int(dim), st: st}
	}
	nalias := sr.u32()
	prev = ""
	for i := uint32(0); i < nalias && sr.err == nil; i++ {
		a, target := sr.str(), sr.str()
		if sr.err != nil {
			break
		}
		if a <= prev && i > 0 {
			return 0, fmt.Errorf("alias %q out of order", a)
		}
		prev = a
		if err := index.ValidateName(a); err != nil {
			return 0, err
		}
		if _, ok := x.collections[a]; ok {
			return 0, fmt.Errorf("alias %q is also a collection", a)
		}
		if _, ok := x.collections[target]; !ok {
			return 0, fmt.Errorf("alias %q points at missing collection %q", a, target)
		}
		x.aliases[a] = target
	}
	if sr.err != nil {
		return 0, sr.err
	}
	want := sr.crc.Sum32()
	var tail [4]byte
	if _, err := io.ReadFull(sr.r, tail[:]); err != nil {
		return 0, fmt.Errorf("checksum: %w", noEOF(err))
	}
	if got := binary.LittleEndian.Uint32(tail[:]); got != want {
		return 0, fmt.Errorf("checksum mismatch: stored %08x, computed %08x", got, want)
	}
	if _, err := sr.r.ReadByte(); err != io.EOF {
		return 0, errors.New("trailing bytes after the checksum")
	}
	return seq, nil
}

func readRows(ctx context.Context, sr *snapReader, st *store, rows uint64) error {
	buf := make([]byte, 4*st.dim)
	v := make([]float32, st.dim)
	for r := uint64(0); r < rows; r++ {
		if r%65536 == 65535 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		t := index.TemplateInfo{ID: sr.str(), Person: sr.str(), Site: sr.str(), Photo: sr.str()}
		sr.read(buf)
		if sr.err != nil {
			return sr.err
		}
		if err := index.ValidateInfo(t); err != nil {
			return fmt.Errorf("row %d: %w", r, err)
		}
		if _, dup := st.byID[t.ID]; dup {
			return fmt.Errorf("row %d: template %q appears twice", r, t.ID)
		}
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
		}
		// Stored as written (already unit length): re-normalising would
		// change low bits and a load/write round trip would not be exact.
		if _, err := index.CheckVector(st.dim, v); err != nil {
			return fmt.Errorf("row %d: %w", r, err)
		}
		st.upsert(t, v)
	}
	return nil
}

// snapReader reads the format, hashing what it reads; the first error
// sticks and later reads return zero values.
type snapReader struct {
	r   *bufio.Reader
	crc hash.Hash32
	err error
	b   [8]byte
}

func (s *snapReader) read(b []byte) {
	if s.err != nil {
		clear(b)
		return
	}
	if _, err := io.ReadFull(s.r, b); err != nil {
		s.err = noEOF(err)
		clear(b)
		return
	}
	s.crc.Write(b)
}

func (s *snapReader) u32() uint32 {
	s.read(s.b[:4])
	return binary.LittleEndian.Uint32(s.b[:4])
}

func (s *snapReader) u64() uint64 {
	s.read(s.b[:8])
	return binary.LittleEndian.Uint64(s.b[:8])
}

func (s *snapReader) str() string {
	s.read(s.b[:2])
	n := int(binary.LittleEndian.Uint16(s.b[:2]))
	if n == 0 || s.err != nil {
		return ""
	}
	b := make([]byte, n)
	s.read(b)
	if s.err != nil {
		return ""
	}
	return string(b)
}

func noEOF(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errors.New("truncated")
	}
	return err
}
