package matcher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/index"
	"github.com/facegate/facegate/pkg/policy"
	"github.com/facegate/facegate/pkg/telemetry"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

// maxBuffered bounds a door's face buffer (a crowd in front of a camera).
const maxBuffered = 256

type doorState struct {
	door    policy.Door
	windows []*window
	buffer  []*buffered
}

// buffered is one face seen at a verify door, kept for claims that arrive
// after it and for windows open when it arrived.
type buffered struct {
	id      string // FaceDecisionID: de-duplicates a redelivered event
	ev      *fv1.FaceEvent
	face    int
	capture time.Time
	recv    time.Time
}

// window is an open claim.
type window struct {
	claim        *fv1.Claim
	msg          jetstream.Msg
	person       string
	start, end   time.Time
	span         trace.SpanContext
	lastProgress time.Time
	busy         bool // a decision for it is being published

	// What the window saw, for its expiry decision.
	best       *buffered
	bestDist   float32
	lowQuality []fv1.RejectionReason
	sawLow     bool
	noTemplate bool
	used       map[string]bool // faces already compared
}

func (m *Matcher) doorState(door policy.Door) *doorState {
	k := doorKey{door.Site, door.ID}
	ds := m.doors[k]
	if ds == nil {
		ds = &doorState{}
		m.doors[k] = ds
	}
	ds.door = door
	return ds
}

// verifyFaces buffers the faces of a frame at a verify door and checks them
// against the door's open windows.
func (m *Matcher) verifyFaces(ctx context.Context, ev *fv1.FaceEvent, door policy.Door, recv time.Time) ([]pending, error) {
	ds := m.doorState(door)
	capture := ev.GetFrame().GetCaptureTime().AsTime()
	var fresh []*buffered
	for i := range ev.GetFaces() {
		b := &buffered{id: FaceDecisionID(ev.GetFrame(), uint32(i), m.cfg.Space), ev: ev, face: i, capture: capture, recv: recv}
		if !slices.ContainsFunc(ds.buffer, func(x *buffered) bool { return x.id == b.id }) {
			ds.buffer = append(ds.buffer, b)
		}
		fresh = append(fresh, b)
	}
	if len(ds.buffer) > maxBuffered {
		ds.buffer = ds.buffer[len(ds.buffer)-maxBuffered:]
	}
	var out []pending
	for _, w := range ds.windows {
		if w.busy {
			continue
		}
		for _, b := range fresh {
			if !m.inWindow(w, b) {
				continue
			}
			p, err := m.evaluate(ctx, ds, w, b)
			if err != nil {
				return nil, err
			}
			if p != nil {
				out = append(out, *p)
				break
			}
		}
	}
	return out, nil
}

func (m *Matcher) inWindow(w *window, b *buffered) bool {
	return !b.capture.Before(w.start.Add(-m.cfg.PreClaim)) && !b.capture.After(w.end) && !w.used[b.id]
}

