// Package indextest is the contract every gallery backend must pass: one
// suite, run against each backend by that backend's tests.
//
// Expected answers are computed here by brute force over the vectors the
// suite generated (exact L2 in float64), never taken from a backend.
package indextest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/facegate/facegate/pkg/index"
)

// Run runs the contract suite. newBackend returns an empty backend for one
// subtest and arranges its cleanup (t.Cleanup).
func Run(t *testing.T, newBackend func(t *testing.T) index.Index) {
	tests := []struct {
		name string
		fn   func(t *testing.T, x index.Index)
	}{
		{"Collections", testCollections},
		{"UpsertCountList", testUpsertCountList},
		{"UpsertReplaces", testUpsertReplaces},
		{"DuplicateIDsInOneUpsert", testDuplicateIDs},
		{"BadVectors", testBadVectors},
		{"NearUnitVectorIsRenormalised", testRenormalise},
		{"BadIDs", testBadIDs},
		{"UnknownCollection", testUnknownCollection},
		{"EmptyGallery", testEmptyGallery},
		{"SearchMatchesBruteForce", testSearchBruteForce},
		{"SearchBatchEqualsSearch", testSearchBatch},
		{"SearchFilters", testSearchFilters},
		{"SearchPerson", testSearchPerson},
		{"DistancesAreTrueL2", testDistances},
		{"BadSearchArguments", testBadSearchArgs},
		{"DeletePersonRemovesEveryTemplate", testDeletePerson},
		{"ErasePersonEverywhere", testErasePerson},
		{"DeleteTemplates", testDeleteTemplates},
		{"Aliases", testAliases},
		{"CancelledContext", testCancelled},
		{"Concurrent", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newBackend(t))
		})
	}
}

// ---- helpers ----

func randUnit(r *rand.Rand, dim int) []float32 {
	for {
		v := make([]float32, dim)
		var ss float64
		for i := range v {
			x := r.NormFloat64()
			v[i] = float32(x)
			ss += x * x
		}
		if ss == 0 {
			continue
		}
		return unit(v)
	}
}

func unit(v []float32) []float32 {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	n := math.Sqrt(ss)
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(float64(x) / n)
	}
	return out
}

// near returns a unit vector at a small random offset from v.
func near(r *rand.Rand, v []float32, sigma float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = x + float32(sigma*r.NormFloat64())
	}
	return unit(out)
}

func exactL2(a, b []float32) float64 {
	var s float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		s += d * d
	}
	return math.Sqrt(s)
}

type gallery struct {
	coll      index.Collection
	templates []index.Template
}

// makeGallery builds persons x perPerson templates: each person has a centre
// and templates near it, spread over sites.
func makeGallery(r *rand.Rand, name string, dim, persons, perPerson int, sites []string) gallery {
	g := gallery{coll: index.Collection{Name: name, Dim: dim}}
	for p := 0; p < persons; p++ {
		centre := randUnit(r, dim)
		for j := 0; j < perPerson; j++ {
			t := index.Template{
				TemplateInfo: index.TemplateInfo{
					ID:     fmt.Sprintf("t-%04d-%d", p, j),
					Person: fmt.Sprintf("p-%04d", p),
					Photo:  fmt.Sprintf("photo-%04d-%d.jpg", p, j),
				},
				Vector: near(r, centre, 0.15/math.Sqrt(float64(dim))),
			}
			if len(sites) > 0 {
				t.Site = sites[(p+j)%len(sites)]
			}
			g.templates = append(g.templates, t)
		}
	}
	return g
}

func load(t *testing.T, x index.Index, g gallery) {
	t.Helper()
	ctx := context.Background()
	if err := x.CreateCollection(ctx, g.coll); err != nil {
		t.Fatalf("create collection %+v: %v", g.coll, err)
	}
	for i := 0; i < len(g.templates); i += 100 {
		if err := x.Upsert(ctx, g.coll.Name, g.templates[i:min(i+100, len(g.templates))]); err != nil {
			t.Fatalf("upsert: %v", err)
		}
	}
}

// bruteForce ranks templates by exact distance to q, ties by id.
func bruteForce(ts []index.Template, q []float32, keep func(index.Template) bool) []index.Hit {
	var hits []index.Hit
	qq := unit(q)
	for _, t := range ts {
		if keep != nil && !keep(t) {
			continue
		}
		hits = append(hits, index.Hit{TemplateInfo: t.TemplateInfo, Distance: float32(exactL2(qq, unit(t.Vector)))})
	}
	sort.Slice(hits, func(i, j int) bool {
		if hits[i].Distance != hits[j].Distance {
			return hits[i].Distance < hits[j].Distance
		}
		return hits[i].ID < hits[j].ID
	})
	return hits
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: got no error, want %v", what, target)
	}
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want one wrapping %v", what, err, target)
	}
}

