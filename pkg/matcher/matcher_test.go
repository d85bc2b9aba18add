package matcher

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/directory"
	dt "github.com/facegate/facegate/pkg/directory/directorytest"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/index"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

const img = "face-api.js/examples/images/"

type env struct {
	js    jetstream.JetStream
	dir   *directory.Directory
	m     *Matcher
	space string
	seq   atomic.Uint64
}

// notToday is a schedule that excludes today (and tomorrow) whatever the
// time: it only covers the day after tomorrow.
func notToday() string {
	d := time.Now().UTC().Add(48 * time.Hour).Weekday()
	return d.String()[:3] + " 00:00-24:00"
}

// newEnv starts NATS, enrols the test gallery, runs a directory and a
// matcher. Gallery: amy (staff), sheldon (staff), howard (staff + banned:
// DENY at front), leonard (night: allowed only on another day). Doors:
// hq/front IDENTIFY (cam1), hq/lab VERIFY (cam2), hq/vault VERIFY (cam3);
// cam9 serves nothing.
func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	_, _, js := natstest.Run(t, embedded.Options{})
	ctx := context.Background()
	if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	kp := dt.Keys(t)
	name, dim := dt.Space(t)
	enc := func(who string, n int) []float32 {
		return dt.Encoding(t, fmt.Sprintf("%s%s/%s%d.png", img, who, who, n))
	}
	var chs []*fv1.EnrolmentChange
	for _, p := range []struct{ id, badge string }{{"amy", "B-AMY"}, {"sheldon", "B-SHELDON"}, {"howard", "B-HOWARD"}, {"leonard", "B-LEONARD"}} {
		chs = append(chs, dt.Person(p.id, "hq", p.badge),
			dt.PhotoAdd(t, kp, name, p.id, p.id+"-1", enc(p.id, 1)),
			dt.PhotoAdd(t, kp, name, p.id, p.id+"-2", enc(p.id, 2)))
	}
	chs = append(chs,
		dt.Member("amy", "staff"), dt.Member("sheldon", "staff"), dt.Member("howard", "staff"), dt.Member("howard", "banned"),
		dt.Member("leonard", "night"),
		dt.Door("hq", "front", fv1.Mode_MODE_IDENTIFY, "cam1"),
		dt.Door("hq", "lab", fv1.Mode_MODE_VERIFY, "cam2"),
		dt.Door("hq", "vault", fv1.Mode_MODE_VERIFY, "cam3"),
		dt.Policy("staff-doors", "hq", []string{"staff"}, []string{"front", "lab"}, "", fv1.Effect_EFFECT_ALLOW, 0),
		dt.Policy("banned-front", "hq", []string{"banned"}, []string{"front"}, "", fv1.Effect_EFFECT_DENY, 10),
		dt.Policy("night-front", "hq", []string{"night"}, []string{"front"}, notToday(), fv1.Effect_EFFECT_ALLOW, 0),
	)
	dt.Publish(t, js, chs...)

	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	dir, err := directory.New(ctx, directory.Config{JetStream: js, Keys: kp, Spaces: []directory.Space{{Name: name, Dim: dim}},
		Log: zaptest.NewLogger(t).Named("dir"), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _ = dir.Run(runCtx) })
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := dir.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	cfg := Config{JetStream: js, Directory: dir, Site: "hq", Log: zaptest.NewLogger(t), Registerer: prometheus.NewRegistry(),
		AckWait: 2 * time.Second, FetchWait: 200 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m.Threshold() != 0.4163 && m.cfg.Threshold == 0 {
		t.Fatalf("threshold %v", m.Threshold())
	}
	wg.Go(func() {
		if err := m.Run(runCtx); err != nil {
			t.Errorf("matcher Run: %v", err)
		}
	})
	// The consumers exist once Run has created them; publish only after.
	waitFor(t, "matcher consumers", func() bool {
		_, err1 := js.Consumer(ctx, bus.StreamFaces, m.cfg.FacesDurable)
		_, err2 := js.Consumer(ctx, bus.StreamClaims, m.cfg.ClaimsDurable)
		return err1 == nil && err2 == nil
	})
	return &env{js: js, dir: dir, m: m, space: name}
}

