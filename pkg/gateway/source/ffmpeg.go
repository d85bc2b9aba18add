package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// FFmpeg decodes a video file or an RTSP stream with an ffmpeg subprocess
// that re-encodes it to a JPEG stream at FPS frames per second.
type FFmpeg struct {
	// Input is an ffmpeg input: a file path or an rtsp:// URL.
	Input string
	// FPS is the rate ffmpeg samples the video at.
	FPS float64
	// Loop replays a file forever (ignored for streams).
	Loop bool
	// MaxFrameBytes bounds one JPEG.
	MaxFrameBytes int
	// Binary is the ffmpeg executable; default "ffmpeg" on PATH.
	Binary string
	// StallTimeout kills ffmpeg when it wrote no frame for this long (an
	// RTSP server that keeps the socket open but sends nothing). Default 15 s.
	StallTimeout time.Duration
}

func (f *FFmpeg) isStream() bool {
	return strings.HasPrefix(f.Input, "rtsp://") || strings.HasPrefix(f.Input, "rtsps://")
}

func (f *FFmpeg) String() string {
	if f.isStream() {
		return "ffmpeg " + Redact(f.Input)
	}
	return "ffmpeg " + f.Input
}

// Args is the ffmpeg command line without the binary.
func (f *FFmpeg) Args() []string {
	args := []string{"-hide_banner", "-nostdin", "-loglevel", "error"}
	if f.isStream() {
		// TCP: cameras behind NAT and lossy Wi-Fi lose UDP packets, which
		// shows as smeared frames; a socket timeout turns a dead server into
		// an exit instead of a hang.
		args = append(args, "-rtsp_transport", "tcp", "-timeout", "10000000")
	} else {
		// A file is replayed at its own speed, like a camera would send it.
		args = append(args, "-re")
		if f.Loop {
			args = append(args, "-stream_loop", "-1")
		}
	}
	return append(args, "-i", f.Input,
		"-an", "-vf", "fps="+strconv.FormatFloat(f.FPS, 'f', -1, 64),
		"-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "4", "-")
}

// Run implements Source.
func (f *FFmpeg) Run(ctx context.Context, sink Sink) error {
	bin := f.Binary
	if bin == "" {
		bin = "ffmpeg"
	}
	stall := f.StallTimeout
	if stall <= 0 {
		stall = 15 * time.Second
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cmd := exec.CommandContext(ctx, bin, f.Args()...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	stderr := &tailBuffer{max: 4 << 10}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("source: %s: %w", f, err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("source: %s: start: %w", f, err)
	}
	errStalled := fmt.Errorf("no frame for %v", stall)
	watchdog := time.AfterFunc(stall, func() { cancel(errStalled) })
	defer watchdog.Stop()

	sp := NewJPEGSplitter(stdout, f.MaxFrameBytes)
	var readErr error
	for {
		data, err := sp.Next()
		if err == nil {
			watchdog.Reset(stall)
			deliver(sink, data, time.Now())
			continue
		}
		if reason := dropFor(err); reason != "" {
			watchdog.Reset(stall)
			sink.Drop(reason)
			continue
		}
		if !errors.Is(err, io.EOF) {
			readErr = err
		}
		break
	}
	// Unblock ffmpeg if it is still writing, then reap it.
	_, _ = io.Copy(io.Discard, stdout)
	waitErr := cmd.Wait()
	cause := context.Cause(ctx)
	switch {
	case ctx.Err() != nil && errors.Is(cause, context.Canceled):
		return context.Canceled
	case errors.Is(cause, errStalled):
		return fmt.Errorf("source: %s: %w; killed", f, errStalled)
	case ctx.Err() != nil:
		return ctx.Err()
	case waitErr != nil:
		return fmt.Errorf("source: %s: %w: %s", f, waitErr, f.redactOutput(stderr.String()))
	case readErr != nil:
		return fmt.Errorf("source: %s: read frames: %w", f, readErr)
	case f.isStream():
		// A live stream does not end; ffmpeg exiting cleanly means the
		// server closed it.
		return fmt.Errorf("source: %s: stream ended", f)
	}
	return nil
}

// redactOutput removes the input URL's password from ffmpeg's messages,
// which quote the URL.
func (f *FFmpeg) redactOutput(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return "(no output on stderr)"
	}
	if u, err := url.Parse(f.Input); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			s = strings.ReplaceAll(s, pw, "xxxxx")
		}
	}
	return s
}

// tailBuffer keeps the last max bytes written to it: ffmpeg's last words
// are the ones that explain its exit.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.ToValidUTF8(t.b, []byte("?")))
}
