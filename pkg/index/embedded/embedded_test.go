package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/facegate/facegate/pkg/index"
	"github.com/facegate/facegate/pkg/index/indextest"
)

func newIndex(t testing.TB, o Options) *Index {
	t.Helper()
	x, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	return x
}

func TestContract(t *testing.T) {
	configs := []struct {
		name string
		opts Options
	}{
		{"float32", Options{}},
		// Tiny shards and blocks so that the contract's small galleries
		// still exercise the parallel and blocked paths.
		{"float32-sharded", Options{Shards: 3, MinShardRows: 16, BlockRows: 8}},
		{"int8-bound", Options{Precision: Int8}},
		{"int8-bound-sharded", Options{Precision: Int8, Shards: 3, MinShardRows: 16, BlockRows: 8}},
	}
	for _, c := range configs {
		t.Run(c.name, func(t *testing.T) {
			indextest.Run(t, func(t *testing.T) index.Index { return newIndex(t, c.opts) })
		})
	}
}

func TestOptionsRejected(t *testing.T) {
	for _, o := range []Options{{Precision: 7}, {Rerank: -1}, {Shards: -2}, {BlockRows: -1}} {
		if _, err := New(o); !errors.Is(err, index.ErrInvalidArgument) {
			t.Errorf("New(%+v): %v, want ErrInvalidArgument", o, err)
		}
	}
}

func randUnit(r *rand.Rand, dim int) []float32 {
	v := make([]float32, dim)
	var ss float64
	for i := range v {
		x := r.NormFloat64()
		v[i] = float32(x)
		ss += x * x
	}
	n := float32(math.Sqrt(ss))
	for i := range v {
		v[i] /= n
	}
	return v
}

// fill adds n random unit templates, k per person, to collection name.
func fill(t testing.TB, x *Index, name string, dim, n, perPerson int, r *rand.Rand) []index.Template {
	t.Helper()
	ctx := context.Background()
	if err := x.CreateCollection(ctx, index.Collection{Name: name, Dim: dim}); err != nil {
		t.Fatal(err)
	}
	ts := make([]index.Template, n)
	for i := range ts {
		ts[i] = index.Template{
			TemplateInfo: index.TemplateInfo{ID: fmt.Sprintf("t%07d", i), Person: fmt.Sprintf("p%06d", i/perPerson), Site: fmt.Sprintf("s%d", i%3)},
			Vector:       randUnit(r, dim),
		}
	}
	for i := 0; i < n; i += 4096 {
		if err := x.Upsert(ctx, name, ts[i:min(i+4096, n)]); err != nil {
			t.Fatal(err)
		}
	}
	return ts
}

// TestInt8BoundEqualsExact: the bound-based int8 search returns exactly
// what the float32 scan returns, and re-ranks a small fraction of rows.
func TestInt8BoundEqualsExact(t *testing.T) {
	const n, dim = 20000, 128
	r := rand.New(rand.NewPCG(1, 2))
	exact := newIndex(t, Options{Shards: 2, MinShardRows: 1024})
	quant := newIndex(t, Options{Precision: Int8, Shards: 2, MinShardRows: 1024})
	ts := fill(t, exact, "gal", dim, n, 2, r)
	ctx := context.Background()
	if err := quant.CreateCollection(ctx, index.Collection{Name: "gal", Dim: dim}); err != nil {
		t.Fatal(err)
	}
	if err := quant.Upsert(ctx, "gal", ts); err != nil {
		t.Fatal(err)
	}
	const queries = 100
	qs := make([][]float32, queries)
	for i := range qs {
		if i%2 == 0 {
			qs[i] = randUnit(r, dim)
		} else { // a near-duplicate of an enrolled template, as a genuine probe is
			v := append([]float32(nil), ts[r.IntN(n)].Vector...)
			for j := range v {
				v[j] += float32(0.02 * r.NormFloat64())
			}
			qs[i] = unitCopy(v)
		}
	}
	for _, k := range []int{1, 10} {
		want, err := exact.SearchBatch(ctx, "gal", qs, index.SearchOptions{K: k})
		if err != nil {
			t.Fatal(err)
		}
		before := quant.Stats()
		got, err := quant.SearchBatch(ctx, "gal", qs, index.SearchOptions{K: k})
		if err != nil {
			t.Fatal(err)
		}
		for i := range qs {
			if fmt.Sprint(got[i]) != fmt.Sprint(want[i]) {
				t.Fatalf("k=%d query %d: int8 bound search\n%v\nfloat32 exact\n%v", k, i, got[i], want[i])
			}
		}
		reranked := quant.Stats().Reranked - before.Reranked
		perQuery := float64(reranked) / queries
		t.Logf("k=%d: %.1f rows re-ranked per query (of %d)", k, perQuery, n)
		if perQuery < float64(k) || perQuery > 0.05*n {
			t.Fatalf("k=%d: %.1f rows re-ranked per query: the bound should leave between k and 5%% of the gallery", k, perQuery)
		}
	}
}

