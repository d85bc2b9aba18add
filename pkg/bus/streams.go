package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names.
const (
	StreamFrames     = "FRAMES"
	StreamFaces      = "FACES"
	StreamClaims     = "CLAIMS"
	StreamDecisions  = "DECISIONS"
	StreamEnrolments = "ENROLMENTS"
	StreamErrors     = "ERRORS"
	StreamAudit      = "AUDIT"
)

// StreamOptions are the tunable limits of one stream. Retention is always
// the limits policy: several consumers read each stream independently (an
// embedder pool per model, a shadow pool during a rollout, the audit log), so
// a message must not vanish when the first one acknowledges it.
type StreamOptions struct {
	// MaxAge drops messages older than this; 0 keeps them forever.
	MaxAge time.Duration
	// MaxBytes bounds the stream's size; -1 is unlimited.
	MaxBytes int64
	// MaxMsgSize bounds one message; -1 leaves only the server's
	// max_payload.
	MaxMsgSize int32
	// Storage is file (survives restarts) or memory.
	Storage jetstream.StorageType
	// Replicas is the number of copies in a cluster (1, 3 or 5 in practice).
	Replicas int
	// Duplicates is the window in which a repeated Nats-Msg-Id is dropped.
	// It cannot be longer than MaxAge.
	Duplicates time.Duration
}

// Config holds the options of every stream. Start from DefaultConfig and
// change what the deployment needs.
type Config struct {
	Frames     StreamOptions
	Faces      StreamOptions
	Claims     StreamOptions
	Decisions  StreamOptions
	Enrolments StreamOptions
	Errors     StreamOptions
	Audit      StreamOptions
}

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
	day = 24 * time.Hour
)

// DefaultConfig is a single-server deployment's configuration. The reasons
// for each limit are in the package documentation.
func DefaultConfig() Config {
	return Config{
		Frames: StreamOptions{
			MaxAge: 10 * time.Second, MaxBytes: 1 * gib, MaxMsgSize: -1,
			Storage: jetstream.FileStorage, Replicas: 1, Duplicates: 10 * time.Second,
		},
		Faces: StreamOptions{
			MaxAge: 5 * time.Minute, MaxBytes: 1 * gib, MaxMsgSize: -1,
			Storage: jetstream.FileStorage, Replicas: 1, Duplicates: 2 * time.Minute,
		},
		Claims: StreamOptions{
			MaxAge: 1 * time.Hour, MaxBytes: 256 * mib, MaxMsgSize: 64 * kib,
			Storage: jetstream.FileStorage, Replicas: 1, Duplicates: 2 * time.Minute,
		},
		Decisions: StreamOptions{
			MaxAge: 90 * day, MaxBytes: -1, MaxMsgSize: 64 * kib,
			Storage: jetstream.FileStorage, Replicas: 1, Duplicates: 2 * time.Minute,
		},
		Enrolments: StreamOptions{
			MaxAge: 0, MaxBytes: -1, MaxMsgSize: 256 * kib,
			Storage: jetstream.FileStorage, Replicas: 1, Duplicates: 2 * time.Minute,
		},
		Errors: StreamOptions{
			MaxAge: 7 * day, MaxBytes: 256 * mib, MaxMsgSize: 64 * kib,
			Storage: jetstream.FileStorage, Replicas: 1, Duplicates: 2 * time.Minute,
		},
		// Audit holds administrative-call records until the audit consumer
		// has chained them into the log; 30 days covers a long outage of it.
		Audit: StreamOptions{
			MaxAge: 30 * day, MaxBytes: 1 * gib, MaxMsgSize: 64 * kib,
			Storage: jetstream.FileStorage, Replicas: 1, Duplicates: 2 * time.Minute,
		},
	}
}

// minWindow is JetStream's smallest MaxAge and duplicate window.
const minWindow = 100 * time.Millisecond

// ErrInvalidConfig is wrapped by every configuration error of StreamConfigs.
var ErrInvalidConfig = errors.New("invalid stream configuration")

type streamDef struct {
	name, description string
	kind              Kind
	opts              func(*Config) StreamOptions
	// bounded streams must have a MaxBytes limit: they carry bulk data
	// (images, embeddings) whose rate is set by cameras, not by people.
	bounded bool
	// keepForever streams are a source of truth and must not age out.
	keepForever bool
	// discardNew refuses new messages at a limit instead of dropping the
	// oldest, for streams where losing history silently is worse than a
	// failed publish.
	discardNew bool
}

