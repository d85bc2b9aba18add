package api

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/apiauth"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/policy"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// PersonResponse is a person as the API returns them.
type PersonResponse struct {
	PersonID    string      `json:"person_id"`
	DisplayName string      `json:"display_name"`
	Site        string      `json:"site"`
	BadgeIDs    []string    `json:"badge_ids"`
	Groups      []string    `json:"groups"`
	Disabled    bool        `json:"disabled"`
	ValidFrom   *time.Time  `json:"valid_from,omitempty"`
	ValidUntil  *time.Time  `json:"valid_until,omitempty"`
	Photos      []PhotoInfo `json:"photos,omitempty"`
}

// PhotoInfo is an enrolment photo's metadata (no image, no template).
type PhotoInfo struct {
	PhotoID        string `json:"photo_id"`
	ContentSHA256  string `json:"content_sha256"`
	MediaType      string `json:"media_type"`
	EmbeddingSpace string `json:"embedding_space"`
}

// PeopleResponse is the body of GET /v1/people.
type PeopleResponse struct {
	People []PersonResponse `json:"people"`
}

func personResponse(p policy.Person, withPhotos bool) PersonResponse {
	out := PersonResponse{PersonID: p.ID, DisplayName: p.DisplayName, Site: p.Site, Disabled: p.Disabled,
		BadgeIDs: p.BadgeIDs, Groups: p.Groups}
	if out.BadgeIDs == nil {
		out.BadgeIDs = []string{}
	}
	if out.Groups == nil {
		out.Groups = []string{}
	}
	if !p.ValidFrom.IsZero() {
		t := p.ValidFrom.UTC()
		out.ValidFrom = &t
	}
	if !p.ValidUntil.IsZero() {
		t := p.ValidUntil.UTC()
		out.ValidUntil = &t
	}
	if withPhotos {
		for _, ph := range p.Photos {
			out.Photos = append(out.Photos, PhotoInfo{PhotoID: ph.ID, ContentSHA256: ph.ContentSHA256,
				MediaType: ph.MediaType, EmbeddingSpace: ph.Space})
		}
	}
	return out
}

// pathID reads and checks a path segment.
func pathID(c *call, name, field string) (string, error) {
	v := c.r.PathValue(name)
	if err := checkToken(field, v); err != nil {
		return "", err
	}
	return v, nil
}

// lookupPerson finds the person named in the path and checks that the
// caller may perform perm on their site.
func (s *Server) lookupPerson(c *call, perm apiauth.Permission) (policy.Person, error) {
	id, err := pathID(c, "id", "person_id")
	if err != nil {
		return policy.Person{}, err
	}
	c.subject = id
	p, ok := s.cfg.Directory.Person(id)
	if !ok {
		// Authorisation first: whether an id exists is itself information.
		if err := c.principal.AuthorizeAny(perm); err != nil {
			return p, forbidden(err)
		}
		return p, errorf(http.StatusNotFound, "person_id: no such person")
	}
	c.site = p.Site
	if err := c.principal.Authorize(perm, p.Site); err != nil {
		return p, forbidden(err)
	}
	return p, nil
}

func upsertChange(f personFields) *facegatev1.EnrolmentChange {
	u := &facegatev1.PersonUpsert{PersonId: f.ID, DisplayName: f.DisplayName, BadgeIds: slices.Clone(f.BadgeIDs),
		Disabled: f.Disabled, Site: f.Site}
	if !f.ValidFrom.IsZero() {
		u.ValidFrom = timestamppb.New(f.ValidFrom)
	}
	if !f.ValidUntil.IsZero() {
		u.ValidUntil = timestamppb.New(f.ValidUntil)
	}
	return &facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_PersonUpsert{PersonUpsert: u}}
}

func membershipChange(person, group string, member bool) *facegatev1.EnrolmentChange {
	return &facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_GroupMembership{
		GroupMembership: &facegatev1.GroupMembership{PersonId: person, GroupId: group, Member: member}}}
}

