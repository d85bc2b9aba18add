package policy

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// 2026-11-23 is a Monday.
func TestScheduleContains(t *testing.T) {
	cases := []struct {
		sched string
		at    string
		want  bool
	}{
		{"", "2026-11-23T03:00:00Z", true},
		{"   ", "2026-11-29T23:59:59Z", true},
		{"Mon-Fri 08:00-18:00", "2026-11-23T08:00:00Z", true},
		{"Mon-Fri 08:00-18:00", "2026-11-23T07:59:59Z", false},
		{"Mon-Fri 08:00-18:00", "2026-11-23T18:00:00Z", false}, // end exclusive
		{"Mon-Fri 08:00-18:00", "2026-11-27T17:59:00Z", true},  // Friday
		{"Mon-Fri 08:00-18:00", "2026-11-28T12:00:00Z", false}, // Saturday
		{"Sat 09:00-12:00", "2026-11-28T09:30:00Z", true},
		{"sat 09:00-12:00", "2026-11-28T09:30:00Z", true},
		{"Mon,Wed,Fri 10:00-11:00", "2026-11-25T10:30:00Z", true},  // Wednesday
		{"Mon,Wed,Fri 10:00-11:00", "2026-11-24T10:30:00Z", false}, // Tuesday
		{"Mon-Tue,Fri 10:00-11:00", "2026-11-27T10:30:00Z", true},
		{"* 00:00-24:00", "2026-11-29T23:59:59Z", true},
		{"Fri-Mon 12:00-13:00", "2026-11-29T12:30:00Z", true},  // Sunday in a wrapping day range
		{"Fri-Mon 12:00-13:00", "2026-11-25T12:30:00Z", false}, // Wednesday
		// wrapping past midnight: the days name the day the range starts
		{"Fri 22:00-06:00", "2026-11-27T23:00:00Z", true},  // Friday evening
		{"Fri 22:00-06:00", "2026-11-28T05:59:00Z", true},  // Saturday morning
		{"Fri 22:00-06:00", "2026-11-28T06:00:00Z", false}, // end exclusive
		{"Fri 22:00-06:00", "2026-11-27T05:00:00Z", false}, // Friday morning belongs to Thursday
		{"Fri 22:00-06:00", "2026-11-28T23:00:00Z", false}, // Saturday evening
		{"Sun 23:00-01:00", "2026-11-23T00:30:00Z", true},  // wraps the week too
		// zones: 08:00-18:00 Paris is 07:00-17:00 UTC in winter
		{"TZ=Europe/Paris Mon-Fri 08:00-18:00", "2026-11-23T07:30:00Z", true},
		{"TZ=Europe/Paris Mon-Fri 08:00-18:00", "2026-11-23T17:30:00Z", false},
		{"TZ=America/New_York Mon 23:00-24:00", "2026-11-24T04:30:00Z", true}, // Tue 04:30 UTC = Mon 23:30 NY
		{"Mon 08:00-09:00; Tue 10:00-11:00", "2026-11-24T10:15:00Z", true},
		{"Mon 08:00-09:00;Tue 10:00-11:00", "2026-11-24T09:15:00Z", false},
	}
	for _, c := range cases {
		s, err := ParseSchedule(c.sched)
		if err != nil {
			t.Fatalf("ParseSchedule(%q): %v", c.sched, err)
		}
		if got := s.Contains(at(t, c.at)); got != c.want {
			t.Errorf("%q contains %s = %v, want %v", c.sched, c.at, got, c.want)
		}
	}
}

func TestParseScheduleErrors(t *testing.T) {
	for _, s := range []string{
		"Mon", "Mon 08:00", "Mon 8:00-9:00", "Xyz 08:00-09:00", "Mon-Xyz 08:00-09:00",
		"Mon 08:00-08:00", "Mon 25:00-26:00", "Mon 08:60-09:00", "Mon 24:00-01:00", "Mon 24:30-01:00",
		"Mon 08:00-09:00;", "; Mon 08:00-09:00", "Mon 08:00-09:00 extra", "TZ=Nowhere/City Mon 08:00-09:00",
		"TZ= Mon 08:00-09:00", "TZ=Europe/Paris", "TZ=Local Mon 08:00-09:00", "TZ=../etc Mon 08:00-09:00",
		"Mon +8:00-09:00", "Mon 08:00-+9:00", "Mon,  08:00-09:00", "mon,,tue 08:00-09:00",
		strings.Repeat("Mon 08:00-09:00;", 100),
	} {
		if _, err := ParseSchedule(s); !errors.Is(err, ErrInvalidSchedule) {
			t.Errorf("ParseSchedule(%q) = %v, want ErrInvalidSchedule", s, err)
		}
	}
}

func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"", "Mon-Fri 08:00-18:00", "TZ=Europe/Paris Sat 09:00-12:00; Sun 22:00-02:00",
		"* 00:00-24:00", "Mon,Wed,Fri 10:00-11:00", "Fri-Mon 12:00-13:00", "TZ=UTC Mon 24:00-01:00"} {
		f.Add(s, int64(1764000000))
	}
	f.Fuzz(func(t *testing.T, s string, unix int64) {
		sch, err := ParseSchedule(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidSchedule) {
				t.Fatalf("error %v does not wrap ErrInvalidSchedule", err)
			}
			return
		}
		if sch.String() != s {
			t.Fatalf("String() = %q, want %q", sch.String(), s)
		}
		tm := time.Unix(unix%(1<<40), 0)
		got := sch.Contains(tm)
		// Parsing is deterministic: the same text decides the same way.
		again, err := ParseSchedule(s)
		if err != nil || again.Contains(tm) != got {
			t.Fatalf("reparse of %q disagrees", s)
		}
		if strings.TrimSpace(s) == "" && !got {
			t.Fatalf("empty schedule excludes %v", tm)
		}
	})
}
