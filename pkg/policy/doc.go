// Package policy is facegate's access state and access decisions: people,
// badges, groups and memberships, doors with their cameras, and access
// policies, built by applying EnrolmentChanges in stream order. It does no
// I/O; pkg/directory feeds it from the ENROLMENTS stream and the matcher asks
// it for verdicts.
//
// # Decisions
//
// Decide is default deny. A person who is unknown, disabled, or outside
// [valid_from, valid_until) is denied whatever the policies say. Otherwise a
// policy matches when the person is a member of one of its groups, the door
// is listed in its doors, and its schedule contains the instant. Among the
// matching policies the highest priority wins; at equal priority DENY beats
// ALLOW (and among equals the smallest policy id is named, so verdicts are
// deterministic). No matching policy is a deny. The Verdict names the
// deciding policy id in Rule (empty when no policy decided) and why in Reason.
//
// # Schedule syntax
//
// A policy's schedule is
//
//	""                                   always
//	[TZ=<IANA zone> ]<clause>[;<clause>...]
//	<clause> = <days> <HH:MM>-<HH:MM>
//	<days>   = * | <day>[-<day>][,<day>[-<day>]...]      day: Mon Tue Wed Thu Fri Sat Sun
//
// Examples: "Mon-Fri 08:00-18:00", "TZ=Europe/Paris Mon-Fri 07:30-19:00; Sat 09:00-12:00",
// "Mon,Wed,Fri 22:00-06:00", "* 00:00-24:00". Day names are case-insensitive;
// a day range may wrap the week ("Fri-Mon"). Times are two-digit HH:MM, from
// 00:00 to 24:00 (24:00 only as an end). A range is start-inclusive and
// end-exclusive. A range whose end is before its start wraps past midnight:
// "Fri 22:00-06:00" is Friday 22:00 to Saturday 06:00 (the days name the day
// the range starts). An empty range ("08:00-08:00") is rejected. Without TZ=
// the schedule is evaluated in UTC, so it means the same on every machine;
// the zone database is embedded (time/tzdata), so zones work without the
// OS's. Daylight-saving gaps and repeats follow Go's time package: wall-clock
// times are what count.
//
// # Validation
//
// Apply rejects a change it cannot apply sensibly (empty or malformed ids, a
// policy with a bad schedule, no groups, no doors or no effect, a door
// without a mode, valid_from after valid_until, a camera already serving
// another door of the site) with an error wrapping ErrInvalidChange, and
// leaves the state unchanged.
//
// # Erasure
//
// A PersonDelete removes the person, their badges, memberships and photo
// records. An erasure tombstone (person_id empty, person_id_sha256 set)
// removes every person whose events.PersonHash matches; PersonIDsByHash tells
// a caller (the directory) which ids those are before it applies the
// tombstone, so it can erase their templates too.
//
// A State is not safe for concurrent use; pkg/directory guards it.
package policy
