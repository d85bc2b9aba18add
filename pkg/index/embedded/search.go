package embedded

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"

	"github.com/facegate/facegate/pkg/index"
)

// Ranking is by inner product, largest first: for unit vectors
// ||a-b||^2 = 2 - 2 a.b, so the order is the same as by distance, and a dot
// product is cheaper. Reported distances are recomputed with index.L2, which
// stays precise near zero where 2-2a.b would cancel.

// topk keeps the k largest scores seen, as a min-heap.
type topk struct {
	k     int
	score []float32
	row   []int32
}

func newTopk(k int) topk {
	return topk{k: k, score: make([]float32, 0, k), row: make([]int32, 0, k)}
}

// threshold is the score a new entry must beat.
func (h *topk) threshold() float32 {
	if len(h.score) < h.k {
		return float32(math.Inf(-1))
	}
	return h.score[0]
}

func (h *topk) push(s float32, r int32) {
	if len(h.score) < h.k {
		h.score = append(h.score, s)
		h.row = append(h.row, r)
		i := len(h.score) - 1
		for i > 0 {
			p := (i - 1) / 2
			if h.score[p] <= h.score[i] {
				break
			}
			h.swap(i, p)
			i = p
		}
		return
	}
	if s <= h.score[0] {
		return
	}
	h.score[0], h.row[0] = s, r
	i, n := 0, len(h.score)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if rr := l + 1; rr < n && h.score[rr] < h.score[l] {
			m = rr
		}
		if h.score[i] <= h.score[m] {
			break
		}
		h.swap(i, m)
		i = m
	}
}

func (h *topk) swap(i, j int) {
	h.score[i], h.score[j] = h.score[j], h.score[i]
	h.row[i], h.row[j] = h.row[j], h.row[i]
}

// candidate is a row the int8 error bound could not exclude.
type candidate struct {
	row   int32
	upper float32
}

// query is one query vector in every form the kernels need.
type query struct {
	f32 []float32
	// int8 mode: the query's code widened for the kernels, its scale and the
	// norm of its quantisation error.
	q32   []int32
	q16   []int16
	scale float32
	err   float32
}

func (x *Index) prepare(st *store, v []float32) query {
	q := query{f32: v}
	if st.int8 {
		code := make([]int8, st.dim)
		q.scale, q.err, _ = quantize(v, code)
		q.q32 = make([]int32, st.dim)
		q.q16 = make([]int16, st.dim)
		for i, c := range code {
			q.q32[i], q.q16[i] = int32(c), int16(c)
		}
	}
	return q
}

// shardState is one shard's per-query results.
type shardState struct {
	heaps []topk
	cands [][]candidate
}

// filter restricts a scan: site >= 0 keeps that site's rows only.
type filter struct {
	site int32
}

// scanShard scans rows [lo, hi) for every query, a block of rows at a time
// so that the block stays in cache while each query passes over it.
func (x *Index) scanShard(ctx context.Context, st *store, qs []query, k int, f filter, lo, hi int, out *shardState) error {
	mode := x.mode(st)
	out.heaps = make([]topk, len(qs))
	hk := k
	if mode == modeInt8Fixed {
		hk = max(k, x.opts.Rerank)
	}
	for i := range out.heaps {
		out.heaps[i] = newTopk(hk)
	}
	if mode == modeInt8Bound {
		out.cands = make([][]candidate, len(qs))
	}
	block := x.opts.BlockRows
	fbuf := make([]float32, block)
	ibuf := make([]int32, block)
	d := st.dim
	eps := boundEps(d)
	for b, nb := lo, 0; b < hi; b, nb = b+block, nb+1 {
		if nb%64 == 63 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		e := min(b+block, hi)
		n := e - b
		for qi := range qs {
			q := &qs[qi]
			h := &out.heaps[qi]
			thr := h.threshold()
			switch mode {
			case modeFloat32:
				sc := fbuf[:n]
				dotBlockF32(q.f32, st.vecs[b*d:e*d], sc)
				for j, s := range sc {
					if s > thr && (f.site < 0 || st.site[b+j] == f.site) {
						h.push(s, int32(b+j))
						thr = h.threshold()
					}
				}
			case modeInt8Fixed:
				sc := ibuf[:n]
				dotBlockI8(q.q32, q.q16, st.codes[b*d:e*d], sc)
				for j, iv := range sc {
					s := float32(iv) * q.scale * st.qscale[b+j]
					if s > thr && (f.site < 0 || st.site[b+j] == f.site) {
						h.push(s, int32(b+j))
						thr = h.threshold()
					}
				}
			case modeInt8Bound:
				sc := ibuf[:n]
				dotBlockI8(q.q32, q.q16, st.codes[b*d:e*d], sc)
				cands := out.cands[qi]
				for j, iv := range sc {
					r := b + j
					a := float32(iv) * q.scale * st.qscale[r]
					bound := st.qerr[r] + q.err*st.qnorm[r] + eps
					if a+bound >= thr && (f.site < 0 || st.site[r] == f.site) {
						cands = append(cands, candidate{row: int32(r), upper: a + bound})
						if a-bound > thr {
							h.push(a-bound, int32(r))
							thr = h.threshold()
						}
					}
				}
				out.cands[qi] = cands
			}
		}
	}
	return nil
}