func unitCopy(v []float32) []float32 {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(float64(x) / math.Sqrt(ss))
	}
	return out
}

// TestInt8FixedRerankRecall measures the approximate mode: re-ranking the
// 32 best int8 candidates finds the exact nearest template for nearly every
// query, even on random vectors (harder than faces: no clear winner).
func TestInt8FixedRerankRecall(t *testing.T) {
	const n, dim, queries = 20000, 128, 200
	r := rand.New(rand.NewPCG(3, 4))
	exact := newIndex(t, Options{})
	approx := newIndex(t, Options{Precision: Int8, Rerank: 32})
	ts := fill(t, exact, "gal", dim, n, 1, r)
	ctx := context.Background()
	if err := approx.CreateCollection(ctx, index.Collection{Name: "gal", Dim: dim}); err != nil {
		t.Fatal(err)
	}
	if err := approx.Upsert(ctx, "gal", ts); err != nil {
		t.Fatal(err)
	}
	qs := make([][]float32, queries)
	for i := range qs {
		qs[i] = randUnit(r, dim)
	}
	want, err := exact.SearchBatch(ctx, "gal", qs, index.SearchOptions{K: 1})
	if err != nil {
		t.Fatal(err)
	}
	got, err := approx.SearchBatch(ctx, "gal", qs, index.SearchOptions{K: 1})
	if err != nil {
		t.Fatal(err)
	}
	hit := 0
	for i := range qs {
		if got[i].Hits[0].ID == want[i].Hits[0].ID {
			hit++
		} else if got[i].Hits[0].Distance < want[i].Hits[0].Distance {
			t.Fatalf("query %d: approximate result %v is nearer than the exact one %v", i, got[i].Hits[0], want[i].Hits[0])
		}
	}
	recall := float64(hit) / queries
	t.Logf("recall@1 with 32 re-ranked: %.3f", recall)
	if recall < 0.99 {
		t.Fatalf("recall@1 %.3f below 0.99", recall)
	}
	if s := approx.Stats(); s.Reranked != 32*queries {
		t.Fatalf("re-ranked %d rows, want 32 per query", s.Reranked)
	}
}

func TestShardRanges(t *testing.T) {
	x := newIndex(t, Options{Shards: 4, MinShardRows: 100, BlockRows: 16})
	for _, n := range []int{0, 1, 99, 100, 399, 400, 401, 1000, 12345} {
		rs := x.shardRanges(n)
		next := 0
		for i, r := range rs {
			if r[0] != next || r[1] <= r[0] {
				t.Fatalf("n=%d: range %d is %v after %d", n, i, r, next)
			}
			if i < len(rs)-1 && r[0]%16 != 0 {
				t.Fatalf("n=%d: range %v not block aligned", n, r)
			}
			next = r[1]
		}
		if next != n {
			t.Fatalf("n=%d: ranges cover %d rows", n, next)
		}
		if len(rs) > 4 || (n >= 400 && len(rs) != 4) {
			t.Fatalf("n=%d: %d shards", n, len(rs))
		}
	}
}

