package matcher

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	decisions      *prometheus.CounterVec
	match          prometheus.Histogram
	frameToDecison prometheus.Histogram
	faceEvents     *prometheus.CounterVec
	unmapped       prometheus.Counter
	claims         *prometheus.CounterVec
	suppressed     *prometheus.CounterVec
	publishErrors  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	// Buckets from 100 µs: an exact search of a small gallery is well under
	// a millisecond; the frame-to-decision path is tens to hundreds.
	m := metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "facegate_matcher_decisions_total",
			Help: "Decisions stored, by outcome and mode."}, []string{"outcome", "mode"}),
		match: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "facegate_matcher_match_seconds",
			Help: "Search and policy time of one face event or verified face.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		frameToDecison: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "facegate_matcher_frame_to_decision_seconds",
			Help: "Capture to decision publication, for decisions a face caused.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		faceEvents: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "facegate_matcher_face_events_total",
			Help: "Face events received, by result (processed, unmapped, other_space, expired, malformed, failed)."}, []string{"result"}),
		unmapped: prometheus.NewCounter(prometheus.CounterOpts{Name: "facegate_matcher_unmapped_faces_total",
			Help: "Face events from a camera that serves no door."}),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "facegate_matcher_claims_total",
			Help: "Claims received, by result (opened, unknown_badge, unknown_door, not_verify_door, malformed, duplicate)."}, []string{"result"}),
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "facegate_matcher_suppressed_decisions_total",
			Help: "Decisions not published because one was made within the cooldown, by outcome."}, []string{"outcome"}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "facegate_matcher_publish_errors_total",
			Help: "Decision or error-event publishes that failed (the input is redelivered)."}),
	}
	for _, c := range []prometheus.Collector{m.decisions, m.match, m.frameToDecison, m.faceEvents, m.unmapped, m.claims, m.suppressed, m.publishErrors} {
		if err := reg.Register(c); err != nil {
			return metrics{}, fmt.Errorf("matcher: register metrics: %w", err)
		}
	}
	return m, nil
}
