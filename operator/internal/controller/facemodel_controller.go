package controller

import (
	"context"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	facegatev1 "github.com/facegate/facegate/operator/api/v1alpha1"
	"github.com/facegate/facegate/operator/internal/artifact"
)

// FaceModelReconciler validates FaceModel artefacts: checksum, size, and the
// ONNX graph's input and output shapes against the spec.
type FaceModelReconciler struct {
	client.Client
	Recorder events.EventRecorder
	HTTP     *http.Client
	// MaxArtifactBytes bounds downloads (the file is held in memory).
	MaxArtifactBytes int64
	// RetryAfter is the wait before re-fetching an unavailable artefact.
	RetryAfter time.Duration
	Now        Clock
}

// +kubebuilder:rbac:groups=facegate.io,resources=facemodels,verbs=get;list;watch
// +kubebuilder:rbac:groups=facegate.io,resources=facemodels/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile implements reconcile.Reconciler.
func (r *FaceModelReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var fm facegatev1.FaceModel
	if err := r.Get(ctx, req.NamespacedName, &fm); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	done := fm.Status.ObservedGeneration == fm.Generation &&
		(fm.Status.Phase == facegatev1.FaceModelValidated || fm.Status.Phase == facegatev1.FaceModelInvalid)
	if done {
		return ctrl.Result{}, nil
	}

	res, err := artifact.Verify(ctx, r.HTTP, artifact.Expect{
		URL:           fm.Spec.Artifact.URL,
		SHA256:        fm.Spec.Artifact.SHA256,
		SizeBytes:     fm.Spec.Artifact.SizeBytes,
		MaxBytes:      r.MaxArtifactBytes,
		InputName:     fm.Spec.Input.Name,
		Width:         int64(fm.Spec.Input.Width),
		Height:        int64(fm.Spec.Input.Height),
		Channels:      int64(channelsOf(&fm)),
		Layout:        string(fm.Spec.Input.Layout),
		OutputName:    fm.Spec.EmbeddingOutput,
		EmbeddingSize: int64(fm.Spec.EmbeddingSize),
	})
	now := metav1.NewTime(r.Now.now())
	st := fm.Status.DeepCopy()
	st.ObservedGeneration = fm.Generation
	st.VerifiedSHA256, st.SizeBytes = res.SHA256, res.Size
	var result ctrl.Result
	switch {
	case err == nil:
		st.Phase = facegatev1.FaceModelValidated
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: facegatev1.ConditionValidated, Status: metav1.ConditionTrue, Reason: facegatev1.ReasonChecksumVerified,
			ObservedGeneration: fm.Generation, LastTransitionTime: now,
			Message: fmt.Sprintf("SHA-256 %s and size %d bytes verified; graph input and %d-d output match the spec", res.SHA256, res.Size, fm.Spec.EmbeddingSize),
		})
		r.Recorder.Eventf(&fm, nil, corev1.EventTypeNormal, facegatev1.ReasonChecksumVerified, "Validate", "artefact verified: SHA-256 %s, %d bytes", res.SHA256, res.Size)
	case artifact.ReasonOf(err) == artifact.ReasonUnavailable:
		// Possibly transient (network, artefact store): stay Pending and retry.
		st.Phase = facegatev1.FaceModelPending
		st.ObservedGeneration = fm.Status.ObservedGeneration
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: facegatev1.ConditionValidated, Status: metav1.ConditionFalse, Reason: facegatev1.ReasonArtifactUnavailable,
			ObservedGeneration: fm.Generation, LastTransitionTime: now, Message: err.Error(),
		})
		r.Recorder.Eventf(&fm, nil, corev1.EventTypeWarning, facegatev1.ReasonArtifactUnavailable, "Validate", "%s", err)
		result.RequeueAfter = r.RetryAfter
	default:
		st.Phase = facegatev1.FaceModelInvalid
		reason := artifact.ReasonOf(err)
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: facegatev1.ConditionValidated, Status: metav1.ConditionFalse, Reason: reason,
			ObservedGeneration: fm.Generation, LastTransitionTime: now, Message: err.Error(),
		})
		r.Recorder.Eventf(&fm, nil, corev1.EventTypeWarning, reason, "Validate", "%s", err)
	}
	log.FromContext(ctx).Info("validated model artefact", "phase", st.Phase, "error", err)
	fm.Status = *st
	if err := r.Status().Update(ctx, &fm); err != nil {
		// A conflict is retried by the work queue with a fresh read.
		return ctrl.Result{}, fmt.Errorf("update FaceModel %s status: %w", req.NamespacedName, err)
	}
	return result, nil
}

// channelsOf applies the API default for objects created before defaulting.
func channelsOf(fm *facegatev1.FaceModel) int32 {
	if fm.Spec.Input.Channels == 0 {
		return 3
	}
	return fm.Spec.Input.Channels
}

// SetupWithManager registers the controller.
func (r *FaceModelReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&facegatev1.FaceModel{}).
		Named("facemodel").
		Complete(r)
}
