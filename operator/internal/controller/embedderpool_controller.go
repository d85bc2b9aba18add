package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	facegatev1 "github.com/facegate/facegate/operator/api/v1alpha1"
	"github.com/facegate/facegate/operator/internal/lag"
	"github.com/facegate/facegate/operator/internal/scaling"
)

// poolModelIndex indexes EmbedderPools by the FaceModel they reference.
const poolModelIndex = "spec.modelRef.name"

// EmbedderPoolReconciler runs a Deployment per pool and sizes it from the
// pool's consumer lag.
type EmbedderPoolReconciler struct {
	client.Client
	// APIReader reads the pool uncached, so that a decision never starts
	// from a recommendation history older than the last one written.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Lag       lag.Reader
	// DefaultImage is used when a pool names no image.
	DefaultImage string
	// DefaultNATSURL is passed to embedders when a pool names no URL.
	DefaultNATSURL string
	Now            Clock
}

// +kubebuilder:rbac:groups=facegate.io,resources=embedderpools,verbs=get;list;watch
// +kubebuilder:rbac:groups=facegate.io,resources=embedderpools/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=facegate.io,resources=embedderpools/finalizers,verbs=update
// +kubebuilder:rbac:groups=facegate.io,resources=facemodels,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile implements reconcile.Reconciler.
func (r *EmbedderPoolReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	var pool facegatev1.EmbedderPool
	if err := r.APIReader.Get(ctx, req.NamespacedName, &pool); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !pool.DeletionTimestamp.IsZero() {
		// The Deployment is owned and goes with the pool.
		return ctrl.Result{}, nil
	}
	// Status timestamps are serialised with second precision; deciding on
	// truncated times keeps the stored history consistent with decisions.
	now := r.Now.now().Truncate(time.Second)
	st := pool.Status.DeepCopy()
	st.ObservedGeneration = pool.Generation
	poll := time.Duration(max(pool.Spec.Scaling.PollingSeconds, 1)) * time.Second

	var model facegatev1.FaceModel
	err := r.Get(ctx, types.NamespacedName{Namespace: pool.Namespace, Name: pool.Spec.ModelRef.Name}, &model)
	switch {
	case apierrors.IsNotFound(err):
		msg := fmt.Sprintf("FaceModel %q does not exist in namespace %q; create it or fix spec.modelRef.name", pool.Spec.ModelRef.Name, pool.Namespace)
		r.setModelUnresolved(&pool, st, facegatev1.ReasonUnknownModel, msg, now)
		return ctrl.Result{RequeueAfter: time.Minute}, r.writeStatus(ctx, &pool, st)
	case err != nil:
		return ctrl.Result{}, fmt.Errorf("get FaceModel %s: %w", pool.Spec.ModelRef.Name, err)
	}
	if model.Status.Phase != facegatev1.FaceModelValidated || model.Status.ObservedGeneration != model.Generation {
		why := "its artefact has not been validated yet"
		if c := meta.FindStatusCondition(model.Status.Conditions, facegatev1.ConditionValidated); c != nil && c.Status == metav1.ConditionFalse {
			why = fmt.Sprintf("validation failed (%s): %s", c.Reason, c.Message)
		}
		msg := fmt.Sprintf("FaceModel %q is not usable: %s", model.Name, why)
		r.setModelUnresolved(&pool, st, facegatev1.ReasonModelNotValidated, msg, now)
		return ctrl.Result{RequeueAfter: time.Minute}, r.writeStatus(ctx, &pool, st)
	}
	setCondition(&st.Conditions, pool.Generation, now, facegatev1.ConditionModelResolved, true, facegatev1.ReasonModelValidated,
		fmt.Sprintf("FaceModel %q (%s, %d-d) is validated", model.Name, model.Spec.ModelID, model.Spec.EmbeddingSize))
	collection := pool.Spec.Collection
	if collection == "" {
		collection = CollectionName("", &model)
	}
	st.ModelID, st.Collection = model.Spec.ModelID, collection

	var dep appsv1.Deployment
	depKey := types.NamespacedName{Namespace: pool.Namespace, Name: pool.Name}
	exists := true
	if err := r.Get(ctx, depKey, &dep); apierrors.IsNotFound(err) {
		exists = false
	} else if err != nil {
		return ctrl.Result{}, fmt.Errorf("get Deployment %s: %w", depKey, err)
	}
	current := int32(0)
	if exists && dep.Spec.Replicas != nil {
		current = *dep.Spec.Replicas
	}

	replicas, dec, lagErr := r.decide(ctx, &pool, st, current, now)
	if lagErr != nil {
		logger.Info("consumer lag unavailable; holding replicas within bounds", "error", lagErr.Error())
	}

	image := pool.Spec.Image
	if image == "" {
		image = r.DefaultImage
	}
	natsURL := pool.Spec.Consumer.URL
	if natsURL == "" {
		natsURL = r.DefaultNATSURL
	}
	dep.ObjectMeta = metav1.ObjectMeta{Name: depKey.Name, Namespace: depKey.Namespace}
	op, err := controllerutil.CreateOrUpdate(ctx, r.Client, &dep, func() error {
		desiredDeployment(&dep, &pool, &model, image, natsURL, collection, replicas)
		return controllerutil.SetControllerReference(&pool, &dep, r.Scheme())
	})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("write Deployment %s: %w", depKey, err)
	}
	if op != controllerutil.OperationResultNone {
		logger.Info("deployment written", "operation", op, "replicas", replicas)
	}

	if replicas != current || !exists {
		st.LastScaleTime = ptrTime(now)
		if dec != nil {
			r.Recorder.Eventf(&pool, &dep, corev1.EventTypeNormal, string(dec.Reason), "Scale", "%s", dec.Message)
		} else {
			r.Recorder.Eventf(&pool, &dep, corev1.EventTypeNormal, "ReplicasSet", "Scale", "set replicas %d -> %d (lag unknown, kept within min %d / max %d)",
				current, replicas, pool.Spec.Scaling.MinReplicas, pool.Spec.Scaling.MaxReplicas)
		}
	}
	st.Replicas = replicas
	st.ReadyReplicas = dep.Status.ReadyReplicas
	st.Deployment = dep.Name
	switch {
	case replicas == 0:
		setCondition(&st.Conditions, pool.Generation, now, facegatev1.ConditionReady, true, "ScaledToZero", "no replicas needed: the consumer is idle")
	case dep.Status.ReadyReplicas > 0:
		setCondition(&st.Conditions, pool.Generation, now, facegatev1.ConditionReady, true, "ReplicasReady",
			fmt.Sprintf("%d of %d replicas ready", dep.Status.ReadyReplicas, replicas))
	default:
		setCondition(&st.Conditions, pool.Generation, now, facegatev1.ConditionReady, false, "ReplicasNotReady",
			fmt.Sprintf("0 of %d replicas ready", replicas))
	}
	return ctrl.Result{RequeueAfter: poll}, r.writeStatus(ctx, &pool, st)
}

