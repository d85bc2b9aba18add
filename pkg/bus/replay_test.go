package bus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
)

// Replay sees exactly the messages stored when it starts, in order, also
// when the stream's tail has been deleted.
func TestReplayReadsAPrefixInOrder(t *testing.T) {
	_, _, js := natstest.Run(t, embedded.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R", Subjects: []string{"r.>"}})
	if err != nil {
		t.Fatal(err)
	}
	if last, err := bus.Replay(ctx, js, "R", func(jetstream.Msg, uint64) error { t.Fatal("message in an empty stream"); return nil }); err != nil || last != 0 {
		t.Fatalf("empty stream: last %d, %v", last, err)
	}
	for i := range 10 {
		if _, err := js.Publish(ctx, fmt.Sprintf("r.%d", i), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, seq := range []uint64{9, 10} { // a deleted tail
		if err := s.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	var seqs []uint64
	last, err := bus.Replay(ctx, js, "R", func(m jetstream.Msg, seq uint64) error {
		seqs = append(seqs, seq)
		if m.Data()[0] != byte(seq-1) {
			t.Errorf("seq %d carries %d", seq, m.Data()[0])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if last != 10 || len(seqs) != 8 || seqs[0] != 1 || seqs[7] != 8 {
		t.Fatalf("last %d, seqs %v; want last 10 and 1..8", last, seqs)
	}
	stop := fmt.Errorf("stop")
	if _, err := bus.Replay(ctx, js, "R", func(jetstream.Msg, uint64) error { return stop }); err != stop {
		t.Fatalf("fn's error not returned: %v", err)
	}
}
