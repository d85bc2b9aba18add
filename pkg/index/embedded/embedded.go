// Package embedded is the in-process gallery index: exact search over every
// template, for one machine. It is the default backend.
//
// Two precisions:
//
//   - Float32 (default): every query is compared with every template's
//     float32 vector. Results are exact.
//   - Int8: templates are also kept as int8 codes with a per-vector scale;
//     a query scans the codes (a quarter of the bytes) and re-ranks the best
//     candidates with float32. With Rerank = 0 (the default) the candidates
//     are chosen by a proven error bound, so results equal Float32's; with
//     Rerank = R > 0 exactly the R best by int8 score are re-ranked, which is
//     approximate (its recall is measured by pkg/index/indexbench).
//
// A single query splits the gallery into shards searched by parallel
// goroutines; a batch of queries is processed as a blocked matrix product
// (a block of rows stays in cache while every query of the batch passes over
// it).
//
// The index is built by the matcher from the enrolment stream; a snapshot
// (WriteSnapshot, Load) stores the gallery with the stream sequence number it
// reflects, so a restart loads the snapshot and resumes the stream after it.
package embedded

import (
	"container/heap"
	"context"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/facegate/facegate/pkg/index"
)

// Precision selects how templates are scanned.
type Precision int

const (
	// Float32 scans float32 vectors: exact.
	Float32 Precision = iota
	// Int8 scans int8 codes and re-ranks candidates with float32.
	Int8
)

func (p Precision) String() string {
	switch p {
	case Float32:
		return "float32"
	case Int8:
		return "int8"
	}
	return fmt.Sprintf("Precision(%d)", int(p))
}

// Options configure an Index. The zero value is exact float32 search over
// GOMAXPROCS shards.
type Options struct {
	Precision Precision
	// Rerank applies to Int8: 0 re-ranks the candidates an error bound cannot
	// exclude (exact results); R > 0 re-ranks the R best by int8 score
	// (approximate; R below k is raised to k).
	Rerank int
	// Shards is how many goroutines search one query; 0 means GOMAXPROCS.
	Shards int
	// MinShardRows keeps shards at least this large, below which a goroutine
	// costs more than it saves; 0 means 16384.
	MinShardRows int
	// BlockRows is how many rows a batch pass keeps in cache; 0 means 256.
	BlockRows int
}

func (o Options) withDefaults() (Options, error) {
	if o.Precision != Float32 && o.Precision != Int8 {
		return o, fmt.Errorf("embedded: %w: unknown precision %d", index.ErrInvalidArgument, int(o.Precision))
	}
	if o.Rerank < 0 || o.Shards < 0 || o.MinShardRows < 0 || o.BlockRows < 0 {
		return o, fmt.Errorf("embedded: %w: negative option", index.ErrInvalidArgument)
	}
	if o.Shards == 0 {
		o.Shards = runtime.GOMAXPROCS(0)
	}
	if o.MinShardRows == 0 {
		o.MinShardRows = 16384
	}
	if o.BlockRows == 0 {
		o.BlockRows = 256
	}
	return o, nil
}

// Index is the embedded gallery. It implements index.Index.
type Index struct {
	opts Options

	mu          sync.RWMutex
	closed      bool
	collections map[string]*collection
	aliases     map[string]string

	queries  atomic.Uint64
	reranked atomic.Uint64
}

type collection struct {
	name string
	dim  int // fixed for the collection's life: readable without mu
	mu   sync.RWMutex
	st   *store
}

var _ index.Index = (*Index)(nil)

// New returns an empty index.
func New(opts Options) (*Index, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Index{opts: o, collections: make(map[string]*collection), aliases: make(map[string]string)}, nil
}

// Options returns the effective options.
func (x *Index) Options() Options { return x.opts }

// Stats counts queries and the float32 re-rank work of Int8 mode.
type Stats struct {
	Queries  uint64 `json:"queries"`
	Reranked uint64 `json:"reranked"`
}

// Stats returns counters since New.
func (x *Index) Stats() Stats {
	return Stats{Queries: x.queries.Load(), Reranked: x.reranked.Load()}
}

// MemoryBytes estimates the memory the gallery holds: vectors, codes, ids and
// lookup tables (map entries are estimated at 48 bytes).
func (x *Index) MemoryBytes() int64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var b int64
	for _, c := range x.collections {
		c.mu.RLock()
		b += c.st.memory()
		c.mu.RUnlock()
	}
	return b
}

// lookup resolves a collection or alias name.
func (x *Index) lookup(name string) (*collection, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.closed {
		return nil, fmt.Errorf("embedded: %w", index.ErrClosed)
	}
	if target, ok := x.aliases[name]; ok {
		name = target
	}
	c, ok := x.collections[name]
	if !ok {
		return nil, fmt.Errorf("embedded: collection %q: %w", name, index.ErrUnknownCollection)
	}
	return c, nil
}

