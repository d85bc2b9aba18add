package policy

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/events"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

func personUpsert(id string, badges ...string) *fv1.EnrolmentChange {
	return &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PersonUpsert{PersonUpsert: &fv1.PersonUpsert{
		PersonId: id, DisplayName: "P " + id, BadgeIds: badges, Site: "hq"}}}
}

func member(p, g string, in bool) *fv1.EnrolmentChange {
	return &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_GroupMembership{GroupMembership: &fv1.GroupMembership{PersonId: p, GroupId: g, Member: in}}}
}

func door(site, id string, mode fv1.Mode, cams ...string) *fv1.EnrolmentChange {
	return &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_DoorUpsert{DoorUpsert: &fv1.DoorUpsert{Site: site, Door: id, Mode: mode, Cameras: cams}}}
}

func pol(id string, groups []string, doors []string, sched string, eff fv1.Effect, prio int32) *fv1.EnrolmentChange {
	var refs []*fv1.DoorRef
	for _, d := range doors {
		refs = append(refs, &fv1.DoorRef{Site: "hq", Door: d})
	}
	return &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PolicyUpsert{PolicyUpsert: &fv1.PolicyUpsert{
		PolicyId: id, GroupIds: groups, Doors: refs, Schedule: sched, Effect: eff, Priority: prio}}}
}

func photo(p, id, space string) *fv1.EnrolmentChange {
	return &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PhotoAdd{PhotoAdd: &fv1.PhotoAdd{PersonId: p, PhotoId: id, EmbeddingSpace: space, ContentSha256: "ab"}}}
}

func mustApply(t *testing.T, s *State, chs ...*fv1.EnrolmentChange) {
	t.Helper()
	for _, ch := range chs {
		if err := s.Apply(ch); err != nil {
			t.Fatalf("Apply(%v): %v", ch, err)
		}
	}
}

const (
	allow = fv1.Effect_EFFECT_ALLOW
	deny  = fv1.Effect_EFFECT_DENY
)

func fixture(t *testing.T) *State {
	s := NewState()
	mustApply(t, s,
		personUpsert("alice", "B1"), personUpsert("bob", "B2"), personUpsert("carol"),
		&fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_GroupUpsert{GroupUpsert: &fv1.GroupUpsert{GroupId: "staff"}}},
		member("alice", "staff", true), member("bob", "staff", true), member("bob", "contractors", true),
		member("carol", "staff", true),
		door("hq", "front", fv1.Mode_MODE_IDENTIFY, "cam1", "cam2"),
		door("hq", "lab", fv1.Mode_MODE_VERIFY, "cam3"),
		pol("staff-front", []string{"staff"}, []string{"front"}, "", allow, 0),
		pol("staff-lab-hours", []string{"staff"}, []string{"lab"}, "Mon-Fri 08:00-18:00", allow, 0),
		pol("no-contractors-lab", []string{"contractors"}, []string{"lab"}, "", deny, 0),
		// carol: an equal-priority DENY and ALLOW at the front door -> DENY
		member("carol", "blocked", true),
		pol("blocked-front", []string{"blocked"}, []string{"front"}, "", deny, 0),
		// a higher-priority ALLOW beats a lower DENY
		member("alice", "vip", true), member("alice", "blocked-lab", true),
		pol("blocked-lab", []string{"blocked-lab"}, []string{"lab"}, "", deny, 1),
		pol("vip-lab", []string{"vip"}, []string{"lab"}, "", allow, 5),
	)
	return s
}

