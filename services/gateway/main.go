// Command gateway is a site's edge of the facegate pipeline: it reads the
// cameras named in its YAML configuration, publishes their frames to
// JetStream and serves POST /v1/claims for the site's badge readers
// (package gateway). Every flag has an environment fallback (FACEGATE_*).
// SIGTERM or SIGINT stops the sources, publishes the frames still waiting,
// lets claims in flight finish and exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/gateway"
	"github.com/facegate/facegate/pkg/gateway/source"
	"github.com/facegate/facegate/pkg/svcflag"
	"github.com/facegate/facegate/pkg/telemetry"
)

// settings are the command's options after flags and environment.
type settings struct {
	config        string
	natsURL       string
	ffmpeg        string
	ensureStreams bool
	drainTimeout  time.Duration
	logLevel      string
	metricsAddr   string
}

// parse reads flags from args, falling back to getenv for every flag not
// given, then to the defaults.
func parse(args []string, getenv func(string) string, stderr io.Writer) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&s.config, "config", "", "YAML configuration file (required) (env FACEGATE_CONFIG)")
	fs.StringVar(&s.natsURL, "nats-url", "", "override the configuration's nats.url (env FACEGATE_NATS_URL)")
	fs.StringVar(&s.ffmpeg, "ffmpeg", "ffmpeg", "ffmpeg executable for video and RTSP cameras (env FACEGATE_FFMPEG)")
	fs.BoolVar(&s.ensureStreams, "ensure-streams", false, "create or update the streams at start-up; needs admin rights (env FACEGATE_ENSURE_STREAMS)")
	fs.DurationVar(&s.drainTimeout, "drain-timeout", 10*time.Second, "bound on draining after SIGTERM (env FACEGATE_DRAIN_TIMEOUT)")
	fs.StringVar(&s.logLevel, "log-level", "info", "debug, info, warn or error (env FACEGATE_LOG_LEVEL)")
	fs.StringVar(&s.metricsAddr, "metrics-addr", "", "serve /metrics, /healthz and /readyz on this address, e.g. :9464; empty disables (env FACEGATE_METRICS_ADDR)")
	if err := svcflag.Parse(fs, args, getenv); err != nil {
		return s, err
	}
	if s.config == "" {
		return s, errors.New("--config (or FACEGATE_CONFIG) is required")
	}
	if s.drainTimeout <= 0 {
		return s, fmt.Errorf("drain-timeout %v must be positive", s.drainTimeout)
	}
	return s, nil
}

func main() {
	svcflag.Main("gateway", parse, func(s settings) string { return s.logLevel },
		func(ctx context.Context, s settings, log *zap.Logger) error { return run(ctx, s, log, nil) })
}

// run runs the gateway until ctx ends. ready, when not nil, receives the
// claims listener's address once everything is up (tests use it).
func run(ctx context.Context, s settings, log *zap.Logger, ready chan<- string) error {
	cfg, err := gateway.LoadConfig(s.config)
	if err != nil {
		return err
	}
	if s.natsURL != "" {
		cfg.NATS.URL = s.natsURL
	}
	reg := telemetry.NewRegistry()
	metrics, err := gateway.NewMetrics(reg)
	if err != nil {
		return err
	}
	var tsrv *telemetry.Server
	if s.metricsAddr != "" {
		if tsrv, err = telemetry.Listen(s.metricsAddr, reg, log); err != nil {
			return err
		}
		defer tsrv.Close()
		log.Info("metrics", zap.String("addr", tsrv.Addr()))
	}

	opts, err := cfg.NATSOptions(log)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(cfg.NATS.URL, opts...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", cfg.NATS.URL, err)
	}
	defer nc.Drain() //nolint:errcheck // exiting anyway
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if s.ensureStreams {
		if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
			return err
		}
	}
	cams, err := cfg.BuildCameras(source.HTTPOptions{}, s.ffmpeg)
	if err != nil {
		return err
	}
	tracer := noop.NewTracerProvider().Tracer("")
	gw, err := gateway.New(gateway.Config{
		Name: cfg.Gateway, Site: cfg.Site, JetStream: js, Cameras: cams,
		PublishTimeout: cfg.PublishTimeoutValue(), Tracer: tracer, Log: log, Metrics: metrics,
	})
	if err != nil {
		return err
	}

	var srv *http.Server
	claimsAddr := ""
	if cfg.Claims != nil {
		h, err := gateway.NewClaimsHandler(gateway.ClaimsConfig{
			Site: cfg.Site, TokenHashes: cfg.TokenHashes(), JetStream: js, Tracer: tracer, Log: log, Metrics: metrics,
		})
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", cfg.Claims.Listen)
		if err != nil {
			return fmt.Errorf("claims listener %s: %w", cfg.Claims.Listen, err)
		}
		claimsAddr = ln.Addr().String()
		srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("claims server stopped", zap.Error(err))
			}
		}()
		log.Info("claims endpoint", zap.String("addr", claimsAddr))
	}
	log.Info("gateway started", zap.String("gateway", cfg.Gateway), zap.String("site", cfg.Site),
		zap.Int("cameras", len(cams)), zap.String("nats", nc.ConnectedUrlRedacted()))
	if tsrv != nil {
		tsrv.SetReady(true)
	}
	if ready != nil {
		ready <- claimsAddr
	}

	err = gw.Run(ctx)
	if ctx.Err() == nil {
		// Every camera finished on its own (files without loop); keep
		// serving claims until told to stop.
		if srv != nil {
			<-ctx.Done()
		}
	}
	if tsrv != nil {
		tsrv.SetReady(false)
	}
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), s.drainTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("claims server shutdown", zap.Error(err))
		}
	}
	log.Info("gateway drained")
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
