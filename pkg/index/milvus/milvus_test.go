package milvus

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/facegate/facegate/pkg/index"
	"github.com/facegate/facegate/pkg/index/indextest"
	"github.com/facegate/facegate/pkg/index/milvus/milvustest"
)

// standIn starts the stand-in (not Milvus: see package milvustest) and a
// backend connected to it through the SDK over loopback gRPC.
func standIn(t *testing.T, cfg Config) (*Backend, *milvustest.Server) {
	t.Helper()
	srv, err := milvustest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cfg.Address = srv.Addr()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, srv
}

func TestContractAgainstStandIn(t *testing.T) {
	for _, ic := range []IndexConfig{{Type: "HNSW"}, {Type: "IVF_FLAT", NList: 16, NProbe: 4}, {Type: "IVF_SQ8"}, {Type: "FLAT"}} {
		t.Run(ic.Type, func(t *testing.T) {
			indextest.Run(t, func(t *testing.T) index.Index {
				b, _ := standIn(t, Config{Index: ic})
				return b
			})
		})
	}
}

func TestConfigRejected(t *testing.T) {
	for _, c := range []Config{
		{},
		{Address: "x:1", Metric: "COSINE"},
		{Address: "x:1", Consistency: "Sometimes"},
		{Address: "x:1", Index: IndexConfig{Type: "DISKANN"}},
		{Address: "x:1", Prefix: "bad-prefix"},
	} {
		if _, err := New(context.Background(), c); !errors.Is(err, index.ErrInvalidArgument) {
			t.Errorf("New(%+v): %v, want ErrInvalidArgument", c, err)
		}
	}
}

func unitVec(r *rand.Rand, dim int) []float32 {
	v := make([]float32, dim)
	var ss float64
	for i := range v {
		x := r.NormFloat64()
		v[i] = float32(x)
		ss += x * x
	}
	for i := range v {
		v[i] = float32(float64(v[i]) / math.Sqrt(ss))
	}
	return v
}

func vecBytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func enrol(t *testing.T, b *Backend, coll string, dim, persons, per int, r *rand.Rand) []index.Template {
	t.Helper()
	ctx := context.Background()
	if err := b.CreateCollection(ctx, index.Collection{Name: coll, Dim: dim}); err != nil {
		t.Fatal(err)
	}
	var ts []index.Template
	for p := 0; p < persons; p++ {
		for j := 0; j < per; j++ {
			v, _ := index.Normalize(dim, unitVec(r, dim)) // as the backend will send it
			ts = append(ts, index.Template{TemplateInfo: index.TemplateInfo{ID: fmt.Sprintf("t%d-%d", p, j), Person: fmt.Sprintf("p%d", p), Site: "hq"}, Vector: v})
		}
	}
	if err := b.Upsert(ctx, coll, ts); err != nil {
		t.Fatal(err)
	}
	return ts
}

// TestErasureCompacts: DeletePerson deletes by expression, flushes and
// compacts, so the stand-in's storage no longer holds the person's vectors.
// The control shows the storage check can fail: a delete without
// compaction hides the rows but leaves the vectors stored.
func TestErasureCompacts(t *testing.T) {
	ctx := context.Background()
	b, srv := standIn(t, Config{})
	r := rand.New(rand.NewPCG(1, 1))
	ts := enrol(t, b, "dlib-resnet34-128", 128, 20, 3, r)
	victim := ts[3*7 : 3*8] // p7's three templates

	// Control: tombstoned but not compacted.
	if err := b.c.Delete(ctx, "facegate_dlib_resnet34_128", "", `person == "p7"`); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.Count(ctx, "dlib-resnet34-128"); n != 57 {
		t.Fatalf("count after delete %d, want 57", n)
	}
	stored := srv.StoredBytes()
	for _, v := range victim {
		if !bytes.Contains(stored, vecBytes(v.Vector)) {
			t.Fatal("control failed: a deleted but uncompacted vector should still be stored")
		}
	}
	if srv.Tombstones("facegate_dlib_resnet34_128") != 3 {
		t.Fatalf("tombstones %d, want 3", srv.Tombstones("facegate_dlib_resnet34_128"))
	}
	// Re-enrol p7 and erase through the backend.
	if err := b.Upsert(ctx, "dlib-resnet34-128", victim); err != nil {
		t.Fatal(err)
	}
	n, err := b.DeletePerson(ctx, "dlib-resnet34-128", "p7")
	if err != nil || n != 3 {
		t.Fatalf("delete person: %d, %v", n, err)
	}
	stored = srv.StoredBytes()
	for _, v := range victim {
		if bytes.Contains(stored, vecBytes(v.Vector)) {
			t.Fatal("an erased vector is still stored after DeletePerson")
		}
		if bytes.Contains(stored, []byte(v.ID)) {
			t.Fatalf("erased template id %s is still stored", v.ID)
		}
	}
	if srv.Tombstones("facegate_dlib_resnet34_128") != 0 {
		t.Fatal("tombstones remain after compaction")
	}
	log := strings.Join(srv.Log(), "\n")
	for _, want := range []string{"Delete facegate_dlib_resnet34_128 3", "Flush facegate_dlib_resnet34_128", "ManualCompaction facegate_dlib_resnet34_128 3"} {
		if !strings.Contains(log, want) {
			t.Fatalf("log lacks %q:\n%s", want, log)
		}
	}
	if n, _ := b.Count(ctx, "dlib-resnet34-128"); n != 57 {
		t.Fatalf("count after erasure %d, want 57", n)
	}
}

