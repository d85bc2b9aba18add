package embedder

import "github.com/prometheus/client_golang/prometheus"

// Collectors exposes the worker's counters to Prometheus under
// facegate_embedder_*, labelled with the embedding space so that the pools
// of two models in a rollout can be told apart.
func (w *Worker) Collectors(space string) []prometheus.Collector {
	st := &w.stats
	c := func(name, help string, v func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "facegate", Subsystem: "embedder", Name: name, Help: help,
			ConstLabels: prometheus.Labels{"space": space},
		}, func() float64 { return float64(v()) })
	}
	return []prometheus.Collector{
		c("frames_received_total", "Frame messages fetched from the FRAMES stream.", st.Received.Load),
		c("face_events_published_total", "Face events stored in the FACES stream (de-duplicated republishes included).", st.Published.Load),
		c("faces_total", "Faces in published face events.", st.Faces.Load),
		c("frames_expired_total", "Frames older than the maximum age, ended with an expiry record.", st.Expired.Load),
		c("frames_poison_total", "Frames terminated as undecodable, with an error event.", st.Poison.Load),
		c("frames_retried_total", "Frames negatively acknowledged after a transient failure.", st.Retried.Load),
		c("frames_failed_total", "Frames terminated after exhausting their deliveries.", st.Failed.Load),
	}
}
