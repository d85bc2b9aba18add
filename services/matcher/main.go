// Command matcher is facegate's decision service: it replays the ENROLMENTS
// stream into a directory (package directory), consumes face events and
// badge claims, and publishes access decisions (package matcher). Every
// setting is a flag with an environment fallback (FACEGATE_*). SIGTERM or
// SIGINT drains: messages already fetched are finished, open claim windows
// are left for the next matcher (their claims are redelivered), and the
// directory writes a final snapshot.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/facegate/facegate/models"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/directory"
	"github.com/facegate/facegate/pkg/matcher"
	"github.com/facegate/facegate/pkg/natsconn"
	"github.com/facegate/facegate/pkg/sealed"
	"github.com/facegate/facegate/pkg/svcflag"
	"github.com/facegate/facegate/pkg/telemetry"
)

type settings struct {
	natsURL       string
	natsCreds     string
	inboxPrefix   string
	keysDir       string
	snapshotDir   string
	site          string
	space         string
	dim           int
	cacheDir      string
	threshold     float64
	instance      string
	durable       string
	cooldown      time.Duration
	claimWindow   time.Duration
	maxAge        time.Duration
	ensureStreams bool
	logLevel      string
	metricsAddr   string
}

// defaultSpace is the manifest's default encoder, mirror-averaged: what an
// embedder started without --model produces.
func defaultSpace() (string, int) {
	m, err := models.Load()
	if err != nil || m.DefaultEncoder() == nil {
		return "", 0
	}
	md := m.DefaultEncoder()
	return models.Space(md.ID, true), md.Output.Size
}

func parse(args []string, getenv func(string) string, stderr io.Writer) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("matcher", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host, _ := os.Hostname()
	space, dim := defaultSpace()
	fs.StringVar(&s.natsURL, "nats-url", nats.DefaultURL, "NATS server URL(s), comma-separated (env FACEGATE_NATS_URL)")
	fs.StringVar(&s.natsCreds, "nats-creds", "", "NATS credential: a .creds file or an NKEY seed file (facegate nats gen) (env FACEGATE_NATS_CREDS)")
	fs.StringVar(&s.inboxPrefix, "nats-inbox-prefix", "", "inbox prefix the credential allows, e.g. _INBOX.matcher-hq (env FACEGATE_NATS_INBOX_PREFIX)")
	fs.StringVar(&s.keysDir, "keys-dir", "", "key-encryption keys that unseal templates and seal snapshots (required; env FACEGATE_KEYS_DIR)")
	fs.StringVar(&s.snapshotDir, "snapshot-dir", "", "where the directory snapshot is kept; empty for none (env FACEGATE_SNAPSHOT_DIR)")
	fs.StringVar(&s.site, "site", "", "serve only this site's faces and claims; empty for all sites (env FACEGATE_SITE)")
	fs.StringVar(&s.space, "space", space, "embedding space matched, e.g. dlib-resnet34-128+mirror (env FACEGATE_SPACE)")
	fs.IntVar(&s.dim, "dim", 0, "dimension of --space; 0 takes it from the model manifest (env FACEGATE_DIM)")
	fs.StringVar(&s.cacheDir, "cache", "", "model cache root holding local calibrations; empty for the default (env FACEGATE_CACHE)")
	fs.Float64Var(&s.threshold, "threshold", 0, "L2 match threshold; 0 for the space's calibrated one (env FACEGATE_THRESHOLD)")
	fs.StringVar(&s.durable, "durable", "", "FACES and CLAIMS consumer name (the NATS user's durable); empty for matcher or matcher-<site> (env FACEGATE_DURABLE)")
	fs.StringVar(&s.instance, "instance", host, "this process's name in events (env FACEGATE_INSTANCE)")
	fs.DurationVar(&s.cooldown, "cooldown", matcher.DefaultCooldown, "one decision per person and door within this (env FACEGATE_COOLDOWN)")
	fs.DurationVar(&s.claimWindow, "claim-window", matcher.DefaultClaimWindow, "verify window of a claim without its own (env FACEGATE_CLAIM_WINDOW)")
	fs.DurationVar(&s.maxAge, "max-age", matcher.DefaultMaxAge, "face events captured longer ago get no decision (env FACEGATE_MAX_AGE)")
	fs.BoolVar(&s.ensureStreams, "ensure-streams", true, "create or update the streams at start-up; needs an admin credential (env FACEGATE_ENSURE_STREAMS)")
	fs.StringVar(&s.logLevel, "log-level", "info", "debug, info, warn or error (env FACEGATE_LOG_LEVEL)")
	fs.StringVar(&s.metricsAddr, "metrics-addr", "", "serve /metrics, /healthz and /readyz on this address, e.g. :9464; empty disables (env FACEGATE_METRICS_ADDR)")
	if err := svcflag.Parse(fs, args, getenv); err != nil {
		return s, err
	}
	switch {
	case s.keysDir == "":
		return s, errors.New("keys-dir is required: templates arrive sealed")
	case s.space == "":
		return s, errors.New("space is empty and the model manifest names no default encoder")
	case s.threshold < 0 || s.threshold >= 2:
		return s, fmt.Errorf("threshold %v outside [0, 2)", s.threshold)
	case s.cooldown <= 0 || s.claimWindow <= 0 || s.maxAge <= 0:
		return s, errors.New("cooldown, claim-window and max-age must be positive")
	case s.dim < 0:
		return s, fmt.Errorf("dim %d is negative", s.dim)
	}
	if s.dim == 0 {
		if s.space == space {
			s.dim = dim
		} else if m, err := models.Load(); err == nil {
			if md, err := m.Model(strings.TrimSuffix(s.space, "+mirror")); err == nil {
				s.dim = md.Output.Size
			}
		}
		if s.dim == 0 {
			return s, fmt.Errorf("space %q is not in the model manifest: give --dim", s.space)
		}
	}
	if s.site != "" {
		if err := bus.ValidateToken("site", s.site); err != nil {
			return s, err
		}
	}
	return s, nil
}

