package loadbench

import (
	"bytes"
	"context"
	"image"
	"image/jpeg"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/pipelinebench"
	"github.com/facegate/facegate/pkg/quality"
	"github.com/facegate/facegate/pkg/testenv"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

func TestQuantile(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct{ q, want float64 }{{0.5, 5}, {0.9, 9}, {0.99, 10}, {0, 1}, {1, 10}} {
		if got := quantile(v, c.q); got != c.want {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	// No samples: 0, not NaN, which encoding/json refuses.
	if got := quantile(nil, 0.5); got != 0 {
		t.Errorf("quantile of nothing = %v, want 0", got)
	}
}

func TestSlope(t *testing.T) {
	x := []float64{0, 1, 2, 3, 4}
	y := []float64{10, 60, 110, 160, 210}
	if got := slope(x, y); math.Abs(got-50) > 1e-9 {
		t.Errorf("slope = %v, want 50", got)
	}
	if got := slope([]float64{1}, []float64{5}); got != 0 {
		t.Errorf("slope of one point = %v, want 0", got)
	}
	if got := slope([]float64{2, 2}, []float64{1, 9}); got != 0 {
		t.Errorf("slope with no x spread = %v, want 0", got)
	}
}

func TestJudge(t *testing.T) {
	ok := Point{OfferedFPS: 10, PublishedFPS: 10, Published: 100, Decided: 100, P99: 80, TrendMSPerS: 1, WaitP50: 1, ServiceP50: 30}
	cases := []struct {
		name string
		mod  func(*Point)
		why  string // "" = sustained
	}{
		{"kept up", func(*Point) {}, ""},
		{"nothing published", func(p *Point) { p.Published, p.Decided = 0, 0 }, "nothing published"},
		{"publisher fell behind", func(p *Point) { p.PublishedFPS = 9 }, "published below"},
		{"expired", func(p *Point) { p.Expired = 1 }, "expired"},
		{"missing", func(p *Point) { p.Missing, p.Decided = 2, 98 }, "no decision"},
		{"one missing of 100 is tolerated", func(p *Point) { p.Missing, p.Decided = 1, 99 }, ""},
		{"tail", func(p *Point) { p.P99 = 1000 }, "p99"},
		{"growing queue", func(p *Point) { p.TrendMSPerS = 50 }, "grew"},
		{"standing queue", func(p *Point) { p.WaitP50 = 300 }, "standing queue"},
	}
	for _, c := range cases {
		p := ok
		c.mod(&p)
		judge(&p)
		if c.why == "" {
			if !p.Sustained || p.Why != "" {
				t.Errorf("%s: sustained=%v why=%q, want sustained", c.name, p.Sustained, p.Why)
			}
			continue
		}
		if p.Sustained || !strings.Contains(p.Why, c.why) {
			t.Errorf("%s: sustained=%v why=%q, want not sustained because %q", c.name, p.Sustained, p.Why, c.why)
		}
	}
}

func TestRunAtRejectsBadConfig(t *testing.T) {
	for _, cfg := range []struct {
		c    Config
		rate float64
	}{{Config{Cameras: 0, Frame: []byte{1}}, 1}, {Config{Cameras: 1, Frame: []byte{1}}, 0}, {Config{Cameras: 1}, 1}} {
		if _, err := RunAt(context.Background(), cfg.c, cfg.rate); err == nil {
			t.Errorf("RunAt(%+v, %v): no error", cfg.c, cfg.rate)
		}
	}
	if _, err := Search(context.Background(), Config{}, SearchOptions{Refine: -1}); err == nil {
		t.Error("Search with a negative refine: no error")
	}
}

func TestOptionsDefaultsAndLimits(t *testing.T) {
	o, err := Options{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.Cameras != 4 || o.Step != 5*time.Second || o.At80 != 20*time.Second || o.Concurrency < 1 {
		t.Errorf("defaults: %+v", o)
	}
	for _, bad := range []Options{{Cameras: -1}, {Refine: -1}, {Step: -time.Second}, {Concurrency: -2}, {MaxRate: -1}} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

var benchEngine struct {
	once sync.Once
	eng  *face.Engine
	c    *modelcache.Cache
	jpeg []byte
	err  error
}

// engineAndFrame opens the engine as Run does (gate opened to BenchMaxYaw)
// and builds the frame of `facegate bench pipeline`, once per test binary.
func engineAndFrame(t testing.TB) (*face.Engine, []byte) {
	t.Helper()
	root := testenv.Models(t)
	benchEngine.once.Do(func() {
		c, err := modelcache.New(root, nil)
		if err != nil {
			benchEngine.err = err
			return
		}
		rt, err := inference.Open(inference.Options{LibraryPath: c.LibraryPath(), IntraOpThreads: 1})
		if err != nil {
			benchEngine.err = err
			return
		}
		q := quality.DefaultThresholds()
		q.MaxYaw = BenchMaxYaw
		eng, err := face.Open(context.Background(), rt, c, face.Options{Quality: &q})
		if err != nil {
			benchEngine.err = err
			return
		}
		frames, err := pipelinebench.BuildFrames(context.Background(), eng, c, []pipelinebench.Size{{W: 640, H: 480}})
		if err != nil {
			benchEngine.err = err
			return
		}
		for _, f := range frames {
			if f.Faces == 1 {
				benchEngine.jpeg = f.JPEG
			}
		}
		benchEngine.eng, benchEngine.c = eng, c
	})
	if benchEngine.err != nil {
		t.Fatalf("open engine and frame: %v", benchEngine.err)
	}
	return benchEngine.eng, benchEngine.jpeg
}

func startStack(t testing.TB, cameras int) (*Stack, []byte) {
	t.Helper()
	eng, frame := engineAndFrame(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := Start(ctx, StackConfig{Engine: eng, Frame: frame, Site: Site, Cameras: cameras, ModelCacheRoot: benchEngine.c.Root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close stack: %v", err)
		}
	})
	return st, frame
}

// TestRunAtEveryFrameGranted: through the real pipeline, every measured
// frame of every camera becomes a GRANT of the enrolled person (so the
// search and policy stages run), the latencies are consistent and the
// decisions' stages are all reported.
func TestRunAtEveryFrameGranted(t *testing.T) {
	st, frame := startStack(t, 2)
	cfg := Config{NC: st.NC, JS: st.JS, Site: Site, Cameras: 2, Frame: frame, Width: 640, Height: 480,
		Duration: 1500 * time.Millisecond, Settle: 30 * time.Second, Drain: st.Drain}
	p, err := RunAt(context.Background(), cfg, 4)
	if err != nil {
		t.Fatal(err)
	}
	if p.Published < 4 || p.Decided != p.Published || p.Missing != 0 || p.Expired != 0 {
		t.Fatalf("published %d, decided %d, missing %d, expired %d", p.Published, p.Decided, p.Missing, p.Expired)
	}
	if p.Outcomes["OUTCOME_GRANT"] != p.Decided || len(p.Outcomes) != 1 {
		t.Errorf("outcomes %v, want %d grants", p.Outcomes, p.Decided)
	}
	if !(p.P50 > 0 && p.P50 <= p.P90 && p.P90 <= p.P99 && p.P99 <= p.Max) {
		t.Errorf("quantiles out of order: %+v", p)
	}
	have := map[string]Stage{}
	for _, s := range p.Stages {
		have[s.Stage] = s
	}
	for _, n := range []string{"embedder_queue", "decode", "detect", "align", "embed", StageHandoff, "queue", "match", "frame_to_decision", StageDelivery} {
		if _, ok := have[n]; !ok {
			t.Errorf("stage %s missing from %v", n, p.Stages)
		}
	}
	// frame_to_decision is measured by the matcher on the same clock and
	// ends before the decision reaches the subscriber.
	if f := have["frame_to_decision"]; f.P50 > p.P50 {
		t.Errorf("frame_to_decision p50 %v > measured p50 %v", f.P50, p.P50)
	}
	if err := st.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestSearchCapped: a search whose cap is sustained reports the cap as the
// maximum, marked capped, after one step per rate tried.
func TestSearchCapped(t *testing.T) {
	st, frame := startStack(t, 1)
	cfg := Config{NC: st.NC, JS: st.JS, Site: Site, Cameras: 1, Frame: frame, Width: 640, Height: 480,
		Duration: time.Second, Settle: 30 * time.Second, Drain: st.Drain}
	var seen []float64
	res, err := Search(context.Background(), cfg, SearchOptions{Start: 1, Max: 2, Progress: func(p Point) { seen = append(seen, p.OfferedFPS) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Steps) != len(seen) || len(seen) == 0 || seen[0] != 1 {
		t.Fatalf("steps %v, progress %v", res.Steps, seen)
	}
	// On a loaded machine 2 frames/s might fail; either way the result
	// must follow the steps.
	last := res.Steps[len(res.Steps)-1]
	switch {
	case res.Capped:
		if res.MaxSustained != 2 || !last.Sustained || last.OfferedFPS != 2 {
			t.Errorf("capped at %v, last step %+v", res.MaxSustained, last)
		}
	case res.MaxSustained == 1:
		if last.Sustained {
			t.Errorf("not capped but the last step was sustained: %+v", last)
		}
	default:
		t.Logf("not even 1 frame/s sustained: %+v", res.Steps)
	}
}

func TestStartRejectsFrameWithoutFace(t *testing.T) {
	eng, _ := engineAndFrame(t)
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, image.NewGray(image.Rect(0, 0, 320, 240)), nil); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), StackConfig{Engine: eng, Frame: buf.Bytes(), Site: Site, Cameras: 1})
	if err == nil || !strings.Contains(err.Error(), "0 faces passing quality") {
		t.Fatalf("err = %v, want a frame without a usable face refused", err)
	}
	if _, err := Start(context.Background(), StackConfig{Engine: eng, Frame: buf.Bytes(), Site: "bad site", Cameras: 1}); err == nil {
		t.Fatal("a site with a space: no error")
	}
}

// BenchmarkFrameToDecision is the unloaded latency floor of the bus
// pipeline: one frame at a time, from publish to its decision's arrival.
// The stages' means are reported as extra metrics (ms).
func BenchmarkFrameToDecision(b *testing.B) {
	st, frame := startStack(b, 1)
	r := &run{cfg: Config{NC: st.NC, JS: st.JS, Site: Site, Cameras: 1, Frame: frame, Width: 640, Height: 480},
		sent: map[frameKey]time.Time{}, got: map[frameKey]bool{}, stages: map[string][]float64{}, outcomes: map[string]int{},
		seq: make([]atomic.Uint64, 1), start: time.Now()}
	got := make(chan struct{}, 16)
	sub, err := st.NC.Subscribe("facegate.decisions."+Site+".>", func(m *nats.Msg) {
		r.onDecision(m)
		got <- struct{}{}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe() //nolint:errcheck
	r.measured.Store(true)
	ctx := context.Background()
	for b.Loop() {
		if err := r.send(ctx, 0); err != nil {
			b.Fatal(err)
		}
		<-got
	}
	b.StopTimer()
	r.mu.Lock()
	defer r.mu.Unlock()
	for n, v := range r.stages {
		sum := 0.0
		for _, x := range v {
			sum += x
		}
		b.ReportMetric(sum/float64(len(v)), n+"_ms")
	}
}

func TestFramesDue(t *testing.T) {
	for _, c := range []struct {
		cameras int
		rate    float64
		d       time.Duration
		want    int
	}{
		{1, 2, time.Second, 2},               // at 0 and 0.5 s
		{2, 6.4, 3 * time.Second, 20},        // period 312.5 ms: 10 per camera
		{4, 40, 5 * time.Second, 200},        // exact
		{4, 4, 500 * time.Millisecond, 2},    // cameras 2 and 3 start after the window
		{1, 1, 0, 0},                         // no window
		{3, 30, 1500 * time.Millisecond, 45}, // period 100 ms, offsets 0, 33, 66 ms
	} {
		if got := framesDue(c.cameras, c.rate, c.d); got != c.want {
			t.Errorf("framesDue(%d, %v, %v) = %d, want %d", c.cameras, c.rate, c.d, got, c.want)
		}
	}
}

func newRun() *run {
	return &run{sent: map[frameKey]time.Time{}, got: map[frameKey]bool{}, stages: map[string][]float64{}, outcomes: map[string]int{}}
}

func TestOnErrorCountsOnlyThisWindowsExpiries(t *testing.T) {
	r := newRun()
	r.sent[frameKey{"cam-0", 7}] = time.Now()
	msg := func(subject, code string, seq uint64) *nats.Msg {
		b, err := proto.Marshal(&fv1.ErrorEvent{Code: code, Frame: &fv1.FrameRef{Camera: "cam-0", Sequence: seq}})
		if err != nil {
			t.Fatal(err)
		}
		return &nats.Msg{Subject: subject, Data: b}
	}
	r.onError(msg("facegate.errors.embedder", "expired", 7))
	r.onError(msg("facegate.errors.embedder", "expired", 6))         // a warm-up frame
	r.onError(msg("facegate.errors.embedder", "malformed_frame", 7)) // not an expiry
	r.onError(msg("facegate.errors.matcher", "expired", 7))          // another service
	r.onError(&nats.Msg{Subject: "facegate.errors.embedder", Data: []byte{0xff}})
	if got := r.expired.Load(); got != 1 {
		t.Fatalf("expired = %d, want 1", got)
	}
}

func TestOnDecisionDerivesStages(t *testing.T) {
	r := newRun()
	sent := time.Now().Add(-100 * time.Millisecond)
	r.start = sent.Add(-time.Second)
	r.sent[frameKey{"cam-1", 3}] = sent
	stage := func(n string, ms int) *fv1.StageLatency {
		return &fv1.StageLatency{Stage: n, Duration: durationpb.New(time.Duration(ms) * time.Millisecond)}
	}
	d := &fv1.Decision{Outcome: fv1.Outcome_OUTCOME_GRANT, Frame: &fv1.FrameRef{Camera: "cam-1", Sequence: 3},
		Latencies: []*fv1.StageLatency{stage("embedder_queue", 5), stage("decode", 10), stage("detect", 20), stage("align", 2),
			stage("embed", 30), stage("queue", 70), stage("match", 1), stage("frame_to_decision", 72)}}
	b, err := proto.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	r.onDecision(&nats.Msg{Data: b})
	r.onDecision(&nats.Msg{Data: b}) // a redelivered decision counts once
	other := proto.Clone(d).(*fv1.Decision)
	other.Frame.Sequence = 99 // not sent in this window
	if b2, err := proto.Marshal(other); err == nil {
		r.onDecision(&nats.Msg{Data: b2})
	}
	if len(r.lat) != 1 || r.outcomes["OUTCOME_GRANT"] != 1 {
		t.Fatalf("latencies %v, outcomes %v", r.lat, r.outcomes)
	}
	if h := r.stages[StageHandoff]; len(h) != 1 || h[0] != 3 { // 70 - (5+10+20+2+30)
		t.Errorf("handoff %v, want [3]", h)
	}
	if del := r.stages[StageDelivery]; len(del) != 1 || del[0] < 100-72 || del[0] > 1000 {
		t.Errorf("decision delivery %v, want about 28 ms and more", del)
	}
	if len(r.service) != 1 || r.service[0] != 62 {
		t.Errorf("analysis %v, want [62]", r.service)
	}
}

// FuzzDecisionMessages: whatever arrives on the subjects, the handlers
// neither panic nor count a frame this window did not send.
func FuzzDecisionMessages(f *testing.F) {
	d, _ := proto.Marshal(&fv1.Decision{Frame: &fv1.FrameRef{Camera: "cam-0", Sequence: 1},
		Latencies: []*fv1.StageLatency{{Stage: "queue", Duration: durationpb.New(time.Millisecond)}}})
	e, _ := proto.Marshal(&fv1.ErrorEvent{Code: "expired", Frame: &fv1.FrameRef{Camera: "cam-0", Sequence: 1}})
	f.Add(d)
	f.Add(e)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := newRun()
		r.sent[frameKey{"cam-0", 1}] = time.Now()
		r.onDecision(&nats.Msg{Data: b})
		r.onError(&nats.Msg{Subject: "facegate.errors.embedder", Data: b})
		if len(r.got) > 1 || len(r.lat) > 1 || r.expired.Load() > 1 {
			t.Fatalf("counted %d decisions, %d expiries for one frame sent", len(r.lat), r.expired.Load())
		}
		for k := range r.got {
			if _, ok := r.sent[k]; !ok {
				t.Fatalf("decision for %v, which was not sent", k)
			}
		}
	})
}

func TestReportTable(t *testing.T) {
	rep := &Report{CPU: "cpu", Cores: 2, Space: "s+mirror", Mirror: true, Cameras: 4, Embedders: 1, Concurrency: 2,
		LoadBefore: "1.00 1.00 1.00", GateNote: "gate opened", GoalP99: GoalP99MS,
		Search:       SearchResult{MaxSustained: 32, Capped: true},
		ReferenceFPS: 40, ReferenceCPUCores: 1.2, BusRatio: 0.8, ReferenceCPUPerFrameMS: 30, CPUPerFrameMS: 31, CPURatio: 1.03, ProjectedMaxFPS: 64.5,
		At80: Point{OfferedFPS: 25.6, P50: 31.5, P90: 50, P99: 120.25, Max: 130, Outcomes: map[string]int{"OUTCOME_GRANT": 3},
			Stages: []Stage{{Stage: "embed", P50: 12.5, P99: 20, Mean: 13}}, Sustained: true},
		GoalMet: true}
	tab := rep.Table()
	for _, want := range []string{"max sustained: 32.0 frames/s (capped", "note: gate opened", "bus/pipeline ratio 0.80",
		"about 64 frames/s", "p99 120.2 ms", "embed", "12.50", "goal p99 < 150 ms at 80% of the maximum: met", "OUTCOME_GRANT:3"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	line := StepLine(Point{OfferedFPS: 8, Why: "p99 at or above 1000 ms"})
	if !strings.Contains(line, "NOT sustained: p99") {
		t.Errorf("step line %q", line)
	}
}