// waitFor polls cond until it holds; the deadline only turns a hang into a
// failure, it is not what the test measures.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var analyses sync.Map

func analyze(t *testing.T, rel string) *face.Result {
	if r, ok := analyses.Load(rel); ok {
		return r.(*face.Result)
	}
	r := dt.Analyze(t, img+rel)
	analyses.Store(rel, r)
	return r
}

// faceEvent builds the FaceEvent the embedder would publish for a frame
// showing the given dataset images' faces (one frame per call; several
// images put their faces in one event).
func (e *env) faceEvent(t *testing.T, camera string, capture time.Time, rels ...string) *fv1.FaceEvent {
	t.Helper()
	ev := &fv1.FaceEvent{SchemaVersion: events.SchemaVersion, ModelId: e.space, ModelVersion: "test", DetectorId: face.DetectorModel,
		Frame:         &fv1.FrameRef{Site: "hq", Camera: camera, Sequence: e.seq.Add(1), CaptureTime: timestamppb.New(capture)},
		ProcessedTime: timestamppb.Now(), Embedder: "test"}
	for _, rel := range rels {
		res := analyze(t, rel)
		for _, f := range res.Faces {
			pf := &fv1.Face{Index: uint32(len(ev.Faces)),
				Box:     &fv1.Box{X: float32(f.Box.X), Y: float32(f.Box.Y), Width: float32(f.Box.W), Height: float32(f.Box.H)},
				Quality: &fv1.Quality{Passed: f.Quality.OK}, DetectorScore: float32(f.Score)}
			if f.Quality.OK {
				pf.Embedding, pf.EmbeddingDimension = f.Encoding, uint32(len(f.Encoding))
			} else {
				pf.Quality.RejectionReasons = []fv1.RejectionReason{fv1.RejectionReason_REJECTION_REASON_POSE}
			}
			ev.Faces = append(ev.Faces, pf)
		}
		tm := res.Timings
		if len(ev.Latencies) == 0 {
			for _, s := range []struct {
				n string
				d time.Duration
			}{{"queue", time.Millisecond}, {"decode", tm.Decode}, {"detect", tm.Detect}, {"align", tm.Align}, {"embed", tm.Encode}} {
				ev.Latencies = append(ev.Latencies, &fv1.StageLatency{Stage: s.n, Duration: durationpb.New(s.d)})
			}
		}
	}
	return ev
}

func (e *env) publishFace(t *testing.T, ev *fv1.FaceEvent, msgID string) {
	t.Helper()
	subj, err := bus.FacesSubject(ev.GetFrame().GetSite(), ev.GetFrame().GetCamera())
	if err != nil {
		t.Fatal(err)
	}
	hdr := nats.Header{}
	if msgID == "" {
		r := ev.GetFrame()
		msgID = bus.FrameMsgID(r.GetSite(), r.GetCamera(), r.GetSequence(), r.GetCaptureTime().AsTime()) + "/" + e.space
	}
	hdr.Set(bus.HeaderMsgID, msgID)
	if _, err := bus.Publish(context.Background(), e.js, subj, ev, hdr); err != nil {
		t.Fatal(err)
	}
}

func (e *env) face(t *testing.T, camera string, rels ...string) *fv1.FaceEvent {
	t.Helper()
	for _, rel := range rels {
		analyze(t, rel) // outside the measured capture-to-decision time
	}
	ev := e.faceEvent(t, camera, time.Now(), rels...)
	e.publishFace(t, ev, "")
	return ev
}

func (e *env) claim(t *testing.T, id, door, badge string, window time.Duration) {
	t.Helper()
	c := &fv1.Claim{SchemaVersion: events.SchemaVersion, ClaimId: id, Site: "hq", Door: door, BadgeId: badge,
		Time: timestamppb.Now(), Reader: "r1"}
	if window > 0 {
		c.Window = durationpb.New(window)
	}
	subj, err := bus.ClaimsSubject("hq", door)
	if err != nil {
		t.Fatal(err)
	}
	hdr := nats.Header{}
	hdr.Set(bus.HeaderMsgID, id)
	if _, err := bus.Publish(context.Background(), e.js, subj, c, hdr); err != nil {
		t.Fatal(err)
	}
}

