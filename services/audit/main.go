// Command audit is facegate's audit service: it chains decisions, enrolment
// changes and services' administrative-call records from JetStream into the
// hash-chained, signed audit log (package auditsink), and, when a retention
// configuration is given, purges each site's frames, faces and decisions
// past that site's retention (package retention).
//
// Every setting is a flag with an environment fallback (FACEGATE_*). SIGTERM
// or SIGINT drains: batches already fetched are appended, synced and acked,
// a final checkpoint is signed, and the log is closed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/audit"
	"github.com/facegate/facegate/pkg/auditsink"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/natsconn"
	"github.com/facegate/facegate/pkg/retention"
	"github.com/facegate/facegate/pkg/svcflag"
	"github.com/facegate/facegate/pkg/telemetry"
)

// settings are the command's options after flags and environment.
type settings struct {
	natsURL            string
	natsCreds          string
	natsUser           string
	logPath            string
	checkpointKey      string
	subjectKey         string
	checkpointEvery    int
	checkpointInterval time.Duration
	durable            string
	createConsumers    bool
	ensureStreams      bool
	batch              int
	retentionConfig    string
	retentionCreds     string
	retentionUser      string
	retentionInterval  time.Duration
	metricsAddr        string
	logLevel           string
}

// parse reads flags from args, falling back to getenv for every flag not
// given, then to the defaults.
func parse(args []string, getenv func(string) string, stderr io.Writer) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&s.natsURL, "nats-url", nats.DefaultURL, "NATS server URL(s), comma-separated (env FACEGATE_NATS_URL)")
	fs.StringVar(&s.natsCreds, "nats-creds", "", "NATS credential of the audit user: an NKEY seed file (facegate nats gen) or a .creds file; empty connects without credentials (env FACEGATE_NATS_CREDS)")
	fs.StringVar(&s.natsUser, "nats-user", "audit", "NATS user name: replies arrive under _INBOX.<name>, the only inbox the user may read (env FACEGATE_NATS_USER)")
	fs.StringVar(&s.logPath, "log", "", "audit log file, created if missing (required; env FACEGATE_LOG)")
	fs.StringVar(&s.checkpointKey, "checkpoint-key", "", "ed25519 checkpoint signing key, PEM, mode 0600 (facegate audit keygen) (required; env FACEGATE_CHECKPOINT_KEY)")
	fs.StringVar(&s.subjectKey, "subject-key", "", "subject hash key, hex, mode 0600 (facegate audit keygen) (required; env FACEGATE_SUBJECT_KEY)")
	fs.IntVar(&s.checkpointEvery, "checkpoint-every", audit.DefaultCheckpointEvery, "sign a checkpoint after this many records (env FACEGATE_CHECKPOINT_EVERY)")
	fs.DurationVar(&s.checkpointInterval, "checkpoint-interval", time.Minute, "also sign unsigned records this often (env FACEGATE_CHECKPOINT_INTERVAL)")
	fs.StringVar(&s.durable, "durable", "audit", "durable consumer name on DECISIONS, ENROLMENTS and AUDIT (env FACEGATE_DURABLE)")
	fs.BoolVar(&s.createConsumers, "create-consumers", false, "create missing consumers (needs more than the audit user's permissions) (env FACEGATE_CREATE_CONSUMERS)")
	fs.BoolVar(&s.ensureStreams, "ensure-streams", false, "create or update the streams at start-up (admin credentials only) (env FACEGATE_ENSURE_STREAMS)")
	fs.IntVar(&s.batch, "batch", 64, "messages per fetch, appended with one fsync (env FACEGATE_BATCH)")
	fs.StringVar(&s.retentionConfig, "retention-config", "", "per-site retention, JSON {\"site\": {\"frames\": \"10s\", \"faces\": \"2m\", \"decisions\": \"30d\"}}; empty disables (env FACEGATE_RETENTION_CONFIG)")
	fs.StringVar(&s.retentionCreds, "retention-nats-creds", "", "NATS credential of the retention user (natsauth role retention, which may purge); empty uses the audit user's connection (env FACEGATE_RETENTION_NATS_CREDS)")
	fs.StringVar(&s.retentionUser, "retention-nats-user", "retention", "NATS user name of the retention credential: its replies arrive under _INBOX.<name> (env FACEGATE_RETENTION_NATS_USER)")
	fs.DurationVar(&s.retentionInterval, "retention-interval", 0, "time between retention sweeps; 0 picks a quarter of the shortest retention, 1s..1m (env FACEGATE_RETENTION_INTERVAL)")
	fs.StringVar(&s.metricsAddr, "metrics-addr", "", "serve /metrics, /healthz and /readyz on this address, e.g. :9464; empty disables (env FACEGATE_METRICS_ADDR)")
	fs.StringVar(&s.logLevel, "log-level", "info", "debug, info, warn or error (env FACEGATE_LOG_LEVEL)")
	if err := svcflag.Parse(fs, args, getenv); err != nil {
		return s, err
	}
	switch {
	case s.logPath == "":
		return s, errors.New("--log (FACEGATE_LOG) is required")
	case s.checkpointKey == "":
		return s, errors.New("--checkpoint-key (FACEGATE_CHECKPOINT_KEY) is required")
	case s.subjectKey == "":
		return s, errors.New("--subject-key (FACEGATE_SUBJECT_KEY) is required")
	case s.checkpointEvery < 1:
		return s, fmt.Errorf("checkpoint-every %d: want at least 1", s.checkpointEvery)
	case s.batch < 1:
		return s, fmt.Errorf("batch %d: want at least 1", s.batch)
	case s.checkpointInterval < 0 || s.retentionInterval < 0:
		return s, errors.New("checkpoint-interval and retention-interval must not be negative")
	}
	for _, tok := range [][2]string{{"durable", s.durable}, {"nats-user", s.natsUser}, {"retention-nats-user", s.retentionUser}} {
		if err := bus.ValidateToken(tok[0], tok[1]); err != nil {
			return s, err
		}
	}
	return s, nil
}