func count(t *testing.T, x index.Index, coll string) int {
	t.Helper()
	n, err := x.Count(context.Background(), coll)
	if err != nil {
		t.Fatalf("count %q: %v", coll, err)
	}
	return n
}

func search(t *testing.T, x index.Index, coll string, q []float32, o index.SearchOptions) index.Result {
	t.Helper()
	res, err := x.Search(context.Background(), coll, q, o)
	if err != nil {
		t.Fatalf("search %q: %v", coll, err)
	}
	return res
}

// checkResult compares a backend's result with the brute-force ranking.
// Distances must agree to 1e-5; the ids must match except where two
// distances tie within that tolerance.
func checkResult(t *testing.T, what string, got index.Result, want []index.Hit, k int) {
	t.Helper()
	if len(want) > k {
		want = want[:k]
	}
	if len(got.Hits) != len(want) {
		t.Fatalf("%s: %d hits, want %d", what, len(got.Hits), len(want))
	}
	for i, h := range got.Hits {
		w := want[i]
		if math.Abs(float64(h.Distance-w.Distance)) > 1e-5 {
			t.Fatalf("%s: hit %d distance %.7f (template %s), want %.7f (template %s)", what, i, h.Distance, h.ID, w.Distance, w.ID)
		}
		if h.ID != w.ID {
			tie := (i > 0 && math.Abs(float64(want[i-1].Distance-w.Distance)) <= 1e-5) ||
				(i+1 < len(want) && math.Abs(float64(want[i+1].Distance-w.Distance)) <= 1e-5)
			if !tie {
				t.Fatalf("%s: hit %d is %s, want %s (distance %.7f)", what, i, h.ID, w.ID, w.Distance)
			}
		}
		if h.TemplateInfo != w.TemplateInfo && h.ID == w.ID {
			t.Fatalf("%s: hit %d info %+v, want %+v", what, i, h.TemplateInfo, w.TemplateInfo)
		}
		if i > 0 && got.Hits[i-1].Distance > h.Distance {
			t.Fatalf("%s: hits not sorted: %v after %v", what, h.Distance, got.Hits[i-1].Distance)
		}
	}
	// Persons: distinct, nearest first, each with its best distance among hits.
	best := map[string]float32{}
	for _, h := range got.Hits {
		if d, ok := best[h.Person]; !ok || h.Distance < d {
			best[h.Person] = h.Distance
		}
	}
	if len(got.Persons) != len(best) {
		t.Fatalf("%s: %d persons, want %d distinct persons among hits", what, len(got.Persons), len(best))
	}
	for i, p := range got.Persons {
		if p.Distance != best[p.Person] {
			t.Fatalf("%s: person %s distance %v, want its best %v", what, p.Person, p.Distance, best[p.Person])
		}
		if i > 0 && got.Persons[i-1].Distance > p.Distance {
			t.Fatalf("%s: persons not sorted", what)
		}
	}
}

// ---- tests ----

func testCollections(t *testing.T, x index.Index) {
	ctx := context.Background()
	if err := x.CreateCollection(ctx, index.Collection{Name: "model-a-128", Dim: 128}); err != nil {
		t.Fatal(err)
	}
	if err := x.CreateCollection(ctx, index.Collection{Name: "model-a-128", Dim: 128}); err != nil {
		t.Fatalf("creating an existing collection with the same dimension: %v", err)
	}
	wantErr(t, "same name, other dimension", x.CreateCollection(ctx, index.Collection{Name: "model-a-128", Dim: 64}), index.ErrWrongDimension)
	if err := x.CreateCollection(ctx, index.Collection{Name: "model-b-16", Dim: 16}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "Upper", "1starts-with-digit", "has_underscore", "has space", "dot.name", strings.Repeat("a", index.MaxNameLen+1)} {
		wantErr(t, fmt.Sprintf("name %q", bad), x.CreateCollection(ctx, index.Collection{Name: bad, Dim: 8}), index.ErrInvalidName)
	}
	for _, dim := range []int{0, -1, index.MaxDim + 1} {
		wantErr(t, fmt.Sprintf("dimension %d", dim), x.CreateCollection(ctx, index.Collection{Name: "dims", Dim: dim}), index.ErrWrongDimension)
	}
	cs, err := x.Collections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []index.Collection{{Name: "model-a-128", Dim: 128}, {Name: "model-b-16", Dim: 16}}
	if fmt.Sprint(cs) != fmt.Sprint(want) {
		t.Fatalf("collections %v, want %v", cs, want)
	}
	if err := x.DropCollection(ctx, "model-b-16"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "count after drop", func() error { _, err := x.Count(ctx, "model-b-16"); return err }(), index.ErrUnknownCollection)
	wantErr(t, "drop unknown", x.DropCollection(ctx, "model-b-16"), index.ErrUnknownCollection)
	cs, err = x.Collections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].Name != "model-a-128" {
		t.Fatalf("collections after drop: %v", cs)
	}
}

