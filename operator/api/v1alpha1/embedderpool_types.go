package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// GPUResource is the extended resource name the NVIDIA device plugin
// advertises; a pool asking for it gets the CUDA execution provider.
const GPUResource corev1.ResourceName = "nvidia.com/gpu"

// ConsumerTemplate locates the frames a pool consumes; the durable name is
// added per pool (a FaceGallery derives it per model).
type ConsumerTemplate struct {
	// Stream holding the frames, e.g. FRAMES. Shadowing a new model needs a
	// second consumer on the same subjects, so the stream must use limits or
	// interest retention, not work-queue retention.
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_-]+$`
	// +kubebuilder:validation:MaxLength=255
	Stream string `json:"stream"`
	// FilterSubject restricts the consumer, e.g. facegate.frames.bldg-a.> for
	// a pool serving one building.
	// +optional
	// +kubebuilder:validation:MaxLength=255
	FilterSubject string `json:"filterSubject,omitempty"`
	// URL of the NATS servers; empty means the operator's --nats-url.
	// +optional
	// +kubebuilder:validation:Pattern=`^(nats|tls|wss?)://\S+$`
	URL string `json:"url,omitempty"`
	// CredentialsSecret names a Secret in the pool's namespace whose key
	// "nats.creds" holds the NATS credentials of the pool's account. It is
	// mounted into the embedders; the operator reads lag with its own
	// credentials.
	// +optional
	CredentialsSecret string `json:"credentialsSecret,omitempty"`
}

