package apiauth

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Class groups routes that share a rate limit.
type Class string

// Endpoint classes.
const (
	// ClassMatch: verify and identify. Each call is one probe of the
	// gallery; a low rate keeps an attacker with photos (or synthetic faces)
	// from mapping it.
	ClassMatch Class = "match"
	// ClassWrite: administrative writes.
	ClassWrite Class = "write"
	// ClassRead: reads of people metadata.
	ClassRead Class = "read"
)

// Rate is a token bucket: PerSecond tokens are added each second up to
// Burst.
type Rate struct {
	PerSecond float64
	Burst     int
}

// Limits configures the buckets. A zero Rate takes the default.
type Limits struct {
	Match, Write, Read Rate
	// AuthFailures is per client IP: failed authentications allowed.
	AuthFailures Rate
}

// DefaultLimits: match 2/s burst 5, writes 20/s burst 40, reads 50/s burst
// 100, failed authentications 5/s burst 10 per IP.
func DefaultLimits() Limits {
	return Limits{
		Match:        Rate{PerSecond: 2, Burst: 5},
		Write:        Rate{PerSecond: 20, Burst: 40},
		Read:         Rate{PerSecond: 50, Burst: 100},
		AuthFailures: Rate{PerSecond: 5, Burst: 10},
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	for _, p := range []struct{ v, def *Rate }{{&l.Match, &d.Match}, {&l.Write, &d.Write}, {&l.Read, &d.Read}, {&l.AuthFailures, &d.AuthFailures}} {
		if p.v.PerSecond <= 0 || p.v.Burst <= 0 {
			*p.v = *p.def
		}
	}
	return l
}

type bucketKey struct {
	kind string // "principal/<class>" or "ip"
	id   string
}

// Limiter holds the token buckets. Buckets are created on first use and
// swept when the map grows past maxBuckets, dropping full (idle) ones, so
// a flood of distinct IPs cannot grow memory without bound.
type Limiter struct {
	limits Limits
	now    func() time.Time

	mu      sync.Mutex
	buckets map[bucketKey]*rate.Limiter
}

const maxBuckets = 10000

// NewLimiter returns a limiter with l (zero fields take the defaults).
func NewLimiter(l Limits) *Limiter {
	return &Limiter{limits: l.withDefaults(), now: time.Now, buckets: map[bucketKey]*rate.Limiter{}}
}

func (l *Limiter) rateOf(k bucketKey) Rate {
	switch k.kind {
	case "ip":
		return l.limits.AuthFailures
	case string(ClassMatch):
		return l.limits.Match
	case string(ClassWrite):
		return l.limits.Write
	default:
		return l.limits.Read
	}
}

func (l *Limiter) bucket(k bucketKey, now time.Time) *rate.Limiter {
	if b, ok := l.buckets[k]; ok {
		return b
	}
	if len(l.buckets) >= maxBuckets {
		for key, b := range l.buckets {
			if b.TokensAt(now) >= float64(b.Burst()) {
				delete(l.buckets, key)
			}
		}
	}
	r := l.rateOf(k)
	b := rate.NewLimiter(rate.Limit(r.PerSecond), r.Burst)
	l.buckets[k] = b
	return b
}

// take takes one token from k's bucket, or says how long until one is
// there.
func (l *Limiter) take(k bucketKey) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.bucket(k, now)
	res := b.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// Allow takes a token from the principal's bucket of class.
func (l *Limiter) Allow(principal string, class Class) (bool, time.Duration) {
	return l.take(bucketKey{kind: string(class), id: principal})
}

// AuthFailed records a failed authentication from ip; false means the IP
// is over its limit.
func (l *Limiter) AuthFailed(ip string) (bool, time.Duration) {
	return l.take(bucketKey{kind: "ip", id: ip})
}

// AuthBlocked reports whether ip has no failed-authentication token left,
// without taking one: a blocked IP is refused before its credentials are
// even checked.
func (l *Limiter) AuthBlocked(ip string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[bucketKey{kind: "ip", id: ip}]
	if !ok {
		return false, 0
	}
	now := l.now()
	if t := b.TokensAt(now); t < 1 {
		return true, time.Duration((1 - t) / float64(b.Limit()) * float64(time.Second))
	}
	return false, 0
}

// RetryAfterSeconds rounds a delay up to whole seconds, at least 1, for the
// Retry-After header.
func RetryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
