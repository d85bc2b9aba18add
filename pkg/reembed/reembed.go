// Package reembed rebuilds the gallery in a new model's embedding space
// from the retained enrolment photos, the step a model rollout needs:
// encodings of two models are not comparable, so every live photo is
// encoded again with the new model and published as a PhotoAdd of the new
// space next to the old one.
//
// # What is re-embedded
//
// Run replays the ENROLMENTS stream (as it was when the run started) into a
// policy.State, the way the directory does, and takes every photo the state
// still has: a photo removed, or whose person was deleted or erased, is not
// in the state and is not touched. A photo that already has a template in
// the target space is skipped, so a run is idempotent and a crashed run is
// resumed by running it again.
//
// For each remaining photo the sealed photo is read from the photo store
// (pkg/photostore, sealed.PhotoContext(person, photo)), checked against
// the PhotoAdd's content hash, and analysed by the new model's engine. As
// at enrolment, the photo must give exactly one face passing quality;
// otherwise the photo is refused (counted and reported with the person's
// hash, never the id, and the reason) and the run goes on. The encoding is
// sealed with sealed.TemplateContext(newSpace, photoID) and published as a
// PhotoAdd with the same person, photo id, content hash, media type and
// storage ref, and the new space and dimension. A directory configured
// with both spaces then holds both collections (pkg/directory indexes a
// PhotoAdd in the collection of its space and skips unconfigured spaces).
//
// # Concurrent changes win
//
// The same pattern as pkg/keyrotation: each publish carries
// Nats-Expected-Last-Subject-Sequence, the last sequence the replay saw on
// the person's photo subject (facegate.enrolments.photo.<person>), so a
// PhotoAdd or PhotoRemove of that person, or an erasure's purge of the
// subject, since the replay makes the publish fail: the photo is left for
// the next pass (Run replays again, a bounded number of times). A
// PersonDelete goes to the person's subjects (by id, and by hash for an
// erasure tombstone), which the header does not see: they are looked at
// just before publishing, and again right after; a PersonDelete that
// landed in between is compensated with a PhotoRemove after it, so a
// directory that applied the new PhotoAdd drops it again and a replay ends
// without it (an erasure's purge then removes both).
package reembed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/directory"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/photostore"
	"github.com/facegate/facegate/pkg/policy"
	"github.com/facegate/facegate/pkg/sealed"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

// Engine is what re-embedding needs of the new model; *face.Engine
// implements it.
type Engine interface {
	Analyze(ctx context.Context, data []byte) (*face.Result, error)
	Space() string
	Dim() int
}

// Config says where the stream, keys, photos and the new model are.
type Config struct {
	// JetStream reaches the ENROLMENTS stream. Required.
	JetStream jetstream.JetStream
	// Stream is the enrolment stream; default bus.StreamEnrolments.
	Stream string
	// Keys seals the new templates (and opens the photos through Photos).
	// Required.
	Keys sealed.KeyProvider
	// Photos is the photo store holding the retained photos. Required.
	Photos *photostore.Store
	// Engine is the new model. Required.
	Engine Engine
	// Actor names who publishes the new templates (EnrolmentChange.actor,
	// a service actor); default "facegate-reembed".
	Actor string
	// MaxPasses bounds how often Run replays the stream when concurrent
	// changes made publishes fail; default 5.
	MaxPasses int
	// Progress, when set, is told how many of the photos to re-embed in
	// the current pass are done.
	Progress func(done, total int)
	Log      *zap.Logger
	Tracer   trace.Tracer

	// beforePublish, when set, runs between the person check and the
	// publish (tests land a change in that window).
	beforePublish func(person string)
}

