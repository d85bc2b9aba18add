package api

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// TestBadInput: every malformed request gets its status and an error that
// names the field.
func TestBadInput(t *testing.T) {
	e := newEnv(t, generous())
	createPerson(t, e, tokAdmin, "p1", "P", "hq")
	big := `{"display_name":"` + strings.Repeat("x", MaxJSONBody) + `"}`
	cases := []struct {
		name, method, path, ct, body string
		want                         int
		mention                      string
	}{
		{"wrong type", "POST", "/v1/people", "application/json", `{"display_name":5}`, 400, "display_name"},
		{"wrong type array", "POST", "/v1/people", "application/json", `{"display_name":"a","badge_ids":"b1"}`, 400, "badge_ids"},
		{"unknown field", "POST", "/v1/people", "application/json", `{"display_name":"a","nmae":1}`, 400, "nmae"},
		{"missing field", "POST", "/v1/people", "application/json", `{"site":"hq"}`, 400, "display_name"},
		{"empty name", "POST", "/v1/people", "application/json", `{"display_name":""}`, 400, "display_name"},
		{"control char", "POST", "/v1/people", "application/json", `{"display_name":"a\u0007b"}`, 400, "display_name"},
		{"invalid person id", "POST", "/v1/people", "application/json", `{"person_id":"a.b","display_name":"x"}`, 400, "person_id"},
		{"wildcard person id", "POST", "/v1/people", "application/json", `{"person_id":"a>","display_name":"x"}`, 400, "person_id"},
		{"long person id", "POST", "/v1/people", "application/json", `{"person_id":"` + strings.Repeat("a", 65) + `","display_name":"x"}`, 400, "person_id"},
		{"bad badge", "POST", "/v1/people", "application/json", `{"display_name":"x","badge_ids":["a b"]}`, 400, "badge_ids[0]"},
		{"duplicate badge", "POST", "/v1/people", "application/json", `{"display_name":"x","badge_ids":["a","a"]}`, 400, "badge_ids[1]"},
		{"bad site", "POST", "/v1/people", "application/json", `{"display_name":"x","site":"h/q"}`, 400, "site"},
		{"bad time", "POST", "/v1/people", "application/json", `{"display_name":"x","valid_from":"yesterday"}`, 400, "valid_from"},
		{"until before from", "POST", "/v1/people", "application/json", `{"display_name":"x","valid_from":"2026-02-01T00:00:00Z","valid_until":"2026-01-01T00:00:00Z"}`, 400, "valid_until"},
		{"trailing data", "POST", "/v1/people", "application/json", `{"display_name":"x"} {}`, 400, "body"},
		{"not json", "POST", "/v1/people", "application/json", `hello`, 400, "body"},
		{"array body", "POST", "/v1/people", "application/json", `[]`, 400, "body"},
		{"empty body", "POST", "/v1/people", "application/json", ``, 400, "body"},
		{"truncated", "POST", "/v1/people", "application/json", `{"display_name":`, 400, "body"},
		{"oversized", "POST", "/v1/people", "application/json", big, 413, "body"},
		{"content type", "POST", "/v1/people", "text/plain", `{"display_name":"x"}`, 415, "Content-Type"},
		{"patch nothing", "PATCH", "/v1/people/p1", "application/json", `{}`, 400, "body"},
		{"patch other id", "PATCH", "/v1/people/p1", "application/json", `{"person_id":"p2"}`, 400, "person_id"},
		{"path id", "GET", "/v1/people/a%2Ab", "", ``, 400, "person_id"},
		{"list site", "GET", "/v1/people?site=a.b", "", ``, 400, "site"},
		{"unknown person", "GET", "/v1/people/nobody", "", ``, 404, "person_id"},
		{"door mode missing", "PUT", "/v1/sites/hq/doors/d1", "application/json", `{"display_name":"D"}`, 400, "mode"},
		{"door mode bad", "PUT", "/v1/sites/hq/doors/d1", "application/json", `{"mode":"open"}`, 400, "mode"},
		{"door camera", "PUT", "/v1/sites/hq/doors/d1", "application/json", `{"mode":"verify","cameras":["c 1"]}`, 400, "cameras[0]"},
		{"door site path", "PUT", "/v1/sites/h%2Eq/doors/d1", "application/json", `{"mode":"verify"}`, 400, "site"},
		{"policy effect missing", "PUT", "/v1/policies/p", "application/json", `{"groups":["g"],"doors":[{"site":"hq","door":"d"}]}`, 400, "effect"},
		{"policy effect bad", "PUT", "/v1/policies/p", "application/json", `{"groups":["g"],"doors":[{"site":"hq","door":"d"}],"effect":"maybe"}`, 400, "effect"},
		{"policy no groups", "PUT", "/v1/policies/p", "application/json", `{"groups":[],"doors":[{"site":"hq","door":"d"}],"effect":"allow"}`, 400, "groups"},
		{"policy door", "PUT", "/v1/policies/p", "application/json", `{"groups":["g"],"doors":[{"site":"hq"}],"effect":"allow"}`, 400, "doors[0].door"},
		{"policy schedule", "PUT", "/v1/policies/p", "application/json", `{"groups":["g"],"doors":[{"site":"hq","door":"d"}],"effect":"allow","schedule":"whenever"}`, 400, "schedule"},
		{"policy priority type", "PUT", "/v1/policies/p", "application/json", `{"groups":["g"],"doors":[{"site":"hq","door":"d"}],"effect":"allow","priority":"high"}`, 400, "priority"},
		{"policy priority range", "PUT", "/v1/policies/p", "application/json", `{"groups":["g"],"doors":[{"site":"hq","door":"d"}],"effect":"allow","priority":99999999999}`, 400, "priority"},
		{"group name type", "PUT", "/v1/groups/g", "application/json", `{"display_name":["x"]}`, 400, "display_name"},
		{"photos not multipart", "POST", "/v1/people/p1/photos", "application/json", `{}`, 415, "Content-Type"},
		{"unknown route", "GET", "/v1/nothing", "", ``, 404, "route"},
	}
	for _, c := range cases {
		var body *strings.Reader
		body = strings.NewReader(c.body)
		r := e.do(t, tokAdmin, c.method, c.path, c.ct, body)
		if r.status != c.want {
			t.Errorf("%s: status %d, want %d (%s)", c.name, r.status, c.want, r.body)
			continue
		}
		if msg := r.errorText(t); !strings.Contains(msg, c.mention) {
			t.Errorf("%s: error %q does not mention %q", c.name, msg, c.mention)
		}
	}

	// Multipart uploads.
	png := crop(t, "amy", 1)
	uploads := []struct {
		name    string
		parts   []part
		want    int
		mention string
	}{
		{"no file", []part{{field: "note", data: []byte("x")}}, 400, "note"},
		{"no parts", nil, 400, "photo"},
		{"empty file", []part{{field: "photo", name: "a.png"}}, 400, "photo[0]"},
		{"too many files", func() []part {
			var ps []part
			for i := 0; i < MaxPhotos+1; i++ {
				ps = append(ps, part{field: "photo", name: "x.png", data: png.data})
			}
			return ps
		}(), 413, "photo"},
		{"file too large", []part{{field: "photo", name: "big.png", data: append(bytes.Clone(png.data), make([]byte, MaxPhotoSize)...)}}, 413, "photo[0]"},
		{"not an image", []part{{field: "photo", name: "a.txt", data: []byte("just some text, not an image")}}, 422, "photo[0]"},
		{"corrupt png", []part{{field: "photo", name: "bad.png", data: png.data[:200]}}, 422, "photo[0]"},
	}
	for _, c := range uploads {
		r := e.upload(t, tokAdmin, "/v1/people/p1/photos", c.parts...)
		if r.status != c.want {
			t.Errorf("upload %s: status %d, want %d (%s)", c.name, r.status, c.want, r.body)
			continue
		}
		if msg := r.errorText(t); !strings.Contains(msg, c.mention) {
			t.Errorf("upload %s: error %q does not mention %q", c.name, msg, c.mention)
		}
	}
	// verify without person_id, identify with a bad site.
	r := e.upload(t, tokAdmin, "/v1/verify", png)
	if r.status != http.StatusBadRequest || !strings.Contains(r.errorText(t), "person_id") {
		t.Errorf("verify without person_id: %d %s", r.status, r.body)
	}
	r = e.upload(t, tokAdmin, "/v1/identify", png, part{field: "site", data: []byte("a.b")})
	if r.status != http.StatusBadRequest || !strings.Contains(r.errorText(t), "site") {
		t.Errorf("identify with a bad site: %d %s", r.status, r.body)
	}
	if p, _ := e.dir.Person("p1"); len(p.Photos) != 0 {
		t.Fatalf("bad uploads stored %d photos", len(p.Photos))
	}
}
