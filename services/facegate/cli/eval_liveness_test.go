package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/facegate/facegate/pkg/testenv"
)

// The JSON contract of `eval liveness` on a small subset: every field the
// docs and scripts read is present and sane, and the synthetic nature of
// the attacks is stated in the output itself.
func TestEvalLivenessContract(t *testing.T) {
	testenv.Models(t)
	data := testenv.Datasets(t)
	r := facegate(t, "eval", "liveness", "--data", data, "--lfw", "4", "--limit", "4", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var out struct {
		Synthetic bool   `json:"synthetic_attacks"`
		Warning   string `json:"warning"`
		Rule      string `json:"rule"`
		BonaFide  int    `json:"bona_fide"`
		Dataset   string `json:"dataset"`
		Sources   []struct {
			Name   string `json:"name"`
			Images int    `json:"images"`
			Faces  int    `json:"faces"`
		} `json:"sources"`
		Attacks []struct {
			Name    string `json:"name"`
			Species string `json:"species"`
		} `json:"attacks"`
		Species  []string `json:"species"`
		Controls []struct {
			Name  string `json:"name"`
			Count int    `json:"count"`
		} `json:"controls"`
		Preprocess map[string]map[string]any `json:"preprocess"`
		Models     map[string]struct {
			DefaultThreshold float64 `json:"default_threshold"`
			AtDefault        struct {
				BPCER    float64            `json:"bpcer"`
				APCER    map[string]float64 `json:"apcer"`
				MaxAPCER float64            `json:"max_apcer"`
			} `json:"at_default"`
			BPCERBySource map[string]float64 `json:"bpcer_by_source_at_default"`
			EERPoint      struct {
				Threshold float64 `json:"threshold"`
				BPCER     float64 `json:"bpcer"`
				MaxAPCER  float64 `json:"max_apcer"`
			} `json:"eer_point"`
			EER          float64                    `json:"eer"`
			EERByAttack  map[string]json.RawMessage `json:"eer_by_attack"`
			BPCERAtAPCER map[string]json.RawMessage `json:"bpcer_at_max_apcer"`
			AUC          map[string]float64         `json:"auc"`
			ROC          []struct {
				Threshold float64            `json:"threshold"`
				BPCER     float64            `json:"bpcer"`
				APCER     map[string]float64 `json:"apcer"`
			} `json:"roc"`
		} `json:"models"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("stdout is not the JSON report: %v\n%s", err, r.stdout)
	}
	if !out.Synthetic || !strings.Contains(out.Warning, "SYNTHETIC") || out.Dataset != data {
		t.Errorf("synthetic %v, warning %q, dataset %q", out.Synthetic, out.Warning, out.Dataset)
	}
	if out.Rule != "min" || len(out.Preprocess) != 2 {
		t.Errorf("rule %q, preprocess %v", out.Rule, out.Preprocess)
	}
	// --limit 4 caps every source: 4 LFW, 4 deepface, 4 face_recognition, 2 single.
	images, faces := 0, 0
	for _, s := range out.Sources {
		images += s.Images
		faces += s.Faces
	}
	if len(out.Sources) != 4 || images != 14 || faces != out.BonaFide || faces < 10 {
		t.Errorf("sources %+v, bona fide %d", out.Sources, out.BonaFide)
	}
	if strings.Join(out.Species, ",") != "print,replay" || len(out.Attacks) < 2 {
		t.Errorf("species %v, attacks %+v", out.Species, out.Attacks)
	}
	names := []string{}
	for _, a := range out.Attacks {
		names = append(names, a.Name)
	}
	for _, c := range out.Controls {
		names = append(names, c.Name)
		if c.Name == "noise" && c.Count != 4 {
			t.Errorf("noise control: %d inputs, want 4 (--limit)", c.Count)
		}
	}
	for _, m := range []string{"antispoof", "liveness", "combined"} {
		mr, ok := out.Models[m]
		if !ok {
			t.Fatalf("no %s model in the report", m)
		}
		if mr.DefaultThreshold != 0.5 || mr.AtDefault.BPCER < 0 || mr.AtDefault.BPCER > 1 || len(mr.BPCERBySource) != 4 {
			t.Errorf("%s: at default %+v, by source %v", m, mr.AtDefault, mr.BPCERBySource)
		}
		for _, n := range names {
			if v, ok := mr.AtDefault.APCER[n]; !ok || v < 0 || v > 1 {
				t.Errorf("%s: APCER of %s at default: %v (present %v)", m, n, v, ok)
			}
			if _, ok := mr.AUC[n]; !ok {
				t.Errorf("%s: no AUC for %s", m, n)
			}
			if _, ok := mr.EERByAttack[n]; !ok {
				t.Errorf("%s: no equal-error point for %s", m, n)
			}
		}
		if mr.EERPoint.Threshold < 0 || mr.EERPoint.Threshold > 1.0001 || mr.EER < 0 || mr.EER > 1 {
			t.Errorf("%s: EER %v at %+v", m, mr.EER, mr.EERPoint)
		}
		if len(mr.BPCERAtAPCER) != 2 {
			t.Errorf("%s: BPCER at APCER points %v", m, mr.BPCERAtAPCER)
		}
		if len(mr.ROC) != 15 {
			t.Fatalf("%s: %d ROC rows, want 15", m, len(mr.ROC))
		}
		// BPCER can only grow with the threshold, APCER only fall.
		for i := 1; i < len(mr.ROC); i++ {
			a, b := mr.ROC[i-1], mr.ROC[i]
			if b.Threshold <= a.Threshold || b.BPCER < a.BPCER || b.APCER["print"] > a.APCER["print"] {
				t.Errorf("%s: ROC rows %d, %d not monotone: %+v %+v", m, i-1, i, a, b)
			}
		}
	}
	// The table form carries the same warning.
	r = facegate(t, "eval", "liveness", "--data", data, "--lfw", "2", "--limit", "2")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "WARNING: SYNTHETIC") || !strings.Contains(r.stdout, "== combined ==") {
		t.Errorf("table: exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
}

func TestEvalLivenessBadInput(t *testing.T) {
	testenv.Models(t)
	for _, args := range [][]string{
		{"eval", "liveness"},
		{"eval", "liveness", "--data", t.TempDir()},
		{"eval", "liveness", "--data", t.TempDir(), "--limit", "-1"},
		{"eval", "liveness", "--data", t.TempDir(), "--rule", "max"},
		{"eval", "liveness", "--data", t.TempDir(), "--antispoof-scale", "9"},
	} {
		if r := facegate(t, args...); r.code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage): %s", args, r.code, r.stderr)
		}
	}
}