// CreateCollection implements index.Index.
func (x *Index) CreateCollection(ctx context.Context, c index.Collection) error {
	if err := index.ValidateCollection(c); err != nil {
		return fmt.Errorf("embedded: create collection: %w", err)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return fmt.Errorf("embedded: %w", index.ErrClosed)
	}
	if _, ok := x.aliases[c.Name]; ok {
		return fmt.Errorf("embedded: create collection %q: %w: the name is an alias", c.Name, index.ErrDuplicate)
	}
	if old, ok := x.collections[c.Name]; ok {
		if old.dim != c.Dim {
			return fmt.Errorf("embedded: create collection %q with dimension %d: %w: it exists with dimension %d",
				c.Name, c.Dim, index.ErrWrongDimension, old.dim)
		}
		return nil
	}
	x.collections[c.Name] = &collection{name: c.Name, dim: c.Dim, st: newStore(c.Dim, x.opts.Precision == Int8)}
	return nil
}

// DropCollection implements index.Index.
func (x *Index) DropCollection(ctx context.Context, name string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return fmt.Errorf("embedded: %w", index.ErrClosed)
	}
	c, ok := x.collections[name]
	if !ok {
		return fmt.Errorf("embedded: drop collection %q: %w", name, index.ErrUnknownCollection)
	}
	for a, t := range x.aliases {
		if t == name {
			return fmt.Errorf("embedded: drop collection %q: %w: alias %q points at it", name, index.ErrInUse, a)
		}
	}
	delete(x.collections, name)
	// Searches holding the collection finish on it; zero it under its lock
	// so that a dropped gallery's vectors do not wait for the collector.
	c.mu.Lock()
	clear(c.st.vecs[:cap(c.st.vecs)])
	clear(c.st.codes[:cap(c.st.codes)])
	c.st = newStore(c.st.dim, c.st.int8)
	c.mu.Unlock()
	return nil
}

