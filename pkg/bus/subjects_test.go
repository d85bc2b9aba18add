package bus_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/events"
)

func TestSubjectBuilders(t *testing.T) {
	cases := []struct {
		name       string
		build      func() (string, error)
		want       string
		wantStream string
	}{
		{"frames", func() (string, error) { return bus.FramesSubject("hq", "lobby-1") }, "facegate.frames.hq.lobby-1", bus.StreamFrames},
		{"faces", func() (string, error) { return bus.FacesSubject("hq", "lobby-1") }, "facegate.faces.hq.lobby-1", bus.StreamFaces},
		{"claims", func() (string, error) { return bus.ClaimsSubject("hq", "door_2") }, "facegate.claims.hq.door_2", bus.StreamClaims},
		{"decisions", func() (string, error) { return bus.DecisionsSubject("hq", "door_2") }, "facegate.decisions.hq.door_2", bus.StreamDecisions},
		{"enrolments", func() (string, error) { return bus.EnrolmentsSubject(events.KindPhoto, "p-0042") }, "facegate.enrolments.photo.p-0042", bus.StreamEnrolments},
		{"errors", func() (string, error) { return bus.ErrorsSubject("embedder") }, "facegate.errors.embedder", bus.StreamErrors},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.build()
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			if got != c.want {
				t.Fatalf("subject = %q, want %q", got, c.want)
			}
			stream, err := bus.StreamOf(got)
			if err != nil {
				t.Fatalf("StreamOf(%q): %v", got, err)
			}
			if stream != c.wantStream {
				t.Fatalf("StreamOf(%q) = %s, want %s", got, stream, c.wantStream)
			}
		})
	}
}

func TestTokenValidation(t *testing.T) {
	bad := []struct {
		tok, reason string
	}{
		{"", "empty"},
		{"a.b", "'.'"},
		{"*", "wildcard"},
		{">", "wildcard"},
		{"lobby*", "wildcard"},
		{" ", "whitespace"},
		{"lobby 1", "whitespace"},
		{"lobby\t1", "whitespace"},
		{"lobby\n", "whitespace"},
		{"caméra", "not a letter, digit"},
		{"a/b", "not a letter, digit"},
		{"$SYS", "not a letter, digit"},
		{"bad\xffutf8", "invalid UTF-8"},
		{strings.Repeat("x", bus.MaxTokenLen+1), "longer than"},
	}
	for _, b := range bad {
		// Every builder must refuse the token in every position.
		builders := map[string]func() (string, error){
			"frames site":      func() (string, error) { return bus.FramesSubject(b.tok, "cam") },
			"frames camera":    func() (string, error) { return bus.FramesSubject("hq", b.tok) },
			"faces camera":     func() (string, error) { return bus.FacesSubject("hq", b.tok) },
			"claims door":      func() (string, error) { return bus.ClaimsSubject("hq", b.tok) },
			"decisions site":   func() (string, error) { return bus.DecisionsSubject(b.tok, "door") },
			"enrolment key":    func() (string, error) { return bus.EnrolmentsSubject(events.KindPerson, b.tok) },
			"errors service":   func() (string, error) { return bus.ErrorsSubject(b.tok) },
			"site filter":      func() (string, error) { return bus.SiteFilter(bus.KindFrames, b.tok) },
			"erasure filter":   func() (string, error) { return bus.ErasureFilter(b.tok) },
			"decisions door":   func() (string, error) { return bus.DecisionsSubject("hq", b.tok) },
			"claims site":      func() (string, error) { return bus.ClaimsSubject(b.tok, "door") },
			"faces site":       func() (string, error) { return bus.FacesSubject(b.tok, "cam") },
			"enrolment person": func() (string, error) { return bus.EnrolmentsSubject(events.KindMembership, b.tok) },
		}
		if b.tok == "" {
			// An empty site means "every site" in SiteFilter.
			delete(builders, "site filter")
		}
		for where, build := range builders {
			got, err := build()
			if err == nil {
				t.Errorf("%s %q: built %q, want an error", where, b.tok, got)
				continue
			}
			if !errors.Is(err, bus.ErrInvalidToken) {
				t.Errorf("%s %q: error %v does not wrap ErrInvalidToken", where, b.tok, err)
			}
			var te *bus.TokenError
			if !errors.As(err, &te) || te.Value != b.tok {
				t.Errorf("%s %q: error %v is not a *TokenError for the token", where, b.tok, err)
			}
			if !strings.Contains(err.Error(), b.reason) {
				t.Errorf("%s %q: error %q does not say %q", where, b.tok, err, b.reason)
			}
		}
	}

	good := []string{"a", "hq", "Lobby-1", "door_2", "0", strings.Repeat("x", bus.MaxTokenLen), "550e8400-e29b-41d4-a716-446655440000"}
	for _, tok := range good {
		if err := bus.ValidateToken("site", tok); err != nil {
			t.Errorf("ValidateToken(%q) = %v, want nil", tok, err)
		}
	}
}

func TestTokenErrorNamesField(t *testing.T) {
	_, err := bus.FramesSubject("hq", "a.b")
	if err == nil || !strings.Contains(err.Error(), "camera") {
		t.Fatalf("error %v does not name the camera token", err)
	}
	_, err = bus.ClaimsSubject("hq", "")
	if err == nil || !strings.Contains(err.Error(), "door") {
		t.Fatalf("error %v does not name the door token", err)
	}
}

func TestEnrolmentUnknownKind(t *testing.T) {
	if s, err := bus.EnrolmentsSubject("people", "p1"); err == nil {
		t.Fatalf("unknown kind built %q", s)
	}
}

func TestKindOfRejects(t *testing.T) {
	for _, s := range []string{
		"", "facegate", "other.frames.hq.cam", "facegate.videos.hq.cam",
		"facegate.frames.hq", "facegate.frames.hq.cam.extra", "facegate.frames.*.cam",
		"facegate.frames.>", "facegate.errors.a.b", "facegate.frames.hq..cam",
		"facegate.enrolments.people.p1",
	} {
		if k, err := bus.KindOf(s); err == nil {
			t.Errorf("KindOf(%q) = %q, want an error", s, k)
		} else if !errors.Is(err, bus.ErrInvalidSubject) && !errors.Is(err, bus.ErrInvalidToken) {
			t.Errorf("KindOf(%q): error %v wraps neither ErrInvalidSubject nor ErrInvalidToken", s, err)
		}
	}
}

func TestFilters(t *testing.T) {
	got, err := bus.SiteFilter(bus.KindDecisions, "hq")
	if err != nil || got != "facegate.decisions.hq.*" {
		t.Fatalf("SiteFilter(decisions, hq) = %q, %v", got, err)
	}
	got, err = bus.SiteFilter(bus.KindFrames, "")
	if err != nil || got != "facegate.frames.*.*" {
		t.Fatalf("SiteFilter(frames, \"\") = %q, %v", got, err)
	}
	if got, err := bus.SiteFilter(bus.KindEnrolments, "hq"); err == nil {
		t.Fatalf("SiteFilter(enrolments) = %q, want an error", got)
	}
	got, err = bus.ErasureFilter("p-0042")
	if err != nil || got != "facegate.enrolments.*.p-0042" {
		t.Fatalf("ErasureFilter = %q, %v", got, err)
	}
}
