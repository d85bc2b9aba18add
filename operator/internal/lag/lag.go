// Package lag reads the backlog of an embedder pool's JetStream consumer: the
// metric KEDA's NATS JetStream scaler uses, num_pending + num_ack_pending.
// It also creates the durable consumer when it is missing, so that a pool
// scaled to zero keeps accumulating the lag that wakes it up.
package lag

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrConsumerNotFound is wrapped when the stream or the durable consumer does
// not exist.
var ErrConsumerNotFound = errors.New("consumer not found")

// Consumer identifies a durable consumer on a NATS deployment.
type Consumer struct {
	// URL of the servers; empty means the reader's default.
	URL     string
	Stream  string
	Durable string
	// FilterSubject is used when the consumer has to be created.
	FilterSubject string
}

func (c Consumer) String() string {
	return fmt.Sprintf("consumer %s on stream %s", c.Durable, c.Stream)
}

// Lag is one reading of a consumer.
type Lag struct {
	// Pending messages not yet delivered (num_pending).
	Pending uint64
	// AckPending messages delivered but not acknowledged (num_ack_pending).
	AckPending uint64
}

// Total is the scaling metric.
func (l Lag) Total() uint64 { return l.Pending + l.AckPending }

// Reader is what the pool reconciler needs; tests of pure logic may fake it,
// the controller tests use JetStream against a real server.
type Reader interface {
	// Lag reads the consumer's backlog.
	Lag(ctx context.Context, c Consumer) (Lag, error)
	// EnsureConsumer creates the durable pull consumer when it is missing and
	// reports whether it did.
	EnsureConsumer(ctx context.Context, c Consumer) (bool, error)
}

// JetStream reads lag over NATS, keeping one connection per server URL.
type JetStream struct {
	defaultURL string
	opts       []nats.Option

	mu    sync.Mutex
	conns map[string]jetstream.JetStream
	ncs   []*nats.Conn
}

// NewJetStream returns a reader for defaultURL (used when a consumer names
// no URL); opts carry credentials and TLS.
func NewJetStream(defaultURL string, opts ...nats.Option) *JetStream {
	return &JetStream{defaultURL: defaultURL, opts: opts, conns: map[string]jetstream.JetStream{}}
}

// Close drops every connection.
func (j *JetStream) Close() {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, nc := range j.ncs {
		nc.Close()
	}
	j.ncs, j.conns = nil, map[string]jetstream.JetStream{}
}

func (j *JetStream) js(c Consumer) (jetstream.JetStream, error) {
	url := c.URL
	if url == "" {
		url = j.defaultURL
	}
	if url == "" {
		return nil, fmt.Errorf("lag: %s: no NATS URL (set the pool's consumer.url or the operator's --nats-url)", c)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if js, ok := j.conns[url]; ok {
		return js, nil
	}
	opts := append([]nats.Option{
		nats.Name("facegate-operator"),
		nats.Timeout(5 * time.Second),
		nats.MaxReconnects(-1),
	}, j.opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("lag: connect to %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("lag: jetstream context on %s: %w", url, err)
	}
	j.conns[url] = js
	j.ncs = append(j.ncs, nc)
	return js, nil
}

// Lag implements Reader.
func (j *JetStream) Lag(ctx context.Context, c Consumer) (Lag, error) {
	js, err := j.js(c)
	if err != nil {
		return Lag{}, err
	}
	cons, err := js.Consumer(ctx, c.Stream, c.Durable)
	if err != nil {
		return Lag{}, wrapLookup(c, err)
	}
	// Info asks the server afresh; CachedInfo would be the creation-time state.
	info, err := cons.Info(ctx)
	if err != nil {
		return Lag{}, wrapLookup(c, err)
	}
	if info.NumAckPending < 0 {
		return Lag{}, fmt.Errorf("lag: %s: server reported num_ack_pending %d", c, info.NumAckPending)
	}
	return Lag{Pending: info.NumPending, AckPending: uint64(info.NumAckPending)}, nil
}

// EnsureConsumer implements Reader. The consumer starts at new messages: a
// new model's pool shadows live traffic from now on, it does not replay the
// stream's history.
func (j *JetStream) EnsureConsumer(ctx context.Context, c Consumer) (bool, error) {
	js, err := j.js(c)
	if err != nil {
		return false, err
	}
	_, err = js.Consumer(ctx, c.Stream, c.Durable)
	switch {
	case err == nil:
		return false, nil
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return false, wrapLookup(c, err)
	}
	_, err = js.CreateConsumer(ctx, c.Stream, jetstream.ConsumerConfig{
		Durable:       c.Durable,
		Description:   "facegate embedder pool (created by the operator)",
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverNewPolicy,
		FilterSubject: c.FilterSubject,
		AckWait:       30 * time.Second,
	})
	if errors.Is(err, jetstream.ErrConsumerExists) {
		// Created concurrently by an embedder with its own settings: keep them.
		return false, nil
	}
	if err != nil {
		return false, wrapLookup(c, err)
	}
	return true, nil
}

func wrapLookup(c Consumer, err error) error {
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("lag: %s: %w: %w", c, ErrConsumerNotFound, err)
	}
	return fmt.Errorf("lag: %s: %w", c, err)
}
