package controller

import (
	"context"
	"net/http"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/facegate/facegate/operator/internal/lag"
)

// Config is the operator's configuration shared by its controllers.
type Config struct {
	// Lag reads consumer lag (lag.JetStream in production and tests).
	Lag lag.Reader
	// NATSURL is handed to embedders whose pool names no URL, and to
	// re-embedding Jobs whose gallery names none.
	NATSURL string
	// EmbedderImage and ReembedImage are defaults for specs naming none.
	EmbedderImage string
	ReembedImage  string
	// HTTP fetches model artefacts for validation.
	HTTP *http.Client
	// MaxArtifactBytes bounds an artefact download.
	MaxArtifactBytes int64
	// ArtifactRetry is the wait before re-fetching an unreachable artefact.
	ArtifactRetry time.Duration
	// Now is the clock (tests move it past windows).
	Now Clock
}

// Setup registers every facegate controller with the manager.
func Setup(ctx context.Context, mgr ctrl.Manager, cfg Config) error {
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 5 * time.Minute}
	}
	if cfg.MaxArtifactBytes == 0 {
		cfg.MaxArtifactBytes = 1 << 30
	}
	if cfg.ArtifactRetry == 0 {
		cfg.ArtifactRetry = time.Minute
	}
	if err := (&FaceModelReconciler{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("facegate-facemodel"),
		HTTP: cfg.HTTP, MaxArtifactBytes: cfg.MaxArtifactBytes, RetryAfter: cfg.ArtifactRetry, Now: cfg.Now,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := (&EmbedderPoolReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("facegate-embedderpool"),
		Lag: cfg.Lag, DefaultImage: cfg.EmbedderImage, DefaultNATSURL: cfg.NATSURL, Now: cfg.Now,
	}).SetupWithManager(ctx, mgr); err != nil {
		return err
	}
	return (&FaceGalleryReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: mgr.GetEventRecorder("facegate-facegallery"),
		DefaultReembedImage: cfg.ReembedImage, DefaultNATSURL: cfg.NATSURL, Now: cfg.Now,
	}).SetupWithManager(ctx, mgr)
}
