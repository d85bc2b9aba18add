package embedder

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/detect"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/imaging"
	"github.com/facegate/facegate/pkg/liveness"
	"github.com/facegate/facegate/pkg/telemetry"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// Service is the service token of the embedder in subjects and error events.
const Service = "embedder"

// Error codes of the ErrorEvents a Worker publishes.
const (
	CodeExpired          = "expired"
	CodeMalformedFrame   = "malformed_frame"
	CodeImageUndecodable = "image_undecodable"
	CodeTooLarge         = "face_event_too_large"
	// CodeRetriesExhausted: a transient failure (inference, publish) lasted
	// through the consumer's MaxDeliver deliveries.
	CodeRetriesExhausted = "retries_exhausted"
)

// KeypointLayout names the order of Face.keypoints in the events: BlazeFace's
// six points as package detect numbers them (eye nearer the image's left
// edge first).
const KeypointLayout = "blazeface-6"

// Config configures a Worker. Engine and JetStream are required; zero values
// elsewhere take the defaults noted.
type Config struct {
	Engine    *face.Engine
	JetStream jetstream.JetStream
	// ModelVersion goes into every event's model_version (the model
	// package's version from the manifest).
	ModelVersion string
	// Durable is the consumer name shared by the pool. Default
	// DefaultDurable(engine's space).
	Durable string
	// FilterSubject narrows the frames consumed, e.g. one site
	// (bus.SiteFilter). Default: every frame.
	FilterSubject string
	// Bind makes Run bind to the existing durable consumer instead of
	// creating or updating it with ConsumerConfig: a least-privilege user
	// (natsauth RoleEmbedder) may only bind, and the consumer's creator
	// (the operator, `facegate nats bootstrap`) owns its settings.
	Bind bool
	// Batch is how many messages one fetch asks for. Default 8.
	Batch int
	// Concurrency is the number of frames processed at once. Default
	// runtime.NumCPU().
	Concurrency int
	// MaxAge drops frames captured longer ago than this. Default 5 s: a face
	// seen longer ago is no reason to open a door now.
	MaxAge time.Duration
	// AckWait is how long JetStream waits for an ack before redelivering.
	// Default 30 s.
	AckWait time.Duration
	// MaxDeliver bounds deliveries of one frame (transient failures).
	// Default 5.
	MaxDeliver int
	// NakDelay is the redelivery delay after a transient failure. Default 1 s.
	NakDelay time.Duration
	// FetchWait bounds one fetch when the stream is idle; it is also the
	// longest a drain waits before it stops fetching. Default 1 s.
	FetchWait time.Duration
	// DrainTimeout bounds the processing of fetched frames after Run's
	// context is cancelled. Default 30 s.
	DrainTimeout time.Duration
	// Crops adds a small aligned JPEG of every face (Face.crop_jpeg) for
	// the console. Off by default: crops are biometric data and most pools
	// serve only the matcher.
	Crops bool
	// Liveness, when set, scores every face that passed the quality gate
	// with the presentation-attack gate: the face gets liveness_score, and
	// one scoring below the gate's threshold gets REJECTION_REASON_NOT_LIVE
	// and no embedding. Off (nil) by default: the models are weak and were
	// never measured on real attacks (docs/liveness.md); do not rely on
	// them for security.
	Liveness *liveness.Gate
	// Limits bound the decoding of frame images.
	Limits imaging.Limits
	// Instance names this replica (pod name) in events. Default "embedder".
	Instance string
	// Log receives per-frame failures (never payloads). Default: none.
	Log *zap.Logger
	// Tracer makes a span per frame, a child of the gateway's span (the
	// frame's traceparent header); the face event carries it on to the
	// matcher. Default: a no-op tracer, which still passes the gateway's
	// trace context through.
	Tracer trace.Tracer
	// Now is the clock for the max-age check. Default time.Now.
	Now func() time.Time

	// afterPublish, when set, runs after a face event is stored and before
	// the frame is acked; a non-nil error abandons the frame without an ack
	// or a nak, as a crash at that point would. Tests use it.
	afterPublish func(*facegatev1.FaceEvent) error
}

