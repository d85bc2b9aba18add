package scaling

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

func params() Params {
	return Params{
		Min: 1, Max: 10, TargetPerReplica: 100, Activation: 0, Tolerance: 0.1,
		ScaleUpWindow: 0, ScaleDownWindow: 5 * time.Minute, Cooldown: 5 * time.Minute,
	}
}

func decide(t *testing.T, now time.Time, lag int64, p Params, s State) Decision {
	t.Helper()
	d, err := Decide(now, lag, p, s)
	if err != nil {
		t.Fatalf("Decide(lag=%d): %v", lag, err)
	}
	return d
}

func TestDesiredIsCeilOfLagOverTarget(t *testing.T) {
	p := params()
	p.Max = 1000
	p.Tolerance = 0
	p.ScaleDownWindow = 0
	cases := []struct {
		lag  int64
		want int32
	}{
		{0, 1}, // min 1 bounds it
		{1, 1},
		{100, 1},
		{101, 2},
		{250, 3},
		{999, 10},
		{1000, 10},
		{1001, 11},
		{99_900, 999},
		{100_000, 1000},
	}
	for _, c := range cases {
		d := decide(t, t0, c.lag, p, State{Current: 5, LastActive: t0})
		if d.Replicas != c.want {
			t.Errorf("lag %d: replicas %d, want %d (%s)", c.lag, d.Replicas, c.want, d.Message)
		}
		if want := int32((c.lag + 99) / 100); d.Desired != want {
			t.Errorf("lag %d: desired %d, want %d", c.lag, d.Desired, want)
		}
	}
}

func TestDesiredSaturatesInsteadOfOverflowing(t *testing.T) {
	p := params()
	p.TargetPerReplica = 1
	d := decide(t, t0, math.MaxInt64, p, State{Current: 1, LastActive: t0})
	if d.Desired != math.MaxInt32 {
		t.Fatalf("desired %d, want MaxInt32", d.Desired)
	}
	if d.Replicas != p.Max || !d.Limited {
		t.Fatalf("replicas %d limited=%v, want max %d and limited", d.Replicas, d.Limited, p.Max)
	}
}

func TestToleranceKeepsCurrentNearTarget(t *testing.T) {
	p := params()
	p.ScaleDownWindow = 0
	cases := []struct {
		current int32
		lag     int64
		want    int32
	}{
		{4, 400, 4},
		{4, 440, 4}, // ratio 1.10: within
		{4, 441, 5}, // ratio 1.1025: outside -> ceil(4.41) = 5
		{4, 360, 4}, // ratio 0.90: within
		{4, 359, 4}, // ratio 0.8975: outside, but ceil(3.59) = 4 anyway
		{4, 299, 3}, // outside, ceil(2.99) = 3
		{10, 1050, 10},
		{2, 219, 2},
		{2, 221, 3},
	}
	for _, c := range cases {
		d := decide(t, t0, c.lag, p, State{Current: c.current, LastActive: t0})
		if d.Replicas != c.want {
			t.Errorf("current %d lag %d: replicas %d, want %d (%s)", c.current, c.lag, d.Replicas, c.want, d.Message)
		}
	}
	// Zero tolerance reacts to any deviation.
	p.Tolerance = 0
	if d := decide(t, t0, 401, p, State{Current: 4, LastActive: t0}); d.Replicas != 5 {
		t.Errorf("zero tolerance: replicas %d, want 5", d.Replicas)
	}
}

func TestMinMaxBoundsAndLimitedFlag(t *testing.T) {
	p := params()
	p.Min, p.Max = 2, 4
	p.ScaleDownWindow = 0

	d := decide(t, t0, 10_000, p, State{Current: 2, LastActive: t0})
	if d.Replicas != 4 || !d.Limited || d.Reason != ScaledUp {
		t.Errorf("over max: %+v", d)
	}
	if !strings.Contains(d.Message, "capped at the maximum 4") {
		t.Errorf("message does not say the maximum capped it: %q", d.Message)
	}

	d = decide(t, t0, 0, p, State{Current: 3, LastActive: t0})
	if d.Replicas != 2 || !d.Limited || d.Reason != ScaledDown {
		t.Errorf("under min: %+v", d)
	}
	if !strings.Contains(d.Message, "raised to the minimum 2") {
		t.Errorf("message does not say the minimum raised it: %q", d.Message)
	}

	d = decide(t, t0, 300, p, State{Current: 3, LastActive: t0})
	if d.Replicas != 3 || d.Limited || d.Reason != Stable {
		t.Errorf("inside bounds: %+v", d)
	}

	// A current count outside new bounds (the user lowered max) is pulled in
	// even when the history says otherwise.
	p.ScaleDownWindow = time.Hour
	hist := []Recommendation{{t0.Add(-time.Minute), 9}}
	d = decide(t, t0, 900, p, State{Current: 9, LastActive: t0, History: hist})
	if d.Replicas != 4 {
		t.Errorf("current above new max: replicas %d, want 4", d.Replicas)
	}
	// Current zero with min > 0 (a freshly created workload) is raised to min.
	d = decide(t, t0, 0, p, State{Current: 0, LastActive: t0})
	if d.Replicas != 2 || d.Reason != ScaledUp {
		t.Errorf("current 0, min 2: %+v", d)
	}
}

