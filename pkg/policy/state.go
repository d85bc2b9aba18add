package policy

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/index"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// ErrInvalidChange is wrapped by every error of Apply.
var ErrInvalidChange = errors.New("invalid enrolment change")

// Person is an enrolled person as the state knows them. Slices are copies.
type Person struct {
	ID, DisplayName, Site string
	BadgeIDs, Groups      []string
	Disabled              bool
	// ValidFrom and ValidUntil are zero when unlimited.
	ValidFrom, ValidUntil time.Time
	Photos                []Photo
}

// Photo is the metadata of one enrolment photo in one embedding space (the
// same photo appears once per space it was embedded in).
type Photo struct {
	ID, Space, ContentSHA256, StorageRef, MediaType string
}

// Door is a door and the cameras whose faces count for it.
type Door struct {
	Site, ID, DisplayName string
	Mode                  facegatev1.Mode
	Cameras               []string
}

// Group is a group of people.
type Group struct {
	ID, DisplayName string
}

// Policy is an access policy.
type Policy struct {
	ID, DisplayName string
	GroupIDs        []string
	Doors           []DoorKey
	Schedule        string
	Effect          facegatev1.Effect
	Priority        int32
}

// DoorKey names a door.
type DoorKey struct{ Site, Door string }

// Verdict is the answer of Decide.
type Verdict struct {
	Allow bool
	// Rule is the id of the policy that decided; empty when no policy did
	// (default deny, disabled person, ...).
	Rule string
	// Reason says why, for logs and the console.
	Reason string
}

type policyEntry struct {
	Policy
	sched  *Schedule
	groups map[string]struct{}
	doors  map[DoorKey]struct{}
}

// State is the access state. Create it with NewState.
type State struct {
	people map[string]*Person
	// memberships and photos are keyed by person id independently of people,
	// so a change arriving for a person not (yet) upserted is kept and an
	// erasure finds it.
	members  map[string]map[string]struct{} // person -> groups
	photos   map[string]map[photoKey]Photo  // person -> photos
	badges   map[string]string              // badge -> person
	groups   map[string]Group               // group id -> group
	doors    map[DoorKey]Door               // door -> door
	cameras  map[DoorKey]string             // (site, camera) -> door id
	policies map[string]*policyEntry        // policy id -> policy
}

type photoKey struct{ id, space string }

// NewState returns an empty state.
func NewState() *State {
	return &State{
		people:   map[string]*Person{},
		members:  map[string]map[string]struct{}{},
		photos:   map[string]map[photoKey]Photo{},
		badges:   map[string]string{},
		groups:   map[string]Group{},
		doors:    map[DoorKey]Door{},
		cameras:  map[DoorKey]string{},
		policies: map[string]*policyEntry{},
	}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("policy: %s: %w", fmt.Sprintf(format, args...), ErrInvalidChange)
}

func checkID(kind, id string) error {
	if err := index.ValidateID(kind, id); err != nil {
		return fmt.Errorf("policy: %w: %w", err, ErrInvalidChange)
	}
	return nil
}

