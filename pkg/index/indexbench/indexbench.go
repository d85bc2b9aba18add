// Package indexbench measures the embedded gallery index: single-query
// latency, batched throughput, memory and recall, each set against the
// memory-bandwidth limit of the machine it runs on.
//
// Run returns a Report that marshals to JSON; `facegate bench index` and
// cmd/indexbench print it. The Go benchmarks in this package
// (go test -bench) measure the same operations.
package indexbench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/facegate/facegate/pkg/hostinfo"
	"github.com/facegate/facegate/pkg/index"
	"github.com/facegate/facegate/pkg/index/embedded"
)

// Mode is one way of running the embedded index.
type Mode struct {
	Name      string             `json:"name"`
	Precision embedded.Precision `json:"-"`
	Rerank    int                `json:"rerank"`
}

// Modes compared by default: exact float32; int8 with bound-based re-rank
// (exact results); int8 re-ranking a fixed 32 candidates (approximate).
var defaultModes = []Mode{
	{Name: "float32", Precision: embedded.Float32},
	{Name: "int8-exact", Precision: embedded.Int8},
	{Name: "int8-rerank32", Precision: embedded.Int8, Rerank: 32},
}

// DefaultModes returns the modes Run compares when Config.Modes is empty.
func DefaultModes() []Mode { return append([]Mode(nil), defaultModes...) }

// Config shapes a run. Zero fields take the defaults in brackets.
type Config struct {
	Sizes         []int  // gallery sizes [10000 100000 1000000]
	Dim           int    // [128]
	Modes         []Mode // [DefaultModes]
	SingleQueries int    // single queries timed per case [200]
	BatchSize     int    // queries per SearchBatch [256]
	Batches       int    // batches timed per case [4]
	RecallQueries int    // queries for recall@1 against float32 [1000]
	K             int    // [1]
	Seed          uint64 // [1]
	// BandwidthBytes is the buffer the bandwidth probe reads [1 GiB].
	BandwidthBytes int64
	// Progress, when set, receives a line per step.
	Progress func(string) `json:"-"`
	// OnCase, when set, receives each case as soon as it is measured.
	OnCase func(Case) `json:"-"`
}

