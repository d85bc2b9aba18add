// Package scaling computes an embedder pool's replica count from its
// JetStream consumer lag. It reproduces what KEDA's NATS JetStream scaler and
// the HorizontalPodAutoscaler it drives would do, in one pure function, so
// the operator needs neither KEDA nor an HPA and the rules are unit-testable:
//
//   - metric: lag = num_pending + num_ack_pending of the pool's consumer;
//   - activation (KEDA): the pool is active while lag > activation; a pool
//     with min 0 that stayed inactive for the cooldown goes to zero, and an
//     inactive pool at zero stays there;
//   - desired (HPA, AverageValue target): ceil(lag / target), unchanged while
//     lag / (target * current) is within 1 +/- tolerance;
//   - stabilisation (HPA behaviour): scale up to the lowest recommendation of
//     the scale-up window, down to the highest of the scale-down window;
//   - bounds: never below max(min, 1) while active or cooling down, never
//     above max.
package scaling

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Recommendation is one raw (bounded but unstabilised) recommendation.
type Recommendation struct {
	Time     time.Time
	Replicas int32
}

// Params are a pool's scaling settings.
type Params struct {
	Min, Max int32
	// TargetPerReplica is the lag one replica should carry.
	TargetPerReplica int64
	// Activation: lag at or below it is idle.
	Activation int64
	// Tolerance as a fraction (0.1 = 10%).
	Tolerance       float64
	ScaleUpWindow   time.Duration
	ScaleDownWindow time.Duration
	// Cooldown of inactivity before a min-0 pool goes to zero.
	Cooldown time.Duration
}