func TestDecide(t *testing.T) {
	s := fixture(t)
	mon10 := at(t, "2026-11-23T10:00:00Z")
	sat10 := at(t, "2026-11-28T10:00:00Z")
	cases := []struct {
		person, door string
		at           time.Time
		allow        bool
		rule         string
	}{
		{"alice", "front", mon10, true, "staff-front"},
		{"bob", "front", sat10, true, "staff-front"},
		{"bob", "lab", mon10, false, "no-contractors-lab"}, // DENY beats ALLOW at equal priority
		{"carol", "front", mon10, false, "blocked-front"},
		{"carol", "lab", mon10, true, "staff-lab-hours"},
		{"carol", "lab", sat10, false, ""}, // outside the schedule: default deny
		{"alice", "lab", sat10, true, "vip-lab"},
		{"dave", "front", mon10, false, ""}, // unknown person
		{"alice", "back", mon10, false, ""}, // unknown door
	}
	for _, c := range cases {
		v := s.Decide(c.person, "hq", c.door, c.at)
		if v.Allow != c.allow || v.Rule != c.rule || v.Reason == "" {
			t.Errorf("Decide(%s, %s, %s) = %+v, want allow=%v rule=%q", c.person, c.door, c.at, v, c.allow, c.rule)
		}
	}
	// Disabled and validity.
	mustApply(t, s, &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PersonUpsert{PersonUpsert: &fv1.PersonUpsert{
		PersonId: "alice", Disabled: true}}})
	if v := s.Decide("alice", "hq", "front", mon10); v.Allow || v.Reason != "person is disabled" {
		t.Errorf("disabled: %+v", v)
	}
	mustApply(t, s, &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PersonUpsert{PersonUpsert: &fv1.PersonUpsert{
		PersonId: "alice", ValidFrom: timestamppb.New(mon10), ValidUntil: timestamppb.New(sat10)}}})
	for _, c := range []struct {
		at    time.Time
		allow bool
	}{{mon10.Add(-time.Second), false}, {mon10, true}, {sat10.Add(-time.Second), true}, {sat10, false}} {
		if v := s.Decide("alice", "hq", "front", c.at); v.Allow != c.allow {
			t.Errorf("validity at %s: %+v, want allow=%v", c.at, v, c.allow)
		}
	}
}

func TestApplyRejectsAndLeavesStateUnchanged(t *testing.T) {
	s := fixture(t)
	before := s.Export()
	bad := []*fv1.EnrolmentChange{
		nil,
		{},
		personUpsert(""),
		personUpsert("has space"),
		{Change: &fv1.EnrolmentChange_PersonUpsert{PersonUpsert: &fv1.PersonUpsert{PersonId: "x",
			ValidFrom: timestamppb.New(time.Unix(200, 0)), ValidUntil: timestamppb.New(time.Unix(100, 0))}}},
		pol("p1", []string{"staff"}, []string{"front"}, "Mon 25:00-26:00", allow, 0),
		pol("staff-front", []string{"staff"}, []string{"front"}, "nonsense", allow, 0), // replacing a good one
		pol("p2", []string{"staff"}, []string{"front"}, "", fv1.Effect_EFFECT_UNSPECIFIED, 0),
		pol("p3", nil, []string{"front"}, "", allow, 0),
		pol("p4", []string{"staff"}, nil, "", allow, 0),
		door("hq", "side", fv1.Mode_MODE_UNSPECIFIED, "cam9"),
		door("hq", "side", fv1.Mode_MODE_IDENTIFY, "cam1"), // cam1 serves front
		photo("alice", "ph1", ""),
		{Change: &fv1.EnrolmentChange_PersonDelete{PersonDelete: &fv1.PersonDelete{}}},
		{Change: &fv1.EnrolmentChange_PersonDelete{PersonDelete: &fv1.PersonDelete{PersonId: "alice", PersonIdSha256: events.PersonHash("bob")}}},
	}
	for i, ch := range bad {
		if err := s.Apply(ch); !errors.Is(err, ErrInvalidChange) {
			t.Errorf("change %d: err = %v, want ErrInvalidChange", i, err)
		}
	}
	if !reflect.DeepEqual(before, s.Export()) {
		t.Fatal("rejected changes modified the state")
	}
	if p, _ := s.Policy("staff-front"); p.Schedule != "" {
		t.Fatalf("policy replaced by a rejected upsert: %+v", p)
	}
}

func TestDoorsCamerasBadges(t *testing.T) {
	s := fixture(t)
	if d, ok := s.DoorForCamera("hq", "cam2"); !ok || d.ID != "front" || d.Mode != fv1.Mode_MODE_IDENTIFY {
		t.Fatalf("cam2: %+v %v", d, ok)
	}
	if _, ok := s.DoorForCamera("other", "cam2"); ok {
		t.Fatal("camera of another site mapped")
	}
	// Replacing a door drops cameras it no longer lists.
	mustApply(t, s, door("hq", "front", fv1.Mode_MODE_IDENTIFY, "cam1"))
	if _, ok := s.DoorForCamera("hq", "cam2"); ok {
		t.Fatal("cam2 still mapped after the door dropped it")
	}
	mustApply(t, s, door("hq", "side", fv1.Mode_MODE_IDENTIFY, "cam2"))
	if d, _ := s.DoorForCamera("hq", "cam2"); d.ID != "side" {
		t.Fatalf("cam2 -> %q", d.ID)
	}
	mustApply(t, s, &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_DoorDelete{DoorDelete: &fv1.DoorDelete{Site: "hq", Door: "side"}}})
	if _, ok := s.DoorForCamera("hq", "cam2"); ok {
		t.Fatal("cam2 mapped after its door was deleted")
	}
	if p, ok := s.PersonByBadge("B2"); !ok || p.ID != "bob" {
		t.Fatalf("B2: %+v", p)
	}
	// A badge re-issued to another person moves.
	mustApply(t, s, personUpsert("carol", "B2"))
	if p, _ := s.PersonByBadge("B2"); p.ID != "carol" {
		t.Fatalf("B2 -> %q", p.ID)
	}
	if p, _ := s.Person("bob"); len(p.BadgeIDs) != 0 {
		t.Fatalf("bob still lists %v", p.BadgeIDs)
	}
	// Group delete removes memberships.
	mustApply(t, s, &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_GroupDelete{GroupDelete: &fv1.GroupDelete{GroupId: "staff"}}})
	if v := s.Decide("alice", "hq", "front", time.Now()); v.Allow {
		t.Fatalf("allowed after group delete: %+v", v)
	}
	// Policy delete.
	mustApply(t, s, &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PolicyDelete{PolicyDelete: &fv1.PolicyDelete{PolicyId: "vip-lab"}}})
	if _, ok := s.Policy("vip-lab"); ok {
		t.Fatal("policy still there")
	}
}

