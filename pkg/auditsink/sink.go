package auditsink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/audit"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/telemetry"
)

// Config configures a Sink. JetStream, Path, Signer and SubjectKey are
// required; zero values elsewhere pick the defaults noted.
type Config struct {
	JetStream jetstream.JetStream
	// Path is the audit log file (pkg/audit). The sink is its only writer.
	Path string
	// Signer signs checkpoints; SubjectKey keys subject hashes (see
	// audit.Options).
	Signer     *audit.SigningKey
	SubjectKey []byte
	// CheckpointEvery: a signed checkpoint after this many records.
	// Default audit.DefaultCheckpointEvery.
	CheckpointEvery int
	// CheckpointInterval: also a checkpoint this often while records are
	// unsigned, so a quiet log does not keep an unsigned tail for hours.
	// Default 1 minute; negative disables.
	CheckpointInterval time.Duration
	// Durable is the consumer name on each of the three streams. Default
	// "audit" (the natsauth audit user's durable).
	Durable string
	// CreateConsumers creates a missing durable consumer. Under the
	// least-privilege audit credential the admin creates them and the sink
	// only binds (natsauth), so this is off by default.
	CreateConsumers bool
	// AckWait of consumers the sink creates. Default 30 s.
	AckWait time.Duration
	// Batch is the number of messages per fetch, appended with one fsync.
	// Default 64.
	Batch int
	// FetchWait bounds one fetch on an idle stream, and so how long a drain
	// waits for it. Default 1 s.
	FetchWait time.Duration
	// DedupHorizon is how long appended sources are remembered against
	// redelivery. Default 2 x the consumers' longest AckWait + 1 minute.
	DedupHorizon time.Duration
	// LagInterval is how often facegate_audit_lag is refreshed. Default 10 s.
	LagInterval time.Duration
	Log         *zap.Logger           // default: no logging
	Registerer  prometheus.Registerer // default: metrics are not exported
	Tracer      trace.Tracer          // default: noop
	// Now is the log's clock (tests). Default time.Now.
	Now func() time.Time

	// dropAcks makes the sink append without acknowledging: tests use it
	// to provoke redeliveries.
	dropAcks bool
}

type streamState struct {
	name    string
	convert func(nats.Header, []byte) (audit.Event, error)
	cons    jetstream.Consumer
	seen    seenSet // only its own goroutine touches it
	pruned  time.Time
}

// Sink appends the three streams to one audit log. Create it with New and
// call Run once.
type Sink struct {
	cfg     Config
	log     *zap.Logger
	tracer  trace.Tracer
	alog    *audit.Log
	streams []*streamState
	horizon time.Duration

	records *prometheus.CounterVec
	lag     *prometheus.GaugeVec
	skipped *prometheus.CounterVec

	closeOnce sync.Once
	closeErr  error
}

// Metrics are the sink's collectors; New registers them on
// Config.Registerer.
func newMetrics() (*prometheus.CounterVec, *prometheus.GaugeVec, *prometheus.CounterVec) {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "facegate_audit_records_total",
			Help: "Records appended to the audit log by the audit consumer, by record kind (malformed: a message that could not be recorded as itself).",
		}, []string{"kind"}),
		prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "facegate_audit_lag",
			Help: "Messages of a stream not yet durably in the audit log: pending delivery plus delivered and unacknowledged.",
		}, []string{"stream"}),
		prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "facegate_audit_redeliveries_skipped_total",
			Help: "Redelivered messages whose record was already in the log (acknowledged, not appended again).",
		}, []string{"stream"})
}

