package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	facegatev1 "github.com/facegate/facegate/operator/api/v1alpha1"
)

// galleryModelIndex indexes FaceGalleries by the models they involve.
const galleryModelIndex = "facegate.io/models"

// FaceGalleryReconciler keeps a gallery's pools running and drives model
// rollouts through the state machine described in operator/README.md.
type FaceGalleryReconciler struct {
	client.Client
	// APIReader reads the gallery uncached: a reconcile must not act on a
	// status older than the one it wrote last (it would recreate pools it
	// has just removed).
	APIReader client.Reader
	Recorder  events.EventRecorder
	// DefaultReembedImage is used when a gallery names no re-embed image.
	DefaultReembedImage string
	// DefaultNATSURL is handed to re-embedding Jobs whose gallery names no
	// NATS URL.
	DefaultNATSURL string
	Now            Clock
}

// +kubebuilder:rbac:groups=facegate.io,resources=facegalleries,verbs=get;list;watch
// +kubebuilder:rbac:groups=facegate.io,resources=facegalleries/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=facegate.io,resources=facegalleries/finalizers,verbs=update
// +kubebuilder:rbac:groups=facegate.io,resources=facemodels,verbs=get;list;watch
// +kubebuilder:rbac:groups=facegate.io,resources=embedderpools,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// galleryStep carries one reconciliation's state.
type galleryStep struct {
	r   *FaceGalleryReconciler
	g   *facegatev1.FaceGallery
	st  *facegatev1.FaceGalleryStatus
	now metav1.Time
	// requeue is the earliest time-driven transition.
	requeue time.Duration
}

// Reconcile implements reconcile.Reconciler.
func (r *FaceGalleryReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var g facegatev1.FaceGallery
	if err := r.APIReader.Get(ctx, req.NamespacedName, &g); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !g.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	s := &galleryStep{r: r, g: &g, st: g.Status.DeepCopy(), now: metav1.NewTime(r.Now.now().Truncate(time.Second))}
	s.st.ObservedGeneration = g.Generation
	stepErr := s.run(ctx)
	if stepErr == nil {
		stepErr = s.sweep(ctx)
	}
	s.conditions()
	if !equality.Semantic.DeepEqual(&g.Status, s.st) {
		g.Status = *s.st
		if err := r.Status().Update(ctx, &g); err != nil {
			return ctrl.Result{}, errors.Join(stepErr, fmt.Errorf("update FaceGallery %s status: %w", req.NamespacedName, err))
		}
	}
	if stepErr != nil {
		return ctrl.Result{}, stepErr
	}
	return ctrl.Result{RequeueAfter: s.requeue}, nil
}

func (s *galleryStep) after(d time.Duration) {
	if d <= 0 {
		d = time.Second
	}
	if s.requeue == 0 || d < s.requeue {
		s.requeue = d
	}
}

func (s *galleryStep) event(warning bool, reason, action, format string, args ...any) {
	typ := corev1.EventTypeNormal
	if warning {
		typ = corev1.EventTypeWarning
	}
	s.r.Recorder.Eventf(s.g, nil, typ, reason, action, format, args...)
}

func (s *galleryStep) run(ctx context.Context) error {
	st, target := s.st, s.g.Spec.Model

	// Retire the previous model once its rollback window has passed,
	// unless a rollback to it is being asked for right now.
	if st.Previous != nil && st.RetireAfter != nil && target != st.Previous.Model {
		if s.now.Before(st.RetireAfter) {
			s.after(st.RetireAfter.Sub(s.now.Time))
		} else if err := s.retirePrevious(ctx, "the rollback window ended"); err != nil {
			return err
		}
	}

	if st.Active == nil {
		return s.bootstrap(ctx)
	}

	// Rollback: the spec names the previous model again within the window.
	if st.Previous != nil && target == st.Previous.Model {
		return s.rollback(ctx)
	}

	if target == st.Active.Model {
		if st.Candidate != nil {
			if err := s.abort(ctx, "Cancelled", fmt.Sprintf("spec.model was set back to the active model %q", target)); err != nil {
				return err
			}
		}
		return s.ensurePools(ctx, st.Active)
	}

	// The spec names a new model: a rollout.
	if err := s.ensurePools(ctx, st.Active); err != nil {
		return err
	}
	ro := st.Rollout
	if ro != nil && ro.TargetModel == target && ro.Phase == facegatev1.PhaseAborted {
		// Not retried by itself: a new FaceModel (or the active one) must be named.
		return nil
	}
	if ro == nil || ro.TargetModel != target || ro.Phase == facegatev1.PhaseCompleted || ro.Phase == facegatev1.PhaseRolledBack || ro.Phase == facegatev1.PhaseSwitched {
		if st.Candidate != nil {
			if err := s.abort(ctx, "Superseded", fmt.Sprintf("spec.model changed to %q during the rollout", target)); err != nil {
				return err
			}
		}
		if st.Previous != nil {
			// One fallback at a time: the new rollout's switch will make the
			// current model the fallback.
			if err := s.retirePrevious(ctx, fmt.Sprintf("a rollout of %q started", target)); err != nil {
				return err
			}
		}
		st.Rollout = &facegatev1.RolloutStatus{TargetModel: target, Phase: facegatev1.PhaseValidating, StartedAt: s.now, PhaseSince: s.now,
			Reason: "Started", Message: fmt.Sprintf("rolling out FaceModel %q to replace %q", target, st.Active.Model)}
		s.event(false, "RolloutStarted", "Rollout", "rolling out FaceModel %q to replace %q", target, st.Active.Model)
	}
	return s.advance(ctx)
}

