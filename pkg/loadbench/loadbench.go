// Package loadbench drives a running facegate pipeline (gateway-side frame
// publishing -> JetStream -> embedder -> matcher -> decisions) with N
// simulated cameras on loopback and measures what it sustains: the highest
// frame rate whose frames all become decisions without a growing queue, and
// frame-to-decision latency (p50/p90/p99) with the per-stage breakdown the
// decisions carry, at a chosen share (80%) of that rate.
//
// The cameras are simulated only in that they publish a pre-encoded real
// JPEG (one face, 640x480) instead of reading a sensor: the frames go through
// the real bus with the real headers, de-duplication ids and trace context a
// gateway sets, and every downstream stage is the real one. Latency is
// measured from the frame's capture time (set at publish) to the arrival of
// its decision at a subscriber, on one clock.
//
// Start runs the whole pipeline in-process (embedded NATS, an embedder
// worker, a directory and a matcher with one identify door per camera and
// the frame's person enrolled); RunAt measures one rate, Search the highest
// sustained one, and Run does all of it for `facegate bench load`.
package loadbench

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/embedder"
	"github.com/facegate/facegate/pkg/hostinfo"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// Config describes the cameras and the pipeline's subjects.
type Config struct {
	NC *nats.Conn
	JS jetstream.JetStream
	// Site and Cameras: cameras are named cam-0 .. cam-<N-1>; the pipeline
	// must map each to a door (identify) whose decisions go to
	// facegate.decisions.<Site>.<door>.
	Site    string
	Cameras int
	// Frame is the JPEG every camera sends.
	Frame         []byte
	Width, Height int
	// Warmup runs before each measured step at the step's rate and is not
	// counted; Duration is the measured part.
	Warmup, Duration time.Duration
	// Settle is how long to wait after the last frame for its decision.
	// Default 3 s.
	Settle time.Duration
	// Drain, when set, runs between search steps and waits until the
	// pipeline has no backlog (Stack.Drain): the queue an overloaded step
	// leaves behind must not load the next step. Without it a step waits
	// Settle.
	Drain func(context.Context) error
}

// CameraName is camera i's id.
func CameraName(i int) string { return fmt.Sprintf("cam-%d", i) }