// New binds (or creates) the consumers, opens the log, and reads the
// recently appended sources back from its tail.
func New(ctx context.Context, cfg Config) (*Sink, error) {
	switch {
	case cfg.JetStream == nil:
		return nil, errors.New("auditsink: no JetStream")
	case cfg.Path == "":
		return nil, errors.New("auditsink: no log path")
	case cfg.Signer == nil:
		return nil, errors.New("auditsink: no checkpoint signing key")
	case cfg.Batch < 0 || cfg.AckWait < 0 || cfg.FetchWait < 0 || cfg.DedupHorizon < 0 || cfg.LagInterval < 0:
		return nil, errors.New("auditsink: negative batch, ack wait, fetch wait, dedup horizon or lag interval")
	}
	if cfg.Durable == "" {
		cfg.Durable = "audit"
	}
	if err := bus.ValidateToken("durable", cfg.Durable); err != nil {
		return nil, fmt.Errorf("auditsink: %w", err)
	}
	if cfg.Batch == 0 {
		cfg.Batch = 64
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.FetchWait == 0 {
		cfg.FetchWait = time.Second
	}
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = time.Minute
	}
	if cfg.LagInterval == 0 {
		cfg.LagInterval = 10 * time.Second
	}
	s := &Sink{cfg: cfg, log: cfg.Log, tracer: cfg.Tracer}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.tracer == nil {
		s.tracer = noop.NewTracerProvider().Tracer("")
	}
	s.records, s.lag, s.skipped = newMetrics()
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.records, s.lag, s.skipped} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("auditsink: register metrics: %w", err)
			}
		}
	}

	maxAckWait := time.Duration(0)
	for _, def := range []struct {
		stream  string
		convert func(nats.Header, []byte) (audit.Event, error)
	}{
		{bus.StreamDecisions, DecisionEvent},
		{bus.StreamEnrolments, EnrolmentEvent},
		{bus.StreamAudit, AdminEvent},
	} {
		cons, err := s.bind(ctx, def.stream)
		if err != nil {
			return nil, err
		}
		maxAckWait = max(maxAckWait, cons.CachedInfo().Config.AckWait)
		s.streams = append(s.streams, &streamState{name: def.stream, convert: def.convert, cons: cons, seen: seenSet{}})
	}
	s.horizon = cfg.DedupHorizon
	if s.horizon == 0 {
		s.horizon = 2*maxAckWait + time.Minute
	}

	alog, err := audit.Open(ctx, audit.Options{
		Path: cfg.Path, Signer: cfg.Signer, SubjectKey: cfg.SubjectKey, CheckpointEvery: cfg.CheckpointEvery,
		// The sink syncs once per fetched batch, before acking it; no
		// per-record fsync.
		Sync:   audit.SyncPolicy{EveryRecords: 1 << 30},
		Logger: s.log, Now: cfg.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("auditsink: %w", err)
	}
	s.alog = alog
	if rec := alog.Recovery(); rec != nil {
		s.log.Warn("audit log had a torn final line; it was cut off and a recovery record appended",
			zap.Int64("discarded_bytes", rec.DiscardedBytes), zap.Uint64("recovery_seq", rec.RecordSeq))
	}
	seen, err := readRecentSources(cfg.Path, s.horizon)
	if err != nil {
		alog.Close()
		return nil, err
	}
	now := time.Now()
	for src := range seen {
		for _, st := range s.streams {
			if st.name == src.Stream {
				// Remembered from now: the horizon protects against
				// redeliveries that start after this process does.
				st.seen[src] = now
			}
		}
	}
	s.log.Info("audit consumer ready", zap.String("log", cfg.Path), zap.Int("recent_sources", len(seen)),
		zap.Duration("dedup_horizon", s.horizon))
	return s, nil
}

// ConsumerConfig is the durable consumer the sink reads each of DECISIONS,
// ENROLMENTS and AUDIT through. Under least-privilege credentials an admin
// (or a deploy job) creates it on the three streams; the sink only binds.
func ConsumerConfig(durable string, ackWait time.Duration, batch int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   "facegate audit log consumer",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: 8 * batch,
	}
}

func (s *Sink) consumerConfig() jetstream.ConsumerConfig {
	return ConsumerConfig(s.cfg.Durable, s.cfg.AckWait, s.cfg.Batch)
}

