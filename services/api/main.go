// Command api serves facegate's enrolment and access API (package api):
// people, enrolment photos, groups, doors, policies, verify and identify.
// It runs its own directory (package directory) replaying the ENROLMENTS
// stream, for read-your-writes and for verify/identify, and a face engine
// for enrolment photos. Every setting is a flag with an environment
// fallback (FACEGATE_*). SIGTERM or SIGINT stops accepting requests, lets
// the ones in flight finish (up to --shutdown-timeout), then stops the
// directory. SIGHUP re-reads the tokens file.
//
// Without --tls-cert the API listens in plain HTTP, for a TLS-terminating
// proxy in front (bearer tokens only: client certificates need TLS here).
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/facegate/facegate/models"
	"github.com/facegate/facegate/pkg/api"
	"github.com/facegate/facegate/pkg/apiauth"
	"github.com/facegate/facegate/pkg/directory"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/natsconn"
	"github.com/facegate/facegate/pkg/photostore"
	"github.com/facegate/facegate/pkg/sealed"
	"github.com/facegate/facegate/pkg/svcflag"
	"github.com/facegate/facegate/pkg/telemetry"
)

type settings struct {
	natsURL         string
	natsCreds       string
	inboxPrefix     string
	listen          string
	tlsCert         string
	tlsKey          string
	clientCA        string
	tokens          string
	keysDir         string
	photoDir        string
	snapshotDir     string
	model           string
	cacheDir        string
	threshold       float64
	threads         int
	analyses        int
	ensureStreams   bool
	shutdownTimeout time.Duration
	logLevel        string
	metricsAddr     string
}

func parse(args []string, getenv func(string) string, stderr io.Writer) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("api", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&s.natsURL, "nats-url", nats.DefaultURL, "NATS server URL(s), comma-separated (env FACEGATE_NATS_URL)")
	fs.StringVar(&s.natsCreds, "nats-creds", "", "NATS credential: a .creds file or an NKEY seed file (facegate nats gen) (env FACEGATE_NATS_CREDS)")
	fs.StringVar(&s.inboxPrefix, "nats-inbox-prefix", "", "inbox prefix the credential allows (env FACEGATE_NATS_INBOX_PREFIX)")
	fs.StringVar(&s.listen, "listen", ":8443", "API listen address (env FACEGATE_LISTEN)")
	fs.StringVar(&s.tlsCert, "tls-cert", "", "server certificate PEM; empty serves plain HTTP (env FACEGATE_TLS_CERT)")
	fs.StringVar(&s.tlsKey, "tls-key", "", "server private key PEM (env FACEGATE_TLS_KEY)")
	fs.StringVar(&s.clientCA, "client-ca", "", "CA PEM that client certificates must chain to; empty disables mTLS (env FACEGATE_CLIENT_CA)")
	fs.StringVar(&s.tokens, "tokens", "", "principals file: token hashes and client-cert names with roles and sites (required; env FACEGATE_TOKENS)")
	fs.StringVar(&s.keysDir, "keys-dir", "", "key-encryption keys sealing templates and photos (required; env FACEGATE_KEYS_DIR)")
	fs.StringVar(&s.photoDir, "photo-dir", "", "retained enrolment photos, sealed (required; env FACEGATE_PHOTO_DIR)")
	fs.StringVar(&s.snapshotDir, "snapshot-dir", "", "directory snapshot location; empty for none (env FACEGATE_SNAPSHOT_DIR)")
	fs.StringVar(&s.model, "model", "", "encoder model id; empty for the manifest's default (env FACEGATE_MODEL)")
	fs.StringVar(&s.cacheDir, "cache-dir", "", "model cache root; empty for the default (env FACEGATE_CACHE_DIR)")
	fs.Float64Var(&s.threshold, "threshold", 0, "L2 match threshold; 0 for the space's calibrated one (env FACEGATE_THRESHOLD)")
	fs.IntVar(&s.threads, "intra-op-threads", 1, "ONNX Runtime threads per inference (env FACEGATE_INTRA_OP_THREADS)")
	fs.IntVar(&s.analyses, "analyses", 2, "photos analysed at once (env FACEGATE_ANALYSES)")
	fs.BoolVar(&s.ensureStreams, "ensure-streams", false, "create or update the streams at start-up; needs an admin credential (env FACEGATE_ENSURE_STREAMS)")
	fs.DurationVar(&s.shutdownTimeout, "shutdown-timeout", 20*time.Second, "bound on finishing requests after SIGTERM (env FACEGATE_SHUTDOWN_TIMEOUT)")
	fs.StringVar(&s.logLevel, "log-level", "info", "debug, info, warn or error (env FACEGATE_LOG_LEVEL)")
	fs.StringVar(&s.metricsAddr, "metrics-addr", "", "serve /metrics, /healthz and /readyz on this address; empty disables (env FACEGATE_METRICS_ADDR)")
	if err := svcflag.Parse(fs, args, getenv); err != nil {
		return s, err
	}
	switch {
	case s.tokens == "":
		return s, errors.New("tokens is required: without principals nobody can call the API")
	case s.keysDir == "":
		return s, errors.New("keys-dir is required: templates and photos are sealed")
	case s.photoDir == "":
		return s, errors.New("photo-dir is required")
	case (s.tlsCert == "") != (s.tlsKey == ""):
		return s, errors.New("tls-cert and tls-key go together")
	case s.clientCA != "" && s.tlsCert == "":
		return s, errors.New("client-ca needs tls-cert and tls-key: client certificates need TLS")
	case s.threshold < 0 || s.threshold >= 2:
		return s, fmt.Errorf("threshold %v outside [0, 2)", s.threshold)
	case s.threads < 1 || s.analyses < 1:
		return s, errors.New("intra-op-threads and analyses must be at least 1")
	case s.shutdownTimeout <= 0:
		return s, errors.New("shutdown-timeout must be positive")
	}
	return s, nil
}

