package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/facegate/facegate/pkg/gateway/source"
	"github.com/facegate/facegate/pkg/testenv"
)

func needFFmpeg(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("ffmpeg")
	if err != nil {
		testenv.Missing(t, "ffmpeg on PATH", "install Debian's ffmpeg package (apt-get install ffmpeg); CI installs it")
	}
	return p
}

// makeClip encodes dataset images into a short H.264 mp4 (4 s: one image
// per second, at 10 fps, 320x240) in a temporary folder.
func makeClip(t *testing.T, ffmpeg string) string {
	t.Helper()
	dir, _ := imageFolder(t, 4)
	out := filepath.Join(t.TempDir(), "clip.mp4")
	cmd := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-framerate", "1",
		"-i", filepath.Join(dir, "%03d.jpg"),
		"-vf", "scale=320:240,format=yuv420p", "-r", "10", "-c:v", "libx264", "-g", "10", "-y", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make clip: %v: %s", err, b)
	}
	return out
}

func TestVideoFileReplay(t *testing.T) {
	ffmpeg := needFFmpeg(t)
	clip := makeClip(t, ffmpeg)
	_, js := startBus(t)
	src, err := source.Parse("file:"+clip, source.Options{FPS: 5, MaxFrameBytes: 1 << 20, FFmpeg: ffmpeg})
	if err != nil {
		t.Fatal(err)
	}
	r := startGateway(t, js, []Camera{{ID: "video", Source: src, FPS: 5, MaxFrameBytes: 1 << 20}}, nil)
	select {
	case err := <-r.done: // a file without loop ends
		r.done <- err
	case <-time.After(60 * time.Second):
		t.Fatal("4 s clip did not finish replaying")
	}
	msgs := frames(t, js, "video")
	// 4 s at 5 fps; ffmpeg's fps filter may round the last frame either way.
	if len(msgs) < 15 || len(msgs) > 25 {
		t.Fatalf("%d frames from a 4 s clip at 5 fps, want about 20", len(msgs))
	}
	for i, m := range msgs {
		meta := decodeFrame(t, m).GetMeta()
		if meta.GetSequence() != uint64(i+1) || meta.GetWidth() != 320 || meta.GetHeight() != 240 {
			t.Fatalf("frame %d: sequence %d, %dx%d; want %d, 320x240", i, meta.GetSequence(), meta.GetWidth(), meta.GetHeight(), i+1)
		}
	}
	if got := testutil.ToFloat64(r.m.Reconnects.WithLabelValues(site, "video")); got != 0 {
		t.Errorf("%v reconnects replaying a file, want 0", got)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestRTSPStreamReconnects(t *testing.T) {
	ffmpeg := needFFmpeg(t)
	stream := h264AnnexB(t, ffmpeg, makeClip(t, ffmpeg))
	_, js := startBus(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	first := startRTSPCamera(t, addr, stream)

	src, err := source.Parse("rtsp://"+addr+"/cam", source.Options{FPS: 5, MaxFrameBytes: 1 << 20, FFmpeg: ffmpeg})
	if err != nil {
		t.Fatal(err)
	}
	r := startGateway(t, js, []Camera{{ID: "rtsp", Source: src, FPS: 5, MaxFrameBytes: 1 << 20}}, nil)
	reconnects := func() float64 { return testutil.ToFloat64(r.m.Reconnects.WithLabelValues(site, "rtsp")) }
	waitFor(t, "frames from the RTSP stream", func() bool { return published(r.m, "rtsp") >= 5 })
	if got := reconnects(); got != 0 {
		t.Errorf("%v reconnects before the camera failed, want 0", got)
	}

	// Kill the camera mid-stream: the source fails and is retried.
	first.Close()
	waitFor(t, "a reconnect after the RTSP camera died", func() bool { return reconnects() > 0 })
	afterKill := published(r.m, "rtsp")

	startRTSPCamera(t, addr, stream)
	waitFor(t, "frames to resume after the RTSP camera came back", func() bool { return published(r.m, "rtsp") >= afterKill+5 })

	msgs := frames(t, js, "rtsp")
	for i, m := range msgs {
		meta := decodeFrame(t, m).GetMeta()
		if meta.GetSequence() != uint64(i+1) {
			t.Fatalf("frame %d has sequence %d: the sequence must stay monotonic across reconnects", i, meta.GetSequence())
		}
		if meta.GetWidth() != 320 || meta.GetHeight() != 240 {
			t.Fatalf("frame %d is %dx%d, want 320x240", i, meta.GetWidth(), meta.GetHeight())
		}
	}
}

func TestFFmpegFailureCarriesStderr(t *testing.T) {
	ffmpeg := needFFmpeg(t)
	missing := filepath.Join(t.TempDir(), "missing.mp4")
	src := &source.FFmpeg{Input: missing, FPS: 5, MaxFrameBytes: 1 << 20, Binary: ffmpeg}
	err := src.Run(t.Context(), discardSink{})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("No such file")) {
		t.Fatalf("ffmpeg on a missing file: %v; want an error quoting ffmpeg's stderr", err)
	}
	if _, statErr := os.Stat(missing); statErr == nil {
		t.Fatal("test setup: the file exists")
	}
}

type discardSink struct{}

func (discardSink) Frame(source.Frame) {}
func (discardSink) Drop(string)        {}

type chanSink chan source.Frame

func (c chanSink) Frame(f source.Frame) {
	select {
	case c <- f:
	default:
	}
}
func (chanSink) Drop(string) {}

// TestFFmpegKilledOnCancel: cancelling a looping video source ends Run
// with context.Canceled, which it returns only after ffmpeg was reaped.
func TestFFmpegKilledOnCancel(t *testing.T) {
	ffmpeg := needFFmpeg(t)
	clip := makeClip(t, ffmpeg)
	src := &source.FFmpeg{Input: clip, FPS: 5, Loop: true, MaxFrameBytes: 1 << 20, Binary: ffmpeg}
	ctx, cancel := context.WithCancel(context.Background())
	sink := make(chanSink, 1)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, sink) }()
	select {
	case f := <-sink:
		if f.Width != 320 || f.Height != 240 {
			t.Fatalf("frame %dx%d, want 320x240", f.Width, f.Height)
		}
	case err := <-done:
		t.Fatalf("Run ended before the first frame: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("no frame from a looping video")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30 s of cancel: ffmpeg not killed")
	}
}
