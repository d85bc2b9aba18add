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
	n, _, err := eraseDecisions(ctx, js, personID)
	return n, err
}

// PersonEvents counts what ErasePersonEvents deleted.
type PersonEvents struct {
	Decisions int `json:"decisions"`
	Frames    int `json:"frames"`
	Faces     int `json:"faces"`
}

// ErasePersonEvents deletes the decisions naming personID (EraseDecisions)
// and then the camera frames and face events those decisions were made
// from: a frame that opened a door for the person shows their face, and its
// face event holds their live embedding. Frames and face events are not
// keyed by person, so they are found through the decisions' frame
// references (site, camera, sequence, capture time) and deleted with a
// secure delete. Frames and faces of the person that led to no decision
// (passers-by, low quality) carry nothing that links them to the id; they
// age out of their streams in seconds and minutes.
func ErasePersonEvents(ctx context.Context, js jetstream.JetStream, personID string) (PersonEvents, error) {
	var out PersonEvents
	n, frames, err := eraseDecisions(ctx, js, personID)
	out.Decisions = n
	if err != nil || len(frames) == 0 {
		return out, err
	}
	match := func(m jetstream.Msg, faces bool) bool {
		fh, err := ParseFrameHeaders(m.Headers())
		if err == nil {
			return frames[FrameMsgID(fh.Site, fh.Camera, fh.Seq, fh.CaptureTime)]
		}
		if !faces {
			return false
		}
		var ev facegatev1.FaceEvent
		if Decode(m.Data(), &ev) != nil {
			return false
		}
		return frames[frameRefID(ev.GetFrame())]
	}
	if out.Frames, err = scanDelete(ctx, js, StreamFrames, func(m jetstream.Msg) bool { return match(m, false) }); err != nil {
		return out, err
	}
	out.Faces, err = scanDelete(ctx, js, StreamFaces, func(m jetstream.Msg) bool { return match(m, true) })
	return out, err
}

func frameRefID(f *facegatev1.FrameRef) string {
	return FrameMsgID(f.GetSite(), f.GetCamera(), f.GetSequence(), f.GetCaptureTime().AsTime())
}

func eraseDecisions(ctx context.Context, js jetstream.JetStream, personID string) (int, map[string]bool, error) {
	if err := ValidateToken("person id", personID); err != nil {
		return 0, nil, fmt.Errorf("bus: erase decisions: %w", err)
	}
	frames := map[string]bool{}
	n, err := scanDelete(ctx, js, StreamDecisions, func(m jetstream.Msg) bool {
		var d facegatev1.Decision
		if Decode(m.Data(), &d) != nil || d.GetPersonId() != personID {
			return false
		}
		if d.GetFrame() != nil && d.GetFrame().GetCamera() != "" {
			frames[frameRefID(d.GetFrame())] = true
		}
		return true
	})
	return n, frames, err
}

// scanDelete reads stream with an ordered consumer up to the last message
// stored when the scan starts and secure-deletes every message del
// selects, returning how many it deleted.
func scanDelete(ctx context.Context, js jetstream.JetStream, stream string, del func(jetstream.Msg) bool) (int, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("bus: erase: stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("bus: erase: stream %s info: %w", stream, err)
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 || last == 0 {
		return 0, nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return 0, fmt.Errorf("bus: erase %s: ordered consumer: %w", stream, err)
	}
	deleted := 0
	waited := false
	for {
		if err := ctx.Err(); err != nil {
			return deleted, fmt.Errorf("bus: erase %s: %w", stream, err)
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
			return deleted, fmt.Errorf("bus: erase %s: fetch: %w", stream, err)
		}
		n := 0
		done := false
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return deleted, fmt.Errorf("bus: erase %s: message metadata: %w", stream, err)
			}
			seq := md.Sequence.Stream
			if seq > last {
				done = true
				continue
			}
			if del(m) {
				if err := s.SecureDeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
					return deleted, fmt.Errorf("bus: erase: delete %s/%d: %w", stream, seq, err)
				}
				deleted++
			}
			if seq >= last {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return deleted, fmt.Errorf("bus: erase %s: fetch: %w", stream, err)
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
