package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// GalleryPool is one embedder pool of a gallery, stamped out once per model in
// play (the active one and, during a rollout, the candidate).
type GalleryPool struct {
	// Name of the pool within the gallery, e.g. bldg-a or gpu.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=30
	Name string `json:"name"`

	Consumer ConsumerTemplate `json:"consumer"`

	EmbedderTemplate `json:",inline"`
}

// ReembedSpec configures the Job that rebuilds the gallery in a new model's
// collection from the retained enrolment photos.
type ReembedSpec struct {
	// Image of the job; empty means the operator's --reembed-image.
	// +optional
	Image string `json:"image,omitempty"`
	// BackoffLimit of the Job.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=20
	// +kubebuilder:default=2
	// +optional
	BackoffLimit int32 `json:"backoffLimit"`
	// ActiveDeadlineSeconds bounds the whole re-embedding.
	// +kubebuilder:validation:Minimum=60
	// +optional
	ActiveDeadlineSeconds *int64 `json:"activeDeadlineSeconds,omitempty"`
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// +optional
	RuntimeClassName *string `json:"runtimeClassName,omitempty"`
	// PhotoClaimName is a PersistentVolumeClaim with the retained enrolment
	// photos, mounted read-only at /var/lib/facegate/photos; the photo
	// store is its folder "store" (the API's --photo-dir in the chart).
	// +optional
	PhotoClaimName string `json:"photoClaimName,omitempty"`
	// KeysSecretName is a Secret holding the key-encryption keys (the
	// chart's keys.existingSecret): the photos are sealed and the new
	// templates must be. An init container copies the keys into a memory
	// volume with the file modes the key provider requires.
	// +optional
	KeysSecretName string `json:"keysSecretName,omitempty"`
	// NATSURL of the servers holding the ENROLMENTS stream; empty means
	// the operator's --nats-url.
	// +optional
	NATSURL string `json:"natsURL,omitempty"`
	// NATSCredentialsSecret names a Secret whose key "nats.creds" holds the
	// Job's NATS credential (a natsauth reembed user: a .creds file or an
	// NKEY seed) and whose optional key "inbox-prefix" its inbox prefix,
	// the layout of an EmbedderPool's credentialsSecret.
	// +optional
	NATSCredentialsSecret string `json:"natsCredentialsSecret,omitempty"`
	// EnvFrom supplies the photo store and index configuration.
	// +optional
	EnvFrom []corev1.EnvFromSource `json:"envFrom,omitempty"`
	// ServiceAccountName of the job's pod.
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
}

// RolloutPolicy holds the gates of a model rollout.
type RolloutPolicy struct {
	// MinAgreement is the fraction of shadowed faces on which the candidate
	// model's decision (identity or unknown) must equal the active model's.
	// +kubebuilder:validation:XValidation:rule="self > 0.0 && self <= 1.0",message="minAgreement must be a fraction in (0, 1]"
	// +kubebuilder:default=0.99
	// +optional
	MinAgreement float64 `json:"minAgreement,omitempty"`
	// MinCompleteness is the fraction of the active gallery's templates that
	// must exist in the candidate collection.
	// +kubebuilder:validation:XValidation:rule="self > 0.0 && self <= 1.0",message="minCompleteness must be a fraction in (0, 1]"
	// +kubebuilder:default=1.0
	// +optional
	MinCompleteness float64 `json:"minCompleteness,omitempty"`
	// MinShadowSamples faces must be compared before agreement is judged.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:default=1000
	// +optional
	MinShadowSamples int64 `json:"minShadowSamples,omitempty"`
	// ShadowTimeoutSeconds aborts a rollout whose gates have not passed in time.
	// +kubebuilder:validation:Minimum=60
	// +kubebuilder:default=86400
	// +optional
	ShadowTimeoutSeconds int64 `json:"shadowTimeoutSeconds,omitempty"`
	// RollbackWindowSeconds keeps the previous model's pools and collection
	// after the switch; setting spec.model back within it switches back at once.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:default=604800
	// +optional
	RollbackWindowSeconds int64 `json:"rollbackWindowSeconds"`

	// +optional
	// +kubebuilder:default={}
	Reembed ReembedSpec `json:"reembed,omitempty"`
}

// FaceGallerySpec is the gallery the matcher searches and the model it should
// be encoded with. Changing Model starts a rollout.
type FaceGallerySpec struct {
	// Model is the FaceModel (same namespace) the gallery should be encoded
	// with. Setting it back to the previous model within the rollback window
	// rolls back; setting it back to the active model during a rollout aborts.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Model string `json:"model"`

	// Pools serve the gallery's model; each is created once per model in play.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +listType=map
	// +listMapKey=name
	Pools []GalleryPool `json:"pools"`

	// +optional
	// +kubebuilder:default={}
	Rollout RolloutPolicy `json:"rollout,omitempty"`
}