func (s *Sink) bind(ctx context.Context, stream string) (jetstream.Consumer, error) {
	cons, err := s.cfg.JetStream.Consumer(ctx, stream, s.cfg.Durable)
	if err == nil {
		return cons, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) || !s.cfg.CreateConsumers {
		return nil, fmt.Errorf("auditsink: bind to durable consumer %s on stream %s (an admin creates it, or enable creating consumers): %w", s.cfg.Durable, stream, err)
	}
	cons, err = s.cfg.JetStream.CreateConsumer(ctx, stream, s.consumerConfig())
	if err != nil {
		return nil, fmt.Errorf("auditsink: create durable consumer %s on stream %s: %w", s.cfg.Durable, stream, err)
	}
	return cons, nil
}

// Run consumes until ctx ends, then finishes (appends, syncs and acks) the
// batches already fetched, writes a final checkpoint and closes the log. It
// returns an error when the log cannot be written: nothing after the failed
// record is acknowledged, so the next run appends it.
func (s *Sink) Run(ctx context.Context) error {
	defer s.Close()
	loopCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(s.streams))
	for i, st := range s.streams {
		wg.Go(func() {
			if err := s.runStream(loopCtx, st); err != nil {
				errs[i] = err
				cancel() // one stream's log failure stops the others
			}
		})
	}
	wg.Go(func() { s.periodic(loopCtx) })
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return s.Close()
}

// Close writes a final checkpoint and closes the log. Run calls it; call it
// only when Run is never called.
func (s *Sink) Close() error {
	s.closeOnce.Do(func() {
		if err := s.alog.Close(); err != nil {
			s.closeErr = fmt.Errorf("auditsink: %w", err)
		}
	})
	return s.closeErr
}

// Head is the log's last seq (tests, status).
func (s *Sink) Head() uint64 {
	seq, _ := s.alog.Head()
	return seq
}