func TestPhotosAndErasure(t *testing.T) {
	s := fixture(t)
	mustApply(t, s, photo("alice", "ph1", "dlib"), photo("alice", "ph1", "arc"), photo("alice", "ph2", "dlib"),
		photo("ghost", "ph9", "dlib"), member("ghost", "staff", true))
	p, _ := s.Person("alice")
	if len(p.Photos) != 3 || p.Photos[0].ID != "ph1" || p.Photos[0].Space != "arc" {
		t.Fatalf("photos: %+v", p.Photos)
	}
	if !reflect.DeepEqual(p.Groups, []string{"blocked-lab", "staff", "vip"}) {
		t.Fatalf("groups: %v", p.Groups)
	}
	mustApply(t, s, &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PhotoRemove{PhotoRemove: &fv1.PhotoRemove{PersonId: "alice", PhotoId: "ph1"}}})
	if p, _ := s.Person("alice"); len(p.Photos) != 1 || p.Photos[0].ID != "ph2" {
		t.Fatalf("after remove: %+v", p.Photos)
	}
	// A tombstone finds the person by hash, also one with only a photo and a membership.
	if ids := s.PersonIDsByHash(events.PersonHash("ghost")); !reflect.DeepEqual(ids, []string{"ghost"}) {
		t.Fatalf("ghost ids: %v", ids)
	}
	for _, id := range []string{"alice", "ghost"} {
		mustApply(t, s, &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PersonDelete{PersonDelete: &fv1.PersonDelete{PersonIdSha256: events.PersonHash(id)}}})
		if ids := s.PersonIDsByHash(events.PersonHash(id)); len(ids) != 0 {
			t.Fatalf("%s still known after the tombstone: %v", id, ids)
		}
	}
	if _, ok := s.Person("alice"); ok {
		t.Fatal("alice survives the tombstone")
	}
	if _, ok := s.PersonByBadge("B1"); ok {
		t.Fatal("alice's badge survives")
	}
	// Ordinary delete by id.
	mustApply(t, s, &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PersonDelete{PersonDelete: &fv1.PersonDelete{PersonId: "bob"}}})
	if got := s.People(""); len(got) != 1 || got[0].ID != "carol" {
		t.Fatalf("people: %+v", got)
	}
	if got := s.People("elsewhere"); len(got) != 0 {
		t.Fatalf("people of another site: %+v", got)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	s := fixture(t)
	mustApply(t, s, photo("alice", "ph1", "dlib"))
	s2, err := FromSnapshot(s.Export())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.Export(), s2.Export()) {
		t.Fatal("snapshot round trip differs")
	}
	mon10 := at(t, "2026-11-23T10:00:00Z")
	for _, p := range []string{"alice", "bob", "carol"} {
		for _, d := range []string{"front", "lab"} {
			if a, b := s.Decide(p, "hq", d, mon10), s2.Decide(p, "hq", d, mon10); a != b {
				t.Errorf("%s/%s: %+v vs %+v", p, d, a, b)
			}
		}
	}
	if d, ok := s2.DoorForCamera("hq", "cam3"); !ok || d.ID != "lab" {
		t.Fatal("camera map lost in the snapshot")
	}
	if p, ok := s2.PersonByBadge("B1"); !ok || p.ID != "alice" {
		t.Fatal("badge map lost in the snapshot")
	}
}