// evaluate compares one face with a window's person; it returns the
// window's decision when the face decides it.
func (m *Matcher) evaluate(ctx context.Context, ds *doorState, w *window, b *buffered) (*pending, error) {
	f := b.ev.GetFaces()[b.face]
	mk := func(o fv1.Outcome, match time.Duration) *pending {
		d := m.baseDecision(b.ev, ds.door, fv1.Mode_MODE_VERIFY)
		d.DecisionId = ClaimDecisionID(w.claim.GetClaimId())
		d.ClaimId = w.claim.GetClaimId()
		d.Outcome = o
		d.FaceIndex = uint32(b.face)
		person := w.person
		d.PersonId = &person
		d.Latencies = faceLatencies(b.ev, b.recv.Sub(b.capture), match)
		w.busy = true
		return &pending{d: d, capture: b.capture,
			onStored: func() { m.closeWindow(ctx, ds, w) },
			onFailed: func() { w.busy = false }}
	}
	if hasReason(f, fv1.RejectionReason_REJECTION_REASON_NOT_LIVE) {
		p := mk(fv1.Outcome_OUTCOME_SPOOF, 0)
		p.d.RejectionReasons = f.GetQuality().GetRejectionReasons()
		return p, nil
	}
	if !usable(f) {
		w.sawLow = true
		for _, r := range f.GetQuality().GetRejectionReasons() {
			if !slices.Contains(w.lowQuality, r) {
				w.lowQuality = append(w.lowQuality, r)
			}
		}
		return nil, nil
	}
	t0 := time.Now()
	hit, err := m.cfg.Directory.Index().SearchPerson(ctx, m.collection, w.person, f.GetEmbedding())
	if errors.Is(err, index.ErrNotFound) {
		// The person's templates went (a photo removed) while the window
		// was open, or were never added in this space: nothing can match.
		w.used[b.id] = true
		w.noTemplate = true
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("matcher: verify %s: %w", m.collection, err)
	}
	w.used[b.id] = true
	if hit.Distance >= m.threshold {
		match := time.Since(t0)
		m.m.match.Observe(match.Seconds())
		if w.best == nil || hit.Distance < w.bestDist {
			w.best, w.bestDist = b, hit.Distance
		}
		return nil, nil
	}
	var v policy.Verdict
	m.cfg.Directory.View(func(s *policy.State) { v = s.Decide(w.person, ds.door.Site, ds.door.ID, b.capture) })
	match := time.Since(t0)
	m.m.match.Observe(match.Seconds())
	o := fv1.Outcome_OUTCOME_DENY
	if v.Allow {
		o = fv1.Outcome_OUTCOME_GRANT
	}
	p := mk(o, match)
	dist := hit.Distance
	p.d.Distance = &dist
	p.d.PolicyRule = v.Rule
	return p, nil
}

// closeWindow ends a decided window: the claim is acknowledged now that its
// decision is stored.
func (m *Matcher) closeWindow(ctx context.Context, ds *doorState, w *window) {
	ds.windows = slices.DeleteFunc(ds.windows, func(x *window) bool { return x == w })
	m.decided[w.claim.GetClaimId()] = m.cfg.Now()
	m.ack(ctx, w.msg, m.log)
}

