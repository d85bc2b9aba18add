// Package allinone runs every facegate service in one process on an
// embedded NATS server with JetStream on a data directory and the embedded
// gallery index: gateways (from gateway config files), an embedder, the
// directory (enrolment stream -> access state + index) shared by the
// matcher and the enrolment API, the audit consumer and the per-site
// retention janitor. It is `facegate up` and the engine of the demo.
//
// The services are the same packages the separate binaries run; only the
// wiring differs: one NATS connection (the embedded server listens on
// loopback only), one face engine shared by the embedder and the API, one
// directory shared by the matcher and the API, one Prometheus registry.
//
// # State on disk
//
//	<data>/nats         JetStream (encrypted at rest with keys/jetstream.key)
//	<data>/photos       sealed enrolment photos (pkg/photostore)
//	<data>/directory    sealed directory snapshots
//	<data>/audit        the hash-chained audit log
//	<data>/tokens.yaml  API principals (token hashes only)
//	<keys>/             KEKs (pkg/sealed), jetstream.key, audit signing and
//	                    subject keys, admin.token (the first admin's bearer
//	                    token, 0600, for the local operator)
//
// Everything is created on the first start and reused after: a restart on
// the same directories resumes with every enrolment, decision and audit
// record. Keep <keys> on another volume in production (--keys).
package allinone

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/facegate/facegate/models"
	"github.com/facegate/facegate/pkg/api"
	"github.com/facegate/facegate/pkg/apiauth"
	"github.com/facegate/facegate/pkg/audit"
	"github.com/facegate/facegate/pkg/auditsink"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/directory"
	"github.com/facegate/facegate/pkg/embedder"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/gateway"
	"github.com/facegate/facegate/pkg/gateway/source"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/matcher"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/photostore"
	"github.com/facegate/facegate/pkg/sealed"
	"github.com/facegate/facegate/pkg/telemetry"
)

// Config configures the all-in-one. DataDir is required.
type Config struct {
	DataDir string
	// KeysDir holds every key; default <DataDir>/keys.
	KeysDir string
	// NATSPort is the embedded server's loopback port; 0 picks a free one.
	NATSPort int
	// APIAddr is the enrolment API's listen address; default
	// 127.0.0.1:8080. Use port 0 for a free port.
	APIAddr string
	// MetricsAddr serves /metrics, /healthz, /readyz; "" disables.
	MetricsAddr string
	// Gateways are gateway config files (pkg/gateway's YAML); their NATS
	// settings are ignored: they publish to the embedded server.
	Gateways []*gateway.FileConfig
	// Model is the encoder id ("" = the manifest's default); NoMirror
	// turns mirror averaging off.
	Model    string
	NoMirror bool
	// CacheDir is the model cache root ("" = default).
	CacheDir string
	// Concurrency is the embedder's parallel frames; default the CPU count.
	Concurrency int
	// Matcher timings; zero values take the matcher's defaults.
	Cooldown, ClaimWindow time.Duration
	// FFmpeg is the ffmpeg binary for video and RTSP cameras.
	FFmpeg string
	Log    *zap.Logger
}

// Info says where the running stack can be reached.
type Info struct {
	NATSURL     string `json:"nats_url"`
	APIURL      string `json:"api_url"`
	MetricsAddr string `json:"metrics_addr,omitempty"`
	// ClaimsURLs maps a gateway name to its claims endpoint.
	ClaimsURLs map[string]string `json:"claims_urls,omitempty"`
	// AdminTokenFile holds the admin's bearer token (0600).
	AdminTokenFile string `json:"admin_token_file"`
	AuditLog       string `json:"audit_log"`
	// AuditPublicKey is the checkpoint verification key file.
	AuditPublicKey string  `json:"audit_public_key"`
	Space          string  `json:"space"`
	Threshold      float64 `json:"threshold"`
	DataDir        string  `json:"data_dir"`
	KeysDir        string  `json:"keys_dir"`
}

// Paths of the state on disk, relative to DataDir or KeysDir.
const (
	natsDir        = "nats"
	photosDir      = "photos"
	snapshotDir    = "directory"
	auditDir       = "audit"
	auditLogFile   = "audit.log"
	tokensFile     = "tokens.yaml"
	kekDir         = "kek"
	jetstreamKey   = "jetstream.key"
	auditSignKey   = "audit-signing.key"
	auditPubKey    = "audit-signing.pub"
	auditSubjKey   = "audit-subject.key"
	adminTokenFile = "admin.token"
)

