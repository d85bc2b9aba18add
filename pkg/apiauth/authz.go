package apiauth

import "fmt"

// Permission is an operation a route performs.
type Permission string

// Permissions. The role matrix is in Allows.
const (
	// PermPeopleRead: list and get people's metadata (no biometric data).
	PermPeopleRead Permission = "people:read"
	// PermPeopleWrite: create, update and erase people.
	PermPeopleWrite Permission = "people:write"
	// PermPhotos: add and remove enrolment photos (biometric data).
	PermPhotos Permission = "photos:write"
	// PermMembership: add people to groups and remove them.
	PermMembership Permission = "membership:write"
	// PermGroups: create and delete groups (they span sites).
	PermGroups Permission = "groups:write"
	// PermDoors: create and delete a site's doors.
	PermDoors Permission = "doors:write"
	// PermPolicies: create and delete access policies (they span sites).
	PermPolicies Permission = "policies:write"
	// PermMatch: verify and identify faces.
	PermMatch Permission = "match"
	// PermBiometricRead: see enrolment photo metadata of a person.
	PermBiometricRead Permission = "biometric:read"
)

// Allows reports whether role may perform perm at all (sites aside).
func Allows(role Role, perm Permission) bool {
	switch role {
	case RoleAdmin:
		return true
	case RoleOperator:
		switch perm {
		case PermPeopleRead, PermPeopleWrite, PermPhotos, PermMembership, PermDoors, PermMatch, PermBiometricRead:
			return true
		}
	case RoleAuditor:
		return perm == PermPeopleRead
	}
	return false
}

// Authorize checks that p may perform perm on site. It returns an error
// wrapping ErrForbidden that says why (the role or the site), which is
// safe to show the caller: it names only their own role and the site they
// asked for.
func (p Principal) Authorize(perm Permission, site string) error {
	if !Allows(p.Role, perm) {
		return fmt.Errorf("role %s may not %s: %w", p.Role, perm, ErrForbidden)
	}
	if !p.HasSite(site) {
		if site == "" {
			return fmt.Errorf("only admins manage records of no site: %w", ErrForbidden)
		}
		return fmt.Errorf("principal %q has no access to site %q: %w", p.Name, site, ErrForbidden)
	}
	return nil
}

// AuthorizeAny checks that p may perform perm on some site (for routes whose
// site is decided later, e.g. a listing filtered to the caller's sites).
func (p Principal) AuthorizeAny(perm Permission) error {
	if !Allows(p.Role, perm) {
		return fmt.Errorf("role %s may not %s: %w", p.Role, perm, ErrForbidden)
	}
	return nil
}
