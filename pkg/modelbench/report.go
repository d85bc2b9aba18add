package modelbench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/facegate/facegate/pkg/hostinfo"
	"github.com/facegate/facegate/pkg/inference"
)

// ModelReport is one model's arithmetic and speed.
type ModelReport struct {
	ID       string  `json:"id"`
	Profile  Profile `json:"profile"`
	GFLOP    float64 `json:"gflop_per_image"`
	OneCore  Timing  `json:"one_thread"`
	AllCores Timing  `json:"all_cores"`
}

// Report is the output of `facegate bench models`.
type Report struct {
	CPU        string        `json:"cpu"`
	Cores      int           `json:"cores"`
	ORTVersion string        `json:"onnxruntime"`
	Peak       Peak          `json:"peak_one_thread"`
	Models     []ModelReport `json:"models"`
}

// Model is one model to measure.
type Model struct {
	ID   string
	Path string
}

// Run measures the peak, then each model on one thread and on all cores.
func Run(ctx context.Context, rt *inference.Runtime, ms []Model, dur time.Duration, progress func(string)) (*Report, error) {
	if progress == nil {
		progress = func(string) {}
	}
	rep := &Report{CPU: hostinfo.CPUModel(), Cores: runtime.NumCPU(), ORTVersion: rt.Version()}
	progress("measuring the one-thread convolution peak")
	peak, err := MeasurePeak(ctx, rt, 8)
	if err != nil {
		return nil, err
	}
	rep.Peak = peak
	for _, m := range ms {
		data, err := os.ReadFile(m.Path)
		if err != nil {
			return nil, fmt.Errorf("modelbench: %s: %w", m.ID, err)
		}
		progress("counting FLOPs of " + m.ID)
		prof, err := CountFLOPs(ctx, rt, data)
		if err != nil {
			return nil, fmt.Errorf("modelbench: %s: %w", m.ID, err)
		}
		sess, err := rt.Load(ctx, data)
		if err != nil {
			return nil, fmt.Errorf("modelbench: %s: %w", m.ID, err)
		}
		mr := ModelReport{ID: m.ID, Profile: prof, GFLOP: float64(prof.FLOPs) / 1e9}
		progress("timing " + m.ID + " on one thread")
		if mr.OneCore, err = Time(ctx, sess, prof.FLOPs, peak, 1, dur); err != nil {
			sess.Close()
			return nil, fmt.Errorf("modelbench: %s: %w", m.ID, err)
		}
		progress(fmt.Sprintf("timing %s on %d cores", m.ID, rep.Cores))
		if mr.AllCores, err = Time(ctx, sess, prof.FLOPs, peak, rep.Cores, dur); err != nil {
			sess.Close()
			return nil, fmt.Errorf("modelbench: %s: %w", m.ID, err)
		}
		sess.Close()
		rep.Models = append(rep.Models, mr)
	}
	return rep, nil
}

// Table renders the report for people.
func (r *Report) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "CPU: %s (%d cores), ONNX Runtime %s\n", r.CPU, r.Cores, r.ORTVersion)
	fmt.Fprintf(&b, "one-thread conv peak: %.1f GFLOP/s (%s, best %.1f ms)\n\n", r.Peak.GFLOPS, r.Peak.Layer, r.Peak.BestMS)
	fmt.Fprintf(&b, "%-20s %9s %10s %9s %9s %10s %10s %9s\n", "model", "GFLOP", "ms 1thr", "GFLOP/s", "of peak", "time/limit", "ms allcore", "img/s")
	for _, m := range r.Models {
		fmt.Fprintf(&b, "%-20s %9.3f %10.2f %9.1f %8.0f%% %10.2f %10.2f %9.1f\n", m.ID, m.GFLOP, m.OneCore.MSPerImage, m.OneCore.GFLOPS, 100*m.OneCore.PeakRatio, m.OneCore.FLOPsOfPeak, m.AllCores.MSPerImage, m.AllCores.ImagesPerS)
	}
	return b.String()
}
