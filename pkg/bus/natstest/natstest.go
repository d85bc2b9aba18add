// Package natstest starts a real embedded NATS server with JetStream for a
// test and connects to it; everything is torn down by t.Cleanup.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/facegate/facegate/pkg/bus/embedded"
)

// Start runs an embedded server for t. An empty opts.DataDir becomes a fresh
// t.TempDir(). The server is shut down before the directory is removed.
func Start(t testing.TB, opts embedded.Options) *embedded.Server {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := embedded.Start(ctx, opts)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Connect opens a connection and a JetStream context to url, closed by
// t.Cleanup.
func Connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name(t.Name()))
	if err != nil {
		t.Fatalf("natstest: connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return nc, js
}

// Run is Start and Connect.
func Run(t testing.TB, opts embedded.Options) (*embedded.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	s := Start(t, opts)
	nc, js := Connect(t, s.URL())
	return s, nc, js
}
