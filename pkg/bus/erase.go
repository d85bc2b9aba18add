package bus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// PurgePerson removes from the ENROLMENTS stream every change keyed by
// personID (person, photo and membership changes) stored before stream
// sequence keepFrom. Erasure publishes the PersonDelete first and passes its
// sequence here, so the tombstone stays: a consumer replaying the stream
// later still learns that the person was deleted, while their earlier
// changes (names, badges, photo references) are gone. keepFrom 0 purges all
// of the person's changes, tombstone included.
//
// (The JetStream API reports how many messages a purge removed, but the
// client library does not pass it on, and counting from stream info would be
// wrong under concurrent publishes, so no count is returned.)
func PurgePerson(ctx context.Context, js jetstream.JetStream, personID string, keepFrom uint64) error {
	filter, err := ErasureFilter(personID)
	if err != nil {
		return err
	}
	s, err := js.Stream(ctx, StreamEnrolments)
	if err != nil {
		return fmt.Errorf("bus: erase person: stream %s: %w", StreamEnrolments, err)
	}
	opts := []jetstream.StreamPurgeOpt{jetstream.WithPurgeSubject(filter)}
	if keepFrom > 0 {
		opts = append(opts, jetstream.WithPurgeSequence(keepFrom))
	}
	if err := s.Purge(ctx, opts...); err != nil {
		return fmt.Errorf("bus: erase person: purge %s from %s: %w", filter, StreamEnrolments, err)
	}
	return nil
}