func testUpsertCountList(t *testing.T, x index.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 1))
	g := makeGallery(r, "gal", 16, 40, 3, []string{"site-a", "site-b"})
	load(t, x, g)
	if n := count(t, x, "gal"); n != 120 {
		t.Fatalf("count %d, want 120", n)
	}
	all, err := x.List(ctx, "gal", index.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 120 {
		t.Fatalf("list returned %d, want 120", len(all))
	}
	byID := map[string]index.TemplateInfo{}
	for _, tt := range g.templates {
		byID[tt.ID] = tt.TemplateInfo
	}
	for i, info := range all {
		if i > 0 && all[i-1].ID >= info.ID {
			t.Fatalf("list not in id order at %d: %q then %q", i, all[i-1].ID, info.ID)
		}
		if byID[info.ID] != info {
			t.Fatalf("list entry %+v, want %+v", info, byID[info.ID])
		}
	}
	// Paging returns the same sequence.
	var paged []index.TemplateInfo
	after := ""
	for {
		page, err := x.List(ctx, "gal", index.ListOptions{After: after, Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 7 {
			t.Fatalf("page of %d, limit 7", len(page))
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		after = page[len(page)-1].ID
	}
	if fmt.Sprint(paged) != fmt.Sprint(all) {
		t.Fatalf("paged listing differs from the full listing")
	}
	mine, err := x.List(ctx, "gal", index.ListOptions{Person: "p-0007"})
	if err != nil {
		t.Fatal(err)
	}
	if len(mine) != 3 {
		t.Fatalf("person p-0007 has %d templates, want 3", len(mine))
	}
	for _, m := range mine {
		if m.Person != "p-0007" {
			t.Fatalf("person filter returned %+v", m)
		}
	}
	siteA, err := x.List(ctx, "gal", index.ListOptions{Site: "site-a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(siteA) != 60 {
		t.Fatalf("site-a has %d templates, want 60", len(siteA))
	}
	for _, m := range siteA {
		if m.Site != "site-a" {
			t.Fatalf("site filter returned %+v", m)
		}
	}
	_, err = x.List(ctx, "gal", index.ListOptions{Limit: index.MaxListLimit + 1})
	wantErr(t, "list limit too large", err, index.ErrInvalidArgument)
}

func testUpsertReplaces(t *testing.T, x index.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(2, 2))
	g := makeGallery(r, "gal", 16, 10, 2, nil)
	load(t, x, g)
	// Re-delivery of the same events does not duplicate.
	load(t, x, g)
	if n := count(t, x, "gal"); n != 20 {
		t.Fatalf("count after re-delivery %d, want 20", n)
	}
	// Replacing a template's vector and person.
	newVec := randUnit(r, 16)
	repl := index.Template{TemplateInfo: index.TemplateInfo{ID: "t-0003-0", Person: "p-0009", Site: "new-site", Photo: "new.jpg"}, Vector: newVec}
	if err := x.Upsert(ctx, "gal", []index.Template{repl}); err != nil {
		t.Fatal(err)
	}
	if n := count(t, x, "gal"); n != 20 {
		t.Fatalf("count after replace %d, want 20", n)
	}
	res := search(t, x, "gal", newVec, index.SearchOptions{K: 1})
	if len(res.Hits) != 1 || res.Hits[0].TemplateInfo != repl.TemplateInfo || res.Hits[0].Distance > 1e-5 {
		t.Fatalf("search for the replaced vector: %+v, want %+v at distance 0", res.Hits, repl.TemplateInfo)
	}
	old, err := x.List(ctx, "gal", index.ListOptions{Person: "p-0003"})
	if err != nil {
		t.Fatal(err)
	}
	if len(old) != 1 || old[0].ID != "t-0003-1" {
		t.Fatalf("p-0003 templates after its t-0003-0 moved to p-0009: %+v", old)
	}
	moved, err := x.List(ctx, "gal", index.ListOptions{Person: "p-0009"})
	if err != nil {
		t.Fatal(err)
	}
	if len(moved) != 3 {
		t.Fatalf("p-0009 has %d templates, want 3", len(moved))
	}
}

func testDuplicateIDs(t *testing.T, x index.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 3))
	if err := x.CreateCollection(ctx, index.Collection{Name: "gal", Dim: 8}); err != nil {
		t.Fatal(err)
	}
	batch := []index.Template{
		{TemplateInfo: index.TemplateInfo{ID: "a", Person: "p1"}, Vector: randUnit(r, 8)},
		{TemplateInfo: index.TemplateInfo{ID: "b", Person: "p1"}, Vector: randUnit(r, 8)},
		{TemplateInfo: index.TemplateInfo{ID: "a", Person: "p2"}, Vector: randUnit(r, 8)},
	}
	wantErr(t, "same id twice in one upsert", x.Upsert(ctx, "gal", batch), index.ErrDuplicate)
	if n := count(t, x, "gal"); n != 0 {
		t.Fatalf("a rejected batch applied %d templates", n)
	}
	// The same id in separate upserts is a replacement, not a duplicate.
	if err := x.Upsert(ctx, "gal", batch[:2]); err != nil {
		t.Fatal(err)
	}
	if err := x.Upsert(ctx, "gal", batch[2:]); err != nil {
		t.Fatal(err)
	}
	if n := count(t, x, "gal"); n != 2 {
		t.Fatalf("count %d, want 2", n)
	}
	got, err := x.List(ctx, "gal", index.ListOptions{Person: "p2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != "a" {
		t.Fatalf("template a should now belong to p2: %+v", got)
	}
}

func testBadVectors(t *testing.T, x index.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(4, 4))
	if err := x.CreateCollection(ctx, index.Collection{Name: "gal", Dim: 8}); err != nil {
		t.Fatal(err)
	}
	good := randUnit(r, 8)
	if err := x.Upsert(ctx, "gal", []index.Template{{TemplateInfo: index.TemplateInfo{ID: "ok", Person: "p"}, Vector: good}}); err != nil {
		t.Fatal(err)
	}
	withValue := func(i int, v float32) []float32 {
		out := append([]float32(nil), good...)
		out[i] = v
		return out
	}
	scaled := make([]float32, 8)
	for i, v := range good {
		scaled[i] = 2 * v
	}
	cases := []struct {
		name string
		vec  []float32
		err  error
	}{
		{"short", good[:7], index.ErrWrongDimension},
		{"long", append(append([]float32(nil), good...), 0), index.ErrWrongDimension},
		{"empty", nil, index.ErrWrongDimension},
		{"NaN", withValue(3, float32(math.NaN())), index.ErrInvalidVector},
		{"+Inf", withValue(0, float32(math.Inf(1))), index.ErrInvalidVector},
		{"-Inf", withValue(7, float32(math.Inf(-1))), index.ErrInvalidVector},
		{"zero", make([]float32, 8), index.ErrInvalidVector},
		{"norm 2", scaled, index.ErrInvalidVector},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			batch := []index.Template{
				{TemplateInfo: index.TemplateInfo{ID: "fine", Person: "p"}, Vector: randUnit(r, 8)},
				{TemplateInfo: index.TemplateInfo{ID: "bad", Person: "p"}, Vector: c.vec},
			}
			wantErr(t, "upsert", x.Upsert(ctx, "gal", batch), c.err)
			_, err := x.Search(ctx, "gal", c.vec, index.SearchOptions{K: 1})
			wantErr(t, "search", err, c.err)
			_, err = x.SearchBatch(ctx, "gal", [][]float32{good, c.vec}, index.SearchOptions{K: 1})
			wantErr(t, "search batch", err, c.err)
			_, err = x.SearchPerson(ctx, "gal", "p", c.vec)
			wantErr(t, "search person", err, c.err)
		})
	}
	if n := count(t, x, "gal"); n != 1 {
		t.Fatalf("rejected batches changed the gallery: count %d, want 1", n)
	}
}