func (s *Sink) runStream(ctx context.Context, st *streamState) error {
	// Appending and acking what was fetched outlives ctx: the messages are
	// delivered to this process and would otherwise wait out AckWait.
	work := context.WithoutCancel(ctx)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		batch, err := st.cons.Fetch(s.cfg.Batch, jetstream.FetchMaxWait(s.cfg.FetchWait))
		if err != nil {
			s.log.Warn("audit consumer fetch failed", zap.String("stream", st.name), zap.Error(err))
			sleep(ctx, backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && len(msgs) == 0 {
			s.log.Warn("audit consumer fetch failed", zap.String("stream", st.name), zap.Error(err))
			sleep(ctx, backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if len(msgs) > 0 {
			if err := s.handleBatch(work, st, msgs); err != nil {
				return err
			}
		}
	}
	return nil
}

type settled struct {
	msg  jetstream.Msg
	term bool
}

// handleBatch appends every new message of a batch, syncs once, and then
// acknowledges (or terminates, for malformed ones) each message.
func (s *Sink) handleBatch(ctx context.Context, st *streamState, msgs []jetstream.Msg) error {
	now := time.Now()
	if now.Sub(st.pruned) > s.horizon/4 {
		st.seen.prune(now.Add(-s.horizon))
		st.pruned = now
	}
	done := make([]settled, 0, len(msgs))
	appended := 0
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			// Not a JetStream message: nothing to record it by.
			s.log.Error("audit consumer got a message without JetStream metadata", zap.String("stream", st.name), zap.Error(err))
			done = append(done, settled{m, true})
			continue
		}
		src := Source{Stream: st.name, Seq: md.Sequence.Stream}
		if _, dup := st.seen[src]; dup {
			s.skipped.WithLabelValues(st.name).Inc()
			done = append(done, settled{m, false})
			continue
		}
		term, err := s.appendOne(ctx, src, m)
		if err != nil {
			return err
		}
		st.seen[src] = now
		appended++
		done = append(done, settled{m, term})
	}
	if appended > 0 {
		if err := s.alog.Sync(); err != nil {
			return fmt.Errorf("auditsink: %w", err)
		}
	}
	if s.cfg.dropAcks {
		return nil
	}
	for _, d := range done {
		var err error
		if d.term {
			err = d.msg.Term()
		} else {
			err = d.msg.Ack()
		}
		if err != nil {
			// A lost ack means a redelivery, which the seen set absorbs.
			s.log.Warn("audit consumer ack failed", zap.String("stream", st.name), zap.Error(err))
		}
	}
	return nil
}

// appendOne appends the record of one message; term reports that the
// message was recorded as malformed and is to be terminated. An error means
// the log itself failed.
func (s *Sink) appendOne(ctx context.Context, src Source, m jetstream.Msg) (term bool, err error) {
	ctx = telemetry.Extract(ctx, m.Headers())
	ctx, span := s.tracer.Start(ctx, "audit.append", trace.WithAttributes(attribute.String("source", src.String())))
	defer span.End()

	ev, cerr := s.streamConvert(src.Stream)(m.Headers(), m.Data())
	if cerr == nil {
		ev.Payload[payloadSource] = src.String()
		if src.Stream == bus.StreamAudit {
			// Which service reported the call: facegate.audit.<service>.
			if svc := m.Subject()[strings.LastIndexByte(m.Subject(), '.')+1:]; bus.ValidateToken("service", svc) == nil {
				ev.Payload["service"] = svc
			}
		}
		rec, err := s.alog.Append(ctx, ev)
		if err == nil {
			s.records.WithLabelValues(string(rec.Kind)).Inc()
			return false, nil
		}
		// Refused by the log (a payload over its limits, or one that
		// looks biometric) or the log failed; the failure record below
		// tells the two apart: it fails too only if the log did.
		cerr = err
	}
	s.log.Warn("audit consumer records a malformed message", zap.String("source", src.String()), zap.Int("bytes", len(m.Data())), zap.Error(cerr))
	rec, err := s.alog.Append(ctx, FailureEvent(src, len(m.Data()), cerr))
	if err != nil {
		span.RecordError(err)
		return false, fmt.Errorf("auditsink: append record of %s: %w", src, err)
	}
	s.records.WithLabelValues(string(rec.Kind)).Inc()
	return true, nil
}

func (s *Sink) streamConvert(stream string) func(nats.Header, []byte) (audit.Event, error) {
	for _, st := range s.streams {
		if st.name == stream {
			return st.convert
		}
	}
	return func(nats.Header, []byte) (audit.Event, error) {
		return audit.Event{}, malformed("no converter for stream %s", stream)
	}
}

// periodic signs checkpoints on time and refreshes the lag gauge.
func (s *Sink) periodic(ctx context.Context) {
	var ckpt <-chan time.Time
	if s.cfg.CheckpointInterval > 0 {
		t := time.NewTicker(s.cfg.CheckpointInterval)
		defer t.Stop()
		ckpt = t.C
	}
	lag := time.NewTicker(s.cfg.LagInterval)
	defer lag.Stop()
	s.updateLag(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-ckpt:
			if seq, _ := s.alog.Head(); seq > 0 {
				if _, err := s.alog.Checkpoint(ctx); err != nil && ctx.Err() == nil {
					s.log.Error("audit checkpoint failed", zap.Error(err))
				}
			}
		case <-lag.C:
			s.updateLag(ctx)
		}
	}
}

func (s *Sink) updateLag(ctx context.Context) {
	for _, st := range s.streams {
		info, err := st.cons.Info(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Debug("audit consumer info failed", zap.String("stream", st.name), zap.Error(err))
			}
			continue
		}
		s.lag.WithLabelValues(st.name).Set(float64(info.NumPending) + float64(info.NumAckPending))
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