// streamMsgs returns every message stored in a stream.
func streamMsgs(t *testing.T, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		msg, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, msg)
	}
	return out
}

func (e *env) decisions(t *testing.T) []*fv1.Decision {
	t.Helper()
	var out []*fv1.Decision
	for _, msg := range streamMsgs(t, e.js, bus.StreamDecisions) {
		d, err := bus.DecodeDecision(msg.Data)
		if err != nil {
			t.Fatalf("decision seq %d: %v", msg.Sequence, err)
		}
		if msg.Header.Get(bus.HeaderMsgID) != d.GetDecisionId() {
			t.Fatalf("decision %s stored with Nats-Msg-Id %q", d.GetDecisionId(), msg.Header.Get(bus.HeaderMsgID))
		}
		out = append(out, d)
	}
	return out
}

func (e *env) waitDecision(t *testing.T, what string, pred func(*fv1.Decision) bool) *fv1.Decision {
	t.Helper()
	var found *fv1.Decision
	waitFor(t, what, func() bool {
		for _, d := range e.decisions(t) {
			if pred(d) {
				found = d
				return true
			}
		}
		return false
	})
	return found
}

func forFrame(ev *fv1.FaceEvent) func(*fv1.Decision) bool {
	return func(d *fv1.Decision) bool { return proto.Equal(d.GetFrame(), ev.GetFrame()) && d.GetClaimId() == "" }
}

func forClaim(id string) func(*fv1.Decision) bool {
	return func(d *fv1.Decision) bool { return d.GetClaimId() == id }
}

func (e *env) processed(result string) float64 {
	return testutil.ToFloat64(e.m.m.faceEvents.WithLabelValues(result))
}

func stages(d *fv1.Decision) map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, l := range d.GetLatencies() {
		out[l.GetStage()] = l.GetDuration().AsDuration()
	}
	return out
}

func TestIdentify(t *testing.T) {
	e := newEnv(t, nil)
	th := float32(e.m.Threshold())
	cases := []struct {
		name, probe, person, rule string
		outcome                   fv1.Outcome
	}{
		{"known and allowed", "amy/amy4.png", "amy", "staff-doors", fv1.Outcome_OUTCOME_GRANT},
		{"known but denied by policy", "howard/howard3.png", "howard", "banned-front", fv1.Outcome_OUTCOME_DENY},
		{"known but outside the schedule", "leonard/leonard3.png", "leonard", "", fv1.Outcome_OUTCOME_DENY},
		{"stranger", "stuart/stuart1.png", "", "", fv1.Outcome_OUTCOME_UNKNOWN},
		{"low quality", "stuart/stuart5.png", "", "", fv1.Outcome_OUTCOME_LOW_QUALITY}, // head turned 23 degrees
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev := e.face(t, "cam1", c.probe)
			d := e.waitDecision(t, c.name, forFrame(ev))
			if d.GetOutcome() != c.outcome || d.GetPersonId() != c.person || d.GetPolicyRule() != c.rule {
				t.Fatalf("decision %v person %q rule %q, want %v %q %q", d.GetOutcome(), d.GetPersonId(), d.GetPolicyRule(), c.outcome, c.person, c.rule)
			}
			if d.GetMode() != fv1.Mode_MODE_IDENTIFY || d.GetSite() != "hq" || d.GetDoor() != "front" || d.GetCamera() != "cam1" ||
				d.GetModelId() != e.space || d.GetThreshold() != th {
				t.Fatalf("decision fields: %v", d)
			}
			wantID := FaceDecisionID(ev.GetFrame(), 0, e.space)
			if c.outcome == fv1.Outcome_OUTCOME_LOW_QUALITY {
				wantID = FrameDecisionID(ev.GetFrame(), e.space)
				if len(d.GetRejectionReasons()) == 0 {
					t.Fatal("LOW_QUALITY without reasons")
				}
			} else {
				if d.Distance == nil {
					t.Fatal("no distance")
				}
				if matched := d.GetPersonId() != ""; matched != (d.GetDistance() < th) {
					t.Fatalf("distance %v vs threshold %v for person %q", d.GetDistance(), th, d.GetPersonId())
				}
				s := stages(d)
				for _, st := range []string{"embedder_queue", "decode", "detect", "align", "embed", "queue", "match", "frame_to_decision"} {
					if _, ok := s[st]; !ok {
						t.Fatalf("latencies lack %q: %v", st, s)
					}
				}
				t.Logf("%s: distance %.3f, match %v, queue %v, frame_to_decision %v", c.name, d.GetDistance(), s["match"], s["queue"], s["frame_to_decision"])
			}
			if d.GetDecisionId() != wantID {
				t.Fatalf("decision id %q, want %q", d.GetDecisionId(), wantID)
			}
		})
	}
}

