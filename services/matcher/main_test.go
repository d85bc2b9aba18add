package main

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/directory"
	dt "github.com/facegate/facegate/pkg/directory/directorytest"
	"github.com/facegate/facegate/pkg/events"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseFlagsOverrideEnvironment(t *testing.T) {
	s, err := parse([]string{"--site", "hq", "--cooldown=2s"}, env(map[string]string{
		"FACEGATE_SITE":         "annex", // the flag wins
		"FACEGATE_KEYS_DIR":     "/keys",
		"FACEGATE_SNAPSHOT_DIR": "/snap",
		"FACEGATE_NATS_URL":     "nats://bus:4222",
		"FACEGATE_THRESHOLD":    "0.4",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.site != "hq" || s.cooldown != 2*time.Second || s.keysDir != "/keys" || s.snapshotDir != "/snap" ||
		s.natsURL != "nats://bus:4222" || s.threshold != 0.4 || s.space != "dlib-resnet34-128+mirror" || s.dim != 128 {
		t.Errorf("parsed %+v", s)
	}
}

func TestParseRefusesBadValues(t *testing.T) {
	keys := map[string]string{"FACEGATE_KEYS_DIR": "/keys"}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, nil, "keys-dir"},
		{[]string{"--site", "hq.north"}, keys, "site"},
		{[]string{"--threshold", "3"}, keys, "threshold"},
		{[]string{"--cooldown", "0s"}, keys, "cooldown"},
		{[]string{"--space", "unknown-model"}, keys, "--dim"},
		{[]string{"stray"}, keys, "unexpected arguments"},
	} {
		_, err := parse(tc.args, env(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse(%q, %v) = %v, want an error mentioning %q", tc.args, tc.env, err, tc.want)
		}
	}
}

// TestRunDecidesAndDrains runs the command's run() against a real server:
// an enrolled person's face gets a GRANT, and cancelling (SIGTERM) returns
// cleanly leaving a snapshot behind.
func TestRunDecidesAndDrains(t *testing.T) {
	srv, _, js := natstest.Run(t, embedded.Options{})
	keys := dt.KeyDir(t)
	kp := dt.OpenKeys(t, keys)
	space, _ := dt.Space(t)
	snap := t.TempDir()
	if err := bus.EnsureStreams(context.Background(), js, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	dt.Publish(t, js, dt.Person("amy", "hq"),
		dt.PhotoAdd(t, kp, space, "amy", "amy-1", dt.Encoding(t, "face-api.js/examples/images/amy/amy1.png")),
		dt.Member("amy", "staff"), dt.Door("hq", "front", fv1.Mode_MODE_IDENTIFY, "cam1"),
		dt.Policy("p", "hq", []string{"staff"}, []string{"front"}, "", fv1.Effect_EFFECT_ALLOW, 0))

	s, err := parse([]string{"--nats-url", srv.URL(), "--keys-dir", keys, "--snapshot-dir", snap, "--site", "hq",
		"--metrics-addr", "127.0.0.1:0"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, s, zaptest.NewLogger(t)) }()
	defer func() { cancel(); <-done }()

	// Wait for the consumers, then send a face.
	waitFor(t, func() bool {
		_, err := js.Consumer(context.Background(), bus.StreamFaces, "matcher-hq")
		return err == nil
	})
	res := dt.Analyze(t, "face-api.js/examples/images/amy/amy4.png")
	ev := &fv1.FaceEvent{SchemaVersion: events.SchemaVersion, ModelId: space,
		Frame: &fv1.FrameRef{Site: "hq", Camera: "cam1", Sequence: 1, CaptureTime: timestamppb.Now()}}
	for i, f := range res.Faces {
		ev.Faces = append(ev.Faces, &fv1.Face{Index: uint32(i), Box: &fv1.Box{X: float32(f.Box.X), Y: float32(f.Box.Y), Width: float32(f.Box.W), Height: float32(f.Box.H)},
			Quality: &fv1.Quality{Passed: true}, Embedding: f.Encoding, EmbeddingDimension: uint32(len(f.Encoding))})
	}
	hdr := nats.Header{}
	hdr.Set(bus.HeaderMsgID, "f1")
	if _, err := bus.Publish(context.Background(), js, "facegate.faces.hq.cam1", ev, hdr); err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(context.Background(), bus.StreamDecisions)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		msg, err := stream.GetLastMsgForSubject(context.Background(), "facegate.decisions.hq.front")
		if err != nil {
			return false
		}
		d, err := bus.DecodeDecision(msg.Data)
		return err == nil && d.GetOutcome() == fv1.Outcome_OUTCOME_GRANT && d.GetPersonId() == "amy"
	})
	cancel()
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("run after cancel: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if _, err := directory.ReadSnapshotFile(context.Background(), kp, filepath.Join(snap, directory.SnapshotFile)); err != nil {
		t.Fatalf("no snapshot after drain: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
