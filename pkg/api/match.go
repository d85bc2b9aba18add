package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/facegate/facegate/pkg/apiauth"
	"github.com/facegate/facegate/pkg/index"
)

// VerifyResponse is the body of POST /v1/verify.
type VerifyResponse struct {
	PersonID  string  `json:"person_id"`
	Match     bool    `json:"match"`
	Distance  float64 `json:"distance"`
	Threshold float64 `json:"threshold"`
}

// IdentifyResponse is the body of POST /v1/identify. PersonID is set only
// on a match; Distance is the nearest enrolled face's distance, absent when
// the gallery (of the searched site) is empty.
type IdentifyResponse struct {
	PersonID  string   `json:"person_id,omitempty"`
	Match     bool     `json:"match"`
	Distance  *float64 `json:"distance,omitempty"`
	Threshold float64  `json:"threshold"`
}

// probe reads the single photo of a verify/identify request and returns
// its face's encoding.
func (s *Server) probe(c *call, fm *form) ([]float32, error) {
	if len(fm.files) != 1 {
		return nil, errorf(http.StatusBadRequest, "photo: exactly one file, got %d", len(fm.files))
	}
	f, err := s.analyzeOne(c, fm.files[0])
	if err != nil {
		return nil, err
	}
	return f.Encoding, nil
}

func (s *Server) collection() (string, error) {
	coll, err := s.cfg.Directory.Collection(s.cfg.Engine.Space())
	if err != nil {
		return "", fmt.Errorf("api: collection of space %q: %w", s.cfg.Engine.Space(), err)
	}
	return coll, nil
}

func (s *Server) verify(c *call) (int, any, error) {
	if err := c.principal.AuthorizeAny(apiauth.PermMatch); err != nil {
		return 0, nil, forbidden(err)
	}
	fm, err := readForm(c.r, "photo", 1, "person_id")
	if err != nil {
		return 0, nil, err
	}
	id, ok := fm.fields["person_id"]
	if !ok {
		return 0, nil, errorf(http.StatusBadRequest, "person_id: required")
	}
	if err := checkToken("person_id", id); err != nil {
		return 0, nil, err
	}
	c.subject = id
	p, ok := s.cfg.Directory.Person(id)
	if !ok {
		return 0, nil, errorf(http.StatusNotFound, "person_id: no such person")
	}
	c.site = p.Site
	if err := c.principal.Authorize(apiauth.PermMatch, p.Site); err != nil {
		return 0, nil, forbidden(err)
	}
	enc, err := s.probe(c, fm)
	if err != nil {
		return 0, nil, err
	}
	coll, err := s.collection()
	if err != nil {
		return 0, nil, err
	}
	hit, err := s.cfg.Directory.Index().SearchPerson(c.ctx, coll, id, enc)
	if errors.Is(err, index.ErrNotFound) {
		return 0, nil, errorf(http.StatusUnprocessableEntity, "person_id: the person has no enrolled photo in space %s", s.cfg.Engine.Space())
	}
	if err != nil {
		return 0, nil, fmt.Errorf("api: verify: %w", err)
	}
	d := float64(hit.Distance)
	resp := VerifyResponse{PersonID: id, Match: d < s.cfg.Threshold, Distance: d, Threshold: s.cfg.Threshold}
	c.attr("match", strconv.FormatBool(resp.Match))
	c.attr("distance", strconv.FormatFloat(d, 'g', 6, 64))
	c.attr("threshold", strconv.FormatFloat(s.cfg.Threshold, 'g', 6, 64))
	return http.StatusOK, resp, nil
}

func (s *Server) identify(c *call) (int, any, error) {
	if err := c.principal.AuthorizeAny(apiauth.PermMatch); err != nil {
		return 0, nil, forbidden(err)
	}
	fm, err := readForm(c.r, "photo", 1, "site")
	if err != nil {
		return 0, nil, err
	}
	site, given := fm.fields["site"]
	switch {
	case given:
		if err := checkToken("site", site); err != nil {
			return 0, nil, err
		}
	case c.principal.AllSites():
		// The whole gallery.
	case len(c.principal.Sites) == 1:
		site = c.principal.Sites[0]
	default:
		return 0, nil, errorf(http.StatusBadRequest, "site: required for a principal limited to several sites")
	}
	c.site = site
	if site != "" {
		if err := c.principal.Authorize(apiauth.PermMatch, site); err != nil {
			return 0, nil, forbidden(err)
		}
	}
	enc, err := s.probe(c, fm)
	if err != nil {
		return 0, nil, err
	}
	coll, err := s.collection()
	if err != nil {
		return 0, nil, err
	}
	res, err := s.cfg.Directory.Index().Search(c.ctx, coll, enc, index.SearchOptions{K: 16, Site: site})
	if err != nil {
		return 0, nil, fmt.Errorf("api: identify: %w", err)
	}
	resp := IdentifyResponse{Threshold: s.cfg.Threshold}
	if len(res.Persons) > 0 {
		best := res.Persons[0]
		d := float64(best.Distance)
		resp.Distance = &d
		if d < s.cfg.Threshold {
			resp.Match, resp.PersonID = true, best.Person
			c.subject = best.Person
		}
		c.attr("distance", strconv.FormatFloat(d, 'g', 6, 64))
	}
	c.attr("match", strconv.FormatBool(resp.Match))
	c.attr("threshold", strconv.FormatFloat(s.cfg.Threshold, 'g', 6, 64))
	return http.StatusOK, resp, nil
}
