package embedded_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/facegate/facegate/pkg/bus/embedded"
)

func start(t *testing.T, opts embedded.Options) *embedded.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := embedded.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func connect(t *testing.T, u string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(u)
	if err != nil {
		t.Fatalf("connect %s: %v", u, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func TestLoopbackRandomPort(t *testing.T) {
	a := start(t, embedded.Options{DataDir: t.TempDir()})
	b := start(t, embedded.Options{DataDir: t.TempDir()})
	for _, s := range []*embedded.Server{a, b} {
		u, err := url.Parse(s.URL())
		if err != nil {
			t.Fatalf("URL %q: %v", s.URL(), err)
		}
		ip := net.ParseIP(u.Hostname())
		if ip == nil || !ip.IsLoopback() {
			t.Errorf("server listens on %q, want a loopback address", u.Host)
		}
		if u.Port() == "" || u.Port() == "0" || u.Port() == "4222" {
			t.Errorf("port %q: want an OS-chosen port, not the default or none", u.Port())
		}
	}
	if a.URL() == b.URL() {
		t.Fatalf("two servers share URL %s", a.URL())
	}
}

func TestDataDirRequired(t *testing.T) {
	_, err := embedded.Start(context.Background(), embedded.Options{})
	if err == nil || !strings.Contains(err.Error(), "DataDir") {
		t.Fatalf("Start without DataDir: err = %v, want an error naming DataDir", err)
	}
}

// A restarted server on the same directory must still hold the stream and
// its messages: the all-in-one keeps its enrolments across restarts this way.
func TestRestartKeepsMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()

	s1 := start(t, embedded.Options{DataDir: dir})
	nc, js := connect(t, s1.URL())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "KEEP", Subjects: []string{"keep.>"}, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	const n = 5
	for i := range n {
		if _, err := js.Publish(ctx, fmt.Sprintf("keep.%d", i), fmt.Appendf(nil, "payload-%d", i)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	nc.Close()
	s1.Shutdown()
	if nc2, err := nats.Connect(s1.URL(), nats.MaxReconnects(0), nats.Timeout(time.Second)); err == nil {
		nc2.Close()
		t.Fatalf("server still accepts connections at %s after Shutdown", s1.URL())
	}

	s2 := start(t, embedded.Options{DataDir: dir})
	nc, js = connect(t, s2.URL())
	defer nc.Close()
	st, err := js.Stream(ctx, "KEEP")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Fatalf("after restart the stream holds %d messages, want %d", info.State.Msgs, n)
	}
	for i := range n {
		m, err := st.GetMsg(ctx, uint64(i+1))
		if err != nil {
			t.Fatalf("get seq %d: %v", i+1, err)
		}
		if want := fmt.Sprintf("payload-%d", i); string(m.Data) != want || m.Subject != fmt.Sprintf("keep.%d", i) {
			t.Fatalf("seq %d = %s %q, want keep.%d %q", i+1, m.Subject, m.Data, i, want)
		}
	}
}

// Two servers must not share one JetStream directory; the second must fail
// with an error instead of exiting the process or corrupting the store.
func TestSameDataDirTwice(t *testing.T) {
	dir := t.TempDir()
	start(t, embedded.Options{DataDir: dir})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := embedded.Start(ctx, embedded.Options{DataDir: dir})
	if err == nil {
		s.Shutdown()
		t.Fatalf("second server on %s started", dir)
	}
	t.Logf("second server refused: %v", err)
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the data dir", err)
	}
}

func TestMaxPayload(t *testing.T) {
	s := start(t, embedded.Options{DataDir: t.TempDir(), MaxPayload: 4096})
	nc, _ := connect(t, s.URL())
	defer nc.Close()
	if got := nc.MaxPayload(); got != 4096 {
		t.Fatalf("server announces max payload %d, want 4096", got)
	}
}

// TestEncryptionAtRest checks that with an EncryptionKey no message byte is
// readable in the data directory, that the messages survive a restart with
// the same key, and that a restart with another key does not serve them.
func TestEncryptionAtRest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	const marker = "facegate-plaintext-marker-7f3a"
	s1 := start(t, embedded.Options{DataDir: dir, EncryptionKey: "k1-0123456789abcdef0123456789abcdef"})
	nc, js := connect(t, s1.URL())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SECRET", Subjects: []string{"secret.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := js.Publish(ctx, "secret.person-"+marker, fmt.Appendf(nil, "%s-%d", marker, i)); err != nil {
			t.Fatal(err)
		}
	}
	nc.Close()
	s1.Shutdown()

	var files int
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s holds the plaintext marker", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatal("no files in the data directory: nothing was checked")
	}

	s2 := start(t, embedded.Options{DataDir: dir, EncryptionKey: "k1-0123456789abcdef0123456789abcdef"})
	nc, js = connect(t, s2.URL())
	st, err := js.Stream(ctx, "SECRET")
	if err != nil {
		t.Fatalf("stream after restart with the same key: %v", err)
	}
	m, err := st.GetMsg(ctx, 50)
	if err != nil {
		t.Fatalf("message 50 after restart: %v", err)
	}
	if string(m.Data) != marker+"-49" {
		t.Fatalf("message 50 after restart: %q", m.Data)
	}
	nc.Close()
	s2.Shutdown()

	s3, err := embedded.Start(ctx, embedded.Options{DataDir: dir, EncryptionKey: "another-key-0123456789abcdef012345"})
	if err == nil {
		defer s3.Shutdown()
		nc, js = connect(t, s3.URL())
		defer nc.Close()
		if st, err := js.Stream(ctx, "SECRET"); err == nil {
			if m, err := st.GetMsg(ctx, 50); err == nil && bytes.Contains(m.Data, []byte(marker)) {
				t.Fatal("a server with another key served the plaintext")
			}
		}
	}
}
