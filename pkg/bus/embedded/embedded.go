// Package embedded runs a NATS server with JetStream inside the process: the
// all-in-one binary's bus, and the real server that bus tests run against.
//
// The server listens on loopback only, on a port the OS picks, and keeps its
// JetStream data in the directory it is given, so a server started again on
// the same directory finds its streams and messages where it left them.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configure an embedded server. Zero values pick the defaults noted.
type Options struct {
	// DataDir holds JetStream's files. Required: a server without one would
	// silently lose the enrolment stream on restart.
	DataDir string
	// Port to listen on, on 127.0.0.1; 0 lets the OS pick a free one.
	Port int
	// ServerName names the server in JetStream metadata; keep it stable
	// across restarts on the same DataDir. Default "facegate-embedded".
	ServerName string
	// MaxPayload is the largest message the server accepts, in bytes.
	// Default: the server's (1 MiB).
	MaxPayload int32
	// JetStreamMaxMemory and JetStreamMaxStore cap JetStream's memory and
	// disk use in bytes. Default: the server's (a share of RAM and disk).
	JetStreamMaxMemory int64
	JetStreamMaxStore  int64
	// EncryptionKey, when set, encrypts JetStream's files at rest with
	// AES-GCM (nats-server's store cipher) under a key derived from it:
	// frames, face events with their embeddings and enrolment changes are
	// then unreadable on disk without it. The same key must be given on
	// every start on the DataDir; a different one fails to read the
	// streams. Keep it out of the data directory.
	EncryptionKey string
	// StartTimeout bounds how long Start waits for the server to accept
	// connections. Default 10 s.
	StartTimeout time.Duration
	// Logger receives the server's log lines. Default: none.
	Logger server.Logger
}

// Server is a running embedded server.
type Server struct {
	ns      *server.Server
	url     string
	dataDir string
	lock    *os.File
	once    sync.Once
}

// lockFileName sits in DataDir beside nats-server's jetstream folder.
const lockFileName = "facegate-embedded.lock"

// Start starts a server and waits until it accepts connections with
// JetStream enabled.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.DataDir == "" {
		return nil, errors.New("embedded: Options.DataDir is required (JetStream's storage directory)")
	}
	if err := os.MkdirAll(opts.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded: data dir: %w", err)
	}
	if opts.Port < 0 {
		return nil, fmt.Errorf("embedded: port %d is negative (use 0 for a free port)", opts.Port)
	}
	port := opts.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	name := opts.ServerName
	if name == "" {
		name = "facegate-embedded"
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}

	sopts := &server.Options{
		ServerName:         name,
		Host:               "127.0.0.1",
		Port:               port,
		JetStream:          true,
		StoreDir:           opts.DataDir,
		JetStreamMaxMemory: opts.JetStreamMaxMemory,
		JetStreamMaxStore:  opts.JetStreamMaxStore,
		MaxPayload:         opts.MaxPayload,
		JetStreamKey:       opts.EncryptionKey,
		JetStreamCipher:    server.AES,
		// The host process owns signals and logging.
		NoSigs: true,
		NoLog:  opts.Logger == nil,
	}
	lock, err := lockDir(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("embedded: data dir %s: %w", opts.DataDir, err)
	}
	release := func() {
		if lock != nil {
			lock.Close()
		}
	}
	ns, err := server.NewServer(sopts)
	if err != nil {
		release()
		return nil, fmt.Errorf("embedded: configure server: %w", err)
	}
	// The server reports start-up failures (JetStream unable to use the data
	// dir, port in use) only through its logger's Fatalf, and a real Fatalf
	// would exit the process; capture them instead and return them.
	logs := &captureLogger{next: opts.Logger}
	ns.SetLogger(logs, false, false)

	ns.Start()
	if err := waitReady(ctx, ns, timeout); err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		release()
		return nil, fmt.Errorf("embedded: start on %s: %w%s", opts.DataDir, err, logs.fatalSuffix())
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		ns.WaitForShutdown()
		release()
		return nil, fmt.Errorf("embedded: JetStream did not start on %s%s", opts.DataDir, logs.fatalSuffix())
	}
	return &Server{ns: ns, url: ns.ClientURL(), dataDir: opts.DataDir, lock: lock}, nil
}

func waitReady(ctx context.Context, ns *server.Server, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if ns.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready for connections after %v", timeout)
		}
	}
}

// URL is the client URL, nats://127.0.0.1:<port>.
func (s *Server) URL() string { return s.url }

// DataDir is the JetStream storage directory.
func (s *Server) DataDir() string { return s.dataDir }

// NATS exposes the underlying server, for monitoring endpoints or tests
// that need server internals.
func (s *Server) NATS() *server.Server { return s.ns }

// Shutdown stops the server and waits until it has flushed and released its
// data directory, so a new server can start on it. Calling it again does
// nothing.
func (s *Server) Shutdown() {
	s.once.Do(func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		// Only now is the store flushed and closed.
		if s.lock != nil {
			s.lock.Close()
		}
	})
}

// captureLogger keeps the server's fatal and error lines for Start's error
// message and forwards everything to next when set. It never exits.
type captureLogger struct {
	next server.Logger
	mu   sync.Mutex
	errs []string
}

// maxCaptured bounds what a misbehaving server can make us keep.
const maxCaptured = 16

func (l *captureLogger) keep(format string, v []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < maxCaptured {
		l.errs = append(l.errs, fmt.Sprintf(format, v...))
	}
}

func (l *captureLogger) fatalSuffix() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) == 0 {
		return ""
	}
	return ": server said: " + strings.Join(l.errs, "; ")
}

func (l *captureLogger) Noticef(format string, v ...any) {
	if l.next != nil {
		l.next.Noticef(format, v...)
	}
}

func (l *captureLogger) Warnf(format string, v ...any) {
	if l.next != nil {
		l.next.Warnf(format, v...)
	}
}

func (l *captureLogger) Fatalf(format string, v ...any) {
	l.keep(format, v)
	if l.next != nil {
		// Forwarded as an error: the embedding process decides whether to exit.
		l.next.Errorf(format, v...)
	}
}

func (l *captureLogger) Errorf(format string, v ...any) {
	l.keep(format, v)
	if l.next != nil {
		l.next.Errorf(format, v...)
	}
}

func (l *captureLogger) Debugf(format string, v ...any) {
	if l.next != nil {
		l.next.Debugf(format, v...)
	}
}

func (l *captureLogger) Tracef(format string, v ...any) {
	if l.next != nil {
		l.next.Tracef(format, v...)
	}
}
