package policy

import (
	"fmt"
	"sort"
)

// Snapshot is the whole state as plain data, for persisting it (pkg/directory
// writes it sealed). Person.Groups and Person.Photos are not used: memberships
// and photos are listed separately because they may exist for a person who
// has no PersonUpsert.
type Snapshot struct {
	People      []Person            `json:"people"`
	Memberships map[string][]string `json:"memberships"`
	Photos      map[string][]Photo  `json:"photos"`
	Groups      []Group             `json:"groups"`
	Doors       []Door              `json:"doors"`
	Policies    []Policy            `json:"policies"`
}

// Export returns the state as a Snapshot (copies, deterministic order).
func (s *State) Export() Snapshot {
	out := Snapshot{Memberships: map[string][]string{}, Photos: map[string][]Photo{},
		Groups: s.Groups(), Doors: s.Doors(), Policies: s.Policies()}
	for _, p := range s.People("") {
		p.Groups, p.Photos = nil, nil
		out.People = append(out.People, p)
	}
	for pid, gs := range s.members {
		for g := range gs {
			out.Memberships[pid] = append(out.Memberships[pid], g)
		}
		sort.Strings(out.Memberships[pid])
	}
	for pid, phs := range s.photos {
		for _, ph := range phs {
			out.Photos[pid] = append(out.Photos[pid], ph)
		}
		l := out.Photos[pid]
		sort.Slice(l, func(i, j int) bool { return l[i].ID+"\x00"+l[i].Space < l[j].ID+"\x00"+l[j].Space })
	}
	return out
}

// FromSnapshot rebuilds a state, validating it as Apply would.
func FromSnapshot(snap Snapshot) (*State, error) {
	s := NewState()
	for _, p := range snap.People {
		if err := checkID("person", p.ID); err != nil {
			return nil, fmt.Errorf("policy: snapshot: %w", err)
		}
		p := p
		p.Groups, p.Photos = nil, nil
		for _, b := range p.BadgeIDs {
			s.badges[b] = p.ID
		}
		s.people[p.ID] = &p
	}
	for pid, gs := range snap.Memberships {
		m := map[string]struct{}{}
		for _, g := range gs {
			m[g] = struct{}{}
		}
		if len(m) > 0 {
			s.members[pid] = m
		}
	}
	for pid, phs := range snap.Photos {
		m := map[photoKey]Photo{}
		for _, ph := range phs {
			m[photoKey{ph.ID, ph.Space}] = ph
		}
		if len(m) > 0 {
			s.photos[pid] = m
		}
	}
	for _, g := range snap.Groups {
		s.groups[g.ID] = g
	}
	for _, d := range snap.Doors {
		k := DoorKey{d.Site, d.ID}
		s.doors[k] = d
		for _, c := range d.Cameras {
			s.cameras[DoorKey{d.Site, c}] = d.ID
		}
	}
	for _, p := range snap.Policies {
		e, err := newPolicyEntry(p)
		if err != nil {
			return nil, fmt.Errorf("policy: snapshot: %w", err)
		}
		s.policies[p.ID] = e
	}
	return s, nil
}