// bootstrap makes the first model active: there is no gallery to re-embed
// and nothing to shadow against.
func (s *galleryStep) bootstrap(ctx context.Context) error {
	m, err := s.validatedModel(ctx, s.g.Spec.Model)
	if err != nil || m == nil {
		return err
	}
	b := s.binding(m)
	if err := s.ensurePools(ctx, b); err != nil {
		return err
	}
	s.st.Active = b
	s.event(false, "Activated", "Activate", "FaceModel %q active in collection %s", m.Name, b.Collection)
	return nil
}

// validatedModel returns the model when it is validated; otherwise it
// records why not (as the rollout message when one runs) and returns nil.
func (s *galleryStep) validatedModel(ctx context.Context, name string) (*facegatev1.FaceModel, error) {
	var m facegatev1.FaceModel
	err := s.r.Get(ctx, types.NamespacedName{Namespace: s.g.Namespace, Name: name}, &m)
	if apierrors.IsNotFound(err) {
		msg := fmt.Sprintf("FaceModel %q does not exist in namespace %q", name, s.g.Namespace)
		if changed := setCondition(&s.st.Conditions, s.g.Generation, s.now.Time, "ModelResolved", false, facegatev1.ReasonUnknownModel, msg); changed {
			s.event(true, facegatev1.ReasonUnknownModel, "ResolveModel", "%s", msg)
		}
		s.setRolloutMessage(facegatev1.ReasonUnknownModel, msg)
		s.after(time.Minute)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get FaceModel %s: %w", name, err)
	}
	if m.Status.Phase != facegatev1.FaceModelValidated || m.Status.ObservedGeneration != m.Generation {
		msg := fmt.Sprintf("FaceModel %q is %s", name, orDefault(string(m.Status.Phase), "not yet validated"))
		if c := meta.FindStatusCondition(m.Status.Conditions, facegatev1.ConditionValidated); c != nil && c.Status == metav1.ConditionFalse {
			msg += fmt.Sprintf(" (%s: %s)", c.Reason, c.Message)
		}
		setCondition(&s.st.Conditions, s.g.Generation, s.now.Time, "ModelResolved", false, facegatev1.ReasonModelNotValidated, msg)
		s.setRolloutMessage(facegatev1.ReasonModelNotValidated, msg)
		if m.Status.Phase == facegatev1.FaceModelInvalid {
			return &m, errInvalidModel
		}
		return nil, nil
	}
	setCondition(&s.st.Conditions, s.g.Generation, s.now.Time, "ModelResolved", true, facegatev1.ReasonModelValidated, fmt.Sprintf("FaceModel %q is validated", name))
	return &m, nil
}

var errInvalidModel = errors.New("model failed validation")

func (s *galleryStep) setRolloutMessage(reason, msg string) {
	if ro := s.st.Rollout; ro != nil && ro.TargetModel == s.g.Spec.Model && !terminal(ro.Phase) {
		ro.Reason, ro.Message = reason, msg
	}
}

func terminal(p facegatev1.RolloutPhase) bool {
	switch p {
	case facegatev1.PhaseCompleted, facegatev1.PhaseAborted, facegatev1.PhaseRolledBack:
		return true
	}
	return false
}

