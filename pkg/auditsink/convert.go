package auditsink

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/audit"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/events"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// KindMalformed is the record kind of a message the sink could not turn
// into a record (undecodable, invalid, or refused by the log).
const KindMalformed audit.Kind = "malformed"

// ErrMalformed is wrapped by every conversion error: the message will not
// convert better on redelivery and is terminated.
var ErrMalformed = errors.New("malformed message")

// Source names the message a record came from.
type Source struct {
	Stream string
	Seq    uint64
}

func (s Source) String() string { return s.Stream + "/" + strconv.FormatUint(s.Seq, 10) }

// ParseSource reads "STREAM/123".
func ParseSource(s string) (Source, error) {
	i := strings.LastIndexByte(s, '/')
	if i <= 0 || i == len(s)-1 {
		return Source{}, fmt.Errorf("auditsink: source %q: want STREAM/sequence", short(s))
	}
	seq, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil || seq == 0 || s[i+1] == '0' {
		return Source{}, fmt.Errorf("auditsink: source %q: sequence is not a positive decimal", short(s))
	}
	name := s[:i]
	for _, c := range []byte(name) {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return Source{}, fmt.Errorf("auditsink: source %q: bad stream name", short(s))
		}
	}
	return Source{Stream: name, Seq: seq}, nil
}