func TestScaleDownStabilisationHoldsTheHighestRecentRecommendation(t *testing.T) {
	p := params()
	p.Tolerance = 0
	s := State{Current: 1, LastActive: t0}
	step := func(at time.Duration, lag int64) Decision {
		t.Helper()
		d := decide(t, t0.Add(at), lag, p, s)
		s = State{Current: d.Replicas, LastActive: d.LastActive, History: d.History}
		return d
	}
	if d := step(0, 800); d.Replicas != 8 || d.Reason != ScaledUp {
		t.Fatalf("t=0: %+v", d)
	}
	// Lag drains; the window still holds 8.
	if d := step(time.Minute, 100); d.Replicas != 8 || d.Reason != Stabilizing {
		t.Fatalf("t=1m: %+v", d)
	}
	if d := step(3*time.Minute, 300); d.Replicas != 8 {
		t.Fatalf("t=3m: %+v", d)
	}
	// At 5m the 8 from t=0 falls out (a recommendation exactly at the cutoff
	// is excluded, as in the HPA); the highest left is 3 (t=3m).
	if d := step(5*time.Minute, 100); d.Replicas != 3 || d.Reason != ScaledDown {
		t.Fatalf("t=5m: %+v", d)
	}
	if d := step(8*time.Minute+time.Second, 100); d.Replicas != 1 || d.Reason != ScaledDown {
		t.Fatalf("t=8m1s: %+v", d)
	}
	// History never keeps recommendations older than the window.
	for _, h := range s.History {
		if !h.Time.After(t0.Add(8*time.Minute + time.Second - p.ScaleDownWindow)) {
			t.Fatalf("history kept %v, older than the window", h)
		}
	}
}

func TestScaleUpStabilisationWaitsForSustainedLag(t *testing.T) {
	p := params()
	p.Tolerance = 0
	p.ScaleUpWindow = 2 * time.Minute
	p.ScaleDownWindow = 0
	s := State{Current: 2, LastActive: t0}
	step := func(at time.Duration, lag int64) Decision {
		t.Helper()
		d := decide(t, t0.Add(at), lag, p, s)
		s = State{Current: d.Replicas, LastActive: d.LastActive, History: d.History}
		return d
	}
	if d := step(0, 200); d.Replicas != 2 {
		t.Fatalf("t=0: %+v", d)
	}
	// A spike: the window's lowest recommendation (2) wins.
	if d := step(30*time.Second, 900); d.Replicas != 2 || d.Reason != Stabilizing {
		t.Fatalf("t=30s: %+v", d)
	}
	if d := step(90*time.Second, 700); d.Replicas != 2 {
		t.Fatalf("t=90s: %+v", d)
	}
	// After the 2 from t=0 leaves the window, the lowest is 7 (t=90s).
	if d := step(2*time.Minute, 800); d.Replicas != 7 || d.Reason != ScaledUp {
		t.Fatalf("t=2m: %+v", d)
	}
	if d := step(4*time.Minute, 800); d.Replicas != 8 {
		t.Fatalf("t=4m: %+v", d)
	}
	// Without a down window the drop is immediate.
	if d := step(4*time.Minute+time.Second, 100); d.Replicas != 1 || d.Reason != ScaledDown {
		t.Fatalf("drop: %+v", d)
	}
}

func TestHistoryFromTheFutureIsIgnored(t *testing.T) {
	// A clock step back (operator moved to a node with a skewed clock) must
	// not let stale future entries pin the pool.
	p := params()
	p.Tolerance = 0
	hist := []Recommendation{{t0.Add(time.Hour), 10}}
	d := decide(t, t0, 100, p, State{Current: 1, LastActive: t0, History: hist})
	if d.Replicas != 1 {
		t.Fatalf("replicas %d, want 1", d.Replicas)
	}
	if len(d.History) != 1 || !d.History[0].Time.Equal(t0) {
		t.Fatalf("history %+v, want only the new entry", d.History)
	}
}