func (s *galleryStep) binding(m *facegatev1.FaceModel) *facegatev1.ModelBinding {
	b := &facegatev1.ModelBinding{
		Model: m.Name, ModelID: m.Spec.ModelID, SHA256: m.Spec.Artifact.SHA256,
		Collection: CollectionName(s.g.Name, m), EmbeddingSize: m.Spec.EmbeddingSize, Threshold: m.Spec.Threshold,
		Since: ptr.To(s.now),
	}
	for _, p := range s.g.Spec.Pools {
		b.Pools = append(b.Pools, galleryPoolName(s.g.Name, p.Name, m.Name))
	}
	return b
}

// ensurePools creates or updates the EmbedderPools of a binding from the
// gallery's pool templates, and removes pools the spec no longer lists.
func (s *galleryStep) ensurePools(ctx context.Context, b *facegatev1.ModelBinding) error {
	want := map[string]bool{}
	var names []string
	for _, tpl := range s.g.Spec.Pools {
		name := galleryPoolName(s.g.Name, tpl.Name, b.Model)
		want[name] = true
		names = append(names, name)
		pool := &facegatev1.EmbedderPool{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.g.Namespace}}
		_, err := controllerutil.CreateOrUpdate(ctx, s.r.Client, pool, func() error {
			if pool.Labels == nil {
				pool.Labels = map[string]string{}
			}
			pool.Labels[LabelGallery] = labelValue(s.g.Name)
			pool.Labels[LabelModel] = labelValue(b.Model)
			pool.Labels[LabelManagedBy] = managedBy
			pool.Spec = facegatev1.EmbedderPoolSpec{
				ModelRef: facegatev1.ModelReference{Name: b.Model},
				Consumer: facegatev1.ConsumerSpec{ConsumerTemplate: tpl.Consumer, Durable: durableName(name)},
				// Each model encodes into its own collection: encodings of two
				// models are never searched against each other.
				Collection:       b.Collection,
				EmbedderTemplate: *tpl.EmbedderTemplate.DeepCopy(),
			}
			return controllerutil.SetControllerReference(s.g, pool, s.r.Scheme())
		})
		if err != nil {
			return fmt.Errorf("write EmbedderPool %s: %w", name, err)
		}
	}
	b.Pools = names
	// Pools of this model that the spec dropped.
	var owned facegatev1.EmbedderPoolList
	if err := s.r.List(ctx, &owned, client.InNamespace(s.g.Namespace), client.MatchingLabels{LabelGallery: labelValue(s.g.Name), LabelModel: labelValue(b.Model)}); err != nil {
		return fmt.Errorf("list pools of gallery %s: %w", s.g.Name, err)
	}
	for i := range owned.Items {
		p := &owned.Items[i]
		if !want[p.Name] && metav1.IsControlledBy(p, s.g) {
			if err := s.r.Delete(ctx, p, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("delete EmbedderPool %s: %w", p.Name, err)
			}
		}
	}
	return nil
}

func (s *galleryStep) deletePools(ctx context.Context, b *facegatev1.ModelBinding) error {
	var owned facegatev1.EmbedderPoolList
	if err := s.r.List(ctx, &owned, client.InNamespace(s.g.Namespace), client.MatchingLabels{LabelGallery: labelValue(s.g.Name), LabelModel: labelValue(b.Model)}); err != nil {
		return fmt.Errorf("list pools of gallery %s: %w", s.g.Name, err)
	}
	for i := range owned.Items {
		p := &owned.Items[i]
		if !metav1.IsControlledBy(p, s.g) {
			continue
		}
		if err := s.r.Delete(ctx, p, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete EmbedderPool %s: %w", p.Name, err)
		}
	}
	return nil
}

