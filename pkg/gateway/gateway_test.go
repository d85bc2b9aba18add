package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/zap/zaptest"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/gateway/source"
	"github.com/facegate/facegate/pkg/testenv"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

const site = "hq"

func startBus(t *testing.T) (*embedded.Server, jetstream.JetStream) {
	t.Helper()
	s, _, js := natstest.Run(t, embedded.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	return s, js
}

// smallImages are dataset JPEGs well under NATS's default 1 MiB payload
// (the deepface scenes go up to 2 MB).
var smallImages = []string{"img5.jpg", "img6.jpg", "img11.jpg", "img16.jpg", "img17.jpg", "img21.jpg"}

// imageFolder copies n dataset JPEGs into a temporary folder (the replay
// order is their name order).
func imageFolder(t *testing.T, n int) (string, [][]byte) {
	t.Helper()
	src := testenv.Dataset(t, "deepface/dataset")
	dir := t.TempDir()
	var imgs [][]byte
	for i := 1; i <= n; i++ {
		b, err := os.ReadFile(filepath.Join(src, smallImages[i-1]))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%03d.jpg", i)), b, 0o600); err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, b)
	}
	return dir, imgs
}

type running struct {
	gw     *Gateway
	m      *Metrics
	cancel context.CancelFunc
	done   chan error
}

func startGateway(t *testing.T, js jetstream.JetStream, cams []Camera, tracer *tracetest.SpanRecorder) *running {
	t.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Name: "gw-test", Site: site, JetStream: js, Cameras: cams, Metrics: m,
		Log: zaptest.NewLogger(t), Backoff: Backoff{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond},
		PublishTimeout: 2 * time.Second}
	if tracer != nil {
		cfg.Tracer = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tracer)).Tracer("gateway-test")
	}
	gw, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{gw: gw, m: m, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- gw.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("gateway did not stop within 30 s of cancel")
		}
	})
	return r
}

// waitFor polls cond until it holds; the deadline only bounds a failing
// test, it is not what the test measures.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func published(m *Metrics, camera string) float64 {
	return testutil.ToFloat64(m.Published.WithLabelValues(site, camera))
}

func dropped(m *Metrics, camera, reason string) float64 {
	return testutil.ToFloat64(m.Dropped.WithLabelValues(site, camera, reason))
}

// frames reads every message on camera's subject from FRAMES.
func frames(t *testing.T, js jetstream.JetStream, camera string) []jetstream.Msg {
	t.Helper()
	subject, _ := bus.FramesSubject(site, camera)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, bus.StreamFrames)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	n := int(info.State.Subjects[subject])
	if n == 0 {
		return nil
	}
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for len(out) < n {
		batch, err := c.Fetch(n-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			out = append(out, m)
		}
		if batch.Error() != nil {
			t.Fatal(batch.Error())
		}
	}
	return out
}

func decodeFrame(t *testing.T, m jetstream.Msg) *facegatev1.Frame {
	t.Helper()
	var f facegatev1.Frame
	if err := bus.DecodeMsg(m.Headers(), m.Data(), &f); err != nil {
		t.Fatal(err)
	}
	return &f
}

