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
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/index"
	"github.com/facegate/facegate/pkg/policy"
	"github.com/facegate/facegate/pkg/telemetry"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

// pending is a decision to publish; onStored runs once JetStream has it,
// onFailed when the publish failed (state set aside for it is released).
type pending struct {
	d        *fv1.Decision
	capture  time.Time
	cool     *cooldownKey
	onStored func()
	onFailed func()
}

func hasReason(f *fv1.Face, r fv1.RejectionReason) bool {
	return slices.Contains(f.GetQuality().GetRejectionReasons(), r)
}

// usable reports whether a face can be matched: it passed the gate and
// carries an embedding.
func usable(f *fv1.Face) bool {
	return f.GetQuality().GetPassed() && len(f.GetEmbedding()) > 0 && !hasReason(f, fv1.RejectionReason_REJECTION_REASON_NOT_LIVE)
}

func (m *Matcher) handleFace(ctx context.Context, msg jetstream.Msg) {
	recv := m.cfg.Now()
	ctx = telemetry.Extract(ctx, msg.Headers())
	ctx, span := m.cfg.Tracer.Start(ctx, "matcher.face", trace.WithSpanKind(trace.SpanKindConsumer))
	defer span.End()
	log := m.log.With(zap.String("subject", msg.Subject()))
	if md, err := msg.Metadata(); err == nil {
		log = log.With(zap.Uint64("stream_seq", md.Sequence.Stream))
	}

	ev := &fv1.FaceEvent{}
	err := bus.DecodeMsg(msg.Headers(), msg.Data(), ev)
	if err == nil {
		err = events.ValidateFaceEvent(ev)
	}
	if err != nil {
		m.m.faceEvents.WithLabelValues("malformed").Inc()
		m.poison(ctx, msg, CodeMalformedFaceEvent, err, nil, log)
		span.SetStatus(codes.Error, "malformed face event")
		return
	}
	ref := ev.GetFrame()
	span.SetAttributes(attribute.String("facegate.site", ref.GetSite()), attribute.String("facegate.camera", ref.GetCamera()),
		attribute.Int64("facegate.frame_seq", int64(ref.GetSequence())), attribute.Int("facegate.faces", len(ev.GetFaces())))
	if ev.GetModelId() != m.cfg.Space {
		m.m.faceEvents.WithLabelValues("other_space").Inc()
		m.ack(ctx, msg, log)
		return
	}
	capture := ref.GetCaptureTime().AsTime()
	if age := recv.Sub(capture); age > m.cfg.MaxAge {
		m.m.faceEvents.WithLabelValues("expired").Inc()
		log.Debug("face event too old to decide on", zap.Duration("age", age))
		m.ack(ctx, msg, log)
		return
	}
	var door policy.Door
	var ok bool
	m.cfg.Directory.View(func(s *policy.State) { door, ok = s.DoorForCamera(ref.GetSite(), ref.GetCamera()) })
	if !ok {
		m.m.unmapped.Inc()
		m.m.faceEvents.WithLabelValues("unmapped").Inc()
		m.ack(ctx, msg, log)
		return
	}
	span.SetAttributes(attribute.String("facegate.door", door.ID))

	var out []pending
	switch door.Mode {
	case fv1.Mode_MODE_IDENTIFY:
		out, err = m.identify(ctx, ev, door, recv)
	case fv1.Mode_MODE_VERIFY:
		out, err = m.verifyFaces(ctx, ev, door, recv)
	}
	if err != nil {
		if errors.Is(err, index.ErrWrongDimension) || errors.Is(err, index.ErrInvalidVector) {
			// The embedding will not fit better on redelivery.
			m.m.faceEvents.WithLabelValues("malformed").Inc()
			m.poison(ctx, msg, CodeMalformedFaceEvent, err, ref, log)
			return
		}
		m.m.faceEvents.WithLabelValues("failed").Inc()
		span.SetStatus(codes.Error, err.Error())
		log.Warn("matching failed; face event will be redelivered", zap.Error(err))
		m.nak(msg, log)
		return
	}
	if !m.publishAll(ctx, out, log) {
		m.m.faceEvents.WithLabelValues("failed").Inc()
		m.nak(msg, log)
		return
	}
	m.m.faceEvents.WithLabelValues("processed").Inc()
	if m.cfg.afterDecisions != nil && m.cfg.afterDecisions() != nil {
		return
	}
	m.ack(ctx, msg, log)
}

