package matcher

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
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/facegate/facegate/models"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/directory"
	"github.com/facegate/facegate/pkg/modelcache"
)

// Service is the matcher's token in error subjects and events.
const Service = "matcher"

// Error codes of the ErrorEvents the matcher publishes.
const (
	CodeMalformedFaceEvent = "malformed_face_event"
	CodeMalformedClaim     = "malformed_claim"
	CodeUnknownDoor        = "unknown_door"
	CodeNotVerifyDoor      = "not_verify_door"
)

// Defaults.
const (
	DefaultCooldown    = 5 * time.Second
	DefaultClaimWindow = 10 * time.Second
	DefaultPreClaim    = 2 * time.Second
	DefaultMaxAge      = 10 * time.Second
	// MaxClaimWindow caps Claim.window: a forgotten swipe must not keep a
	// door verifiable for an hour.
	MaxClaimWindow = time.Minute
)

// Config configures a Matcher. JetStream and Directory are required.
type Config struct {
	JetStream jetstream.JetStream
	Directory *directory.Directory
	// Site, when set, limits the matcher to one site's faces and claims.
	Site string
	// Space is the embedding space matched (FaceEvent.model_id); face
	// events of other spaces (a shadow model's) are acknowledged and
	// ignored. Default: the directory's only space.
	Space string
	// Threshold is the L2 distance under which a face is the person.
	// Default: the calibrated threshold of Space (ThresholdForSpace).
	Threshold float64
	// ModelCacheRoot is where calibrations live; default
	// modelcache.DefaultRoot().
	ModelCacheRoot string
	// FacesDurable and ClaimsDurable name the consumers; default
	// "matcher" or "matcher-<site>".
	FacesDurable, ClaimsDurable string
	// Cooldown, ClaimWindow, PreClaim: see the package doc.
	Cooldown, ClaimWindow, PreClaim time.Duration
	// ExpiryGrace is how long after a window's end faces may still arrive
	// (they were captured in time but queued); default 1 s.
	ExpiryGrace time.Duration
	// MaxAge: face events captured longer ago are acknowledged without a
	// decision; an old face is no reason to open a door now. Default 10 s.
	MaxAge time.Duration
	// SearchK is how many templates an identify search returns; default 16.
	SearchK int
	// AckWait and MaxDeliver of the consumers; defaults 30 s and 5.
	AckWait    time.Duration
	MaxDeliver int
	// Batch is how many messages the consumers keep buffered; FetchWait
	// the pull requests' expiry. Defaults 16 and 1 s.
	Batch     int
	FetchWait time.Duration
	// Instance names this process in events; default "matcher".
	Instance   string
	Log        *zap.Logger
	Registerer prometheus.Registerer
	Tracer     trace.Tracer
	// Now is the clock; default time.Now.
	Now func() time.Time

	// afterDecisions, when set, runs after a face event's decisions are
	// stored and before the ack; an error skips the ack (as a crash would).
	afterDecisions func() error
}

// Matcher is the decision service. Create it with New, start it with Run.
type Matcher struct {
	cfg        Config
	log        *zap.Logger
	collection string
	threshold  float32
	m          metrics

	// Event-loop state: only the Run goroutine touches it.
	cooldown map[cooldownKey]time.Time
	doors    map[doorKey]*doorState
	decided  map[string]time.Time // claim id -> when its decision was stored
}

