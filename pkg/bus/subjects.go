package bus

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/facegate/facegate/pkg/events"
)

// Root is the first token of every facegate subject.
const Root = "facegate"

// Kind is the second token of a subject; each kind has its own stream.
type Kind string

// Subject kinds.
const (
	KindFrames     Kind = "frames"
	KindFaces      Kind = "faces"
	KindClaims     Kind = "claims"
	KindDecisions  Kind = "decisions"
	KindEnrolments Kind = "enrolments"
	KindErrors     Kind = "errors"
	// KindAudit carries records of administrative calls (who changed or read
	// what) that a service reports for the audit log.
	KindAudit Kind = "audit"
)

// MaxTokenLen bounds a subject token. NATS itself allows long subjects, but
// every token here is an id that also ends up in metric labels, file names
// and log lines.
const MaxTokenLen = 64

// ErrInvalidToken is wrapped by every *TokenError.
var ErrInvalidToken = errors.New("invalid subject token")

// ErrInvalidSubject is wrapped when a whole subject is not a facegate subject.
var ErrInvalidSubject = errors.New("invalid subject")

// TokenError says which token of a subject was refused and why.
type TokenError struct {
	Field  string // what the token names: "site", "camera", "door", ...
	Value  string // the refused value (truncated in Error)
	Reason string
}

func (e *TokenError) Error() string {
	v := e.Value
	if len(v) > 80 {
		v = v[:80] + "..."
	}
	return fmt.Sprintf("bus: invalid %s token %q: %s", e.Field, v, e.Reason)
}

func (e *TokenError) Unwrap() error { return ErrInvalidToken }

