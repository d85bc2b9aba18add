// Package retention enforces per-site retention on the FRAMES, FACES and
// DECISIONS streams, below the streams' global MaxAge: a building whose
// works council allows 30 days of decisions keeps 30 days even though the
// stream keeps 90 for others.
//
// Every Interval the janitor, for each configured site and stream, finds the
// first stream sequence of that site's subjects (bus.SiteFilter) stored at
// or after now-retention, with a short-lived consumer that starts by time,
// and purges the site's subjects below that sequence (a JetStream purge with
// subject filter and sequence). Other sites' messages are untouched; a site
// without an entry, or a stream without a duration in its entry, keeps the
// stream's own MaxAge.
//
// The janitor needs only what natsauth grants the audit role: stream info,
// creating, reading and deleting a consumer on these streams, and purge.
package retention

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/facegate/facegate/pkg/bus"
)

// Site is one site's retention per stream; zero means the stream's MaxAge.
type Site struct {
	Frames    time.Duration
	Faces     time.Duration
	Decisions time.Duration
}

// Policy is the retention of each site, by site token.
type Policy map[string]Site

// MaxRetention bounds a duration in the configuration: far beyond any
// stream's MaxAge, and far from time.Duration's overflow.
const MaxRetention = 10 * 365 * 24 * time.Hour

// ParseDuration reads a Go duration ("10s", "2m", "1h30m") optionally
// preceded by whole days and weeks ("30d", "2w", "1d12h"). It must be
// positive and at most MaxRetention.
func ParseDuration(s string) (time.Duration, error) {
	m := dayWeek.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("retention: duration %q: want e.g. 10s, 2m, 12h, 30d or 2w", short(s))
	}
	var d time.Duration
	if m[1] != "" {
		n, err := strconv.ParseUint(m[1], 10, 32)
		if err != nil || n > uint64(MaxRetention/(7*24*time.Hour)) {
			return 0, fmt.Errorf("retention: duration %q is too long", short(s))
		}
		d += time.Duration(n) * 7 * 24 * time.Hour
	}
	if m[2] != "" {
		n, err := strconv.ParseUint(m[2], 10, 32)
		if err != nil || n > uint64(MaxRetention/(24*time.Hour)) {
			return 0, fmt.Errorf("retention: duration %q is too long", short(s))
		}
		d += time.Duration(n) * 24 * time.Hour
	}
	if m[3] != "" {
		rest, err := time.ParseDuration(m[3])
		if err != nil {
			return 0, fmt.Errorf("retention: duration %q: %v", short(s), err)
		}
		if rest < 0 || rest > MaxRetention {
			return 0, fmt.Errorf("retention: duration %q is negative or too long", short(s))
		}
		d += rest
	}
	if m[1] == "" && m[2] == "" && m[3] == "" {
		return 0, fmt.Errorf("retention: duration %q is empty", short(s))
	}
	if d <= 0 || d > MaxRetention {
		return 0, fmt.Errorf("retention: duration %q must be positive and at most %v", short(s), MaxRetention)
	}
	return d, nil
}

// dayWeek splits "2w3d4h" into weeks, days and the Go-duration rest.
var dayWeek = regexp.MustCompile(`^(?:([0-9]{1,9})w)?(?:([0-9]{1,9})d)?([0-9][0-9a-zµ.]*)?$`)

// siteJSON is one entry of the configuration file.
type siteJSON struct {
	Frames    string `json:"frames"`
	Faces     string `json:"faces"`
	Decisions string `json:"decisions"`
}

// ParseConfig reads the JSON configuration:
//
//	{"hq": {"frames": "10s", "faces": "2m", "decisions": "30d"},
//	 "lab": {"decisions": "7d"}}
//
// Keys are site tokens; a stream left out keeps its MaxAge. Unknown fields
// are refused so a typo ("decision") does not silently keep data longer.
func ParseConfig(data []byte) (Policy, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("retention: config: %w", err)
	}
	if raw == nil {
		return nil, errors.New("retention: config: want a JSON object of sites")
	}
	p := Policy{}
	sites := make([]string, 0, len(raw))
	for s := range raw {
		sites = append(sites, s)
	}
	sort.Strings(sites)
	for _, site := range sites {
		if err := bus.ValidateToken("site", site); err != nil {
			return nil, fmt.Errorf("retention: config: %w", err)
		}
		var sj siteJSON
		dec := json.NewDecoder(bytes.NewReader(raw[site]))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&sj); err != nil {
			return nil, fmt.Errorf("retention: config: site %s: %w (fields: frames, faces, decisions)", site, err)
		}
		var r Site
		for _, f := range []struct {
			name string
			val  string
			dst  *time.Duration
		}{{"frames", sj.Frames, &r.Frames}, {"faces", sj.Faces, &r.Faces}, {"decisions", sj.Decisions, &r.Decisions}} {
			if f.val == "" {
				continue
			}
			d, err := ParseDuration(f.val)
			if err != nil {
				return nil, fmt.Errorf("retention: config: site %s %s: %w", site, f.name, err)
			}
			*f.dst = d
		}
		p[site] = r
	}
	return p, nil
}

// LoadConfig reads ParseConfig's format from a file.
func LoadConfig(path string) (Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("retention: config: %w", err)
	}
	return ParseConfig(data)
}

func short(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
