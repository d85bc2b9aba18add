package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/facegate/facegate/pkg/audit"
	"github.com/facegate/facegate/pkg/auditsink"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseFlagsOverrideEnvironment(t *testing.T) {
	s, err := parse([]string{"--log", "/var/lib/audit.log", "--batch", "8"}, env(map[string]string{
		"FACEGATE_LOG":              "/elsewhere.log", // the flag wins
		"FACEGATE_CHECKPOINT_KEY":   "/keys/checkpoint.key",
		"FACEGATE_SUBJECT_KEY":      "/keys/subject.key",
		"FACEGATE_NATS_URL":         "nats://bus:4222",
		"FACEGATE_NATS_CREDS":       "/seeds/audit.nk",
		"FACEGATE_RETENTION_CONFIG": "/etc/retention.json",
		"FACEGATE_METRICS_ADDR":     ":9464",
		"FACEGATE_CREATE_CONSUMERS": "true",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.logPath != "/var/lib/audit.log" || s.batch != 8 || s.checkpointKey != "/keys/checkpoint.key" || s.subjectKey != "/keys/subject.key" ||
		s.natsURL != "nats://bus:4222" || s.natsCreds != "/seeds/audit.nk" || s.retentionConfig != "/etc/retention.json" ||
		s.metricsAddr != ":9464" || !s.createConsumers || s.durable != "audit" {
		t.Errorf("parsed %+v", s)
	}
}

func TestParseRefusesBadValues(t *testing.T) {
	keys := map[string]string{"FACEGATE_LOG": "l", "FACEGATE_CHECKPOINT_KEY": "k", "FACEGATE_SUBJECT_KEY": "s"}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, nil, "--log"},
		{[]string{"--log", "l"}, nil, "--checkpoint-key"},
		{[]string{"--log", "l", "--checkpoint-key", "k"}, nil, "--subject-key"},
		{[]string{"--batch", "0"}, keys, "batch 0"},
		{[]string{"--durable", "a.b"}, keys, "durable"},
		{nil, map[string]string{"FACEGATE_LOG": "l", "FACEGATE_CHECKPOINT_KEY": "k", "FACEGATE_SUBJECT_KEY": "s", "FACEGATE_CHECKPOINT_EVERY": "many"}, "FACEGATE_CHECKPOINT_EVERY"},
		{[]string{"stray"}, keys, "unexpected arguments"},
	} {
		_, err := parse(tc.args, env(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse(%q, %v) = %v, want an error mentioning %q", tc.args, tc.env, err, tc.want)
		}
	}
}

// The service runs against a real server, records a decision, runs the
// retention janitor, and on cancellation (SIGTERM) drains and leaves a
// verifying, signed log.
func TestRunRecordsAndDrains(t *testing.T) {
	srv, _, js := natstest.Run(t, embedded.Options{})
	ctx := context.Background()
	if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	k, _ := audit.GenerateKey()
	if err := k.WriteKeyFile(filepath.Join(dir, "checkpoint.key")); err != nil {
		t.Fatal(err)
	}
	if err := auditsink.GenerateSubjectKey(filepath.Join(dir, "subject.key")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "retention.json"), []byte(`{"site-a": {"decisions": "30d"}}`), 0o644)
	s, err := parse([]string{"--nats-url", srv.URL(), "--log", filepath.Join(dir, "audit.log"),
		"--checkpoint-key", filepath.Join(dir, "checkpoint.key"), "--subject-key", filepath.Join(dir, "subject.key"),
		"--create-consumers", "--retention-config", filepath.Join(dir, "retention.json"), "--metrics-addr", "127.0.0.1:0"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, s, zap.NewNop()) }()

	d := &facegatev1.Decision{SchemaVersion: 1, DecisionId: "d-1", Site: "site-a", Door: "door-1", Outcome: facegatev1.Outcome_OUTCOME_DENY,
		Mode: facegatev1.Mode_MODE_IDENTIFY, PersonId: proto.String("person-run-test"), Threshold: 0.4}
	if _, err := bus.Publish(ctx, js, "facegate.decisions.site-a.door-1", d, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, _ := os.ReadFile(s.logPath)
		if bytes.Contains(data, []byte(`"decision_id":"d-1"`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the decision never reached the log")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	f, _ := os.Open(s.logPath)
	defer f.Close()
	r := audit.Verify(f, []ed25519.PublicKey{k.PublicKey()})
	if !r.OK() || r.LastSeq != 1 || r.SignedThrough != 1 {
		t.Fatalf("log after drain: last %d signed %d: %v", r.LastSeq, r.SignedThrough, r.Err())
	}

	// A key file others can read is refused before anything starts.
	os.Chmod(s.checkpointKey, 0o644)
	if err := run(ctx, s, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Fatalf("world-readable key: %v", err)
	}
}
