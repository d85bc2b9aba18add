package policy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	// Embedded zone database: schedules name IANA zones and must evaluate the
	// same in a distroless container without /usr/share/zoneinfo.
	_ "time/tzdata"
)

// ErrInvalidSchedule is wrapped by every schedule parse error.
var ErrInvalidSchedule = errors.New("invalid schedule")

// MaxScheduleLen bounds a schedule's text; a policy is a handful of clauses.
const MaxScheduleLen = 1024

// Schedule is a parsed schedule (see the package doc for the syntax). The
// zero value and the result of ParseSchedule("") contain every instant.
type Schedule struct {
	src     string
	loc     *time.Location
	clauses []clause
}

// clause is one "<days> <HH:MM>-<HH:MM>": the days on which the range starts,
// and the range in minutes of the day. end <= start never happens for a
// same-day range: when end < start the range wraps past midnight into the
// next day.
type clause struct {
	days       [7]bool // indexed by time.Weekday
	start, end int     // minutes, 0..1440
}

var dayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// ParseSchedule parses a schedule. "" (or only spaces) means always.
func ParseSchedule(s string) (*Schedule, error) {
	if len(s) > MaxScheduleLen {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidSchedule, len(s), MaxScheduleLen)
	}
	sch := &Schedule{src: s, loc: time.UTC}
	rest := strings.TrimSpace(s)
	if rest == "" {
		return sch, nil
	}
	if strings.HasPrefix(rest, "TZ=") {
		name, after, _ := strings.Cut(rest[len("TZ="):], " ")
		if name == "" {
			return nil, fmt.Errorf("%w: empty TZ= zone", ErrInvalidSchedule)
		}
		// LoadLocation also accepts "Local" and file paths relative to
		// ZONEINFO; a schedule must mean the same everywhere, so only
		// IANA-looking names and UTC are allowed.
		if name == "Local" || strings.Contains(name, "..") || strings.HasPrefix(name, "/") {
			return nil, fmt.Errorf("%w: zone %q is not an IANA zone name", ErrInvalidSchedule, name)
		}
		loc, err := time.LoadLocation(name)
		if err != nil {
			return nil, fmt.Errorf("%w: zone %q: %v", ErrInvalidSchedule, name, err)
		}
		sch.loc = loc
		rest = strings.TrimSpace(after)
		if rest == "" {
			return nil, fmt.Errorf("%w: TZ=%s is followed by no clause", ErrInvalidSchedule, name)
		}
	}
	for i, raw := range strings.Split(rest, ";") {
		c, err := parseClause(strings.TrimSpace(raw))
		if err != nil {
			return nil, fmt.Errorf("%w: clause %d %q: %v", ErrInvalidSchedule, i+1, strings.TrimSpace(raw), err)
		}
		sch.clauses = append(sch.clauses, c)
	}
	return sch, nil
}

func parseClause(s string) (clause, error) {
	var c clause
	f := strings.Fields(s)
	if len(f) != 2 {
		return c, errors.New(`want "<days> <HH:MM>-<HH:MM>"`)
	}
	if err := parseDays(f[0], &c.days); err != nil {
		return c, err
	}
	a, b, ok := strings.Cut(f[1], "-")
	if !ok {
		return c, fmt.Errorf("time range %q has no '-'", f[1])
	}
	var err error
	if c.start, err = parseHHMM(a); err != nil {
		return c, err
	}
	if c.end, err = parseHHMM(b); err != nil {
		return c, err
	}
	if c.start == 1440 {
		return c, errors.New("a range cannot start at 24:00")
	}
	if c.start == c.end {
		return c, fmt.Errorf("empty range %s (use 00:00-24:00 for a whole day)", f[1])
	}
	return c, nil
}

// parseDays parses "*", "Mon", "Mon-Fri", "Mon,Wed,Fri" and mixtures such as
// "Mon-Wed,Sat". A day range may wrap the week ("Fri-Mon").
func parseDays(s string, days *[7]bool) error {
	if s == "*" {
		for i := range days {
			days[i] = true
		}
		return nil
	}
	for _, part := range strings.Split(s, ",") {
		a, b, isRange := strings.Cut(part, "-")
		da, ok := dayNames[strings.ToLower(a)]
		if !ok {
			return fmt.Errorf("unknown day %q (Mon..Sun or *)", a)
		}
		if !isRange {
			days[da] = true
			continue
		}
		db, ok := dayNames[strings.ToLower(b)]
		if !ok {
			return fmt.Errorf("unknown day %q (Mon..Sun or *)", b)
		}
		for d := da; ; d = (d + 1) % 7 {
			days[d] = true
			if d == db {
				break
			}
		}
	}
	return nil
}

// parseHHMM parses "HH:MM" (two digits each) into minutes; "24:00" is allowed
// as the end of a day.
func parseHHMM(s string) (int, error) {
	if len(s) != 5 || s[2] != ':' {
		return 0, fmt.Errorf("time %q is not HH:MM", s)
	}
	h, err1 := strconv.Atoi(s[:2])
	m, err2 := strconv.Atoi(s[3:])
	if err1 != nil || err2 != nil || s[0] == '+' || s[0] == '-' || s[3] == '+' || s[3] == '-' {
		return 0, fmt.Errorf("time %q is not HH:MM", s)
	}
	if h > 24 || m > 59 || (h == 24 && m != 0) {
		return 0, fmt.Errorf("time %q out of range 00:00..24:00", s)
	}
	return h*60 + m, nil
}

// Contains reports whether t falls within the schedule.
func (s *Schedule) Contains(t time.Time) bool {
	if s == nil || len(s.clauses) == 0 {
		return true
	}
	lt := t.In(s.loc)
	day := lt.Weekday()
	prev := (day + 6) % 7
	m := lt.Hour()*60 + lt.Minute()
	for _, c := range s.clauses {
		if c.end > c.start {
			if c.days[day] && m >= c.start && m < c.end {
				return true
			}
			continue
		}
		// Wraps past midnight: the evening part belongs to a listed day,
		// the morning part to the day after a listed day.
		if (c.days[day] && m >= c.start) || (c.days[prev] && m < c.end) {
			return true
		}
	}
	return false
}

// String returns the schedule as written.
func (s *Schedule) String() string {
	if s == nil {
		return ""
	}
	return s.src
}

// Location is the zone the schedule is evaluated in (UTC unless TZ= is given).
func (s *Schedule) Location() *time.Location {
	if s == nil || s.loc == nil {
		return time.UTC
	}
	return s.loc
}