// boundEps covers float32 rounding in the int8 bound and in the float32 dot
// product the candidates are re-ranked with (at most about d ulps of 1).
func boundEps(d int) float32 { return float32(d)*2.4e-7 + 1e-6 }

type scanMode int

const (
	modeFloat32 scanMode = iota
	modeInt8Fixed
	modeInt8Bound
)

func (x *Index) mode(st *store) scanMode {
	switch {
	case !st.int8:
		return modeFloat32
	case x.opts.Rerank > 0:
		return modeInt8Fixed
	default:
		return modeInt8Bound
	}
}

// Search implements index.Index.
func (x *Index) Search(ctx context.Context, coll string, v []float32, opts index.SearchOptions) (index.Result, error) {
	rs, err := x.SearchBatch(ctx, coll, [][]float32{v}, opts)
	if err != nil {
		return index.Result{}, err
	}
	return rs[0], nil
}

// SearchBatch implements index.Index.
func (x *Index) SearchBatch(ctx context.Context, coll string, vs [][]float32, opts index.SearchOptions) ([]index.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("embedded: search: %w", err)
	}
	if err := index.ValidateSearch(opts); err != nil {
		return nil, fmt.Errorf("embedded: search: %w", err)
	}
	c, err := x.lookup(coll)
	if err != nil {
		return nil, err
	}
	dim := c.dim
	norm := make([][]float32, len(vs))
	for i, v := range vs {
		if norm[i], err = index.Normalize(dim, v); err != nil {
			return nil, fmt.Errorf("embedded: search %q: query %d: %w", c.name, i, err)
		}
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	st := c.st
	x.queries.Add(uint64(len(vs)))
	results := make([]index.Result, len(vs))
	f := filter{site: -1}
	if opts.Site != "" {
		s, ok := st.sites.lookup(opts.Site)
		if !ok {
			return emptyResults(len(vs)), nil
		}
		f.site = s
	}
	if opts.Person != "" {
		p, ok := st.persons.lookup(opts.Person)
		if !ok {
			return emptyResults(len(vs)), nil
		}
		for i, v := range norm {
			results[i] = x.searchRows(st, v, opts.K, f, st.personRows[p])
		}
		return results, nil
	}
	qs := make([]query, len(norm))
	for i, v := range norm {
		qs[i] = x.prepare(st, v)
	}
	shards := x.shardRanges(st.n)
	states := make([]shardState, len(shards))
	errs := make([]error, len(shards))
	var wg sync.WaitGroup
	for i := 1; i < len(shards); i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = x.scanShard(ctx, st, qs, opts.K, f, shards[i][0], shards[i][1], &states[i])
		}(i)
	}
	if len(shards) > 0 {
		errs[0] = x.scanShard(ctx, st, qs, opts.K, f, shards[0][0], shards[0][1], &states[0])
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("embedded: search %q: %w", c.name, err)
		}
	}
	for qi := range qs {
		rows := x.merge(st, &qs[qi], opts.K, states, qi)
		results[qi] = x.result(st, qs[qi].f32, rows)
	}
	return results, nil
}

func emptyResults(n int) []index.Result {
	out := make([]index.Result, n)
	for i := range out {
		out[i] = index.Result{Hits: []index.Hit{}, Persons: []index.PersonHit{}}
	}
	return out
}

// shardRanges splits n rows into at most Shards ranges of at least
// MinShardRows, aligned to blocks.
func (x *Index) shardRanges(n int) [][2]int {
	if n == 0 {
		return nil
	}
	s := min(x.opts.Shards, max(1, n/x.opts.MinShardRows))
	per := (n + s - 1) / s
	per = (per + x.opts.BlockRows - 1) / x.opts.BlockRows * x.opts.BlockRows
	var out [][2]int
	for lo := 0; lo < n; lo += per {
		out = append(out, [2]int{lo, min(lo+per, n)})
	}
	return out
}

