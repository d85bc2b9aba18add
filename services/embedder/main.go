// Command embedder is one replica of an embedder pool: it consumes camera
// frames from JetStream, finds, aligns and embeds every face, and publishes
// one face event per frame (package embedder). Every setting is a flag with
// an environment fallback (FACEGATE_*), which is how the operator's pods
// configure it. SIGTERM or SIGINT drains: frames already fetched are
// finished and acked before the process exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/embedder"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/natsconn"
	"github.com/facegate/facegate/pkg/svcflag"
	"github.com/facegate/facegate/pkg/telemetry"
)

// settings are the command's options after flags and environment.
type settings struct {
	natsURL       string
	natsCreds     string
	inboxPrefix   string
	bind          bool
	model         string
	cacheDir      string
	durable       string
	site          string
	instance      string
	batch         int
	concurrency   int
	threads       int
	maxAge        time.Duration
	ackWait       time.Duration
	drainTimeout  time.Duration
	statsInterval time.Duration
	ensureStreams bool
	crops         bool
	logLevel      string
	metricsAddr   string
}

// parse reads flags from args, falling back to getenv for every flag not
// given, then to the defaults.
func parse(args []string, getenv func(string) string, stderr io.Writer) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("embedder", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host, _ := os.Hostname()
	fs.StringVar(&s.natsURL, "nats-url", nats.DefaultURL, "NATS server URL(s), comma-separated (env FACEGATE_NATS_URL)")
	fs.StringVar(&s.natsCreds, "nats-creds", "", "NATS credential: a .creds file or an NKEY seed file (facegate nats gen) (env FACEGATE_NATS_CREDS)")
	fs.StringVar(&s.inboxPrefix, "nats-inbox-prefix", "", "inbox prefix the credential allows, e.g. _INBOX.embedder-hq (env FACEGATE_NATS_INBOX_PREFIX)")
	fs.BoolVar(&s.bind, "bind", false, "bind to the existing durable consumer instead of creating or updating it; needed with a least-privilege embedder credential (env FACEGATE_BIND)")
	fs.StringVar(&s.model, "model", "", "encoder model id; empty for the manifest's default (env FACEGATE_MODEL)")
	fs.StringVar(&s.cacheDir, "cache", "", "model cache root; empty for the default (env FACEGATE_CACHE)")
	fs.StringVar(&s.durable, "durable", "", "consumer name shared by the pool; empty for embedder-<space> (env FACEGATE_DURABLE)")
	fs.StringVar(&s.site, "site", "", "consume only this site's frames; empty for all sites (env FACEGATE_SITE)")
	fs.StringVar(&s.instance, "instance", host, "this replica's name in events (env FACEGATE_INSTANCE)")
	fs.IntVar(&s.batch, "batch", 8, "messages per fetch (env FACEGATE_BATCH)")
	fs.IntVar(&s.concurrency, "concurrency", runtime.NumCPU(), "frames processed at once (env FACEGATE_CONCURRENCY)")
	fs.IntVar(&s.threads, "intra-op-threads", 1, "ONNX Runtime threads per inference; concurrency gives the parallelism (env FACEGATE_INTRA_OP_THREADS)")
	fs.DurationVar(&s.maxAge, "max-age", 5*time.Second, "frames captured longer ago are dropped as expired (env FACEGATE_MAX_AGE)")
	fs.DurationVar(&s.ackWait, "ack-wait", 30*time.Second, "redelivery timeout of an unacked frame (env FACEGATE_ACK_WAIT)")
	fs.DurationVar(&s.drainTimeout, "drain-timeout", 25*time.Second, "bound on finishing fetched frames after SIGTERM (env FACEGATE_DRAIN_TIMEOUT)")
	fs.DurationVar(&s.statsInterval, "stats-interval", time.Minute, "how often counters are logged; 0 disables (env FACEGATE_STATS_INTERVAL)")
	fs.BoolVar(&s.ensureStreams, "ensure-streams", true, "create or update the streams at start-up (env FACEGATE_ENSURE_STREAMS)")
	fs.BoolVar(&s.crops, "crops", false, "add a small aligned JPEG of every face for the console (env FACEGATE_CROPS)")
	fs.StringVar(&s.logLevel, "log-level", "info", "debug, info, warn or error (env FACEGATE_LOG_LEVEL)")
	fs.StringVar(&s.metricsAddr, "metrics-addr", "", "serve Prometheus /metrics on this address, e.g. :9464; empty disables (env FACEGATE_METRICS_ADDR)")
	if err := svcflag.Parse(fs, args, getenv); err != nil {
		return s, err
	}
	switch {
	case s.batch < 1:
		return s, fmt.Errorf("batch %d: want at least 1", s.batch)
	case s.concurrency < 1:
		return s, fmt.Errorf("concurrency %d: want at least 1", s.concurrency)
	case s.threads < 1:
		return s, fmt.Errorf("intra-op-threads %d: want at least 1", s.threads)
	case s.maxAge <= 0 || s.ackWait <= 0 || s.drainTimeout <= 0:
		return s, errors.New("max-age, ack-wait and drain-timeout must be positive")
	}
	if s.site != "" {
		if err := bus.ValidateToken("site", s.site); err != nil {
			return s, err
		}
	}
	return s, nil
}