// New validates cfg and fills in defaults.
func New(cfg Config) (*Matcher, error) {
	if cfg.JetStream == nil {
		return nil, errors.New("matcher: config: JetStream is nil")
	}
	if cfg.Directory == nil {
		return nil, errors.New("matcher: config: Directory is nil")
	}
	if cfg.Site != "" {
		if err := bus.ValidateToken("site", cfg.Site); err != nil {
			return nil, fmt.Errorf("matcher: config: %w", err)
		}
	}
	if cfg.Space == "" {
		sp := cfg.Directory.Spaces()
		if len(sp) != 1 {
			return nil, fmt.Errorf("matcher: config: Space is empty and the directory has %d spaces", len(sp))
		}
		cfg.Space = sp[0].Name
	}
	coll, err := cfg.Directory.Collection(cfg.Space)
	if err != nil {
		return nil, fmt.Errorf("matcher: config: %w", err)
	}
	if cfg.ModelCacheRoot == "" {
		cfg.ModelCacheRoot = modelcache.DefaultRoot()
	}
	if cfg.Threshold == 0 {
		th, err := ThresholdForSpace(cfg.ModelCacheRoot, cfg.Space)
		if err != nil {
			return nil, err
		}
		cfg.Threshold = th
	}
	if !(cfg.Threshold > 0 && cfg.Threshold < 2) {
		return nil, fmt.Errorf("matcher: config: threshold %v outside (0, 2)", cfg.Threshold)
	}
	durable := DefaultDurable(cfg.Site)
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	defd := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defi := func(i *int, v int) {
		if *i <= 0 {
			*i = v
		}
	}
	def(&cfg.FacesDurable, durable)
	def(&cfg.ClaimsDurable, durable)
	def(&cfg.Instance, Service)
	defd(&cfg.Cooldown, DefaultCooldown)
	defd(&cfg.ClaimWindow, DefaultClaimWindow)
	defd(&cfg.PreClaim, DefaultPreClaim)
	defd(&cfg.ExpiryGrace, time.Second)
	defd(&cfg.MaxAge, DefaultMaxAge)
	defd(&cfg.AckWait, 30*time.Second)
	defd(&cfg.FetchWait, time.Second)
	defi(&cfg.SearchK, 16)
	defi(&cfg.MaxDeliver, 5)
	defi(&cfg.Batch, 16)
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Matcher{cfg: cfg, log: cfg.Log.Named("matcher"), collection: coll, threshold: float32(cfg.Threshold), m: m,
		cooldown: map[cooldownKey]time.Time{}, doors: map[doorKey]*doorState{}, decided: map[string]time.Time{}}, nil
}

// Threshold is the distance threshold in force.
func (m *Matcher) Threshold() float64 { return m.cfg.Threshold }

// Space is the embedding space matched.
func (m *Matcher) Space() string { return m.cfg.Space }

// ThresholdForSpace returns the calibrated threshold of an embedding space
// ("<model id>" or "<model id>+mirror") from the model manifest and any
// local calibration under cacheRoot.
func ThresholdForSpace(cacheRoot, space string) (float64, error) {
	id, mirrored := strings.CutSuffix(space, "+mirror")
	man, err := models.Load()
	if err != nil {
		return 0, fmt.Errorf("matcher: threshold of %q: %w", space, err)
	}
	md, err := man.Model(id)
	if err != nil {
		return 0, fmt.Errorf("matcher: threshold of %q: %w", space, err)
	}
	th, err := models.ThresholdFor(cacheRoot, md, mirrored)
	if err != nil {
		return 0, fmt.Errorf("matcher: threshold of %q: %w", space, err)
	}
	return th, nil
}

func (m *Matcher) facesConsumer() (jetstream.ConsumerConfig, error) {
	faces, _, err := ConsumerConfigsFor(m.cfg.Site, m.cfg.FacesDurable, m.cfg.ClaimsDurable, m.cfg.AckWait, m.cfg.MaxDeliver)
	return faces, err
}

func (m *Matcher) claimsConsumer() (jetstream.ConsumerConfig, error) {
	_, claims, err := ConsumerConfigsFor(m.cfg.Site, m.cfg.FacesDurable, m.cfg.ClaimsDurable, m.cfg.AckWait, m.cfg.MaxDeliver)
	return claims, err
}

// DefaultDurable is the FACES and CLAIMS consumer name of the matchers of
// a site ("" = every site) when Config leaves them empty.
func DefaultDurable(site string) string {
	if site == "" {
		return Service
	}
	return Service + "-" + site
}

// ConsumerConfigsFor are the FACES and CLAIMS consumers of a matcher of
// site ("" = every site) without building one, for whoever creates them
// for least-privilege matchers (`facegate nats bootstrap`, the operator).
// Empty durables, zero ackWait and maxDeliver take the matcher's defaults.
func ConsumerConfigsFor(site, facesDurable, claimsDurable string, ackWait time.Duration, maxDeliver int) (faces, claims jetstream.ConsumerConfig, err error) {
	if facesDurable == "" {
		facesDurable = DefaultDurable(site)
	}
	if claimsDurable == "" {
		claimsDurable = DefaultDurable(site)
	}
	if ackWait <= 0 {
		ackWait = 30 * time.Second
	}
	if maxDeliver <= 0 {
		maxDeliver = 5
	}
	ff, err := bus.SiteFilter(bus.KindFaces, site)
	if err != nil {
		return faces, claims, err
	}
	cf, err := bus.SiteFilter(bus.KindClaims, site)
	if err != nil {
		return faces, claims, err
	}
	faces = jetstream.ConsumerConfig{
		Durable: facesDurable, Description: "facegate matcher: face events to decisions",
		// New faces only: replaying minutes of old faces would decide on
		// people long gone (MaxAge drops them anyway).
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy, AckWait: ackWait, MaxDeliver: maxDeliver,
		FilterSubject: ff,
	}
	claims = jetstream.ConsumerConfig{
		Durable: claimsDurable, Description: "facegate matcher: badge claims (verify windows)",
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy, AckWait: ackWait,
		// A claim stays unacknowledged for its window; redelivery after a
		// crash is how another matcher takes it over, so no MaxDeliver cap
		// short of a handful.
		MaxDeliver:    maxDeliver,
		FilterSubject: cf,
	}
	return faces, claims, nil
}