// merge combines the shards' answers for query qi into the k best rows.
func (x *Index) merge(st *store, q *query, k int, states []shardState, qi int) []int32 {
	switch x.mode(st) {
	case modeFloat32:
		h := newTopk(k)
		for i := range states {
			sh := &states[i].heaps[qi]
			for j, s := range sh.score {
				h.push(s, sh.row[j])
			}
		}
		return h.row
	case modeInt8Fixed:
		// The R best by int8 score, re-ranked by float32.
		r := max(k, x.opts.Rerank)
		pre := newTopk(r)
		for i := range states {
			sh := &states[i].heaps[qi]
			for j, s := range sh.score {
				pre.push(s, sh.row[j])
			}
		}
		x.reranked.Add(uint64(len(pre.row)))
		return x.rerank(st, q.f32, k, pre.row)
	default:
		return x.mergeBound(st, q, k, states, qi)
	}
}

// mergeBound finishes an int8 search whose candidates were chosen by the
// error bound: |q.x - (int8 estimate)| <= bound for every row, so a row whose
// upper bound is below the k-th best lower bound cannot be in the top k.
// Candidates are re-ranked in order of upper bound, stopping once the next
// upper bound cannot beat the k-th exact score. The result equals an exact
// float32 scan's.
func (x *Index) mergeBound(st *store, q *query, k int, states []shardState, qi int) []int32 {
	lows := newTopk(k)
	for i := range states {
		sh := &states[i].heaps[qi]
		for j, s := range sh.score {
			lows.push(s, sh.row[j])
		}
	}
	thr := lows.threshold()
	var cands []candidate
	for i := range states {
		for _, c := range states[i].cands[qi] {
			if c.upper >= thr {
				cands = append(cands, c)
			}
		}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].upper > cands[j].upper })
	exact := newTopk(k)
	var one [1]float32
	n := 0
	for _, c := range cands {
		if len(exact.score) == k && c.upper < exact.threshold() {
			break
		}
		r := int(c.row)
		dotBlockF32(q.f32, st.row(r), one[:])
		exact.push(one[0], c.row)
		n++
	}
	x.reranked.Add(uint64(n))
	return exact.row
}

// rerank scores rows with float32 and keeps the k best.
func (x *Index) rerank(st *store, q []float32, k int, rows []int32) []int32 {
	h := newTopk(k)
	var one [1]float32
	for _, r := range rows {
		dotBlockF32(q, st.row(int(r)), one[:])
		h.push(one[0], r)
	}
	return h.row
}

// searchRows is an exact search restricted to given rows (one person's).
func (x *Index) searchRows(st *store, q []float32, k int, f filter, rows []int32) index.Result {
	h := newTopk(k)
	var one [1]float32
	for _, r := range rows {
		if f.site >= 0 && st.site[r] != f.site {
			continue
		}
		dotBlockF32(q, st.row(int(r)), one[:])
		h.push(one[0], r)
	}
	return x.result(st, q, h.row)
}

// result turns rows into hits with exact distances, nearest first.
func (x *Index) result(st *store, q []float32, rows []int32) index.Result {
	hits := make([]index.Hit, len(rows))
	for i, r := range rows {
		hits[i] = index.Hit{TemplateInfo: st.info(int(r)), Distance: index.L2(q, st.row(int(r)))}
	}
	index.SortHits(hits)
	return index.Result{Hits: hits, Persons: index.GroupByPerson(hits)}
}

// SearchPerson implements index.Index.
func (x *Index) SearchPerson(ctx context.Context, coll, person string, v []float32) (index.PersonHit, error) {
	if err := index.ValidateID("person", person); err != nil {
		return index.PersonHit{}, fmt.Errorf("embedded: verify: %w", err)
	}
	rs, err := x.SearchBatch(ctx, coll, [][]float32{v}, index.SearchOptions{K: 1, Person: person})
	if err != nil {
		return index.PersonHit{}, err
	}
	if len(rs[0].Hits) == 0 {
		return index.PersonHit{}, fmt.Errorf("embedded: verify person %q in %q: %w: no templates", person, coll, index.ErrNotFound)
	}
	h := rs[0].Hits[0]
	return index.PersonHit{Person: h.Person, Template: h.ID, Distance: h.Distance}, nil
}
