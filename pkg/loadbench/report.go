package loadbench

import (
	"fmt"
	"strings"
)

// GoalP99MS is the target: p99 frame-to-decision under 150 ms at
// 80% of the highest sustained rate.
const GoalP99MS = 150

// LoadShare is the share of the maximum the latency run offers.
const LoadShare = 0.8

// Report is the output of `facegate bench load`.
type Report struct {
	CPU         string `json:"cpu"`
	Cores       int    `json:"cores"`
	LoadBefore  string `json:"load_before,omitempty"` // /proc/loadavg: the machine may be shared
	LoadAfter80 string `json:"load_before_80,omitempty"`
	LoadAfter   string `json:"load_after,omitempty"`
	Space       string `json:"space"`
	Mirror      bool   `json:"mirror"`
	Cameras     int    `json:"cameras"`
	Concurrency int    `json:"embedder_concurrency"`
	Embedders   int    `json:"embedder_replicas"`
	Batch       int    `json:"embedder_batch,omitempty"` // 0: the embedder's default
	// MaxYaw is the quality gate's yaw limit in this run, GateNote why it
	// is not the default (empty when it is).
	MaxYaw      float64 `json:"quality_max_yaw_deg"`
	GateNote    string  `json:"quality_gate_note,omitempty"`
	Frame       string  `json:"frame"`
	FrameBytes  int     `json:"frame_jpeg_bytes"`
	StepSeconds float64 `json:"step_s"`
	WarmupS     float64 `json:"warmup_s"`

	Search SearchResult `json:"search"`
	// At80 is the longer run at LoadShare of Search.MaxSustained.
	At80 Point `json:"at_80"`

	// ReferenceFPS is the same frame through the pipeline's stages called
	// directly (pipelinebench.Measure, all cores, same engine), measured
	// just before the bus run: the physical limit of this machine.
	ReferenceFPS      float64 `json:"reference_pipeline_fps,omitempty"`
	ReferenceCPUCores float64 `json:"reference_cpu_cores_used,omitempty"`
	// ReferenceCPUPerFrameMS is the CPU time a frame costs without the bus.
	ReferenceCPUPerFrameMS float64 `json:"reference_cpu_ms_per_frame,omitempty"`
	// CPUPerFrameMS is what a frame costs through the bus, at the highest
	// sustained step; CPURatio = CPUPerFrameMS / ReferenceCPUPerFrameMS.
	CPUPerFrameMS float64 `json:"cpu_ms_per_frame,omitempty"`
	CPURatio      float64 `json:"cpu_ratio,omitempty"`
	// ProjectedMaxFPS is Cores*1000/CPUPerFrameMS: the rate the bus
	// pipeline would reach with every core to itself. An estimate for a
	// shared machine, where the measured maximum says more about the
	// other work than about the pipeline.
	ProjectedMaxFPS float64 `json:"projected_max_fps,omitempty"`
	// BusRatio is Search.MaxSustained / ReferenceFPS.
	BusRatio float64 `json:"bus_to_pipeline_ratio,omitempty"`
	GoalP99  int     `json:"goal_p99_ms"`
	GoalMet  bool    `json:"goal_met"`
}

// StepLine is one search step for a progress line.
func StepLine(p Point) string {
	s := fmt.Sprintf("step %6.1f fps offered: published %6.1f, decided %6.1f fps; p50 %6.1f ms, p99 %6.1f ms; wait in FRAMES p50 %5.1f ms, analysis p50 %5.1f ms; trend %+6.1f ms/s; missing %d, expired %d; %.2f cores used, %.1f ms CPU per frame, load %s; ",
		p.OfferedFPS, p.PublishedFPS, p.DecidedFPS, p.P50, p.P99, p.WaitP50, p.ServiceP50, p.TrendMSPerS, p.Missing, p.Expired, p.CPUCores, p.CPUPerFrameMS, p.Load)
	if p.Sustained {
		return s + "sustained"
	}
	return s + "NOT sustained: " + p.Why
}

// Table formats the report for people.
func (r *Report) Table() string {
	var b strings.Builder
	mirror := "mirror averaging"
	if !r.Mirror {
		mirror = "no mirror"
	}
	batch := "default"
	if r.Batch > 0 {
		batch = fmt.Sprint(r.Batch)
	}
	fmt.Fprintf(&b, "CPU: %s, %d cores; space %s (%s); %d camera(s); %d embedder replica(s), concurrency %d, fetch batch %s\n",
		r.CPU, r.Cores, r.Space, mirror, r.Cameras, r.Embedders, r.Concurrency, batch)
	fmt.Fprintf(&b, "frame: %s, %d JPEG bytes; steps %.1f s after %.1f s warm-up\n", r.Frame, r.FrameBytes, r.StepSeconds, r.WarmupS)
	if r.GateNote != "" {
		fmt.Fprintf(&b, "note: %s\n", r.GateNote)
	}
	fmt.Fprintf(&b, "load average before: %s; before the 80%% run: %s; after: %s\n", r.LoadBefore, r.LoadAfter80, r.LoadAfter)
	capped := ""
	if r.Search.Capped {
		capped = " (capped: the search's maximum rate; the real maximum is higher)"
	}
	fmt.Fprintf(&b, "\nmax sustained: %.1f frames/s%s\n", r.Search.MaxSustained, capped)
	if r.ReferenceFPS > 0 {
		fmt.Fprintf(&b, "pipeline without the bus (same frame, all cores): %.1f frames/s on %.2f cores used; bus/pipeline ratio %.2f\n", r.ReferenceFPS, r.ReferenceCPUCores, r.BusRatio)
	}
	if r.CPUPerFrameMS > 0 {
		fmt.Fprintf(&b, "CPU per frame: %.1f ms through the bus", r.CPUPerFrameMS)
		if r.ReferenceCPUPerFrameMS > 0 {
			fmt.Fprintf(&b, ", %.1f ms without it (ratio %.2f)", r.ReferenceCPUPerFrameMS, r.CPURatio)
		}
		fmt.Fprintf(&b, "; with all %d cores to itself the bus pipeline would reach about %.0f frames/s\n", r.Cores, r.ProjectedMaxFPS)
	}
	p := r.At80
	fmt.Fprintf(&b, "\nat %.0f%%: %.1f frames/s offered, %.1f published, %.1f decided; %d frames, %d missing, %d expired; trend %+.1f ms/s; %.2f cores used\n",
		LoadShare*100, p.OfferedFPS, p.PublishedFPS, p.DecidedFPS, p.Published, p.Missing, p.Expired, p.TrendMSPerS, p.CPUCores)
	fmt.Fprintf(&b, "decisions: %v\n", p.Outcomes)
	fmt.Fprintf(&b, "frame to decision (capture to arrival at a subscriber): p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms\n", p.P50, p.P90, p.P99, p.Max)
	fmt.Fprintf(&b, "\n%-20s %9s %9s %9s\n", "stage", "p50 ms", "p99 ms", "mean ms")
	for _, s := range p.Stages {
		fmt.Fprintf(&b, "%-20s %9.2f %9.2f %9.2f\n", s.Stage, s.P50, s.P99, s.Mean)
	}
	b.WriteString("(queue: capture to matcher receive, holds the embedder's stages; handoff: queue less the embedder's stages;\n" +
		" frame_to_decision: capture to decision publish; decision_delivery: PubAck and delivery to the subscriber)\n")
	verdict := "not met"
	if r.GoalMet {
		verdict = "met"
	}
	fmt.Fprintf(&b, "goal p99 < %d ms at %.0f%% of the maximum: %s\n", r.GoalP99, LoadShare*100, verdict)
	return b.String()
}