func (m *Matcher) handleClaim(ctx context.Context, msg jetstream.Msg) {
	recv := m.cfg.Now()
	ctx = telemetry.Extract(ctx, msg.Headers())
	ctx, span := m.cfg.Tracer.Start(ctx, "matcher.claim", trace.WithSpanKind(trace.SpanKindConsumer))
	defer span.End()
	log := m.log.With(zap.String("subject", msg.Subject()))

	c := &fv1.Claim{}
	err := bus.DecodeMsg(msg.Headers(), msg.Data(), c)
	if err == nil {
		err = validateClaim(c)
	}
	if err != nil {
		m.m.claims.WithLabelValues("malformed").Inc()
		m.poison(ctx, msg, CodeMalformedClaim, err, nil, log)
		return
	}
	span.SetAttributes(attribute.String("facegate.site", c.GetSite()), attribute.String("facegate.door", c.GetDoor()),
		attribute.String("facegate.claim", c.GetClaimId()))
	log = log.With(zap.String("claim", c.GetClaimId()))
	if _, done := m.decided[c.GetClaimId()]; done {
		m.m.claims.WithLabelValues("duplicate").Inc()
		m.ack(ctx, msg, log)
		return
	}
	for _, ds := range m.doors {
		for _, w := range ds.windows {
			if w.claim.GetClaimId() == c.GetClaimId() {
				// Redelivered while open (AckWait passed): keep the newest
				// delivery to acknowledge.
				w.msg = msg
				m.m.claims.WithLabelValues("duplicate").Inc()
				return
			}
		}
	}
	var door policy.Door
	var ok bool
	var person policy.Person
	var known bool
	m.cfg.Directory.View(func(s *policy.State) {
		door, ok = s.Door(c.GetSite(), c.GetDoor())
		if c.GetPersonId() != "" {
			person, known = s.Person(c.GetPersonId())
		} else {
			person, known = s.PersonByBadge(c.GetBadgeId())
		}
	})
	if !ok {
		m.m.claims.WithLabelValues("unknown_door").Inc()
		m.report(ctx, msg, CodeUnknownDoor, fmt.Sprintf("claim %s names door %s/%s, which the directory does not know", c.GetClaimId(), c.GetSite(), c.GetDoor()), log)
		return
	}
	if door.Mode != fv1.Mode_MODE_VERIFY {
		m.m.claims.WithLabelValues("not_verify_door").Inc()
		m.report(ctx, msg, CodeNotVerifyDoor, fmt.Sprintf("claim %s at door %s/%s, which is in %s mode", c.GetClaimId(), c.GetSite(), c.GetDoor(), door.Mode), log)
		return
	}
	ds := m.doorState(door)
	claimDecision := func(o fv1.Outcome) *fv1.Decision {
		return &fv1.Decision{DecisionId: ClaimDecisionID(c.GetClaimId()), Site: door.Site, Door: door.ID, Mode: fv1.Mode_MODE_VERIFY,
			Outcome: o, ClaimId: c.GetClaimId()}
	}
	if !known {
		m.m.claims.WithLabelValues("unknown_badge").Inc()
		d := claimDecision(fv1.Outcome_OUTCOME_UNKNOWN_BADGE)
		if pid := c.GetPersonId(); pid != "" {
			d.PersonId = &pid
		}
		if err := m.publishDecision(ctx, d, time.Time{}); err != nil {
			log.Warn("decision not stored; claim will be redelivered", zap.Error(err))
			m.nak(msg, log)
			return
		}
		m.decided[c.GetClaimId()] = recv
		m.ack(ctx, msg, log)
		return
	}
	start := recv
	if c.GetTime() != nil {
		start = c.GetTime().AsTime()
	}
	win := m.cfg.ClaimWindow
	if c.GetWindow() != nil && c.GetWindow().AsDuration() > 0 {
		win = min(c.GetWindow().AsDuration(), MaxClaimWindow)
	}
	w := &window{claim: c, msg: msg, person: person.ID, start: start, end: start.Add(win),
		span: trace.SpanContextFromContext(ctx), lastProgress: recv, used: map[string]bool{}}
	ds.windows = append(ds.windows, w)
	m.m.claims.WithLabelValues("opened").Inc()

	// Faces seen before the claim arrived (and up to PreClaim before it was
	// made), oldest first.
	var cands []*buffered
	for _, b := range ds.buffer {
		if m.inWindow(w, b) {
			cands = append(cands, b)
		}
	}
	sort.SliceStable(cands, func(i, j int) bool { return cands[i].capture.Before(cands[j].capture) })
	for _, b := range cands {
		p, err := m.evaluate(ctx, ds, w, b)
		if err != nil {
			log.Warn("verifying buffered faces failed", zap.Error(err))
			return
		}
		if p != nil {
			m.publishAll(ctx, []pending{*p}, log) // on failure the window stays open and expires later
			return
		}
	}
}

// report publishes an ErrorEvent for a claim that cannot be served and
// acknowledges it.
func (m *Matcher) report(ctx context.Context, msg jetstream.Msg, code, text string, log *zap.Logger) {
	if err := m.publishError(ctx, msg, code, text, nil); err != nil {
		log.Warn("error event not stored; claim will be redelivered", zap.Error(err))
		m.nak(msg, log)
		return
	}
	log.Info("claim refused", zap.String("code", code))
	m.ack(ctx, msg, log)
}