// bindConsumer binds to the durable consumer, creating it when it does not
// exist. A matcher's NATS credential (natsauth.RoleMatcher) may only bind:
// in production the operator creates the consumers; creating here serves
// development and tests, which run unrestricted.
func bindConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	cons, err := js.Consumer(ctx, stream, cfg.Durable)
	if err == nil {
		return cons, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("matcher: consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	cons, err = js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("matcher: create consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	return cons, nil
}

// ConsumerConfigs are the FACES and CLAIMS consumers the matcher reads, for
// the operator to create.
func (m *Matcher) ConsumerConfigs() (faces, claims jetstream.ConsumerConfig, err error) {
	if faces, err = m.facesConsumer(); err != nil {
		return
	}
	claims, err = m.claimsConsumer()
	return
}

type inMsg struct {
	claim bool
	msg   jetstream.Msg
}

// Run consumes until ctx is cancelled, then finishes the messages already
// fetched and returns. Open claim windows are left unacknowledged: their
// claims are redelivered to the next matcher.
func (m *Matcher) Run(ctx context.Context) error {
	js := m.cfg.JetStream
	fc, err := m.facesConsumer()
	if err != nil {
		return fmt.Errorf("matcher: %w", err)
	}
	cc, err := m.claimsConsumer()
	if err != nil {
		return fmt.Errorf("matcher: %w", err)
	}
	faces, err := bindConsumer(ctx, js, bus.StreamFaces, fc)
	if err != nil {
		return err
	}
	claims, err := bindConsumer(ctx, js, bus.StreamClaims, cc)
	if err != nil {
		return err
	}

	// Processing outlives ctx for the drain, bounded.
	procCtx, stopProc := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProc()
	stopTimer := context.AfterFunc(ctx, func() {
		select {
		case <-time.After(30 * time.Second):
			stopProc()
		case <-procCtx.Done():
		}
	})
	defer stopTimer()

	in := make(chan inMsg)
	errs := make(chan error, 2)
	// One consumer failing for good stops the other too: a matcher that
	// sees faces but no claims (or the reverse) must restart visibly.
	fetchCtx, stopFetch := context.WithCancel(ctx)
	defer stopFetch()
	var wg sync.WaitGroup
	for _, c := range []struct {
		cons   jetstream.Consumer
		claims bool
	}{{faces, false}, {claims, true}} {
		wg.Go(func() {
			err := m.fetchLoop(fetchCtx, c.cons, c.claims, in)
			if err != nil {
				stopFetch()
			}
			errs <- err
		})
	}
	go func() { wg.Wait(); close(in) }()

	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case im, ok := <-in:
			if !ok {
				var first error
				for range 2 {
					if err := <-errs; err != nil && first == nil {
						first = err
					}
				}
				return first
			}
			if im.claim {
				m.handleClaim(procCtx, im.msg)
			} else {
				m.handleFace(procCtx, im.msg)
			}
		case <-tick.C:
			if fetchCtx.Err() == nil {
				m.tick(procCtx)
			}
		}
	}
}

// fetchLoop streams a consumer's messages into in. A continuous pull
// (Messages) rather than Fetch: a Fetch of a batch waits for the batch to
// fill or its timeout, which would add up to FetchWait to every decision on
// a quiet door.
func (m *Matcher) fetchLoop(ctx context.Context, cons jetstream.Consumer, claims bool, in chan<- inMsg) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(m.cfg.Batch), jetstream.PullExpiry(max(m.cfg.FetchWait, time.Second)))
	if err != nil {
		return fmt.Errorf("matcher: consume: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	failures := 0
	for {
		msg, err := it.Next()
		if err == nil {
			failures = 0
			in <- inMsg{claim: claims, msg: msg}
			continue
		}
		if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("matcher: consume: %w", err)
		}
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoHeartbeat) {
			continue
		}
		failures++
		m.log.Warn("consume failed", zap.Bool("claims", claims), zap.Int("failures", failures), zap.Error(err))
		if failures >= 30 {
			return fmt.Errorf("matcher: consume: %d failures in a row: %w", failures, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
