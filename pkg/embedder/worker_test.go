package embedder

import (
	"context"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/imaging"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/testenv"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// The engine is opened once per test binary: ONNX Runtime's environment is
// process-wide and loading the models costs seconds.
var shared struct {
	once    sync.Once
	engine  *face.Engine
	version string
	err     error
}

func engine(t *testing.T) (*face.Engine, string) {
	t.Helper()
	root := testenv.Models(t)
	shared.once.Do(func() {
		c, err := modelcache.New(root, nil)
		if err != nil {
			shared.err = err
			return
		}
		rt, err := inference.Open(inference.Options{LibraryPath: c.LibraryPath(), IntraOpThreads: 1})
		if err != nil {
			shared.err = err
			return
		}
		e, err := face.Open(context.Background(), rt, c, face.Options{})
		if err != nil {
			shared.err = err
			return
		}
		p, err := c.Manifest.Package(e.Model().Package)
		if err != nil {
			shared.err = err
			return
		}
		shared.engine, shared.version = e, p.Version
	})
	if shared.err != nil {
		t.Fatalf("open face engine: %v", shared.err)
	}
	return shared.engine, shared.version
}

const (
	site   = "hq"
	camera = "lobby-1"
)

type env struct {
	js      jetstream.JetStream
	engine  *face.Engine
	version string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e, version := engine(t)
	_, _, js := natstest.Run(t, embedded.Options{})
	cfg := bus.DefaultConfig()
	for _, o := range []*bus.StreamOptions{&cfg.Frames, &cfg.Faces, &cfg.Errors} {
		o.Storage = jetstream.MemoryStorage
	}
	if err := bus.EnsureStreams(testCtx(t), js, cfg); err != nil {
		t.Fatal(err)
	}
	return &env{js: js, engine: e, version: version}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) config(t *testing.T) Config {
	return Config{
		Engine: e.engine, JetStream: e.js, ModelVersion: e.version,
		Batch: 4, Concurrency: 2, FetchWait: 200 * time.Millisecond,
		Instance: "test-" + t.Name()[:min(len(t.Name()), 20)], Log: zaptest.NewLogger(t),
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type testImage struct {
	name  string
	data  []byte
	enc   facegatev1.ImageEncoding
	faces int // faces the detector finds, known from the datasets' own counts
}

func images(t *testing.T) (sample1, crop, noFace testImage) {
	t.Helper()
	root := testenv.Models(t)
	sample1 = testImage{"sample1.jpg", readFile(t, filepath.Join(root, "packages", "vladmandic-face-api-1.7.15", "demo", "sample1.jpg")),
		facegatev1.ImageEncoding_IMAGE_ENCODING_JPEG, 3}
	crop = testImage{"amy1.png", readFile(t, testenv.Dataset(t, "face-api.js/examples/images/amy/amy1.png")),
		facegatev1.ImageEncoding_IMAGE_ENCODING_PNG, 1}
	noFace = testImage{"skimage_brick.png", readFile(t, testenv.Dataset(t, "detector/nonface/skimage_brick.png")),
		facegatev1.ImageEncoding_IMAGE_ENCODING_PNG, 0}
	return
}

func crops(t *testing.T, n int) []testImage {
	t.Helper()
	var out []testImage
	for _, who := range []string{"amy", "bernadette", "howard", "leonard", "penny", "raj", "sheldon", "stuart"} {
		for i := 1; i <= 5 && len(out) < n; i++ {
			name := fmt.Sprintf("%s%d.png", who, i)
			out = append(out, testImage{name, readFile(t, testenv.Dataset(t, filepath.Join("face-api.js/examples/images", who, name))),
				facegatev1.ImageEncoding_IMAGE_ENCODING_PNG, 1})
		}
	}
	return out
}

// publishFrame publishes a frame as a gateway does (frame headers, frame
// message id).
func (e *env) publishFrame(t *testing.T, seq uint64, captured time.Time, img testImage) {
	t.Helper()
	f := &facegatev1.Frame{
		SchemaVersion: events.SchemaVersion,
		Meta: &facegatev1.FrameMeta{SchemaVersion: events.SchemaVersion, Site: site, Camera: camera,
			CaptureTime: timestamppb.New(captured), Sequence: seq, Encoding: img.enc, Gateway: "test"},
		Image: img.data,
	}
	subject, err := bus.FramesSubject(site, camera)
	if err != nil {
		t.Fatal(err)
	}
	hdr := nats.Header{}
	bus.FrameHeaders{Site: site, Camera: camera, Seq: seq, CaptureTime: captured}.Apply(hdr)
	hdr.Set(bus.HeaderMsgID, bus.FrameMsgID(site, camera, seq, captured))
	if _, err := bus.Publish(testCtx(t), e.js, subject, f, hdr); err != nil {
		t.Fatalf("publish frame %d (%s): %v", seq, img.name, err)
	}
}

// stored returns every message of a stream, in order.
func (e *env) stored(t *testing.T, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := testCtx(t)
	s, err := e.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("%s seq %d: %v", stream, seq, err)
		}
		out = append(out, m)
	}
	return out
}

func (e *env) faceEvents(t *testing.T) []*facegatev1.FaceEvent {
	t.Helper()
	var out []*facegatev1.FaceEvent
	for _, m := range e.stored(t, bus.StreamFaces) {
		ev, err := bus.DecodeFaceEvent(m.Data)
		if err != nil {
			t.Fatalf("face event at seq %d: %v", m.Sequence, err)
		}
		if got := m.Header.Get(bus.HeaderSeq); got != fmt.Sprint(ev.GetFrame().GetSequence()) {
			t.Errorf("face event of frame %d has header %s %q", ev.GetFrame().GetSequence(), bus.HeaderSeq, got)
		}
		out = append(out, ev)
	}
	return out
}

func (e *env) errorEvents(t *testing.T) []*facegatev1.ErrorEvent {
	t.Helper()
	var out []*facegatev1.ErrorEvent
	for _, m := range e.stored(t, bus.StreamErrors) {
		ev := &facegatev1.ErrorEvent{}
		if err := bus.DecodeMsg(m.Header, m.Data, ev); err != nil {
			t.Fatalf("error event at seq %d: %v", m.Sequence, err)
		}
		out = append(out, ev)
	}
	return out
}

// running is a Worker started in the background.
type running struct {
	w      *Worker
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfg Config) *running {
	t.Helper()
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{w: w, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the worker and waits for its drain.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Run: %v", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not drain within 30 s")
	}
}

