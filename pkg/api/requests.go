package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/policy"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// Bounds on request fields.
const (
	maxNameLen  = 200
	maxBadges   = 32
	maxGroups   = 64
	maxCameras  = 64
	maxDoorRefs = 256
	maxSchedule = 1024
)

// readJSON reads a JSON request body of at most MaxJSONBody bytes.
func readJSON(r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return nil, errorf(http.StatusUnsupportedMediaType, "Content-Type %q: want application/json", ct)
		}
	}
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, MaxJSONBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errorf(http.StatusRequestEntityTooLarge, "body: larger than %d bytes", MaxJSONBody)
		}
		return nil, errorf(http.StatusBadRequest, "body: %v", err)
	}
	return b, nil
}

// decodeStrict decodes exactly one JSON object into v, refusing unknown
// fields and trailing data, with errors that name the field.
func decodeStrict(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return errorf(http.StatusBadRequest, "body: empty, want a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return errorf(http.StatusBadRequest, "body: invalid JSON at byte %d: %v", se.Offset, se)
		case errors.As(err, &te):
			if te.Field == "" {
				return errorf(http.StatusBadRequest, "body: want a JSON object, got %s", te.Value)
			}
			return errorf(http.StatusBadRequest, "%s: want %s, got %s", te.Field, jsonType(te.Type.Kind().String()), te.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return errorf(http.StatusBadRequest, "%s: unknown field", strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`))
		case errors.Is(err, io.ErrUnexpectedEOF):
			return errorf(http.StatusBadRequest, "body: truncated JSON")
		}
		return errorf(http.StatusBadRequest, "body: %v", err)
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "body: data after the JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errorf(http.StatusBadRequest, "body: data after the JSON object")
	}
	return nil
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice", "array":
		return "an array"
	case "struct", "map", "ptr":
		return "an object"
	case "int", "int32", "int64", "uint", "uint32", "uint64", "float32", "float64":
		return "a number"
	}
	return kind
}

func badField(field, format string, args ...any) error {
	return errorf(http.StatusBadRequest, "%s: %s", field, fmt.Sprintf(format, args...))
}

// checkToken checks an id with the bus's subject-token rules (ids become
// subject tokens, file names and label values).
func checkToken(field, v string) error {
	if err := bus.ValidateToken(field, v); err != nil {
		var te *bus.TokenError
		if errors.As(err, &te) {
			return badField(field, "%s", te.Reason)
		}
		return badField(field, "%v", err)
	}
	return nil
}

func checkName(field, v string, required bool) error {
	switch {
	case v == "" && required:
		return badField(field, "required")
	case len(v) > maxNameLen:
		return badField(field, "longer than %d bytes", maxNameLen)
	case !utf8.ValidString(v):
		return badField(field, "not valid UTF-8")
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return badField(field, "contains a control character")
		}
	}
	return nil
}

func checkTokens(field string, vs []string, maxN int) error {
	if len(vs) > maxN {
		return badField(field, "more than %d entries", maxN)
	}
	seen := map[string]bool{}
	for i, v := range vs {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := checkToken(f, v); err != nil {
			return err
		}
		if seen[v] {
			return badField(f, "%q appears twice", v)
		}
		seen[v] = true
	}
	return nil
}

func parseTime(field string, v *string) (time.Time, error) {
	if v == nil || *v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, *v)
	if err != nil {
		return time.Time{}, badField(field, "want an RFC 3339 time such as 2026-01-02T15:04:05Z")
	}
	if t.Year() < 1970 || t.Year() > 9999 {
		return time.Time{}, badField(field, "year %d outside 1970..9999", t.Year())
	}
	return t.UTC(), nil
}

// PersonRequest is the body of POST /v1/people (create), PUT (replace) and
// PATCH (partial update) of /v1/people/{id}. Pointers tell absent from
// empty.
type PersonRequest struct {
	PersonID    *string   `json:"person_id,omitempty"`
	DisplayName *string   `json:"display_name,omitempty"`
	BadgeIDs    *[]string `json:"badge_ids,omitempty"`
	Site        *string   `json:"site,omitempty"`
	Groups      *[]string `json:"groups,omitempty"`
	Disabled    *bool     `json:"disabled,omitempty"`
	ValidFrom   *string   `json:"valid_from,omitempty"`
	ValidUntil  *string   `json:"valid_until,omitempty"`
}

type personMode int

const (
	modeCreate personMode = iota
	modeReplace
	modePatch
)

// personFields is a validated person request applied onto the current
// state of the person.
type personFields struct {
	ID, DisplayName, Site string
	BadgeIDs, Groups      []string
	Disabled              bool
	ValidFrom, ValidUntil time.Time
}

// parsePersonRequest decodes and validates a person body. For a patch,
// cur is the person as stored and absent fields keep its values.
func parsePersonRequest(data []byte, mode personMode, cur policy.Person) (personFields, error) {
	var req PersonRequest
	if err := decodeStrict(data, &req); err != nil {
		return personFields{}, err
	}
	f := personFields{ID: cur.ID, DisplayName: cur.DisplayName, Site: cur.Site, BadgeIDs: cur.BadgeIDs,
		Groups: cur.Groups, Disabled: cur.Disabled, ValidFrom: cur.ValidFrom, ValidUntil: cur.ValidUntil}
	if mode != modePatch {
		f = personFields{ID: cur.ID}
		if req.DisplayName == nil {
			return f, badField("display_name", "required")
		}
	} else if req == (PersonRequest{}) {
		return f, badField("body", "no field to change")
	}
	if req.PersonID != nil {
		switch mode {
		case modeCreate:
			if err := checkToken("person_id", *req.PersonID); err != nil {
				return f, err
			}
			f.ID = *req.PersonID
		default:
			if *req.PersonID != cur.ID {
				return f, badField("person_id", "cannot be changed (it is the id in the path)")
			}
		}
	}
	if req.DisplayName != nil {
		if err := checkName("display_name", *req.DisplayName, true); err != nil {
			return f, err
		}
		f.DisplayName = *req.DisplayName
	}
	if req.BadgeIDs != nil {
		if err := checkTokens("badge_ids", *req.BadgeIDs, maxBadges); err != nil {
			return f, err
		}
		f.BadgeIDs = slices.Clone(*req.BadgeIDs)
	}
	if req.Site != nil {
		if *req.Site != "" {
			if err := checkToken("site", *req.Site); err != nil {
				return f, err
			}
		}
		f.Site = *req.Site
	}
	if req.Groups != nil {
		if err := checkTokens("groups", *req.Groups, maxGroups); err != nil {
			return f, err
		}
		f.Groups = slices.Clone(*req.Groups)
	}
	if req.Disabled != nil {
		f.Disabled = *req.Disabled
	}
	var err error
	if req.ValidFrom != nil {
		if f.ValidFrom, err = parseTime("valid_from", req.ValidFrom); err != nil {
			return f, err
		}
	}
	if req.ValidUntil != nil {
		if f.ValidUntil, err = parseTime("valid_until", req.ValidUntil); err != nil {
			return f, err
		}
	}
	if !f.ValidFrom.IsZero() && !f.ValidUntil.IsZero() && !f.ValidFrom.Before(f.ValidUntil) {
		return f, badField("valid_until", "must be after valid_from")
	}
	return f, nil
}

// GroupRequest is the body of PUT /v1/groups/{id}.
type GroupRequest struct {
	DisplayName string `json:"display_name"`
}

func parseGroupRequest(data []byte) (GroupRequest, error) {
	var req GroupRequest
	if err := decodeStrict(data, &req); err != nil {
		return req, err
	}
	return req, checkName("display_name", req.DisplayName, false)
}

// DoorRequest is the body of PUT /v1/sites/{site}/doors/{door}.
type DoorRequest struct {
	DisplayName string   `json:"display_name"`
	Mode        *string  `json:"mode"`
	Cameras     []string `json:"cameras"`
}

func parseMode(field string, v *string) (facegatev1.Mode, error) {
	if v == nil {
		return 0, badField(field, "required (verify or identify)")
	}
	switch *v {
	case "verify":
		return facegatev1.Mode_MODE_VERIFY, nil
	case "identify":
		return facegatev1.Mode_MODE_IDENTIFY, nil
	}
	return 0, badField(field, "%q is not verify or identify", *v)
}

func parseDoorRequest(data []byte) (DoorRequest, facegatev1.Mode, error) {
	var req DoorRequest
	if err := decodeStrict(data, &req); err != nil {
		return req, 0, err
	}
	if err := checkName("display_name", req.DisplayName, false); err != nil {
		return req, 0, err
	}
	mode, err := parseMode("mode", req.Mode)
	if err != nil {
		return req, 0, err
	}
	if err := checkTokens("cameras", req.Cameras, maxCameras); err != nil {
		return req, 0, err
	}
	return req, mode, nil
}

// DoorRef names a door in a policy.
type DoorRef struct {
	Site string `json:"site"`
	Door string `json:"door"`
}

// PolicyRequest is the body of PUT /v1/policies/{id}.
type PolicyRequest struct {
	DisplayName string    `json:"display_name"`
	Groups      []string  `json:"groups"`
	Doors       []DoorRef `json:"doors"`
	Schedule    string    `json:"schedule"`
	Effect      *string   `json:"effect"`
	Priority    int32     `json:"priority"`
}

func parsePolicyRequest(data []byte) (PolicyRequest, facegatev1.Effect, error) {
	var req PolicyRequest
	if err := decodeStrict(data, &req); err != nil {
		return req, 0, err
	}
	if err := checkName("display_name", req.DisplayName, false); err != nil {
		return req, 0, err
	}
	if len(req.Groups) == 0 {
		return req, 0, badField("groups", "required: at least one group")
	}
	if err := checkTokens("groups", req.Groups, maxGroups); err != nil {
		return req, 0, err
	}
	if len(req.Doors) == 0 {
		return req, 0, badField("doors", "required: at least one door")
	}
	if len(req.Doors) > maxDoorRefs {
		return req, 0, badField("doors", "more than %d entries", maxDoorRefs)
	}
	seen := map[DoorRef]bool{}
	for i, d := range req.Doors {
		if err := checkToken(fmt.Sprintf("doors[%d].site", i), d.Site); err != nil {
			return req, 0, err
		}
		if err := checkToken(fmt.Sprintf("doors[%d].door", i), d.Door); err != nil {
			return req, 0, err
		}
		if seen[d] {
			return req, 0, badField(fmt.Sprintf("doors[%d]", i), "appears twice")
		}
		seen[d] = true
	}
	if len(req.Schedule) > maxSchedule {
		return req, 0, badField("schedule", "longer than %d bytes", maxSchedule)
	}
	if req.Schedule != "" {
		if _, err := policy.ParseSchedule(req.Schedule); err != nil {
			return req, 0, badField("schedule", "%v", err)
		}
	}
	if req.Effect == nil {
		return req, 0, badField("effect", "required (allow or deny)")
	}
	var eff facegatev1.Effect
	switch *req.Effect {
	case "allow":
		eff = facegatev1.Effect_EFFECT_ALLOW
	case "deny":
		eff = facegatev1.Effect_EFFECT_DENY
	default:
		return req, 0, badField("effect", "%q is not allow or deny", *req.Effect)
	}
	return req, eff, nil
}
