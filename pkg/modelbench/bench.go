package modelbench

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/onnx/onnxbuild"
)

// Peak is the convolution throughput ONNX Runtime reaches on this machine on
// one thread: the practical ceiling a model's speed is compared with.
type Peak struct {
	GFLOPS float64 `json:"gflops_per_s"`
	Layer  string  `json:"layer"`
	FLOPs  int64   `json:"flops"`
	BestMS float64 `json:"best_ms"`
}

// MeasurePeak times a large 3x3 convolution (the shape that dominates face
// networks) on one intra-op thread and keeps the best of several runs, since
// on a shared machine noise only ever makes a run slower.
func MeasurePeak(ctx context.Context, rt *inference.Runtime, runs int) (Peak, error) {
	const c, hw, k = 128, 56, 3
	g := onnxbuild.New("peak")
	x, err := g.Input("x", 1, c, hw, hw)
	if err != nil {
		return Peak{}, err
	}
	w := make([]float32, c*c*k*k)
	for i := range w {
		w[i] = float32((i%17)-8) / 64
	}
	wn, err := g.Float("w", []int64{c, c, k, k}, w)
	if err != nil {
		return Peak{}, err
	}
	if err := g.NodeOut("Conv", []string{x, wn}, []string{"y"}, onnxbuild.Ints("pads", 1, 1, 1, 1)); err != nil {
		return Peak{}, err
	}
	g.Output("y", 1, c, hw, hw)
	data, err := onnxbuild.Marshal(g.Model("facegate-modelbench", nil))
	if err != nil {
		return Peak{}, err
	}
	sess, err := rt.Load(ctx, data)
	if err != nil {
		return Peak{}, fmt.Errorf("modelbench: peak layer: %w", err)
	}
	defer sess.Close()
	in := inference.Tensor{Shape: []int64{1, c, hw, hw}, Data: make([]float32, c*hw*hw)}
	for i := range in.Data {
		in.Data[i] = float32(i%255) / 255
	}
	best := math.Inf(1)
	for i := 0; i < runs+1; i++ {
		start := time.Now()
		if _, err := sess.Run(ctx, in); err != nil {
			return Peak{}, fmt.Errorf("modelbench: peak layer: %w", err)
		}
		if i > 0 { // the first run warms caches and ORT's kernels
			best = math.Min(best, time.Since(start).Seconds())
		}
	}
	flops := int64(2 * c * c * k * k * hw * hw)
	return Peak{GFLOPS: float64(flops) / best / 1e9, Layer: fmt.Sprintf("Conv 3x3 %d->%d on %dx%d", c, c, hw, hw), FLOPs: flops, BestMS: best * 1e3}, nil
}

// Timing is one model's speed in one configuration.
type Timing struct {
	Workers     int     `json:"workers"` // goroutines calling Run concurrently, one intra-op thread each
	Images      int     `json:"images"`
	MSPerImage  float64 `json:"ms_per_image"` // wall time / images (throughput view)
	P50MS       float64 `json:"p50_ms"`       // latency of one call
	P99MS       float64 `json:"p99_ms"`
	ImagesPerS  float64 `json:"images_per_s"`
	GFLOPS      float64 `json:"gflops_per_s"`
	PeakRatio   float64 `json:"peak_ratio,omitempty"`    // achieved / (peak x workers)
	FLOPsOfPeak float64 `json:"time_vs_limit,omitempty"` // measured time / (FLOPs / peak): 1.0 is the limit
}

// Time runs sess on batch-1 inputs with the given number of concurrent
// workers for about dur and reports throughput and latency.
func Time(ctx context.Context, sess *inference.Session, flops int64, peak Peak, workers int, dur time.Duration) (Timing, error) {
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	info := sess.Inputs()[0]
	shape := append([]int64(nil), info.Shape...)
	for i := range shape {
		if shape[i] < 0 {
			shape[i] = 1
		}
	}
	in := inference.Tensor{Shape: shape}
	in.Data = make([]float32, in.Len())
	for i := range in.Data {
		in.Data[i] = float32((i * 7919) % 256) // deterministic pixel-like values
	}
	if _, err := sess.Run(ctx, in); err != nil { // warm-up
		return Timing{}, err
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		lat      []float64
		firstErr error
		count    atomic.Int64
	)
	deadline := time.Now().Add(dur)
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []float64
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				if _, err := sess.Run(ctx, in); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t0).Seconds()*1e3)
				count.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	wall := time.Since(start).Seconds()
	if firstErr != nil {
		return Timing{}, firstErr
	}
	n := int(count.Load())
	if n == 0 {
		return Timing{}, fmt.Errorf("modelbench: no run finished in %v", dur)
	}
	slices.Sort(lat)
	t := Timing{
		Workers:    workers,
		Images:     n,
		MSPerImage: wall * 1e3 / float64(n),
		P50MS:      lat[len(lat)/2],
		P99MS:      lat[min(len(lat)-1, len(lat)*99/100)],
		ImagesPerS: float64(n) / wall,
	}
	t.GFLOPS = float64(flops) * t.ImagesPerS / 1e9
	if peak.GFLOPS > 0 {
		t.PeakRatio = t.GFLOPS / (peak.GFLOPS * float64(workers))
		limitMS := float64(flops) / (peak.GFLOPS * 1e9) * 1e3 / float64(workers)
		t.FLOPsOfPeak = t.MSPerImage / limitMS
	}
	return t, nil
}