// Apply applies one change. On error the state is unchanged.
func (s *State) Apply(ch *facegatev1.EnrolmentChange) error {
	if ch == nil {
		return invalid("nil change")
	}
	switch c := ch.GetChange().(type) {
	case *facegatev1.EnrolmentChange_PersonUpsert:
		return s.personUpsert(c.PersonUpsert)
	case *facegatev1.EnrolmentChange_PersonDelete:
		return s.personDelete(c.PersonDelete)
	case *facegatev1.EnrolmentChange_PhotoAdd:
		return s.photoAdd(c.PhotoAdd)
	case *facegatev1.EnrolmentChange_PhotoRemove:
		return s.photoRemove(c.PhotoRemove)
	case *facegatev1.EnrolmentChange_GroupMembership:
		return s.membership(c.GroupMembership)
	case *facegatev1.EnrolmentChange_GroupUpsert:
		g := c.GroupUpsert
		if err := checkID("group", g.GetGroupId()); err != nil {
			return err
		}
		s.groups[g.GetGroupId()] = Group{ID: g.GetGroupId(), DisplayName: g.GetDisplayName()}
		return nil
	case *facegatev1.EnrolmentChange_GroupDelete:
		id := c.GroupDelete.GetGroupId()
		if err := checkID("group", id); err != nil {
			return err
		}
		delete(s.groups, id)
		for pid, gs := range s.members {
			delete(gs, id)
			if len(gs) == 0 {
				delete(s.members, pid)
			}
		}
		return nil
	case *facegatev1.EnrolmentChange_DoorUpsert:
		return s.doorUpsert(c.DoorUpsert)
	case *facegatev1.EnrolmentChange_DoorDelete:
		k := DoorKey{c.DoorDelete.GetSite(), c.DoorDelete.GetDoor()}
		if err := checkID("site", k.Site); err != nil {
			return err
		}
		if err := checkID("door", k.Door); err != nil {
			return err
		}
		s.removeDoor(k)
		return nil
	case *facegatev1.EnrolmentChange_PolicyUpsert:
		return s.policyUpsert(c.PolicyUpsert)
	case *facegatev1.EnrolmentChange_PolicyDelete:
		id := c.PolicyDelete.GetPolicyId()
		if err := checkID("policy", id); err != nil {
			return err
		}
		delete(s.policies, id)
		return nil
	case nil:
		return invalid("change %q carries no change this version knows", ch.GetChangeId())
	default:
		return invalid("change %q: unknown change type %T", ch.GetChangeId(), c)
	}
}

func (s *State) personUpsert(u *facegatev1.PersonUpsert) error {
	id := u.GetPersonId()
	if err := checkID("person", id); err != nil {
		return err
	}
	if u.GetSite() != "" {
		if err := checkID("site", u.GetSite()); err != nil {
			return err
		}
	}
	var from, until time.Time
	if u.ValidFrom != nil {
		if err := u.ValidFrom.CheckValid(); err != nil {
			return invalid("person %q: valid_from: %v", id, err)
		}
		from = u.ValidFrom.AsTime()
	}
	if u.ValidUntil != nil {
		if err := u.ValidUntil.CheckValid(); err != nil {
			return invalid("person %q: valid_until: %v", id, err)
		}
		until = u.ValidUntil.AsTime()
	}
	if !from.IsZero() && !until.IsZero() && !from.Before(until) {
		return invalid("person %q: valid_from %s is not before valid_until %s", id, from.Format(time.RFC3339), until.Format(time.RFC3339))
	}
	badges := make([]string, 0, len(u.GetBadgeIds()))
	for _, b := range u.GetBadgeIds() {
		if err := checkID("badge", b); err != nil {
			return err
		}
		if !slices.Contains(badges, b) {
			badges = append(badges, b)
		}
	}
	sort.Strings(badges)
	// Replace: drop the person's old badges, then claim the new ones. A badge
	// held by someone else moves to this person (the latest change wins, as
	// it does for a badge re-issued by the API).
	if old, ok := s.people[id]; ok {
		for _, b := range old.BadgeIDs {
			if s.badges[b] == id {
				delete(s.badges, b)
			}
		}
	}
	for _, b := range badges {
		if other, ok := s.badges[b]; ok && other != id {
			if op := s.people[other]; op != nil {
				op.BadgeIDs = slices.DeleteFunc(op.BadgeIDs, func(x string) bool { return x == b })
			}
		}
		s.badges[b] = id
	}
	s.people[id] = &Person{
		ID: id, DisplayName: u.GetDisplayName(), Site: u.GetSite(), BadgeIDs: badges,
		Disabled: u.GetDisabled(), ValidFrom: from, ValidUntil: until,
	}
	return nil
}

func (s *State) personDelete(d *facegatev1.PersonDelete) error {
	if id := d.GetPersonId(); id != "" {
		if err := checkID("person", id); err != nil {
			return err
		}
		if h := d.GetPersonIdSha256(); h != "" && h != events.PersonHash(id) {
			return invalid("person delete: person_id_sha256 does not match person_id")
		}
		s.dropPerson(id)
		return nil
	}
	h := d.GetPersonIdSha256()
	if len(h) != 64 {
		return invalid("person delete names neither person_id nor a 64-hex-digit person_id_sha256")
	}
	for _, id := range s.PersonIDsByHash(h) {
		s.dropPerson(id)
	}
	return nil
}