func testRenormalise(t *testing.T, x index.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(5, 5))
	if err := x.CreateCollection(ctx, index.Collection{Name: "gal", Dim: 32}); err != nil {
		t.Fatal(err)
	}
	u := randUnit(r, 32)
	off := make([]float32, 32)
	for i, v := range u {
		off[i] = v * (1 + 5e-4) // within NormTolerance
	}
	if err := x.Upsert(ctx, "gal", []index.Template{{TemplateInfo: index.TemplateInfo{ID: "t", Person: "p"}, Vector: off}}); err != nil {
		t.Fatalf("a vector within the norm tolerance was rejected: %v", err)
	}
	res := search(t, x, "gal", u, index.SearchOptions{K: 1})
	if len(res.Hits) != 1 || res.Hits[0].Distance > 1e-5 {
		t.Fatalf("stored vector was not re-normalised: distance to its unit version %v", res.Hits)
	}
}

func testBadIDs(t *testing.T, x index.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(6, 6))
	if err := x.CreateCollection(ctx, index.Collection{Name: "gal", Dim: 8}); err != nil {
		t.Fatal(err)
	}
	v := randUnit(r, 8)
	bad := []string{"", "has space", `quo"te`, `back\slash`, "semi;colon", strings.Repeat("x", index.MaxIDLen+1), "new\nline"}
	for _, id := range bad {
		for _, info := range []index.TemplateInfo{
			{ID: id, Person: "p"},
			{ID: "t", Person: id},
		} {
			wantErr(t, fmt.Sprintf("template %+v", info), x.Upsert(ctx, "gal", []index.Template{{TemplateInfo: info, Vector: v}}), index.ErrInvalidID)
		}
		if id != "" {
			wantErr(t, "site "+id, x.Upsert(ctx, "gal", []index.Template{{TemplateInfo: index.TemplateInfo{ID: "t", Person: "p", Site: id}, Vector: v}}), index.ErrInvalidID)
			_, err := x.Search(ctx, "gal", v, index.SearchOptions{K: 1, Site: id})
			wantErr(t, "search site "+id, err, index.ErrInvalidID)
		}
		_, err := x.DeletePerson(ctx, "gal", id)
		wantErr(t, "delete person "+id, err, index.ErrInvalidID)
		_, err = x.SearchPerson(ctx, "gal", id, v)
		wantErr(t, "search person "+id, err, index.ErrInvalidID)
	}
	if n := count(t, x, "gal"); n != 0 {
		t.Fatalf("count %d after rejected upserts", n)
	}
}

