package indexbench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"testing"

	"github.com/facegate/facegate/pkg/index"
	"github.com/facegate/facegate/pkg/index/embedded"
)

// TestRunSmall runs the harness end to end on small galleries and checks
// that the report is complete and self-consistent.
func TestRunSmall(t *testing.T) {
	rep, err := Run(context.Background(), Config{
		Sizes: []int{3000, 6000}, Dim: 32, SingleQueries: 20, BatchSize: 16, Batches: 2, RecallQueries: 50,
		BandwidthBytes: 64 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Bandwidth.OneCoreGBps <= 0 || rep.Bandwidth.AllCoresGBps <= 0 {
		t.Fatalf("bandwidth %+v", rep.Bandwidth)
	}
	if len(rep.Cases) != 2*len(DefaultModes()) {
		t.Fatalf("%d cases", len(rep.Cases))
	}
	for _, c := range rep.Cases {
		if c.OneCore.P50Ms <= 0 || c.OneCore.P99Ms < c.OneCore.P50Ms || c.AllCores.P50Ms <= 0 || c.BatchQPS <= 0 {
			t.Fatalf("%s/%d: timings %+v %+v %v", c.Mode, c.Size, c.OneCore, c.AllCores, c.BatchQPS)
		}
		if c.MemoryBytes < int64(c.Size*32*4) || c.HeapGrowthBytes <= 0 {
			t.Fatalf("%s/%d: memory %d, heap %d", c.Mode, c.Size, c.MemoryBytes, c.HeapGrowthBytes)
		}
		if c.BoundOneCoreMs <= 0 || math.Abs(c.RatioOneCore-c.OneCore.P50Ms/c.BoundOneCoreMs) > 1e-9 {
			t.Fatalf("%s/%d: bound %v ratio %v", c.Mode, c.Size, c.BoundOneCoreMs, c.RatioOneCore)
		}
		// The exact modes must agree with float32 on every query.
		if c.Mode != "int8-rerank32" && c.RecallAt1 != 1 {
			t.Fatalf("%s/%d: recall@1 %v for an exact mode", c.Mode, c.Size, c.RecallAt1)
		}
		if c.RecallAt1 < 0.9 || c.RecallQueries != 50 {
			t.Fatalf("%s/%d: recall@1 %v over %d", c.Mode, c.Size, c.RecallAt1, c.RecallQueries)
		}
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + rep.Table())
}

func TestQuantile(t *testing.T) {
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(i + 1)
	}
	if quantile(xs, 0.5) != 50 || quantile(xs, 0.99) != 99 || quantile(xs, 1) != 100 || quantile(xs[:1], 0.99) != 1 {
		t.Fatalf("quantiles %v %v %v", quantile(xs, 0.5), quantile(xs, 0.99), quantile(xs, 1))
	}
}

// Go benchmarks: go test ./pkg/index/indexbench -run X -bench . [-benchtime 50x]
// Sizes above 100k only with -bench 'Search/1M'.
func BenchmarkSearch(b *testing.B) {
	const dim = 128
	ctx := context.Background()
	for _, n := range []int{10000, 100000, 1000000} {
		name := fmt.Sprintf("%dk", n/1000)
		if n >= 1000000 {
			name = fmt.Sprintf("%dM", n/1000000)
		}
		b.Run(name, func(b *testing.B) {
			gallery := RandomUnit(1, n, dim)
			queries := RandomUnit(2, 512, dim)
			for _, m := range DefaultModes() {
				for _, shards := range []int{1, 0} {
					label := "allcores"
					if shards == 1 {
						label = "onecore"
					}
					b.Run(m.Name+"/single-"+label, func(b *testing.B) {
						x, err := Build(ctx, embedded.Options{Precision: m.Precision, Rerank: m.Rerank, Shards: shards}, gallery)
						if err != nil {
							b.Fatal(err)
						}
						defer x.Close()
						b.SetBytes(scanBytes(m, n, dim))
						b.ResetTimer()
						i := 0
						for b.Loop() {
							if _, err := x.Search(ctx, "bench", queries[i%len(queries)], index.SearchOptions{K: 1}); err != nil {
								b.Fatal(err)
							}
							i++
						}
					})
				}
				b.Run(m.Name+"/batch256", func(b *testing.B) {
					x, err := Build(ctx, embedded.Options{Precision: m.Precision, Rerank: m.Rerank}, gallery)
					if err != nil {
						b.Fatal(err)
					}
					defer x.Close()
					b.ResetTimer()
					for b.Loop() {
						if _, err := x.SearchBatch(ctx, "bench", queries[:256], index.SearchOptions{K: 1}); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(256*b.N)/b.Elapsed().Seconds(), "queries/s")
				})
			}
		})
	}
}