// PersonIDsByHash returns the ids (sorted) of everything the state holds
// about a person whose events.PersonHash is hash: the person, their photo
// records and memberships, even without a PersonUpsert.
func (s *State) PersonIDsByHash(hash string) []string {
	seen := map[string]struct{}{}
	check := func(id string) {
		if _, ok := seen[id]; !ok && events.PersonHash(id) == hash {
			seen[id] = struct{}{}
		}
	}
	for id := range s.people {
		check(id)
	}
	for id := range s.photos {
		check(id)
	}
	for id := range s.members {
		check(id)
	}
	out := make([]string, 0, len(seen))
	for id := range seen {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func (s *State) dropPerson(id string) {
	if p, ok := s.people[id]; ok {
		for _, b := range p.BadgeIDs {
			if s.badges[b] == id {
				delete(s.badges, b)
			}
		}
	}
	delete(s.people, id)
	delete(s.members, id)
	delete(s.photos, id)
}

func (s *State) photoAdd(a *facegatev1.PhotoAdd) error {
	if err := checkID("person", a.GetPersonId()); err != nil {
		return err
	}
	if err := checkID("photo", a.GetPhotoId()); err != nil {
		return err
	}
	if a.GetEmbeddingSpace() == "" {
		return invalid("photo %q: embedding_space is empty", a.GetPhotoId())
	}
	ph := Photo{ID: a.GetPhotoId(), Space: a.GetEmbeddingSpace(), ContentSHA256: a.GetContentSha256(),
		StorageRef: a.GetStorageRef(), MediaType: a.GetMediaType()}
	m := s.photos[a.GetPersonId()]
	if m == nil {
		m = map[photoKey]Photo{}
		s.photos[a.GetPersonId()] = m
	}
	m[photoKey{ph.ID, ph.Space}] = ph
	return nil
}

func (s *State) photoRemove(r *facegatev1.PhotoRemove) error {
	if err := checkID("person", r.GetPersonId()); err != nil {
		return err
	}
	if err := checkID("photo", r.GetPhotoId()); err != nil {
		return err
	}
	m := s.photos[r.GetPersonId()]
	for k := range m {
		if k.id == r.GetPhotoId() {
			delete(m, k)
		}
	}
	if len(m) == 0 {
		delete(s.photos, r.GetPersonId())
	}
	return nil
}

func (s *State) membership(g *facegatev1.GroupMembership) error {
	if err := checkID("person", g.GetPersonId()); err != nil {
		return err
	}
	if err := checkID("group", g.GetGroupId()); err != nil {
		return err
	}
	pid := g.GetPersonId()
	if g.GetMember() {
		m := s.members[pid]
		if m == nil {
			m = map[string]struct{}{}
			s.members[pid] = m
		}
		m[g.GetGroupId()] = struct{}{}
		return nil
	}
	if m := s.members[pid]; m != nil {
		delete(m, g.GetGroupId())
		if len(m) == 0 {
			delete(s.members, pid)
		}
	}
	return nil
}

func (s *State) doorUpsert(u *facegatev1.DoorUpsert) error {
	k := DoorKey{u.GetSite(), u.GetDoor()}
	if err := checkID("site", k.Site); err != nil {
		return err
	}
	if err := checkID("door", k.Door); err != nil {
		return err
	}
	if u.GetMode() != facegatev1.Mode_MODE_VERIFY && u.GetMode() != facegatev1.Mode_MODE_IDENTIFY {
		return invalid("door %s/%s: mode %v is neither VERIFY nor IDENTIFY", k.Site, k.Door, u.GetMode())
	}
	cams := make([]string, 0, len(u.GetCameras()))
	for _, c := range u.GetCameras() {
		if err := checkID("camera", c); err != nil {
			return err
		}
		if other, ok := s.cameras[DoorKey{k.Site, c}]; ok && other != k.Door {
			return invalid("door %s/%s: camera %q already serves door %q", k.Site, k.Door, c, other)
		}
		if !slices.Contains(cams, c) {
			cams = append(cams, c)
		}
	}
	sort.Strings(cams)
	s.removeDoor(k)
	s.doors[k] = Door{Site: k.Site, ID: k.Door, DisplayName: u.GetDisplayName(), Mode: u.GetMode(), Cameras: cams}
	for _, c := range cams {
		s.cameras[DoorKey{k.Site, c}] = k.Door
	}
	return nil
}

func (s *State) removeDoor(k DoorKey) {
	if d, ok := s.doors[k]; ok {
		for _, c := range d.Cameras {
			if s.cameras[DoorKey{k.Site, c}] == k.Door {
				delete(s.cameras, DoorKey{k.Site, c})
			}
		}
	}
	delete(s.doors, k)
}

func (s *State) policyUpsert(u *facegatev1.PolicyUpsert) error {
	p := Policy{ID: u.GetPolicyId(), DisplayName: u.GetDisplayName(), Schedule: u.GetSchedule(),
		Effect: u.GetEffect(), Priority: u.GetPriority(), GroupIDs: slices.Clone(u.GetGroupIds())}
	for _, d := range u.GetDoors() {
		p.Doors = append(p.Doors, DoorKey{d.GetSite(), d.GetDoor()})
	}
	e, err := newPolicyEntry(p)
	if err != nil {
		return err
	}
	s.policies[p.ID] = e
	return nil
}

func newPolicyEntry(p Policy) (*policyEntry, error) {
	if err := checkID("policy", p.ID); err != nil {
		return nil, err
	}
	if p.Effect != facegatev1.Effect_EFFECT_ALLOW && p.Effect != facegatev1.Effect_EFFECT_DENY {
		return nil, invalid("policy %q: effect %v is neither ALLOW nor DENY", p.ID, p.Effect)
	}
	if len(p.GroupIDs) == 0 {
		return nil, invalid("policy %q applies to no group", p.ID)
	}
	if len(p.Doors) == 0 {
		return nil, invalid("policy %q applies to no door", p.ID)
	}
	sched, err := ParseSchedule(p.Schedule)
	if err != nil {
		return nil, fmt.Errorf("policy: policy %q: %w: %w", p.ID, err, ErrInvalidChange)
	}
	e := &policyEntry{Policy: p, sched: sched, groups: map[string]struct{}{}, doors: map[DoorKey]struct{}{}}
	for _, g := range p.GroupIDs {
		if err := checkID("group", g); err != nil {
			return nil, err
		}
		e.groups[g] = struct{}{}
	}
	for _, d := range p.Doors {
		if err := checkID("site", d.Site); err != nil {
			return nil, err
		}
		if err := checkID("door", d.Door); err != nil {
			return nil, err
		}
		e.doors[d] = struct{}{}
	}
	e.GroupIDs = slices.Clone(p.GroupIDs)
	e.Doors = slices.Clone(p.Doors)
	return e, nil
}

// Person returns a copy of a person, with their groups and photos.
func (s *State) Person(id string) (Person, bool) {
	p, ok := s.people[id]
	if !ok {
		return Person{}, false
	}
	return s.copyPerson(p), true
}

func (s *State) copyPerson(p *Person) Person {
	out := *p
	out.BadgeIDs = slices.Clone(p.BadgeIDs)
	out.Groups = nil
	for g := range s.members[p.ID] {
		out.Groups = append(out.Groups, g)
	}
	sort.Strings(out.Groups)
	out.Photos = nil
	for _, ph := range s.photos[p.ID] {
		out.Photos = append(out.Photos, ph)
	}
	sort.Slice(out.Photos, func(i, j int) bool {
		if out.Photos[i].ID != out.Photos[j].ID {
			return out.Photos[i].ID < out.Photos[j].ID
		}
		return out.Photos[i].Space < out.Photos[j].Space
	})
	return out
}

// People returns the people managed by a site ("" = everyone), sorted by id.
func (s *State) People(site string) []Person {
	out := make([]Person, 0, len(s.people))
	for _, p := range s.people {
		if site == "" || p.Site == site {
			out = append(out, s.copyPerson(p))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// PersonByBadge returns the person a badge belongs to.
func (s *State) PersonByBadge(badge string) (Person, bool) {
	id, ok := s.badges[badge]
	if !ok {
		return Person{}, false
	}
	return s.Person(id)
}

// DoorForCamera returns the door a camera of a site serves.
func (s *State) DoorForCamera(site, camera string) (Door, bool) {
	id, ok := s.cameras[DoorKey{site, camera}]
	if !ok {
		return Door{}, false
	}
	return s.Door(site, id)
}

// Door returns a door.
func (s *State) Door(site, door string) (Door, bool) {
	d, ok := s.doors[DoorKey{site, door}]
	if !ok {
		return Door{}, false
	}
	d.Cameras = slices.Clone(d.Cameras)
	return d, true
}

// Doors returns every door, sorted by site then id.
func (s *State) Doors() []Door {
	out := make([]Door, 0, len(s.doors))
	for k := range s.doors {
		d, _ := s.Door(k.Site, k.Door)
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Site != out[j].Site {
			return out[i].Site < out[j].Site
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Groups returns every group, sorted by id.
func (s *State) Groups() []Group {
	out := make([]Group, 0, len(s.groups))
	for _, g := range s.groups {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Policy returns a policy.
func (s *State) Policy(id string) (Policy, bool) {
	e, ok := s.policies[id]
	if !ok {
		return Policy{}, false
	}
	p := e.Policy
	p.GroupIDs = slices.Clone(p.GroupIDs)
	p.Doors = slices.Clone(p.Doors)
	return p, true
}

// Policies returns every policy, sorted by id.
func (s *State) Policies() []Policy {
	out := make([]Policy, 0, len(s.policies))
	for id := range s.policies {
		p, _ := s.Policy(id)
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Decide decides whether a person may pass a door at an instant (see the
// package doc).
func (s *State) Decide(personID, site, door string, at time.Time) Verdict {
	p, ok := s.people[personID]
	switch {
	case !ok:
		return Verdict{Reason: "unknown person"}
	case p.Disabled:
		return Verdict{Reason: "person is disabled"}
	case !p.ValidFrom.IsZero() && at.Before(p.ValidFrom):
		return Verdict{Reason: "person is not valid yet (valid from " + p.ValidFrom.UTC().Format(time.RFC3339) + ")"}
	case !p.ValidUntil.IsZero() && !at.Before(p.ValidUntil):
		return Verdict{Reason: "person's validity ended (valid until " + p.ValidUntil.UTC().Format(time.RFC3339) + ")"}
	}
	k := DoorKey{site, door}
	if _, ok := s.doors[k]; !ok {
		return Verdict{Reason: "unknown door"}
	}
	groups := s.members[personID]
	var best *policyEntry
	matched := 0
	for _, e := range s.policies {
		if _, ok := e.doors[k]; !ok {
			continue
		}
		in := false
		for g := range e.groups {
			if _, ok := groups[g]; ok {
				in = true
				break
			}
		}
		if !in {
			continue
		}
		matched++
		if !e.sched.Contains(at) {
			continue
		}
		if best == nil || better(e, best) {
			best = e
		}
	}
	switch {
	case best != nil && best.Effect == facegatev1.Effect_EFFECT_ALLOW:
		return Verdict{Allow: true, Rule: best.ID, Reason: fmt.Sprintf("allowed by policy %q (priority %d)", best.ID, best.Priority)}
	case best != nil:
		return Verdict{Rule: best.ID, Reason: fmt.Sprintf("denied by policy %q (priority %d)", best.ID, best.Priority)}
	case matched > 0:
		return Verdict{Reason: "no policy for this person and door applies at this time"}
	default:
		return Verdict{Reason: "no policy allows this person at this door"}
	}
}

// better reports whether a outranks b: higher priority, then DENY over
// ALLOW, then the smaller id (determinism).
func better(a, b *policyEntry) bool {
	if a.Priority != b.Priority {
		return a.Priority > b.Priority
	}
	if a.Effect != b.Effect {
		return a.Effect == facegatev1.Effect_EFFECT_DENY
	}
	return a.ID < b.ID
}