// Stage is one stage's latency distribution in milliseconds.
type Stage struct {
	Stage string  `json:"stage"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Mean  float64 `json:"mean_ms"`
}

// Point is one measured rate.
type Point struct {
	OfferedFPS   float64 `json:"offered_fps"`
	PublishedFPS float64 `json:"published_fps"`
	DecidedFPS   float64 `json:"decided_fps"`
	Published    int     `json:"published"`
	Decided      int     `json:"decided"`
	// Missing frames got no decision within Settle (expired in the
	// embedder, still queued, or lost).
	Missing int `json:"missing"`
	// Expired counts the embedder's explicit expiries of these frames.
	Expired int     `json:"expired"`
	P50     float64 `json:"p50_ms"`
	P90     float64 `json:"p90_ms"`
	P99     float64 `json:"p99_ms"`
	Max     float64 `json:"max_ms"`
	// TrendMSPerS is the least-squares slope of latency against send time
	// over the window: a queue that grows (offered rate above capacity)
	// shows as a positive slope long before frames expire.
	TrendMSPerS float64 `json:"latency_trend_ms_per_s"`
	// WaitP50 is the median wait of a frame in FRAMES (the embedder's
	// queue stage), ServiceP50 the median analysis time of a frame
	// (decode, detect, align, embed).
	WaitP50    float64 `json:"embedder_wait_p50_ms"`
	ServiceP50 float64 `json:"analysis_p50_ms"`
	Stages     []Stage `json:"stages"`
	// Outcomes counts the measured frames' decisions by outcome
	// (OUTCOME_GRANT for all of them when the enrolled person matched).
	Outcomes  map[string]int `json:"outcomes"`
	Sustained bool           `json:"sustained"`
	// CPUCores is the CPU time the whole process (every service of the
	// stack and the cameras) used from the window's start to its last
	// decision, per second of wall time:
	// near the core count at saturation on an idle machine, lower when
	// other work takes the cores.
	CPUCores float64 `json:"cpu_cores_used"`
	// CPUPerFrameMS is that CPU time per decided frame: what a frame costs
	// the whole pipeline, much less sensitive to other work on the machine
	// than a rate. Meaningful for sustained steps only (an overloaded one
	// also pays for the warm-up's backlog).
	CPUPerFrameMS float64 `json:"cpu_ms_per_frame"`
	// Load is /proc/loadavg at the step's end: the machine may be shared.
	Load string `json:"load_average"`
	// Why names the first criterion a step that is not sustained failed.
	Why string `json:"why,omitempty"`
}

// MaxTrendMSPerS is the latency slope above which a step counts as a
// growing queue: offered 5% above capacity grows the queue by 50 ms per s.
const MaxTrendMSPerS = 25

// MaxP99MS is the tail a sustained step stays under.
const MaxP99MS = 1000

type frameKey struct {
	camera string
	seq    uint64
}

// run is one rate step: warm-up, then the measured window.
type run struct {
	cfg      Config
	mu       sync.Mutex
	sent     map[frameKey]time.Time
	got      map[frameKey]bool
	lat      []float64
	lsent    []float64 // send time of lat[i], s since the window's start
	service  []float64 // per frame: the embedder's analysis stages summed
	start    time.Time
	stages   map[string][]float64
	outcomes map[string]int
	expired  atomic.Int64
	measured atomic.Bool
	seq      []atomic.Uint64
}

// RunAt offers rate frames/s in total (spread evenly over the cameras) and
// measures the window after the warm-up.
func RunAt(ctx context.Context, cfg Config, rate float64) (Point, error) {
	if cfg.Cameras < 1 || rate <= 0 || len(cfg.Frame) == 0 {
		return Point{}, fmt.Errorf("loadbench: need cameras >= 1, rate > 0 and a frame (got %d, %v, %d bytes)", cfg.Cameras, rate, len(cfg.Frame))
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 3 * time.Second
	}
	r := &run{cfg: cfg, sent: map[frameKey]time.Time{}, got: map[frameKey]bool{}, stages: map[string][]float64{}, outcomes: map[string]int{},
		seq: make([]atomic.Uint64, cfg.Cameras)}
	// Sequences continue from the clock (µs) rather than 1: a late decision
	// or expiry of an earlier step's frame must not pass for this step's.
	base := uint64(time.Now().UnixMicro())
	for i := range r.seq {
		r.seq[i].Store(base)
	}
	decSubj := bus.Root + "." + string(bus.KindDecisions) + "." + cfg.Site + ".>"
	sub, err := cfg.NC.Subscribe(decSubj, r.onDecision)
	if err != nil {
		return Point{}, fmt.Errorf("loadbench: subscribe %s: %w", decSubj, err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // the connection outlives the step
	_ = sub.SetPendingLimits(-1, -1)
	esub, err := cfg.NC.Subscribe(bus.Root+"."+string(bus.KindErrors)+".>", r.onError)
	if err != nil {
		return Point{}, fmt.Errorf("loadbench: subscribe errors: %w", err)
	}
	defer esub.Unsubscribe() //nolint:errcheck
	if err := cfg.NC.Flush(); err != nil {
		return Point{}, err
	}

	if cfg.Warmup > 0 {
		if err := r.publish(ctx, rate, cfg.Warmup); err != nil {
			return Point{}, err
		}
	}
	start, cpu0 := time.Now(), processCPU()
	r.mu.Lock()
	r.start = start
	r.mu.Unlock()
	r.measured.Store(true)
	if err := r.publish(ctx, rate, cfg.Duration); err != nil {
		return Point{}, err
	}
	// Wait for the decisions of the last frames.
	deadline := time.Now().Add(cfg.Settle)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		done := len(r.got) >= len(r.sent)
		r.mu.Unlock()
		if done {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// CPU and wall time until the last decision, so that the frames'
	// whole processing is counted (for a sustained step, a latency after
	// the window).
	window := time.Since(start)
	cpu := processCPU() - cpu0
	r.measured.Store(false)
	r.mu.Lock()
	defer r.mu.Unlock()
	p := Point{OfferedFPS: rate, Published: len(r.sent), Decided: len(r.got), Expired: int(r.expired.Load())}
	p.Missing = p.Published - p.Decided
	p.Outcomes = maps.Clone(r.outcomes)
	p.Load = hostinfo.LoadAverage()
	p.CPUCores = cpu.Seconds() / window.Seconds()
	if p.Decided > 0 {
		p.CPUPerFrameMS = ms(cpu) / float64(p.Decided)
	}
	// Rates against the frames the cameras were due to send in the window
	// (each sends at its offset and every period after): dividing by the
	// window would count the first frame of every camera as extra.
	if due := framesDue(cfg.Cameras, rate, cfg.Duration); due > 0 {
		p.PublishedFPS = rate * float64(p.Published) / float64(due)
		p.DecidedFPS = rate * float64(p.Decided) / float64(due)
	}
	p.TrendMSPerS = slope(r.lsent, r.lat)
	sort.Float64s(r.lat)
	p.P50, p.P90, p.P99 = quantile(r.lat, 0.5), quantile(r.lat, 0.9), quantile(r.lat, 0.99)
	if len(r.lat) > 0 {
		p.Max = r.lat[len(r.lat)-1]
	}
	names := make([]string, 0, len(r.stages))
	for n := range r.stages {
		names = append(names, n)
	}
	// Pipeline order; stages this package does not know go last, sorted.
	slices.SortFunc(names, func(a, b string) int {
		ia, ib := stageRank(a), stageRank(b)
		if ia != ib {
			return ia - ib
		}
		return strings.Compare(a, b)
	})
	for _, n := range names {
		v := r.stages[n]
		sort.Float64s(v)
		sum := 0.0
		for _, x := range v {
			sum += x
		}
		p.Stages = append(p.Stages, Stage{Stage: n, P50: quantile(v, 0.5), P99: quantile(v, 0.99), Mean: sum / float64(len(v))})
	}
	svc := slices.Clone(r.service)
	sort.Float64s(svc)
	wait := slices.Clone(r.stages["embedder_queue"])
	sort.Float64s(wait)
	p.ServiceP50, p.WaitP50 = quantile(svc, 0.5), quantile(wait, 0.5)
	judge(&p)
	return p, nil
}

// judge decides whether a step was sustained: the pipeline kept up
// (published what was offered, decided every frame, nothing expired), no
// queue stood or grew (frames waited in FRAMES less than about two
// analyses at the median, latency did not climb through the window) and
// the tail stayed below a second.
func judge(p *Point) {
	p.Sustained, p.Why = false, ""
	switch {
	case p.Published == 0:
		p.Why = "nothing published"
	case p.PublishedFPS < 0.95*p.OfferedFPS:
		p.Why = "published below 95% of the offered rate"
	case p.Expired > 0:
		p.Why = "frames expired in the embedder"
	case p.Missing > p.Published/100:
		p.Why = "more than 1% of the frames got no decision"
	case p.P99 >= MaxP99MS:
		p.Why = fmt.Sprintf("p99 at or above %d ms", MaxP99MS)
	case p.TrendMSPerS > MaxTrendMSPerS:
		p.Why = fmt.Sprintf("latency grew %.0f ms per s (queue building up)", p.TrendMSPerS)
	case p.WaitP50 > 2*p.ServiceP50+10:
		p.Why = fmt.Sprintf("standing queue: frames waited %.0f ms in FRAMES at the median, analysis takes %.0f ms", p.WaitP50, p.ServiceP50)
	default:
		p.Sustained = true
	}
}

// slope is the least-squares slope of y over x (0 for fewer than 2 points).
func slope(x, y []float64) float64 {
	n := float64(len(x))
	if len(x) < 2 || len(x) != len(y) {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range x {
		sx, sy, sxx, sxy = sx+x[i], sy+y[i], sxx+x[i]*x[i], sxy+x[i]*y[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / den
}

// quantile of sorted values; 0 for none (JSON has no NaN).
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// period is a camera's time between frames at a total rate.
func period(cameras int, rate float64) time.Duration {
	return time.Duration(float64(time.Second) * float64(cameras) / rate)
}

// offset staggers camera i so that the cameras' frames do not arrive in
// bursts.
func offset(i, cameras int, per time.Duration) time.Duration {
	return per * time.Duration(i) / time.Duration(cameras)
}

// framesDue is how many frames the cameras send in d: camera i at its
// offset and every period after, until d.
func framesDue(cameras int, rate float64, d time.Duration) int {
	per := period(cameras, rate)
	n := 0
	for i := range cameras {
		if o := offset(i, cameras, per); o < d {
			n += int((d - o + per - 1) / per)
		}
	}
	return n
}

// publish runs every camera at rate/Cameras for d.
func (r *run) publish(ctx context.Context, rate float64, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	per := period(r.cfg.Cameras, rate)
	var wg sync.WaitGroup
	errc := make(chan error, r.cfg.Cameras)
	for i := range r.cfg.Cameras {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Stagger the cameras so their frames do not arrive in bursts.
			select {
			case <-time.After(offset(i, r.cfg.Cameras, per)):
			case <-ctx.Done():
				return
			}
			t := time.NewTicker(per)
			defer t.Stop()
			for {
				if err := r.send(ctx, i); err != nil && ctx.Err() == nil {
					errc <- err
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

func (r *run) send(ctx context.Context, cam int) error {
	camera := CameraName(cam)
	seq := r.seq[cam].Add(1)
	now := time.Now()
	subj, err := bus.FramesSubject(r.cfg.Site, camera)
	if err != nil {
		return err
	}
	fr := &facegatev1.Frame{SchemaVersion: 1, Image: r.cfg.Frame, Meta: &facegatev1.FrameMeta{
		SchemaVersion: 1, Site: r.cfg.Site, Camera: camera, CaptureTime: timestamppb.New(now), Sequence: seq,
		Width: uint32(r.cfg.Width), Height: uint32(r.cfg.Height), Encoding: facegatev1.ImageEncoding_IMAGE_ENCODING_JPEG,
		Gateway: "loadbench"}}
	h := nats.Header{}
	bus.FrameHeaders{Site: r.cfg.Site, Camera: camera, Seq: seq, CaptureTime: now}.Apply(h)
	h.Set(jetstream.MsgIDHeader, bus.FrameMsgID(r.cfg.Site, camera, seq, now))
	if r.measured.Load() {
		r.mu.Lock()
		r.sent[frameKey{camera, seq}] = now
		r.mu.Unlock()
	}
	if _, err := bus.Publish(ctx, r.cfg.JS, subj, fr, h); err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			r.mu.Lock()
			delete(r.sent, frameKey{camera, seq})
			r.mu.Unlock()
			return nil
		}
		return fmt.Errorf("loadbench: publish frame %s/%d: %w", camera, seq, err)
	}
	return nil
}

func (r *run) onDecision(m *nats.Msg) {
	recv := time.Now()
	var d facegatev1.Decision
	if err := proto.Unmarshal(m.Data, &d); err != nil {
		return
	}
	k := frameKey{d.GetFrame().GetCamera(), d.GetFrame().GetSequence()}
	r.mu.Lock()
	defer r.mu.Unlock()
	sent, ok := r.sent[k]
	if !ok || r.got[k] {
		return
	}
	r.got[k] = true
	r.outcomes[d.GetOutcome().String()]++
	total := ms(recv.Sub(sent))
	r.lat = append(r.lat, total)
	r.lsent = append(r.lsent, sent.Sub(r.start).Seconds())
	st := map[string]float64{}
	for _, s := range d.GetLatencies() {
		v := ms(s.GetDuration().AsDuration())
		st[s.GetStage()] = v
		r.stages[s.GetStage()] = append(r.stages[s.GetStage()], v)
	}
	// Derived stages, so that the breakdown adds up: the matcher's "queue"
	// is capture to matcher receive, which holds the embedder's own stages.
	inside, svc := 0.0, 0.0
	for _, n := range EmbedderStages {
		inside += st[n]
		if n != "embedder_queue" {
			svc += st[n]
		}
	}
	r.service = append(r.service, svc)
	if q, ok := st["queue"]; ok {
		r.stages[StageHandoff] = append(r.stages[StageHandoff], q-inside)
	}
	if f2d, ok := st["frame_to_decision"]; ok {
		r.stages[StageDelivery] = append(r.stages[StageDelivery], total-f2d)
	}
}

// EmbedderStages are the stages a decision carries from the face event.
var EmbedderStages = []string{"embedder_queue", "decode", "detect", "align", "embed", "liveness"}

// Derived stages the benchmark adds to the decision's own.
const (
	// StageHandoff is the matcher's queue less the embedder's stages:
	// storing the frame, building and storing the face event, and the
	// matcher's fetch.
	StageHandoff = "handoff"
	// StageDelivery is decision publication (the PubAck wait) and its
	// delivery to a subscriber: measured total less frame_to_decision.
	StageDelivery = "decision_delivery"
)

// StageOrder is the order of the stages in a report: a frame's path.
var StageOrder = []string{"embedder_queue", "decode", "detect", "align", "embed", "liveness", StageHandoff, "queue", "match", "frame_to_decision", StageDelivery}

func stageRank(s string) int {
	if i := slices.Index(StageOrder, s); i >= 0 {
		return i
	}
	return len(StageOrder)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (r *run) onError(m *nats.Msg) {
	if !strings.HasSuffix(m.Subject, "."+embedder.Service) {
		return
	}
	var e facegatev1.ErrorEvent
	if err := proto.Unmarshal(m.Data, &e); err != nil || e.GetCode() != embedder.CodeExpired {
		return
	}
	// Only this window's frames: a warm-up frame expiring now is the
	// warm-up's.
	k := frameKey{e.GetFrame().GetCamera(), e.GetFrame().GetSequence()}
	r.mu.Lock()
	_, ok := r.sent[k]
	r.mu.Unlock()
	if ok {
		r.expired.Add(1)
	}
}

// SearchOptions bound the search.
type SearchOptions struct {
	// Start is the first rate tried, frames/s in total. Default 8.
	Start float64
	// Max caps the rates tried (0 = 10000); a search that sustains Max
	// reports it as the maximum (capped).
	Max float64
	// Refine is how many bisection steps follow the doubling.
	Refine int
	// Progress, when set, receives every step's point.
	Progress func(Point)
}

// SearchResult is the outcome of Search.
type SearchResult struct {
	MaxSustained float64 `json:"max_sustained_fps"`
	// Capped: the search stopped at SearchOptions.Max without failing.
	Capped bool    `json:"capped"`
	Steps  []Point `json:"steps"`
}

// Search finds the highest sustained rate: it doubles from Start until a
// step is not sustained, then bisects between the last good and the first
// bad rate Refine times. Before every step the pipeline drains (cfg.Drain)
// or waits Settle.
func Search(ctx context.Context, cfg Config, o SearchOptions) (SearchResult, error) {
	if o.Start <= 0 {
		o.Start = 8
	}
	if o.Max <= 0 {
		o.Max = 10000
	}
	if o.Refine < 0 {
		return SearchResult{}, fmt.Errorf("loadbench: refine %d is negative", o.Refine)
	}
	var res SearchResult
	step := func(rate float64) (bool, error) {
		if err := settle(ctx, cfg); err != nil {
			return false, err
		}
		p, err := RunAt(ctx, cfg, rate)
		if err != nil {
			return false, err
		}
		res.Steps = append(res.Steps, p)
		if o.Progress != nil {
			o.Progress(p)
		}
		return p.Sustained, nil
	}
	good, bad := 0.0, 0.0
	for rate := min(o.Start, o.Max); ; rate = min(2*rate, o.Max) {
		ok, err := step(rate)
		if err != nil {
			return res, err
		}
		if !ok {
			bad = rate
			break
		}
		good = rate
		if rate >= o.Max {
			res.MaxSustained, res.Capped = good, true
			return res, nil
		}
	}
	for range o.Refine {
		mid := (good + bad) / 2
		ok, err := step(mid)
		if err != nil {
			return res, err
		}
		if ok {
			good = mid
		} else {
			bad = mid
		}
	}
	res.MaxSustained = good
	return res, nil
}

// settle lets the previous step's backlog drain.
func settle(ctx context.Context, cfg Config) error {
	if cfg.Drain != nil {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		return cfg.Drain(dctx)
	}
	d := cfg.Settle
	if d <= 0 {
		d = 3 * time.Second
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