func testUnknownCollection(t *testing.T, x index.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(7, 7))
	v := randUnit(r, 8)
	const name = "no-such-model"
	wantErr(t, "upsert", x.Upsert(ctx, name, []index.Template{{TemplateInfo: index.TemplateInfo{ID: "t", Person: "p"}, Vector: v}}), index.ErrUnknownCollection)
	_, err := x.Search(ctx, name, v, index.SearchOptions{K: 1})
	wantErr(t, "search", err, index.ErrUnknownCollection)
	_, err = x.SearchBatch(ctx, name, [][]float32{v}, index.SearchOptions{K: 1})
	wantErr(t, "search batch", err, index.ErrUnknownCollection)
	_, err = x.SearchPerson(ctx, name, "p", v)
	wantErr(t, "search person", err, index.ErrUnknownCollection)
	_, err = x.Count(ctx, name)
	wantErr(t, "count", err, index.ErrUnknownCollection)
	_, err = x.List(ctx, name, index.ListOptions{})
	wantErr(t, "list", err, index.ErrUnknownCollection)
	_, err = x.DeletePerson(ctx, name, "p")
	wantErr(t, "delete person", err, index.ErrUnknownCollection)
	_, err = x.DeleteTemplates(ctx, name, []string{"t"})
	wantErr(t, "delete templates", err, index.ErrUnknownCollection)
	wantErr(t, "alias to unknown", x.SwitchAlias(ctx, "active", name), index.ErrUnknownCollection)
}

