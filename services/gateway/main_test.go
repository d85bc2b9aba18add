package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/testenv"
)

func TestParseFlagsAndEnv(t *testing.T) {
	env := map[string]string{"FACEGATE_CONFIG": "/etc/gw.yaml", "FACEGATE_METRICS_ADDR": ":9464", "FACEGATE_DRAIN_TIMEOUT": "3s"}
	s, err := parse([]string{"--metrics-addr", ":1"}, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if s.config != "/etc/gw.yaml" || s.metricsAddr != ":1" || s.drainTimeout != 3*time.Second {
		t.Fatalf("settings %+v: want config from env, metrics-addr from the flag, drain timeout from env", s)
	}
	if _, err := parse(nil, func(string) string { return "" }, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--config") {
		t.Fatalf("no config: %v", err)
	}
	if _, err := parse(nil, func(k string) string {
		return map[string]string{"FACEGATE_CONFIG": "x", "FACEGATE_DRAIN_TIMEOUT": "later"}[k]
	}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "FACEGATE_DRAIN_TIMEOUT") {
		t.Fatalf("bad env value: %v", err)
	}
}

// TestRunServesCamerasAndClaims runs the command's run with a real
// configuration file, NATS server, dataset images and claims listener,
// then cancels it as SIGTERM does and checks that it drains cleanly.
func TestRunServesCamerasAndClaims(t *testing.T) {
	srv, _, js := natstest.Run(t, embedded.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	frames := t.TempDir()
	for _, name := range []string{"img5.jpg", "img6.jpg"} {
		b, err := os.ReadFile(filepath.Join(testenv.Dataset(t, "deepface/dataset"), name))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(frames, name), b, 0o600)
	}
	cfg := fmt.Sprintf(`gateway: gw-svc
site: hq
nats: {url: %q}
cameras:
  - {id: lobby, source: "folder:%s", fps: 10, loop: true}
claims:
  listen: 127.0.0.1:0
  token_sha256: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08]
`, srv.URL(), frames)
	path := filepath.Join(t.TempDir(), "gw.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, settings{config: path, drainTimeout: 5 * time.Second, metricsAddr: "127.0.0.1:0"}, zaptest.NewLogger(t), ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run: %v", err)
	}

	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/claims", strings.NewReader(`{"site":"hq","door":"front","badge_id":"B7"}`))
	req.Header.Set("Authorization", "Bearer test") // sha256("test") is configured
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("claim: %s", resp.Status)
	}

	st, err := js.Stream(ctx, bus.StreamFrames)
	if err != nil {
		t.Fatal(err)
	}
	for {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs >= 3 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("only %d frames published", info.State.Msgs)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cl, err := js.Stream(ctx, bus.StreamClaims)
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := cl.Info(ctx); info.State.Msgs != 1 {
		t.Fatalf("%d claims stored, want 1", info.State.Msgs)
	}

	stop() // what SIGTERM does
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after stop: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not drain within 30 s of stop")
	}
}
