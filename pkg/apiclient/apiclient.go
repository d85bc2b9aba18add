// Package apiclient is a small Go client for facegate's enrolment and access
// API (api/openapi.yaml): what the demo, the end-to-end tests and scripts
// written in Go use instead of hand-built HTTP requests.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"

	"github.com/facegate/facegate/pkg/api"
)

// Client talks to one API server with one bearer token.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// New returns a client for the API at base (e.g. "http://127.0.0.1:8080").
// hc nil means http.DefaultClient.
func New(base, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(base, "/"), token: strings.TrimSpace(token), http: hc}
}

// Error is a non-2xx answer: the status and the server's message.
type Error struct {
	Method, Path string
	Status       int
	Message      string
}

func (e *Error) Error() string {
	return fmt.Sprintf("apiclient: %s %s: HTTP %d: %s", e.Method, e.Path, e.Status, e.Message)
}

func (c *Client) do(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("apiclient: %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("apiclient: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("apiclient: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return &Error{Method: method, Path: path, Status: resp.StatusCode, Message: msg}
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("apiclient: %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("apiclient: %s %s: %w", method, path, err)
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	return c.do(ctx, method, path, ct, body, out)
}

// Person is what CreatePerson sends.
type Person struct {
	PersonID    string   `json:"person_id,omitempty"`
	DisplayName string   `json:"display_name,omitempty"`
	Site        string   `json:"site,omitempty"`
	BadgeIDs    []string `json:"badge_ids,omitempty"`
	Groups      []string `json:"groups,omitempty"`
}

// CreatePerson is POST /v1/people.
func (c *Client) CreatePerson(ctx context.Context, p Person) (api.PersonResponse, error) {
	var out api.PersonResponse
	return out, c.doJSON(ctx, http.MethodPost, "/v1/people", p, &out)
}

// GetPerson is GET /v1/people/{id}.
func (c *Client) GetPerson(ctx context.Context, id string) (api.PersonResponse, error) {
	var out api.PersonResponse
	return out, c.doJSON(ctx, http.MethodGet, "/v1/people/"+url.PathEscape(id), nil, &out)
}

// DeletePerson is DELETE /v1/people/{id}: erasure everywhere.
func (c *Client) DeletePerson(ctx context.Context, id string) error {
	return c.doJSON(ctx, http.MethodDelete, "/v1/people/"+url.PathEscape(id), nil, nil)
}

// Photo is one file to upload.
type Photo struct {
	Name string
	Data []byte
}

// AddPhotos is POST /v1/people/{id}/photos with every photo in one
// multipart request.
func (c *Client) AddPhotos(ctx context.Context, id string, photos ...Photo) (api.PhotosResponse, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range photos {
		w, err := mw.CreateFormFile("photo", p.Name)
		if err != nil {
			return api.PhotosResponse{}, err
		}
		if _, err := w.Write(p.Data); err != nil {
			return api.PhotosResponse{}, err
		}
	}
	if err := mw.Close(); err != nil {
		return api.PhotosResponse{}, err
	}
	var out api.PhotosResponse
	return out, c.do(ctx, http.MethodPost, "/v1/people/"+url.PathEscape(id)+"/photos", mw.FormDataContentType(), &buf, &out)
}

// PutGroup is PUT /v1/groups/{id}.
func (c *Client) PutGroup(ctx context.Context, id, displayName string) error {
	return c.doJSON(ctx, http.MethodPut, "/v1/groups/"+url.PathEscape(id), map[string]string{"display_name": displayName}, nil)
}

// JoinGroup is PUT /v1/people/{id}/groups/{group}.
func (c *Client) JoinGroup(ctx context.Context, person, group string) error {
	return c.doJSON(ctx, http.MethodPut, "/v1/people/"+url.PathEscape(person)+"/groups/"+url.PathEscape(group), nil, nil)
}

// Door is what PutDoor sends; Mode is "identify" or "verify".
type Door struct {
	DisplayName string   `json:"display_name"`
	Mode        string   `json:"mode"`
	Cameras     []string `json:"cameras"`
}

// PutDoor is PUT /v1/sites/{site}/doors/{door}.
func (c *Client) PutDoor(ctx context.Context, site, door string, d Door) error {
	return c.doJSON(ctx, http.MethodPut, "/v1/sites/"+url.PathEscape(site)+"/doors/"+url.PathEscape(door), d, nil)
}

// Policy is what PutPolicy sends; Effect is "allow" or "deny".
type Policy struct {
	DisplayName string        `json:"display_name"`
	Groups      []string      `json:"groups"`
	Doors       []api.DoorRef `json:"doors"`
	Schedule    string        `json:"schedule"`
	Effect      string        `json:"effect"`
	Priority    int32         `json:"priority"`
}

// PutPolicy is PUT /v1/policies/{id}.
func (c *Client) PutPolicy(ctx context.Context, id string, p Policy) error {
	return c.doJSON(ctx, http.MethodPut, "/v1/policies/"+url.PathEscape(id), p, nil)
}
