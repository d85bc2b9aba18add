package natsauth

import (
	"errors"
	"fmt"
	"sort"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/events"
)

// Role is what a NATS user is for; it decides the user's permissions.
type Role string

// Roles. See the package documentation for the permission matrix.
const (
	RoleGateway      Role = "gateway"
	RoleDoor         Role = "door"
	RoleEmbedder     Role = "embedder"
	RoleMatcher      Role = "matcher"
	RoleAudit        Role = "audit"
	RoleEnrolmentAPI Role = "enrolment-api"
	RoleOperator     Role = "operator"
	RoleAdmin        Role = "admin"
	// RoleRetention purges a site's frames, faces and decisions older than
	// the site's retention.
	RoleRetention Role = "retention"
	// RoleReembed re-embeds the gallery into a new model's space during a
	// rollout (pkg/reembed, `facegate gallery reembed`).
	RoleReembed Role = "reembed"
)

// Roles lists every role, in a fixed order.
func Roles() []Role {
	return []Role{RoleGateway, RoleDoor, RoleEmbedder, RoleMatcher, RoleAudit, RoleEnrolmentAPI, RoleOperator, RoleAdmin, RoleRetention, RoleReembed}
}

// ErrInvalidUser is wrapped by every error about a User.
var ErrInvalidUser = errors.New("invalid NATS user")

// User is one NATS credential: one service instance kind at one place.
type User struct {
	// Name identifies the user in the configuration, names its seed file
	// and is the last token of its inbox prefix (see InboxPrefix). A
	// subject token: letters, digits, '-' and '_'.
	Name string `json:"name"`
	Role Role   `json:"role"`
	// Site scopes gateways and doors (required) and embedders and
	// matchers (optional; empty means every site).
	Site string `json:"site,omitempty"`
	// Durable is the JetStream consumer the embedder, matcher or audit
	// user reads through; empty means the user's Name. The operator (or
	// an admin) creates it; these users may only bind to it, fetch from
	// it and acknowledge it.
	Durable string `json:"durable,omitempty"`
}

// Permissions are allow-lists: everything not listed is denied. A nil
// Permissions (admin) is unrestricted.
type Permissions struct {
	Publish   []string `json:"publish"`
	Subscribe []string `json:"subscribe"`
}

// InboxPrefix is the inbox prefix the user's client must set
// (nats.CustomInboxPrefix). Replies to the user's requests — JetStream
// publish acks, JetStream API responses, pulled messages — arrive under
// it, and the user may subscribe only there, so one service cannot read the
// replies meant for another.
func (u User) InboxPrefix() string { return "_INBOX." + u.Name }

func (u User) durable() string {
	if u.Durable != "" {
		return u.Durable
	}
	return u.Name
}

// Validate checks the user's fields for its role.
func (u User) Validate() error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("natsauth: user %q (role %q): %s: %w", u.Name, u.Role, fmt.Sprintf(format, args...), ErrInvalidUser)
	}
	if err := bus.ValidateToken("user name", u.Name); err != nil {
		return fail("name: %v", err)
	}
	known := false
	for _, r := range Roles() {
		known = known || r == u.Role
	}
	if !known {
		return fail("unknown role (want one of %v)", Roles())
	}
	switch u.Role {
	case RoleGateway, RoleDoor:
		if u.Site == "" {
			return fail("site is required: a %s belongs to one site", u.Role)
		}
	case RoleEmbedder, RoleMatcher:
	default:
		if u.Site != "" {
			return fail("site %q given, but the role is not scoped by site", u.Site)
		}
	}
	if u.Site != "" {
		if err := bus.ValidateToken("site", u.Site); err != nil {
			return fail("%v", err)
		}
	}
	switch u.Role {
	case RoleEmbedder, RoleMatcher, RoleAudit:
		if err := bus.ValidateToken("durable", u.durable()); err != nil {
			return fail("%v", err)
		}
	default:
		if u.Durable != "" {
			return fail("durable %q given, but the role reads no stream through a durable consumer", u.Durable)
		}
	}
	return nil
}

// siteOrAll is the site token of a subject pattern: the user's site, or
// '*' when the user serves every site.
func (u User) siteOrAll() string {
	if u.Site == "" {
		return "*"
	}
	return u.Site
}

// durableRead is what binding to, pulling from and acknowledging an
// existing durable consumer needs. The consumer's filter, ack policy and
// limits are the creator's; the reader cannot change them.
func durableRead(stream, durable string) (pub []string) {
	return []string{
		"$JS.API.STREAM.INFO." + stream,
		"$JS.API.CONSUMER.INFO." + stream + "." + durable,
		"$JS.API.CONSUMER.MSG.NEXT." + stream + "." + durable,
		"$JS.ACK." + stream + "." + durable + ".>",
	}
}

// orderedRead is what an ordered consumer (an ephemeral consumer the
// client creates, recreates after a gap and deletes) needs. It needs no
// ack subject: ordered consumers do not acknowledge.
func orderedRead(stream string) (pub []string) {
	return []string{
		"$JS.API.STREAM.INFO." + stream,
		"$JS.API.CONSUMER.CREATE." + stream + ".>",
		"$JS.API.CONSUMER.INFO." + stream + ".*",
		"$JS.API.CONSUMER.MSG.NEXT." + stream + ".*",
		"$JS.API.CONSUMER.DELETE." + stream + ".*",
	}
}