func TestScaleToZeroAfterCooldownAndActivation(t *testing.T) {
	p := params()
	p.Min = 0
	p.Activation = 5
	p.Tolerance = 0
	p.ScaleDownWindow = 0
	created := t0

	// A new, idle pool at zero stays there.
	d := decide(t, t0, 0, p, State{Current: 0, LastActive: created})
	if d.Replicas != 0 || d.Reason != Idle || d.Active {
		t.Fatalf("idle at zero: %+v", d)
	}
	// Lag at the activation threshold is still idle.
	d = decide(t, t0, 5, p, State{Current: 0, LastActive: created})
	if d.Replicas != 0 || d.Active {
		t.Fatalf("lag == activation: %+v", d)
	}
	// Above it the pool wakes up directly to what the lag needs.
	d = decide(t, t0.Add(time.Minute), 250, p, State{Current: 0, LastActive: created})
	if d.Replicas != 3 || d.Reason != Activated || !d.Active || !d.LastActive.Equal(t0.Add(time.Minute)) {
		t.Fatalf("activation: %+v", d)
	}
	// Small but above activation: at least one replica.
	d = decide(t, t0.Add(time.Minute), 6, p, State{Current: 0, LastActive: created})
	if d.Replicas != 1 || d.Reason != Activated {
		t.Fatalf("activation with small lag: %+v", d)
	}

	lastActive := t0.Add(time.Minute)
	// Drained, within the cooldown: one replica stays (floor 1 while cooling).
	d = decide(t, lastActive.Add(4*time.Minute), 0, p, State{Current: 3, LastActive: lastActive})
	if d.Replicas != 1 || d.Reason != ScaledDown {
		t.Fatalf("cooling, scale down: %+v", d)
	}
	if !strings.Contains(d.Message, "zero after the 5m0s cooldown") {
		t.Errorf("message does not mention the cooldown: %q", d.Message)
	}
	d = decide(t, lastActive.Add(4*time.Minute+59*time.Second), 0, p, State{Current: 1, LastActive: lastActive})
	if d.Replicas != 1 || d.Reason != CoolingDown {
		t.Fatalf("cooling, holding: %+v", d)
	}
	// Cooldown elapsed: zero, and the history is dropped.
	d = decide(t, lastActive.Add(5*time.Minute), 3, p, State{Current: 1, LastActive: lastActive,
		History: []Recommendation{{lastActive, 9}}})
	if d.Replicas != 0 || d.Reason != ScaledToZero || d.History != nil {
		t.Fatalf("after cooldown: %+v", d)
	}
	if !d.LastActive.Equal(lastActive) {
		t.Fatalf("last active moved while idle: %v", d.LastActive)
	}
	// min > 0 never goes to zero, however long idle.
	p.Min = 1
	d = decide(t, lastActive.Add(24*time.Hour), 0, p, State{Current: 1, LastActive: lastActive})
	if d.Replicas != 1 {
		t.Fatalf("min 1 idle: %+v", d)
	}
}

func TestScaleDownWindowAlsoDelaysCoolingPools(t *testing.T) {
	p := params()
	p.Min = 0
	p.Tolerance = 0
	p.ScaleDownWindow = 2 * time.Minute
	p.Cooldown = 10 * time.Minute
	s := State{Current: 6, LastActive: t0, History: []Recommendation{{t0, 6}}}
	d := decide(t, t0.Add(time.Minute), 0, p, s)
	if d.Replicas != 6 || d.Reason != CoolingDown {
		t.Fatalf("within down window: %+v", d)
	}
}

func TestInvalidInputsAreRejected(t *testing.T) {
	good := params()
	cases := []struct {
		name string
		mod  func(*Params)
		want string
	}{
		{"min above max", func(p *Params) { p.Min, p.Max = 5, 3 }, "min replicas 5 exceeds max replicas 3"},
		{"negative min", func(p *Params) { p.Min = -1 }, "min replicas -1 is negative"},
		{"zero max", func(p *Params) { p.Min, p.Max = 0, 0 }, "max replicas 0 is below 1"},
		{"zero target", func(p *Params) { p.TargetPerReplica = 0 }, "target lag per replica 0 must be greater than 0"},
		{"negative target", func(p *Params) { p.TargetPerReplica = -10 }, "target lag per replica -10 must be greater than 0"},
		{"negative activation", func(p *Params) { p.Activation = -1 }, "activation lag -1 is negative"},
		{"tolerance one", func(p *Params) { p.Tolerance = 1 }, "tolerance 1 is outside"},
		{"tolerance NaN", func(p *Params) { p.Tolerance = math.NaN() }, "tolerance NaN is outside"},
		{"negative window", func(p *Params) { p.ScaleDownWindow = -time.Second }, "must not be negative"},
	}
	for _, c := range cases {
		p := good
		c.mod(&p)
		_, err := Decide(t0, 10, p, State{Current: 1})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", c.name, err, c.want)
		}
	}
	if _, err := Decide(t0, -1, good, State{Current: 1}); err == nil || !strings.Contains(err.Error(), "lag -1 is negative") {
		t.Errorf("negative lag: %v", err)
	}
	if _, err := Decide(t0, 1, good, State{Current: -2}); err == nil || !strings.Contains(err.Error(), "current replicas -2") {
		t.Errorf("negative current: %v", err)
	}
}