func testEmptyGallery(t *testing.T, x index.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(8, 8))
	if err := x.CreateCollection(ctx, index.Collection{Name: "empty", Dim: 8}); err != nil {
		t.Fatal(err)
	}
	v := randUnit(r, 8)
	res := search(t, x, "empty", v, index.SearchOptions{K: 5})
	if len(res.Hits) != 0 || len(res.Persons) != 0 {
		t.Fatalf("empty gallery returned %+v", res)
	}
	rs, err := x.SearchBatch(ctx, "empty", [][]float32{v, v}, index.SearchOptions{K: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || len(rs[0].Hits)+len(rs[1].Hits) != 0 {
		t.Fatalf("empty gallery batch returned %+v", rs)
	}
	_, err = x.SearchPerson(ctx, "empty", "p", v)
	wantErr(t, "verify against an empty gallery", err, index.ErrNotFound)
	if n := count(t, x, "empty"); n != 0 {
		t.Fatalf("count %d", n)
	}
	l, err := x.List(ctx, "empty", index.ListOptions{})
	if err != nil || len(l) != 0 {
		t.Fatalf("list of empty gallery: %v, %v", l, err)
	}
	n, err := x.DeletePerson(ctx, "empty", "p")
	if err != nil || n != 0 {
		t.Fatalf("delete from empty gallery: %d, %v", n, err)
	}
}

func testSearchBruteForce(t *testing.T, x index.Index) {
	r := rand.New(rand.NewPCG(9, 9))
	g := makeGallery(r, "gal", 32, 200, 3, nil)
	load(t, x, g)
	for i := 0; i < 30; i++ {
		var q []float32
		if i%2 == 0 {
			q = near(r, g.templates[r.IntN(len(g.templates))].Vector, 0.05) // an enrolled person
		} else {
			q = randUnit(r, 32) // a stranger
		}
		for _, k := range []int{1, 5, 20} {
			got := search(t, x, "gal", q, index.SearchOptions{K: k})
			want := bruteForce(g.templates, q, nil)
			checkResult(t, fmt.Sprintf("query %d k=%d", i, k), got, want, k)
			if got.Persons[0].Person != want[0].Person {
				t.Fatalf("query %d: nearest person %s, want %s", i, got.Persons[0].Person, want[0].Person)
			}
		}
	}
	// k above the gallery size returns every template.
	got := search(t, x, "gal", randUnit(r, 32), index.SearchOptions{K: index.MaxK})
	if len(got.Hits) != 600 {
		t.Fatalf("k=%d over 600 templates returned %d", index.MaxK, len(got.Hits))
	}
}

func testSearchBatch(t *testing.T, x index.Index) {
	r := rand.New(rand.NewPCG(10, 10))
	g := makeGallery(r, "gal", 32, 100, 2, []string{"s1", "s2", "s3"})
	load(t, x, g)
	qs := make([][]float32, 17)
	for i := range qs {
		qs[i] = near(r, g.templates[r.IntN(len(g.templates))].Vector, 0.1)
	}
	for _, o := range []index.SearchOptions{{K: 3}, {K: 10, Site: "s2"}} {
		rs, err := x.SearchBatch(context.Background(), "gal", qs, o)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != len(qs) {
			t.Fatalf("%d results for %d queries", len(rs), len(qs))
		}
		for i, q := range qs {
			single := search(t, x, "gal", q, o)
			if fmt.Sprint(single) != fmt.Sprint(rs[i]) {
				t.Fatalf("batch result %d differs from single search:\n%v\n%v", i, rs[i], single)
			}
		}
	}
	rs, err := x.SearchBatch(context.Background(), "gal", nil, index.SearchOptions{K: 3})
	if err != nil || len(rs) != 0 {
		t.Fatalf("empty batch: %v, %v", rs, err)
	}
}

func testSearchFilters(t *testing.T, x index.Index) {
	r := rand.New(rand.NewPCG(11, 11))
	g := makeGallery(r, "gal", 16, 60, 3, []string{"north", "south"})
	load(t, x, g)
	for i := 0; i < 10; i++ {
		q := randUnit(r, 16)
		got := search(t, x, "gal", q, index.SearchOptions{K: 8, Site: "north"})
		want := bruteForce(g.templates, q, func(t index.Template) bool { return t.Site == "north" })
		checkResult(t, "site north", got, want, 8)
		person := fmt.Sprintf("p-%04d", r.IntN(60))
		got = search(t, x, "gal", q, index.SearchOptions{K: 8, Person: person})
		want = bruteForce(g.templates, q, func(t index.Template) bool { return t.Person == person })
		checkResult(t, "person "+person, got, want, 8)
	}
	got := search(t, x, "gal", randUnit(r, 16), index.SearchOptions{K: 3, Site: "nowhere"})
	if len(got.Hits) != 0 {
		t.Fatalf("unknown site returned %v", got.Hits)
	}
}

func testSearchPerson(t *testing.T, x index.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(12, 12))
	g := makeGallery(r, "gal", 32, 50, 4, nil)
	load(t, x, g)
	for i := 0; i < 20; i++ {
		person := fmt.Sprintf("p-%04d", r.IntN(50))
		q := randUnit(r, 32)
		if i%2 == 0 {
			q = near(r, g.templates[r.IntN(len(g.templates))].Vector, 0.05)
		}
		want := bruteForce(g.templates, q, func(t index.Template) bool { return t.Person == person })
		got, err := x.SearchPerson(ctx, "gal", person, q)
		if err != nil {
			t.Fatal(err)
		}
		if got.Person != person || math.Abs(float64(got.Distance-want[0].Distance)) > 1e-5 {
			t.Fatalf("verify %s: %+v, want distance %.7f (template %s)", person, got, want[0].Distance, want[0].ID)
		}
		if got.Template != want[0].ID && math.Abs(float64(want[0].Distance-want[1].Distance)) > 1e-5 {
			t.Fatalf("verify %s: template %s, want %s", person, got.Template, want[0].ID)
		}
	}
	_, err := x.SearchPerson(ctx, "gal", "nobody", randUnit(r, 32))
	wantErr(t, "verify an unknown person", err, index.ErrNotFound)
}

func testDistances(t *testing.T, x index.Index) {
	ctx := context.Background()
	if err := x.CreateCollection(ctx, index.Collection{Name: "gal", Dim: 4}); err != nil {
		t.Fatal(err)
	}
	s := float32(1 / math.Sqrt(2))
	ts := []index.Template{
		{TemplateInfo: index.TemplateInfo{ID: "e0", Person: "a"}, Vector: []float32{1, 0, 0, 0}},
		{TemplateInfo: index.TemplateInfo{ID: "e1", Person: "b"}, Vector: []float32{0, 1, 0, 0}},
		{TemplateInfo: index.TemplateInfo{ID: "m", Person: "c"}, Vector: []float32{s, s, 0, 0}},
		{TemplateInfo: index.TemplateInfo{ID: "neg", Person: "d"}, Vector: []float32{-1, 0, 0, 0}},
	}
	if err := x.Upsert(ctx, "gal", ts); err != nil {
		t.Fatal(err)
	}
	res := search(t, x, "gal", []float32{1, 0, 0, 0}, index.SearchOptions{K: 4})
	want := map[string]float64{
		"e0":  0,                           // identical
		"m":   math.Sqrt(2 - 2*float64(s)), // 45 degrees
		"e1":  math.Sqrt(2),                // orthogonal
		"neg": 2,                           // opposite
	}
	order := []string{"e0", "m", "e1", "neg"}
	for i, h := range res.Hits {
		if h.ID != order[i] {
			t.Fatalf("hit %d is %s, want %s", i, h.ID, order[i])
		}
		if math.Abs(float64(h.Distance)-want[h.ID]) > 1e-6 {
			t.Fatalf("distance to %s is %.8f, want L2 (not squared) %.8f", h.ID, h.Distance, want[h.ID])
		}
	}
	// A query a hair away from a template: the distance keeps its precision
	// (sqrt(2-2a.b) in float32 would round it to 0 or to ~3e-4).
	eps := 1e-4
	q := []float32{float32(math.Cos(eps)), float32(math.Sin(eps)), 0, 0}
	res = search(t, x, "gal", q, index.SearchOptions{K: 1})
	if got := float64(res.Hits[0].Distance); math.Abs(got-exactL2(q, ts[0].Vector)) > 2e-6 {
		t.Fatalf("tiny distance %.3g, want %.3g", got, exactL2(q, ts[0].Vector))
	}
}

