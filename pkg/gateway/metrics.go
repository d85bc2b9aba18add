package gateway

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Drop reasons counted by facegate_gateway_frames_dropped_total besides the
// sources' own (source.DropOversize, source.DropCorrupt).
const (
	// DropRate: the camera sent faster than its configured fps.
	DropRate = "rate"
	// DropBacklog: a newer frame arrived while this one was still waiting
	// for the publisher.
	DropBacklog = "backlog"
	// DropNATSDown: the NATS connection was down.
	DropNATSDown = "nats_unavailable"
	// DropPublishError: the publish failed or was not acknowledged in time.
	DropPublishError = "publish_error"
	// DropInvalid: the frame failed validation before publishing.
	DropInvalid = "invalid"
)

// Claim results counted by facegate_gateway_claims_total.
const (
	ClaimAccepted         = "accepted"
	ClaimDuplicate        = "duplicate"
	ClaimUnauthorized     = "unauthorized"
	ClaimForbidden        = "forbidden"
	ClaimInvalid          = "invalid"
	ClaimTooLarge         = "too_large"
	ClaimMethodNotAllowed = "method_not_allowed"
	ClaimUnavailable      = "unavailable"
)

// Metrics are the gateway's Prometheus metrics.
type Metrics struct {
	Published  *prometheus.CounterVec // site, camera
	Dropped    *prometheus.CounterVec // site, camera, reason
	Reconnects *prometheus.CounterVec // site, camera
	PublishSec prometheus.Histogram
	Claims     *prometheus.CounterVec // site, result
}

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered, for tests that read the values directly).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "facegate_gateway_frames_published_total",
			Help: "Frames stored in the FRAMES stream (duplicates included).",
		}, []string{"site", "camera"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "facegate_gateway_frames_dropped_total",
			Help: "Frames not published, by reason (rate, oversize, corrupt, backlog, nats_unavailable, publish_error, invalid).",
		}, []string{"site", "camera", "reason"}),
		Reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "facegate_gateway_source_reconnects_total",
			Help: "Times a camera source failed and was started again.",
		}, []string{"site", "camera"}),
		PublishSec: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "facegate_gateway_publish_seconds",
			Help:    "Time from publish to JetStream acknowledgement of a frame.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		Claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "facegate_gateway_claims_total",
			Help: "Badge claims received, by result.",
		}, []string{"site", "result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.Published, m.Dropped, m.Reconnects, m.PublishSec, m.Claims} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("gateway: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