func (c Config) withDefaults() Config {
	if len(c.Sizes) == 0 {
		c.Sizes = []int{10000, 100000, 1000000}
	}
	if c.Dim == 0 {
		c.Dim = 128
	}
	if len(c.Modes) == 0 {
		c.Modes = DefaultModes()
	}
	if c.SingleQueries == 0 {
		c.SingleQueries = 200
	}
	if c.BatchSize == 0 {
		c.BatchSize = 256
	}
	if c.Batches == 0 {
		c.Batches = 4
	}
	if c.RecallQueries == 0 {
		c.RecallQueries = 1000
	}
	if c.K == 0 {
		c.K = 1
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.BandwidthBytes == 0 {
		c.BandwidthBytes = 1 << 30
	}
	return c
}

// Report is the result of Run.
type Report struct {
	Kernel     string    `json:"kernel"` // scan kernels: "go" or "simd-avx2"
	GOMAXPROCS int       `json:"gomaxprocs"`
	GoVersion  string    `json:"goVersion"`
	Dim        int       `json:"dim"`
	K          int       `json:"k"`
	Bandwidth  Bandwidth `json:"bandwidth"`
	// LoadAverage at the start and end of the run: other work on the
	// machine inflates wall-clock figures.
	LoadAverageStart string `json:"loadAverageStart"`
	LoadAverageEnd   string `json:"loadAverageEnd"`
	Cases            []Case `json:"cases"`
	Note             string `json:"note"`
}

// Bandwidth is the measured streaming read bandwidth.
type Bandwidth struct {
	// OneCoreGBps is one thread's rate by its CPU time (by the wall clock
	// where CPU time is unavailable); OneCoreWallGBps by the wall clock.
	OneCoreGBps     float64 `json:"oneCoreGBps"`
	OneCoreWallGBps float64 `json:"oneCoreWallGBps"`
	AllCoresGBps    float64 `json:"allCoresGBps"`
	BufferBytes     int64   `json:"bufferBytes"`
}

// Case is one gallery size in one mode.
type Case struct {
	Size int    `json:"size"`
	Mode string `json:"mode"`

	BuildSeconds     float64 `json:"buildSeconds"`
	MemoryBytes      int64   `json:"memoryBytes"`      // the index's own estimate
	HeapGrowthBytes  int64   `json:"heapGrowthBytes"`  // Go heap growth while building
	BytesPerTemplate float64 `json:"bytesPerTemplate"` // MemoryBytes / Size

	// Single queries on one core (Shards=1) and on every core.
	OneCore  Latency `json:"oneCore"`
	AllCores Latency `json:"allCores"`

	// Batched queries (SearchBatch of BatchSize) on every core, by the
	// wall clock, and per second of the process's CPU time (multiply by the
	// number of cores for an idle machine's throughput).
	BatchQPS                 float64 `json:"batchQPS"`
	BatchQueriesPerCPUSecond float64 `json:"batchQueriesPerCPUSecond"`

	// BytesPerQuery is what one single query reads from memory.
	BytesPerQuery int64 `json:"bytesPerQuery"`
	// BoundOneCoreMs is BytesPerQuery over one core's bandwidth: no
	// single-core scan can be faster. RatioOneCore = p50 / bound.
	BoundOneCoreMs float64 `json:"boundOneCoreMs"`
	RatioOneCore   float64 `json:"ratioOneCore"`
	// CPURatioOneCore is the same ratio in CPU time.
	CPURatioOneCore float64 `json:"cpuRatioOneCore,omitempty"`
	// BoundAllCoresMs and RatioAllCores: the same on every core.
	BoundAllCoresMs float64 `json:"boundAllCoresMs"`
	RatioAllCores   float64 `json:"ratioAllCores"`
	// BatchBoundQPS: a batch reads the gallery once per block pass, so the
	// bandwidth limit on queries/s is BatchSize / (gallery bytes / bandwidth).
	BatchBoundQPS float64 `json:"batchBoundQPS"`

	// RecallAt1 is the fraction of queries whose nearest template equals
	// float32 exact search's; RerankedPerQuery is the float32 re-rank work.
	RecallAt1        float64 `json:"recallAt1"`
	RecallQueries    int     `json:"recallQueries"`
	RerankedPerQuery float64 `json:"rerankedPerQuery"`
}

// Latency summarises single-query times.
type Latency struct {
	P50Ms  float64 `json:"p50Ms"`
	P99Ms  float64 `json:"p99Ms"`
	MeanMs float64 `json:"meanMs"`
	Shards int     `json:"shards"`
	// One core only: the searching thread's CPU time per query, which
	// excludes time spent waiting for a core on a busy machine.
	CPUP50Ms  float64 `json:"cpuP50Ms,omitempty"`
	CPUP99Ms  float64 `json:"cpuP99Ms,omitempty"`
	CPUMeanMs float64 `json:"cpuMeanMs,omitempty"`
}

// RandomUnit fills n unit vectors of dimension dim from a seeded generator.
// Random vectors are a harder case for quantised search than face
// encodings: nothing stands out, the nearest and the runner-up are close.
func RandomUnit(seed uint64, n, dim int) [][]float32 {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	flat := make([]float32, n*dim)
	out := make([][]float32, n)
	for i := range out {
		v := flat[i*dim : (i+1)*dim : (i+1)*dim]
		var ss float64
		for j := range v {
			x := r.NormFloat64()
			v[j] = float32(x)
			ss += x * x
		}
		inv := 1 / math.Sqrt(ss)
		for j := range v {
			v[j] = float32(float64(v[j]) * inv)
		}
		out[i] = v
	}
	return out
}

// Build makes an embedded index of the given vectors in one collection
// named "bench", templates t<i> of persons p<i/2>.
func Build(ctx context.Context, opts embedded.Options, vecs [][]float32) (*embedded.Index, error) {
	x, err := embedded.New(opts)
	if err != nil {
		return nil, err
	}
	if len(vecs) == 0 {
		return x, nil
	}
	if err := x.CreateCollection(ctx, index.Collection{Name: "bench", Dim: len(vecs[0])}); err != nil {
		return nil, err
	}
	const batch = 8192
	ts := make([]index.Template, 0, batch)
	for i, v := range vecs {
		ts = append(ts, index.Template{TemplateInfo: index.TemplateInfo{ID: fmt.Sprintf("t%07d", i), Person: fmt.Sprintf("p%07d", i/2)}, Vector: v})
		if len(ts) == batch || i == len(vecs)-1 {
			if err := x.Upsert(ctx, "bench", ts); err != nil {
				return nil, err
			}
			ts = ts[:0]
		}
	}
	return x, nil
}

// MeasureBandwidth reads a buffer of the given size with the given number
// of goroutines and returns the best of several passes in bytes/s, by the
// wall clock. With one goroutine it also returns the rate by the reading
// thread's CPU time (0 where that clock is unavailable), which a busy
// machine disturbs less.
func MeasureBandwidth(size int64, threads int) (wall, cpu float64) {
	words := make([]uint64, size/8)
	for i := range words {
		words[i] = uint64(i)
	}
	sums := make([]uint64, threads)
	for pass := 0; pass < 5; pass++ {
		start := time.Now()
		var wg sync.WaitGroup
		per := (len(words) + threads - 1) / threads
		var cpuNs int64
		for t := 0; t < threads; t++ {
			lo, hi := t*per, min((t+1)*per, len(words))
			wg.Add(1)
			go func(t int) {
				defer wg.Done()
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				c0, ok0 := threadCPU()
				sums[t] += sumWords(words[lo:hi])
				if c1, ok1 := threadCPU(); ok0 && ok1 && threads == 1 {
					cpuNs = c1 - c0
				}
			}(t)
		}
		wg.Wait()
		el := time.Since(start).Seconds()
		wall = max(wall, float64(len(words)*8)/el)
		if cpuNs > 0 {
			cpu = max(cpu, float64(len(words)*8)/(float64(cpuNs)/1e9))
		}
	}
	runtime.KeepAlive(sums)
	return wall, cpu
}

func sumWords(w []uint64) uint64 {
	var s0, s1, s2, s3 uint64
	i := 0
	for ; i+8 <= len(w); i += 8 {
		ww := w[i : i+8 : i+8]
		s0 += ww[0] + ww[4]
		s1 += ww[1] + ww[5]
		s2 += ww[2] + ww[6]
		s3 += ww[3] + ww[7]
	}
	for ; i < len(w); i++ {
		s0 += w[i]
	}
	return s0 + s1 + s2 + s3
}

// Run measures every size in every mode.
func Run(ctx context.Context, cfg Config) (Report, error) {
	cfg = cfg.withDefaults()
	say := func(format string, args ...any) {
		if cfg.Progress != nil {
			cfg.Progress(fmt.Sprintf(format, args...))
		}
	}
	procs := runtime.GOMAXPROCS(0)
	rep := Report{
		Kernel: embedded.Kernel, GOMAXPROCS: procs, GoVersion: runtime.Version(), Dim: cfg.Dim, K: cfg.K,
		Note: "Gallery and queries are random unit vectors: a harder case for int8 re-ranking than face encodings, " +
			"where a genuine probe's nearest template stands out from the rest. Latencies are wall-clock on a machine that may be shared.",
	}
	rep.LoadAverageStart = hostinfo.LoadAverage()
	say("bandwidth: reading %d MiB", cfg.BandwidthBytes>>20)
	oneWall, oneCPU := MeasureBandwidth(cfg.BandwidthBytes, 1)
	allWall, _ := MeasureBandwidth(cfg.BandwidthBytes, procs)
	rep.Bandwidth = Bandwidth{OneCoreGBps: oneCPU / 1e9, OneCoreWallGBps: oneWall / 1e9, AllCoresGBps: allWall / 1e9, BufferBytes: cfg.BandwidthBytes}
	if oneCPU == 0 {
		rep.Bandwidth.OneCoreGBps = rep.Bandwidth.OneCoreWallGBps
	}
	runtime.GC()
	say("bandwidth: one core %.1f GB/s, %d cores %.1f GB/s", rep.Bandwidth.OneCoreGBps, procs, rep.Bandwidth.AllCoresGBps)
	for _, n := range cfg.Sizes {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		say("size %d: generating vectors", n)
		gallery := RandomUnit(cfg.Seed, n, cfg.Dim)
		nq := max(cfg.SingleQueries, cfg.BatchSize*cfg.Batches, cfg.RecallQueries)
		queries := RandomUnit(cfg.Seed+1000, nq, cfg.Dim)
		var exactTop []string
		for _, m := range cfg.Modes {
			c, top, err := runCase(ctx, cfg, rep.Bandwidth, m, gallery, queries, exactTop, say)
			if err != nil {
				return rep, fmt.Errorf("indexbench: size %d mode %s: %w", n, m.Name, err)
			}
			if m.Precision == embedded.Float32 && m.Rerank == 0 {
				exactTop = top
				c.RecallAt1 = 1
			}
			rep.Cases = append(rep.Cases, c)
			if cfg.OnCase != nil {
				cfg.OnCase(c)
			}
		}
		gallery, queries = nil, nil
		runtime.GC()
	}
	rep.LoadAverageEnd = hostinfo.LoadAverage()
	return rep, nil
}

// runCase measures one mode on one gallery. It returns the top-1 ids of the
// recall queries; when exactTop is given (the float32 answers) it computes
// recall against them.
func runCase(ctx context.Context, cfg Config, bw Bandwidth, m Mode, gallery, queries [][]float32, exactTop []string, say func(string, ...any)) (Case, []string, error) {
	n := len(gallery)
	c := Case{Size: n, Mode: m.Name}
	say("size %d %s: building", n, m.Name)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	x, err := Build(ctx, embedded.Options{Precision: m.Precision, Rerank: m.Rerank}, gallery)
	if err != nil {
		return c, nil, err
	}
	defer x.Close()
	c.BuildSeconds = time.Since(start).Seconds()
	runtime.GC()
	runtime.ReadMemStats(&after)
	c.MemoryBytes = x.MemoryBytes()
	c.HeapGrowthBytes = int64(after.HeapAlloc) - int64(before.HeapAlloc)
	c.BytesPerTemplate = float64(c.MemoryBytes) / float64(n)
	opts := index.SearchOptions{K: cfg.K}

	// Recall queries double as warm-up.
	say("size %d %s: %d recall queries", n, m.Name, cfg.RecallQueries)
	before0 := x.Stats()
	top := make([]string, 0, cfg.RecallQueries)
	for lo := 0; lo < cfg.RecallQueries; lo += cfg.BatchSize {
		rs, err := x.SearchBatch(ctx, "bench", queries[lo:min(lo+cfg.BatchSize, cfg.RecallQueries)], opts)
		if err != nil {
			return c, nil, err
		}
		for _, r := range rs {
			top = append(top, r.Hits[0].ID)
		}
	}
	c.RecallQueries = cfg.RecallQueries
	c.RerankedPerQuery = float64(x.Stats().Reranked-before0.Reranked) / float64(cfg.RecallQueries)
	if exactTop != nil {
		hit := 0
		for i, id := range top {
			if id == exactTop[i] {
				hit++
			}
		}
		c.RecallAt1 = float64(hit) / float64(len(top))
	}

	// Single queries on every core here; on one core below, on an index
	// built the same way with Shards=1 (shards are fixed per index).
	say("size %d %s: %d single queries, all cores", n, m.Name, cfg.SingleQueries)
	if c.AllCores, err = latency(ctx, x, queries[:cfg.SingleQueries], opts); err != nil {
		return c, nil, err
	}
	c.AllCores.Shards = x.Options().Shards

	say("size %d %s: %d batches of %d", n, m.Name, cfg.Batches, cfg.BatchSize)
	start = time.Now()
	p0, okp0 := processCPU()
	for b := 0; b < cfg.Batches; b++ {
		if _, err := x.SearchBatch(ctx, "bench", queries[b*cfg.BatchSize:(b+1)*cfg.BatchSize], opts); err != nil {
			return c, nil, err
		}
	}
	c.BatchQPS = float64(cfg.Batches*cfg.BatchSize) / time.Since(start).Seconds()
	if p1, okp1 := processCPU(); okp0 && okp1 && p1 > p0 {
		c.BatchQueriesPerCPUSecond = float64(cfg.Batches*cfg.BatchSize) / (float64(p1-p0) / 1e9)
	}
	x.Close()

	say("size %d %s: %d single queries, one core", n, m.Name, cfg.SingleQueries)
	one, err := Build(ctx, embedded.Options{Precision: m.Precision, Rerank: m.Rerank, Shards: 1}, gallery)
	if err != nil {
		return c, nil, err
	}
	defer one.Close()
	if _, err := latency(ctx, one, queries[:min(20, cfg.SingleQueries)], opts); err != nil { // warm-up
		return c, nil, err
	}
	if c.OneCore, err = latency(ctx, one, queries[:cfg.SingleQueries], opts); err != nil {
		return c, nil, err
	}
	c.OneCore.Shards = 1
	one.Close()

	c.BytesPerQuery = bytesPerQuery(m, n, cfg.Dim, c.RerankedPerQuery)
	c.BoundOneCoreMs = float64(c.BytesPerQuery) / (bw.OneCoreGBps * 1e9) * 1e3
	c.RatioOneCore = c.OneCore.P50Ms / c.BoundOneCoreMs
	if c.OneCore.CPUP50Ms > 0 {
		c.CPURatioOneCore = c.OneCore.CPUP50Ms / c.BoundOneCoreMs
	}
	c.BoundAllCoresMs = float64(c.BytesPerQuery) / (bw.AllCoresGBps * 1e9) * 1e3
	c.RatioAllCores = c.AllCores.P50Ms / c.BoundAllCoresMs
	scan := scanBytes(m, n, cfg.Dim)
	c.BatchBoundQPS = float64(cfg.BatchSize) / (float64(scan) / (bw.AllCoresGBps * 1e9))
	return c, top, nil
}

// scanBytes is what one pass over the gallery reads: float32 vectors, or
// int8 codes plus the per-row scale (and, for the bound, two error terms).
func scanBytes(m Mode, n, dim int) int64 {
	if m.Precision == embedded.Float32 {
		return int64(n) * int64(dim) * 4
	}
	perRow := int64(dim) + 4
	if m.Rerank == 0 {
		perRow += 8
	}
	return int64(n) * perRow
}

func bytesPerQuery(m Mode, n, dim int, reranked float64) int64 {
	return scanBytes(m, n, dim) + int64(reranked*float64(dim)*4)
}

func latency(ctx context.Context, x *embedded.Index, qs [][]float32, opts index.SearchOptions) (Latency, error) {
	// One shard runs on the calling goroutine: pin it to its thread so the
	// thread's CPU clock measures exactly the searches.
	oneThread := x.Options().Shards == 1
	if oneThread {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	ds := make([]float64, len(qs))
	cpu := make([]float64, 0, len(qs))
	var sum, cpuSum float64
	for i, q := range qs {
		c0, ok0 := threadCPU()
		start := time.Now()
		if _, err := x.Search(ctx, "bench", q, opts); err != nil {
			return Latency{}, err
		}
		ds[i] = float64(time.Since(start).Nanoseconds()) / 1e6
		sum += ds[i]
		if c1, ok1 := threadCPU(); oneThread && ok0 && ok1 {
			cpu = append(cpu, float64(c1-c0)/1e6)
			cpuSum += cpu[len(cpu)-1]
		}
	}
	sort.Float64s(ds)
	l := Latency{P50Ms: quantile(ds, 0.5), P99Ms: quantile(ds, 0.99), MeanMs: sum / float64(len(ds))}
	if len(cpu) == len(qs) {
		sort.Float64s(cpu)
		l.CPUP50Ms, l.CPUP99Ms, l.CPUMeanMs = quantile(cpu, 0.5), quantile(cpu, 0.99), cpuSum/float64(len(cpu))
	}
	return l, nil
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Table renders the report for people.
func (r Report) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "kernel %s, GOMAXPROCS %d, %s, dim %d, k %d\n", r.Kernel, r.GOMAXPROCS, r.GoVersion, r.Dim, r.K)
	fmt.Fprintf(&b, "read bandwidth: one core %.1f GB/s by CPU time (%.1f by wall clock), all cores %.1f GB/s (%d MiB buffer)\n",
		r.Bandwidth.OneCoreGBps, r.Bandwidth.OneCoreWallGBps, r.Bandwidth.AllCoresGBps, r.Bandwidth.BufferBytes>>20)
	fmt.Fprintf(&b, "load average: %s at start, %s at end\n\n", r.LoadAverageStart, r.LoadAverageEnd)
	fmt.Fprintf(&b, "%-8s %-13s %8s %8s %8s %8s %8s %7s %8s %8s %7s %10s %9s %9s %7s %7s %8s %8s\n",
		"size", "mode", "1c p50", "1c p99", "1c cpu50", "1c cpu99", "1c bound", "cpu/bnd",
		"Nc p50", "Nc p99", "Nc/bnd", "batch q/s", "q/cpu-s", "bound q/s", "MiB", "B/tmpl", "recall@1", "rerank/q")
	for _, c := range r.Cases {
		fmt.Fprintf(&b, "%-8d %-13s %8.3f %8.3f %8.3f %8.3f %8.3f %7.2f %8.3f %8.3f %7.2f %10.0f %9.0f %9.0f %7.1f %7.1f %8.4f %8.1f\n",
			c.Size, c.Mode, c.OneCore.P50Ms, c.OneCore.P99Ms, c.OneCore.CPUP50Ms, c.OneCore.CPUP99Ms, c.BoundOneCoreMs, c.CPURatioOneCore,
			c.AllCores.P50Ms, c.AllCores.P99Ms, c.RatioAllCores, c.BatchQPS, c.BatchQueriesPerCPUSecond, c.BatchBoundQPS,
			float64(c.MemoryBytes)/(1<<20), c.BytesPerTemplate, c.RecallAt1, c.RerankedPerQuery)
	}
	fmt.Fprintf(&b, "\ntimes in ms; 1c = one core (Shards=1), Nc = all cores; cpu = the search thread's CPU time;\n"+
		"bound = bytes read per query / one core's read bandwidth; q/cpu-s = batched queries per CPU-second;\n"+
		"bound q/s = batch size / (gallery bytes / all cores' bandwidth)\n")
	fmt.Fprintf(&b, "\n%s\n", r.Note)
	return b.String()
}