func testBadSearchArgs(t *testing.T, x index.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(13, 13))
	g := makeGallery(r, "gal", 8, 3, 1, nil)
	load(t, x, g)
	for _, k := range []int{0, -1, index.MaxK + 1} {
		_, err := x.Search(ctx, "gal", randUnit(r, 8), index.SearchOptions{K: k})
		wantErr(t, fmt.Sprintf("k=%d", k), err, index.ErrInvalidArgument)
	}
}

func testDeletePerson(t *testing.T, x index.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(14, 14))
	g := makeGallery(r, "gal", 16, 30, 5, []string{"a", "b"})
	load(t, x, g)
	victim := "p-0012"
	var victimVecs [][]float32
	for _, tt := range g.templates {
		if tt.Person == victim {
			victimVecs = append(victimVecs, tt.Vector)
		}
	}
	n, err := x.DeletePerson(ctx, "gal", victim)
	if err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Fatalf("deleted %d templates, want 5", n)
	}
	if c := count(t, x, "gal"); c != 145 {
		t.Fatalf("count %d after deleting 5 of 150", c)
	}
	for _, v := range victimVecs {
		res := search(t, x, "gal", v, index.SearchOptions{K: index.MaxK})
		if len(res.Hits) != 145 {
			t.Fatalf("full search returned %d, want 145", len(res.Hits))
		}
		for _, h := range res.Hits {
			if h.Person == victim {
				t.Fatalf("deleted person still found: %+v", h)
			}
		}
	}
	_, err = x.SearchPerson(ctx, "gal", victim, victimVecs[0])
	wantErr(t, "verify a deleted person", err, index.ErrNotFound)
	l, err := x.List(ctx, "gal", index.ListOptions{Person: victim})
	if err != nil || len(l) != 0 {
		t.Fatalf("list of deleted person: %v, %v", l, err)
	}
	all, err := x.List(ctx, "gal", index.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range all {
		if info.Person == victim {
			t.Fatalf("deleted person listed: %+v", info)
		}
	}
	if n, err := x.DeletePerson(ctx, "gal", victim); err != nil || n != 0 {
		t.Fatalf("deleting again: %d, %v", n, err)
	}
	// Everyone else is intact.
	for _, tt := range g.templates {
		if tt.Person == victim {
			continue
		}
		got, err := x.SearchPerson(ctx, "gal", tt.Person, tt.Vector)
		if err != nil || got.Distance > 1e-5 {
			t.Fatalf("person %s after another's deletion: %+v, %v", tt.Person, got, err)
		}
	}
}

func testErasePerson(t *testing.T, x index.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(15, 15))
	a := makeGallery(r, "model-a", 16, 10, 2, nil)
	b := makeGallery(r, "model-b", 24, 10, 3, nil)
	load(t, x, a)
	load(t, x, b)
	n, err := x.ErasePerson(ctx, "p-0004")
	if err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Fatalf("erased %d templates, want 2+3", n)
	}
	for _, coll := range []string{"model-a", "model-b"} {
		l, err := x.List(ctx, coll, index.ListOptions{Person: "p-0004"})
		if err != nil || len(l) != 0 {
			t.Fatalf("%s after erasure: %v, %v", coll, l, err)
		}
	}
	if count(t, x, "model-a") != 18 || count(t, x, "model-b") != 27 {
		t.Fatalf("counts after erasure: %d, %d", count(t, x, "model-a"), count(t, x, "model-b"))
	}
}