// ValidateToken checks one subject token: 1 to MaxTokenLen bytes of ASCII
// letters, digits, '-' and '_'. That excludes everything NATS gives a meaning
// to ('.' separates tokens, '*' and '>' are wildcards, whitespace ends the
// subject in the protocol) and leaves ids that are safe as stream filters,
// label values and file names. field names the token in the error.
func ValidateToken(field, tok string) error {
	fail := func(reason string) error { return &TokenError{Field: field, Value: tok, Reason: reason} }
	if tok == "" {
		return fail("empty")
	}
	if len(tok) > MaxTokenLen {
		return fail(fmt.Sprintf("%d bytes, longer than %d", len(tok), MaxTokenLen))
	}
	for i := 0; i < len(tok); {
		r, size := utf8.DecodeRuneInString(tok[i:])
		switch {
		case r == '.':
			return fail(fmt.Sprintf("'.' at byte %d separates subject tokens", i))
		case r == '*' || r == '>':
			return fail(fmt.Sprintf("%q at byte %d is a subject wildcard", r, i))
		case unicode.IsSpace(r):
			return fail(fmt.Sprintf("whitespace %q at byte %d", r, i))
		case r == utf8.RuneError && size <= 1:
			return fail(fmt.Sprintf("invalid UTF-8 at byte %d", i))
		case !(r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9')):
			return fail(fmt.Sprintf("%q at byte %d is not a letter, digit, '-' or '_'", r, i))
		}
		i += size
	}
	return nil
}

func build(k Kind, fields []string, toks []string) (string, error) {
	var b strings.Builder
	b.WriteString(Root)
	b.WriteByte('.')
	b.WriteString(string(k))
	for i, t := range toks {
		if err := ValidateToken(fields[i], t); err != nil {
			return "", err
		}
		b.WriteByte('.')
		b.WriteString(t)
	}
	return b.String(), nil
}

// FramesSubject is where a gateway publishes a camera's frames:
// facegate.frames.<site>.<camera>.
func FramesSubject(site, camera string) (string, error) {
	return build(KindFrames, []string{"site", "camera"}, []string{site, camera})
}

// FacesSubject is where an embedder publishes the faces of a camera's frames:
// facegate.faces.<site>.<camera>.
func FacesSubject(site, camera string) (string, error) {
	return build(KindFaces, []string{"site", "camera"}, []string{site, camera})
}

// ClaimsSubject is where badge swipes at a door are published:
// facegate.claims.<site>.<door>.
func ClaimsSubject(site, door string) (string, error) {
	return build(KindClaims, []string{"site", "door"}, []string{site, door})
}

// DecisionsSubject is where the matcher publishes a door's decisions:
// facegate.decisions.<site>.<door>.
func DecisionsSubject(site, door string) (string, error) {
	return build(KindDecisions, []string{"site", "door"}, []string{site, door})
}

// EnrolmentsSubject is where an enrolment change is published:
// facegate.enrolments.<kind>.<key>. The key (see events.EnrolmentRoute) is
// part of the subject so that erasure can purge a person's changes by
// subject instead of rewriting the stream.
func EnrolmentsSubject(kind events.EnrolmentKind, key string) (string, error) {
	if !knownEnrolmentKind(kind) {
		return "", &TokenError{Field: "enrolment kind", Value: string(kind), Reason: "not one of the kinds in package events"}
	}
	return build(KindEnrolments, []string{"enrolment kind", "enrolment key"}, []string{string(kind), key})
}

// ErrorsSubject is where a service reports failures: facegate.errors.<service>.
func ErrorsSubject(service string) (string, error) {
	return build(KindErrors, []string{"service"}, []string{service})
}

// AuditSubject is where a service reports administrative calls for the
// audit log: facegate.audit.<service>.
func AuditSubject(service string) (string, error) {
	return build(KindAudit, []string{"service"}, []string{service})
}

// SiteFilter is a consumer filter for every subject of kind at one site
// (facegate.<kind>.<site>.*), or at every site when site is "". Only the
// site-scoped kinds (frames, faces, claims, decisions) have one.
func SiteFilter(k Kind, site string) (string, error) {
	switch k {
	case KindFrames, KindFaces, KindClaims, KindDecisions:
	default:
		return "", fmt.Errorf("bus: %q subjects are not scoped by site: %w", k, ErrInvalidSubject)
	}
	if site == "" {
		return Root + "." + string(k) + ".*.*", nil
	}
	if err := ValidateToken("site", site); err != nil {
		return "", err
	}
	return Root + "." + string(k) + "." + site + ".*", nil
}

// ErasureFilter matches every enrolment change keyed by personID, whatever
// its kind: facegate.enrolments.*.<person id>.
func ErasureFilter(personID string) (string, error) {
	if err := ValidateToken("person id", personID); err != nil {
		return "", err
	}
	return Root + "." + string(KindEnrolments) + ".*." + personID, nil
}

func knownEnrolmentKind(k events.EnrolmentKind) bool {
	for _, known := range events.EnrolmentKinds() {
		if k == known {
			return true
		}
	}
	return false
}

// tokensAfterKind is how many tokens follow facegate.<kind> in a concrete
// subject of that kind.
func tokensAfterKind(k Kind) (int, bool) {
	switch k {
	case KindFrames, KindFaces, KindClaims, KindDecisions, KindEnrolments:
		return 2, true
	case KindErrors, KindAudit:
		return 1, true
	}
	return 0, false
}

// KindOf checks that subject is a concrete facegate subject (the right number
// of valid tokens, no wildcards) and returns its kind.
func KindOf(subject string) (Kind, error) {
	toks := strings.Split(subject, ".")
	if len(toks) < 2 || toks[0] != Root {
		return "", fmt.Errorf("bus: subject %q does not start with %q: %w", subject, Root+".", ErrInvalidSubject)
	}
	k := Kind(toks[1])
	n, ok := tokensAfterKind(k)
	if !ok {
		return "", fmt.Errorf("bus: subject %q: unknown kind %q: %w", subject, toks[1], ErrInvalidSubject)
	}
	if len(toks)-2 != n {
		return "", fmt.Errorf("bus: subject %q: %s subjects have %d tokens after %q, this has %d: %w",
			subject, k, n, Root+"."+string(k), len(toks)-2, ErrInvalidSubject)
	}
	for _, t := range toks[2:] {
		if err := ValidateToken(string(k)+" subject", t); err != nil {
			return "", fmt.Errorf("bus: subject %q: %w", subject, err)
		}
	}
	if k == KindEnrolments && !knownEnrolmentKind(events.EnrolmentKind(toks[2])) {
		return "", fmt.Errorf("bus: subject %q: unknown enrolment kind %q: %w", subject, toks[2], ErrInvalidSubject)
	}
	return k, nil
}