func main() {
	svcflag.Main("embedder", parse, func(s settings) string { return s.logLevel }, run)
}

func run(ctx context.Context, s settings, log *zap.Logger) error {
	cache, err := modelcache.New(s.cacheDir, log)
	if err != nil {
		return err
	}
	rt, err := inference.Open(inference.Options{LibraryPath: cache.LibraryPath(), IntraOpThreads: s.threads})
	if err != nil {
		return err
	}
	defer rt.Close()
	eng, err := face.Open(ctx, rt, cache, face.Options{Encoder: s.model})
	if err != nil {
		return err
	}
	defer eng.Close()
	version := ""
	if p, err := cache.Manifest.Package(eng.Model().Package); err == nil {
		version = p.Version
	}

	opts, err := natsconn.Options("facegate-embedder "+s.instance, s.natsCreds, s.inboxPrefix, log)
	if err != nil {
		return err
	}
	conn, err := natsconn.Connect(ctx, s.natsURL, opts, s.ensureStreams)
	if err != nil {
		return err
	}
	defer conn.Drain()
	js := conn.JS
	filter := ""
	if s.site != "" {
		if filter, err = bus.SiteFilter(bus.KindFrames, s.site); err != nil {
			return err
		}
	}
	w, err := embedder.New(embedder.Config{
		Engine: eng, JetStream: js, ModelVersion: version, Durable: s.durable, FilterSubject: filter, Bind: s.bind,
		Batch: s.batch, Concurrency: s.concurrency, MaxAge: s.maxAge, AckWait: s.ackWait,
		DrainTimeout: s.drainTimeout, Instance: s.instance, Crops: s.crops, Log: log,
	})
	if err != nil {
		return err
	}
	log.Info("embedder started", zap.String("space", eng.Space()), zap.String("model_version", version),
		zap.String("consumer", w.Durable()), zap.String("filter", filter), zap.Int("batch", s.batch),
		zap.Int("concurrency", s.concurrency), zap.Duration("max_age", s.maxAge))

	if s.metricsAddr != "" {
		reg := telemetry.NewRegistry()
		reg.MustRegister(w.Collectors(eng.Space())...)
		ms, err := telemetry.Listen(s.metricsAddr, reg, log)
		if err != nil {
			return err
		}
		defer ms.Close()
		ms.SetReady(true)
		log.Info("metrics", zap.String("addr", ms.Addr()))
	}
	if s.statsInterval > 0 {
		go func() {
			t := time.NewTicker(s.statsInterval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					logStats(log, "embedder stats", w.Stats())
				}
			}
		}()
	}
	err = w.Run(ctx)
	logStats(log, "embedder drained", w.Stats())
	return err
}

func logStats(log *zap.Logger, msg string, st *embedder.Stats) {
	log.Info(msg,
		zap.Uint64("received", st.Received.Load()), zap.Uint64("published", st.Published.Load()),
		zap.Uint64("faces", st.Faces.Load()), zap.Uint64("expired", st.Expired.Load()),
		zap.Uint64("poison", st.Poison.Load()), zap.Uint64("retried", st.Retried.Load()), zap.Uint64("failed", st.Failed.Load()))
}