// sweep deletes pools of models the gallery no longer binds and re-embedding
// Jobs of models no longer being rolled out, whatever left them behind.
func (s *galleryStep) sweep(ctx context.Context) error {
	keep := map[string]bool{}
	for _, b := range []*facegatev1.ModelBinding{s.st.Active, s.st.Candidate, s.st.Previous} {
		if b != nil {
			keep[labelValue(b.Model)] = true
		}
	}
	var pools facegatev1.EmbedderPoolList
	if err := s.r.List(ctx, &pools, client.InNamespace(s.g.Namespace), client.MatchingLabels{LabelGallery: labelValue(s.g.Name)}); err != nil {
		return fmt.Errorf("list pools of gallery %s: %w", s.g.Name, err)
	}
	for i := range pools.Items {
		p := &pools.Items[i]
		if keep[p.Labels[LabelModel]] || !metav1.IsControlledBy(p, s.g) || !p.DeletionTimestamp.IsZero() {
			continue
		}
		if err := s.r.Delete(ctx, p, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete EmbedderPool %s: %w", p.Name, err)
		}
		log.FromContext(ctx).Info("deleted a pool of a model the gallery no longer uses", "pool", p.Name)
	}
	var jobs batchv1.JobList
	if err := s.r.List(ctx, &jobs, client.InNamespace(s.g.Namespace), client.MatchingLabels{LabelGallery: labelValue(s.g.Name)}); err != nil {
		return fmt.Errorf("list jobs of gallery %s: %w", s.g.Name, err)
	}
	for i := range jobs.Items {
		j := &jobs.Items[i]
		if (s.st.Candidate != nil && j.Labels[LabelModel] == labelValue(s.st.Candidate.Model)) || !metav1.IsControlledBy(j, s.g) || !j.DeletionTimestamp.IsZero() {
			continue
		}
		if err := s.r.Delete(ctx, j, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete Job %s: %w", j.Name, err)
		}
	}
	return nil
}

func (s *galleryStep) deleteJob(ctx context.Context, model string) error {
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: reembedJobName(s.g.Name, model), Namespace: s.g.Namespace}}
	if err := s.r.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete Job %s: %w", job.Name, err)
	}
	return nil
}

func (s *galleryStep) retirePrevious(ctx context.Context, why string) error {
	prev := s.st.Previous
	if err := s.deletePools(ctx, prev); err != nil {
		return err
	}
	if err := s.deleteJob(ctx, s.st.Active.Model); err != nil {
		return err
	}
	s.event(false, "Retired", "Retire", "retired FaceModel %q and its collection %s: %s", prev.Model, prev.Collection, why)
	s.st.Previous, s.st.RetireAfter = nil, nil
	if ro := s.st.Rollout; ro != nil && ro.Phase == facegatev1.PhaseSwitched {
		s.enter(facegatev1.PhaseCompleted, "Retired", fmt.Sprintf("FaceModel %q retired: %s", prev.Model, why))
	}
	return nil
}

func (s *galleryStep) rollback(ctx context.Context) error {
	st := s.st
	from, to := st.Active, st.Previous
	to.Since = ptr.To(s.now)
	st.Active, st.Previous, st.RetireAfter = to, nil, nil
	if err := s.ensurePools(ctx, st.Active); err != nil {
		return err
	}
	if err := s.deletePools(ctx, from); err != nil {
		return err
	}
	if err := s.deleteJob(ctx, from.Model); err != nil {
		return err
	}
	msg := fmt.Sprintf("switched back from %q (collection %s) to %q (collection %s) within the rollback window", from.Model, from.Collection, to.Model, to.Collection)
	if st.Rollout == nil {
		st.Rollout = &facegatev1.RolloutStatus{TargetModel: from.Model, StartedAt: s.now}
	}
	s.enter(facegatev1.PhaseRolledBack, "RolledBack", msg)
	s.event(true, "RolledBack", "Rollback", "%s", msg)
	return nil
}

// abort removes the candidate's pools and job; the active model stays.
func (s *galleryStep) abort(ctx context.Context, reason, msg string) error {
	st := s.st
	if c := st.Candidate; c != nil {
		if err := s.deletePools(ctx, c); err != nil {
			return err
		}
	}
	if st.Rollout != nil {
		if err := s.deleteJob(ctx, st.Rollout.TargetModel); err != nil {
			return err
		}
	}
	st.Candidate = nil
	if st.Rollout == nil {
		st.Rollout = &facegatev1.RolloutStatus{TargetModel: s.g.Spec.Model, StartedAt: s.now}
	}
	s.enter(facegatev1.PhaseAborted, reason, fmt.Sprintf("%s; %q stays active", msg, st.Active.Model))
	s.event(true, "RolloutAborted", "Rollout", "rollout of %q aborted (%s): %s", st.Rollout.TargetModel, reason, msg)
	return nil
}