func main() {
	svcflag.Main("api", parse, func(s settings) string { return s.logLevel },
		func(ctx context.Context, s settings, log *zap.Logger) error { return run(ctx, s, log, nil) })
}

func natsOptions(s settings, log *zap.Logger) ([]nats.Option, error) {
	return natsconn.Options("facegate-api", s.natsCreds, s.inboxPrefix, log)
}

// run serves until ctx ends. ready, when not nil, receives the API's
// address once it accepts requests (tests).
func run(ctx context.Context, s settings, log *zap.Logger, ready chan<- string) error {
	principals, err := apiauth.LoadFile(s.tokens)
	if err != nil {
		return err
	}
	var tlsConfig *tls.Config
	if s.tlsCert != "" {
		if tlsConfig, err = apiauth.ServerTLSConfig(s.tlsCert, s.tlsKey, s.clientCA); err != nil {
			return err
		}
	}
	keys, err := sealed.OpenFileKeyProvider(s.keysDir)
	if err != nil {
		return err
	}
	defer keys.Close()
	photos, err := photostore.New(s.photoDir, keys)
	if err != nil {
		return err
	}

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
	threshold := s.threshold
	if threshold == 0 {
		if threshold, err = models.ThresholdFor(cache.Root, eng.Model(), eng.Mirrored()); err != nil {
			return err
		}
	}

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
		Spaces: []directory.Space{{Name: eng.Space(), Dim: eng.Dim()}}, SnapshotDir: s.snapshotDir, Log: log, Registerer: reg})
	if err != nil {
		return err
	}
	guard := apiauth.NewGuard(principals, apiauth.NewLimiter(apiauth.DefaultLimits()))
	reloadOnHangup(ctx, s.tokens, guard, log)
	server, err := api.New(api.Config{JetStream: js, Directory: dir, Engine: eng, Threshold: threshold, Keys: keys,
		Photos: photos, Guard: guard,
		Analyses: s.analyses, Log: log, Registerer: reg})
	if err != nil {
		return err
	}

	// The directory follows the stream until the HTTP server has drained.
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

	ln, err := net.Listen("tcp", s.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.listen, err)
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	srv := &http.Server{
		Handler:           server.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// Uploads of 8 x 10 MiB over a slow link need time; a stalled
		// client is cut off by the read timeout.
		ReadTimeout:    2 * time.Minute,
		WriteTimeout:   2 * time.Minute,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       zap.NewStdLog(log.Named("http")),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("api started", zap.String("addr", ln.Addr().String()), zap.Bool("tls", tlsConfig != nil),
		zap.Bool("mtls", s.clientCA != ""), zap.String("space", eng.Space()), zap.Float64("threshold", threshold),
		zap.Uint64("enrolments_applied", dir.Applied()))
	if ms != nil {
		ms.SetReady(true)
	}
	if ready != nil {
		ready <- ln.Addr().String()
	}

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return fmt.Errorf("http server: %w", err)
	case <-waitDone(&wg):
		err := fmt.Errorf("directory stopped: %w", dirErr)
		_ = srv.Close()
		return err
	}
	if ms != nil {
		ms.SetReady(false)
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), s.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("http shutdown: %w", err)
	}
	stopDir()
	wg.Wait()
	if dirErr != nil && !errors.Is(dirErr, context.Canceled) {
		return fmt.Errorf("directory: %w", dirErr)
	}
	return nil
}

// reloadOnHangup re-reads the tokens file on SIGHUP, so a revoked token
// stops working without a restart. A file that does not parse is logged
// and the principals in force stay.
// The handler is installed before it returns (a SIGHUP right after start
// must not kill the process); it stops with ctx.
func reloadOnHangup(ctx context.Context, path string, guard *apiauth.Guard, log *zap.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				p, err := apiauth.LoadFile(path)
				if err != nil {
					log.Error("tokens file not reloaded; the previous principals stay in force", zap.Error(err))
					continue
				}
				guard.SetStore(p)
				log.Info("tokens file reloaded", zap.String("path", path))
			}
		}
	}()
}

func waitDone(wg *sync.WaitGroup) <-chan struct{} {
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	return ch
}
