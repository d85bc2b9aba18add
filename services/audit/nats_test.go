package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/facegate/facegate/pkg/audit"
	"github.com/facegate/facegate/pkg/auditsink"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/natsauth"
	"github.com/facegate/facegate/pkg/natsauth/natsauthtest"
)

// TestRetentionRunsUnderItsOwnCredential runs the audit service as the
// least-privilege audit user, which may not purge, with the retention
// janitor on a second connection as the retention user: site-a's face events
// older than its 1 s retention are purged, site-b's stay. Without the
// retention credential the same janitor is refused and nothing is purged.
func TestRetentionRunsUnderItsOwnCredential(t *testing.T) {
	url, seeds := natsauthtest.Start(t, []natsauth.User{
		{Name: "admin", Role: natsauth.RoleAdmin},
		{Name: "audit", Role: natsauth.RoleAudit, Durable: "audit"},
		{Name: "retention", Role: natsauth.RoleRetention},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	adminOpt, err := nats.NkeyOptionFromSeed(natsauth.SeedFile(seeds, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	anc, err := nats.Connect(url, adminOpt, nats.CustomInboxPrefix("_INBOX.admin"))
	if err != nil {
		t.Fatal(err)
	}
	defer anc.Close()
	ajs, _ := jetstream.New(anc)
	if err := bus.EnsureStreams(ctx, ajs, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{bus.StreamDecisions, bus.StreamEnrolments, bus.StreamAudit} {
		if _, err := ajs.CreateOrUpdateConsumer(ctx, st, auditsink.ConsumerConfig("audit", 30*time.Second, 64)); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(site string, n int) {
		for i := range n {
			if _, err := ajs.Publish(ctx, "facegate.faces."+site+".cam-1", []byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	count := func(site string) uint64 {
		s, err := ajs.Stream(ctx, bus.StreamFaces)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter("facegate.faces."+site+".>"))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects["facegate.faces."+site+".cam-1"]
	}

	dir := t.TempDir()
	k, _ := audit.GenerateKey()
	if err := k.WriteKeyFile(filepath.Join(dir, "checkpoint.key")); err != nil {
		t.Fatal(err)
	}
	if err := auditsink.GenerateSubjectKey(filepath.Join(dir, "subject.key")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "retention.json"), []byte(`{"site-a": {"faces": "1s"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	runAudit := func(args ...string) (stop func(), logs *observer.ObservedLogs) {
		base := []string{"--nats-url", url, "--nats-creds", natsauth.SeedFile(seeds, "audit"), "--nats-user", "audit",
			"--log", filepath.Join(dir, "audit.log"), "--checkpoint-key", filepath.Join(dir, "checkpoint.key"),
			"--subject-key", filepath.Join(dir, "subject.key"), "--retention-config", filepath.Join(dir, "retention.json"),
			"--retention-interval", "1s"}
		s, err := parse(append(base, args...), env(nil), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		core, logs := observer.New(zapcore.WarnLevel)
		runCtx, stopRun := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- run(runCtx, s, zap.New(core)) }()
		return func() {
			stopRun()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}, logs
	}

	// Only the audit credential: the purge is refused, nothing goes.
	publish("site-a", 3)
	publish("site-b", 2)
	time.Sleep(1500 * time.Millisecond)
	stop, logs := runAudit()
	deadline := time.Now().Add(20 * time.Second)
	for logs.Len() == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	if n := count("site-a"); n != 3 {
		t.Fatalf("with the audit credential only, site-a holds %d frames, want the 3 it had (no purge right)", n)
	}
	var refused bool
	for _, e := range logs.All() {
		refused = refused || e.Message == "retention sweep failed"
	}
	if !refused {
		t.Errorf("no warning about the refused retention sweep: %v", logs.All())
	}

	// With the retention credential: site-a's old frames go, site-b's stay.
	stop, _ = runAudit("--retention-nats-creds", natsauth.SeedFile(seeds, "retention"), "--retention-nats-user", "retention")
	defer stop()
	deadline = time.Now().Add(30 * time.Second)
	for count("site-a") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("site-a still holds %d frames 30 s after its 1 s retention", count("site-a"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := count("site-b"); n != 2 {
		t.Fatalf("site-b holds %d frames, want its 2 (no retention configured for it)", n)
	}
}