// payloadSource is the payload key every record of the sink carries.
const payloadSource = "source"

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// DecisionEvent turns a Decision message into a "decision" event. The
// person is named by events.PersonHash only; nothing biometric exists in a
// Decision to copy.
func DecisionEvent(hdr nats.Header, data []byte) (audit.Event, error) {
	d := &facegatev1.Decision{}
	if err := bus.DecodeMsg(hdr, data, d); err != nil {
		return audit.Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := events.ValidateDecision(d); err != nil {
		return audit.Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := checkTokens("decision", d.GetSite(), d.GetDoor()); err != nil {
		return audit.Event{}, err
	}
	p := map[string]any{
		"decision_id": d.GetDecisionId(),
		"outcome":     strings.TrimPrefix(d.GetOutcome().String(), "OUTCOME_"),
		"mode":        strings.TrimPrefix(d.GetMode().String(), "MODE_"),
		"site":        d.GetSite(),
		"door":        d.GetDoor(),
		"threshold":   float64(d.GetThreshold()),
	}
	putNonEmpty(p, "camera", d.GetCamera())
	putNonEmpty(p, "policy_rule", d.GetPolicyRule())
	putNonEmpty(p, "model_id", d.GetModelId())
	putNonEmpty(p, "model_version", d.GetModelVersion())
	putNonEmpty(p, "claim_id", d.GetClaimId())
	if d.Distance != nil {
		p["distance"] = float64(d.GetDistance())
	}
	if t := d.GetDecidedTime(); t != nil {
		p["decided_time"] = formatTS(t)
	}
	if rs := d.GetRejectionReasons(); len(rs) > 0 {
		names := make([]string, len(rs))
		for i, r := range rs {
			names[i] = strings.TrimPrefix(r.String(), "REJECTION_REASON_")
		}
		p["rejection_reasons"] = names
	}
	ev := audit.Event{Kind: audit.KindDecision, Actor: "matcher@" + d.GetSite(), Payload: p}
	if id := d.GetPersonId(); id != "" {
		ev.SubjectID = events.PersonHash(id)
	}
	return ev, nil
}

// EnrolmentEvent turns an EnrolmentChange into an "enrolment" event, or an
// "erasure" event for a PersonDelete. It records what changed and who
// changed it; display names, badge ids, sealed templates, photo storage
// references and photo ids (which may embed a person id) are not copied.
func EnrolmentEvent(hdr nats.Header, data []byte) (audit.Event, error) {
	ch := &facegatev1.EnrolmentChange{}
	if err := bus.DecodeMsg(hdr, data, ch); err != nil {
		return audit.Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, _, err := events.EnrolmentRoute(ch); err != nil {
		return audit.Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	actor, err := actorString(ch.GetActor())
	if err != nil {
		return audit.Event{}, err
	}
	p := map[string]any{}
	putNonEmpty(p, "change_id", ch.GetChangeId())
	if ch.GetSequence() != 0 {
		p["change_sequence"] = ch.GetSequence()
	}
	if t := ch.GetTime(); t != nil {
		p["change_time"] = formatTS(t)
	}
	ev := audit.Event{Kind: audit.KindEnrolment, Actor: actor, Payload: p}
	person := func(id string) error {
		if id == "" {
			return malformed("enrolment change %s names no person", ch.GetChangeId())
		}
		ev.SubjectID = events.PersonHash(id)
		return nil
	}
	switch c := ch.GetChange().(type) {
	case *facegatev1.EnrolmentChange_PersonUpsert:
		u := c.PersonUpsert
		p["change"] = "person_upsert"
		p["badge_count"] = len(u.GetBadgeIds())
		p["disabled"] = u.GetDisabled()
		putNonEmpty(p, "site", u.GetSite())
		if u.GetValidFrom() != nil {
			p["valid_from"] = formatTS(u.GetValidFrom())
		}
		if u.GetValidUntil() != nil {
			p["valid_until"] = formatTS(u.GetValidUntil())
		}
		err = person(u.GetPersonId())
	case *facegatev1.EnrolmentChange_PersonDelete:
		pd := c.PersonDelete
		ev.Kind = audit.KindErasure
		p["change"] = "person_delete"
		if pd.GetPersonId() != "" {
			err = person(pd.GetPersonId())
		} else {
			p["tombstone"] = true
			var h string
			if h, err = normaliseHash(pd.GetPersonIdSha256()); err == nil && h == "" {
				err = malformed("erasure tombstone %s has no person hash", ch.GetChangeId())
			}
			ev.SubjectID = h
		}
	case *facegatev1.EnrolmentChange_PhotoAdd:
		a := c.PhotoAdd
		p["change"] = "photo_add"
		p["object_ref_sha256"] = sha256Hex(a.GetPhotoId())
		putNonEmpty(p, "content_sha256", a.GetContentSha256())
		putNonEmpty(p, "media_type", a.GetMediaType())
		putNonEmpty(p, "space", a.GetEmbeddingSpace())
		if a.GetEmbeddingDimension() != 0 {
			p["dimension"] = a.GetEmbeddingDimension()
		}
		p["sealed"] = len(a.GetSealedTemplate()) > 0
		err = person(a.GetPersonId())
	case *facegatev1.EnrolmentChange_PhotoRemove:
		r := c.PhotoRemove
		p["change"] = "photo_remove"
		p["object_ref_sha256"] = sha256Hex(r.GetPhotoId())
		putNonEmpty(p, "content_sha256", r.GetContentSha256())
		err = person(r.GetPersonId())
	case *facegatev1.EnrolmentChange_GroupMembership:
		m := c.GroupMembership
		p["change"] = "group_membership"
		p["group_id"] = m.GetGroupId()
		p["member"] = m.GetMember()
		err = person(m.GetPersonId())
	case *facegatev1.EnrolmentChange_GroupUpsert:
		p["change"] = "group_upsert"
		p["group_id"] = c.GroupUpsert.GetGroupId()
	case *facegatev1.EnrolmentChange_GroupDelete:
		p["change"] = "group_delete"
		p["group_id"] = c.GroupDelete.GetGroupId()
	case *facegatev1.EnrolmentChange_DoorUpsert:
		u := c.DoorUpsert
		p["change"] = "door_upsert"
		p["site"], p["door"] = u.GetSite(), u.GetDoor()
		p["mode"] = strings.TrimPrefix(u.GetMode().String(), "MODE_")
		p["cameras"] = u.GetCameras()
	case *facegatev1.EnrolmentChange_DoorDelete:
		p["change"] = "door_delete"
		p["site"], p["door"] = c.DoorDelete.GetSite(), c.DoorDelete.GetDoor()
	case *facegatev1.EnrolmentChange_PolicyUpsert:
		u := c.PolicyUpsert
		p["change"] = "policy_upsert"
		p["policy_id"] = u.GetPolicyId()
		p["group_ids"] = u.GetGroupIds()
		doors := make([]string, len(u.GetDoors()))
		for i, d := range u.GetDoors() {
			doors[i] = d.GetSite() + "/" + d.GetDoor()
		}
		p["doors"] = doors
		putNonEmpty(p, "schedule", u.GetSchedule())
		p["effect"] = strings.TrimPrefix(u.GetEffect().String(), "EFFECT_")
		p["priority"] = u.GetPriority()
	case *facegatev1.EnrolmentChange_PolicyDelete:
		p["change"] = "policy_delete"
		p["policy_id"] = c.PolicyDelete.GetPolicyId()
	}
	if err != nil {
		return audit.Event{}, err
	}
	return ev, nil
}

// AdminEvent turns an AuditRecord a service published for an
// administrative call into an event: its kind, actor, subject hash and
// summary. Its seq and hashes (which producers leave empty) are ignored:
// the log assigns its own.
func AdminEvent(hdr nats.Header, data []byte) (audit.Event, error) {
	r := &facegatev1.AuditRecord{}
	if err := bus.DecodeMsg(hdr, data, r); err != nil {
		return audit.Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var kind audit.Kind
	switch r.GetKind() {
	case facegatev1.AuditKind_AUDIT_KIND_DECISION:
		kind = audit.KindDecision
	case facegatev1.AuditKind_AUDIT_KIND_ENROLMENT:
		kind = audit.KindEnrolment
	case facegatev1.AuditKind_AUDIT_KIND_ERASURE:
		kind = audit.KindErasure
	case facegatev1.AuditKind_AUDIT_KIND_MODEL:
		kind = "model"
	case facegatev1.AuditKind_AUDIT_KIND_LOG_ACCESS:
		kind = "log_access"
	default:
		return audit.Event{}, malformed("audit record kind %d is not one this version knows", int32(r.GetKind()))
	}
	actor, err := actorString(r.GetActor())
	if err != nil {
		return audit.Event{}, err
	}
	subject, err := normaliseHash(string(r.GetSubjectHash()))
	if len(r.GetSubjectHash()) == sha256.Size {
		subject, err = hex.EncodeToString(r.GetSubjectHash()), nil
	}
	if err != nil {
		return audit.Event{}, err
	}
	p := map[string]any{"reported": true}
	if t := r.GetTime(); t != nil {
		p["event_time"] = formatTS(t)
	}
	putNonEmpty(p, "reported_source", r.GetSource())
	for _, a := range r.GetSummary() {
		k := a.GetKey()
		if !isSnake(k) {
			return audit.Event{}, malformed("audit summary key %q is not lower_snake_case", short(k))
		}
		if _, dup := p[k]; dup || k == payloadSource || k == "service" {
			return audit.Event{}, malformed("audit summary key %q appears twice or is reserved", k)
		}
		p[k] = a.GetValue()
	}
	return audit.Event{Kind: kind, Actor: actor, SubjectID: subject, Payload: p}, nil
}

// FailureEvent records a message the sink could not append: where it came
// from, how big it was and why. Never its bytes or its NATS subject (an
// enrolment subject carries a person id).
func FailureEvent(src Source, size int, cause error) audit.Event {
	reason := cause.Error()
	if len(reason) > 400 {
		reason = reason[:400] + "..."
	}
	reason = strings.ToValidUTF8(reason, "?")
	return audit.Event{Kind: KindMalformed, Actor: "facegate/audit-consumer", Payload: map[string]any{
		payloadSource: src.String(), "stream": src.Stream, "size": size, "reason": reason,
	}}
}

func actorString(a *facegatev1.Actor) (string, error) {
	id := a.GetId()
	var prefix string
	switch a.GetKind() {
	case facegatev1.ActorKind_ACTOR_KIND_USER:
		prefix = "user:"
	case facegatev1.ActorKind_ACTOR_KIND_SERVICE:
		prefix = "service:"
	default:
		return "", malformed("actor kind is unspecified")
	}
	if id == "" || len(id) > 200 || !utf8.ValidString(id) {
		return "", malformed("actor id is empty, too long or not UTF-8")
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return "", malformed("actor id contains a control character")
		}
	}
	// The prefix also keeps a spreadsheet from reading the actor as a
	// formula ("=cmd|...") when the CSV export is opened.
	return prefix + id, nil
}

// normaliseHash accepts a person hash as 64 hex characters (any case) and
// returns it in lower case; "" stays "".
func normaliseHash(h string) (string, error) {
	if h == "" {
		return "", nil
	}
	if len(h) != 2*sha256.Size {
		return "", malformed("person hash has %d bytes, want 64 hex characters or 32 raw bytes", len(h))
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", malformed("person hash is not hex")
	}
	return strings.ToLower(h), nil
}

func checkTokens(what string, toks ...string) error {
	for _, t := range toks {
		if err := bus.ValidateToken(what, t); err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	return nil
}

func isSnake(k string) bool {
	if k == "" || len(k) > 64 || k[0] < 'a' || k[0] > 'z' {
		return false
	}
	for _, c := range []byte(k) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func putNonEmpty(p map[string]any, k, v string) {
	if v != "" {
		p[k] = v
	}
}

func formatTS(t *timestamppb.Timestamp) string {
	return t.AsTime().UTC().Format(time.RFC3339Nano)
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func short(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