// decide reads the lag and returns the replica count; with no lag reading
// it keeps the current count inside [min, max] (and dec is nil).
func (r *EmbedderPoolReconciler) decide(ctx context.Context, pool *facegatev1.EmbedderPool, st *facegatev1.EmbedderPoolStatus, current int32, now time.Time) (int32, *scaling.Decision, error) {
	sc := pool.Spec.Scaling
	hold := min(max(current, sc.MinReplicas), sc.MaxReplicas)
	c := lag.Consumer{URL: pool.Spec.Consumer.URL, Stream: pool.Spec.Consumer.Stream, Durable: pool.Spec.Consumer.Durable, FilterSubject: pool.Spec.Consumer.FilterSubject}

	created, err := r.Lag.EnsureConsumer(ctx, c)
	if err == nil && created {
		r.Recorder.Eventf(pool, nil, corev1.EventTypeNormal, "ConsumerCreated", "EnsureConsumer", "created durable %s on stream %s (filter %q)", c.Durable, c.Stream, c.FilterSubject)
	}
	var l lag.Lag
	if err == nil {
		l, err = r.Lag.Lag(ctx, c)
	}
	if err != nil {
		reason := "LagUnavailable"
		if errors.Is(err, lag.ErrConsumerNotFound) {
			reason = "ConsumerNotFound"
		}
		if changed := setCondition(&st.Conditions, pool.Generation, now, facegatev1.ConditionScalingActive, false, reason, err.Error()); changed {
			r.Recorder.Eventf(pool, nil, corev1.EventTypeWarning, reason, "ReadLag", "%s", err)
		}
		return hold, nil, err
	}
	lastActive := pool.CreationTimestamp.Time
	if st.LastActiveTime != nil {
		lastActive = st.LastActiveTime.Time
	}
	hist := make([]scaling.Recommendation, len(st.Recommendations))
	for i, h := range st.Recommendations {
		hist[i] = scaling.Recommendation{Time: h.Time.Time, Replicas: h.Replicas}
	}
	params := scaling.Params{
		Min: sc.MinReplicas, Max: sc.MaxReplicas,
		TargetPerReplica: sc.TargetLagPerReplica, Activation: sc.ActivationLag,
		Tolerance:       float64(sc.TolerancePercent) / 100,
		ScaleUpWindow:   time.Duration(sc.ScaleUpStabilizationSeconds) * time.Second,
		ScaleDownWindow: time.Duration(sc.ScaleDownStabilizationSeconds) * time.Second,
		Cooldown:        time.Duration(sc.CooldownSeconds) * time.Second,
	}
	total := l.Total()
	if total > 1<<62 {
		total = 1 << 62
	}
	d, err := scaling.Decide(now, int64(total), params, scaling.State{Current: current, LastActive: lastActive, History: hist})
	if err != nil {
		setCondition(&st.Conditions, pool.Generation, now, facegatev1.ConditionScalingActive, false, "InvalidScaling", err.Error())
		return hold, nil, err
	}
	d.Message = fmt.Sprintf("consumer %s: pending %d + ack pending %d; %s", c.Durable, l.Pending, l.AckPending, d.Message)

	st.Lag = &facegatev1.LagStatus{Pending: int64(l.Pending), AckPending: int64(l.AckPending), Total: int64(total), ObservedAt: metav1.NewTime(now)}
	st.DesiredReplicas = d.Desired
	if d.Active {
		st.LastActiveTime = ptrTime(now)
	}
	st.Recommendations = st.Recommendations[:0]
	for _, h := range d.History {
		st.Recommendations = append(st.Recommendations, facegatev1.Recommendation{Time: metav1.NewTime(h.Time), Replicas: h.Replicas})
	}
	if len(st.Recommendations) > 512 {
		st.Recommendations = st.Recommendations[len(st.Recommendations)-512:]
	}
	setCondition(&st.Conditions, pool.Generation, now, facegatev1.ConditionScalingActive, true, string(d.Reason), d.Message)
	if d.Limited {
		reason := "TooManyReplicas"
		if d.Replicas <= max(sc.MinReplicas, 1) && d.Desired < d.Replicas {
			reason = "TooFewReplicas"
		}
		if changed := setCondition(&st.Conditions, pool.Generation, now, facegatev1.ConditionScalingLimited, true, reason, d.Message); changed {
			r.Recorder.Eventf(pool, nil, corev1.EventTypeNormal, reason, "Scale", "%s", d.Message)
		}
	} else {
		setCondition(&st.Conditions, pool.Generation, now, facegatev1.ConditionScalingLimited, false, "DesiredWithinRange",
			fmt.Sprintf("the lag-derived count %d is within [%d, %d]", d.Desired, sc.MinReplicas, sc.MaxReplicas))
	}
	return d.Replicas, &d, nil
}