// ConsumerSpec names the JetStream durable pull consumer a pool's embedders
// share. The operator creates it when it is missing so that a pool scaled to
// zero still accumulates lag and can be woken up.
type ConsumerSpec struct {
	ConsumerTemplate `json:",inline"`
	// Durable name of the consumer.
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_-]+$`
	// +kubebuilder:validation:MaxLength=255
	Durable string `json:"durable"`
}

// ScalingSpec is the lag-driven autoscaling of a pool, with the semantics of
// KEDA's NATS JetStream scaler driving an HPA (see operator/README.md).
// +kubebuilder:validation:XValidation:rule="self.minReplicas <= self.maxReplicas",message="minReplicas must be less than or equal to maxReplicas"
type ScalingSpec struct {
	// MinReplicas; 0 allows scale to zero when lag is at or below ActivationLag.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:default=1
	// +optional
	MinReplicas int32 `json:"minReplicas"`
	// MaxReplicas is a hard upper bound.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	MaxReplicas int32 `json:"maxReplicas"`
	// TargetLagPerReplica is the consumer lag (pending + ack-pending messages)
	// one replica is expected to carry; desired = ceil(lag / target).
	// +kubebuilder:validation:XValidation:rule="self > 0",message="targetLagPerReplica must be greater than 0 (messages of consumer lag per replica)"
	TargetLagPerReplica int64 `json:"targetLagPerReplica"`
	// ActivationLag: at or below it the pool is idle and, with minReplicas 0,
	// scales to zero after CooldownSeconds.
	// +kubebuilder:validation:Minimum=0
	// +optional
	ActivationLag int64 `json:"activationLag,omitempty"`
	// Tolerance in percent: no change while lag/(target*replicas) is within
	// 1 +/- tolerance (the HPA's default is 10).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	// +kubebuilder:default=10
	// +optional
	TolerancePercent int32 `json:"tolerancePercent"`
	// ScaleUpStabilizationSeconds: scale up to the lowest recommendation of
	// this window (0 = immediately).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +optional
	ScaleUpStabilizationSeconds int32 `json:"scaleUpStabilizationSeconds,omitempty"`
	// ScaleDownStabilizationSeconds: scale down to the highest recommendation
	// of this window.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	// +kubebuilder:default=300
	// +optional
	ScaleDownStabilizationSeconds int32 `json:"scaleDownStabilizationSeconds"`
	// CooldownSeconds is how long the lag must stay at or below ActivationLag
	// before a pool with minReplicas 0 goes to zero.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=86400
	// +kubebuilder:default=300
	// +optional
	CooldownSeconds int32 `json:"cooldownSeconds"`
	// PollingSeconds between lag reads.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=600
	// +kubebuilder:default=15
	// +optional
	PollingSeconds int32 `json:"pollingSeconds,omitempty"`
}

// EmbedderTemplate is everything about a pool's pods except its model; a
// FaceGallery stamps it out once per model during a rollout.
type EmbedderTemplate struct {
	// Image of the embedder; empty means the operator's --embedder-image.
	// +optional
	Image string `json:"image,omitempty"`
	// BatchSize of faces per inference call.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1024
	// +kubebuilder:default=8
	// +optional
	BatchSize int32 `json:"batchSize,omitempty"`

	Scaling ScalingSpec `json:"scaling"`

	// Resources of the embedder container. A limit on nvidia.com/gpu selects
	// the CUDA execution provider.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
	// RuntimeClassName, e.g. nvidia, for GPU nodes whose container runtime
	// needs the NVIDIA hook.
	// +optional
	RuntimeClassName *string `json:"runtimeClassName,omitempty"`
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`
	// ServiceAccountName of the embedder pods.
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	// Env is appended to the variables the operator sets.
	// +optional
	Env []corev1.EnvVar `json:"env,omitempty"`
	// PodAnnotations, e.g. for metrics scraping.
	// +optional
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`
}

// ModelReference names a FaceModel in the same namespace.
type ModelReference struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// EmbedderPoolSpec is a set of embedders for one model, scaled on the lag of
// one JetStream consumer.
type EmbedderPoolSpec struct {
	// ModelRef is the FaceModel the pool runs.
	ModelRef ModelReference `json:"modelRef"`

	Consumer ConsumerSpec `json:"consumer"`

	// Collection the embedders' faces are tagged for; empty means the
	// model's own collection name. Encodings of different models never share
	// a collection.
	// +optional
	Collection string `json:"collection,omitempty"`

	EmbedderTemplate `json:",inline"`
}

// LagStatus is the last consumer reading.
type LagStatus struct {
	// Pending messages not yet delivered to any replica (num_pending).
	Pending int64 `json:"pending"`
	// AckPending messages delivered but not yet acknowledged (num_ack_pending).
	AckPending int64 `json:"ackPending"`
	// Total = Pending + AckPending, the scaling metric.
	Total int64 `json:"total"`
	// ObservedAt is when it was read.
	ObservedAt metav1.Time `json:"observedAt"`
}

// Recommendation is one raw replica recommendation kept for the
// stabilisation windows; kept in status so a restarted operator keeps them.
type Recommendation struct {
	Time     metav1.Time `json:"time"`
	Replicas int32       `json:"replicas"`
}

// EmbedderPoolStatus reports the pool's size, lag and why it has that size.
type EmbedderPoolStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Replicas the operator last wrote to the Deployment.
	// +optional
	Replicas int32 `json:"replicas"`
	// ReadyReplicas reported by the Deployment.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas"`
	// DesiredReplicas from lag alone, before stabilisation and min/max.
	// +optional
	DesiredReplicas int32 `json:"desiredReplicas"`
	// +optional
	Lag *LagStatus `json:"lag,omitempty"`
	// LastActiveTime is the last time lag exceeded the activation threshold.
	// +optional
	LastActiveTime *metav1.Time `json:"lastActiveTime,omitempty"`
	// LastScaleTime is when the replica count last changed.
	// +optional
	LastScaleTime *metav1.Time `json:"lastScaleTime,omitempty"`
	// Recommendations within the longer stabilisation window, oldest first.
	// +optional
	// +kubebuilder:validation:MaxItems=512
	Recommendations []Recommendation `json:"recommendations,omitempty"`
	// ModelID and Collection the pool serves, copied from its model.
	// +optional
	ModelID string `json:"modelID,omitempty"`
	// +optional
	Collection string `json:"collection,omitempty"`
	// Deployment the pool owns.
	// +optional
	Deployment string `json:"deployment,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// EmbedderPool runs embedders for one FaceModel and scales them on the lag of
// their JetStream consumer.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ep,categories=facegate
// +kubebuilder:printcolumn:name="Model",type=string,JSONPath=`.spec.modelRef.name`
// +kubebuilder:printcolumn:name="Min",type=integer,JSONPath=`.spec.scaling.minReplicas`
// +kubebuilder:printcolumn:name="Max",type=integer,JSONPath=`.spec.scaling.maxReplicas`
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.status.replicas`
// +kubebuilder:printcolumn:name="Lag",type=integer,JSONPath=`.status.lag.total`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type EmbedderPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   EmbedderPoolSpec   `json:"spec"`
	Status EmbedderPoolStatus `json:"status,omitempty"`
}

// EmbedderPoolList is a list of EmbedderPools.
// +kubebuilder:object:root=true
type EmbedderPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EmbedderPool `json:"items"`
}

func init() {
	SchemeBuilder.Register(&EmbedderPool{}, &EmbedderPoolList{})
}