func TestSpoof(t *testing.T) {
	e := newEnv(t, nil)
	ev := e.faceEvent(t, "cam1", time.Now(), "amy/amy4.png")
	f := ev.Faces[0]
	f.Quality.Passed = false
	f.Quality.RejectionReasons = []fv1.RejectionReason{fv1.RejectionReason_REJECTION_REASON_NOT_LIVE}
	f.Embedding, f.EmbeddingDimension = nil, 0
	e.publishFace(t, ev, "")
	d := e.waitDecision(t, "spoof", forFrame(ev))
	if d.GetOutcome() != fv1.Outcome_OUTCOME_SPOOF || d.GetPersonId() != "" {
		t.Fatalf("spoof decision: %v", d)
	}
}

func TestCooldownOneGrantForManyFrames(t *testing.T) {
	e := newEnv(t, nil)
	const frames = 12
	start := time.Now()
	for i := range frames {
		// 10 frames a second, as a gateway samples them.
		e.publishFace(t, e.faceEvent(t, "cam1", start.Add(time.Duration(i)*100*time.Millisecond), "amy/amy4.png"), "")
	}
	waitFor(t, "all frames processed", func() bool { return e.processed("processed") == frames })
	grants := 0
	for _, d := range e.decisions(t) {
		if d.GetOutcome() == fv1.Outcome_OUTCOME_GRANT && d.GetPersonId() == "amy" {
			grants++
		}
	}
	if grants != 1 {
		t.Fatalf("%d GRANTs for %d frames within the cooldown, want 1", grants, frames)
	}
	if got := testutil.ToFloat64(e.m.m.suppressed.WithLabelValues("grant")); got != frames-1 {
		t.Fatalf("suppressed = %v", got)
	}
	// After the cooldown (on capture times) amy is granted again.
	e.publishFace(t, e.faceEvent(t, "cam1", start.Add(DefaultCooldown+time.Second), "amy/amy4.png"), "")
	waitFor(t, "second grant", func() bool {
		n := 0
		for _, d := range e.decisions(t) {
			if d.GetOutcome() == fv1.Outcome_OUTCOME_GRANT {
				n++
			}
		}
		return n == 2
	})
}

func TestRedeliveredFaceEventDecidesOnce(t *testing.T) {
	var failAck atomic.Bool
	failAck.Store(true)
	// No cooldown to hide behind: only the decision id de-duplicates.
	e := newEnv(t, func(c *Config) {
		c.Cooldown = time.Nanosecond
		c.afterDecisions = func() error {
			if failAck.CompareAndSwap(true, false) {
				return errors.New("crash before the ack")
			}
			return nil
		}
	})
	ev := e.face(t, "cam1", "amy/amy4.png")
	// The first delivery stored the decision and was not acked; the
	// redelivery (after AckWait) publishes the same decision id again.
	waitFor(t, "redelivery processed", func() bool { return e.processed("processed") == 2 })
	// The embedder re-publishing the frame's event (a new message) too.
	e.publishFace(t, ev, "republished-"+ev.GetFrame().GetCaptureTime().AsTime().String())
	waitFor(t, "republish processed", func() bool { return e.processed("processed") == 3 })
	ds := e.decisions(t)
	if len(ds) != 1 || ds[0].GetOutcome() != fv1.Outcome_OUTCOME_GRANT {
		t.Fatalf("DECISIONS holds %d decisions, want 1 GRANT: %v", len(ds), ds)
	}
	if got := testutil.ToFloat64(e.m.m.decisions.WithLabelValues("grant", "identify")); got != 1 {
		t.Fatalf("decisions counted %v", got)
	}
}

