package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types and reasons shared by the kinds of this group. Other
// components (the matcher, dashboards, kubectl wait) key on these strings, so
// they are part of the API.
const (
	// ConditionValidated is True on a FaceModel whose artefact was fetched, whose
	// SHA-256 matched and whose ONNX graph matches the declared input spec and
	// embedding size.
	ConditionValidated = "Validated"
	// ConditionModelResolved is True on an EmbedderPool whose model exists and is validated.
	ConditionModelResolved = "ModelResolved"
	// ConditionScalingActive is True while the pool's consumer lag can be read.
	ConditionScalingActive = "ScalingActive"
	// ConditionScalingLimited is True when min/max replicas clamped the lag-derived count.
	ConditionScalingLimited = "ScalingLimited"
	// ConditionReady is True when a pool has at least one ready replica (or is
	// scaled to zero on purpose) and, on a gallery, when an active model serves.
	ConditionReady = "Ready"
	// ConditionProgressing is True on a gallery while a rollout is under way.
	ConditionProgressing = "Progressing"
	// ConditionRolloutAborted is True on a gallery whose last rollout was
	// aborted; the previously active model stays active.
	ConditionRolloutAborted = "RolloutAborted"

	ReasonChecksumVerified    = "ChecksumVerified"
	ReasonChecksumMismatch    = "ChecksumMismatch"
	ReasonArtifactUnavailable = "ArtifactUnavailable"
	ReasonInputSpecMismatch   = "InputSpecMismatch"
	ReasonUnknownModel        = "UnknownModel"
	ReasonModelNotValidated   = "ModelNotValidated"
	ReasonModelValidated      = "ModelValidated"
)

// ArtifactSource says where the ONNX file of a model is and what it must hash to.
type ArtifactSource struct {
	// URL of the ONNX file, fetched by the operator for validation and by
	// embedders at start-up. http and https only: models baked into the
	// embedder image are still published at a URL so they can be verified.
	// +kubebuilder:validation:Pattern=`^https?://\S+$`
	// +kubebuilder:validation:MaxLength=2048
	URL string `json:"url"`

	// SHA256 of the file, 64 lowercase hex digits. Embedders refuse to load a
	// file that does not hash to it.
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-f0-9]{64}$')",message="sha256 must be 64 lowercase hexadecimal digits (the SHA-256 of the ONNX file)"
	SHA256 string `json:"sha256"`

	// SizeBytes, when set, must equal the file's size; the operator also uses
	// it to refuse oversized downloads early.
	// +optional
	// +kubebuilder:validation:Minimum=1
	SizeBytes int64 `json:"sizeBytes,omitempty"`
}

// TensorLayout is the memory order of an image tensor.
// +kubebuilder:validation:Enum=NHWC;NCHW
type TensorLayout string

const (
	LayoutNHWC TensorLayout = "NHWC"
	LayoutNCHW TensorLayout = "NCHW"
)

// InputSpec describes the model's image input; it is checked against the
// ONNX graph's first input during validation.
type InputSpec struct {
	// Name of the graph input; empty means the first non-initializer input.
	// +optional
	Name string `json:"name,omitempty"`
	// Width in pixels of the aligned face crop.
	// +kubebuilder:validation:Minimum=8
	// +kubebuilder:validation:Maximum=4096
	Width int32 `json:"width"`
	// Height in pixels of the aligned face crop.
	// +kubebuilder:validation:Minimum=8
	// +kubebuilder:validation:Maximum=4096
	Height int32 `json:"height"`
	// Channels of the image (3 = RGB).
	// +kubebuilder:validation:Enum=1;3
	// +kubebuilder:default=3
	// +optional
	Channels int32 `json:"channels,omitempty"`
	// Layout of the input tensor. facegate's converted models are NHWC with
	// raw 0..255 pixels and normalisation built into the graph.
	// +kubebuilder:default=NHWC
	// +optional
	Layout TensorLayout `json:"layout,omitempty"`
}

// DetectorRef names the face detector whose boxes and keypoints this model's
// alignment expects. Encodings depend on the crop, so a model is only
// calibrated together with its detector.
type DetectorRef struct {
	// ModelID of the detector, e.g. blazeface-256.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	ModelID string `json:"modelID"`
	// Artifact of the detector when it is not built into the embedder image.
	// +optional
	Artifact *ArtifactSource `json:"artifact,omitempty"`
}

// FaceModelSpec is one immutable version of a face encoder. A new version is a
// new FaceModel object; a FaceGallery rolls it out.
// +kubebuilder:validation:XValidation:rule="self.artifact == oldSelf.artifact && self.input == oldSelf.input && self.embeddingSize == oldSelf.embeddingSize",message="artifact, input and embeddingSize are immutable: create a new FaceModel for a new model version"
type FaceModelSpec struct {
	// ModelID is the model family, e.g. dlib-resnet34-128.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=63
	ModelID string `json:"modelID"`

	// Version of this build of the model (free text, e.g. 1.0.0 or a date).
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Version string `json:"version,omitempty"`

	Artifact ArtifactSource `json:"artifact"`

	Input InputSpec `json:"input"`

	// EmbeddingOutput names the graph output holding the encoding; empty
	// means the first output. Models with extra heads (age, gender) set it.
	// +optional
	// +kubebuilder:validation:MaxLength=255
	EmbeddingOutput string `json:"embeddingOutput,omitempty"`

	// EmbeddingSize is the length of the L2-normalised encoding.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=8192
	EmbeddingSize int32 `json:"embeddingSize"`

	// Threshold is the calibrated L2 distance below which two encodings of this
	// model are the same person. Distances of unit vectors lie in [0, 2].
	// +kubebuilder:validation:XValidation:rule="self > 0.0 && self <= 2.0",message="threshold must be an L2 distance in (0, 2]"
	Threshold float64 `json:"threshold"`

	Detector DetectorRef `json:"detector"`
}

// FaceModelPhase summarises validation.
// +kubebuilder:validation:Enum=Pending;Validated;Invalid
type FaceModelPhase string

const (
	FaceModelPending   FaceModelPhase = "Pending"
	FaceModelValidated FaceModelPhase = "Validated"
	FaceModelInvalid   FaceModelPhase = "Invalid"
)

// FaceModelStatus reports validation of the artefact.
type FaceModelStatus struct {
	// +optional
	Phase FaceModelPhase `json:"phase,omitempty"`
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// VerifiedSHA256 is the hash the operator computed over the downloaded file.
	// +optional
	VerifiedSHA256 string `json:"verifiedSHA256,omitempty"`
	// SizeBytes of the downloaded file.
	// +optional
	SizeBytes int64 `json:"sizeBytes,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// FaceModel is a versioned face encoder: its ONNX artefact and checksum, input
// spec, embedding size, calibrated threshold and paired detector.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=fm,categories=facegate
// +kubebuilder:printcolumn:name="Model",type=string,JSONPath=`.spec.modelID`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.spec.version`
// +kubebuilder:printcolumn:name="Dim",type=integer,JSONPath=`.spec.embeddingSize`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type FaceModel struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   FaceModelSpec   `json:"spec"`
	Status FaceModelStatus `json:"status,omitempty"`
}

// FaceModelList is a list of FaceModels.
// +kubebuilder:object:root=true
type FaceModelList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FaceModel `json:"items"`
}

func init() {
	SchemeBuilder.Register(&FaceModel{}, &FaceModelList{})
}
