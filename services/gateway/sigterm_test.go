package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/testenv"
)

// The test binary doubles as the gateway binary: a child started with this
// variable runs main, so SIGTERM goes to a real separate process.
const childEnv = "FACEGATE_GATEWAY_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		for i, a := range os.Args {
			if a == "--" {
				os.Args = append([]string{os.Args[0]}, os.Args[i+1:]...)
				break
			}
		}
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestSIGTERMDrains(t *testing.T) {
	srv, _, js := natstest.Run(t, embedded.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(testenv.Dataset(t, "deepface/dataset"), "img5.jpg")
	cfg := fmt.Sprintf("gateway: gw-sig\nsite: hq\nnats: {url: %q}\ncameras:\n  - {id: lobby, source: \"file:%s\", fps: 10, loop: true}\n", srv.URL(), img)
	path := filepath.Join(t.TempDir(), "gw.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	cmd := exec.Command(exe, "--", "--config", path)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-done
		}
	})

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
		case err := <-done:
			t.Fatalf("gateway exited early: %v\n%s", err, logs.String())
		case <-ctx.Done():
			t.Fatalf("no frames from the gateway process:\n%s", logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("after SIGTERM the gateway exited with %v:\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the gateway did not exit within 30 s of SIGTERM:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "gateway drained") {
		t.Fatalf("no drain in the log:\n%s", logs.String())
	}
}