// Validate reports settings no decision can honour.
func (p Params) Validate() error {
	var errs []error
	if p.Min < 0 {
		errs = append(errs, fmt.Errorf("min replicas %d is negative", p.Min))
	}
	if p.Max < 1 {
		errs = append(errs, fmt.Errorf("max replicas %d is below 1", p.Max))
	}
	if p.Min > p.Max {
		errs = append(errs, fmt.Errorf("min replicas %d exceeds max replicas %d", p.Min, p.Max))
	}
	if p.TargetPerReplica <= 0 {
		errs = append(errs, fmt.Errorf("target lag per replica %d must be greater than 0", p.TargetPerReplica))
	}
	if p.Activation < 0 {
		errs = append(errs, fmt.Errorf("activation lag %d is negative", p.Activation))
	}
	if p.Tolerance < 0 || p.Tolerance >= 1 || math.IsNaN(p.Tolerance) {
		errs = append(errs, fmt.Errorf("tolerance %v is outside [0, 1)", p.Tolerance))
	}
	if p.ScaleUpWindow < 0 || p.ScaleDownWindow < 0 || p.Cooldown < 0 {
		errs = append(errs, errors.New("stabilisation windows and cooldown must not be negative"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("scaling: invalid parameters: %w", errors.Join(errs...))
	}
	return nil
}

// State is what the caller remembers between decisions.
type State struct {
	// Current replicas of the workload.
	Current int32
	// LastActive is the last time lag exceeded the activation threshold; the
	// caller passes the pool's creation time when it was never active, so a
	// new pool gets a full cooldown.
	LastActive time.Time
	// History of earlier recommendations, any order.
	History []Recommendation
}

// Reason is a short CamelCase cause, used for events and conditions.
type Reason string

const (
	ScaledUp     Reason = "ScaledUp"
	ScaledDown   Reason = "ScaledDown"
	Stable       Reason = "Stable"
	Stabilizing  Reason = "Stabilizing"
	ScaledToZero Reason = "ScaledToZero"
	Idle         Reason = "Idle"
	Activated    Reason = "Activated"
	CoolingDown  Reason = "CoolingDown"
)

// Decision is the outcome of one evaluation.
type Decision struct {
	// Replicas to run.
	Replicas int32
	// Desired is ceil(lag / target) before tolerance, bounds and stabilisation.
	Desired int32
	// Active is lag > activation.
	Active bool
	// Limited is true when min or max bounded the recommendation.
	Limited bool
	Reason  Reason
	// Message explains the decision in one sentence.
	Message string
	// LastActive and History are the caller's next State.
	LastActive time.Time
	History    []Recommendation
}

// Decide computes the replicas for a lag reading taken at now.
func Decide(now time.Time, lag int64, p Params, s State) (Decision, error) {
	if err := p.Validate(); err != nil {
		return Decision{}, err
	}
	if lag < 0 {
		return Decision{}, fmt.Errorf("scaling: lag %d is negative", lag)
	}
	if s.Current < 0 {
		return Decision{}, fmt.Errorf("scaling: current replicas %d is negative", s.Current)
	}

	d := Decision{
		Desired:    ceilDiv(lag, p.TargetPerReplica),
		Active:     lag > p.Activation,
		LastActive: s.LastActive,
	}
	if d.Active {
		d.LastActive = now
	}

	if p.Min == 0 && !d.Active {
		idleFor := now.Sub(s.LastActive)
		switch {
		case s.Current == 0:
			d.Replicas, d.Reason = 0, Idle
			d.Message = fmt.Sprintf("lag %d is at or below the activation threshold %d; staying at zero", lag, p.Activation)
			return d, nil
		case idleFor >= p.Cooldown:
			// KEDA deactivates the HPA here, so its recommendations start
			// afresh when the pool is woken up again.
			d.Replicas, d.Reason = 0, ScaledToZero
			d.Message = fmt.Sprintf("lag %d stayed at or below the activation threshold %d for %s (cooldown %s); scaling %d -> 0",
				lag, p.Activation, idleFor.Round(time.Second), p.Cooldown, s.Current)
			return d, nil
		}
	}

	floor := max(p.Min, 1)
	raw := d.Desired
	if s.Current > 0 {
		ratio := float64(lag) / (float64(p.TargetPerReplica) * float64(s.Current))
		// The epsilon makes the bound inclusive as documented: 440/400 is
		// 1.1000000000000001 in binary floating point.
		if math.Abs(ratio-1) <= p.Tolerance+1e-9 {
			raw = s.Current
		}
	}
	bounded := min(max(raw, floor), p.Max)
	d.Limited = bounded != raw

	cutoff := max(p.ScaleUpWindow, p.ScaleDownWindow)
	up, down := bounded, bounded
	d.History = make([]Recommendation, 0, len(s.History)+1)
	for _, h := range s.History {
		if !h.Time.After(now.Add(-cutoff)) || h.Time.After(now) {
			continue
		}
		d.History = append(d.History, h)
		if h.Time.After(now.Add(-p.ScaleUpWindow)) {
			up = min(up, h.Replicas)
		}
		if h.Time.After(now.Add(-p.ScaleDownWindow)) {
			down = max(down, h.Replicas)
		}
	}
	d.History = append(d.History, Recommendation{Time: now, Replicas: bounded})

	next := s.Current
	if next < up {
		next = up
	}
	if next > down {
		next = down
	}
	// History recorded under older bounds may lie outside the current ones.
	d.Replicas = min(max(next, floor), p.Max)

	why := fmt.Sprintf("lag %d at target %d per replica recommends %d", lag, p.TargetPerReplica, d.Desired)
	if raw != d.Desired {
		why += fmt.Sprintf(" (within the %.0f%% tolerance of %d)", p.Tolerance*100, s.Current)
	}
	switch {
	case bounded > raw:
		why += fmt.Sprintf(", raised to the minimum %d", floor)
	case bounded < raw:
		why += fmt.Sprintf(", capped at the maximum %d", p.Max)
	}
	switch {
	case p.Min == 0 && s.Current == 0 && d.Replicas > 0:
		d.Reason = Activated
		why += fmt.Sprintf("; activating %d -> %d", s.Current, d.Replicas)
	case d.Replicas > s.Current:
		d.Reason = ScaledUp
		why += fmt.Sprintf("; scaling %d -> %d", s.Current, d.Replicas)
	case d.Replicas < s.Current:
		d.Reason = ScaledDown
		why += fmt.Sprintf("; scaling %d -> %d", s.Current, d.Replicas)
	case bounded != s.Current:
		d.Reason = Stabilizing
		why += fmt.Sprintf("; holding %d within the stabilisation window (up %s, down %s)", s.Current, p.ScaleUpWindow, p.ScaleDownWindow)
	default:
		d.Reason = Stable
		why += fmt.Sprintf("; keeping %d", s.Current)
	}
	if p.Min == 0 && !d.Active {
		if d.Replicas == s.Current {
			d.Reason = CoolingDown
		}
		why += fmt.Sprintf("; idle for %s, zero after the %s cooldown", now.Sub(s.LastActive).Round(time.Second), p.Cooldown)
	}
	d.Message = why
	return d, nil
}

// ceilDiv is ceil(a/b) for a >= 0, b > 0, saturated to int32.
func ceilDiv(a, b int64) int32 {
	q := a / b
	if a%b != 0 {
		q++
	}
	if q > math.MaxInt32 {
		return math.MaxInt32
	}
	return int32(q)
}
