package matcher

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/telemetry"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

type doorKey struct{ site, door string }

// cooldownKey: one decision per door, person and outcome within the
// cooldown; person is "" for UNKNOWN, LOW_QUALITY and SPOOF.
type cooldownKey struct {
	site, door, person string
	outcome            fv1.Outcome
}

// FaceDecisionID is the decision id of a face: the frame's identity, the face
// index and the embedding space. Deterministic, so a redelivered face event
// re-publishes the same id and JetStream drops the duplicate.
func FaceDecisionID(ref *fv1.FrameRef, face uint32, space string) string {
	return bus.FrameMsgID(ref.GetSite(), ref.GetCamera(), ref.GetSequence(), ref.GetCaptureTime().AsTime()) +
		".f" + strconv.FormatUint(uint64(face), 10) + "." + space
}

// FrameDecisionID is the id of a decision about a whole frame (LOW_QUALITY).
func FrameDecisionID(ref *fv1.FrameRef, space string) string {
	return bus.FrameMsgID(ref.GetSite(), ref.GetCamera(), ref.GetSequence(), ref.GetCaptureTime().AsTime()) + ".frame." + space
}

// ClaimDecisionID is the id of the one decision of a claim.
func ClaimDecisionID(claimID string) string { return "claim." + claimID }

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(max(d, 0)) }

// faceLatencies are the face event's stages followed by the matcher's.
func faceLatencies(ev *fv1.FaceEvent, queue, match time.Duration) []*fv1.StageLatency {
	var out []*fv1.StageLatency
	for _, l := range ev.GetLatencies() {
		name := l.GetStage()
		if name == "queue" {
			// The embedder's queue is the frame's wait in FRAMES; "queue"
			// here is the matcher's (capture to receive).
			name = "embedder_queue"
		}
		out = append(out, &fv1.StageLatency{Stage: name, Duration: l.GetDuration()})
	}
	return append(out, &fv1.StageLatency{Stage: "queue", Duration: dur(queue)}, &fv1.StageLatency{Stage: "match", Duration: dur(match)})
}

// publishDecision stores one decision and waits for the PubAck. capture,
// when not zero, is the deciding frame's capture time: frame_to_decision is
// appended and observed.
func (m *Matcher) publishDecision(ctx context.Context, d *fv1.Decision, capture time.Time) error {
	d.SchemaVersion = events.SchemaVersion
	d.ModelId = m.cfg.Space
	d.Threshold = m.threshold
	now := m.cfg.Now()
	d.DecidedTime = timestamppb.New(now)
	if !capture.IsZero() {
		f2d := now.Sub(capture)
		d.Latencies = append(d.Latencies, &fv1.StageLatency{Stage: "frame_to_decision", Duration: dur(f2d)})
		defer m.m.frameToDecison.Observe(max(f2d, 0).Seconds())
	}
	if err := events.ValidateDecision(d); err != nil {
		return fmt.Errorf("matcher: built an invalid decision: %w", err)
	}
	subject, err := bus.DecisionsSubject(d.GetSite(), d.GetDoor())
	if err != nil {
		return fmt.Errorf("matcher: decision subject: %w", err)
	}
	hdr := nats.Header{}
	hdr.Set(bus.HeaderMsgID, d.GetDecisionId())
	hdr.Set(bus.HeaderSite, d.GetSite())
	hdr.Set(bus.HeaderDoor, d.GetDoor())
	telemetry.Inject(ctx, hdr)
	ack, err := bus.Publish(ctx, m.cfg.JetStream, subject, d, hdr)
	if err != nil {
		m.m.publishErrors.Inc()
		return fmt.Errorf("matcher: publish decision %s: %w", d.GetDecisionId(), err)
	}
	if !ack.Duplicate {
		m.m.decisions.WithLabelValues(outcomeLabel(d.GetOutcome()), modeLabel(d.GetMode())).Inc()
	}
	m.log.Debug("decision", zap.String("id", d.GetDecisionId()), zap.Stringer("outcome", d.GetOutcome()),
		zap.String("door", d.GetSite()+"/"+d.GetDoor()), zap.Bool("duplicate", ack.Duplicate))
	return nil
}

func outcomeLabel(o fv1.Outcome) string {
	return strings.ToLower(strings.TrimPrefix(o.String(), "OUTCOME_"))
}

func modeLabel(o fv1.Mode) string {
	return strings.ToLower(strings.TrimPrefix(o.String(), "MODE_"))
}

// publishError reports a bad input on facegate.errors.matcher. One report per
// input message (its stream sequence), however often it is redelivered.
func (m *Matcher) publishError(ctx context.Context, msg jetstream.Msg, code, text string, frame *fv1.FrameRef) error {
	subject, err := bus.ErrorsSubject(Service)
	if err != nil {
		return err
	}
	var seq uint64
	stream := ""
	if md, err := msg.Metadata(); err == nil {
		seq, stream = md.Sequence.Stream, md.Stream
	}
	ev := &fv1.ErrorEvent{
		SchemaVersion: events.SchemaVersion, Service: Service, Instance: m.cfg.Instance,
		Time: timestamppb.New(m.cfg.Now()), Code: code, Message: text,
		InputSubject: msg.Subject(), InputStreamSequence: seq, Frame: frame,
	}
	hdr := nats.Header{}
	hdr.Set(bus.HeaderMsgID, fmt.Sprintf("%s/%s/%d/%s", code, stream, seq, m.cfg.FacesDurable))
	telemetry.Inject(ctx, hdr)
	if _, err := bus.Publish(ctx, m.cfg.JetStream, subject, ev, hdr); err != nil {
		m.m.publishErrors.Inc()
		return fmt.Errorf("matcher: publish error event %s: %w", code, err)
	}
	return nil
}