func errorsSubject(r Role) string { return bus.Root + "." + string(bus.KindErrors) + "." + string(r) }

func kindSubject(k bus.Kind, rest string) string { return bus.Root + "." + string(k) + "." + rest }

// PermissionsFor returns the user's allow-lists, or nil for an admin.
// Every list includes subscribe permission on the user's own inbox only.
func PermissionsFor(u User) (*Permissions, error) {
	if err := u.Validate(); err != nil {
		return nil, err
	}
	var pub []string
	var sub []string
	switch u.Role {
	case RoleAdmin:
		return nil, nil
	case RoleGateway:
		// JetStream publishes are requests; the ack comes to the inbox.
		pub = []string{
			kindSubject(bus.KindFrames, u.Site+".>"),
			kindSubject(bus.KindClaims, u.Site+".>"),
		}
	case RoleDoor:
		// A door controller listens to its site's decisions as they are
		// stored (a core subscription: it acts now or never).
		sub = []string{kindSubject(bus.KindDecisions, u.Site+".>")}
	case RoleEmbedder:
		pub = append(pub, durableRead(bus.StreamFrames, u.durable())...)
		pub = append(pub, kindSubject(bus.KindFaces, u.siteOrAll()+".>"), errorsSubject(u.Role))
	case RoleMatcher:
		pub = append(pub, durableRead(bus.StreamFaces, u.durable())...)
		pub = append(pub, durableRead(bus.StreamClaims, u.durable())...)
		// The gallery is rebuilt from the whole enrolment stream at start.
		pub = append(pub, orderedRead(bus.StreamEnrolments)...)
		pub = append(pub, kindSubject(bus.KindDecisions, u.siteOrAll()+".>"), errorsSubject(u.Role))
	case RoleAudit:
		pub = append(pub, durableRead(bus.StreamDecisions, u.durable())...)
		pub = append(pub, durableRead(bus.StreamEnrolments, u.durable())...)
		pub = append(pub, durableRead(bus.StreamErrors, u.durable())...)
		pub = append(pub, durableRead(bus.StreamAudit, u.durable())...)
	case RoleRetention:
		// Per-site retention (pkg/retention) finds the first sequence to
		// keep with an ordered consumer and purges a site's subjects below
		// it. Its own credential: the audit reader must not be able to
		// delete what it audits.
		for _, s := range []string{bus.StreamFrames, bus.StreamFaces, bus.StreamDecisions} {
			pub = append(pub, orderedRead(s)...)
			pub = append(pub, "$JS.API.STREAM.PURGE."+s)
		}
	case RoleReembed:
		// pkg/reembed replays the enrolment stream, looks at the last
		// change on a person's subjects (direct get by subject: a
		// PersonDelete landing during the run must win) and publishes
		// PhotoAdds, and the PhotoRemove compensating one, on the
		// person's photo subject. Nothing else: no person, group, door
		// or policy changes, no purge or delete.
		pub = append(pub, orderedRead(bus.StreamEnrolments)...)
		pub = append(pub,
			"$JS.API.DIRECT.GET."+bus.StreamEnrolments+"."+kindSubject(bus.KindEnrolments, string(events.KindPerson)+".*"),
			kindSubject(bus.KindEnrolments, string(events.KindPhoto)+".*"),
		)
	case RoleEnrolmentAPI:
		pub = []string{
			kindSubject(bus.KindEnrolments, ">"),
			// Erasure (bus.PurgePerson) looks the stream up and purges
			// by subject.
			"$JS.API.STREAM.INFO." + bus.StreamEnrolments,
			"$JS.API.STREAM.PURGE." + bus.StreamEnrolments,
			// Erasure also deletes the decisions that name the person
			// (bus.EraseDecisions): it scans DECISIONS and deletes by
			// sequence.
			"$JS.API.STREAM.MSG.DELETE." + bus.StreamDecisions,
			// ... and the frames and face events those decisions were
			// made from (bus.ErasePersonEvents).
			"$JS.API.STREAM.MSG.DELETE." + bus.StreamFrames,
			"$JS.API.STREAM.MSG.DELETE." + bus.StreamFaces,
			// Administrative calls are reported for the audit log.
			kindSubject(bus.KindAudit, "api"),
			errorsSubject(u.Role),
		}
		// The API's own directory view (verify, identify, read-your-writes)
		// replays the enrolment stream.
		pub = append(pub, orderedRead(bus.StreamEnrolments)...)
		pub = append(pub, orderedRead(bus.StreamDecisions)...)
		pub = append(pub, orderedRead(bus.StreamFrames)...)
		pub = append(pub, orderedRead(bus.StreamFaces)...)
	case RoleOperator:
		// Lag reading and creating missing embedder consumers
		// (operator/internal/lag): consumer info and create on FRAMES.
		pub = []string{
			"$JS.API.CONSUMER.INFO." + bus.StreamFrames + ".*",
			"$JS.API.CONSUMER.CREATE." + bus.StreamFrames + ".>",
		}
	}
	sub = append(sub, u.InboxPrefix()+".>")
	sort.Strings(pub)
	sort.Strings(sub)
	return &Permissions{Publish: pub, Subscribe: sub}, nil
}