func testDeleteTemplates(t *testing.T, x index.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(16, 16))
	g := makeGallery(r, "gal", 8, 5, 2, nil)
	load(t, x, g)
	n, err := x.DeleteTemplates(ctx, "gal", []string{"t-0001-0", "t-0002-1", "not-there"})
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("deleted %d, want 2", n)
	}
	if c := count(t, x, "gal"); c != 8 {
		t.Fatalf("count %d, want 8", c)
	}
	l, err := x.List(ctx, "gal", index.ListOptions{Person: "p-0001"})
	if err != nil || len(l) != 1 || l[0].ID != "t-0001-1" {
		t.Fatalf("p-0001 after deleting one template: %v, %v", l, err)
	}
	_, err = x.DeleteTemplates(ctx, "gal", []string{"bad id"})
	wantErr(t, "bad id", err, index.ErrInvalidID)
}

func testAliases(t *testing.T, x index.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(17, 17))
	v1 := makeGallery(r, "model-v1", 16, 10, 1, nil)
	v2 := makeGallery(r, "model-v2", 32, 10, 1, nil)
	load(t, x, v1)
	load(t, x, v2)
	_, err := x.ResolveAlias(ctx, "active")
	wantErr(t, "resolve before creation", err, index.ErrNotFound)
	if err := x.SwitchAlias(ctx, "active", "model-v1"); err != nil {
		t.Fatal(err)
	}
	if got, err := x.ResolveAlias(ctx, "active"); err != nil || got != "model-v1" {
		t.Fatalf("resolve: %q, %v", got, err)
	}
	res := search(t, x, "active", v1.templates[3].Vector, index.SearchOptions{K: 1})
	if res.Hits[0].ID != v1.templates[3].ID {
		t.Fatalf("search through alias: %+v", res.Hits)
	}
	if n := count(t, x, "active"); n != 10 {
		t.Fatalf("count through alias %d", n)
	}
	wantErr(t, "drop an aliased collection", x.DropCollection(ctx, "model-v1"), index.ErrInUse)
	wantErr(t, "alias named like a collection", x.SwitchAlias(ctx, "model-v2", "model-v1"), index.ErrDuplicate)
	wantErr(t, "invalid alias name", x.SwitchAlias(ctx, "Bad Alias", "model-v1"), index.ErrInvalidName)
	// Roll out: switch to the new space; a query of the old dimension is now wrong.
	if err := x.SwitchAlias(ctx, "active", "model-v2"); err != nil {
		t.Fatal(err)
	}
	res = search(t, x, "active", v2.templates[5].Vector, index.SearchOptions{K: 1})
	if res.Hits[0].ID != v2.templates[5].ID {
		t.Fatalf("search after switch: %+v", res.Hits)
	}
	_, err = x.Search(ctx, "active", v1.templates[0].Vector, index.SearchOptions{K: 1})
	wantErr(t, "old model's query after switch", err, index.ErrWrongDimension)
	if err := x.DropCollection(ctx, "model-v1"); err != nil {
		t.Fatalf("drop the retired collection: %v", err)
	}
	if err := x.DropAlias(ctx, "active"); err != nil {
		t.Fatal(err)
	}
	_, err = x.ResolveAlias(ctx, "active")
	wantErr(t, "resolve after drop", err, index.ErrNotFound)
	wantErr(t, "drop missing alias", x.DropAlias(ctx, "active"), index.ErrNotFound)
	if n := count(t, x, "model-v2"); n != 10 {
		t.Fatalf("dropping the alias changed its collection: %d", n)
	}
}

func testCancelled(t *testing.T, x index.Index) {
	r := rand.New(rand.NewPCG(18, 18))
	g := makeGallery(r, "gal", 8, 5, 1, nil)
	load(t, x, g)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := x.Search(ctx, "gal", randUnit(r, 8), index.SearchOptions{K: 1})
	wantErr(t, "search with a cancelled context", err, context.Canceled)
	err = x.Upsert(ctx, "gal", []index.Template{{TemplateInfo: index.TemplateInfo{ID: "late", Person: "p"}, Vector: randUnit(r, 8)}})
	wantErr(t, "upsert with a cancelled context", err, context.Canceled)
	if n := count(t, x, "gal"); n != 5 {
		t.Fatalf("cancelled upsert applied: count %d", n)
	}
}

func testConcurrent(t *testing.T, x index.Index) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(19, 19))
	g := makeGallery(r, "gal", 16, 40, 2, nil)
	load(t, x, g)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rr := rand.New(rand.NewPCG(uint64(w), 99))
			for i := 0; i < 20; i++ {
				if w%2 == 0 {
					id := fmt.Sprintf("w%d-%d", w, i)
					if err := x.Upsert(ctx, "gal", []index.Template{{TemplateInfo: index.TemplateInfo{ID: id, Person: "pw"}, Vector: randUnit(rr, 16)}}); err != nil {
						errs <- err
						return
					}
				} else if _, err := x.Search(ctx, "gal", randUnit(rr, 16), index.SearchOptions{K: 3}); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := count(t, x, "gal"); n != 80+40 {
		t.Fatalf("count %d after concurrent upserts, want 120", n)
	}
}