func main() {
	svcflag.Main("matcher", parse, func(s settings) string { return s.logLevel }, run)
}

func natsOptions(s settings, log *zap.Logger) ([]nats.Option, error) {
	return natsconn.Options("facegate-matcher "+s.instance, s.natsCreds, s.inboxPrefix, log)
}

func run(ctx context.Context, s settings, log *zap.Logger) error {
	keys, err := sealed.OpenFileKeyProvider(s.keysDir)
	if err != nil {
		return err
	}
	defer keys.Close()
	opts, err := natsOptions(s, log)
	if err != nil {
		return err
	}
	conn, err := natsconn.Connect(ctx, s.natsURL, opts, s.ensureStreams)
	if err != nil {
		return err
	}
	defer conn.Drain()
	js := conn.JS
	reg := telemetry.NewRegistry()
	ms, err := telemetry.ListenIfSet(s.metricsAddr, reg, log)
	if err != nil {
		return err
	}
	defer ms.Close()
	dir, err := directory.New(ctx, directory.Config{JetStream: js, Keys: keys,
		Spaces: []directory.Space{{Name: s.space, Dim: s.dim}}, SnapshotDir: s.snapshotDir, Log: log, Registerer: reg})
	if err != nil {
		return err
	}
	m, err := matcher.New(matcher.Config{JetStream: js, Directory: dir, Site: s.site, Space: s.space, Threshold: s.threshold,
		ModelCacheRoot: s.cacheDir, Cooldown: s.cooldown, ClaimWindow: s.claimWindow, MaxAge: s.maxAge,
		FacesDurable: s.durable, ClaimsDurable: s.durable, Instance: s.instance, Log: log, Registerer: reg})
	if err != nil {
		return err
	}

	// The directory follows the stream for as long as the matcher runs; it
	// stops after the matcher has drained.
	dirCtx, stopDir := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDir()
	var wg sync.WaitGroup
	var dirErr error
	wg.Go(func() { dirErr = dir.Run(dirCtx) })
	defer wg.Wait()
	defer stopDir()
	if err := dir.WaitReady(ctx); err != nil {
		return fmt.Errorf("directory: %w", err)
	}
	log.Info("matcher started", zap.String("space", s.space), zap.Int("dim", s.dim), zap.Float64("threshold", m.Threshold()),
		zap.String("site", s.site), zap.Uint64("enrolments_applied", dir.Applied()))
	if ms != nil {
		ms.SetReady(true)
	}
	// A directory that stops following the stream would decide on stale
	// policies: stop the matcher too.
	mctx, stopM := context.WithCancel(ctx)
	defer stopM()
	go func() {
		select {
		case <-mctx.Done():
		case <-waitDone(&wg):
			stopM()
		}
	}()
	err = m.Run(mctx)
	if ms != nil {
		ms.SetReady(false)
	}
	stopDir()
	wg.Wait()
	if err == nil && dirErr != nil {
		err = fmt.Errorf("directory: %w", dirErr)
	}
	return err
}

func waitDone(wg *sync.WaitGroup) <-chan struct{} {
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	return ch
}