// TestMemoryBytes checks the estimate against the Go heap.
func TestMemoryBytes(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 50k templates")
	}
	const n, dim = 50000, 128
	for _, p := range []Precision{Float32, Int8} {
		t.Run(p.String(), func(t *testing.T) {
			r := rand.New(rand.NewPCG(5, 6))
			ts := make([]index.Template, n)
			for i := range ts {
				ts[i] = index.Template{TemplateInfo: index.TemplateInfo{ID: fmt.Sprintf("t%07d", i), Person: fmt.Sprintf("p%06d", i/2)}, Vector: randUnit(r, dim)}
			}
			ctx := context.Background()
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			x, err := New(Options{Precision: p})
			if err != nil {
				t.Fatal(err)
			}
			if err := x.CreateCollection(ctx, index.Collection{Name: "gal", Dim: dim}); err != nil {
				t.Fatal(err)
			}
			if err := x.Upsert(ctx, "gal", ts); err != nil {
				t.Fatal(err)
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			est := x.MemoryBytes()
			vecBytes := int64(n * dim * 4)
			if p == Int8 {
				vecBytes += n * dim
			}
			t.Logf("%s: estimate %d B (%.1f B/template), heap grew %d B, vector payload %d B", p, est, float64(est)/n, heap, vecBytes)
			if est < vecBytes {
				t.Fatalf("estimate %d below the vector payload %d", est, vecBytes)
			}
			if float64(est) < 0.7*float64(heap) || float64(est) > 1.5*float64(heap) {
				t.Fatalf("estimate %d is not within [0.7, 1.5] of the heap growth %d", est, heap)
			}
			runtime.KeepAlive(x)
			runtime.KeepAlive(ts)
			x.Close()
		})
	}
}

func sampleIndex(t testing.TB, o Options) (*Index, []index.Template) {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 8))
	x := newIndex(t, o)
	ts := fill(t, x, "model-a", 16, 50, 5, r)
	fill(t, x, "model-b", 8, 7, 2, r)
	if err := x.CreateCollection(context.Background(), index.Collection{Name: "empty", Dim: 4}); err != nil {
		t.Fatal(err)
	}
	if err := x.SwitchAlias(context.Background(), "active", "model-a"); err != nil {
		t.Fatal(err)
	}
	return x, ts
}

func snapshotBytes(t testing.TB, x *Index, seq uint64) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := x.WriteSnapshotTo(context.Background(), &buf, seq); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSnapshotRoundTrip(t *testing.T) {
	ctx := context.Background()
	x, ts := sampleIndex(t, Options{})
	dir := t.TempDir()
	path := filepath.Join(dir, "gallery.snap")
	if err := os.WriteFile(path, []byte("an older snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := x.WriteSnapshot(ctx, path, 4242); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("directory after an atomic write: %v, %v (want only the snapshot)", entries, err)
	}
	for _, p := range []Precision{Float32, Int8} {
		y, seq, err := LoadSnapshot(ctx, path, Options{Precision: p})
		if err != nil {
			t.Fatal(err)
		}
		if seq != 4242 {
			t.Fatalf("seq %d, want 4242", seq)
		}
		cx, _ := x.Collections(ctx)
		cy, _ := y.Collections(ctx)
		if fmt.Sprint(cx) != fmt.Sprint(cy) {
			t.Fatalf("collections %v, want %v", cy, cx)
		}
		if a, err := y.ResolveAlias(ctx, "active"); err != nil || a != "model-a" {
			t.Fatalf("alias after load: %q, %v", a, err)
		}
		for _, c := range cx {
			lx, _ := x.List(ctx, c.Name, index.ListOptions{})
			ly, _ := y.List(ctx, c.Name, index.ListOptions{})
			if fmt.Sprint(lx) != fmt.Sprint(ly) {
				t.Fatalf("%s: listing differs after load", c.Name)
			}
		}
		for _, tt := range ts[:10] {
			want, _ := x.Search(ctx, "model-a", tt.Vector, index.SearchOptions{K: 5})
			got, err := y.Search(ctx, "active", tt.Vector, index.SearchOptions{K: 5})
			if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("search after load (%s): %v, %v; want %v", p, got, err, want)
			}
		}
		// Writing the loaded index reproduces the file byte for byte.
		orig, _ := os.ReadFile(path)
		if again := snapshotBytes(t, y, 4242); !bytes.Equal(again, orig) {
			t.Fatalf("%s: re-written snapshot differs from the loaded one", p)
		}
		y.Close()
	}
}