func (c *Config) defaults() error {
	switch {
	case c.JetStream == nil:
		return errors.New("reembed: config: JetStream is nil")
	case c.Keys == nil:
		return errors.New("reembed: config: Keys is nil")
	case c.Photos == nil:
		return errors.New("reembed: config: Photos is nil")
	case c.Engine == nil:
		return errors.New("reembed: config: Engine is nil")
	}
	if c.Stream == "" {
		c.Stream = bus.StreamEnrolments
	}
	if c.Actor == "" {
		c.Actor = "facegate-reembed"
	}
	if c.MaxPasses <= 0 {
		c.MaxPasses = 5
	}
	if c.Progress == nil {
		c.Progress = func(int, int) {}
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	if c.Tracer == nil {
		c.Tracer = noop.NewTracerProvider().Tracer("")
	}
	return nil
}

// Refusal reasons.
const (
	ReasonPhotoMissing  = "photo_missing"   // not in the photo store
	ReasonPhotoUnusable = "photo_unusable"  // does not open (tampered, key gone) or decode
	ReasonHashMismatch  = "content_changed" // its SHA-256 is not the PhotoAdd's content hash
	ReasonNoFace        = "no_face"         // no face passes quality
	ReasonManyFaces     = "several_faces"   // more than one face passes quality
	ReasonTemplate      = "template_unsealable"
)

// Refusal is a photo the new model could not enrol.
type Refusal struct {
	// PersonHash is events.PersonHash of the person (never the id: the
	// summary goes to job logs).
	PersonHash string `json:"person_sha256"`
	PhotoID    string `json:"photo_id"`
	Reason     string `json:"reason"`
	Detail     string `json:"detail,omitempty"`
}

// Summary is what Run did.
type Summary struct {
	Space string `json:"embedding_space"`
	Dim   int    `json:"embedding_dimension"`
	// Seen: live photos (person, photo id) in the stream, any space.
	Seen int `json:"photos_seen"`
	// Reembedded: PhotoAdds published in the new space.
	Reembedded int `json:"reembedded"`
	// AlreadyDone: photos that had a template in the new space already.
	AlreadyDone int `json:"skipped_already_done"`
	// Refused: photos the new model could not enrol, with the reason.
	Refused []Refusal `json:"refused"`
	// Conflicts: publishes abandoned because the person changed meanwhile
	// (retried on the next pass; Left counts what remained after the last).
	Conflicts int `json:"conflicts"`
	// Compensated: publishes undone because a PersonDelete landed just
	// before them.
	Compensated int `json:"compensated"`
	// Left: photos still without a template in the new space and not
	// refused when Run gave up (0 after a complete run).
	Left   int `json:"left"`
	Passes int `json:"passes"`
	// StreamLastSeq: the stream's last sequence at the last replay.
	StreamLastSeq uint64 `json:"stream_last_seq"`
}

// ErrIncomplete: Run stopped with photos left to re-embed (the stream kept
// changing); running it again continues.
var ErrIncomplete = errors.New("re-embedding incomplete")

// Run re-embeds every live photo without a template in the engine's space.
// Refusals are reported in the Summary, not as an error; an error means
// the run could not do its work (stream, store or keys unreachable) or,
// wrapping ErrIncomplete, that photos are left after MaxPasses.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	space, dim := cfg.Engine.Space(), cfg.Engine.Dim()
	ctx, span := cfg.Tracer.Start(ctx, "reembed.Run", trace.WithAttributes(attribute.String("embedding_space", space)))
	defer span.End()
	stream, err := cfg.JetStream.Stream(ctx, cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("reembed: open stream %s: %w", cfg.Stream, err)
	}
	sum := &Summary{Space: space, Dim: dim, Refused: []Refusal{}}
	refused := map[photoRef]bool{}
	for sum.Passes < cfg.MaxPasses {
		sum.Passes++
		sc, err := scan(ctx, cfg)
		if err != nil {
			return sum, err
		}
		sum.StreamLastSeq = sc.lastSeq
		todo, seen, done := sc.plan(space)
		if sum.Passes == 1 {
			sum.Seen, sum.AlreadyDone = seen, done
		}
		var pending []photoEntry
		for _, e := range todo {
			if !refused[e.ref()] {
				pending = append(pending, e)
			}
		}
		sum.Left = len(pending)
		if len(pending) == 0 {
			return sum, nil
		}
		cfg.Log.Info("re-embedding photos", zap.Int("pass", sum.Passes), zap.Int("photos", len(pending)), zap.String("space", space))
		for i, e := range pending {
			if err := ctx.Err(); err != nil {
				return sum, fmt.Errorf("reembed: %w", err)
			}
			out, rf, err := reembedOne(ctx, cfg, stream, sc, e)
			if err != nil {
				return sum, err
			}
			switch out {
			case outPublished:
				sum.Reembedded++
				sum.Left--
			case outRefused:
				sum.Refused = append(sum.Refused, rf)
				refused[e.ref()] = true
				sum.Left--
			case outConflict:
				sum.Conflicts++
			case outCompensated:
				sum.Compensated++
				sum.Left--
			}
			cfg.Progress(i+1, len(pending))
		}
		if sum.Left == 0 {
			return sum, nil
		}
	}
	return sum, fmt.Errorf("reembed: %d photos left after %d passes (the stream keeps changing); run again: %w", sum.Left, sum.Passes, ErrIncomplete)
}

