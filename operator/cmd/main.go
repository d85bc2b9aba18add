// Command facegate-operator runs the facegate Kubernetes controllers:
// FaceModel validation, EmbedderPool scaling on JetStream lag, and
// FaceGallery model rollouts.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	facegatev1 "github.com/facegate/facegate/operator/api/v1alpha1"
	"github.com/facegate/facegate/operator/internal/controller"
	"github.com/facegate/facegate/operator/internal/lag"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "facegate-operator:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		metricsAddr    = flag.String("metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint (0 disables it)")
		probeAddr      = flag.String("health-probe-bind-address", ":8081", "address of /healthz and /readyz")
		leaderElect    = flag.Bool("leader-elect", false, "elect a leader so that only one replica reconciles (use with more than one replica)")
		leaderNS       = flag.String("leader-election-namespace", "", "namespace of the leader election Lease (default: the pod's namespace)")
		watchNS        = flag.String("watch-namespaces", "", "comma-separated namespaces to watch; empty watches all (needs cluster-wide RBAC)")
		natsURL        = flag.String("nats-url", "", "NATS servers for consumer lag, and the default handed to embedders")
		natsCreds      = flag.String("nats-creds", "", "NATS credentials file of the operator (read-only JetStream API access suffices, plus consumer creation)")
		embedderImage  = flag.String("embedder-image", "", "default embedder image for pools that name none")
		reembedImage   = flag.String("reembed-image", "", "default image of the gallery re-embedding Job")
		maxArtifact    = flag.Int64("max-artifact-bytes", 1<<30, "largest model artefact the operator downloads to validate")
		artifactTimout = flag.Duration("artifact-timeout", 5*time.Minute, "timeout of one artefact download")
	)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	// controller-runtime's zap logger is zap behind logr (zapr).
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	logger := ctrl.Log.WithName("setup")

	if *natsURL == "" {
		return fmt.Errorf("--nats-url is required: pools are scaled on their JetStream consumer lag")
	}
	if *embedderImage == "" {
		return fmt.Errorf("--embedder-image is required")
	}
	if *reembedImage == "" {
		*reembedImage = *embedderImage
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(facegatev1.AddToScheme(scheme))

	opts := ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: *metricsAddr},
		HealthProbeBindAddress:  *probeAddr,
		LeaderElection:          *leaderElect,
		LeaderElectionID:        "facegate-operator.facegate.io",
		LeaderElectionNamespace: *leaderNS,
		// Release the lease on shutdown so a rolling update hands over at once.
		LeaderElectionReleaseOnCancel: true,
	}
	if *watchNS != "" {
		opts.Cache.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range strings.Split(*watchNS, ",") {
			if ns = strings.TrimSpace(ns); ns != "" {
				opts.Cache.DefaultNamespaces[ns] = cache.Config{}
			}
		}
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), opts)
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}

	var natsOpts []nats.Option
	if *natsCreds != "" {
		natsOpts = append(natsOpts, nats.UserCredentials(*natsCreds))
	}
	reader := lag.NewJetStream(*natsURL, natsOpts...)
	defer reader.Close()

	ctx := ctrl.SetupSignalHandler()
	if err := controller.Setup(ctx, mgr, controller.Config{
		Lag: reader, NATSURL: *natsURL,
		EmbedderImage: *embedderImage, ReembedImage: *reembedImage,
		HTTP:             &http.Client{Timeout: *artifactTimout},
		MaxArtifactBytes: *maxArtifact,
	}); err != nil {
		return fmt.Errorf("set up controllers: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("add health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("add ready check: %w", err)
	}
	logger.Info("starting", "nats", *natsURL, "watchNamespaces", *watchNS, "leaderElection", *leaderElect)
	return mgr.Start(ctx)
}
