package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/directory/directorytest"
	"github.com/facegate/facegate/pkg/embedder"
	"github.com/facegate/facegate/pkg/gateway"
	"github.com/facegate/facegate/pkg/gateway/source"
	"github.com/facegate/facegate/pkg/matcher"
	"github.com/facegate/facegate/pkg/testenv"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

// proc is a service binary running as a child process.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan error
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{done: make(chan error, 1)}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// buildEmbedder builds services/embedder into a temporary directory.
func buildEmbedder(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "embedder")
	cmd := exec.Command("go", "build", "-o", bin, "./services/embedder")
	cmd.Dir = testenv.RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./services/embedder: %v\n%s", err, out)
	}
	return bin
}

func framesFromEnv(t *testing.T) int {
	t.Helper()
	v := os.Getenv("FACEGATE_E2E_FRAMES")
	if v == "" {
		return 1000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 20 {
		t.Fatalf("FACEGATE_E2E_FRAMES=%q: want a number of at least 20", v)
	}
	return n
}

// expectedDecisions is how many decisions the matcher makes for a face
// event at an identify door with a cooldown too short to suppress anything:
// one per face that can be matched, else one LOW_QUALITY for a frame whose
// faces all failed the gate, else none (an empty frame).
func expectedDecisions(ev *fv1.FaceEvent) int {
	usable := 0
	for _, f := range ev.GetFaces() {
		if f.GetQuality().GetPassed() && len(f.GetEmbedding()) > 0 {
			usable++
		}
	}
	switch {
	case usable > 0:
		return usable
	case len(ev.GetFaces()) > 0:
		return 1
	}
	return 0
}

// TestEmbedderKilledMidReplayNoDuplicateDecisions replays a backlog of
// frames (FACEGATE_E2E_FRAMES, default 1000: the 40 face-api.js crops in
// in turn, a few of them too old to decide on) through the embedder binary
// as a child process, and through an in-process matcher at an identify door
// with a 1 ns cooldown, so every face is decided. The embedder is SIGKILLed
// a third of the way through and started again. Every frame must end as
// exactly one face event or one expiry (ERRORS, code "expired"), and the
// DECISIONS stream must hold no decision_id twice and exactly the decisions
// each face event calls for: one per matchable face, one LOW_QUALITY for a
// frame whose faces all failed the quality gate.
func TestEmbedderKilledMidReplayNoDuplicateDecisions(t *testing.T) {
	began := time.Now()
	n := framesFromEnv(t)
	root := testenv.Models(t)
	eng := directorytest.Engine(t)
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
	bin := buildEmbedder(t)
	t.Logf("embedder built in %v", time.Since(began).Round(time.Millisecond))

	srv := natstest.Start(t, embedded.Options{MaxPayload: 8 << 20})
	_, js := natstest.Connect(t, srv.URL())
	cfg := bus.DefaultConfig()
	// The backlog must outlive the test in FRAMES (default 10 s), and the
	// duplicate windows must cover the redeliveries after the kill.
	cfg.Frames.MaxAge, cfg.Frames.Duplicates = 10*time.Minute, 5*time.Minute
	cfg.Faces.Duplicates, cfg.Decisions.Duplicates = 5*time.Minute, 5*time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := bus.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}

	// The gallery: sheldon may enter, howard is known but not allowed,
	// everybody else is a stranger.
	keys := directorytest.Keys(t)
	space := eng.Space()
	var changes []*fv1.EnrolmentChange
	changes = append(changes, directorytest.Door("hq", "main", fv1.Mode_MODE_IDENTIFY, "lobby-cam"),
		directorytest.Person("sheldon", "hq"), directorytest.Member("sheldon", "staff"), directorytest.Person("howard", "hq"),
		directorytest.Policy("staff-main", "hq", []string{"staff"}, []string{"main"}, "", fv1.Effect_EFFECT_ALLOW, 0))
	for _, p := range []struct {
		who string
		i   []int
	}{{"sheldon", []int{1, 2, 4}}, {"howard", []int{1, 2}}} {
		for _, i := range p.i {
			rel := fmt.Sprintf("face-api.js/examples/images/%s/%s%d.png", p.who, p.who, i)
			changes = append(changes, directorytest.PhotoAdd(t, keys, space, p.who, fmt.Sprintf("%s-%d", p.who, i), directorytest.Encoding(t, rel)))
		}
	}
	directorytest.Publish(t, js, changes...)
	dir := runDirectory(t, js, keys, eng, "directory")
	quiet := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	mt, err := matcher.New(matcher.Config{JetStream: js, Directory: dir, ModelCacheRoot: root, Cooldown: time.Nanosecond,
		MaxAge: time.Hour, Log: quiet, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	background(t, "matcher", mt.Run)
	// The matcher's FACES consumer delivers new messages only: wait for it
	// before any face event exists.
	eventually(t, time.Minute, "the matcher's consumer", func() bool {
		_, err := js.Consumer(ctx, bus.StreamFaces, matcher.Service)
		return err == nil
	})

	// The backlog. A few frames are stale: they must end as expiries.
	const stale = 5
	start := time.Now()
	subject, _ := bus.FramesSubject("hq", "lobby-cam")
	for i := range n {
		// Distinct capture times keep the 1 ns cooldown from merging frames.
		captured := start.Add(time.Duration(i) * time.Microsecond)
		if i < stale {
			captured = captured.Add(-10 * time.Minute)
		}
		msg, hdr, err := gateway.FrameMessage("hq", "e2e-gw", "lobby-cam", uint64(i+1), source.Frame{Data: imgs[i%len(imgs)],
			Encoding: fv1.ImageEncoding_IMAGE_ENCODING_PNG, Width: 150, Height: 150, Captured: captured})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bus.Publish(ctx, js, subject, msg, hdr); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d frames published in %v", n, time.Since(start).Round(time.Millisecond))

	args := []string{"--nats-url", srv.URL(), "--cache", root, "--ensure-streams=false", "--ack-wait=3s", "--max-age=5m",
		"--concurrency=2", "--batch=4", "--stats-interval=0", "--log-level=warn"}
	first := startProc(t, bin, append(args, "--instance=e2e-1")...)
	// Generous: a loaded 2-core CI machine runs other packages alongside.
	deadline := time.Now().Add(6 * time.Minute)
	for streamCount(t, js, bus.StreamFaces) < uint64(n/3) {
		if time.Now().After(deadline) {
			t.Fatalf("the first embedder published %d face events of %d in time; log:\n%s", streamCount(t, js, bus.StreamFaces), n, first.log())
		}
		select {
		case err := <-first.done:
			t.Fatalf("the first embedder exited early: %v; log:\n%s", err, first.log())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done
	killedAt := streamCount(t, js, bus.StreamFaces)
	t.Logf("SIGKILLed the embedder after %d face events, %v in", killedAt, time.Since(began).Round(time.Millisecond))

	second := startProc(t, bin, append(args, "--instance=e2e-2")...)
	ended := func() uint64 { return streamCount(t, js, bus.StreamFaces) + streamCount(t, js, bus.StreamErrors) }
	for ended() < uint64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d frames ended; second embedder log:\n%s", ended(), n, second.log())
		}
		select {
		case err := <-second.done:
			t.Fatalf("the second embedder exited early: %v; log:\n%s", err, second.log())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Logf("every frame ended %v in", time.Since(began).Round(time.Millisecond))
	// The matcher has caught up when its consumer has nothing pending.
	faces, err := js.Consumer(ctx, bus.StreamFaces, matcher.Service)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "the matcher to acknowledge every face event", func() bool {
		ci, err := faces.Info(ctx)
		return err == nil && ci.NumPending == 0 && ci.NumAckPending == 0 && ci.AckFloor.Stream >= streamCount(t, js, bus.StreamFaces)
	})
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

	// Frames: exactly one face event or one expiry each.
	events := map[uint64]*fv1.FaceEvent{}
	faceEvents := map[uint64]int{}
	for _, m := range streamMsgs(t, js, bus.StreamFaces) {
		ev, err := bus.DecodeFaceEvent(m.Data)
		if err != nil {
			t.Fatalf("face event %d: %v", m.Sequence, err)
		}
		seq := ev.GetFrame().GetSequence()
		faceEvents[seq]++
		events[seq] = ev
	}
	expired := map[uint64]int{}
	for _, m := range streamMsgs(t, js, bus.StreamErrors) {
		ev := &fv1.ErrorEvent{}
		if err := bus.DecodeMsg(m.Header, m.Data, ev); err != nil {
			t.Fatalf("error event %d: %v", m.Sequence, err)
		}
		if ev.GetService() != embedder.Service || ev.GetCode() != embedder.CodeExpired {
			t.Errorf("unexpected error event %s/%s: %s", ev.GetService(), ev.GetCode(), ev.GetMessage())
			continue
		}
		expired[ev.GetFrame().GetSequence()]++
	}
	var lost, dup []uint64
	for seq := uint64(1); seq <= uint64(n); seq++ {
		switch got := faceEvents[seq] + expired[seq]; {
		case got == 0:
			lost = append(lost, seq)
		case got > 1:
			dup = append(dup, seq)
		}
		if seq <= stale && expired[seq] != 1 {
			t.Errorf("stale frame %d: %d expiries, %d face events", seq, expired[seq], faceEvents[seq])
		}
	}
	if len(lost) > 0 || len(dup) > 0 {
		t.Errorf("%d frames lost %v, %d ended twice %v", len(lost), first10(lost), len(dup), first10(dup))
	}

	// Decisions: no id twice, exactly what each face event calls for.
	ids := map[string]int{}
	perFrame := map[uint64]int{}
	outcomes := map[fv1.Outcome]int{}
	decisions := streamMsgs(t, js, bus.StreamDecisions)
	for _, m := range decisions {
		d, err := bus.DecodeDecision(m.Data)
		if err != nil {
			t.Fatalf("decision %d: %v", m.Sequence, err)
		}
		ids[d.GetDecisionId()]++
		perFrame[d.GetFrame().GetSequence()]++
		outcomes[d.GetOutcome()]++
		if len(d.GetLatencies()) == 0 {
			t.Errorf("decision %s carries no latency stages", brief(d))
		}
	}
	for id, k := range ids {
		if k > 1 {
			t.Errorf("decision %s stored %d times", id, k)
		}
	}
	want, wrong := 0, 0
	for seq, ev := range events {
		w := expectedDecisions(ev)
		want += w
		if perFrame[seq] != w {
			if wrong < 10 {
				t.Errorf("frame %d: %d decisions, want %d (%d faces)", seq, perFrame[seq], w, len(ev.GetFaces()))
			}
			wrong++
		}
	}
	for seq := range perFrame {
		if events[seq] == nil {
			t.Errorf("decisions for frame %d, which has no face event", seq)
		}
	}
	if len(decisions) != want {
		t.Errorf("%d decisions stored, want %d (%d frames wrong)", len(decisions), want, wrong)
	}
	// LOW_QUALITY is not required: whether any crop fails the gate depends
	// on its thresholds; the per-frame count above covers it when one does.
	for _, o := range []fv1.Outcome{fv1.Outcome_OUTCOME_GRANT, fv1.Outcome_OUTCOME_DENY, fv1.Outcome_OUTCOME_UNKNOWN} {
		if outcomes[o] == 0 {
			t.Errorf("no %s decision among %d: the replay did not exercise every path", o, len(decisions))
		}
	}

	// The kill must have interrupted work: frames the first process had
	// fetched but not acknowledged were delivered again.
	cons, err := js.Consumer(ctx, bus.StreamFrames, embedder.DefaultDurable(space))
	if err != nil {
		t.Fatal(err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ci.Delivered.Consumer <= uint64(n) {
		t.Errorf("%d deliveries for %d frames: the SIGKILL interrupted nothing, so the test proved nothing", ci.Delivered.Consumer, n)
	}
	t.Logf("%d frames, %d deliveries, %d face events (%d before the SIGKILL), %d expiries, %d decisions %v; took %v",
		n, ci.Delivered.Consumer, len(faceEvents), killedAt, len(expired), len(decisions), outcomes, time.Since(began).Round(time.Millisecond))
}

func first10(s []uint64) []uint64 { return s[:min(len(s), 10)] }
