package lag

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/facegate/facegate/operator/internal/natstest"
)

func setup(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	url := natstest.Start(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "FRAMES", Subjects: []string{"facegate.frames.>"}, Retention: jetstream.LimitsPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	return url, js
}

func publish(t *testing.T, js jetstream.JetStream, subject string, n int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		if _, err := js.Publish(ctx, subject, fmt.Appendf(nil, "frame %d", i)); err != nil {
			t.Fatal(err)
		}
	}
}

// waitLag polls until the consumer reports want: the server updates a
// filtered consumer's counts shortly after a publish is acknowledged, not
// synchronously with it.
func waitLag(t *testing.T, r *JetStream, c Consumer, want Lag) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := r.Lag(ctx, c)
		if err == nil && l == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lag %+v (err %v), want %+v", l, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLagCountsPendingAndAckPendingOnARealServer(t *testing.T) {
	url, js := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	r := NewJetStream(url)
	defer r.Close()
	c := Consumer{Stream: "FRAMES", Durable: "embedder-a", FilterSubject: "facegate.frames.bldg-a.>"}

	// Frames from before the consumer existed are not its lag.
	publish(t, js, "facegate.frames.bldg-a.cam1", 7)

	created, err := r.EnsureConsumer(ctx, c)
	if err != nil || !created {
		t.Fatalf("EnsureConsumer: created=%v err=%v", created, err)
	}
	created, err = r.EnsureConsumer(ctx, c)
	if err != nil || created {
		t.Fatalf("EnsureConsumer again: created=%v err=%v, want existing", created, err)
	}
	waitLag(t, r, c, Lag{})

	publish(t, js, "facegate.frames.bldg-a.cam1", 150)
	publish(t, js, "facegate.frames.bldg-a.cam2", 100)
	publish(t, js, "facegate.frames.bldg-b.cam1", 60) // another building's pool
	waitLag(t, r, c, Lag{Pending: 250})

	// An embedder takes 40 and has not acknowledged them yet: they move
	// from pending to ack-pending, the total is unchanged.
	cons, err := js.Consumer(ctx, "FRAMES", "embedder-a")
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(40, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != 40 {
		t.Fatalf("fetched %d, want 40", len(msgs))
	}
	waitLag(t, r, c, Lag{Pending: 210, AckPending: 40})
	if l := (Lag{Pending: 210, AckPending: 40}); l.Total() != 250 {
		t.Fatalf("Total %d", l.Total())
	}
	for _, m := range msgs {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitLag(t, r, c, Lag{Pending: 210})
}

func TestMissingConsumerOrStreamIsReportedAsNotFound(t *testing.T) {
	url, _ := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := NewJetStream(url)
	defer r.Close()

	_, err := r.Lag(ctx, Consumer{Stream: "FRAMES", Durable: "nobody"})
	if !errors.Is(err, ErrConsumerNotFound) || !strings.Contains(err.Error(), "consumer nobody on stream FRAMES") {
		t.Fatalf("missing consumer: %v", err)
	}
	_, err = r.Lag(ctx, Consumer{Stream: "NOSTREAM", Durable: "x"})
	if !errors.Is(err, ErrConsumerNotFound) {
		t.Fatalf("missing stream: %v", err)
	}
	_, err = r.EnsureConsumer(ctx, Consumer{Stream: "NOSTREAM", Durable: "x"})
	if !errors.Is(err, ErrConsumerNotFound) {
		t.Fatalf("ensure on a missing stream: %v", err)
	}
}

func TestNoURLAndUnreachableServerAreClearErrors(t *testing.T) {
	ctx := context.Background()
	_, err := NewJetStream("").Lag(ctx, Consumer{Stream: "FRAMES", Durable: "a"})
	if err == nil || !strings.Contains(err.Error(), "no NATS URL") {
		t.Fatalf("no URL: %v", err)
	}
	// A port nothing listens on: connection refused, named in the error.
	r := NewJetStream("nats://127.0.0.1:1")
	defer r.Close()
	_, err = r.Lag(ctx, Consumer{Stream: "FRAMES", Durable: "a"})
	if err == nil || !strings.Contains(err.Error(), "connect to nats://127.0.0.1:1") {
		t.Fatalf("unreachable: %v", err)
	}
}
