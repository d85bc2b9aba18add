package keyrotation

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/policy"
	"github.com/facegate/facegate/pkg/sealed"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

// addEntry is one PhotoAdd message of the stream.
type addEntry struct {
	seq     uint64
	subject string
	change  *fv1.EnrolmentChange
	keyID   string // "" when the template is not a sealed blob
	// live: this is the PhotoAdd in effect for a photo the replayed state
	// still has. Anything else was superseded or cancelled.
	live bool
}

// streamScan is the stream as one replay saw it.
type streamScan struct {
	lastSeq  uint64            // the stream's last sequence when the replay started
	adds     []addEntry        // in stream order
	lastSubj map[string]uint64 // subject -> last sequence seen on it
}

type photoKey struct{ person, photo, space string }

// scanStream replays the stream up to its last sequence at the start into a
// policy.State (applied as the directory applies changes: undecodable or
// invalid changes are skipped) and lists the PhotoAdds.
func scanStream(ctx context.Context, cfg Config) (*streamScan, error) {
	sc := &streamScan{lastSubj: map[string]uint64{}}
	total := 0
	if s, err := cfg.JetStream.Stream(ctx, cfg.Stream); err == nil {
		total = int(s.CachedInfo().State.Msgs)
	}
	state := policy.NewState()
	lastAdd := map[photoKey]int{}
	read := 0
	last, err := bus.Replay(ctx, cfg.JetStream, cfg.Stream, func(msg jetstream.Msg, seq uint64) error {
		read++
		cfg.Progress("reading "+cfg.Stream, read, total)
		sc.lastSubj[msg.Subject()] = seq
		ch := &fv1.EnrolmentChange{}
		if err := bus.Decode(msg.Data(), ch); err == nil && state.Apply(ch) == nil {
			if a := ch.GetPhotoAdd(); a != nil {
				e := addEntry{seq: seq, subject: msg.Subject(), change: ch}
				if id, err := sealed.BlobKeyID(a.GetSealedTemplate()); err == nil {
					e.keyID = id
				}
				lastAdd[photoKey{a.GetPersonId(), a.GetPhotoId(), a.GetEmbeddingSpace()}] = len(sc.adds)
				sc.adds = append(sc.adds, e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("keyrotation: %w", err)
	}
	sc.lastSeq = last
	for person, photos := range state.Export().Photos {
		for _, ph := range photos {
			if i, ok := lastAdd[photoKey{person, ph.ID, ph.Space}]; ok {
				sc.adds[i].live = true
			}
		}
	}
	return sc, nil
}

// StreamResult is what rotation did to the stream's templates.
type StreamResult struct {
	// Republished: PhotoAdds in effect that were republished with the
	// template re-wrapped (and their original deleted).
	Republished int `json:"republished"`
	// Dropped: PhotoAdds under an old key that were no longer in effect
	// (superseded, photo removed, person deleted), deleted without a copy.
	Dropped int `json:"dropped"`
	// Conflicts: republishes abandoned because the person changed
	// concurrently (retried on the next pass).
	Conflicts int `json:"conflicts"`
	// Compensated: republishes undone because a PersonDelete landed just
	// before them.
	Compensated int `json:"compensated"`
	// Failed: templates that could not be re-wrapped (e.g. their key is
	// gone); they stay where they are.
	Failed int `json:"failed"`
	Passes int `json:"passes"`
}

func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// rotateStream re-wraps every template in the stream that is not under the
// active key, pass after pass until a replay finds nothing to do.
func rotateStream(ctx context.Context, cfg Config, active string) (StreamResult, error) {
	var res StreamResult
	stream, err := cfg.JetStream.Stream(ctx, cfg.Stream)
	if err != nil {
		return res, fmt.Errorf("keyrotation: open stream %s: %w", cfg.Stream, err)
	}
	failed := map[uint64]bool{}
	for res.Passes < cfg.MaxPasses {
		res.Passes++
		sc, err := scanStream(ctx, cfg)
		if err != nil {
			return res, err
		}
		var live, dead []addEntry
		for _, e := range sc.adds {
			if e.keyID == "" || e.keyID == active || failed[e.seq] {
				continue
			}
			if e.live {
				live = append(live, e)
			} else {
				dead = append(dead, e)
			}
		}
		if len(live)+len(dead) == 0 {
			return res, nil
		}
		total, done := len(live)+len(dead), 0
		conflicts := 0
		for _, e := range live {
			ok, err := republish(ctx, cfg, stream, sc, e, &res)
			if err != nil {
				if errors.Is(err, errRewrap) {
					res.Failed++
					failed[e.seq] = true
					cfg.Log.Error("template not re-wrapped", zap.Uint64("seq", e.seq), zap.Error(err))
					continue
				}
				return res, err
			}
			if !ok {
				conflicts++
			}
			done++
			cfg.Progress("re-wrapping stream templates", done, total)
		}
		// Deleting a cancelled PhotoAdd leaves the replayed state as it
		// is: the change that cancelled it stays.
		for _, e := range dead {
			if err := stream.SecureDeleteMsg(ctx, e.seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return res, fmt.Errorf("keyrotation: delete superseded template message %d: %w", e.seq, err)
			}
			res.Dropped++
			done++
			cfg.Progress("re-wrapping stream templates", done, total)
		}
		res.Conflicts += conflicts
	}
	// One more look: did the last pass finish the job?
	sc, err := scanStream(ctx, cfg)
	if err != nil {
		return res, err
	}
	left := 0
	for _, e := range sc.adds {
		if e.keyID != "" && e.keyID != active && !failed[e.seq] {
			left++
		}
	}
	if left > 0 {
		return res, fmt.Errorf("keyrotation: %d stream templates still under old keys after %d passes (the stream keeps changing); run rotate again", left, res.Passes)
	}
	return res, nil
}

var errRewrap = errors.New("cannot re-wrap")

// personSubjects are the subjects a person's own changes go to: by id and,
// for erasure tombstones, by hash.
func personSubjects(person string) ([]string, error) {
	var out []string
	for _, key := range []string{person, events.PersonHash(person)} {
		s, err := bus.EnrolmentsSubject(events.KindPerson, key)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// lastOn is the last message on a subject (nil when there is none).
func lastOn(ctx context.Context, stream jetstream.Stream, subject string) (*jetstream.RawStreamMsg, error) {
	m, err := stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keyrotation: last message on %s: %w", subject, err)
	}
	return m, nil
}

// republish publishes a copy of a PhotoAdd in effect with its template
// re-wrapped, then deletes the original. It returns false when a
// concurrent change to the person made it give up (nothing was left
// changed: the original stays in effect for the next pass).
func republish(ctx context.Context, cfg Config, stream jetstream.Stream, sc *streamScan, e addEntry, res *StreamResult) (bool, error) {
	a := e.change.GetPhotoAdd()
	person := a.GetPersonId()
	subjects, err := personSubjects(person)
	if err != nil {
		return false, fmt.Errorf("keyrotation: %w", err)
	}
	// A PersonDelete goes to another subject than the photo, so the
	// expected-last-subject-sequence header does not see it: look.
	for _, s := range subjects {
		m, err := lastOn(ctx, stream, s)
		if err != nil {
			return false, err
		}
		if m != nil && m.Sequence > sc.lastSeq {
			return false, nil
		}
	}
	blob, err := sealed.Rewrap(ctx, cfg.Keys, a.GetSealedTemplate())
	if err != nil {
		return false, fmt.Errorf("keyrotation: stream message %d: %w: %w", e.seq, errRewrap, err)
	}
	nc := proto.Clone(e.change).(*fv1.EnrolmentChange)
	nc.SchemaVersion = events.SchemaVersion
	nc.ChangeId = uuid.NewString()
	nc.Time = timestamppb.Now()
	nc.Actor = &fv1.Actor{Kind: fv1.ActorKind_ACTOR_KIND_SERVICE, Id: cfg.Actor}
	nc.GetPhotoAdd().SealedTemplate = blob
	hdr := nats.Header{}
	hdr.Set(bus.HeaderMsgID, nc.ChangeId)
	hdr.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(sc.lastSubj[e.subject], 10))
	if cfg.beforePublish != nil {
		cfg.beforePublish()
	}
	ack, err := bus.Publish(ctx, cfg.JetStream, e.subject, nc, hdr)
	if isWrongLastSeq(err) {
		// A PhotoAdd/PhotoRemove of this person, or an erasure's purge,
		// since the replay.
		cfg.Log.Debug("person changed during rotation; will replay", zap.Uint64("seq", e.seq))
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("keyrotation: republish template of message %d: %w", e.seq, err)
	}
	sc.lastSubj[e.subject] = ack.Sequence
	// Did a PersonDelete land between the look above and the publish?
	for _, s := range subjects {
		m, err := lastOn(ctx, stream, s)
		if err != nil {
			return false, err
		}
		if m == nil || m.Sequence <= sc.lastSeq || m.Sequence > ack.Sequence {
			continue
		}
		ch := &fv1.EnrolmentChange{}
		if bus.Decode(m.Data, ch) != nil || ch.GetPersonDelete() == nil {
			continue
		}
		if err := compensate(ctx, cfg, stream, e, nc, ack.Sequence); err != nil {
			return false, err
		}
		res.Compensated++
		return false, nil
	}
	if err := stream.SecureDeleteMsg(ctx, e.seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		// The copy is in effect; the next pass finds the original
		// superseded and deletes it.
		return false, fmt.Errorf("keyrotation: delete re-wrapped template message %d: %w", e.seq, err)
	}
	res.Republished++
	return true, nil
}

// compensate undoes a republish that landed after a PersonDelete: a
// PhotoRemove after it for directories that already applied the copy,
// then the copy deleted for replays. If the photo subject was purged
// meanwhile (an erasure), the PhotoRemove is not published (it would name
// an erased person).
func compensate(ctx context.Context, cfg Config, stream jetstream.Stream, e addEntry, copyCh *fv1.EnrolmentChange, copySeq uint64) error {
	a := e.change.GetPhotoAdd()
	rm := &fv1.EnrolmentChange{SchemaVersion: events.SchemaVersion, ChangeId: uuid.NewString(), Sequence: copyCh.GetSequence(),
		Time: timestamppb.Now(), Actor: copyCh.GetActor(),
		Change: &fv1.EnrolmentChange_PhotoRemove{PhotoRemove: &fv1.PhotoRemove{PersonId: a.GetPersonId(), PhotoId: a.GetPhotoId()}}}
	hdr := nats.Header{}
	hdr.Set(bus.HeaderMsgID, rm.ChangeId)
	hdr.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(copySeq, 10))
	if _, err := bus.Publish(ctx, cfg.JetStream, e.subject, rm, hdr); err != nil && !isWrongLastSeq(err) {
		return fmt.Errorf("keyrotation: undo republish %d: %w", copySeq, err)
	} else if err != nil {
		cfg.Log.Warn("a person was erased while their template was republished; restart the directories to drop it from memory",
			zap.Uint64("seq", copySeq))
	}
	if err := stream.SecureDeleteMsg(ctx, copySeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("keyrotation: undo republish %d: %w", copySeq, err)
	}
	cfg.Log.Warn("republished template undone: the person was deleted meanwhile", zap.Uint64("seq", copySeq))
	return nil
}
