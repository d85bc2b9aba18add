// Package events holds the Go-side rules of the facegate.v1 event schemas
// (proto/facegate/v1) that protobuf itself cannot express: the current schema
// version, the structural checks a consumer applies before trusting an event,
// and how an enrolment change is routed to its subject.
//
// # Schema versions
//
// Every top-level event carries schema_version. Adding fields is not a new
// version: proto3 decoders keep fields they do not know and re-encode them,
// so old consumers pass new fields through untouched. The version is bumped
// only when the meaning of an existing field changes; a consumer that sees a
// version newer than SchemaVersion must not guess and rejects the event.
package events

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// SchemaVersion is the version of the facegate.v1 schemas this code writes
// and the newest it reads.
const SchemaVersion uint32 = 1

// schemaVersionField is the field every top-level event declares as number 1.
const schemaVersionField protoreflect.Name = "schema_version"

// ErrInvalid is wrapped by every structural validation error in this package.
var ErrInvalid = errors.New("invalid event")

// SchemaVersionOf returns msg's schema_version, and false when the message
// type has no such field (it is then not a top-level event).
func SchemaVersionOf(msg proto.Message) (uint32, bool) {
	m := msg.ProtoReflect()
	fd := m.Descriptor().Fields().ByName(schemaVersionField)
	if fd == nil || fd.Kind() != protoreflect.Uint32Kind || fd.Cardinality() == protoreflect.Repeated {
		return 0, false
	}
	return uint32(m.Get(fd).Uint()), true
}

// CheckSchemaVersion reports whether msg declares a schema version this code
// understands: present, non-zero, and not newer than SchemaVersion.
// Zero is refused because it is what an empty or foreign payload decodes to,
// and what a producer that forgot to set the field sends.
func CheckSchemaVersion(msg proto.Message) error {
	name := msg.ProtoReflect().Descriptor().FullName()
	v, ok := SchemaVersionOf(msg)
	switch {
	case !ok:
		return fmt.Errorf("events: %s has no schema_version field, so it is not a top-level event: %w", name, ErrInvalid)
	case v == 0:
		return fmt.Errorf("events: %s: schema_version is missing (0): %w", name, ErrInvalid)
	case v > SchemaVersion:
		return fmt.Errorf("events: %s: schema_version %d is newer than the supported %d: %w", name, v, SchemaVersion, ErrUnsupportedVersion)
	}
	return nil
}

// ErrUnsupportedVersion is wrapped when an event's schema_version is newer
// than SchemaVersion.
var ErrUnsupportedVersion = errors.New("unsupported schema version")

// EmbeddingNormTolerance is how far from 1 an embedding's L2 norm may be.
// Embedders normalise in float32, which leaves an error around 1e-6; 1e-3
// still catches an embedding that was never normalised.
const EmbeddingNormTolerance = 1e-3

// MaxEmbeddingDimension bounds embedding_dimension so that a corrupt or
// hostile event cannot make a consumer allocate without limit.
const MaxEmbeddingDimension = 4096

// ValidateFaceEvent checks what the matcher relies on before it searches the
// gallery: a frame reference, a model id, and for every face a consistent
// index, a box, and an embedding that is empty (rejected by the quality gate)
// or has embedding_dimension finite components and unit norm.
func ValidateFaceEvent(ev *facegatev1.FaceEvent) error {
	if ev == nil {
		return fmt.Errorf("events: face event is nil: %w", ErrInvalid)
	}
	if err := CheckSchemaVersion(ev); err != nil {
		return err
	}
	if err := validateFrameRef(ev.GetFrame()); err != nil {
		return fmt.Errorf("events: face event: %w", err)
	}
	if ev.GetModelId() == "" {
		return fmt.Errorf("events: face event: model_id is empty: %w", ErrInvalid)
	}
	for i, f := range ev.GetFaces() {
		if err := validateFace(i, f); err != nil {
			return fmt.Errorf("events: face event %s/%s#%d: face %d: %w",
				ev.GetFrame().GetSite(), ev.GetFrame().GetCamera(), ev.GetFrame().GetSequence(), i, err)
		}
	}
	return nil
}

