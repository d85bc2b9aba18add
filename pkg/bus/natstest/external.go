package natstest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/facegate/facegate/pkg/testenv"
)

// External is an out-of-process nats-server (Debian's package on CI) with
// JetStream on file storage, for tests that must restart or kill the broker
// under running clients: the embedded server shares the test's process, so
// it cannot show what a client sees when the broker process dies.
type External struct {
	t       testing.TB
	bin     string
	dir     string
	port    int
	conf    string
	mu      sync.Mutex
	cmd     *exec.Cmd
	stderr  *bytes.Buffer
	stopped chan struct{}
}

// StartExternal starts nats-server from PATH on a free loopback port with
// its JetStream store in a fresh temporary directory. The test is skipped
// (failed under CI) when nats-server is not installed.
func StartExternal(t testing.TB) *External {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		testenv.Missing(t, "nats-server", "install Debian's nats-server package (.ci/run does)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: find a free port: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	// Debian's 2.9 has no sync_interval setting: writes reach the OS page
	// cache before the ack, so a killed server process loses nothing it
	// acknowledged (a machine crash could; that is not what this tests).
	cfg := fmt.Sprintf("listen: 127.0.0.1:%d\nserver_name: natstest\njetstream {\n  store_dir: %q\n}\nmax_payload: 8MB\n",
		port, filepath.Join(dir, "jetstream"))
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatalf("natstest: write config: %v", err)
	}
	e := &External{t: t, bin: bin, dir: dir, port: port, conf: conf}
	e.Start()
	t.Cleanup(func() { e.Stop(syscall.SIGTERM) })
	return e
}

// URL is the client URL; it stays the same across restarts.
func (e *External) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(e.port) }

// StoreDir is the JetStream store directory.
func (e *External) StoreDir() string { return filepath.Join(e.dir, "jetstream") }

// Start starts the server (again) and waits until it accepts connections.
func (e *External) Start() {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd != nil {
		e.t.Fatalf("natstest: nats-server already running")
	}
	var stderr bytes.Buffer
	cmd := exec.Command(e.bin, "-c", e.conf)
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("natstest: start nats-server: %v", err)
	}
	stopped := make(chan struct{})
	go func() { _ = cmd.Wait(); close(stopped) }()
	e.cmd, e.stderr, e.stopped = cmd, &stderr, stopped
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(e.port), 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return
		}
		select {
		case <-stopped:
			e.t.Fatalf("natstest: nats-server exited at start: %s", stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("natstest: nats-server not listening after 20 s: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop sends sig (SIGTERM for a clean shutdown, SIGKILL for a crash) and
// waits for the process to exit. Stopping a stopped server does nothing.
func (e *External) Stop(sig syscall.Signal) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd == nil {
		return
	}
	_ = e.cmd.Process.Signal(sig)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	select {
	case <-e.stopped:
	case <-ctx.Done():
		_ = e.cmd.Process.Kill()
		<-e.stopped
	}
	e.cmd = nil
}