// DefaultDurable is the consumer name of the pool of an embedding space:
// JetStream consumer names cannot contain '.', and '+' is kept out too so
// the name stays usable as a metric label.
func DefaultDurable(space string) string {
	return "embedder-" + strings.NewReplacer("+", "-", ".", "-").Replace(space)
}

// Stats counts how frames ended. All fields are updated atomically and can
// be read at any time.
type Stats struct {
	Received  atomic.Uint64 // messages fetched
	Published atomic.Uint64 // face events stored (including de-duplicated republishes)
	Faces     atomic.Uint64 // faces in published events
	Expired   atomic.Uint64 // frames older than MaxAge
	Poison    atomic.Uint64 // frames terminated as undecodable
	Retried   atomic.Uint64 // frames nacked after a transient failure
	Failed    atomic.Uint64 // frames terminated after MaxDeliver transient failures
}

// Worker consumes frames and publishes face events. Create it with New.
type Worker struct {
	cfg   Config
	space string
	stats Stats
}

// New validates cfg and fills in defaults.
func New(cfg Config) (*Worker, error) {
	if cfg.Engine == nil {
		return nil, errors.New("embedder: config: Engine is nil")
	}
	if cfg.JetStream == nil {
		return nil, errors.New("embedder: config: JetStream is nil")
	}
	space := cfg.Engine.Space()
	if cfg.Durable == "" {
		cfg.Durable = DefaultDurable(space)
	}
	if strings.ContainsAny(cfg.Durable, ".*> \t\r\n") {
		return nil, fmt.Errorf("embedder: config: durable name %q contains '.', a wildcard or whitespace", cfg.Durable)
	}
	if cfg.FilterSubject == "" {
		cfg.FilterSubject = bus.Root + "." + string(bus.KindFrames) + ".>"
	}
	if !strings.HasPrefix(cfg.FilterSubject, bus.Root+"."+string(bus.KindFrames)+".") {
		return nil, fmt.Errorf("embedder: config: filter subject %q is not a frames subject", cfg.FilterSubject)
	}
	defaults := []struct {
		name string
		v    *int
		def  int
	}{{"Batch", &cfg.Batch, 8}, {"Concurrency", &cfg.Concurrency, runtime.NumCPU()}, {"MaxDeliver", &cfg.MaxDeliver, 5}}
	for _, d := range defaults {
		if *d.v < 0 {
			return nil, fmt.Errorf("embedder: config: %s %d is negative", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"MaxAge", &cfg.MaxAge, 5 * time.Second}, {"AckWait", &cfg.AckWait, 30 * time.Second},
		{"NakDelay", &cfg.NakDelay, time.Second}, {"FetchWait", &cfg.FetchWait, time.Second},
		{"DrainTimeout", &cfg.DrainTimeout, 30 * time.Second},
	}
	for _, d := range durations {
		if *d.v < 0 {
			return nil, fmt.Errorf("embedder: config: %s %v is negative", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.Instance == "" {
		cfg.Instance = Service
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Worker{cfg: cfg, space: space}, nil
}

// Stats returns the worker's counters.
func (w *Worker) Stats() *Stats { return &w.stats }

// Durable is the consumer name the worker uses.
func (w *Worker) Durable() string { return w.cfg.Durable }

// ConsumerConfig is the durable consumer every replica of the pool creates
// or updates; identical settings make that idempotent.
func (w *Worker) ConsumerConfig() jetstream.ConsumerConfig {
	return ConsumerConfigFor(w.space, w.cfg.Durable, w.cfg.FilterSubject, w.cfg.AckWait, w.cfg.MaxDeliver)
}

// ConsumerConfigFor is the consumer a pool of space would create, without
// an engine: for whoever creates it for least-privilege embedders
// (`facegate nats bootstrap`), which only bind (Config.Bind). Empty
// durable and filter, zero ackWait and maxDeliver take New's defaults.
func ConsumerConfigFor(space, durable, filter string, ackWait time.Duration, maxDeliver int) jetstream.ConsumerConfig {
	if durable == "" {
		durable = DefaultDurable(space)
	}
	if filter == "" {
		filter = bus.Root + "." + string(bus.KindFrames) + ".>"
	}
	if ackWait <= 0 {
		ackWait = 30 * time.Second
	}
	if maxDeliver <= 0 {
		maxDeliver = 5
	}
	return jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   "facegate embedder pool for " + space,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    maxDeliver,
		FilterSubject: filter,
	}
}

// Run consumes frames until ctx is cancelled, then drains: frames already
// fetched are finished and acked before Run returns. It returns nil after a
// clean drain and an error when the consumer cannot be created or fetching
// fails for good.
func (w *Worker) Run(ctx context.Context) error {
	var cons jetstream.Consumer
	var err error
	if w.cfg.Bind {
		cons, err = w.cfg.JetStream.Consumer(ctx, bus.StreamFrames, w.cfg.Durable)
	} else {
		cons, err = w.cfg.JetStream.CreateOrUpdateConsumer(ctx, bus.StreamFrames, w.ConsumerConfig())
	}
	if err != nil {
		return fmt.Errorf("embedder: consumer %s on stream %s: %w", w.cfg.Durable, bus.StreamFrames, err)
	}

	// Processing must outlive ctx so that a drain can publish and ack what
	// was fetched; drainCtx ends DrainTimeout after ctx does.
	procCtx, stopProc := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProc()
	stopTimer := context.AfterFunc(ctx, func() {
		t := time.NewTimer(w.cfg.DrainTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			stopProc()
		case <-procCtx.Done():
		}
	})
	defer stopTimer()

	work := make(chan jetstream.Msg)
	var wg sync.WaitGroup
	for range w.cfg.Concurrency {
		wg.Go(func() {
			for msg := range work {
				w.handle(procCtx, msg)
			}
		})
	}

	fetchErr := w.fetchLoop(ctx, cons, work)
	close(work)
	wg.Wait()
	return fetchErr
}

// fetchLoop fetches batches and hands every fetched message to the workers,
// including after ctx is cancelled: a message in a batch is already
// delivered to this replica and would otherwise wait out AckWait.
func (w *Worker) fetchLoop(ctx context.Context, cons jetstream.Consumer, work chan<- jetstream.Msg) error {
	failures := 0
	for ctx.Err() == nil {
		batch, err := cons.Fetch(w.cfg.Batch, jetstream.FetchMaxWait(w.cfg.FetchWait))
		if err == nil {
			for msg := range batch.Messages() {
				w.stats.Received.Add(1)
				work <- msg
			}
			err = batch.Error()
		}
		switch {
		case err == nil, errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrNoHeartbeat):
			failures = 0
			continue
		}
		// A server restart or leader change: back off and retry, but give up
		// when it persists so the process restarts visibly.
		failures++
		w.cfg.Log.Warn("fetch failed", zap.String("consumer", w.cfg.Durable), zap.Int("failures", failures), zap.Error(err))
		if failures >= 30 {
			return fmt.Errorf("embedder: fetch from consumer %s: %d failures in a row: %w", w.cfg.Durable, failures, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

// handle takes one message to its end: ack, term or nak.
func (w *Worker) handle(ctx context.Context, msg jetstream.Msg) {
	start := time.Now()
	var seq uint64
	if md, err := msg.Metadata(); err == nil {
		seq = md.Sequence.Stream
	}
	log := w.cfg.Log.With(zap.String("subject", msg.Subject()), zap.Uint64("stream_seq", seq))

	frame := &facegatev1.Frame{}
	if err := bus.DecodeMsg(msg.Headers(), msg.Data(), frame); err != nil {
		w.poison(ctx, msg, seq, nil, CodeMalformedFrame, err, log)
		return
	}
	ref, err := frameRef(frame)
	if err != nil {
		w.poison(ctx, msg, seq, nil, CodeMalformedFrame, err, log)
		return
	}
	log = log.With(zap.String("site", ref.GetSite()), zap.String("camera", ref.GetCamera()), zap.Uint64("frame_seq", ref.GetSequence()))

	captured := ref.GetCaptureTime().AsTime()
	if age := w.cfg.Now().Sub(captured); age > w.cfg.MaxAge {
		err := w.publishError(ctx, msg, seq, ref, CodeExpired,
			fmt.Sprintf("frame captured %v ago, older than the max age %v; dropped without analysis", age.Round(time.Millisecond), w.cfg.MaxAge))
		if err != nil {
			w.retry(ctx, msg, seq, ref, log, "publish expiry", err)
			return
		}
		w.stats.Expired.Add(1)
		w.ack(ctx, msg, log)
		return
	}

	ctx, span := w.cfg.Tracer.Start(telemetry.Extract(ctx, msg.Headers()), "embedder.frame", trace.WithAttributes(
		attribute.String("facegate.site", ref.GetSite()), attribute.String("facegate.camera", ref.GetCamera()),
		attribute.Int64("facegate.frame_seq", int64(ref.GetSequence()))))
	defer span.End()
	t0 := time.Now()
	img, err := decodeImage(frame, w.cfg.Limits)
	decodeTime := time.Since(t0)
	if err != nil {
		w.poison(ctx, msg, seq, ref, CodeImageUndecodable, err, log)
		return
	}
	res, err := w.cfg.Engine.AnalyzeImage(ctx, img)
	if err != nil {
		w.retry(ctx, msg, seq, ref, log, "analyze", err)
		return
	}
	res.Timings.Decode = decodeTime
	live, liveTime, err := w.livenessScores(ctx, img, res)
	if err != nil {
		w.retry(ctx, msg, seq, ref, log, "liveness", err)
		return
	}

	ev := w.faceEvent(ref, img, res, live, liveTime, start.Sub(queueStart(msg, captured)), log)
	subject, err := bus.FacesSubject(ref.GetSite(), ref.GetCamera())
	if err != nil {
		w.poison(ctx, msg, seq, ref, CodeMalformedFrame, err, log)
		return
	}
	hdr := nats.Header{}
	bus.FrameHeaders{Site: ref.GetSite(), Camera: ref.GetCamera(), Seq: ref.GetSequence(), CaptureTime: captured}.Apply(hdr)
	telemetry.Inject(ctx, hdr)
	hdr.Set(bus.HeaderMsgID, FaceEventMsgID(ref, w.space))
	if _, err := bus.Publish(ctx, w.cfg.JetStream, subject, ev, hdr); err != nil {
		if errors.Is(err, bus.ErrTooLarge) {
			w.poison(ctx, msg, seq, ref, CodeTooLarge, err, log)
			return
		}
		w.retry(ctx, msg, seq, ref, log, "publish face event", err)
		return
	}
	w.stats.Published.Add(1)
	w.stats.Faces.Add(uint64(len(ev.GetFaces())))
	if w.cfg.afterPublish != nil {
		if err := w.cfg.afterPublish(ev); err != nil {
			return
		}
	}
	w.ack(ctx, msg, log)
}

// queueStart is when the frame entered the stream (its JetStream
// timestamp), falling back to the capture time.
func queueStart(msg jetstream.Msg, captured time.Time) time.Time {
	if md, err := msg.Metadata(); err == nil && !md.Timestamp.IsZero() {
		return md.Timestamp
	}
	return captured
}

// FaceEventMsgID is the Nats-Msg-Id of the face event of one frame in one
// embedding space. It depends only on the frame's identity, so re-processing
// a redelivered frame publishes a duplicate JetStream drops.
func FaceEventMsgID(ref *facegatev1.FrameRef, space string) string {
	return bus.FrameMsgID(ref.GetSite(), ref.GetCamera(), ref.GetSequence(), ref.GetCaptureTime().AsTime()) + "/" + space
}

// frameRef checks the frame metadata the embedder relies on and returns the
// frame's reference.
func frameRef(f *facegatev1.Frame) (*facegatev1.FrameRef, error) {
	m := f.GetMeta()
	if m == nil {
		return nil, errors.New("embedder: frame has no meta")
	}
	if err := bus.ValidateToken("site", m.GetSite()); err != nil {
		return nil, fmt.Errorf("embedder: frame meta: %w", err)
	}
	if err := bus.ValidateToken("camera", m.GetCamera()); err != nil {
		return nil, fmt.Errorf("embedder: frame meta: %w", err)
	}
	if m.GetCaptureTime() == nil || m.GetCaptureTime().CheckValid() != nil {
		return nil, errors.New("embedder: frame meta: capture_time is missing or invalid")
	}
	return &facegatev1.FrameRef{Site: m.GetSite(), Camera: m.GetCamera(), Sequence: m.GetSequence(), CaptureTime: m.GetCaptureTime()}, nil
}

// decodeImage decodes the frame's image per its declared encoding.
func decodeImage(f *facegatev1.Frame, lim imaging.Limits) (*imaging.RGB, error) {
	m := f.GetMeta()
	switch m.GetEncoding() {
	case facegatev1.ImageEncoding_IMAGE_ENCODING_JPEG, facegatev1.ImageEncoding_IMAGE_ENCODING_PNG:
		img, _, err := imaging.Decode(f.GetImage(), lim)
		if err != nil {
			return nil, fmt.Errorf("embedder: frame image (%s, %d bytes): %w", m.GetEncoding(), len(f.GetImage()), err)
		}
		return img, nil
	case facegatev1.ImageEncoding_IMAGE_ENCODING_RGB24:
		w, h := int(m.GetWidth()), int(m.GetHeight())
		if w <= 0 || h <= 0 || int64(w)*int64(h)*3 != int64(len(f.GetImage())) {
			return nil, fmt.Errorf("embedder: frame image: RGB24 %dx%d needs %d bytes, got %d", w, h, int64(w)*int64(h)*3, len(f.GetImage()))
		}
		img := &imaging.RGB{W: w, H: h, Pix: f.GetImage()}
		if err := img.Valid(); err != nil {
			return nil, fmt.Errorf("embedder: frame image: %w", err)
		}
		return img, nil
	}
	return nil, fmt.Errorf("embedder: frame image: unsupported encoding %s", m.GetEncoding())
}

// livenessScores runs the liveness gate, when configured, on the faces that
// passed the quality gate (the others get no embedding anyway), in one
// batch. The result maps face index to scores.
func (w *Worker) livenessScores(ctx context.Context, img *imaging.RGB, res *face.Result) (map[int]liveness.Scores, time.Duration, error) {
	if w.cfg.Liveness == nil {
		return nil, 0, nil
	}
	t := time.Now()
	var idx []int
	var faces []detect.Face
	for i, f := range res.Faces {
		if f.Quality.OK {
			idx = append(idx, i)
			faces = append(faces, detect.Face{Box: f.Box, Score: f.Score, Keypoints: f.Keypoints})
		}
	}
	scores, err := w.cfg.Liveness.ScoreFaces(ctx, img, faces)
	if err != nil {
		return nil, 0, fmt.Errorf("embedder: %w", err)
	}
	out := make(map[int]liveness.Scores, len(idx))
	for k, i := range idx {
		out[i] = scores[k]
	}
	return out, time.Since(t), nil
}

// faceEvent builds the event of one analysed frame. live holds the
// liveness scores by face index (nil when the gate is off).
func (w *Worker) faceEvent(ref *facegatev1.FrameRef, img *imaging.RGB, res *face.Result, live map[int]liveness.Scores, liveTime, queue time.Duration, log *zap.Logger) *facegatev1.FaceEvent {
	ev := &facegatev1.FaceEvent{
		SchemaVersion: events.SchemaVersion,
		Frame:         ref,
		// The space, not the bare model id: mirror-averaged and plain
		// encodings of one model are not comparable, and the matcher picks
		// the gallery by this field.
		ModelId:      w.space,
		ModelVersion: w.cfg.ModelVersion,
		DetectorId:   face.DetectorModel,
		Embedder:     w.cfg.Instance,
	}
	dim := uint32(w.cfg.Engine.Dim())
	for i, f := range res.Faces {
		pf := &facegatev1.Face{
			Index:          uint32(i),
			Box:            &facegatev1.Box{X: float32(f.Box.X), Y: float32(f.Box.Y), Width: float32(f.Box.W), Height: float32(f.Box.H)},
			KeypointLayout: KeypointLayout,
			DetectorScore:  float32(f.Score),
			Quality:        qualityOf(f),
		}
		for _, p := range f.Keypoints {
			pf.Keypoints = append(pf.Keypoints, &facegatev1.Point{X: float32(p.X), Y: float32(p.Y)})
		}
		if w.cfg.Crops {
			// A missing crop costs the console a picture, not the frame.
			if crop, err := cropJPEG(img, f); err != nil {
				log.Warn("no crop", zap.Int("face", i), zap.Error(err))
			} else {
				pf.CropJpeg = crop
			}
		}
		passed := f.Quality.OK
		if s, ok := live[i]; ok {
			score := s.Combined
			pf.LivenessScore = &score
			if !w.cfg.Liveness.Live(s) {
				passed = false
				pf.Quality.Passed, pf.Quality.Overall = false, 0
				pf.Quality.RejectionReasons = append(pf.Quality.RejectionReasons, facegatev1.RejectionReason_REJECTION_REASON_NOT_LIVE)
			}
		}
		// A face that failed the gate carries no embedding: the matcher must
		// not decide on it, and it is biometric data with no use.
		if passed {
			pf.Embedding = f.Encoding
			pf.EmbeddingDimension = dim
		}
		ev.Faces = append(ev.Faces, pf)
	}
	t := res.Timings
	for _, s := range []struct {
		name string
		d    time.Duration
	}{{"queue", queue}, {"decode", t.Decode}, {"detect", t.Detect}, {"align", t.Align}, {"embed", t.Encode}} {
		ev.Latencies = append(ev.Latencies, &facegatev1.StageLatency{Stage: s.name, Duration: durationpb.New(max(s.d, 0))})
	}
	if w.cfg.Liveness != nil {
		ev.Latencies = append(ev.Latencies, &facegatev1.StageLatency{Stage: "liveness", Duration: durationpb.New(max(liveTime, 0))})
	}
	ev.ProcessedTime = timestamppb.New(time.Now())
	return ev
}

// qualityOf maps the quality gate's result onto the event schema. NaN
// measurements (not measurable) are sent as 0 so the event stays valid.
func qualityOf(f face.Face) *facegatev1.Quality {
	s := f.Quality.Scores
	q := &facegatev1.Quality{
		Passed:         f.Quality.OK,
		Sharpness:      finite(s.Sharpness),
		YawDegrees:     finite(s.Yaw),
		PitchDegrees:   finite(s.Pitch),
		RollDegrees:    finite(s.Roll),
		InterEyePixels: finite(s.InterOcular),
		Extra:          map[string]float32{"box_size_pixels": finite(s.BoxSize)},
	}
	if f.Quality.OK {
		q.Overall = 1
	}
	seen := map[facegatev1.RejectionReason]bool{}
	for _, r := range f.Quality.Reasons {
		code := rejectionReason(r)
		if !seen[code] {
			seen[code] = true
			q.RejectionReasons = append(q.RejectionReasons, code)
		}
	}
	return q
}

// rejectionReason classifies package quality's reason sentences; their
// prefixes are stable (see quality.Check).
func rejectionReason(reason string) facegatev1.RejectionReason {
	switch {
	case strings.HasPrefix(reason, "face too small"):
		return facegatev1.RejectionReason_REJECTION_REASON_TOO_SMALL
	case strings.HasPrefix(reason, "too blurry"), strings.HasPrefix(reason, "cannot measure sharpness"):
		return facegatev1.RejectionReason_REJECTION_REASON_BLURRY
	case strings.HasPrefix(reason, "head "):
		return facegatev1.RejectionReason_REJECTION_REASON_POSE
	}
	return facegatev1.RejectionReason_REJECTION_REASON_UNSPECIFIED
}

func finite(v float64) float32 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return float32(v)
}

// poison reports a frame that cannot be processed and terminates it. The
// error event is published first: if that fails the frame is nacked, so the
// failure is never silently lost.
func (w *Worker) poison(ctx context.Context, msg jetstream.Msg, seq uint64, ref *facegatev1.FrameRef, code string, cause error, log *zap.Logger) {
	if err := w.publishError(ctx, msg, seq, ref, code, cause.Error()); err != nil {
		w.retry(ctx, msg, seq, ref, log, "publish error event", err)
		return
	}
	w.stats.Poison.Add(1)
	log.Warn("frame terminated", zap.String("code", code), zap.Error(cause))
	if err := msg.TermWithReason(code); err != nil {
		log.Warn("term failed", zap.Error(err))
	}
}

func (w *Worker) publishError(ctx context.Context, msg jetstream.Msg, seq uint64, ref *facegatev1.FrameRef, code, text string) error {
	subject, err := bus.ErrorsSubject(Service)
	if err != nil {
		return err
	}
	ev := &facegatev1.ErrorEvent{
		SchemaVersion:       events.SchemaVersion,
		Service:             Service,
		Instance:            w.cfg.Instance,
		Time:                timestamppb.New(time.Now()),
		Code:                code,
		Message:             text,
		InputSubject:        msg.Subject(),
		InputStreamSequence: seq,
		Frame:               ref,
	}
	hdr := nats.Header{}
	// One report per frame and pool, whichever replica handles a
	// redelivery. Without a frame identity, the stream sequence identifies
	// the input.
	if ref != nil {
		hdr.Set(bus.HeaderMsgID, code+"/"+FaceEventMsgID(ref, w.space))
	} else {
		hdr.Set(bus.HeaderMsgID, fmt.Sprintf("%s/%s/%d/%s", code, bus.StreamFrames, seq, w.space))
	}
	_, err = bus.Publish(ctx, w.cfg.JetStream, subject, ev, hdr)
	return err
}

// retry nacks a frame after a transient failure. On its last allowed
// delivery the frame is reported and terminated instead: JetStream would
// otherwise drop it silently after MaxDeliver, and every frame must end in
// a record.
func (w *Worker) retry(ctx context.Context, msg jetstream.Msg, seq uint64, ref *facegatev1.FrameRef, log *zap.Logger, what string, err error) {
	if md, merr := msg.Metadata(); merr == nil && md.NumDelivered >= uint64(w.cfg.MaxDeliver) && ctx.Err() == nil {
		text := fmt.Sprintf("%s failed on delivery %d of %d: %v", what, md.NumDelivered, w.cfg.MaxDeliver, err)
		if perr := w.publishError(ctx, msg, seq, ref, CodeRetriesExhausted, text); perr == nil {
			w.stats.Failed.Add(1)
			log.Warn("frame abandoned", zap.String("failed", what), zap.Error(err))
			if terr := msg.TermWithReason(CodeRetriesExhausted); terr != nil {
				log.Warn("term failed", zap.Error(terr))
			}
			return
		}
	}
	w.stats.Retried.Add(1)
	log.Warn("frame will be retried", zap.String("failed", what), zap.Error(err))
	delay := w.cfg.NakDelay
	if ctx.Err() != nil {
		// The drain ran out of time: hand the frame to another replica now.
		delay = 0
	}
	if nerr := msg.NakWithDelay(delay); nerr != nil {
		log.Warn("nak failed", zap.Error(nerr))
	}
}

func (w *Worker) ack(ctx context.Context, msg jetstream.Msg, log *zap.Logger) {
	if err := msg.DoubleAck(ctx); err != nil {
		// The output is stored; a lost ack only means a redelivery, which
		// the message id de-duplicates.
		log.Warn("ack failed", zap.Error(err))
	}
}
