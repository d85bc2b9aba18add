package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// EraseDecisions removes from the DECISIONS stream every decision whose
// person_id is personID, with a secure delete (the server overwrites the
// message's bytes in its store instead of only marking it deleted). It
// returns how many messages it deleted.
//
// Decisions are keyed by site and door, not by person, so this scans the
// stream with an ordered consumer up to the last message stored when the
// scan starts; its cost grows with the stream's size (90 days of decisions
// by default). An erasure deletes the person from the directory first, so
// no new decision names them while the scan runs. Messages that do not
// decode are skipped, not deleted: they cannot be shown to name the person.
func EraseDecisions(ctx context.Context, js jetstream.JetStream, personID string) (int, error) {
	if err := ValidateToken("person id", personID); err != nil {
		return 0, fmt.Errorf("bus: erase decisions: %w", err)
	}
	s, err := js.Stream(ctx, StreamDecisions)
	if err != nil {
		return 0, fmt.Errorf("bus: erase decisions: stream %s: %w", StreamDecisions, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("bus: erase decisions: stream info: %w", err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 || last == 0 {
		return 0, nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return 0, fmt.Errorf("bus: erase decisions: ordered consumer: %w", err)
	}
	deleted := 0
	waited := false
	for {
		if err := ctx.Err(); err != nil {
			return deleted, fmt.Errorf("bus: erase decisions: %w", err)
		}
		// No-wait first: the messages up to last are stored, so a batch
		// is there at once, and Fetch would sit out its wait on the
		// last, partial batch. Only an empty answer is retried with a
		// wait, in case the consumer was not positioned yet.
		var batch jetstream.MessageBatch
		if waited {
			batch, err = c.Fetch(256, jetstream.FetchMaxWait(time.Second))
		} else {
			batch, err = c.FetchNoWait(256)
		}
		if err != nil {
			return deleted, fmt.Errorf("bus: erase decisions: fetch: %w", err)
		}
		n := 0
		done := false
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return deleted, fmt.Errorf("bus: erase decisions: message metadata: %w", err)
			}
			seq := md.Sequence.Stream
			if seq > last {
				done = true
				continue
			}
			var d facegatev1.Decision
			if Decode(m.Data(), &d) == nil && d.GetPersonId() == personID {
				if err := s.SecureDeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
					return deleted, fmt.Errorf("bus: erase decisions: delete %s/%d: %w", StreamDecisions, seq, err)
				}
				deleted++
			}
			if seq >= last {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return deleted, fmt.Errorf("bus: erase decisions: fetch: %w", err)
		}
		if done {
			return deleted, nil
		}
		if n == 0 {
			if !waited {
				waited = true
				continue
			}
			// Nothing left before last: its tail was deleted or aged out
			// while the scan ran.
			return deleted, nil
		}
		waited = false
	}
}
