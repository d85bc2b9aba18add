package api

import (
	"net/http"
	"slices"

	"github.com/facegate/facegate/pkg/apiauth"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// GroupResponse, DoorResponse and PolicyResponse echo a stored record.
type GroupResponse struct {
	GroupID     string `json:"group_id"`
	DisplayName string `json:"display_name"`
}

// DoorResponse is a stored door.
type DoorResponse struct {
	Site        string   `json:"site"`
	Door        string   `json:"door"`
	DisplayName string   `json:"display_name"`
	Mode        string   `json:"mode"`
	Cameras     []string `json:"cameras"`
}

// PolicyResponse is a stored policy.
type PolicyResponse struct {
	PolicyID    string    `json:"policy_id"`
	DisplayName string    `json:"display_name"`
	Groups      []string  `json:"groups"`
	Doors       []DoorRef `json:"doors"`
	Schedule    string    `json:"schedule"`
	Effect      string    `json:"effect"`
	Priority    int32     `json:"priority"`
}

func (s *Server) setMembership(c *call, member bool) (int, any, error) {
	p, err := s.lookupPerson(c, apiauth.PermMembership)
	if err != nil {
		return 0, nil, err
	}
	group, err := pathID(c, "group", "group_id")
	if err != nil {
		return 0, nil, err
	}
	c.attr("group", group)
	if slices.Contains(p.Groups, group) != member {
		if err := s.publishAll(c, membershipChange(p.ID, group, member)); err != nil {
			return 0, nil, err
		}
	}
	return http.StatusNoContent, nil, nil
}

func (s *Server) joinGroup(c *call) (int, any, error)  { return s.setMembership(c, true) }
func (s *Server) leaveGroup(c *call) (int, any, error) { return s.setMembership(c, false) }

func (s *Server) putGroup(c *call) (int, any, error) {
	if err := c.principal.Authorize(apiauth.PermGroups, ""); err != nil {
		return 0, nil, forbidden(err)
	}
	id, err := pathID(c, "id", "group_id")
	if err != nil {
		return 0, nil, err
	}
	c.attr("group", id)
	data, err := readJSON(c.r)
	if err != nil {
		return 0, nil, err
	}
	req, err := parseGroupRequest(data)
	if err != nil {
		return 0, nil, err
	}
	ch := &facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_GroupUpsert{GroupUpsert: &facegatev1.GroupUpsert{
		GroupId: id, DisplayName: req.DisplayName}}}
	if err := s.publishAll(c, ch); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, GroupResponse{GroupID: id, DisplayName: req.DisplayName}, nil
}

func (s *Server) deleteGroup(c *call) (int, any, error) {
	if err := c.principal.Authorize(apiauth.PermGroups, ""); err != nil {
		return 0, nil, forbidden(err)
	}
	id, err := pathID(c, "id", "group_id")
	if err != nil {
		return 0, nil, err
	}
	c.attr("group", id)
	ch := &facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_GroupDelete{GroupDelete: &facegatev1.GroupDelete{GroupId: id}}}
	if err := s.publishAll(c, ch); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

func (s *Server) doorPath(c *call) (site, door string, err error) {
	if site, err = pathID(c, "site", "site"); err != nil {
		return "", "", err
	}
	c.site = site
	if err := c.principal.Authorize(apiauth.PermDoors, site); err != nil {
		return "", "", forbidden(err)
	}
	if door, err = pathID(c, "door", "door"); err != nil {
		return "", "", err
	}
	c.attr("door", door)
	return site, door, nil
}

func modeName(m facegatev1.Mode) string {
	if m == facegatev1.Mode_MODE_IDENTIFY {
		return "identify"
	}
	return "verify"
}

func (s *Server) putDoor(c *call) (int, any, error) {
	site, door, err := s.doorPath(c)
	if err != nil {
		return 0, nil, err
	}
	data, err := readJSON(c.r)
	if err != nil {
		return 0, nil, err
	}
	req, mode, err := parseDoorRequest(data)
	if err != nil {
		return 0, nil, err
	}
	ch := &facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_DoorUpsert{DoorUpsert: &facegatev1.DoorUpsert{
		Site: site, Door: door, DisplayName: req.DisplayName, Mode: mode, Cameras: req.Cameras}}}
	if err := s.publishAll(c, ch); err != nil {
		return 0, nil, err
	}
	cams := req.Cameras
	if cams == nil {
		cams = []string{}
	}
	return http.StatusOK, DoorResponse{Site: site, Door: door, DisplayName: req.DisplayName, Mode: modeName(mode), Cameras: cams}, nil
}

func (s *Server) deleteDoor(c *call) (int, any, error) {
	site, door, err := s.doorPath(c)
	if err != nil {
		return 0, nil, err
	}
	ch := &facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_DoorDelete{DoorDelete: &facegatev1.DoorDelete{Site: site, Door: door}}}
	if err := s.publishAll(c, ch); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

func (s *Server) putPolicy(c *call) (int, any, error) {
	if err := c.principal.Authorize(apiauth.PermPolicies, ""); err != nil {
		return 0, nil, forbidden(err)
	}
	id, err := pathID(c, "id", "policy_id")
	if err != nil {
		return 0, nil, err
	}
	c.attr("policy", id)
	data, err := readJSON(c.r)
	if err != nil {
		return 0, nil, err
	}
	req, eff, err := parsePolicyRequest(data)
	if err != nil {
		return 0, nil, err
	}
	u := &facegatev1.PolicyUpsert{PolicyId: id, DisplayName: req.DisplayName, GroupIds: req.Groups,
		Schedule: req.Schedule, Effect: eff, Priority: req.Priority}
	for _, d := range req.Doors {
		u.Doors = append(u.Doors, &facegatev1.DoorRef{Site: d.Site, Door: d.Door})
	}
	if err := s.publishAll(c, &facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_PolicyUpsert{PolicyUpsert: u}}); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, PolicyResponse{PolicyID: id, DisplayName: req.DisplayName, Groups: req.Groups, Doors: req.Doors,
		Schedule: req.Schedule, Effect: *req.Effect, Priority: req.Priority}, nil
}

func (s *Server) deletePolicy(c *call) (int, any, error) {
	if err := c.principal.Authorize(apiauth.PermPolicies, ""); err != nil {
		return 0, nil, forbidden(err)
	}
	id, err := pathID(c, "id", "policy_id")
	if err != nil {
		return 0, nil, err
	}
	c.attr("policy", id)
	ch := &facegatev1.EnrolmentChange{Change: &facegatev1.EnrolmentChange_PolicyDelete{PolicyDelete: &facegatev1.PolicyDelete{PolicyId: id}}}
	if err := s.publishAll(c, ch); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}
