package events

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// EnrolmentKind is the second token of an enrolment subject,
// facegate.enrolments.<kind>.<key>.
type EnrolmentKind string

// Enrolment kinds. Everything about one person (the person, their photos and
// group memberships) is keyed by the person id, so erasing a person is one
// purge of facegate.enrolments.*.<person id>.
const (
	KindPerson     EnrolmentKind = "person"
	KindPhoto      EnrolmentKind = "photo"
	KindMembership EnrolmentKind = "membership"
	KindGroup      EnrolmentKind = "group"
	KindDoor       EnrolmentKind = "door"
	KindPolicy     EnrolmentKind = "policy"
)

// EnrolmentKinds lists every kind, in a fixed order.
func EnrolmentKinds() []EnrolmentKind {
	return []EnrolmentKind{KindPerson, KindPhoto, KindMembership, KindGroup, KindDoor, KindPolicy}
}

// EnrolmentRoute returns the kind and key an enrolment change is published
// under: the person id for person, photo and membership changes, the group id
// for groups, the site for doors (a site's doors replay together) and the
// policy id for policies. The key is not validated as a subject token here;
// the bus does that when it builds the subject.
func EnrolmentRoute(ch *facegatev1.EnrolmentChange) (EnrolmentKind, string, error) {
	switch c := ch.GetChange().(type) {
	case *facegatev1.EnrolmentChange_PersonUpsert:
		return KindPerson, c.PersonUpsert.GetPersonId(), nil
	case *facegatev1.EnrolmentChange_PersonDelete:
		if c.PersonDelete.GetPersonId() == "" {
			return KindPerson, c.PersonDelete.GetPersonIdSha256(), nil
		}
		return KindPerson, c.PersonDelete.GetPersonId(), nil
	case *facegatev1.EnrolmentChange_PhotoAdd:
		return KindPhoto, c.PhotoAdd.GetPersonId(), nil
	case *facegatev1.EnrolmentChange_PhotoRemove:
		return KindPhoto, c.PhotoRemove.GetPersonId(), nil
	case *facegatev1.EnrolmentChange_GroupMembership:
		return KindMembership, c.GroupMembership.GetPersonId(), nil
	case *facegatev1.EnrolmentChange_GroupUpsert:
		return KindGroup, c.GroupUpsert.GetGroupId(), nil
	case *facegatev1.EnrolmentChange_GroupDelete:
		return KindGroup, c.GroupDelete.GetGroupId(), nil
	case *facegatev1.EnrolmentChange_DoorUpsert:
		return KindDoor, c.DoorUpsert.GetSite(), nil
	case *facegatev1.EnrolmentChange_DoorDelete:
		return KindDoor, c.DoorDelete.GetSite(), nil
	case *facegatev1.EnrolmentChange_PolicyUpsert:
		return KindPolicy, c.PolicyUpsert.GetPolicyId(), nil
	case *facegatev1.EnrolmentChange_PolicyDelete:
		return KindPolicy, c.PolicyDelete.GetPolicyId(), nil
	case nil:
		// Also what a change kind added by a newer schema decodes to here: it
		// sits in the unknown fields, and guessing its route would be wrong.
		return "", "", fmt.Errorf("events: enrolment change %q carries no change this version knows: %w", ch.GetChangeId(), ErrInvalid)
	default:
		// A oneof case added to the schema without a route here.
		return "", "", fmt.Errorf("events: enrolment change %q: unknown change type %T: %w", ch.GetChangeId(), c, ErrInvalid)
	}
}

// PersonHash is the lower-case hex SHA-256 of a person id: what erasure
// tombstones and the audit log keep instead of the id. It is a plain hash,
// not keyed: it links records of one person without storing the id, but an
// id from a small, guessable space (employee numbers) can be recovered by
// trying them all, so ids should be random (the API issues UUIDs).
func PersonHash(personID string) string {
	sum := sha256.Sum256([]byte(personID))
	return hex.EncodeToString(sum[:])
}
