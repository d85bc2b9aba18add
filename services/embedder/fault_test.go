package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/embedder"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/testenv"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// The test binary doubles as the embedder binary: a child started with this
// variable runs main, so the fault test kills a real separate process.
const childEnv = "FACEGATE_EMBEDDER_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Args = append([]string{os.Args[0]}, os.Args[indexOf(os.Args, "--")+1:]...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func indexOf(args []string, s string) int {
	for i, a := range args {
		if a == s {
			return i
		}
	}
	return len(args) - 1
}

type child struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan error
}

func (c *child) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.Write(p)
}

func (c *child) log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.String()
}

func startChild(t *testing.T, url string, args ...string) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{done: make(chan error, 1)}
	c.cmd = exec.Command(exe, append([]string{"--", "--nats-url", url}, args...)...)
	c.cmd.Env = append(os.Environ(), childEnv+"=1")
	c.cmd.Stderr = c
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

func count(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func readStream(t *testing.T, js jetstream.JetStream, stream string, visit func(*jetstream.RawStreamMsg)) {
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
	if info.State.Msgs == 0 {
		return
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("%s seq %d: %v", stream, seq, err)
		}
		visit(m)
	}
}

// A real embedder process is SIGKILLed in the middle of a stream of frames;
// a second one takes over and is stopped with SIGTERM once everything is
// done. Every frame must end as exactly one face event or one explicit
// expiry, and the SIGTERM must exit cleanly. FACEGATE_FAULT_FRAMES sets the
// number of frames (default 200; the full run is 1000).
func TestSIGKILLMidStreamLosesNoFrame(t *testing.T) {
	n := 200
	if v := os.Getenv("FACEGATE_FAULT_FRAMES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 10 {
			t.Fatalf("FACEGATE_FAULT_FRAMES=%q: want a number of at least 10", v)
		}
	}
	testenv.Models(t)
	files, err := filepath.Glob(filepath.Join(testenv.Datasets(t), "face-api.js", "examples", "images", "*", "*.png"))
	if err != nil || len(files) != 40 {
		t.Fatalf("want the 40 face-api.js crops, found %d (%v)", len(files), err)
	}
	imgs := make([][]byte, len(files))
	for i, f := range files {
		if imgs[i], err = os.ReadFile(f); err != nil {
			t.Fatal(err)
		}
	}

	srv := natstest.Start(t, embedded.Options{})
	_, js := natstest.Connect(t, srv.URL())
	cfg := bus.DefaultConfig()
	// The frames must outlive the test's backlog in the stream: a frame the
	// stream ages out reaches no embedder and ends neither way.
	cfg.Frames.MaxAge, cfg.Frames.Duplicates = 5*time.Minute, time.Minute
	if err := bus.EnsureStreams(context.Background(), js, cfg); err != nil {
		t.Fatal(err)
	}
	subject, _ := bus.FramesSubject("hq", "lobby-1")
	start := time.Now()
	// A few frames are already stale when published: they must end as expiries.
	const stale = 5
	for i := range n {
		captured := start
		if i < stale {
			captured = start.Add(-10 * time.Minute)
		}
		seq := uint64(i + 1)
		f := &facegatev1.Frame{SchemaVersion: events.SchemaVersion, Image: imgs[i%len(imgs)],
			Meta: &facegatev1.FrameMeta{SchemaVersion: events.SchemaVersion, Site: "hq", Camera: "lobby-1", Sequence: seq,
				CaptureTime: timestamppb.New(captured), Encoding: facegatev1.ImageEncoding_IMAGE_ENCODING_PNG}}
		hdr := nats.Header{}
		bus.FrameHeaders{Site: "hq", Camera: "lobby-1", Seq: seq, CaptureTime: captured}.Apply(hdr)
		hdr.Set(bus.HeaderMsgID, bus.FrameMsgID("hq", "lobby-1", seq, captured))
		if _, err := bus.Publish(context.Background(), js, subject, f, hdr); err != nil {
			t.Fatal(err)
		}
	}

	args := []string{"--ensure-streams=false", "--ack-wait=3s", "--max-age=2m", "--concurrency=2", "--batch=4",
		"--instance=fault-test", "--crops", "--stats-interval=0", "--log-level=info"}
	first := startChild(t, srv.URL(), args...)
	deadline := time.Now().Add(2 * time.Minute)
	for count(t, js, bus.StreamFaces) < uint64(n/3) {
		if time.Now().After(deadline) {
			t.Fatalf("first embedder published %d of %d events in 2 min; log:\n%s", count(t, js, bus.StreamFaces), n, first.log())
		}
		select {
		case err := <-first.done:
			t.Fatalf("first embedder exited early: %v; log:\n%s", err, first.log())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done
	killedAt := count(t, js, bus.StreamFaces)

	second := startChild(t, srv.URL(), args...)
	ended := func() uint64 { return count(t, js, bus.StreamFaces) + count(t, js, bus.StreamErrors) }
	for ended() < uint64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d frames ended; second embedder log:\n%s", ended(), n, second.log())
		}
		select {
		case err := <-second.done:
			t.Fatalf("second embedder exited early: %v; log:\n%s", err, second.log())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-second.done:
		if err != nil {
			t.Errorf("after SIGTERM the embedder exited with %v; log:\n%s", err, second.log())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("the embedder did not drain within 40 s of SIGTERM")
	}

	faces := map[uint64]int{}
	readStream(t, js, bus.StreamFaces, func(m *jetstream.RawStreamMsg) {
		ev, err := bus.DecodeFaceEvent(m.Data)
		if err != nil {
			t.Fatalf("face event %d: %v", m.Sequence, err)
		}
		faces[ev.GetFrame().GetSequence()]++
	})
	expired := map[uint64]int{}
	readStream(t, js, bus.StreamErrors, func(m *jetstream.RawStreamMsg) {
		ev := &facegatev1.ErrorEvent{}
		if err := bus.DecodeMsg(m.Header, m.Data, ev); err != nil {
			t.Fatalf("error event %d: %v", m.Sequence, err)
		}
		if ev.GetCode() != embedder.CodeExpired {
			t.Errorf("unexpected error event %s: %s", ev.GetCode(), ev.GetMessage())
			return
		}
		expired[ev.GetFrame().GetSequence()]++
	})
	var lost, dup []uint64
	for seq := uint64(1); seq <= uint64(n); seq++ {
		switch got := faces[seq] + expired[seq]; {
		case got == 0:
			lost = append(lost, seq)
		case got > 1:
			dup = append(dup, seq)
		}
		if seq <= stale && expired[seq] != 1 {
			t.Errorf("stale frame %d: %d expiries, %d face events", seq, expired[seq], faces[seq])
		}
	}
	if len(lost) > 0 || len(dup) > 0 {
		t.Errorf("%d frames lost %v, %d duplicated %v", len(lost), head(lost), len(dup), head(dup))
	}
	if len(faces)+len(expired) != n {
		t.Errorf("events for %d frames, want %d", len(faces)+len(expired), n)
	}
	// The kill must have interrupted work: frames the first process had
	// fetched but not acked are delivered again to the second.
	cons, err := js.Consumer(context.Background(), bus.StreamFrames, embedder.DefaultDurable(spaceOf(t, second.log())))
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Delivered.Consumer <= uint64(n) {
		t.Errorf("%d deliveries for %d frames: the SIGKILL interrupted nothing, so the test proved nothing", info.Delivered.Consumer, n)
	}
	t.Logf("%d frames, %d deliveries: %d face events before SIGKILL, %d expiries, total %v", n, info.Delivered.Consumer, killedAt, len(expired), time.Since(start).Round(time.Millisecond))
}

// spaceOf finds the embedding space in the embedder's start-up log line.
func spaceOf(t *testing.T, log string) string {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		var rec struct {
			Msg   string `json:"msg"`
			Space string `json:"space"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "embedder started" {
			return rec.Space
		}
	}
	t.Fatalf("no start-up line in the embedder's log:\n%s", log)
	return ""
}

func head(s []uint64) []uint64 { return s[:min(len(s), 10)] }