func (s *galleryStep) enter(p facegatev1.RolloutPhase, reason, msg string) {
	ro := s.st.Rollout
	if ro.Phase != p {
		ro.PhaseSince = s.now
	}
	ro.Phase, ro.Reason, ro.Message = p, reason, msg
}

// advance runs the rollout phases until one has to wait.
func (s *galleryStep) advance(ctx context.Context) error {
	for range 8 {
		before := s.st.Rollout.Phase
		if err := s.advanceOnce(ctx); err != nil {
			return err
		}
		if s.st.Rollout.Phase == before || terminal(s.st.Rollout.Phase) || s.st.Rollout.Phase == facegatev1.PhaseSwitched {
			return nil
		}
	}
	return nil
}

func (s *galleryStep) advanceOnce(ctx context.Context) error {
	st, ro := s.st, s.st.Rollout
	policy := s.g.Spec.Rollout
	switch ro.Phase {
	case facegatev1.PhaseValidating:
		m, err := s.validatedModel(ctx, ro.TargetModel)
		if errors.Is(err, errInvalidModel) {
			c := meta.FindStatusCondition(m.Status.Conditions, facegatev1.ConditionValidated)
			detail := "validation failed"
			if c != nil {
				detail = fmt.Sprintf("%s: %s", c.Reason, c.Message)
			}
			return s.abort(ctx, "ValidationFailed", fmt.Sprintf("FaceModel %q failed validation (%s)", ro.TargetModel, detail))
		}
		if err != nil || m == nil {
			return err
		}
		b := s.binding(m)
		if b.Collection == st.Active.Collection {
			return s.abort(ctx, "SameArtifact", fmt.Sprintf("FaceModel %q has the same model and artefact as the active %q: nothing to roll out", m.Name, st.Active.Model))
		}
		if err := s.ensurePools(ctx, b); err != nil {
			return err
		}
		st.Candidate = b
		s.enter(facegatev1.PhaseProvisioning, "Validated", fmt.Sprintf("FaceModel %q validated; starting its pools %s", m.Name, strings.Join(b.Pools, ", ")))
		s.event(false, "PoolsStarted", "Rollout", "started pools %s for FaceModel %q (collection %s)", strings.Join(b.Pools, ", "), m.Name, b.Collection)

	case facegatev1.PhaseProvisioning:
		if err := s.ensurePools(ctx, st.Candidate); err != nil {
			return err
		}
		for _, name := range st.Candidate.Pools {
			var p facegatev1.EmbedderPool
			if err := s.r.Get(ctx, types.NamespacedName{Namespace: s.g.Namespace, Name: name}, &p); err != nil {
				return client.IgnoreNotFound(err)
			}
			if !meta.IsStatusConditionTrue(p.Status.Conditions, facegatev1.ConditionModelResolved) || p.Status.Deployment == "" {
				ro.Message = fmt.Sprintf("waiting for EmbedderPool %s to resolve its model and create its Deployment", name)
				return nil
			}
		}
		job, err := s.ensureJob(ctx)
		if err != nil {
			return err
		}
		s.enter(facegatev1.PhaseReembedding, "PoolsStarted", fmt.Sprintf("pools started; Job %s re-embeds the gallery into %s from the retained enrolment photos", job, st.Candidate.Collection))
		ro.ReembedJob = job

	case facegatev1.PhaseReembedding:
		if err := s.ensurePools(ctx, st.Candidate); err != nil {
			return err
		}
		var job batchv1.Job
		err := s.r.Get(ctx, types.NamespacedName{Namespace: s.g.Namespace, Name: ro.ReembedJob}, &job)
		if apierrors.IsNotFound(err) {
			_, err = s.ensureJob(ctx)
			return err
		}
		if err != nil {
			return fmt.Errorf("get Job %s: %w", ro.ReembedJob, err)
		}
		if c := jobCondition(&job, batchv1.JobFailed); c != nil {
			return s.abort(ctx, "ReembedFailed", fmt.Sprintf("re-embedding Job %s failed (%s: %s)", job.Name, c.Reason, c.Message))
		}
		if jobCondition(&job, batchv1.JobComplete) == nil {
			ro.Message = fmt.Sprintf("re-embedding Job %s running: %d succeeded, %d failed, %d active", job.Name, job.Status.Succeeded, job.Status.Failed, ptr.Deref(job.Status.Ready, 0))
			return nil
		}
		s.enter(facegatev1.PhaseShadowing, "ReembedComplete",
			fmt.Sprintf("Job %s completed; shadowing live traffic: both models decide each face against their own collection", job.Name))
		// Reports made before shadowing started are not about this gallery state.
		ro.Shadow, ro.Gallery = nil, nil
		s.event(false, "ReembedComplete", "Rollout", "re-embedding Job %s completed; shadowing %q", job.Name, ro.TargetModel)

	case facegatev1.PhaseShadowing:
		if err := s.ensurePools(ctx, st.Candidate); err != nil {
			return err
		}
		return s.judgeShadow(ctx, policy)
	}
	return nil
}