func TestFolderReplayPublishesFrames(t *testing.T) {
	_, js := startBus(t)
	dir, imgs := imageFolder(t, 3)
	src, err := source.Parse("folder:"+dir, source.Options{FPS: 20, MaxFrameBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	spans := tracetest.NewSpanRecorder()
	r := startGateway(t, js, []Camera{{ID: "lobby", Source: src, FPS: 20, MaxFrameBytes: 4 << 20}}, spans)
	select {
	case err := <-r.done: // a folder without loop finishes by itself
		r.done <- err
	case <-time.After(60 * time.Second):
		t.Fatal("folder replay did not finish")
	}
	msgs := frames(t, js, "lobby")
	if len(msgs) != 3 {
		t.Fatalf("%d frames in FRAMES, want 3 (published %v, drops: rate %v backlog %v err %v down %v)", len(msgs), published(r.m, "lobby"), dropped(r.m, "lobby", DropRate), dropped(r.m, "lobby", DropBacklog), dropped(r.m, "lobby", DropPublishError), dropped(r.m, "lobby", DropNATSDown))
	}
	wantSubject, _ := bus.FramesSubject(site, "lobby")
	for i, m := range msgs {
		f := decodeFrame(t, m)
		meta := f.GetMeta()
		fh, err := bus.ParseFrameHeaders(m.Headers())
		if err != nil {
			t.Fatalf("frame %d headers: %v", i, err)
		}
		switch {
		case m.Subject() != wantSubject:
			t.Errorf("frame %d on %s, want %s", i, m.Subject(), wantSubject)
		case meta.GetSequence() != uint64(i+1) || fh.Seq != uint64(i+1):
			t.Errorf("frame %d: sequence %d / header %d, want %d", i, meta.GetSequence(), fh.Seq, i+1)
		case string(f.GetImage()) != string(imgs[i]):
			t.Errorf("frame %d: image is not the folder's %d-th file", i, i+1)
		case meta.GetEncoding() != facegatev1.ImageEncoding_IMAGE_ENCODING_JPEG || meta.GetWidth() == 0 || meta.GetHeight() == 0:
			t.Errorf("frame %d: encoding %v size %dx%d", i, meta.GetEncoding(), meta.GetWidth(), meta.GetHeight())
		case meta.GetGateway() != "gw-test" || meta.GetSite() != site || meta.GetCamera() != "lobby":
			t.Errorf("frame %d: meta %v", i, meta)
		case !fh.CaptureTime.Equal(meta.GetCaptureTime().AsTime()):
			t.Errorf("frame %d: header capture time %v, payload %v", i, fh.CaptureTime, meta.GetCaptureTime().AsTime())
		case m.Headers().Get(bus.HeaderMsgID) != bus.FrameMsgID(site, "lobby", fh.Seq, fh.CaptureTime):
			t.Errorf("frame %d: Nats-Msg-Id %q", i, m.Headers().Get(bus.HeaderMsgID))
		case m.Headers().Get(bus.HeaderTraceParent) == "":
			t.Errorf("frame %d: no traceparent header", i)
		}
	}
	if n := len(spans.Ended()); n != 3 {
		t.Errorf("%d spans ended, want one per frame (3)", n)
	}
	if got := published(r.m, "lobby"); got != 3 {
		t.Errorf("published counter %v, want 3", got)
	}

	// A retried publish of the same frame is acknowledged as a duplicate
	// and not stored again.
	first := decodeFrame(t, msgs[0]).GetMeta()
	again := source.Frame{Data: imgs[0], Encoding: first.GetEncoding(), Width: int(first.GetWidth()),
		Height: int(first.GetHeight()), Captured: first.GetCaptureTime().AsTime()}
	ack, err := r.gw.Publisher().Publish(context.Background(), "lobby", 1, again)
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate {
		t.Error("republishing frame 1 was not acknowledged as a duplicate")
	}
	if n := len(frames(t, js, "lobby")); n != 3 {
		t.Errorf("after the republish FRAMES holds %d frames, want 3", n)
	}
}

func TestOversizeFramesAreDroppedNotPublished(t *testing.T) {
	_, js := startBus(t)
	dir, imgs := imageFolder(t, 3)
	limit := len(imgs[0]) - 1 // the first image is over, and the others may be
	over := 0
	for _, b := range imgs {
		if len(b) > limit {
			over++
		}
	}
	src, err := source.Parse("folder:"+dir, source.Options{FPS: 20, MaxFrameBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	r := startGateway(t, js, []Camera{{ID: "gate", Source: src, FPS: 20, MaxFrameBytes: limit}}, nil)
	waitFor(t, "the replay to end", func() bool { return dropped(r.m, "gate", source.DropOversize)+published(r.m, "gate") == 3 })
	if got := dropped(r.m, "gate", source.DropOversize); got != float64(over) {
		t.Errorf("oversize drops %v, want %d", got, over)
	}
	for _, m := range frames(t, js, "gate") {
		if n := len(decodeFrame(t, m).GetImage()); n > limit {
			t.Errorf("a %d-byte frame was published with a %d-byte limit", n, limit)
		}
	}
}

func TestRateSamplingDropsExcessFrames(t *testing.T) {
	m, _ := NewMetrics(nil)
	c := newCamera(Camera{ID: "c", FPS: 10, MaxFrameBytes: 100}, site, nil, m, zaptest.NewLogger(t), Backoff{})
	t0 := time.Unix(1000, 0)
	// 30 frames at 30 fps: one second of video.
	for i := range 30 {
		c.Frame(source.Frame{Data: []byte("x"), Captured: t0.Add(time.Duration(i) * time.Second / 30)})
	}
	kept := 30 - dropped(m, "c", DropRate)
	if kept != 10 {
		t.Errorf("kept %v of 30 frames at 30 fps for a 10 fps camera, want 10", kept)
	}
	// Only one frame waits for the publisher; the others were replaced.
	if got := dropped(m, "c", DropBacklog); got != kept-1 {
		t.Errorf("backlog drops %v, want %v (one mailbox slot)", got, kept-1)
	}
}

func TestBackoffIsCappedWithJitter(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	var d time.Duration
	for range 10 {
		d = b.next(d)
		if d > b.Max {
			t.Fatalf("delay %v over the cap %v", d, b.Max)
		}
		for range 20 {
			if j := jitter(d); j < d/2 || j > d {
				t.Fatalf("jittered %v outside [%v, %v]", j, d/2, d)
			}
		}
	}
	if d != b.Max {
		t.Fatalf("delay after 10 failures %v, want the cap %v", d, b.Max)
	}
}

func TestNATSOutageDropsAndResumes(t *testing.T) {
	s, _ := startBus(t)
	dataDir := s.DataDir()
	port := s.NATS().Addr().(*net.TCPAddr).Port
	// The gateway's own connection, made the way the service makes it.
	fc := &FileConfig{Gateway: "gw-test"}
	opts, err := fc.NATSOptions(zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, nats.ReconnectWait(50*time.Millisecond))
	nc, err := nats.Connect(s.URL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := imageFolder(t, 3)
	src, err := source.Parse("folder:"+dir, source.Options{FPS: 20, MaxFrameBytes: 4 << 20, Loop: true})
	if err != nil {
		t.Fatal(err)
	}
	r := startGateway(t, js, []Camera{{ID: "door1", Source: src, FPS: 20, MaxFrameBytes: 4 << 20}}, nil)
	waitFor(t, "frames before the outage", func() bool { return published(r.m, "door1") >= 3 })

	s.Shutdown()
	waitFor(t, "frames dropped during the outage", func() bool { return dropped(r.m, "door1", DropNATSDown) >= 5 })
	// The camera loop is not blocked: frames keep arriving and being
	// dropped while NATS is down.
	before := dropped(r.m, "door1", DropNATSDown)
	waitFor(t, "more drops (camera loop running)", func() bool { return dropped(r.m, "door1", DropNATSDown) > before+3 })
	pubDuring := published(r.m, "door1")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The same port, so the client's reconnect finds it, and the same
	// data dir, so the streams are there.
	s2, err := embedded.Start(ctx, embedded.Options{DataDir: dataDir, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s2.Shutdown)
	waitFor(t, "publishing to resume after the restart", func() bool { return published(r.m, "door1") >= pubDuring+3 })
	if got := len(frames(t, js, "door1")); got < int(pubDuring)+3 {
		t.Errorf("FRAMES holds %d door1 frames after the restart, want at least %v", got, pubDuring+3)
	}
}

// TestMJPEGCameraSkipsCorruptParts serves an endless MJPEG stream of
// dataset JPEGs with a corrupt part in every round: the corrupt parts are
// counted, the stream goes on, the good parts are published.
func TestMJPEGCameraSkipsCorruptParts(t *testing.T) {
	_, js := startBus(t)
	_, imgs := imageFolder(t, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mw := multipart.NewWriter(w)
		w.Header().Set("Content-Type", "multipart/x-mixed-replace; boundary="+mw.Boundary())
		for {
			for _, part := range [][]byte{imgs[0], []byte("\xff\xd8 not really a JPEG"), imgs[1]} {
				pw, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"image/jpeg"}})
				if err != nil {
					return
				}
				if _, err := pw.Write(part); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
	}))
	t.Cleanup(srv.Close)
	src, err := source.Parse("mjpeg+"+srv.URL+"/video", source.Options{FPS: 25, MaxFrameBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	r := startGateway(t, js, []Camera{{ID: "mjpeg", Source: src, FPS: 25, MaxFrameBytes: 1 << 20}}, nil)
	waitFor(t, "MJPEG frames and corrupt-part drops", func() bool {
		return published(r.m, "mjpeg") >= 4 && dropped(r.m, "mjpeg", source.DropCorrupt) >= 2
	})
	if got := testutil.ToFloat64(r.m.Reconnects.WithLabelValues(site, "mjpeg")); got != 0 {
		t.Errorf("%v reconnects: a corrupt part must not break the stream", got)
	}
	for i, m := range frames(t, js, "mjpeg") {
		img := decodeFrame(t, m).GetImage()
		if !bytes.Equal(img, imgs[0]) && !bytes.Equal(img, imgs[1]) {
			t.Fatalf("frame %d is not one of the served images", i)
		}
	}
}

// TestSnapshotCamera polls an httptest camera that serves dataset JPEGs.
func TestSnapshotCamera(t *testing.T) {
	_, js := startBus(t)
	_, imgs := imageFolder(t, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		w.Write(imgs[0])
	}))
	t.Cleanup(srv.Close)
	src, err := source.Parse("snapshot+"+srv.URL+"/snap.jpg", source.Options{FPS: 20, MaxFrameBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	r := startGateway(t, js, []Camera{{ID: "snap", Source: src, FPS: 20, MaxFrameBytes: 1 << 20}}, nil)
	waitFor(t, "snapshot frames", func() bool { return published(r.m, "snap") >= 3 })
	msgs := frames(t, js, "snap")
	if !bytes.Equal(decodeFrame(t, msgs[0]).GetImage(), imgs[0]) {
		t.Fatal("published snapshot is not the served image")
	}
}

// BenchmarkPublishFrame measures one frame's publish and JetStream
// acknowledgement on the embedded server (file storage).
func BenchmarkPublishFrame(b *testing.B) {
	_, _, js := natstest.Run(b, embedded.Options{})
	if err := bus.EnsureStreams(context.Background(), js, bus.DefaultConfig()); err != nil {
		b.Fatal(err)
	}
	img, err := os.ReadFile(filepath.Join(testenv.Dataset(b, "deepface/dataset"), "img5.jpg"))
	if err != nil {
		b.Fatal(err)
	}
	f, err := source.Probe(img)
	if err != nil {
		b.Fatal(err)
	}
	m, _ := NewMetrics(nil)
	gw, err := New(Config{Name: "bench", Site: site, JetStream: js, Metrics: m})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(img)))
	t0 := time.Now()
	for i := 0; b.Loop(); i++ {
		f.Captured = t0.Add(time.Duration(i))
		if _, err := gw.Publisher().Publish(context.Background(), "bench", uint64(i+1), f); err != nil {
			b.Fatal(err)
		}
	}
}

func TestFrameMessageRefusesInvalidFrames(t *testing.T) {
	good := source.Frame{Data: []byte{1}, Encoding: facegatev1.ImageEncoding_IMAGE_ENCODING_JPEG, Width: 2, Height: 2, Captured: time.Unix(5, 0)}
	if _, _, err := FrameMessage(site, "gw", "cam", 1, good); err != nil {
		t.Fatalf("a valid frame was refused: %v", err)
	}
	for name, tc := range map[string]struct {
		camera string
		seq    uint64
		mod    func(*source.Frame)
	}{
		"sequence 0":  {"cam", 0, func(*source.Frame) {}},
		"bad camera":  {"c.a.m", 1, func(*source.Frame) {}},
		"no encoding": {"cam", 1, func(f *source.Frame) { f.Encoding = facegatev1.ImageEncoding_IMAGE_ENCODING_UNSPECIFIED }},
		"raw RGB":     {"cam", 1, func(f *source.Frame) { f.Encoding = facegatev1.ImageEncoding_IMAGE_ENCODING_RGB24 }},
		"no size":     {"cam", 1, func(f *source.Frame) { f.Width = 0 }},
		"empty image": {"cam", 1, func(f *source.Frame) { f.Data = nil }},
		"no time":     {"cam", 1, func(f *source.Frame) { f.Captured = time.Time{} }},
	} {
		f := good
		tc.mod(&f)
		if _, _, err := FrameMessage(site, "gw", tc.camera, tc.seq, f); !errors.Is(err, ErrInvalidFrame) {
			t.Errorf("%s: %v, want ErrInvalidFrame", name, err)
		}
	}
}
