package cli_test

import (
	"encoding/json"
	"testing"

	"github.com/facegate/facegate/pkg/testenv"
	"github.com/facegate/facegate/services/facegate/cli"
)

// TestEvalPoseSubset runs `facegate eval pose` on every 200th LFW pair and
// checks the report adds up: every pair lands in exactly one bin of each
// kind, at the calibrated threshold, and LFW reads as near-frontal.
func TestEvalPoseSubset(t *testing.T) {
	testenv.Models(t)
	data := testenv.Dataset(t, "lfw_pairs_aligned")
	r := facegate(t, "eval", "pose", "--data", data, "--every", "200")
	if r.code != 0 {
		t.Fatalf("eval pose: exit %d: %s", r.code, r.stderr)
	}
	var rep cli.PoseReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, r.stdout)
	}
	if rep.Pairs+rep.NoFace != 30 || rep.Threshold <= 0 || rep.All.Pairs != rep.Pairs || rep.All.Same+rep.All.Different != rep.Pairs {
		t.Fatalf("pairs %d + %d without face, threshold %v, all %+v: want 30 pairs at the calibrated threshold", rep.Pairs, rep.NoFace, rep.Threshold, rep.All)
	}
	for name, bins := range map[string][]cli.PoseBin{"yaw": rep.ByYaw, "pitch": rep.ByPitch, "roll": rep.ByRoll} {
		n, errs := 0, 0
		for _, b := range bins {
			n += b.Pairs
			errs += b.FalseRejects + b.FalseAccepts
		}
		if n != rep.Pairs || errs != rep.All.FalseRejects+rep.All.FalseAccepts {
			t.Errorf("%s bins hold %d pairs and %d errors, want %d and %d", name, n, errs, rep.Pairs, rep.All.FalseRejects+rep.All.FalseAccepts)
		}
	}
	if rep.AbsYaw["p50"] > 8 || rep.Gated.Pairs > rep.Pairs || rep.Gated.Pairs < rep.Pairs-3 {
		t.Errorf("|yaw| p50 %.1f, %d of %d pairs within the pose limits", rep.AbsYaw["p50"], rep.Gated.Pairs, rep.Pairs)
	}
}

func TestEvalPoseUsage(t *testing.T) {
	for _, args := range [][]string{
		{"eval", "pose", "--data", t.TempDir(), "--every", "0"},
		{"eval", "pose", "--data", t.TempDir(), "--rotate", "200"},
		{"eval", "pose"},
	} {
		if r := facegate(t, args...); r.code != cli.ExitUsage {
			t.Errorf("%v: exit %d, want %d: %s", args, r.code, cli.ExitUsage, r.stderr)
		}
	}
}
