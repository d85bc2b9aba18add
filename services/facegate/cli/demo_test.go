package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/facegate/facegate/pkg/testenv"
)

// TestDemo runs the README's main command end to end on the all-in-one
// (embedded NATS, embedder, matcher, API, audit) and checks the decisions it
// prints: the enrolled staff are granted at the identify door, the enrolled
// non-staff visitor is denied, badge-1 with its owner in front of the camera
// is granted at the verify door, badge-2 with strangers is not, and the
// audit log verifies (the command fails otherwise).
func TestDemo(t *testing.T) {
	testenv.Models(t)
	r := facegate(t, "demo", "--data", t.TempDir())
	if r.code != 0 {
		t.Fatalf("demo exited %d\nstderr:\n%s", r.code, r.stderr)
	}
	type line struct {
		Door, Mode, Outcome string
		Person              *string
		Distance            *float64
		Threshold           float64
	}
	var ds []line
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var d line
		if err := json.Unmarshal([]byte(l), &d); err != nil {
			t.Fatalf("stdout line is not JSON: %q: %v", l, err)
		}
		ds = append(ds, d)
	}
	count := func(door, mode, outcome, person string) int {
		n := 0
		for _, d := range ds {
			if d.Door == door && d.Mode == mode && d.Outcome == outcome && (person == "" || d.Person != nil && *d.Person == person) {
				n++
			}
		}
		return n
	}
	if n := count("lobby", "identify", "grant", ""); n < 2 {
		t.Errorf("%d identify grants at the lobby, want at least 2 (staff enrolled from the replayed photos)\n%s", n, r.stderr)
	}
	if n := count("lobby", "identify", "deny", "visitor-4"); n != 1 {
		t.Errorf("visitor-4 (enrolled, not staff) denied %d times at the lobby, want 1\n%s", n, r.stderr)
	}
	if n := count("lab", "verify", "grant", "visitor-1"); n != 1 {
		t.Errorf("badge-1 with visitor-1 granted %d times at the lab, want 1\n%s", n, r.stderr)
	}
	if n := count("lab", "verify", "grant", "visitor-2"); n != 0 {
		t.Errorf("badge-2 with strangers granted at the lab\n%s", r.stderr)
	}
	if count("lab", "verify", "", "") != 0 {
		t.Fatal("unreachable")
	}
	var lab2 int
	for _, d := range ds {
		if d.Door == "lab" && d.Person != nil && *d.Person == "visitor-2" {
			lab2++
		}
	}
	if lab2 != 1 {
		t.Errorf("%d decisions for badge-2 at the lab, want exactly 1 (one per claim)\n%s", lab2, r.stderr)
	}
	for _, d := range ds {
		if d.Outcome == "grant" && (d.Distance == nil || *d.Distance >= d.Threshold) {
			t.Errorf("a grant without a distance under the threshold: %+v", d)
		}
	}
	if !strings.Contains(r.stderr, "hash chain intact") || !strings.Contains(r.stderr, "erased visitor-2") {
		t.Errorf("stderr does not report the erasure and the verified audit log:\n%s", r.stderr)
	}
}