func TestUnmappedCameraAndOtherSpace(t *testing.T) {
	e := newEnv(t, nil)
	e.face(t, "cam9", "amy/amy4.png")
	waitFor(t, "unmapped", func() bool { return e.processed("unmapped") == 1 })
	other := e.faceEvent(t, "cam1", time.Now(), "amy/amy4.png")
	other.ModelId = "some-other-model"
	e.publishFace(t, other, "")
	waitFor(t, "other space", func() bool { return e.processed("other_space") == 1 })
	// Barrier: a later event on the same consumer is decided, so the two
	// before it were handled without a decision.
	last := e.face(t, "cam1", "amy/amy4.png")
	e.waitDecision(t, "barrier", forFrame(last))
	if ds := e.decisions(t); len(ds) != 1 {
		t.Fatalf("%d decisions, want only the barrier's: %v", len(ds), ds)
	}
	if got := testutil.ToFloat64(e.m.m.unmapped); got != 1 {
		t.Fatalf("unmapped = %v", got)
	}
}

func TestMalformedInputs(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if _, err := e.js.Publish(ctx, "facegate.faces.hq.cam1", []byte("\x08\x96\x01garbage that is not a FaceEvent")); err != nil {
		t.Fatal(err)
	}
	// Decodes, but is invalid (no frame).
	bad := &fv1.FaceEvent{SchemaVersion: events.SchemaVersion, ModelId: e.space}
	b, _ := proto.Marshal(bad)
	if _, err := e.js.Publish(ctx, "facegate.faces.hq.cam1", b); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(ctx, "facegate.claims.hq.lab", []byte("not a claim")); err != nil {
		t.Fatal(err)
	}
	e.claim(t, "c-nowhere", "nowhere", "B-AMY", 0)
	codes := map[string]int{}
	waitFor(t, "error events", func() bool {
		codes = map[string]int{}
		for _, msg := range streamMsgs(t, e.js, bus.StreamErrors) {
			ev := &fv1.ErrorEvent{}
			if err := bus.Decode(msg.Data, ev); err != nil {
				t.Fatal(err)
			}
			if ev.GetService() != Service || msg.Subject != "facegate.errors.matcher" {
				t.Fatalf("error event %v on %s", ev, msg.Subject)
			}
			codes[ev.GetCode()]++
		}
		return codes[CodeMalformedFaceEvent] == 2 && codes[CodeMalformedClaim] == 1 && codes[CodeUnknownDoor] == 1
	})
	// Still alive and deciding.
	ev := e.face(t, "cam1", "amy/amy4.png")
	if d := e.waitDecision(t, "after malformed", forFrame(ev)); d.GetOutcome() != fv1.Outcome_OUTCOME_GRANT {
		t.Fatalf("after malformed input: %v", d)
	}
	// Terminated, not redelivered: nothing is pending on the consumers.
	waitFor(t, "nothing pending", func() bool {
		for _, c := range []struct{ stream, name string }{{bus.StreamFaces, e.m.cfg.FacesDurable}, {bus.StreamClaims, e.m.cfg.ClaimsDurable}} {
			cons, err := e.js.Consumer(ctx, c.stream, c.name)
			if err != nil {
				t.Fatal(err)
			}
			info, err := cons.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.NumAckPending != 0 || info.NumPending != 0 {
				return false
			}
		}
		return true
	})
	if len(e.decisions(t)) != 1 {
		t.Fatal("malformed input produced a decision")
	}
}