// TestInvariantsOnRandomSequences drives long random sequences and checks
// the properties every decision must have, whatever the inputs.
func TestInvariantsOnRandomSequences(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[Reason]int{}
	defer func() {
		// The sequences must reach every branch, or the invariants prove little.
		for _, r := range []Reason{ScaledUp, ScaledDown, Stable, Stabilizing, ScaledToZero, Idle, Activated, CoolingDown} {
			if seen[r] == 0 {
				t.Errorf("no random step ended in %s", r)
			}
		}
	}()
	for run := range 400 {
		p := Params{
			Min:              int32(rng.IntN(4)),
			TargetPerReplica: int64(1 + rng.IntN(200)),
			Activation:       int64(rng.IntN(20)),
			Tolerance:        float64(rng.IntN(30)) / 100,
			ScaleUpWindow:    time.Duration(rng.IntN(4)) * time.Minute,
			ScaleDownWindow:  time.Duration(rng.IntN(6)) * time.Minute,
			Cooldown:         time.Duration(rng.IntN(6)) * time.Minute,
		}
		p.Max = p.Min + 1 + int32(rng.IntN(20))
		s := State{Current: int32(rng.IntN(int(p.Max) + 3)), LastActive: t0}
		now := t0
		for step := range 60 {
			now = now.Add(time.Duration(1+rng.IntN(90)) * time.Second)
			lag := int64(rng.IntN(3000))
			if rng.IntN(4) == 0 {
				lag = int64(rng.IntN(int(p.Activation) + 1))
			}
			d, err := Decide(now, lag, p, s)
			if err != nil {
				t.Fatalf("run %d step %d: %v", run, step, err)
			}
			where := func() string { return d.Message }
			if d.Replicas > p.Max {
				t.Fatalf("run %d step %d: %d above max %d: %s", run, step, d.Replicas, p.Max, where())
			}
			if d.Replicas < p.Min {
				t.Fatalf("run %d step %d: %d below min %d: %s", run, step, d.Replicas, p.Min, where())
			}
			if d.Replicas == 0 && (p.Min > 0 || d.Active) {
				t.Fatalf("run %d step %d: zero with min %d active %v: %s", run, step, p.Min, d.Active, where())
			}
			if d.Active && d.Replicas == 0 {
				t.Fatalf("run %d step %d: active pool at zero", run, step)
			}
			// A scale down never undercuts a recommendation of the down
			// window; a scale up never overshoots one of the up window.
			for _, h := range d.History {
				if d.Replicas < s.Current && now.Sub(h.Time) < p.ScaleDownWindow && d.Replicas < min(h.Replicas, p.Max) {
					t.Fatalf("run %d step %d: scaled down to %d below windowed recommendation %d", run, step, d.Replicas, h.Replicas)
				}
				if d.Replicas > s.Current && now.Sub(h.Time) < p.ScaleUpWindow && d.Replicas > max(h.Replicas, max(p.Min, 1)) {
					t.Fatalf("run %d step %d: scaled up to %d above windowed recommendation %d", run, step, d.Replicas, h.Replicas)
				}
				if now.Sub(h.Time) >= max(p.ScaleUpWindow, p.ScaleDownWindow) && !h.Time.Equal(now) {
					t.Fatalf("run %d step %d: history kept an entry %s old", run, step, now.Sub(h.Time))
				}
			}
			// Without windows or tolerance the result is the bounded ceiling.
			if p.ScaleUpWindow == 0 && p.ScaleDownWindow == 0 && p.Tolerance == 0 && d.Active {
				want := min(max(int32((lag+p.TargetPerReplica-1)/p.TargetPerReplica), max(p.Min, 1)), p.Max)
				if d.Replicas != want {
					t.Fatalf("run %d step %d: replicas %d, want %d", run, step, d.Replicas, want)
				}
			}
			if d.Reason == "" || d.Message == "" {
				t.Fatalf("run %d step %d: no reason or message", run, step)
			}
			seen[d.Reason]++
			s = State{Current: d.Replicas, LastActive: d.LastActive, History: d.History}
		}
	}
}