// membershipChanges turns the wanted group list into join/leave changes.
func membershipChanges(person string, have, want []string) []*facegatev1.EnrolmentChange {
	var out []*facegatev1.EnrolmentChange
	for _, g := range want {
		if !slices.Contains(have, g) {
			out = append(out, membershipChange(person, g, true))
		}
	}
	for _, g := range have {
		if !slices.Contains(want, g) {
			out = append(out, membershipChange(person, g, false))
		}
	}
	return out
}

// checkBadges refuses badges that belong to someone else: the state would
// move them silently, which is never what an operator typing a badge id
// wants.
func (s *Server) checkBadges(f personFields) error {
	var err error
	s.cfg.Directory.View(func(st *policy.State) {
		for i, b := range f.BadgeIDs {
			if other, ok := st.PersonByBadge(b); ok && other.ID != f.ID {
				err = errorf(http.StatusConflict, "badge_ids[%d]: badge %q belongs to another person", i, b)
				return
			}
		}
	})
	return err
}

func (s *Server) respondPerson(c *call, status int, id string) (int, any, error) {
	p, ok := s.cfg.Directory.Person(id)
	if !ok {
		return 0, nil, errors.New("api: person missing from the directory after the write was applied")
	}
	return status, personResponse(p, apiauth.Allows(c.principal.Role, apiauth.PermBiometricRead)), nil
}

func (s *Server) createPerson(c *call) (int, any, error) {
	data, err := readJSON(c.r)
	if err != nil {
		return 0, nil, err
	}
	f, err := parsePersonRequest(data, modeCreate, policy.Person{})
	if err != nil {
		return 0, nil, err
	}
	if f.ID == "" {
		f.ID = uuid.NewString()
	}
	c.site, c.subject = f.Site, f.ID
	if err := c.principal.Authorize(apiauth.PermPeopleWrite, f.Site); err != nil {
		return 0, nil, forbidden(err)
	}
	if _, exists := s.cfg.Directory.Person(f.ID); exists {
		return 0, nil, errorf(http.StatusConflict, "person_id: a person with this id exists")
	}
	if err := s.checkBadges(f); err != nil {
		return 0, nil, err
	}
	seq, err := s.publish(c, upsertChange(f), true)
	if errors.Is(err, errExists) {
		return 0, nil, errorf(http.StatusConflict, "person_id: a person with this id exists")
	}
	if err != nil {
		return 0, nil, err
	}
	if groups := membershipChanges(f.ID, nil, f.Groups); len(groups) > 0 {
		if err := s.publishAll(c, groups...); err != nil {
			return 0, nil, err
		}
	} else if err := s.waitApplied(c, seq); err != nil {
		return 0, nil, err
	}
	c.w.Header().Set("Location", "/v1/people/"+f.ID)
	return s.respondPerson(c, http.StatusCreated, f.ID)
}

func (s *Server) listPeople(c *call) (int, any, error) {
	site := c.r.URL.Query().Get("site")
	var people []policy.Person
	if site != "" {
		if err := checkToken("site", site); err != nil {
			return 0, nil, err
		}
		c.site = site
		if err := c.principal.Authorize(apiauth.PermPeopleRead, site); err != nil {
			return 0, nil, forbidden(err)
		}
		people = s.cfg.Directory.People(site)
	} else {
		if err := c.principal.AuthorizeAny(apiauth.PermPeopleRead); err != nil {
			return 0, nil, forbidden(err)
		}
		for _, p := range s.cfg.Directory.People("") {
			if c.principal.HasSite(p.Site) {
				people = append(people, p)
			}
		}
	}
	withPhotos := apiauth.Allows(c.principal.Role, apiauth.PermBiometricRead)
	out := PeopleResponse{People: make([]PersonResponse, 0, len(people))}
	for _, p := range people {
		out.People = append(out.People, personResponse(p, withPhotos))
	}
	c.attr("count", strconv.Itoa(len(out.People)))
	return http.StatusOK, out, nil
}

