package natstest_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/natstest"
)

// TestExternalServerKeepsAcknowledgedMessagesAcrossAKill checks the harness
// itself against Debian's nats-server: the streams can be created there, and
// what was acknowledged before a SIGKILL is there after the restart.
func TestExternalServerKeepsAcknowledgedMessagesAcrossAKill(t *testing.T) {
	srv := natstest.StartExternal(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, err := nats.Connect(srv.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
		t.Fatalf("EnsureStreams on nats-server: %v", err)
	}
	for i := 0; i < 20; i++ {
		if _, err := js.Publish(ctx, "facegate.errors.test", []byte{byte(i)}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	srv.Stop(syscall.SIGKILL)
	srv.Start()
	// The client reconnects by itself.
	var info *jetstream.StreamInfo
	for {
		s, err := js.Stream(ctx, bus.StreamErrors)
		if err == nil {
			info, err = s.Info(ctx)
		}
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("stream info after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if info.State.Msgs != 20 {
		t.Fatalf("after a SIGKILL and restart the stream holds %d messages, want the 20 acknowledged", info.State.Msgs)
	}
}