// Collections implements index.Index.
func (x *Index) Collections(ctx context.Context) ([]index.Collection, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.closed {
		return nil, fmt.Errorf("embedded: %w", index.ErrClosed)
	}
	out := make([]index.Collection, 0, len(x.collections))
	for name, c := range x.collections {
		out = append(out, index.Collection{Name: name, Dim: c.dim})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// SwitchAlias implements index.Index.
func (x *Index) SwitchAlias(ctx context.Context, alias, coll string) error {
	if err := index.ValidateName(alias); err != nil {
		return fmt.Errorf("embedded: switch alias: %w", err)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return fmt.Errorf("embedded: %w", index.ErrClosed)
	}
	if _, ok := x.collections[alias]; ok {
		return fmt.Errorf("embedded: switch alias %q: %w: a collection has that name", alias, index.ErrDuplicate)
	}
	if _, ok := x.collections[coll]; !ok {
		return fmt.Errorf("embedded: switch alias %q to %q: %w", alias, coll, index.ErrUnknownCollection)
	}
	x.aliases[alias] = coll
	return nil
}

// ResolveAlias implements index.Index.
func (x *Index) ResolveAlias(ctx context.Context, alias string) (string, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.closed {
		return "", fmt.Errorf("embedded: %w", index.ErrClosed)
	}
	t, ok := x.aliases[alias]
	if !ok {
		return "", fmt.Errorf("embedded: alias %q: %w", alias, index.ErrNotFound)
	}
	return t, nil
}

// DropAlias implements index.Index.
func (x *Index) DropAlias(ctx context.Context, alias string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return fmt.Errorf("embedded: %w", index.ErrClosed)
	}
	if _, ok := x.aliases[alias]; !ok {
		return fmt.Errorf("embedded: drop alias %q: %w", alias, index.ErrNotFound)
	}
	delete(x.aliases, alias)
	return nil
}

// Upsert implements index.Index.
func (x *Index) Upsert(ctx context.Context, coll string, ts []index.Template) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := x.lookup(coll)
	if err != nil {
		return err
	}
	vecs, err := index.ValidateTemplates(c.dim, ts)
	if err != nil {
		return fmt.Errorf("embedded: upsert into %q: %w", c.name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, t := range ts {
		c.st.upsert(t.TemplateInfo, vecs[i])
	}
	return nil
}

// DeleteTemplates implements index.Index.
func (x *Index) DeleteTemplates(ctx context.Context, coll string, ids []string) (int, error) {
	c, err := x.lookup(coll)
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		if err := index.ValidateID("template", id); err != nil {
			return 0, fmt.Errorf("embedded: delete from %q: %w", c.name, err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, id := range ids {
		if r, ok := c.st.byID[id]; ok {
			c.st.remove(int(r))
			n++
		}
	}
	return n, nil
}

// DeletePerson implements index.Index.
func (x *Index) DeletePerson(ctx context.Context, coll, person string) (int, error) {
	if err := index.ValidateID("person", person); err != nil {
		return 0, fmt.Errorf("embedded: delete person: %w", err)
	}
	c, err := x.lookup(coll)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.removePerson(person), nil
}

func (s *store) removePerson(person string) int {
	p, ok := s.persons.lookup(person)
	if !ok {
		return 0
	}
	// remove() edits personRows[p] and clears it with the person's last row.
	n := 0
	for rows := s.personRows[p]; len(rows) > 0; rows = s.personRows[p] {
		s.remove(int(rows[len(rows)-1]))
		n++
	}
	return n
}

// ErasePerson implements index.Index.
func (x *Index) ErasePerson(ctx context.Context, person string) (int, error) {
	if err := index.ValidateID("person", person); err != nil {
		return 0, fmt.Errorf("embedded: erase person: %w", err)
	}
	x.mu.RLock()
	if x.closed {
		x.mu.RUnlock()
		return 0, fmt.Errorf("embedded: %w", index.ErrClosed)
	}
	cs := make([]*collection, 0, len(x.collections))
	for _, c := range x.collections {
		cs = append(cs, c)
	}
	x.mu.RUnlock()
	n := 0
	for _, c := range cs {
		c.mu.Lock()
		n += c.st.removePerson(person)
		c.mu.Unlock()
	}
	return n, nil
}

// Count implements index.Index.
func (x *Index) Count(ctx context.Context, coll string) (int, error) {
	c, err := x.lookup(coll)
	if err != nil {
		return 0, err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.st.n, nil
}

// List implements index.Index.
func (x *Index) List(ctx context.Context, coll string, opts index.ListOptions) ([]index.TemplateInfo, error) {
	limit, err := index.ValidateList(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded: list: %w", err)
	}
	c, err := x.lookup(coll)
	if err != nil {
		return nil, err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	st := c.st
	var rows []int32
	if opts.Person != "" {
		p, ok := st.persons.lookup(opts.Person)
		if !ok {
			return []index.TemplateInfo{}, nil
		}
		rows = st.personRows[p]
	}
	site := int32(-1)
	if opts.Site != "" {
		s, ok := st.sites.lookup(opts.Site)
		if !ok {
			return []index.TemplateInfo{}, nil
		}
		site = s
	}
	keep := func(r int) bool {
		return (site < 0 || st.site[r] == site) && st.ids[r] > opts.After
	}
	// Select the page's rows (the limit smallest ids above After) with a
	// max-heap of row numbers: O(n log limit) time and O(limit) memory, so
	// paging through a million templates does not sort a million rows per
	// page.
	h := idHeap{ids: st.ids}
	visit := func(r int) {
		if !keep(r) {
			return
		}
		if len(h.rows) < limit {
			heap.Push(&h, int32(r))
		} else if st.ids[r] < st.ids[h.rows[0]] {
			h.rows[0] = int32(r)
			heap.Fix(&h, 0)
		}
	}
	if rows != nil {
		for _, r := range rows {
			visit(int(r))
		}
	} else {
		for r := 0; r < st.n; r++ {
			visit(r)
		}
	}
	out := make([]index.TemplateInfo, len(h.rows))
	for i, r := range h.rows {
		out[i] = st.info(int(r))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// idHeap is a max-heap of rows ordered by template id.
type idHeap struct {
	ids  []string
	rows []int32
}

func (h idHeap) Len() int           { return len(h.rows) }
func (h idHeap) Less(i, j int) bool { return h.ids[h.rows[i]] > h.ids[h.rows[j]] }
func (h idHeap) Swap(i, j int)      { h.rows[i], h.rows[j] = h.rows[j], h.rows[i] }
func (h *idHeap) Push(x any)        { h.rows = append(h.rows, x.(int32)) }
func (h *idHeap) Pop() any {
	x := h.rows[len(h.rows)-1]
	h.rows = h.rows[:len(h.rows)-1]
	return x
}

// Close implements index.Index. It zeroes every vector so that a closed
// index keeps no template in memory.
func (x *Index) Close() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return nil
	}
	x.closed = true
	for _, c := range x.collections {
		c.mu.Lock()
		clear(c.st.vecs[:cap(c.st.vecs)])
		clear(c.st.codes[:cap(c.st.codes)])
		c.st = newStore(c.st.dim, c.st.int8)
		c.mu.Unlock()
	}
	x.collections = nil
	x.aliases = nil
	return nil
}