// ended counts frames that reached an end (published, expired, poison).
func ended(w *Worker) uint64 {
	s := w.Stats()
	return s.Published.Load() + s.Expired.Load() + s.Poison.Load()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) consumerInfo(t *testing.T, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	ctx := testCtx(t)
	c, err := e.js.Consumer(ctx, bus.StreamFrames, durable)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func norm(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

func TestFramesBecomeFaceEvents(t *testing.T) {
	e := newEnv(t)
	sample1, crop, noFace := images(t)
	imgs := []testImage{sample1, crop, noFace}
	now := time.Now()
	for i, img := range imgs {
		e.publishFrame(t, uint64(i+1), now, img)
	}
	cfg := e.config(t)
	cfg.Crops = true
	r := start(t, cfg)
	waitFor(t, "3 frames", func() bool { return ended(r.w) == 3 })
	r.stop(t)

	evs := e.faceEvents(t)
	if len(evs) != len(imgs) {
		t.Fatalf("%d face events for %d frames", len(evs), len(imgs))
	}
	withEmbedding := 0
	for _, ev := range evs {
		seq := ev.GetFrame().GetSequence()
		if seq < 1 || seq > uint64(len(imgs)) {
			t.Fatalf("face event for unknown frame %d", seq)
		}
		img := imgs[seq-1]
		if got := len(ev.GetFaces()); got != img.faces {
			t.Errorf("%s: %d faces, want %d", img.name, got, img.faces)
		}
		if ev.GetModelId() != e.engine.Space() || ev.GetModelVersion() != e.version || ev.GetDetectorId() != face.DetectorModel {
			t.Errorf("%s: model %q version %q detector %q", img.name, ev.GetModelId(), ev.GetModelVersion(), ev.GetDetectorId())
		}
		if !ev.GetFrame().GetCaptureTime().AsTime().Equal(now) || ev.GetFrame().GetSite() != site || ev.GetFrame().GetCamera() != camera {
			t.Errorf("%s: frame ref %v", img.name, ev.GetFrame())
		}
		if len(ev.GetLatencies()) != 5 || ev.GetLatencies()[2].GetStage() != "detect" || ev.GetLatencies()[2].GetDuration().AsDuration() <= 0 {
			t.Errorf("%s: latencies %v", img.name, ev.GetLatencies())
		}
		// The same bytes through the engine directly: the event carries what
		// the engine computes, face for face.
		direct, err := e.engine.Analyze(testCtx(t), img.data)
		if err != nil {
			t.Fatal(err)
		}
		if len(direct.Faces) != len(ev.GetFaces()) {
			t.Fatalf("%s: engine finds %d faces, event has %d", img.name, len(direct.Faces), len(ev.GetFaces()))
		}
		for i, f := range ev.GetFaces() {
			d := direct.Faces[i]
			if len(f.GetKeypoints()) != 6 || f.GetKeypointLayout() != KeypointLayout {
				t.Errorf("%s face %d: %d keypoints, layout %q", img.name, i, len(f.GetKeypoints()), f.GetKeypointLayout())
			}
			crop, _, err := imaging.Decode(f.GetCropJpeg(), imaging.Limits{})
			if err != nil || crop.W != 112 || crop.H != 112 {
				t.Errorf("%s face %d: crop of %d bytes: %v", img.name, i, len(f.GetCropJpeg()), err)
			}
			if math.Abs(float64(f.GetBox().GetX())-d.Box.X) > 0.01 || math.Abs(float64(f.GetBox().GetWidth())-d.Box.W) > 0.01 {
				t.Errorf("%s face %d: box %v, engine %v", img.name, i, f.GetBox(), d.Box)
			}
			if f.GetQuality().GetPassed() != d.Quality.OK || (len(f.GetQuality().GetRejectionReasons()) == 0) != d.Quality.OK {
				t.Errorf("%s face %d: quality %v, engine %+v", img.name, i, f.GetQuality(), d.Quality)
			}
			if !d.Quality.OK {
				if len(f.GetEmbedding()) != 0 {
					t.Errorf("%s face %d failed the gate but carries an embedding", img.name, i)
				}
				for _, code := range f.GetQuality().GetRejectionReasons() {
					if code == facegatev1.RejectionReason_REJECTION_REASON_UNSPECIFIED {
						t.Errorf("%s face %d: reasons %q mapped to an unspecified rejection", img.name, i, d.Quality.Reasons)
					}
				}
				continue
			}
			withEmbedding++
			emb := f.GetEmbedding()
			if len(emb) != e.engine.Dim() || int(f.GetEmbeddingDimension()) != e.engine.Dim() {
				t.Fatalf("%s face %d: embedding of %d (dimension %d), want %d", img.name, i, len(emb), f.GetEmbeddingDimension(), e.engine.Dim())
			}
			if n := norm(emb); math.Abs(n-1) > 1e-5 {
				t.Errorf("%s face %d: norm %v", img.name, i, n)
			}
			if dist := face.Distance(emb, d.Encoding); dist > 1e-4 {
				t.Errorf("%s face %d: embedding %.2g away from the engine's", img.name, i, dist)
			}
		}
	}
	// sample1's three faces are turned or tilted beyond the default gate
	// (yaw 50, roll 47 and 33 degrees), so only the crop is embedded.
	if withEmbedding < 1 {
		t.Errorf("no face passed the quality gate; the portrait crop should")
	}
	s := r.w.Stats()
	if s.Published.Load() != 3 || s.Faces.Load() != 4 || s.Poison.Load() != 0 || s.Expired.Load() != 0 || s.Retried.Load() != 0 {
		t.Errorf("stats: published %d faces %d poison %d expired %d retried %d",
			s.Published.Load(), s.Faces.Load(), s.Poison.Load(), s.Expired.Load(), s.Retried.Load())
	}
	info := e.consumerInfo(t, r.w.Durable())
	if info.NumPending != 0 || info.NumAckPending != 0 || info.Delivered.Consumer != uint64(len(imgs)) {
		t.Errorf("consumer: pending %d, ack pending %d, deliveries %d; want every frame delivered and acked once",
			info.NumPending, info.NumAckPending, info.Delivered.Consumer)
	}
	if errs := e.errorEvents(t); len(errs) != 0 {
		t.Errorf("%d error events: first %v", len(errs), errs[0])
	}
}

func TestPoisonFramesAreTerminatedAndReported(t *testing.T) {
	e := newEnv(t)
	_, crop, _ := images(t)
	now := time.Now()
	subject, _ := bus.FramesSubject(site, camera)
	// Not a protobuf Frame at all.
	if _, err := e.js.Publish(testCtx(t), subject, []byte("\xff\xfe\x00 this is not a frame")); err != nil {
		t.Fatal(err)
	}
	// A valid Frame whose image is garbage.
	e.publishFrame(t, 2, now, testImage{"garbage", []byte("\xff\xd8\xff\xe0 truncated jpeg"), facegatev1.ImageEncoding_IMAGE_ENCODING_JPEG, 0})
	// The worker keeps going.
	e.publishFrame(t, 3, now, crop)

	r := start(t, e.config(t))
	waitFor(t, "3 frames", func() bool { return ended(r.w) == 3 })
	r.stop(t)

	s := r.w.Stats()
	if s.Poison.Load() != 2 || s.Published.Load() != 1 {
		t.Errorf("poison %d, published %d; want 2 and 1", s.Poison.Load(), s.Published.Load())
	}
	// The same counters as Prometheus sees them.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r.w.Collectors("test-space")...)
	exp := `
# HELP facegate_embedder_frames_poison_total Frames terminated as undecodable, with an error event.
# TYPE facegate_embedder_frames_poison_total counter
facegate_embedder_frames_poison_total{space="test-space"} 2
# HELP facegate_embedder_face_events_published_total Face events stored in the FACES stream (de-duplicated republishes included).
# TYPE facegate_embedder_face_events_published_total counter
facegate_embedder_face_events_published_total{space="test-space"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "facegate_embedder_frames_poison_total", "facegate_embedder_face_events_published_total"); err != nil {
		t.Errorf("metrics: %v", err)
	}
	evs := e.faceEvents(t)
	if len(evs) != 1 || evs[0].GetFrame().GetSequence() != 3 || len(evs[0].GetFaces()) != 1 {
		t.Fatalf("face events %v; want one for frame 3 with one face", evs)
	}
	errs := e.errorEvents(t)
	if len(errs) != 2 {
		t.Fatalf("%d error events, want 2", len(errs))
	}
	byCode := map[string]*facegatev1.ErrorEvent{}
	for _, ev := range errs {
		byCode[ev.GetCode()] = ev
		if ev.GetService() != Service || ev.GetInputSubject() != subject || ev.GetInputStreamSequence() == 0 || ev.GetMessage() == "" {
			t.Errorf("error event %v", ev)
		}
	}
	if ev := byCode[CodeMalformedFrame]; ev == nil || ev.GetInputStreamSequence() != 1 {
		t.Errorf("no %s event for stream sequence 1: %v", CodeMalformedFrame, errs)
	}
	if ev := byCode[CodeImageUndecodable]; ev == nil || ev.GetFrame().GetSequence() != 2 {
		t.Errorf("no %s event for frame 2: %v", CodeImageUndecodable, errs)
	}
	info := e.consumerInfo(t, r.w.Durable())
	if info.NumAckPending != 0 || info.Delivered.Consumer != 3 || info.NumPending != 0 {
		t.Errorf("consumer: ack pending %d, deliveries %d, pending %d; terminated frames must not come back",
			info.NumAckPending, info.Delivered.Consumer, info.NumPending)
	}
}

func TestStaleFrameExpires(t *testing.T) {
	e := newEnv(t)
	_, crop, _ := images(t)
	now := time.Now()
	e.publishFrame(t, 1, now.Add(-time.Minute), crop)
	e.publishFrame(t, 2, now, crop)
	cfg := e.config(t)
	cfg.MaxAge = 5 * time.Second
	r := start(t, cfg)
	waitFor(t, "2 frames", func() bool { return ended(r.w) == 2 })
	r.stop(t)

	if s := r.w.Stats(); s.Expired.Load() != 1 || s.Published.Load() != 1 {
		t.Errorf("expired %d, published %d; want 1 and 1", s.Expired.Load(), s.Published.Load())
	}
	evs := e.faceEvents(t)
	if len(evs) != 1 || evs[0].GetFrame().GetSequence() != 2 {
		t.Fatalf("face events %v; want only frame 2's", evs)
	}
	errs := e.errorEvents(t)
	if len(errs) != 1 || errs[0].GetCode() != CodeExpired || errs[0].GetFrame().GetSequence() != 1 {
		t.Fatalf("error events %v; want one expiry of frame 1", errs)
	}
	if info := e.consumerInfo(t, r.w.Durable()); info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("consumer: ack pending %d, pending %d", info.NumAckPending, info.NumPending)
	}
}

// A worker that stores face events but dies before acking (the hook) leaves
// the frames to be redelivered; the next worker republishes them with the
// same message ids and the FACES stream keeps one event per frame.
func TestRedeliveryDoesNotDuplicate(t *testing.T) {
	e := newEnv(t)
	imgs := crops(t, 3)
	now := time.Now()
	for i, img := range imgs {
		e.publishFrame(t, uint64(i+1), now, img)
	}
	cfg := e.config(t)
	cfg.AckWait = 2 * time.Second
	crashed := make(chan struct{}, 16)
	cfg.afterPublish = func(*facegatev1.FaceEvent) error {
		crashed <- struct{}{}
		return errors.New("simulated crash before ack")
	}
	first := start(t, cfg)
	for range imgs {
		select {
		case <-crashed:
		case <-time.After(30 * time.Second):
			t.Fatal("first worker did not publish")
		}
	}
	first.stop(t)
	if n := len(e.faceEvents(t)); n != len(imgs) {
		t.Fatalf("%d face events after the first worker, want %d", n, len(imgs))
	}
	if info := e.consumerInfo(t, first.w.Durable()); info.NumAckPending == 0 {
		t.Fatal("the first worker's frames are not pending acknowledgement; the crash was not simulated")
	}

	cfg.afterPublish = nil
	second := start(t, cfg)
	waitFor(t, "redelivered frames", func() bool { return second.w.Stats().Published.Load() >= uint64(len(imgs)) })
	second.stop(t)

	evs := e.faceEvents(t)
	if len(evs) != len(imgs) {
		t.Fatalf("%d face events for %d frames: redelivery duplicated", len(evs), len(imgs))
	}
	seen := map[uint64]bool{}
	for _, ev := range evs {
		seen[ev.GetFrame().GetSequence()] = true
	}
	if len(seen) != len(imgs) {
		t.Errorf("face events cover frames %v", seen)
	}
	// Both workers stored every event, yet the stream holds each once.
	if p1, p2 := first.w.Stats().Published.Load(), second.w.Stats().Published.Load(); p1 != uint64(len(imgs)) || p2 != uint64(len(imgs)) {
		t.Errorf("published %d then %d events, want %d each", p1, p2, len(imgs))
	}
	info := e.consumerInfo(t, second.w.Durable())
	if info.NumAckPending != 0 || info.NumPending != 0 || info.Delivered.Consumer < 2*uint64(len(imgs)) {
		t.Errorf("consumer: ack pending %d, pending %d, deliveries %d; want %d frames delivered twice and acked",
			info.NumAckPending, info.NumPending, info.Delivered.Consumer, len(imgs))
	}
}

// Cancelling a worker mid-stream finishes what it fetched; a second worker
// takes the rest; every frame ends as exactly one face event.
func TestDrainLosesNothing(t *testing.T) {
	e := newEnv(t)
	imgs := crops(t, 16)
	now := time.Now()
	for i, img := range imgs {
		e.publishFrame(t, uint64(i+1), now, img)
	}
	cfg := e.config(t)
	cfg.MaxAge = time.Minute
	first := start(t, cfg)
	waitFor(t, "first frames", func() bool { return first.w.Stats().Published.Load() >= 3 })
	first.stop(t)
	s1 := first.w.Stats()
	if got, want := ended(first.w), s1.Received.Load(); got != want {
		t.Errorf("first worker fetched %d frames but finished %d", want, got)
	}
	if s1.Published.Load() >= uint64(len(imgs)) {
		t.Fatalf("first worker finished all %d frames before the drain; nothing was left to test", len(imgs))
	}
	if info := e.consumerInfo(t, first.w.Durable()); info.NumAckPending != 0 {
		t.Errorf("after the drain %d frames are still pending acknowledgement", info.NumAckPending)
	}

	second := start(t, cfg)
	waitFor(t, "the rest", func() bool { return s1.Published.Load()+second.w.Stats().Published.Load() >= uint64(len(imgs)) })
	second.stop(t)

	evs := e.faceEvents(t)
	seen := map[uint64]int{}
	for _, ev := range evs {
		seen[ev.GetFrame().GetSequence()]++
	}
	for i := range imgs {
		if seen[uint64(i+1)] != 1 {
			t.Errorf("frame %d has %d face events, want 1", i+1, seen[uint64(i+1)])
		}
	}
	if len(evs) != len(imgs) || len(e.errorEvents(t)) != 0 {
		t.Errorf("%d face events and %d error events for %d frames", len(evs), len(e.errorEvents(t)), len(imgs))
	}
	t.Logf("first worker finished %d frames before the drain, the second %d", s1.Published.Load(), second.w.Stats().Published.Load())
}

func TestNewRefusesBadConfig(t *testing.T) {
	e, _ := engine(t)
	js := serverJS(t)
	for name, cfg := range map[string]Config{
		"no engine":       {JetStream: nil},
		"no jetstream":    {Engine: e},
		"dotted durable":  {Engine: e, JetStream: js, Durable: "embedder.x"},
		"negative batch":  {Engine: e, JetStream: js, Batch: -1},
		"foreign filter":  {Engine: e, JetStream: js, FilterSubject: "facegate.faces.>"},
		"negative maxage": {Engine: e, JetStream: js, MaxAge: -time.Second},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted the config", name)
		}
	}
	w, err := New(Config{Engine: e, JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := w.Durable(), "embedder-"+e.Model().ID+"-mirror"; got != want {
		t.Errorf("default durable %q, want %q", got, want)
	}
}

// serverJS is a JetStream context on a real server, for config tests that
// never use it.
func serverJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, _, js := natstest.Run(t, embedded.Options{})
	return js
}

// A face event that cannot be stored (here: the FACES stream is missing)
// leaves the frame unacked and nacked; once the stream is back, the
// redelivered frame is published and acked.
func TestPublishFailureIsRetried(t *testing.T) {
	e := newEnv(t)
	_, crop, _ := images(t)
	if err := e.js.DeleteStream(testCtx(t), bus.StreamFaces); err != nil {
		t.Fatal(err)
	}
	e.publishFrame(t, 1, time.Now(), crop)
	cfg := e.config(t)
	cfg.NakDelay = 200 * time.Millisecond
	r := start(t, cfg)
	waitFor(t, "a failed publish", func() bool { return r.w.Stats().Retried.Load() >= 1 })
	if r.w.Stats().Published.Load() != 0 {
		t.Fatal("published without a FACES stream")
	}
	cfg2 := bus.DefaultConfig()
	cfg2.Faces.Storage = jetstream.MemoryStorage
	cfg2.Frames.Storage = jetstream.MemoryStorage
	cfg2.Errors.Storage = jetstream.MemoryStorage
	if err := bus.EnsureStreams(testCtx(t), e.js, cfg2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the retried frame", func() bool { return r.w.Stats().Published.Load() == 1 })
	r.stop(t)
	if evs := e.faceEvents(t); len(evs) != 1 || evs[0].GetFrame().GetSequence() != 1 {
		t.Fatalf("face events %v, want frame 1's", evs)
	}
	info := e.consumerInfo(t, r.w.Durable())
	if info.NumAckPending != 0 || info.Delivered.Consumer < 2 {
		t.Errorf("consumer: ack pending %d, deliveries %d; want the frame delivered again and acked", info.NumAckPending, info.Delivered.Consumer)
	}
	if n := len(e.errorEvents(t)); n != 0 {
		t.Errorf("%d error events for a transient failure", n)
	}
}

// Raw RGB24 frames (no codec) are taken as is; one whose size does not match
// its declared dimensions is poison.
func TestRGB24Frames(t *testing.T) {
	e := newEnv(t)
	_, crop, _ := images(t)
	img, _, err := imaging.Decode(crop.data, imaging.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	publish := func(seq uint64, w, h int, pix []byte) {
		f := &facegatev1.Frame{SchemaVersion: events.SchemaVersion, Image: pix,
			Meta: &facegatev1.FrameMeta{SchemaVersion: events.SchemaVersion, Site: site, Camera: camera, Sequence: seq,
				CaptureTime: timestamppb.New(now), Width: uint32(w), Height: uint32(h), Encoding: facegatev1.ImageEncoding_IMAGE_ENCODING_RGB24}}
		subject, _ := bus.FramesSubject(site, camera)
		hdr := nats.Header{}
		hdr.Set(bus.HeaderMsgID, bus.FrameMsgID(site, camera, seq, now))
		if _, err := bus.Publish(testCtx(t), e.js, subject, f, hdr); err != nil {
			t.Fatal(err)
		}
	}
	publish(1, img.W, img.H, img.Pix)
	publish(2, img.W+1, img.H, img.Pix)
	r := start(t, e.config(t))
	waitFor(t, "2 frames", func() bool { return ended(r.w) == 2 })
	r.stop(t)
	evs := e.faceEvents(t)
	if len(evs) != 1 || evs[0].GetFrame().GetSequence() != 1 || len(evs[0].GetFaces()) != 1 {
		t.Fatalf("face events %v; want frame 1 with one face", evs)
	}
	direct, err := e.engine.Analyze(testCtx(t), crop.data)
	if err != nil {
		t.Fatal(err)
	}
	if got := evs[0].GetFaces()[0].GetEmbedding(); len(got) == 0 || face.Distance(got, direct.Faces[0].Encoding) > 1e-4 {
		t.Errorf("RGB24 frame's embedding differs from the PNG's")
	}
	if errs := e.errorEvents(t); len(errs) != 1 || errs[0].GetCode() != CodeImageUndecodable || errs[0].GetFrame().GetSequence() != 2 {
		t.Errorf("error events %v; want frame 2 undecodable", errs)
	}
}

// A failure that outlasts MaxDeliver ends the frame with a report instead
// of JetStream dropping it silently.
func TestRetriesExhaustedAreReported(t *testing.T) {
	e := newEnv(t)
	_, crop, _ := images(t)
	if err := e.js.DeleteStream(testCtx(t), bus.StreamFaces); err != nil {
		t.Fatal(err)
	}
	e.publishFrame(t, 1, time.Now(), crop)
	cfg := e.config(t)
	cfg.NakDelay, cfg.MaxDeliver = 100*time.Millisecond, 2
	r := start(t, cfg)
	waitFor(t, "the frame to be abandoned", func() bool { return r.w.Stats().Failed.Load() == 1 })
	r.stop(t)
	if s := r.w.Stats(); s.Retried.Load() != 1 || s.Published.Load() != 0 {
		t.Errorf("retried %d, published %d; want 1 and 0", s.Retried.Load(), s.Published.Load())
	}
	errs := e.errorEvents(t)
	if len(errs) != 1 || errs[0].GetCode() != CodeRetriesExhausted || errs[0].GetFrame().GetSequence() != 1 {
		t.Fatalf("error events %v; want one %s for frame 1", errs, CodeRetriesExhausted)
	}
	if info := e.consumerInfo(t, r.w.Durable()); info.NumAckPending != 0 || info.Delivered.Consumer != 2 {
		t.Errorf("consumer: ack pending %d, deliveries %d; want 2 deliveries and the frame terminated", info.NumAckPending, info.Delivered.Consumer)
	}
}