func (r *EmbedderPoolReconciler) setModelUnresolved(pool *facegatev1.EmbedderPool, st *facegatev1.EmbedderPoolStatus, reason, msg string, now time.Time) {
	if changed := setCondition(&st.Conditions, pool.Generation, now, facegatev1.ConditionModelResolved, false, reason, msg); changed {
		r.Recorder.Eventf(pool, nil, corev1.EventTypeWarning, reason, "ResolveModel", "%s", msg)
	}
	setCondition(&st.Conditions, pool.Generation, now, facegatev1.ConditionReady, false, reason, msg)
}

func (r *EmbedderPoolReconciler) writeStatus(ctx context.Context, pool *facegatev1.EmbedderPool, st *facegatev1.EmbedderPoolStatus) error {
	if equality.Semantic.DeepEqual(&pool.Status, st) {
		return nil
	}
	pool.Status = *st
	if err := r.Status().Update(ctx, pool); err != nil {
		return fmt.Errorf("update EmbedderPool %s/%s status: %w", pool.Namespace, pool.Name, err)
	}
	return nil
}

// setCondition sets a condition and reports whether its status or reason changed.
func setCondition(conds *[]metav1.Condition, gen int64, now time.Time, typ string, ok bool, reason, msg string) bool {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	old := meta.FindStatusCondition(*conds, typ)
	changed := old == nil || old.Status != status || old.Reason != reason
	meta.SetStatusCondition(conds, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: truncate(msg, 32768),
		ObservedGeneration: gen, LastTransitionTime: metav1.NewTime(now),
	})
	return changed
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func ptrTime(t time.Time) *metav1.Time {
	mt := metav1.NewTime(t)
	return &mt
}

// SetupWithManager registers the controller and its watches.
func (r *EmbedderPoolReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &facegatev1.EmbedderPool{}, poolModelIndex, func(o client.Object) []string {
		return []string{o.(*facegatev1.EmbedderPool).Spec.ModelRef.Name}
	}); err != nil {
		return fmt.Errorf("index EmbedderPools by model: %w", err)
	}
	return ctrl.NewControllerManagedBy(mgr).
		// Status writes must not retrigger: the pool is polled on its own.
		For(&facegatev1.EmbedderPool{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		Owns(&appsv1.Deployment{}).
		Watches(&facegatev1.FaceModel{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			var pools facegatev1.EmbedderPoolList
			if err := r.List(ctx, &pools, client.InNamespace(o.GetNamespace()), client.MatchingFields{poolModelIndex: o.GetName()}); err != nil {
				log.FromContext(ctx).Error(err, "list pools of model", "model", o.GetName())
				return nil
			}
			reqs := make([]reconcile.Request, len(pools.Items))
			for i, p := range pools.Items {
				reqs[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&p)}
			}
			return reqs
		})).
		Named("embedderpool").
		Complete(r)
}