// publishAll publishes decisions in order, applying the cooldown; it
// reports false when one failed (the input must be redelivered).
func (m *Matcher) publishAll(ctx context.Context, out []pending, log *zap.Logger) bool {
	for i, p := range out {
		if p.cool != nil {
			if last, ok := m.cooldown[*p.cool]; ok && absDur(p.capture.Sub(last)) < m.cfg.Cooldown {
				m.m.suppressed.WithLabelValues(outcomeLabel(p.d.GetOutcome())).Inc()
				if p.onFailed != nil {
					p.onFailed()
				}
				continue
			}
		}
		if err := m.publishDecision(ctx, p.d, p.capture); err != nil {
			log.Warn("decision not stored", zap.Error(err))
			for _, q := range out[i:] {
				if q.onFailed != nil {
					q.onFailed()
				}
			}
			return false
		}
		if p.cool != nil {
			m.cooldown[*p.cool] = p.capture
		}
		if p.onStored != nil {
			p.onStored()
		}
	}
	return true
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func (m *Matcher) ack(ctx context.Context, msg jetstream.Msg, log *zap.Logger) {
	if err := msg.DoubleAck(ctx); err != nil {
		// Decisions are stored; a lost ack is a redelivery, which the
		// decision ids de-duplicate.
		log.Warn("ack failed", zap.Error(err))
	}
}

func (m *Matcher) nak(msg jetstream.Msg, log *zap.Logger) {
	if err := msg.NakWithDelay(time.Second); err != nil {
		log.Warn("nak failed", zap.Error(err))
	}
}

// poison reports an input that cannot be processed and terminates it; if the
// report cannot be stored the input is nacked, so it is never lost silently.
func (m *Matcher) poison(ctx context.Context, msg jetstream.Msg, code string, cause error, ref *fv1.FrameRef, log *zap.Logger) {
	if err := m.publishError(ctx, msg, code, cause.Error(), ref); err != nil {
		log.Warn("error event not stored", zap.Error(err))
		m.nak(msg, log)
		return
	}
	log.Warn("input terminated", zap.String("code", code), zap.Error(cause))
	if err := msg.TermWithReason(code); err != nil {
		log.Warn("term failed", zap.Error(err))
	}
}

// baseDecision fills what every face decision at a door shares.
func (m *Matcher) baseDecision(ev *fv1.FaceEvent, door policy.Door, mode fv1.Mode) *fv1.Decision {
	return &fv1.Decision{Site: door.Site, Door: door.ID, Camera: ev.GetFrame().GetCamera(), Mode: mode,
		ModelVersion: ev.GetModelVersion(), Frame: ev.GetFrame()}
}

// identify decides every face of a frame at an identify door.
func (m *Matcher) identify(ctx context.Context, ev *fv1.FaceEvent, door policy.Door, recv time.Time) ([]pending, error) {
	ref := ev.GetFrame()
	capture := ref.GetCaptureTime().AsTime()
	var faces []int
	var queries [][]float32
	var spoofs []int
	var reasons []fv1.RejectionReason
	for i, f := range ev.GetFaces() {
		switch {
		case hasReason(f, fv1.RejectionReason_REJECTION_REASON_NOT_LIVE):
			spoofs = append(spoofs, i)
		case usable(f):
			faces = append(faces, i)
			queries = append(queries, f.GetEmbedding())
		default:
			for _, r := range f.GetQuality().GetRejectionReasons() {
				if !slices.Contains(reasons, r) {
					reasons = append(reasons, r)
				}
			}
		}
	}
	var out []pending
	coolKey := func(person string, o fv1.Outcome) *cooldownKey {
		return &cooldownKey{site: door.Site, door: door.ID, person: person, outcome: o}
	}
	queue := recv.Sub(capture)
	for _, i := range spoofs {
		d := m.baseDecision(ev, door, fv1.Mode_MODE_IDENTIFY)
		d.DecisionId = FaceDecisionID(ref, uint32(i), m.cfg.Space)
		d.Outcome = fv1.Outcome_OUTCOME_SPOOF
		d.FaceIndex = uint32(i)
		d.RejectionReasons = ev.GetFaces()[i].GetQuality().GetRejectionReasons()
		d.Latencies = faceLatencies(ev, queue, 0)
		out = append(out, pending{d: d, capture: capture, cool: coolKey("", d.Outcome)})
	}
	if len(faces) == 0 {
		if len(spoofs) == 0 && len(ev.GetFaces()) > 0 {
			d := m.baseDecision(ev, door, fv1.Mode_MODE_IDENTIFY)
			d.DecisionId = FrameDecisionID(ref, m.cfg.Space)
			d.Outcome = fv1.Outcome_OUTCOME_LOW_QUALITY
			d.RejectionReasons = reasons
			d.Latencies = faceLatencies(ev, queue, 0)
			out = append(out, pending{d: d, capture: capture, cool: coolKey("", d.Outcome)})
		}
		return out, nil
	}

	t0 := time.Now()
	results, err := m.cfg.Directory.Index().SearchBatch(ctx, m.collection, queries, index.SearchOptions{K: m.cfg.SearchK})
	if err != nil {
		return nil, fmt.Errorf("matcher: search %s: %w", m.collection, err)
	}
	assigned := Assign(results, m.threshold)
	verdicts := make([]policy.Verdict, len(faces))
	m.cfg.Directory.View(func(s *policy.State) {
		for j, a := range assigned {
			if a.Person != "" {
				verdicts[j] = s.Decide(a.Person, door.Site, door.ID, capture)
			}
		}
	})
	match := time.Since(t0)
	m.m.match.Observe(match.Seconds())

	for j, i := range faces {
		a := assigned[j]
		d := m.baseDecision(ev, door, fv1.Mode_MODE_IDENTIFY)
		d.DecisionId = FaceDecisionID(ref, uint32(i), m.cfg.Space)
		d.FaceIndex = uint32(i)
		d.Latencies = faceLatencies(ev, queue, match)
		if a.Nearest >= 0 {
			dist := a.Nearest
			d.Distance = &dist
		}
		if a.Person == "" {
			d.Outcome = fv1.Outcome_OUTCOME_UNKNOWN
			out = append(out, pending{d: d, capture: capture, cool: coolKey("", d.Outcome)})
			continue
		}
		person, dist := a.Person, a.Distance
		d.PersonId, d.Distance = &person, &dist
		v := verdicts[j]
		d.PolicyRule = v.Rule
		d.Outcome = fv1.Outcome_OUTCOME_DENY
		if v.Allow {
			d.Outcome = fv1.Outcome_OUTCOME_GRANT
		}
		out = append(out, pending{d: d, capture: capture, cool: coolKey(person, d.Outcome)})
	}
	return out, nil
}

// Assignment is the outcome of Assign for one face.
type Assignment struct {
	// Person is the assigned person, "" when none.
	Person string
	// Distance is the distance to Person's nearest template.
	Distance float32
	// Nearest is the distance to the nearest person at all (-1 when the
	// gallery is empty), reported for UNKNOWN faces.
	Nearest float32
}

// Assign assigns persons to the faces of one frame: every (face, person) pair
// closer than threshold is a candidate, candidates are taken nearest first,
// and each face and each person is used once. A person is in a frame at most
// once, so two faces both nearest to one enrolled person do not both pass as
// them.
func Assign(results []index.Result, threshold float32) []Assignment {
	type cand struct {
		face   int
		person string
		dist   float32
	}
	var cands []cand
	out := make([]Assignment, len(results))
	for i, r := range results {
		out[i].Nearest = -1
		for j, p := range r.Persons {
			if j == 0 {
				out[i].Nearest = p.Distance
			}
			if p.Distance < threshold {
				cands = append(cands, cand{i, p.Person, p.Distance})
			}
		}
	}
	sort.SliceStable(cands, func(a, b int) bool {
		if cands[a].dist != cands[b].dist {
			return cands[a].dist < cands[b].dist
		}
		return cands[a].face < cands[b].face
	})
	faceDone, personDone := make([]bool, len(results)), map[string]bool{}
	for _, c := range cands {
		if faceDone[c.face] || personDone[c.person] {
			continue
		}
		faceDone[c.face], personDone[c.person] = true, true
		out[c.face].Person, out[c.face].Distance = c.person, c.dist
	}
	return out
}
