package cli_test

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/facegate/facegate/models"
	"github.com/facegate/facegate/pkg/testenv"
)

func TestEvalTriplets(t *testing.T) {
	testenv.Models(t)
	data := testenv.Dataset(t, "face-api.js/examples/images")
	// Only the per-person folders: the loose expression images are skipped by the command.
	r := facegate(t, "eval", "triplets", "--data", data)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatal(err)
	}
	// 8 people x 5 photos: 8*5*4 anchor-positive pairs x 35 negatives.
	if n := out["triplets"].(float64); n != 8*5*4*35 {
		t.Fatalf("triplets = %v, want %d", n, 8*5*4*35)
	}
	hard, semi, n := out["hard"].(float64), out["semi_hard"].(float64), out["triplets"].(float64)
	t.Logf("loss %.3f over %v triplets, %v hard, %v semi-hard", out["loss"], n, hard, semi)
	if hard/n > 0.01 {
		t.Errorf("%v of %v triplets are hard (negative closer than positive): the encoder separates these people poorly", hard, n)
	}
	if out["alpha"].(float64) != 0.2 {
		t.Errorf("default alpha %v, want 0.2", out["alpha"])
	}
	if r := facegate(t, "eval", "triplets", "--data", t.TempDir()); r.code != 2 {
		t.Errorf("empty folder: exit %d, want 2", r.code)
	}
}

// calibrate on the first fold of LFW writes a local calibration that the
// other commands then use.
func TestCalibrateWritesLocalThreshold(t *testing.T) {
	real := testenv.Models(t)
	lfw := testenv.Dataset(t, "lfw_pairs_aligned")
	cache := t.TempDir()
	for _, d := range []string{"packages", "onnx"} {
		if err := os.Symlink(filepath.Join(real, d), filepath.Join(cache, d)); err != nil {
			t.Fatal(err)
		}
	}
	// A one-fold pairs file: the header and the first 300 + 300 lines of the real one.
	f, err := os.Open(filepath.Join(lfw, "pairs.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	lines := []string{"1\t300"}
	for sc.Scan() && len(lines) < 601 {
		lines = append(lines, sc.Text())
	}
	pairs := filepath.Join(t.TempDir(), "pairs.txt")
	if err := os.WriteFile(pairs, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := facegate(t, "--cache", cache, "calibrate", "--data", lfw, "--pairs", pairs, "--target-far", "0.01")
	if r.code != 0 {
		t.Fatalf("calibrate: exit %d: %s", r.code, r.stderr)
	}
	var cal models.Calibration
	b, err := os.ReadFile(models.CalibrationPath(cache, "dlib-resnet34-128+mirror"))
	if err != nil {
		t.Fatalf("calibration not written: %v", err)
	}
	if err := json.Unmarshal(b, &cal); err != nil || cal.Pairs != 600 || cal.FAR > 0.01 || !(cal.Threshold > 0.2 && cal.Threshold < 0.6) {
		t.Fatalf("calibration %+v (%v)", cal, err)
	}
	// verify now reports the local threshold.
	db := t.TempDir()
	if r := facegate(t, "--cache", cache, "enroll", "--db", db, "--name", "amy", crop(t, "amy", 1)); r.code != 0 {
		t.Fatal(r.stderr)
	}
	r = facegate(t, "--cache", cache, "verify", "--db", db, "--as", "amy", crop(t, "amy", 2))
	v := decodeJSON(t, r.stdout)
	if v["threshold"].(float64) != cal.Threshold {
		t.Fatalf("verify used threshold %v, the local calibration says %v", v["threshold"], cal.Threshold)
	}
	if r := facegate(t, "--cache", cache, "calibrate", "--data", lfw, "--pairs", pairs, "--target-far", "2"); r.code != 2 {
		t.Fatalf("--target-far 2: exit %d, want 2", r.code)
	}
}
