package retention

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/bus"
)

// Config configures a Janitor. JetStream and Policy are required.
type Config struct {
	JetStream jetstream.JetStream
	Policy    Policy
	// Interval between sweeps. Default: a quarter of the shortest
	// retention in the policy, between 1 s and 1 minute, so data is never
	// kept much longer than configured.
	Interval   time.Duration
	Log        *zap.Logger           // default: no logging
	Registerer prometheus.Registerer // default: metrics are not exported
	Now        func() time.Time      // default time.Now (tests move it)
}

// Janitor purges each site's old messages. Create it with New.
type Janitor struct {
	cfg    Config
	log    *zap.Logger
	now    func() time.Time
	jobs   []job
	purges *prometheus.CounterVec
	errs   *prometheus.CounterVec
}

// job is one (site, stream) pair with a retention.
type job struct {
	site, stream, filter string
	keep                 time.Duration
}

// New validates the policy and registers the metrics.
func New(cfg Config) (*Janitor, error) {
	if cfg.JetStream == nil {
		return nil, errors.New("retention: no JetStream")
	}
	if cfg.Interval < 0 {
		return nil, errors.New("retention: negative interval")
	}
	j := &Janitor{cfg: cfg, log: cfg.Log, now: cfg.Now}
	if j.log == nil {
		j.log = zap.NewNop()
	}
	if j.now == nil {
		j.now = time.Now
	}
	sites := make([]string, 0, len(cfg.Policy))
	for s := range cfg.Policy {
		sites = append(sites, s)
	}
	sort.Strings(sites)
	shortest := time.Duration(0)
	for _, site := range sites {
		r := cfg.Policy[site]
		for _, s := range []struct {
			stream string
			kind   bus.Kind
			keep   time.Duration
		}{{bus.StreamFrames, bus.KindFrames, r.Frames}, {bus.StreamFaces, bus.KindFaces, r.Faces}, {bus.StreamDecisions, bus.KindDecisions, r.Decisions}} {
			if s.keep == 0 {
				continue
			}
			if s.keep < 0 {
				return nil, fmt.Errorf("retention: site %s stream %s: negative retention %v", site, s.stream, s.keep)
			}
			filter, err := bus.SiteFilter(s.kind, site)
			if err != nil {
				return nil, fmt.Errorf("retention: site %s: %w", site, err)
			}
			j.jobs = append(j.jobs, job{site: site, stream: s.stream, filter: filter, keep: s.keep})
			if shortest == 0 || s.keep < shortest {
				shortest = s.keep
			}
		}
	}
	if j.cfg.Interval == 0 {
		j.cfg.Interval = min(max(shortest/4, time.Second), time.Minute)
	}
	j.purges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "facegate_retention_purges_total",
		Help: "Purges of a site's messages older than its retention, by stream and site.",
	}, []string{"stream", "site"})
	j.errs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "facegate_retention_errors_total",
		Help: "Retention sweeps of a site's stream that failed, by stream and site.",
	}, []string{"stream", "site"})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{j.purges, j.errs} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("retention: register metrics: %w", err)
			}
		}
	}
	return j, nil
}

// sweepTimeout is the least time one sweep may take.
const sweepTimeout = 10 * time.Second

// Interval is the time between sweeps.
func (j *Janitor) Interval() time.Duration { return j.cfg.Interval }

// Run sweeps at once and then every Interval until ctx ends. A failed sweep
// is logged and retried next time; Run returns nil when ctx ends.
func (j *Janitor) Run(ctx context.Context) error {
	if len(j.jobs) == 0 {
		j.log.Info("retention: no per-site retention configured; streams keep their MaxAge")
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(j.cfg.Interval)
	defer t.Stop()
	for {
		// Bounded: a request the server never answers (a permissions
		// violation gets no reply) must fail visibly, not hang the
		// janitor until shutdown.
		sctx, cancel := context.WithTimeout(ctx, max(j.cfg.Interval, sweepTimeout))
		err := j.Sweep(sctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			j.log.Warn("retention sweep failed", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sweep runs every (site, stream) job once and returns their errors.
func (j *Janitor) Sweep(ctx context.Context) error {
	var errs []error
	for _, jb := range j.jobs {
		if err := j.sweep(ctx, jb); err != nil {
			j.errs.WithLabelValues(jb.stream, jb.site).Inc()
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (j *Janitor) sweep(ctx context.Context, jb job) error {
	cutoff := j.now().Add(-jb.keep)
	s, err := j.cfg.JetStream.Stream(ctx, jb.stream)
	if err != nil {
		return fmt.Errorf("retention: %s %s: stream info: %w", jb.stream, jb.site, err)
	}
	state := s.CachedInfo().State
	if state.Msgs == 0 {
		return nil
	}
	// Read before the consumer is made: a message stored after this has a
	// higher sequence and is newer than cutoff, so it is never purged.
	keepFrom := state.LastSeq + 1
	first, found, err := j.firstSince(ctx, s, jb.filter, cutoff)
	if err != nil {
		return fmt.Errorf("retention: %s %s: find first message since %s: %w", jb.stream, jb.site, cutoff.Format(time.RFC3339), err)
	}
	if found {
		keepFrom = first
	}
	if keepFrom <= state.FirstSeq {
		return nil // nothing stored before it
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(jb.filter), jetstream.WithPurgeSequence(keepFrom)); err != nil {
		return fmt.Errorf("retention: %s %s: purge %s below %d: %w", jb.stream, jb.site, jb.filter, keepFrom, err)
	}
	j.purges.WithLabelValues(jb.stream, jb.site).Inc()
	j.log.Debug("retention purge", zap.String("stream", jb.stream), zap.String("site", jb.site),
		zap.Uint64("kept_from_seq", keepFrom), zap.Time("cutoff", cutoff))
	return nil
}

// firstSince returns the stream sequence of the first message on filter
// stored at or after t, using a consumer that starts by time (the server
// finds the position; nothing older is read) and is deleted afterwards.
func (j *Janitor) firstSince(ctx context.Context, s jetstream.Stream, filter string, t time.Time) (uint64, bool, error) {
	cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Description:       "facegate retention probe",
		FilterSubject:     filter,
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &t,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute, // cleans up after a crash between create and delete
	})
	if err != nil {
		return 0, false, err
	}
	name := cons.CachedInfo().Name
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := s.DeleteConsumer(dctx, name); err != nil {
			j.log.Debug("retention probe consumer not deleted (it expires on its own)", zap.String("consumer", name), zap.Error(err))
		}
	}()
	if cons.CachedInfo().NumPending == 0 {
		return 0, false, nil
	}
	batch, err := cons.FetchNoWait(1)
	if err != nil {
		return 0, false, err
	}
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			return 0, false, err
		}
		return md.Sequence.Stream, true, nil
	}
	if err := batch.Error(); err != nil {
		return 0, false, err
	}
	// Pending a moment ago but nothing delivered: the messages were
	// removed meanwhile (MaxAge, another purge). Purge nothing this time.
	return 0, false, errors.New("pending messages vanished before they could be read")
}
