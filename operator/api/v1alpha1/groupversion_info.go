// Package v1alpha1 holds the facegate operator's API: FaceModel (a model
// artefact and its calibration), EmbedderPool (a scaled set of embedders for
// one model) and FaceGallery (the gallery the matcher searches, and the
// rollout of a new model into it).
//
// +kubebuilder:object:generate=true
// +groupName=facegate.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of every facegate kind.
	GroupVersion = schema.GroupVersion{Group: "facegate.io", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the kinds of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
