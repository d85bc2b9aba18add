package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/gateway/source"
)

// Config configures a Gateway.
type Config struct {
	// Name identifies this gateway instance in FrameMeta.gateway.
	Name string
	// Site is the site token every camera belongs to.
	Site string
	// JetStream publishes the frames. Its connection should be made with
	// nats.MaxReconnects(-1) and nats.ReconnectBufSize(-1) (see
	// NATSOptions) so that publishing resumes by itself after an outage
	// and nothing is buffered while it lasts.
	JetStream jetstream.JetStream
	Cameras   []Camera
	// PublishTimeout bounds one frame's publish and acknowledgement.
	// Default 2 s.
	PublishTimeout time.Duration
	// Backoff of a failed source; default 500 ms doubling to 30 s.
	Backoff Backoff
	// Tracer creates the per-frame spans; default a no-op tracer.
	Tracer trace.Tracer
	Log    *zap.Logger
	// Metrics, from NewMetrics; required.
	Metrics *Metrics
}

// Gateway runs a site's cameras.
type Gateway struct {
	cfg Config
	pub *Publisher
}

// New checks cfg and builds a gateway.
func New(cfg Config) (*Gateway, error) {
	if cfg.JetStream == nil {
		return nil, errors.New("gateway: Config.JetStream is required")
	}
	if cfg.Metrics == nil {
		return nil, errors.New("gateway: Config.Metrics is required (NewMetrics)")
	}
	if cfg.Name == "" {
		return nil, errors.New("gateway: Config.Name is required")
	}
	if err := bus.ValidateToken("site", cfg.Site); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	seen := map[string]bool{}
	for i, c := range cfg.Cameras {
		if err := bus.ValidateToken("camera", c.ID); err != nil {
			return nil, fmt.Errorf("gateway: camera %d: %w", i, err)
		}
		if seen[c.ID] {
			return nil, fmt.Errorf("gateway: camera %q is configured twice", c.ID)
		}
		seen[c.ID] = true
		switch {
		case c.Source == nil:
			return nil, fmt.Errorf("gateway: camera %q has no source", c.ID)
		case c.FPS <= 0:
			return nil, fmt.Errorf("gateway: camera %q: fps %v must be positive", c.ID, c.FPS)
		case c.MaxFrameBytes <= 0:
			return nil, fmt.Errorf("gateway: camera %q: max_frame_bytes %d must be positive", c.ID, c.MaxFrameBytes)
		}
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 2 * time.Second
	}
	if cfg.Backoff.Initial <= 0 {
		cfg.Backoff.Initial = 500 * time.Millisecond
	}
	if cfg.Backoff.Max < cfg.Backoff.Initial {
		cfg.Backoff.Max = max(30*time.Second, cfg.Backoff.Initial)
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return &Gateway{cfg: cfg, pub: &Publisher{
		js: cfg.JetStream, site: cfg.Site, gateway: cfg.Name, tracer: cfg.Tracer,
		timeout: cfg.PublishTimeout, m: cfg.Metrics,
	}}, nil
}

// Publisher is the gateway's frame publisher.
func (g *Gateway) Publisher() *Publisher { return g.pub }

// Run reads every camera until ctx ends, then stops the sources, publishes
// the frames still in the mailboxes and returns. A camera whose source is
// exhausted (a file without loop) stops on its own; the others go on.
func (g *Gateway) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, c := range g.cfg.Cameras {
		cam := newCamera(c, g.cfg.Site, g.pub, g.cfg.Metrics, g.cfg.Log, g.cfg.Backoff)
		wg.Add(1)
		go func() {
			defer wg.Done()
			cam.run(ctx)
		}()
		g.cfg.Log.Info("camera started", zap.String("camera", c.ID), zap.Stringer("source", c.Source),
			zap.Float64("fps", c.FPS), zap.Int("max_frame_bytes", c.MaxFrameBytes))
	}
	wg.Wait()
	return ctx.Err()
}

var _ source.Sink = (*camera)(nil)