func TestVerify(t *testing.T) {
	e := newEnv(t, nil)
	th := float32(e.m.Threshold())

	t.Run("matching claim then face", func(t *testing.T) {
		e.claim(t, "c-grant", "lab", "B-SHELDON", 0)
		waitFor(t, "window open", func() bool { return testutil.ToFloat64(e.m.m.claims.WithLabelValues("opened")) == 1 })
		ev := e.face(t, "cam2", "sheldon/sheldon3.png")
		d := e.waitDecision(t, "verify grant", forClaim("c-grant"))
		if d.GetOutcome() != fv1.Outcome_OUTCOME_GRANT || d.GetPersonId() != "sheldon" || d.GetMode() != fv1.Mode_MODE_VERIFY ||
			d.GetDecisionId() != ClaimDecisionID("c-grant") || !proto.Equal(d.GetFrame(), ev.GetFrame()) || d.GetDistance() >= th ||
			d.GetPolicyRule() != "staff-doors" {
			t.Fatalf("verify decision: %v", d)
		}
		if _, ok := stages(d)["match"]; !ok {
			t.Fatalf("no match latency: %v", d.GetLatencies())
		}
	})
	t.Run("face just before the claim", func(t *testing.T) {
		ev := e.face(t, "cam2", "amy/amy4.png")
		waitFor(t, "face buffered", func() bool { return e.processed("processed") == 2 })
		e.claim(t, "c-pre", "lab", "B-AMY", 0)
		d := e.waitDecision(t, "pre-claim grant", forClaim("c-pre"))
		if d.GetOutcome() != fv1.Outcome_OUTCOME_GRANT || d.GetPersonId() != "amy" || !proto.Equal(d.GetFrame(), ev.GetFrame()) {
			t.Fatalf("pre-claim decision: %v", d)
		}
	})
	t.Run("claim for another person", func(t *testing.T) {
		e.claim(t, "c-mismatch", "lab", "B-HOWARD", time.Second)
		waitFor(t, "window open", func() bool { return testutil.ToFloat64(e.m.m.claims.WithLabelValues("opened")) == 3 })
		e.face(t, "cam2", "sheldon/sheldon4.png")
		e.face(t, "cam2", "sheldon/sheldon5.png")
		d := e.waitDecision(t, "mismatch", forClaim("c-mismatch"))
		if d.GetOutcome() != fv1.Outcome_OUTCOME_MISMATCH || d.GetPersonId() != "howard" || d.Distance == nil || d.GetDistance() < th {
			t.Fatalf("mismatch decision: %v", d)
		}
	})
	t.Run("verified but denied by policy", func(t *testing.T) {
		// leonard's only policy is for the front door.
		e.claim(t, "c-deny", "lab", "B-LEONARD", 0)
		waitFor(t, "window open", func() bool { return testutil.ToFloat64(e.m.m.claims.WithLabelValues("opened")) == 4 })
		e.face(t, "cam2", "leonard/leonard3.png")
		d := e.waitDecision(t, "verify deny", forClaim("c-deny"))
		if d.GetOutcome() != fv1.Outcome_OUTCOME_DENY || d.GetPersonId() != "leonard" || d.GetDistance() >= th || d.GetPolicyRule() != "" {
			t.Fatalf("verify deny decision: %v", d)
		}
	})
	t.Run("unknown badge", func(t *testing.T) {
		e.claim(t, "c-badge", "lab", "B-NOBODY", 0)
		d := e.waitDecision(t, "unknown badge", forClaim("c-badge"))
		if d.GetOutcome() != fv1.Outcome_OUTCOME_UNKNOWN_BADGE || d.GetPersonId() != "" {
			t.Fatalf("unknown badge decision: %v", d)
		}
	})
	t.Run("no face", func(t *testing.T) {
		// At a door where no camera saw anyone.
		e.claim(t, "c-noface", "vault", "B-AMY", 500*time.Millisecond)
		d := e.waitDecision(t, "no face", forClaim("c-noface"))
		if d.GetOutcome() != fv1.Outcome_OUTCOME_NO_FACE {
			t.Fatalf("no-face decision: %v", d)
		}
	})
	// One decision per claim, every claim acked.
	seen := map[string]int{}
	for _, d := range e.decisions(t) {
		seen[d.GetClaimId()]++
	}
	for id, n := range seen {
		if id != "" && n != 1 {
			t.Errorf("claim %s has %d decisions", id, n)
		}
	}
	waitFor(t, "claims acked", func() bool {
		cons, _ := e.js.Consumer(context.Background(), bus.StreamClaims, e.m.cfg.ClaimsDurable)
		info, err := cons.Info(context.Background())
		return err == nil && info.NumAckPending == 0
	})
}