// TestLayout: names, schema, index parameters and consistency reach Milvus
// as configured.
func TestLayout(t *testing.T) {
	ctx := context.Background()
	b, srv := standIn(t, Config{Index: IndexConfig{Type: "HNSW", M: 24, EfConstruction: 300, Ef: 80}, Consistency: "Bounded"})
	r := rand.New(rand.NewPCG(2, 2))
	enrol(t, b, "dlib-resnet34-v1", 16, 3, 1, r)
	enrol(t, b, "dlib-resnet34-v2", 16, 3, 1, r)
	if err := b.SwitchAlias(ctx, "dlib-resnet34", "dlib-resnet34-v1"); err != nil {
		t.Fatal(err)
	}
	if err := b.SwitchAlias(ctx, "dlib-resnet34", "dlib-resnet34-v2"); err != nil {
		t.Fatal(err)
	}
	log := strings.Join(srv.Log(), "\n")
	for _, want := range []string{
		"CreateCollection facegate_dlib_resnet34_v1",
		"CreateAlias facegate_dlib_resnet34 facegate_dlib_resnet34_v1",
		"AlterAlias facegate_dlib_resnet34 facegate_dlib_resnet34_v2",
	} {
		if !strings.Contains(log, want) {
			t.Fatalf("log lacks %q:\n%s", want, log)
		}
	}
	p := srv.IndexParams("facegate_dlib_resnet34_v1")
	if p["index_type"] != "HNSW" || p["metric_type"] != "L2" || !strings.Contains(p["params"], `"M":"24"`) || !strings.Contains(p["params"], `"efConstruction":"300"`) {
		t.Fatalf("index params %v", p)
	}
	if _, err := b.Search(ctx, "dlib-resnet34", unitVec(r, 16), index.SearchOptions{K: 2}); err != nil {
		t.Fatal(err)
	}
	coll, req := srv.ConsistencyLevels("facegate_dlib_resnet34_v2")
	if coll.String() != "Bounded" || len(req) == 0 || req[len(req)-1] != "Bounded" {
		t.Fatalf("consistency: collection %v, requests %v", coll, req)
	}
	// Default: Strong, so a fresh enrolment is found at once.
	b2, srv2 := standIn(t, Config{})
	enrol(t, b2, "m", 8, 2, 1, r)
	if _, err := b2.Count(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	coll, req = srv2.ConsistencyLevels("facegate_m")
	if coll.String() != "Strong" || req[len(req)-1] != "Strong" {
		t.Fatalf("default consistency: collection %v, requests %v", coll, req)
	}
}

// TestIPMetric: with the inner-product metric, ranking is the same and
// distances are converted (to within the precision IP allows).
func TestIPMetric(t *testing.T) {
	ctx := context.Background()
	l2, _ := standIn(t, Config{})
	ip, srv := standIn(t, Config{Metric: "IP"})
	r := rand.New(rand.NewPCG(3, 3))
	ts := enrol(t, l2, "gal", 32, 50, 2, r)
	if err := ip.CreateCollection(ctx, index.Collection{Name: "gal", Dim: 32}); err != nil {
		t.Fatal(err)
	}
	if err := ip.Upsert(ctx, "gal", ts); err != nil {
		t.Fatal(err)
	}
	if p := srv.IndexParams("facegate_gal"); p["metric_type"] != "IP" {
		t.Fatalf("metric %q", p["metric_type"])
	}
	for i := 0; i < 10; i++ {
		q := unitVec(r, 32)
		a, err := l2.Search(ctx, "gal", q, index.SearchOptions{K: 5})
		if err != nil {
			t.Fatal(err)
		}
		b, err := ip.Search(ctx, "gal", q, index.SearchOptions{K: 5})
		if err != nil {
			t.Fatal(err)
		}
		for j := range a.Hits {
			if a.Hits[j].ID != b.Hits[j].ID || math.Abs(float64(a.Hits[j].Distance-b.Hits[j].Distance)) > 1e-3 {
				t.Fatalf("query %d hit %d: L2 %+v, IP %+v", i, j, a.Hits[j], b.Hits[j])
			}
		}
	}
}

// TestRealMilvus runs the contract against a real Milvus when MILVUS_ADDR
// (host:port) is set. Each subtest uses its own name prefix and drops what
// it created.
func TestRealMilvus(t *testing.T) {
	addr := os.Getenv("MILVUS_ADDR")
	if addr == "" {
		t.Skip("MILVUS_ADDR is not set: no real Milvus to test against (the stand-in tests cover the protocol)")
	}
	n := 0
	indextest.Run(t, func(t *testing.T) index.Index {
		n++
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		b, err := New(ctx, Config{Address: addr, Prefix: fmt.Sprintf("fgtest_%d_%d_", time.Now().UnixNano()%1e9, n), Index: IndexConfig{Type: "FLAT"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cs, _ := b.Collections(ctx)
			for _, c := range cs {
				as, _ := b.aliasesOf(ctx, b.physical(c.Name))
				for _, a := range as {
					b.c.DropAlias(ctx, a)
				}
				b.c.DropCollection(ctx, b.physical(c.Name))
			}
			b.Close()
		})
		return b
	})
}