// Run starts everything, calls ready (if not nil) once the stack accepts
// work, and blocks until ctx ends; then it drains the services in order
// (gateways first, NATS last) and returns the first failure.
func Run(ctx context.Context, cfg Config, ready func(Info)) error {
	if cfg.DataDir == "" {
		return errors.New("allinone: a data directory is required")
	}
	if cfg.KeysDir == "" {
		cfg.KeysDir = filepath.Join(cfg.DataDir, "keys")
	}
	if cfg.APIAddr == "" {
		cfg.APIAddr = "127.0.0.1:8080"
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = runtime.NumCPU()
	}
	if cfg.FFmpeg == "" {
		cfg.FFmpeg = "ffmpeg"
	}
	log := cfg.Log
	if log == nil {
		log = zap.NewNop()
	}
	for _, d := range []string{cfg.DataDir, filepath.Join(cfg.DataDir, auditDir), filepath.Join(cfg.DataDir, snapshotDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("allinone: create %s: %w", d, err)
		}
	}
	b, err := bootstrapKeys(ctx, cfg.DataDir, cfg.KeysDir)
	if err != nil {
		return err
	}
	defer b.keks.Close()

	// NATS, embedded, on loopback, JetStream encrypted at rest.
	srv, err := embedded.Start(ctx, embedded.Options{DataDir: filepath.Join(cfg.DataDir, natsDir), Port: cfg.NATSPort,
		MaxPayload: 8 << 20, EncryptionKey: b.jetstreamKey})
	if err != nil {
		return fmt.Errorf("allinone: %w", err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.URL(), nats.Name("facegate-up"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("allinone: connect to the embedded server: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("allinone: jetstream: %w", err)
	}
	if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
		return fmt.Errorf("allinone: %w", err)
	}

	reg := telemetry.NewRegistry()
	var ms *telemetry.Server
	if cfg.MetricsAddr != "" {
		if ms, err = telemetry.Listen(cfg.MetricsAddr, reg, log); err != nil {
			return err
		}
		defer ms.Close()
	}
	tracer := noop.NewTracerProvider().Tracer("")

	// One face engine for the embedder and the API's enrolment photos.
	cache, err := modelcache.New(cfg.CacheDir, log)
	if err != nil {
		return err
	}
	rt, err := inference.Open(inference.Options{LibraryPath: cache.LibraryPath(), IntraOpThreads: 1})
	if err != nil {
		return err
	}
	defer rt.Close()
	eng, err := face.Open(ctx, rt, cache, face.Options{Encoder: cfg.Model, NoMirror: cfg.NoMirror})
	if err != nil {
		return err
	}
	defer eng.Close()
	threshold, err := models.ThresholdFor(cache.Root, eng.Model(), eng.Mirrored())
	if err != nil {
		return err
	}
	version := ""
	if p, err := cache.Manifest.Package(eng.Model().Package); err == nil {
		version = p.Version
	}

	// One directory for the matcher and the API.
	dir, err := directory.New(ctx, directory.Config{JetStream: js, Keys: b.keks,
		Spaces: []directory.Space{{Name: eng.Space(), Dim: eng.Dim()}}, SnapshotDir: filepath.Join(cfg.DataDir, snapshotDir),
		Log: log.Named("directory"), Registerer: reg})
	if err != nil {
		return err
	}
	emb, err := embedder.New(embedder.Config{Engine: eng, JetStream: js, ModelVersion: version, Concurrency: cfg.Concurrency,
		Instance: "up", Log: log.Named("embedder"), Tracer: tracer})
	if err != nil {
		return err
	}
	reg.MustRegister(emb.Collectors(eng.Space())...)
	mt, err := matcher.New(matcher.Config{JetStream: js, Directory: dir, Space: eng.Space(), Threshold: threshold,
		ModelCacheRoot: cache.Root, Cooldown: cfg.Cooldown, ClaimWindow: cfg.ClaimWindow, Instance: "up",
		Log: log, Registerer: reg, Tracer: tracer})
	if err != nil {
		return err
	}
	photos, err := photostore.New(filepath.Join(cfg.DataDir, photosDir), b.keks)
	if err != nil {
		return err
	}
	principals, err := apiauth.LoadFile(filepath.Join(cfg.DataDir, tokensFile))
	if err != nil {
		return err
	}
	guard := apiauth.NewGuard(principals, apiauth.NewLimiter(apiauth.DefaultLimits()))
	apiSrv, err := api.New(api.Config{JetStream: js, Directory: dir, Engine: eng, Threshold: threshold, Keys: b.keks,
		Photos: photos, Guard: guard, Log: log.Named("api"), Registerer: reg, Tracer: tracer})
	if err != nil {
		return err
	}
	sink, err := auditsink.New(ctx, auditsink.Config{JetStream: js, Path: filepath.Join(cfg.DataDir, auditDir, auditLogFile),
		Signer: b.auditSigner, SubjectKey: b.auditSubject, CreateConsumers: true, Log: log.Named("audit"), Registerer: reg})
	if err != nil {
		return err
	}
	defer sink.Close()

	gwMetrics, err := gateway.NewMetrics(reg)
	if err != nil {
		return err
	}
	type gw struct {
		g      *gateway.Gateway
		claims *http.Server
		ln     net.Listener
		name   string
	}
	var gws []gw
	for _, gc := range cfg.Gateways {
		cams, err := gc.BuildCameras(source.HTTPOptions{}, cfg.FFmpeg)
		if err != nil {
			return fmt.Errorf("allinone: gateway %s: %w", gc.Gateway, err)
		}
		g, err := gateway.New(gateway.Config{Name: gc.Gateway, Site: gc.Site, JetStream: js, Cameras: cams,
			PublishTimeout: gc.PublishTimeoutValue(), Tracer: tracer, Log: log.Named("gateway"), Metrics: gwMetrics})
		if err != nil {
			return fmt.Errorf("allinone: gateway %s: %w", gc.Gateway, err)
		}
		x := gw{g: g, name: gc.Gateway}
		if gc.Claims != nil {
			h, err := gateway.NewClaimsHandler(gateway.ClaimsConfig{Site: gc.Site, TokenHashes: gc.TokenHashes(), JetStream: js,
				Tracer: tracer, Log: log.Named("claims"), Metrics: gwMetrics})
			if err != nil {
				return err
			}
			if x.ln, err = net.Listen("tcp", gc.Claims.Listen); err != nil {
				return fmt.Errorf("allinone: gateway %s claims listener %s: %w", gc.Gateway, gc.Claims.Listen, err)
			}
			x.claims = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
		}
		gws = append(gws, x)
	}

	// Start: directory first (the matcher and the API read it), then the
	// consumers, then the API, then the cameras.
	var wg sync.WaitGroup
	errs := make(chan error, 8+len(gws))
	runCtx, stopAll := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAll()
	dirCtx, stopDir := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDir()
	var dirWG sync.WaitGroup
	dirWG.Go(func() {
		if err := dir.Run(dirCtx); err != nil && dirCtx.Err() == nil {
			errs <- fmt.Errorf("directory: %w", err)
		}
	})
	defer dirWG.Wait()
	defer stopDir()
	if err := dir.WaitReady(ctx); err != nil {
		return fmt.Errorf("allinone: directory: %w", err)
	}
	start := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(runCtx); err != nil && runCtx.Err() == nil {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		})
	}
	start("embedder", emb.Run)
	start("matcher", mt.Run)
	start("audit", sink.Run)

	apiLn, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		stopAll()
		wg.Wait()
		return fmt.Errorf("allinone: API listener %s: %w", cfg.APIAddr, err)
	}
	httpSrv := &http.Server{Handler: apiSrv.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: time.Minute, WriteTimeout: time.Minute}
	go func() {
		if err := httpSrv.Serve(apiLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("api: %w", err)
		}
	}()
	info := Info{NATSURL: srv.URL(), APIURL: "http://" + apiLn.Addr().String(), ClaimsURLs: map[string]string{},
		AdminTokenFile: filepath.Join(cfg.KeysDir, adminTokenFile), AuditLog: filepath.Join(cfg.DataDir, auditDir, auditLogFile),
		AuditPublicKey: filepath.Join(cfg.KeysDir, auditPubKey), Space: eng.Space(), Threshold: threshold,
		DataDir: cfg.DataDir, KeysDir: cfg.KeysDir}
	if ms != nil {
		info.MetricsAddr = ms.Addr()
	}
	gwCtx, stopGW := context.WithCancel(runCtx)
	defer stopGW()
	var gwWG sync.WaitGroup
	for _, x := range gws {
		if x.claims != nil {
			go func() { _ = x.claims.Serve(x.ln) }()
			info.ClaimsURLs[x.name] = "http://" + x.ln.Addr().String() + "/v1/claims"
		}
		gwWG.Go(func() {
			if err := x.g.Run(gwCtx); err != nil && gwCtx.Err() == nil {
				errs <- fmt.Errorf("gateway %s: %w", x.name, err)
			}
		})
	}
	if ms != nil {
		ms.SetReady(true)
	}
	log.Info("facegate up", zap.String("api", info.APIURL), zap.String("nats", info.NATSURL), zap.String("space", info.Space),
		zap.Int("gateways", len(gws)), zap.Uint64("enrolments_applied", dir.Applied()))
	if ready != nil {
		ready(info)
	}

	var firstErr error
	select {
	case <-ctx.Done():
	case firstErr = <-errs:
		log.Error("service failed; stopping", zap.Error(firstErr))
	}
	if ms != nil {
		ms.SetReady(false)
	}
	// Drain in pipeline order: cameras and claims stop first, then the
	// API, then the consumers finish what they fetched, then the
	// directory writes its last snapshot.
	stopGW()
	gwWG.Wait()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, x := range gws {
		if x.claims != nil {
			_ = x.claims.Shutdown(shutdownCtx)
		}
	}
	_ = httpSrv.Shutdown(shutdownCtx)
	stopAll()
	wg.Wait()
	stopDir()
	dirWG.Wait()
	return firstErr
}

