package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/facegate/facegate/pkg/loadbench"
	"github.com/facegate/facegate/pkg/quality"
	"github.com/facegate/facegate/pkg/testenv"
)

// TestBenchLoadJSON runs `facegate bench load` on the smallest
// configuration (one camera, one capped step, a short 80% run) and checks
// that the JSON report is complete and consistent.
func TestBenchLoadJSON(t *testing.T) {
	testenv.Models(t)
	r := facegate(t, "bench", "load", "--cameras", "1", "--step-duration", "1s", "--warmup", "0", "--refine", "0",
		"--duration-at-80", "2s", "--start-rate", "2", "--max-rate", "2", "--reference-duration", "500ms", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var rep loadbench.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("stdout is not a report: %v\n%s", err, r.stdout)
	}
	if rep.Cameras != 1 || !rep.Mirror || !strings.HasSuffix(rep.Space, "+mirror") || rep.Cores < 1 || rep.LoadBefore == "" {
		t.Errorf("header: cameras %d, mirror %v, space %q, cores %d, load %q", rep.Cameras, rep.Mirror, rep.Space, rep.Cores, rep.LoadBefore)
	}
	// The default gate, or the benchmark's opened one with the reason.
	if def := quality.DefaultThresholds().MaxYaw; rep.MaxYaw != def && (rep.MaxYaw != loadbench.BenchMaxYaw || rep.GateNote == "") {
		t.Errorf("quality gate: max yaw %v (default %v), note %q", rep.MaxYaw, def, rep.GateNote)
	}
	if len(rep.Search.Steps) == 0 || rep.Search.MaxSustained <= 0 {
		t.Fatalf("search: %+v", rep.Search)
	}
	if !strings.Contains(r.stderr, "step ") {
		t.Errorf("no progress lines on stderr: %s", r.stderr)
	}
	p := rep.At80
	if p.OfferedFPS != 0.8*rep.Search.MaxSustained {
		t.Errorf("80%% run offered %v, max %v", p.OfferedFPS, rep.Search.MaxSustained)
	}
	if p.Decided <= 0 || p.Decided > p.Published {
		t.Errorf("80%% run: published %d, decided %d", p.Published, p.Decided)
	}
	if !(p.P50 > 0 && p.P50 <= p.P90 && p.P90 <= p.P99 && p.P99 <= p.Max) {
		t.Errorf("80%% run quantiles: p50 %v p90 %v p99 %v max %v", p.P50, p.P90, p.P99, p.Max)
	}
	if p.Outcomes["OUTCOME_GRANT"] != p.Decided {
		t.Errorf("outcomes %v: every decision should be a grant of the enrolled person", p.Outcomes)
	}
	stages := map[string]loadbench.Stage{}
	for _, s := range p.Stages {
		stages[s.Stage] = s
		if s.P50 < 0 || s.P50 > s.P99 {
			t.Errorf("stage %s: p50 %v, p99 %v", s.Stage, s.P50, s.P99)
		}
	}
	for _, n := range []string{"decode", "detect", "align", "embed", "queue", "match", "frame_to_decision"} {
		if _, ok := stages[n]; !ok {
			t.Errorf("stage %s missing: %v", n, p.Stages)
		}
	}
	if rep.ReferenceFPS <= 0 || rep.BusRatio <= 0 {
		t.Errorf("reference %v frames/s, ratio %v", rep.ReferenceFPS, rep.BusRatio)
	}
}

func TestBenchLoadBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--cameras", "0"}, {"--step-duration", "0s"}, {"--duration-at-80", "-1s"}, {"--refine", "-1"},
		{"--start-rate", "0"}, {"--max-rate", "-5"}, {"--mirror=false", "--no-mirror=false"},
	} {
		r := facegate(t, append([]string{"bench", "load"}, args...)...)
		if r.code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage): %s", args, r.code, r.stderr)
		}
	}
}