// ModelBinding is a model bound to a collection: what the matcher searches.
// The matcher must only compare an encoding with the templates of the same
// binding's collection.
type ModelBinding struct {
	// Model is the FaceModel name.
	Model string `json:"model"`
	// ModelID and SHA256 identify the encoder exactly.
	ModelID string `json:"modelID"`
	SHA256  string `json:"sha256"`
	// Collection holding this model's templates (one per model build).
	Collection string `json:"collection"`
	// EmbeddingSize and Threshold from the FaceModel, copied so the matcher
	// switches all of them in one read.
	EmbeddingSize int32   `json:"embeddingSize"`
	Threshold     float64 `json:"threshold"`
	// Pools are the EmbedderPools encoding for this binding.
	// +optional
	Pools []string `json:"pools,omitempty"`
	// Since is when the binding took this role.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
}

// RolloutPhase is a state of the rollout state machine (operator/README.md).
// +kubebuilder:validation:Enum=Validating;Provisioning;Reembedding;Shadowing;Switched;Completed;Aborted;RolledBack
type RolloutPhase string

const (
	PhaseValidating   RolloutPhase = "Validating"
	PhaseProvisioning RolloutPhase = "Provisioning"
	PhaseReembedding  RolloutPhase = "Reembedding"
	PhaseShadowing    RolloutPhase = "Shadowing"
	PhaseSwitched     RolloutPhase = "Switched"
	PhaseCompleted    RolloutPhase = "Completed"
	PhaseAborted      RolloutPhase = "Aborted"
	PhaseRolledBack   RolloutPhase = "RolledBack"
)

// ShadowReport is written by the matcher through the status subresource.
type ShadowReport struct {
	// Model is the candidate FaceModel the report is about; reports about
	// another model are ignored.
	Model string `json:"model"`
	// Samples is the number of live faces decided by both models, each
	// against its own collection.
	// +kubebuilder:validation:Minimum=0
	Samples int64 `json:"samples"`
	// Agreement is the fraction of those samples with the same decision.
	// +kubebuilder:validation:XValidation:rule="self >= 0.0 && self <= 1.0",message="agreement must be a fraction in [0, 1]"
	Agreement float64 `json:"agreement"`
	// ObservedAt is when the matcher computed it.
	ObservedAt metav1.Time `json:"observedAt"`
}

// GalleryReport is written by the matcher: how many templates each
// collection holds.
type GalleryReport struct {
	// Model is the candidate FaceModel the report is about.
	Model string `json:"model"`
	// Expected templates: those of the active collection.
	// +kubebuilder:validation:Minimum=0
	Expected int64 `json:"expected"`
	// Embedded templates present in the candidate collection.
	// +kubebuilder:validation:Minimum=0
	Embedded int64 `json:"embedded"`
	// ObservedAt is when the matcher counted.
	ObservedAt metav1.Time `json:"observedAt"`
}

// RolloutStatus is the state of the current or last rollout.
type RolloutStatus struct {
	// TargetModel is the FaceModel being rolled out.
	TargetModel string       `json:"targetModel"`
	Phase       RolloutPhase `json:"phase"`
	// Reason and Message say why the rollout is in this phase.
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
	// StartedAt is when the rollout began; PhaseSince when the phase was entered.
	StartedAt  metav1.Time `json:"startedAt"`
	PhaseSince metav1.Time `json:"phaseSince"`
	// ReembedJob is the batch/v1 Job rebuilding the candidate collection.
	// +optional
	ReembedJob string `json:"reembedJob,omitempty"`
	// Shadow is written by the matcher.
	// +optional
	Shadow *ShadowReport `json:"shadow,omitempty"`
	// Gallery is written by the matcher.
	// +optional
	Gallery *GalleryReport `json:"gallery,omitempty"`
}

// FaceGalleryStatus is the contract with the matcher: it searches
// Active.Collection with Active's model and threshold, and switches its alias
// when Active changes.
type FaceGalleryStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Active is what live decisions use.
	// +optional
	Active *ModelBinding `json:"active,omitempty"`
	// Candidate is the model being rolled out (shadow decisions only).
	// +optional
	Candidate *ModelBinding `json:"candidate,omitempty"`
	// Previous is kept until RetireAfter for rollback.
	// +optional
	Previous *ModelBinding `json:"previous,omitempty"`
	// RetireAfter is when Previous's pools and collection are retired.
	// +optional
	RetireAfter *metav1.Time `json:"retireAfter,omitempty"`
	// +optional
	Rollout *RolloutStatus `json:"rollout,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// FaceGallery is a gallery of enrolled faces searched by the matcher, the
// pools that encode for it, and the rollout of a new model into it.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=fg,categories=facegate
// +kubebuilder:printcolumn:name="Model",type=string,JSONPath=`.spec.model`
// +kubebuilder:printcolumn:name="Active",type=string,JSONPath=`.status.active.model`
// +kubebuilder:printcolumn:name="Rollout",type=string,JSONPath=`.status.rollout.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type FaceGallery struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   FaceGallerySpec   `json:"spec"`
	Status FaceGalleryStatus `json:"status,omitempty"`
}

// FaceGalleryList is a list of FaceGalleries.
// +kubebuilder:object:root=true
type FaceGalleryList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FaceGallery `json:"items"`
}

func init() {
	SchemeBuilder.Register(&FaceGallery{}, &FaceGalleryList{})
}