// keys are what bootstrapKeys creates or loads.
type keys struct {
	keks         *sealed.FileKeyProvider
	jetstreamKey string
	auditSigner  *audit.SigningKey
	auditSubject []byte
}

// bootstrapKeys creates on the first start (and loads after) the KEKs, the
// JetStream store key, the audit keys and the first admin's token.
func bootstrapKeys(ctx context.Context, dataDir, keysDir string) (*keys, error) {
	if err := os.MkdirAll(filepath.Join(keysDir, kekDir), 0o700); err != nil {
		return nil, fmt.Errorf("allinone: keys directory: %w", err)
	}
	if err := os.Chmod(keysDir, 0o700); err != nil {
		return nil, fmt.Errorf("allinone: keys directory: %w", err)
	}
	kp, err := sealed.OpenFileKeyProvider(filepath.Join(keysDir, kekDir))
	if err != nil {
		return nil, err
	}
	if kp.ActiveKeyID() == "" {
		if _, err := kp.Rotate(ctx); err != nil {
			kp.Close()
			return nil, err
		}
	}
	k := &keys{keks: kp}
	fail := func(err error) (*keys, error) { kp.Close(); return nil, err }

	jsk, err := readOrCreateSecret(filepath.Join(keysDir, jetstreamKey), func() ([]byte, error) {
		return []byte(randomHex(32) + "\n"), nil
	})
	if err != nil {
		return fail(err)
	}
	k.jetstreamKey = strings.TrimSpace(string(jsk))

	signPath := filepath.Join(keysDir, auditSignKey)
	if _, err := os.Stat(signPath); errors.Is(err, os.ErrNotExist) {
		sk, err := audit.GenerateKey()
		if err != nil {
			return fail(err)
		}
		if err := sk.WriteKeyFile(signPath); err != nil {
			return fail(err)
		}
	}
	if k.auditSigner, err = audit.LoadKeyFile(signPath); err != nil {
		return fail(err)
	}
	if err := writePublicKey(filepath.Join(keysDir, auditPubKey), k.auditSigner); err != nil {
		return fail(err)
	}
	subjPath := filepath.Join(keysDir, auditSubjKey)
	if _, err := os.Stat(subjPath); errors.Is(err, os.ErrNotExist) {
		if err := auditsink.GenerateSubjectKey(subjPath); err != nil {
			return fail(err)
		}
	}
	if k.auditSubject, err = auditsink.LoadSubjectKey(subjPath); err != nil {
		return fail(err)
	}

	// The first admin: a random bearer token for the local operator, its
	// hash in the principals file.
	tokPath := filepath.Join(keysDir, adminTokenFile)
	tok, err := readOrCreateSecret(tokPath, func() ([]byte, error) { return []byte(randomHex(32) + "\n"), nil })
	if err != nil {
		return fail(err)
	}
	principals := filepath.Join(dataDir, tokensFile)
	if _, err := os.Stat(principals); errors.Is(err, os.ErrNotExist) {
		doc := fmt.Sprintf("# API principals: token hashes only (facegate up created the first admin;\n"+
			"# its token is in %s).\nprincipals:\n  - name: admin\n    role: admin\n    sites: [\"*\"]\n    token_sha256: %s\n",
			tokPath, apiauth.HashToken(strings.TrimSpace(string(tok))))
		if err := os.WriteFile(principals, []byte(doc), 0o600); err != nil {
			return fail(fmt.Errorf("allinone: write %s: %w", principals, err))
		}
	}
	return k, nil
}

// readOrCreateSecret returns the file's bytes, creating it (0600) with
// gen's bytes when it does not exist.
func readOrCreateSecret(path string, gen func() ([]byte, error)) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("allinone: read %s: %w", path, err)
	}
	if b, err = gen(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("allinone: create %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("allinone: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("allinone: write %s: %w", path, err)
	}
	return b, nil
}

// writePublicKey writes the checkpoint verification key (PEM) for
// `facegate audit verify --pubkey`.
func writePublicKey(path string, k *audit.SigningKey) error {
	want, err := audit.MarshalPublicKey(k.PublicKey())
	if err != nil {
		return err
	}
	if b, err := os.ReadFile(path); err == nil && string(b) == string(want) {
		return nil
	}
	if err := os.WriteFile(path, want, 0o644); err != nil {
		return fmt.Errorf("allinone: write %s: %w", path, err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