// streamDefs is the one table of facegate's streams.
func streamDefs() []streamDef {
	return []streamDef{
		{name: StreamFrames, kind: KindFrames, bounded: true,
			description: "Sampled camera frames (facegate.v1.Frame); seconds of retention, the embedders' work input.",
			opts:        func(c *Config) StreamOptions { return c.Frames }},
		{name: StreamFaces, kind: KindFaces, bounded: true,
			description: "Faces found per frame with embeddings (facegate.v1.FaceEvent); biometric data, minutes of retention.",
			opts:        func(c *Config) StreamOptions { return c.Faces }},
		{name: StreamClaims, kind: KindClaims,
			description: "Badge swipes (facegate.v1.Claim) that open verify windows at doors.",
			opts:        func(c *Config) StreamOptions { return c.Claims }},
		{name: StreamDecisions, kind: KindDecisions,
			description: "Access decisions (facegate.v1.Decision) for door controllers and the audit log; no biometric data.",
			opts:        func(c *Config) StreamOptions { return c.Decisions }},
		{name: StreamEnrolments, kind: KindEnrolments, keepForever: true, discardNew: true,
			description: "Enrolment changes (facegate.v1.EnrolmentChange): the gallery's source of truth; purged by subject on erasure.",
			opts:        func(c *Config) StreamOptions { return c.Enrolments }},
		{name: StreamErrors, kind: KindErrors,
			description: "Failures reported by services (facegate.v1.ErrorEvent).",
			opts:        func(c *Config) StreamOptions { return c.Errors }},
		{name: StreamAudit, kind: KindAudit,
			description: "Records of administrative calls (facegate.v1.AuditRecord without seq or hashes) waiting for the audit log.",
			opts:        func(c *Config) StreamOptions { return c.Audit }},
	}
}

// StreamOf returns the stream that stores subject, after checking that
// subject is a concrete facegate subject.
func StreamOf(subject string) (string, error) {
	k, err := KindOf(subject)
	if err != nil {
		return "", err
	}
	for _, s := range streamDefs() {
		if s.kind == k {
			return s.name, nil
		}
	}
	return "", fmt.Errorf("bus: subject %q: no stream for kind %q: %w", subject, k, ErrInvalidSubject)
}

// StreamConfigs validates cfg and returns the JetStream configuration of every
// stream, in a fixed order.
func (cfg Config) StreamConfigs() ([]jetstream.StreamConfig, error) {
	defs := streamDefs()
	out := make([]jetstream.StreamConfig, 0, len(defs))
	for _, s := range defs {
		o := s.opts(&cfg)
		if err := s.validate(o); err != nil {
			return nil, err
		}
		discard := jetstream.DiscardOld
		if s.discardNew {
			discard = jetstream.DiscardNew
		}
		out = append(out, jetstream.StreamConfig{
			Name:              s.name,
			Description:       s.description,
			Subjects:          []string{Root + "." + string(s.kind) + ".>"},
			Retention:         jetstream.LimitsPolicy,
			MaxConsumers:      -1,
			MaxMsgs:           -1,
			MaxMsgsPerSubject: -1,
			MaxBytes:          o.MaxBytes,
			MaxAge:            o.MaxAge,
			MaxMsgSize:        o.MaxMsgSize,
			Discard:           discard,
			Storage:           o.Storage,
			Replicas:          o.Replicas,
			Duplicates:        o.Duplicates,
			// Erasure deletes a person's enrolment messages (purge by
			// subject), so no stream may deny purge or delete.
			DenyDelete: false,
			DenyPurge:  false,
			// Direct get lets a consumer fetch one message by sequence
			// (e.g. the audit log resolving a source reference) from any
			// replica without a consumer.
			AllowDirect: true,
		})
	}
	return out, nil
}

func (s streamDef) validate(o StreamOptions) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("bus: stream %s: %s: %w", s.name, fmt.Sprintf(format, args...), ErrInvalidConfig)
	}
	switch {
	case o.MaxAge < 0:
		return fail("MaxAge %v is negative", o.MaxAge)
	case o.MaxAge > 0 && o.MaxAge < minWindow:
		return fail("MaxAge %v is below JetStream's minimum of %v", o.MaxAge, minWindow)
	case s.keepForever && o.MaxAge != 0:
		return fail("MaxAge must be 0: the stream is the source of truth and must not age out (got %v)", o.MaxAge)
	case o.MaxBytes == 0 || o.MaxBytes < -1:
		return fail("MaxBytes %d: want a positive limit or -1 for unlimited", o.MaxBytes)
	case s.bounded && o.MaxBytes < 0:
		return fail("MaxBytes must be bounded: the stream carries bulk data at camera rate")
	case o.MaxMsgSize == 0 || o.MaxMsgSize < -1:
		return fail("MaxMsgSize %d: want a positive limit or -1 for the server's max_payload", o.MaxMsgSize)
	case o.Storage != jetstream.FileStorage && o.Storage != jetstream.MemoryStorage:
		return fail("unknown storage type %d", o.Storage)
	case s.keepForever && o.Storage != jetstream.FileStorage:
		return fail("storage must be file: the stream is the source of truth and must survive restarts")
	case o.Replicas < 1 || o.Replicas > 5:
		return fail("Replicas %d is outside 1..5", o.Replicas)
	case o.Duplicates < minWindow:
		return fail("Duplicates %v: want a de-duplication window of at least %v", o.Duplicates, minWindow)
	case o.MaxAge > 0 && o.Duplicates > o.MaxAge:
		return fail("Duplicates %v is longer than MaxAge %v", o.Duplicates, o.MaxAge)
	}
	return nil
}

// EnsureStreams creates every stream, or updates it to cfg when it exists.
// Running it again with the same cfg changes nothing, so every service can
// call it at start-up. Some settings (storage type, retention) cannot be
// changed on an existing stream; the server refuses, and the error names
// the stream.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	scs, err := cfg.StreamConfigs()
	if err != nil {
		return err
	}
	for _, sc := range scs {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("bus: ensure stream %s (subjects %v, storage %s): %w", sc.Name, sc.Subjects, sc.Storage, err)
		}
	}
	return nil
}