type photoRef struct{ person, photo string }

// photoEntry is a live photo without a template in the target space: the
// PhotoAdd in effect that describes it (in another space).
type photoEntry struct {
	subject string
	add     *fv1.PhotoAdd
}

func (e photoEntry) ref() photoRef { return photoRef{e.add.GetPersonId(), e.add.GetPhotoId()} }

// streamScan is the stream as one replay saw it.
type streamScan struct {
	lastSeq  uint64
	state    *policy.State
	adds     map[addKey]*fv1.PhotoAdd // the last PhotoAdd per (person, photo, space)
	subjects map[addKey]string
	lastSubj map[string]uint64 // subject -> last sequence seen on it
}

type addKey struct{ person, photo, space string }

// plan lists the live photos lacking a template in space (sorted, so runs
// are reproducible), how many live photos there are and how many already
// have one.
func (sc *streamScan) plan(space string) (todo []photoEntry, seen, done int) {
	for person, photos := range sc.state.Export().Photos {
		spaces := map[string][]string{} // photo id -> its spaces
		for _, ph := range photos {
			spaces[ph.ID] = append(spaces[ph.ID], ph.Space)
		}
		for id, sps := range spaces {
			seen++
			sort.Strings(sps)
			if contains(sps, space) {
				done++
				continue
			}
			// Any space's PhotoAdd describes the same photo; take the
			// first for determinism.
			k := addKey{person, id, sps[0]}
			if a := sc.adds[k]; a != nil {
				todo = append(todo, photoEntry{subject: sc.subjects[k], add: a})
			}
		}
	}
	sort.Slice(todo, func(i, j int) bool {
		a, b := todo[i].add, todo[j].add
		if a.GetPersonId() != b.GetPersonId() {
			return a.GetPersonId() < b.GetPersonId()
		}
		return a.GetPhotoId() < b.GetPhotoId()
	})
	return todo, seen, done
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// scan replays the stream up to its last sequence at the start, applying
// changes as the directory does (undecodable or invalid ones are skipped).
func scan(ctx context.Context, cfg Config) (*streamScan, error) {
	sc := &streamScan{state: policy.NewState(), adds: map[addKey]*fv1.PhotoAdd{},
		subjects: map[addKey]string{}, lastSubj: map[string]uint64{}}
	last, err := bus.Replay(ctx, cfg.JetStream, cfg.Stream, func(msg jetstream.Msg, seq uint64) error {
		sc.lastSubj[msg.Subject()] = seq
		ch := &fv1.EnrolmentChange{}
		if err := bus.Decode(msg.Data(), ch); err == nil && sc.state.Apply(ch) == nil {
			if a := ch.GetPhotoAdd(); a != nil {
				k := addKey{a.GetPersonId(), a.GetPhotoId(), a.GetEmbeddingSpace()}
				sc.adds[k] = a
				sc.subjects[k] = msg.Subject()
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reembed: %w", err)
	}
	sc.lastSeq = last
	return sc, nil
}

type outcome int

const (
	outPublished outcome = iota
	outRefused
	outConflict
	outCompensated
)

// reembedOne encodes one photo with the new model and publishes its
// PhotoAdd. Refusals and conflicts are outcomes; an error stops the run.
func reembedOne(ctx context.Context, cfg Config, stream jetstream.Stream, sc *streamScan, e photoEntry) (outcome, Refusal, error) {
	a := e.add
	person, photo := a.GetPersonId(), a.GetPhotoId()
	space := cfg.Engine.Space()
	refuse := func(reason, detail string) (outcome, Refusal, error) {
		cfg.Log.Warn("photo not re-embedded", zap.String("person_sha256", events.PersonHash(person)),
			zap.String("photo", photo), zap.String("reason", reason), zap.String("detail", detail))
		return outRefused, Refusal{PersonHash: events.PersonHash(person), PhotoID: photo, Reason: reason, Detail: detail}, nil
	}
	ctx, span := cfg.Tracer.Start(ctx, "reembed.photo")
	defer span.End()

	data, err := cfg.Photos.Get(ctx, person, photo)
	switch {
	case errors.Is(err, photostore.ErrNotFound):
		return refuse(ReasonPhotoMissing, "the photo store has no such photo")
	case errors.Is(err, sealed.ErrTampered), errors.Is(err, sealed.ErrUnknownKey), errors.Is(err, sealed.ErrFormat), errors.Is(err, sealed.ErrWrongContext):
		return refuse(ReasonPhotoUnusable, err.Error())
	case err != nil:
		return 0, Refusal{}, fmt.Errorf("reembed: %w", err)
	}
	if want := a.GetContentSha256(); want != "" {
		sum := sha256.Sum256(data)
		if !strings.EqualFold(hex.EncodeToString(sum[:]), want) {
			clear(data)
			return refuse(ReasonHashMismatch, "the stored photo's SHA-256 is not the enrolled content hash")
		}
	}
	res, err := cfg.Engine.Analyze(ctx, data)
	clear(data)
	if err != nil {
		if ctx.Err() != nil {
			return 0, Refusal{}, fmt.Errorf("reembed: %w", ctx.Err())
		}
		return refuse(ReasonPhotoUnusable, err.Error())
	}
	var good []face.Face
	var reasons []string
	for _, f := range res.Faces {
		if f.Quality.OK {
			good = append(good, f)
		} else {
			reasons = append(reasons, f.Quality.Reasons...)
		}
	}
	switch {
	case len(good) == 0 && len(res.Faces) == 0:
		return refuse(ReasonNoFace, "no face found")
	case len(good) == 0:
		return refuse(ReasonNoFace, fmt.Sprintf("%d faces found, none passes quality: %s", len(res.Faces), strings.Join(dedupe(reasons), ", ")))
	case len(good) > 1:
		return refuse(ReasonManyFaces, fmt.Sprintf("%d faces pass quality, want exactly one", len(good)))
	}
	f := good[0]
	plain := directory.EncodeVector(f.Encoding)
	tmpl, err := sealed.Seal(ctx, cfg.Keys, plain, sealed.TemplateContext(space, photo))
	clear(plain)
	if err != nil {
		return 0, Refusal{}, fmt.Errorf("reembed: seal template of photo %s: %w", photo, err)
	}

	subjects, err := personSubjects(person)
	if err != nil {
		return 0, Refusal{}, fmt.Errorf("reembed: %w", err)
	}
	// A PersonDelete goes to another subject than the photo, so the
	// expected-last-subject-sequence header does not see it: look.
	for _, s := range subjects {
		m, err := lastOn(ctx, stream, s)
		if err != nil {
			return 0, Refusal{}, err
		}
		if m != nil && m.Sequence > sc.lastSeq {
			return outConflict, Refusal{}, nil
		}
	}
	expect := sc.lastSubj[e.subject]
	ch := &fv1.EnrolmentChange{
		SchemaVersion: events.SchemaVersion,
		// Deterministic, so a retried publish of the same step is
		// de-duplicated by the stream.
		ChangeId: uuid.NewSHA1(uuid.NameSpaceURL, []byte(fmt.Sprintf("facegate-reembed/%s/%s/%s/%d", space, person, photo, expect))).String(),
		Time:     timestamppb.Now(),
		Actor:    &fv1.Actor{Kind: fv1.ActorKind_ACTOR_KIND_SERVICE, Id: cfg.Actor},
		Change: &fv1.EnrolmentChange_PhotoAdd{PhotoAdd: &fv1.PhotoAdd{
			PersonId: person, PhotoId: photo, ContentSha256: a.GetContentSha256(), MediaType: a.GetMediaType(),
			StorageRef:     a.GetStorageRef(),
			FaceBox:        &fv1.Box{X: float32(f.Box.X), Y: float32(f.Box.Y), Width: float32(f.Box.W), Height: float32(f.Box.H)},
			SealedTemplate: tmpl, EmbeddingSpace: space, EmbeddingDimension: uint32(len(f.Encoding)),
			Quality: qualityOf(f),
		}},
	}
	hdr := nats.Header{}
	hdr.Set(bus.HeaderMsgID, ch.ChangeId)
	hdr.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(expect, 10))
	if cfg.beforePublish != nil {
		cfg.beforePublish(person)
	}
	ack, err := bus.Publish(ctx, cfg.JetStream, e.subject, ch, hdr)
	if isWrongLastSeq(err) {
		cfg.Log.Debug("person changed during re-embedding; will replay", zap.String("photo", photo))
		return outConflict, Refusal{}, nil
	}
	if err != nil {
		return 0, Refusal{}, fmt.Errorf("reembed: publish template of photo %s: %w", photo, err)
	}
	sc.lastSubj[e.subject] = ack.Sequence
	// Did a PersonDelete land between the look above and the publish?
	for _, s := range subjects {
		m, err := lastOn(ctx, stream, s)
		if err != nil {
			return 0, Refusal{}, err
		}
		if m == nil || m.Sequence <= sc.lastSeq || m.Sequence > ack.Sequence {
			continue
		}
		dc := &fv1.EnrolmentChange{}
		if bus.Decode(m.Data, dc) != nil || dc.GetPersonDelete() == nil {
			continue
		}
		if err := compensate(ctx, cfg, e.subject, person, photo, ack.Sequence); err != nil {
			return 0, Refusal{}, err
		}
		sc.lastSubj[e.subject] = 0 // unknown now; a later photo of the person conflicts and waits for the replay
		return outCompensated, Refusal{}, nil
	}
	return outPublished, Refusal{}, nil
}

// compensate cancels a PhotoAdd that landed after a PersonDelete with a
// PhotoRemove after it (a directory that applied the PhotoAdd drops the
// template again). If the photo subject was purged meanwhile (an erasure),
// the purge removed the PhotoAdd too and the PhotoRemove is not published
// (it would name an erased person).
func compensate(ctx context.Context, cfg Config, subject, person, photo string, addSeq uint64) error {
	rm := &fv1.EnrolmentChange{SchemaVersion: events.SchemaVersion, ChangeId: uuid.NewString(), Time: timestamppb.Now(),
		Actor:  &fv1.Actor{Kind: fv1.ActorKind_ACTOR_KIND_SERVICE, Id: cfg.Actor},
		Change: &fv1.EnrolmentChange_PhotoRemove{PhotoRemove: &fv1.PhotoRemove{PersonId: person, PhotoId: photo}}}
	hdr := nats.Header{}
	hdr.Set(bus.HeaderMsgID, rm.ChangeId)
	hdr.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(addSeq, 10))
	_, err := bus.Publish(ctx, cfg.JetStream, subject, rm, hdr)
	switch {
	case isWrongLastSeq(err):
		cfg.Log.Warn("a person was erased while their photo was re-embedded; restart the directories that were running to drop it from memory",
			zap.Uint64("seq", addSeq))
	case err != nil:
		return fmt.Errorf("reembed: undo the PhotoAdd at %d: %w", addSeq, err)
	default:
		cfg.Log.Warn("re-embedded template undone: the person was deleted meanwhile", zap.Uint64("seq", addSeq))
	}
	return nil
}

func qualityOf(f face.Face) *fv1.Quality {
	sc := f.Quality.Scores
	q := &fv1.Quality{Passed: f.Quality.OK, Sharpness: float32(finite(sc.Sharpness)),
		YawDegrees: float32(finite(sc.Yaw)), PitchDegrees: float32(finite(sc.Pitch)), RollDegrees: float32(finite(sc.Roll)),
		InterEyePixels: float32(finite(sc.InterOcular))}
	if f.Quality.OK {
		q.Overall = 1
	}
	return q
}

func finite(x float64) float64 {
	if x != x || x > 1e30 || x < -1e30 {
		return 0
	}
	return x
}

func dedupe(l []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range l {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

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
		return nil, fmt.Errorf("reembed: last message on %s: %w", subject, err)
	}
	return m, nil
}

func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