func TestSnapshotCorrupt(t *testing.T) {
	ctx := context.Background()
	x, _ := sampleIndex(t, Options{})
	good := snapshotBytes(t, x, 7)
	if _, _, err := ReadSnapshot(ctx, bytes.NewReader(good), Options{}); err != nil {
		t.Fatalf("good snapshot: %v", err)
	}
	check := func(what string, b []byte) {
		t.Helper()
		y, _, err := ReadSnapshot(ctx, bytes.NewReader(b), Options{})
		if !errors.Is(err, ErrCorruptSnapshot) {
			t.Fatalf("%s: got %v, want ErrCorruptSnapshot", what, err)
		}
		if y != nil {
			t.Fatalf("%s: an index was returned with the error", what)
		}
	}
	check("empty", nil)
	check("not a snapshot", []byte("hello, this is not a gallery snapshot at all"))
	for _, n := range []int{1, 8, 12, 20, 24, len(good) / 3, len(good) / 2, len(good) - 5, len(good) - 1} {
		check(fmt.Sprintf("truncated to %d of %d bytes", n, len(good)), good[:n])
	}
	check("trailing byte", append(append([]byte(nil), good...), 0))
	// Every single-byte change is caught (by the structure checks or the CRC).
	for i := 0; i < len(good); i += max(1, len(good)/400) {
		b := append([]byte(nil), good...)
		b[i] ^= 0x5a
		check(fmt.Sprintf("byte %d altered", i), b)
	}
	// A future version is refused with a message that says so.
	b := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(b[8:], 2)
	_, _, err := ReadSnapshot(ctx, bytes.NewReader(b), Options{})
	if !errors.Is(err, ErrCorruptSnapshot) || !bytes.Contains([]byte(err.Error()), []byte("version 2")) {
		t.Fatalf("version 2: %v", err)
	}
	if _, _, err := LoadSnapshot(ctx, filepath.Join(t.TempDir(), "missing"), Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func vectorBytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// TestDeletionLeavesNothing: after DeletePerson, none of the person's vector
// bytes, template ids or person id remain in the index's arrays (up to their
// capacity, not just their length) or in a snapshot written afterwards.
func TestDeletionLeavesNothing(t *testing.T) {
	ctx := context.Background()
	for _, p := range []Precision{Float32, Int8} {
		t.Run(p.String(), func(t *testing.T) {
			x, ts := sampleIndex(t, Options{Precision: p})
			const victim = "p000005" // rows 25..29 of model-a: in the middle, so rows move
			var gone []index.Template
			for _, tt := range ts {
				if tt.Person == victim {
					gone = append(gone, tt)
				}
			}
			// Stored vectors are the normalised copies; find them as stored.
			c, _ := x.lookup("model-a")
			var stored [][]byte
			var codes [][]byte
			for _, tt := range gone {
				r := c.st.byID[tt.ID]
				stored = append(stored, vectorBytes(c.st.row(int(r))))
				if p == Int8 {
					cb := make([]byte, c.st.dim)
					for i, v := range c.st.codes[int(r)*c.st.dim : (int(r)+1)*c.st.dim] {
						cb[i] = byte(v)
					}
					codes = append(codes, cb)
				}
			}
			before := snapshotBytes(t, x, 1)
			for _, s := range stored {
				if !bytes.Contains(before, s) {
					t.Fatal("test is broken: the victim's vector is not in the snapshot before deletion")
				}
			}
			n, err := x.ErasePerson(ctx, victim)
			if err != nil || n != len(gone) {
				t.Fatalf("erase: %d, %v (want %d)", n, err, len(gone))
			}
			// Memory: the whole backing arrays, including spare capacity.
			c.mu.RLock()
			all := vectorBytes(c.st.vecs[:cap(c.st.vecs)])
			for _, s := range stored {
				if bytes.Contains(all, s) {
					t.Fatal("a deleted vector is still in the vector array")
				}
			}
			if p == Int8 {
				raw := make([]byte, cap(c.st.codes))
				for i, v := range c.st.codes[:cap(c.st.codes)] {
					raw[i] = byte(v)
				}
				for _, cb := range codes {
					if bytes.Contains(raw, cb) {
						t.Fatal("a deleted int8 code is still in the code array")
					}
				}
			}
			for _, id := range c.st.ids[:cap(c.st.ids)] {
				for _, tt := range gone {
					if id == tt.ID {
						t.Fatalf("template id %s still in the id array", id)
					}
				}
			}
			if _, ok := c.st.persons.lookup(victim); ok {
				t.Fatal("person id still interned")
			}
			for _, name := range c.st.persons.names {
				if name == victim {
					t.Fatal("person id still in the name table")
				}
			}
			c.mu.RUnlock()
			// Snapshot written afterwards.
			after := snapshotBytes(t, x, 2)
			for _, s := range stored {
				if bytes.Contains(after, s) {
					t.Fatal("a deleted vector is in the snapshot written after deletion")
				}
			}
			for _, tt := range gone {
				if bytes.Contains(after, []byte(tt.ID)) {
					t.Fatalf("template %s is named in the snapshot after deletion", tt.ID)
				}
			}
			if bytes.Contains(after, []byte(victim)) {
				t.Fatal("the person id is in the snapshot after deletion")
			}
			// And the rest survived intact.
			if got, _ := x.Count(ctx, "model-a"); got != 45 {
				t.Fatalf("count %d, want 45", got)
			}
			for _, tt := range ts {
				if tt.Person == victim {
					continue
				}
				h, err := x.SearchPerson(ctx, "model-a", tt.Person, tt.Vector)
				if err != nil || h.Distance > 1e-5 {
					t.Fatalf("%s after another's deletion: %+v, %v", tt.ID, h, err)
				}
			}
		})
	}
}

// TestShrinkReleasesCapacity: deleting most of a large gallery reallocates
// its arrays, and the old ones held nothing deleted (remove zeroes first).
func TestShrinkReleasesCapacity(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	x := newIndex(t, Options{})
	ts := fill(t, x, "gal", 16, 20000, 1, r)
	ids := make([]string, 0, 19000)
	for _, tt := range ts[:19000] {
		ids = append(ids, tt.ID)
	}
	n, err := x.DeleteTemplates(context.Background(), "gal", ids)
	if err != nil || n != 19000 {
		t.Fatalf("delete: %d, %v", n, err)
	}
	c, _ := x.lookup("gal")
	if cap(c.st.vecs) > 4*len(c.st.vecs)+4096*16 {
		t.Fatalf("capacity %d for %d values after deleting 95%%", cap(c.st.vecs), len(c.st.vecs))
	}
	res, err := x.Search(context.Background(), "gal", ts[19500].Vector, index.SearchOptions{K: 1})
	if err != nil || res.Hits[0].ID != ts[19500].ID {
		t.Fatalf("search after shrink: %v, %v", res, err)
	}
}

func TestClosed(t *testing.T) {
	x, _ := sampleIndex(t, Options{})
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := x.Count(ctx, "model-a"); !errors.Is(err, index.ErrClosed) {
		t.Fatalf("count after close: %v", err)
	}
	if err := x.CreateCollection(ctx, index.Collection{Name: "x", Dim: 2}); !errors.Is(err, index.ErrClosed) {
		t.Fatalf("create after close: %v", err)
	}
	if err := x.WriteSnapshotTo(ctx, &bytes.Buffer{}, 0); !errors.Is(err, index.ErrClosed) {
		t.Fatalf("snapshot after close: %v", err)
	}
}

// FuzzLoadSnapshot: no input makes the reader panic or hang, and any input
// it accepts is a canonical snapshot (writing it back gives the same bytes).
func FuzzLoadSnapshot(f *testing.F) {
	x, err := New(Options{})
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	r := rand.New(rand.NewPCG(10, 10))
	if err := x.CreateCollection(ctx, index.Collection{Name: "m", Dim: 4}); err != nil {
		f.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := x.Upsert(ctx, "m", []index.Template{{TemplateInfo: index.TemplateInfo{ID: fmt.Sprint("t", i), Person: "p", Site: "s"}, Vector: randUnit(r, 4)}}); err != nil {
			f.Fatal(err)
		}
	}
	if err := x.SwitchAlias(ctx, "a", "m"); err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	if err := x.WriteSnapshotTo(ctx, &buf, 99); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	empty, _ := New(Options{})
	buf.Reset()
	if err := empty.WriteSnapshotTo(ctx, &buf, 0); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte("FGGALLRY"))
	f.Fuzz(func(t *testing.T, data []byte) {
		y, seq, err := ReadSnapshot(context.Background(), bytes.NewReader(data), Options{Precision: Int8})
		if err != nil {
			if !errors.Is(err, ErrCorruptSnapshot) {
				t.Fatalf("error not typed: %v", err)
			}
			return
		}
		var out bytes.Buffer
		if err := y.WriteSnapshotTo(context.Background(), &out, seq); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), data) {
			t.Fatalf("accepted a non-canonical snapshot (%d bytes, rewrites as %d)", len(data), out.Len())
		}
	})
}