func main() {
	svcflag.Main("audit", parse, func(s settings) string { return s.logLevel }, run)
}

func run(ctx context.Context, s settings, log *zap.Logger) error {
	signer, err := audit.LoadKeyFile(s.checkpointKey)
	if err != nil {
		return err
	}
	subject, err := auditsink.LoadSubjectKey(s.subjectKey)
	if err != nil {
		return err
	}
	var policy retention.Policy
	if s.retentionConfig != "" {
		if policy, err = retention.LoadConfig(s.retentionConfig); err != nil {
			return err
		}
	}

	opts, err := natsconn.Options("facegate-audit", s.natsCreds, "_INBOX."+s.natsUser, log)
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
	sink, err := auditsink.New(ctx, auditsink.Config{
		JetStream: js, Path: s.logPath, Signer: signer, SubjectKey: subject,
		CheckpointEvery: s.checkpointEvery, CheckpointInterval: s.checkpointInterval,
		Durable: s.durable, CreateConsumers: s.createConsumers, Batch: s.batch,
		Log: log, Registerer: reg,
	})
	if err != nil {
		return err
	}
	var janitor *retention.Janitor
	if len(policy) > 0 {
		// The janitor purges; under least privilege that is the retention
		// user's right, not the audit reader's (pkg/natsauth), so it gets
		// its own connection when a retention credential is given.
		rjs := js
		if s.retentionCreds != "" {
			ropts, err := natsconn.Options("facegate-retention", s.retentionCreds, "_INBOX."+s.retentionUser, log)
			if err != nil {
				sink.Close()
				return err
			}
			rconn, err := natsconn.Connect(ctx, s.natsURL, ropts, false)
			if err != nil {
				sink.Close()
				return fmt.Errorf("retention: %w", err)
			}
			defer rconn.Drain()
			rjs = rconn.JS
		}
		if janitor, err = retention.New(retention.Config{JetStream: rjs, Policy: policy, Interval: s.retentionInterval, Log: log, Registerer: reg}); err != nil {
			sink.Close()
			return err
		}
	}
	if s.metricsAddr != "" {
		srv, err := telemetry.Listen(s.metricsAddr, reg, log)
		if err != nil {
			sink.Close()
			return err
		}
		defer srv.Close()
		srv.SetReady(true)
		log.Info("metrics", zap.String("addr", srv.Addr()))
	}
	log.Info("audit service started", zap.String("log", s.logPath), zap.String("key_id", signer.ID()),
		zap.String("durable", s.durable), zap.Int("retention_sites", len(policy)))

	// A sink that fails (its log cannot be written) stops the janitor too:
	// the service exits and is restarted.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if janitor != nil {
		wg.Go(func() { _ = janitor.Run(runCtx) })
	}
	err = sink.Run(runCtx)
	cancel()
	wg.Wait()
	if err == nil {
		log.Info("audit service drained", zap.Uint64("last_seq", sink.Head()))
	}
	return err
}