func TestAssignOnePersonPerFrame(t *testing.T) {
	res := []index.Result{
		{Persons: []index.PersonHit{{Person: "amy", Distance: 0.30}, {Person: "penny", Distance: 0.38}}},
		{Persons: []index.PersonHit{{Person: "amy", Distance: 0.25}, {Person: "bob", Distance: 0.5}}},
		{Persons: []index.PersonHit{{Person: "amy", Distance: 0.35}}},
		{},
	}
	got := Assign(res, 0.4)
	want := []Assignment{{"penny", 0.38, 0.30}, {"amy", 0.25, 0.25}, {"", 0, 0.35}, {"", 0, -1}}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("face %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("empty config accepted")
	}
	if _, err := ThresholdForSpace(t.TempDir(), "no-such-model"); err == nil {
		t.Fatal("unknown model accepted")
	}
	th, err := ThresholdForSpace(t.TempDir(), "dlib-resnet34-128+mirror")
	if err != nil || th <= 0 || th >= 1 {
		t.Fatalf("dlib threshold %v, %v", th, err)
	}
}

// TestTraceContextPropagates: a face event's trace context reaches its
// decision's headers, so a trace spans camera to door.
func TestTraceContextPropagates(t *testing.T) {
	e := newEnv(t, nil)
	for _, rel := range []string{"amy/amy4.png"} {
		analyze(t, rel)
	}
	ev := e.faceEvent(t, "cam1", time.Now(), "amy/amy4.png")
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	subj, _ := bus.FacesSubject("hq", "cam1")
	hdr := nats.Header{}
	hdr.Set(bus.HeaderMsgID, "traced")
	hdr.Set(bus.HeaderTraceParent, "00-"+traceID+"-00f067aa0ba902b7-01")
	if _, err := bus.Publish(context.Background(), e.js, subj, ev, hdr); err != nil {
		t.Fatal(err)
	}
	e.waitDecision(t, "traced decision", forFrame(ev))
	msgs := streamMsgs(t, e.js, bus.StreamDecisions)
	if len(msgs) != 1 {
		t.Fatalf("%d decisions", len(msgs))
	}
	if tp := msgs[0].Header.Get(bus.HeaderTraceParent); !strings.Contains(tp, traceID) {
		t.Fatalf("decision traceparent %q does not carry trace %s", tp, traceID)
	}
}

// TestOnePersonPerFrame: two faces in one frame both close to amy (a photo
// of amy held up next to her): only one passes as amy.
func TestOnePersonPerFrame(t *testing.T) {
	e := newEnv(t, nil)
	ev := e.face(t, "cam1", "amy/amy4.png", "amy/amy5.png")
	if len(ev.GetFaces()) != 2 {
		t.Fatalf("%d faces", len(ev.GetFaces()))
	}
	var got []*fv1.Decision
	waitFor(t, "two decisions", func() bool {
		got = nil
		for _, d := range e.decisions(t) {
			if forFrame(ev)(d) {
				got = append(got, d)
			}
		}
		return len(got) == 2
	})
	outcomes := map[fv1.Outcome]int{}
	for _, d := range got {
		outcomes[d.GetOutcome()]++
		if d.GetOutcome() == fv1.Outcome_OUTCOME_UNKNOWN && d.GetDistance() >= float32(e.m.Threshold()) {
			t.Fatalf("the second face is not close to amy (%v): the test proves nothing", d.GetDistance())
		}
	}
	if outcomes[fv1.Outcome_OUTCOME_GRANT] != 1 || outcomes[fv1.Outcome_OUTCOME_UNKNOWN] != 1 {
		t.Fatalf("outcomes %v, want one GRANT and one UNKNOWN", outcomes)
	}
}