func validateClaim(c *fv1.Claim) error {
	switch {
	case c.GetClaimId() == "" || len(c.GetClaimId()) > 128:
		return fmt.Errorf("matcher: claim: claim_id empty or longer than 128 bytes")
	case c.GetBadgeId() == "" && c.GetPersonId() == "":
		return fmt.Errorf("matcher: claim %s names neither a badge nor a person", c.GetClaimId())
	case c.GetTime() != nil && c.GetTime().CheckValid() != nil:
		return fmt.Errorf("matcher: claim %s: invalid time", c.GetClaimId())
	case c.GetWindow() != nil && c.GetWindow().CheckValid() != nil:
		return fmt.Errorf("matcher: claim %s: invalid window", c.GetClaimId())
	}
	if err := bus.ValidateToken("site", c.GetSite()); err != nil {
		return fmt.Errorf("matcher: claim %s: %w", c.GetClaimId(), err)
	}
	if err := bus.ValidateToken("door", c.GetDoor()); err != nil {
		return fmt.Errorf("matcher: claim %s: %w", c.GetClaimId(), err)
	}
	return nil
}

// tick expires windows, keeps open claims from being redelivered, and
// prunes the flood-control state.
func (m *Matcher) tick(ctx context.Context) {
	now := m.cfg.Now()
	for k, ds := range m.doors {
		for _, w := range slices.Clone(ds.windows) {
			if w.busy {
				continue
			}
			if now.After(w.end.Add(m.cfg.ExpiryGrace)) {
				m.expire(ctx, ds, w)
				continue
			}
			if now.Sub(w.lastProgress) > m.cfg.AckWait/3 {
				if err := w.msg.InProgress(); err == nil {
					w.lastProgress = now
				}
			}
		}
		horizon := now.Add(-(m.cfg.PreClaim + m.cfg.MaxAge + m.cfg.ExpiryGrace))
		ds.buffer = slices.DeleteFunc(ds.buffer, func(b *buffered) bool { return b.recv.Before(horizon) })
		if len(ds.windows) == 0 && len(ds.buffer) == 0 {
			delete(m.doors, k)
		}
	}
	for k, t := range m.cooldown {
		if absDur(now.Sub(t)) > 2*m.cfg.Cooldown+m.cfg.MaxAge {
			delete(m.cooldown, k)
		}
	}
	for id, t := range m.decided {
		if now.Sub(t) > 2*MaxClaimWindow+m.cfg.AckWait {
			delete(m.decided, id)
		}
	}
}

// expire makes the one decision of a window no face decided.
func (m *Matcher) expire(ctx context.Context, ds *doorState, w *window) {
	ctx = trace.ContextWithRemoteSpanContext(ctx, w.span)
	person := w.person
	d := &fv1.Decision{DecisionId: ClaimDecisionID(w.claim.GetClaimId()), Site: ds.door.Site, Door: ds.door.ID,
		Mode: fv1.Mode_MODE_VERIFY, ClaimId: w.claim.GetClaimId(), PersonId: &person}
	switch {
	case w.best != nil:
		d.Outcome = fv1.Outcome_OUTCOME_MISMATCH
		dist := w.bestDist
		d.Distance = &dist
		d.Camera = w.best.ev.GetFrame().GetCamera()
		d.Frame = w.best.ev.GetFrame()
		d.FaceIndex = uint32(w.best.face)
		d.ModelVersion = w.best.ev.GetModelVersion()
		// The closest face's own stages; the decision itself waited for
		// the window to end, which "claim_window" shows.
		d.Latencies = faceLatencies(w.best.ev, w.best.recv.Sub(w.best.capture), 0)
	case w.noTemplate:
		// A face was there but the person has no template to compare it
		// with: a gallery problem, not a mismatch. Fail closed, visibly.
		d.Outcome = fv1.Outcome_OUTCOME_ERROR
	case w.sawLow:
		d.Outcome = fv1.Outcome_OUTCOME_LOW_QUALITY
		d.RejectionReasons = w.lowQuality
	default:
		d.Outcome = fv1.Outcome_OUTCOME_NO_FACE
	}
	d.Latencies = append(d.Latencies, &fv1.StageLatency{Stage: "claim_window", Duration: dur(m.cfg.Now().Sub(w.start))})
	if err := m.publishDecision(ctx, d, time.Time{}); err != nil {
		m.log.Warn("expiry decision not stored; retrying", zap.String("claim", w.claim.GetClaimId()), zap.Error(err))
		return
	}
	m.closeWindow(ctx, ds, w)
}