func validateFrameRef(ref *facegatev1.FrameRef) error {
	switch {
	case ref == nil:
		return fmt.Errorf("frame reference is missing: %w", ErrInvalid)
	case ref.GetSite() == "" || ref.GetCamera() == "":
		return fmt.Errorf("frame reference has an empty site or camera: %w", ErrInvalid)
	case ref.GetCaptureTime() == nil:
		return fmt.Errorf("frame reference has no capture_time: %w", ErrInvalid)
	}
	return nil
}

func validateFace(i int, f *facegatev1.Face) error {
	if f.GetIndex() != uint32(i) {
		return fmt.Errorf("index is %d but the face is at position %d: %w", f.GetIndex(), i, ErrInvalid)
	}
	b := f.GetBox()
	if b == nil || !finite32(b.GetX(), b.GetY(), b.GetWidth(), b.GetHeight()) || b.GetWidth() <= 0 || b.GetHeight() <= 0 {
		return fmt.Errorf("box is missing, not finite or empty: %w", ErrInvalid)
	}
	emb := f.GetEmbedding()
	if len(emb) == 0 {
		return nil
	}
	dim := f.GetEmbeddingDimension()
	if dim == 0 || dim > MaxEmbeddingDimension {
		return fmt.Errorf("embedding_dimension %d is outside 1..%d: %w", dim, MaxEmbeddingDimension, ErrInvalid)
	}
	if uint32(len(emb)) != dim {
		return fmt.Errorf("embedding has %d components but embedding_dimension is %d: %w", len(emb), dim, ErrInvalid)
	}
	var sum float64
	for j, v := range emb {
		if !finite32(v) {
			return fmt.Errorf("embedding component %d is not finite: %w", j, ErrInvalid)
		}
		sum += float64(v) * float64(v)
	}
	if n := math.Sqrt(sum); math.Abs(n-1) > EmbeddingNormTolerance {
		return fmt.Errorf("embedding norm is %.6f, not 1 within %g (not L2-normalised): %w", n, EmbeddingNormTolerance, ErrInvalid)
	}
	return nil
}

// ValidateDecision checks what door controllers and the audit log rely on:
// ids and tokens present, a set outcome and mode, a GRANT that names a
// person, and finite scores.
func ValidateDecision(d *facegatev1.Decision) error {
	if d == nil {
		return fmt.Errorf("events: decision is nil: %w", ErrInvalid)
	}
	if err := CheckSchemaVersion(d); err != nil {
		return err
	}
	id := d.GetDecisionId()
	switch {
	case id == "":
		return fmt.Errorf("events: decision: decision_id is empty: %w", ErrInvalid)
	case d.GetSite() == "" || d.GetDoor() == "":
		return fmt.Errorf("events: decision %s: site or door is empty: %w", id, ErrInvalid)
	case d.GetOutcome() == facegatev1.Outcome_OUTCOME_UNSPECIFIED:
		return fmt.Errorf("events: decision %s: outcome is unspecified: %w", id, ErrInvalid)
	case d.GetMode() == facegatev1.Mode_MODE_UNSPECIFIED:
		return fmt.Errorf("events: decision %s: mode is unspecified: %w", id, ErrInvalid)
	case d.GetOutcome() == facegatev1.Outcome_OUTCOME_GRANT && d.GetPersonId() == "":
		return fmt.Errorf("events: decision %s: GRANT names no person: %w", id, ErrInvalid)
	case !finite32(d.GetThreshold()) || (d.Distance != nil && !finite32(d.GetDistance())):
		return fmt.Errorf("events: decision %s: distance or threshold is not finite: %w", id, ErrInvalid)
	case d.GetMode() == facegatev1.Mode_MODE_VERIFY && d.GetClaimId() == "":
		return fmt.Errorf("events: decision %s: verify decision names no claim: %w", id, ErrInvalid)
	}
	return nil
}

func finite32(vs ...float32) bool {
	for _, v := range vs {
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return false
		}
	}
	return true
}