// judgeShadow applies the agreement and completeness gates to the matcher's
// reports and switches, aborts or waits.
func (s *galleryStep) judgeShadow(ctx context.Context, policy facegatev1.RolloutPolicy) error {
	st, ro := s.st, s.st.Rollout
	minAgree, minComplete, minSamples := policy.MinAgreement, policy.MinCompleteness, policy.MinShadowSamples
	var agreement float64
	var samples int64
	if sh := ro.Shadow; sh != nil && sh.Model == ro.TargetModel {
		agreement, samples = sh.Agreement, sh.Samples
	}
	completeness, counted := 0.0, false
	if gr := ro.Gallery; gr != nil && gr.Model == ro.TargetModel {
		counted = true
		completeness = 1
		if gr.Expected > 0 {
			completeness = float64(gr.Embedded) / float64(gr.Expected)
		}
	}
	summary := fmt.Sprintf("agreement %.4f over %d faces (minimum %.4f over %d), completeness %s (minimum %.4f)",
		agreement, samples, minAgree, minSamples, pct(completeness, counted), minComplete)

	if samples >= minSamples && agreement < minAgree {
		return s.abort(ctx, "LowAgreement", "shadow decisions disagree: "+summary)
	}
	if samples >= minSamples && counted && completeness >= minComplete {
		prev := st.Active
		prev.Since = ptr.To(s.now)
		next := st.Candidate
		next.Since = ptr.To(s.now)
		// One status write moves Active, Previous and the rollback deadline
		// together: the matcher sees either the old or the new binding.
		st.Previous, st.Active, st.Candidate = prev, next, nil
		st.RetireAfter = ptr.To(metav1.NewTime(s.now.Add(time.Duration(policy.RollbackWindowSeconds) * time.Second)))
		s.enter(facegatev1.PhaseSwitched, "GatesPassed", fmt.Sprintf("switched the active gallery from %s to %s: %s; %q kept for rollback until %s",
			prev.Collection, next.Collection, summary, prev.Model, st.RetireAfter.UTC().Format(time.RFC3339)))
		s.event(false, "Switched", "Switch", "active gallery switched from %q (%s) to %q (%s): %s", prev.Model, prev.Collection, next.Model, next.Collection, summary)
		s.after(time.Duration(policy.RollbackWindowSeconds) * time.Second)
		return nil
	}
	timeout := time.Duration(policy.ShadowTimeoutSeconds) * time.Second
	if waited := s.now.Sub(ro.PhaseSince.Time); timeout > 0 && waited >= timeout {
		return s.abort(ctx, "ShadowTimeout", fmt.Sprintf("gates not passed within %s: %s", timeout, summary))
	} else if timeout > 0 {
		s.after(timeout - waited)
	}
	ro.Message = "shadowing: " + summary
	return nil
}

func pct(v float64, known bool) string {
	if !known {
		return "not reported"
	}
	return fmt.Sprintf("%.4f", v)
}

func jobCondition(j *batchv1.Job, t batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range j.Status.Conditions {
		if c := &j.Status.Conditions[i]; c.Type == t && c.Status == corev1.ConditionTrue {
			return c
		}
	}
	return nil
}

