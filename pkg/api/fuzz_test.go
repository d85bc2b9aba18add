package api

import (
	"errors"

	"testing"
	"time"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/policy"
)

// checkRejection: a refused body is a 4xx *httpError, never a panic or a
// 500.
func checkRejection(t *testing.T, err error) {
	t.Helper()
	var he *httpError
	if !errors.As(err, &he) || he.status < 400 || he.status >= 500 || he.msg == "" {
		t.Fatalf("rejection %v is not a 4xx with a message", err)
	}
}

func FuzzParsePersonRequest(f *testing.F) {
	f.Add([]byte(`{"person_id":"p-1","display_name":"Ada","badge_ids":["b1"],"site":"hq","groups":["g"],"disabled":false,"valid_from":"2026-01-01T00:00:00Z","valid_until":"2027-01-01T00:00:00Z"}`), uint8(0))
	f.Add([]byte(`{"display_name":5}`), uint8(1))
	f.Add([]byte(`{"site":""}`), uint8(2))
	f.Add([]byte(`{} {}`), uint8(0))
	f.Add([]byte(`[`), uint8(2))
	cur := policy.Person{ID: "cur", DisplayName: "Current", Site: "hq", BadgeIDs: []string{"b0"}, Groups: []string{"g0"}}
	f.Fuzz(func(t *testing.T, data []byte, m uint8) {
		mode := personMode(m % 3)
		base := policy.Person{}
		if mode != modeCreate {
			base = cur
		}
		p, err := parsePersonRequest(data, mode, base)
		if err != nil {
			checkRejection(t, err)
			return
		}
		// Accepted: everything that becomes a subject token or a record is valid.
		if p.DisplayName == "" || len(p.DisplayName) > maxNameLen {
			t.Fatalf("display name %q accepted", p.DisplayName)
		}
		if p.ID != "" && bus.ValidateToken("id", p.ID) != nil {
			t.Fatalf("person id %q accepted", p.ID)
		}
		if mode != modeCreate && p.ID != cur.ID {
			t.Fatalf("update changed the id to %q", p.ID)
		}
		if p.Site != "" && bus.ValidateToken("site", p.Site) != nil {
			t.Fatalf("site %q accepted", p.Site)
		}
		for _, l := range [][]string{p.BadgeIDs, p.Groups} {
			for _, v := range l {
				if bus.ValidateToken("x", v) != nil {
					t.Fatalf("token %q accepted", v)
				}
			}
		}
		if !p.ValidFrom.IsZero() && !p.ValidUntil.IsZero() && !p.ValidFrom.Before(p.ValidUntil) {
			t.Fatalf("validity %v..%v accepted", p.ValidFrom, p.ValidUntil)
		}
		for _, tm := range []time.Time{p.ValidFrom, p.ValidUntil} {
			if !tm.IsZero() && tm.Location() != time.UTC {
				t.Fatalf("time %v not in UTC", tm)
			}
		}
	})
}

func FuzzParseDoorRequest(f *testing.F) {
	f.Add([]byte(`{"display_name":"Main","mode":"identify","cameras":["c1","c2"]}`))
	f.Add([]byte(`{"mode":"verify"}`))
	f.Add([]byte(`{"mode":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, mode, err := parseDoorRequest(data)
		if err != nil {
			checkRejection(t, err)
			return
		}
		if mode != 1 && mode != 2 {
			t.Fatalf("mode %v accepted", mode)
		}
		for _, c := range req.Cameras {
			if bus.ValidateToken("camera", c) != nil {
				t.Fatalf("camera %q accepted", c)
			}
		}
	})
}

func FuzzParsePolicyRequest(f *testing.F) {
	f.Add([]byte(`{"groups":["g"],"doors":[{"site":"hq","door":"d"}],"effect":"allow","priority":3,"schedule":""}`))
	f.Add([]byte(`{"groups":["g"],"doors":[{"site":"hq","door":"d"}],"effect":"deny","schedule":"mon-fri 08:00-18:00"}`))
	f.Add([]byte(`{"groups":[],"doors":[],"effect":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, eff, err := parsePolicyRequest(data)
		if err != nil {
			checkRejection(t, err)
			return
		}
		if eff != 1 && eff != 2 {
			t.Fatalf("effect %v accepted", eff)
		}
		if len(req.Groups) == 0 || len(req.Doors) == 0 {
			t.Fatalf("policy without groups or doors accepted: %+v", req)
		}
		for _, d := range req.Doors {
			if bus.ValidateToken("site", d.Site) != nil || bus.ValidateToken("door", d.Door) != nil {
				t.Fatalf("door %+v accepted", d)
			}
		}
	})
}

func FuzzParseGroupRequest(f *testing.F) {
	f.Add([]byte(`{"display_name":"Staff"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := parseGroupRequest(data)
		if err != nil {
			checkRejection(t, err)
			return
		}
		if len(req.DisplayName) > maxNameLen {
			t.Fatalf("name of %d bytes accepted", len(req.DisplayName))
		}
	})
}
