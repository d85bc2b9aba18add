package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Replay reads stream in order with an ordered consumer, up to the last
// sequence it holds when Replay starts, and calls fn for every message with
// its stream sequence. It returns that last sequence (0 for an empty
// stream). A tail deleted while the replay runs is not waited for: the
// replay ends when the consumer has nothing pending. An error from fn stops
// the replay and is returned as is.
//
// Offline tools (key rotation, re-embedding) use it to see the enrolment
// stream as one consistent prefix; long-running services follow the stream
// instead (pkg/directory).
func Replay(ctx context.Context, js jetstream.JetStream, stream string, fn func(msg jetstream.Msg, seq uint64) error) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("bus: replay %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("bus: replay %s: stream info: %w", stream, err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return last, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return 0, fmt.Errorf("bus: replay %s: %w", stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return 0, fmt.Errorf("bus: replay %s: %w", stream, err)
	}
	defer it.Stop()
	for {
		nctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		msg, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if ctx.Err() != nil {
			return 0, fmt.Errorf("bus: replay %s: %w", stream, ctx.Err())
		}
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
				// The tail may have been deleted, so the last sequence is
				// never delivered: done when nothing is pending.
				if ci, ierr := cons.Info(ctx); ierr == nil && ci.NumPending == 0 {
					return last, nil
				}
				continue
			}
			return 0, fmt.Errorf("bus: replay %s: %w", stream, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return 0, fmt.Errorf("bus: replay %s: message metadata: %w", stream, err)
		}
		seq := md.Sequence.Stream
		if seq > last {
			return last, nil // published after the replay started
		}
		if err := fn(msg, seq); err != nil {
			return 0, err
		}
		if seq >= last || md.NumPending == 0 {
			return last, nil
		}
	}
}