// ensureJob creates the re-embedding Job for the candidate.
func (s *galleryStep) ensureJob(ctx context.Context) (string, error) {
	st, spec := s.st, s.g.Spec.Rollout.Reembed
	var m facegatev1.FaceModel
	if err := s.r.Get(ctx, types.NamespacedName{Namespace: s.g.Namespace, Name: st.Candidate.Model}, &m); err != nil {
		return "", fmt.Errorf("get FaceModel %s: %w", st.Candidate.Model, err)
	}
	image := spec.Image
	if image == "" {
		image = s.r.DefaultReembedImage
	}
	name := reembedJobName(s.g.Name, st.Candidate.Model)
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.g.Namespace}}
	var found batchv1.Job
	err := s.r.Get(ctx, client.ObjectKeyFromObject(job), &found)
	if err == nil {
		return name, nil
	}
	if !apierrors.IsNotFound(err) {
		return "", fmt.Errorf("get Job %s: %w", name, err)
	}
	labels := map[string]string{
		LabelName: "facegate-reembed", LabelComponent: "reembed", LabelManagedBy: managedBy,
		LabelGallery: labelValue(s.g.Name), LabelModel: labelValue(m.Name), LabelModelID: labelValue(m.Spec.ModelID),
	}
	job.Labels = labels
	job.Spec = reembedJobSpec(spec, labels, image, m.Spec.ModelID, orDefault(spec.NATSURL, s.r.DefaultNATSURL))
	if err := controllerutil.SetControllerReference(s.g, job, s.r.Scheme()); err != nil {
		return "", err
	}
	if err := s.r.Create(ctx, job); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create Job %s: %w", name, err)
	}
	s.event(false, "ReembedStarted", "Rollout", "Job %s re-embeds gallery %q into %s", name, s.g.Name, st.Candidate.Collection)
	return name, nil
}

func executionProvider(r corev1.ResourceRequirements) string {
	if usesGPU(&facegatev1.EmbedderTemplate{Resources: r}) {
		return "cuda"
	}
	return "cpu"
}

// conditions derives the summary conditions from the state.
func (s *galleryStep) conditions() {
	st, gen, now := s.st, s.g.Generation, s.now.Time
	if st.Active != nil {
		setCondition(&st.Conditions, gen, now, facegatev1.ConditionReady, true, "Active",
			fmt.Sprintf("FaceModel %q serves from collection %s", st.Active.Model, st.Active.Collection))
	} else {
		setCondition(&st.Conditions, gen, now, facegatev1.ConditionReady, false, "NoActiveModel",
			fmt.Sprintf("FaceModel %q is not active yet", s.g.Spec.Model))
	}
	ro := st.Rollout
	switch {
	case ro == nil:
		setCondition(&st.Conditions, gen, now, facegatev1.ConditionProgressing, false, "NoRollout", "no rollout has run")
	case terminal(ro.Phase) || ro.Phase == facegatev1.PhaseSwitched:
		setCondition(&st.Conditions, gen, now, facegatev1.ConditionProgressing, false, string(ro.Phase), ro.Message)
	default:
		setCondition(&st.Conditions, gen, now, facegatev1.ConditionProgressing, true, string(ro.Phase), ro.Message)
	}
	if ro != nil && ro.Phase == facegatev1.PhaseAborted {
		setCondition(&st.Conditions, gen, now, facegatev1.ConditionRolloutAborted, true, ro.Reason, ro.Message)
	} else {
		setCondition(&st.Conditions, gen, now, facegatev1.ConditionRolloutAborted, false, "NotAborted", "the last rollout was not aborted")
	}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// SetupWithManager registers the controller and its watches.
func (r *FaceGalleryReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &facegatev1.FaceGallery{}, galleryModelIndex, func(o client.Object) []string {
		g := o.(*facegatev1.FaceGallery)
		names := []string{g.Spec.Model}
		for _, b := range []*facegatev1.ModelBinding{g.Status.Active, g.Status.Candidate, g.Status.Previous} {
			if b != nil {
				names = append(names, b.Model)
			}
		}
		return names
	}); err != nil {
		return fmt.Errorf("index FaceGalleries by model: %w", err)
	}
	return ctrl.NewControllerManagedBy(mgr).
		// Status changes matter: the matcher reports shadow results there.
		For(&facegatev1.FaceGallery{}).
		Owns(&facegatev1.EmbedderPool{}).
		Owns(&batchv1.Job{}).
		Watches(&facegatev1.FaceModel{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			var gs facegatev1.FaceGalleryList
			if err := r.List(ctx, &gs, client.InNamespace(o.GetNamespace()), client.MatchingFields{galleryModelIndex: o.GetName()}); err != nil {
				log.FromContext(ctx).Error(err, "list galleries of model", "model", o.GetName())
				return nil
			}
			reqs := make([]reconcile.Request, len(gs.Items))
			for i, g := range gs.Items {
				reqs[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&g)}
			}
			return reqs
		})).
		Named("facegallery").
		Complete(r)
}