func (s *Server) getPerson(c *call) (int, any, error) {
	p, err := s.lookupPerson(c, apiauth.PermPeopleRead)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, personResponse(p, apiauth.Allows(c.principal.Role, apiauth.PermBiometricRead)), nil
}

func (s *Server) putPerson(c *call) (int, any, error)   { return s.updatePerson(c, modeReplace) }
func (s *Server) patchPerson(c *call) (int, any, error) { return s.updatePerson(c, modePatch) }

func (s *Server) updatePerson(c *call, mode personMode) (int, any, error) {
	cur, err := s.lookupPerson(c, apiauth.PermPeopleWrite)
	if err != nil {
		return 0, nil, err
	}
	data, err := readJSON(c.r)
	if err != nil {
		return 0, nil, err
	}
	f, err := parsePersonRequest(data, mode, cur)
	if err != nil {
		return 0, nil, err
	}
	if f.Site != cur.Site {
		// Moving a person needs rights on both sites.
		c.attr("new_site", f.Site)
		if err := c.principal.Authorize(apiauth.PermPeopleWrite, f.Site); err != nil {
			return 0, nil, forbidden(err)
		}
	}
	if err := s.checkBadges(f); err != nil {
		return 0, nil, err
	}
	changes := append([]*facegatev1.EnrolmentChange{upsertChange(f)}, membershipChanges(f.ID, cur.Groups, f.Groups)...)
	if err := s.publishAll(c, changes...); err != nil {
		return 0, nil, err
	}
	return s.respondPerson(c, http.StatusOK, f.ID)
}

// erasePerson is DELETE /v1/people/{id}: the erasure the system contract
// defines, in this order:
//
//  1. publish a tombstone PersonDelete naming the person only by
//     events.PersonHash, and wait until the directory has applied it (the
//     person leaves the access state and every index collection, so no
//     new decision names them);
//  2. purge every enrolment change keyed by the id (bus.PurgePerson);
//  3. delete their retained photos (photo store);
//  4. delete the decisions naming them, and the camera frames and face
//     events those decisions were made from (bus.ErasePersonEvents, secure
//     delete);
//  5. the audit record (published by the middleware) carries only the hash.
//
// Every step is idempotent, so a failed erasure is retried by repeating the
// DELETE; a person the directory no longer knows is erased again (only by
// an admin, since their site is unknown) and the answer is still 204.
func (s *Server) erasePerson(c *call) (int, any, error) {
	id, err := pathID(c, "id", "person_id")
	if err != nil {
		return 0, nil, err
	}
	c.subject = id
	if p, ok := s.cfg.Directory.Person(id); ok {
		c.site = p.Site
	}
	if err := c.principal.Authorize(apiauth.PermPeopleWrite, c.site); err != nil {
		return 0, nil, forbidden(err)
	}
	tomb := &facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_PersonDelete{
		PersonDelete: &facegatev1.PersonDelete{PersonIdSha256: events.PersonHash(id)}}}
	seq, err := s.publish(c, tomb, false)
	if err != nil {
		return 0, nil, err
	}
	if err := s.waitApplied(c, seq); err != nil {
		return 0, nil, err
	}
	if err := bus.PurgePerson(c.ctx, s.cfg.JetStream, id, 0); err != nil {
		return 0, nil, err
	}
	if err := s.cfg.Photos.DeletePerson(c.ctx, id); err != nil {
		return 0, nil, err
	}
	n, err := bus.ErasePersonEvents(c.ctx, s.cfg.JetStream, id)
	if err != nil {
		return 0, nil, err
	}
	c.attr("decisions_erased", strconv.Itoa(n.Decisions))
	c.attr("frames_erased", strconv.Itoa(n.Frames))
	c.attr("face_events_erased", strconv.Itoa(n.Faces))
	return http.StatusNoContent, nil, nil
}
