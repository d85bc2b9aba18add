package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	facegatev1 "github.com/facegate/facegate/operator/api/v1alpha1"
)

const rollbackWindow = 24 * time.Hour

func (e *env) gallery(t *testing.T, ns, name, model string) *facegatev1.FaceGallery {
	t.Helper()
	g := &facegatev1.FaceGallery{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: facegatev1.FaceGallerySpec{
			Model: model,
			Pools: []facegatev1.GalleryPool{{
				Name:     "a",
				Consumer: facegatev1.ConsumerTemplate{Stream: "FRAMES", FilterSubject: siteFilter(t, ns)},
				EmbedderTemplate: facegatev1.EmbedderTemplate{
					BatchSize: 8,
					Scaling:   facegatev1.ScalingSpec{MinReplicas: 1, MaxReplicas: 2, TargetLagPerReplica: 100, PollingSeconds: 1, ScaleDownStabilizationSeconds: 60, CooldownSeconds: 60},
				},
			}},
			Rollout: facegatev1.RolloutPolicy{
				MinAgreement: 0.99, MinCompleteness: 1.0, MinShadowSamples: 1000,
				ShadowTimeoutSeconds:  int64((2 * time.Hour).Seconds()),
				RollbackWindowSeconds: int64(rollbackWindow.Seconds()),
				Reembed: facegatev1.ReembedSpec{BackoffLimit: 1, PhotoClaimName: "photos",
					KeysSecretName: "facegate-keys", NATSCredentialsSecret: "reembed-nats"},
			},
		},
	}
	if err := e.c.Create(context.Background(), g); err != nil {
		t.Fatalf("create FaceGallery: %v", err)
	}
	return g
}

func (e *env) getGallery(t *testing.T, ns, name string) *facegatev1.FaceGallery {
	t.Helper()
	var g facegatev1.FaceGallery
	if err := e.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &g); err != nil {
		t.Fatalf("get gallery: %v", err)
	}
	return &g
}

func describe(g *facegatev1.FaceGallery) string {
	b, _ := json.Marshal(g.Status)
	return string(b)
}

// waitGallery waits until check accepts the gallery.
func (e *env) waitGallery(t *testing.T, ns, name string, check func(*facegatev1.FaceGallery) error) *facegatev1.FaceGallery {
	t.Helper()
	var g *facegatev1.FaceGallery
	e.eventually(t, 30*time.Second, func() error {
		g = e.getGallery(t, ns, name)
		if err := check(g); err != nil {
			return fmt.Errorf("%w; status %s", err, describe(g))
		}
		return nil
	})
	return g
}

func phaseIs(p facegatev1.RolloutPhase) func(*facegatev1.FaceGallery) error {
	return func(g *facegatev1.FaceGallery) error {
		if g.Status.Rollout == nil || g.Status.Rollout.Phase != p {
			return fmt.Errorf("rollout phase is not %s", p)
		}
		return nil
	}
}

func activeIs(model string) func(*facegatev1.FaceGallery) error {
	return func(g *facegatev1.FaceGallery) error {
		if g.Status.Active == nil || g.Status.Active.Model != model {
			return fmt.Errorf("active model is not %s", model)
		}
		return nil
	}
}

func (e *env) setModel(t *testing.T, g *facegatev1.FaceGallery, model string) {
	t.Helper()
	patch := fmt.Appendf(nil, `{"spec":{"model":%q}}`, model)
	if err := e.c.Patch(context.Background(), g, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatalf("set spec.model: %v", err)
	}
}

// finishJob sets the Job's status as the Job controller would once its pod
// ended: envtest runs no kube-controller-manager and no kubelet, so no pod
// ever runs here.
func (e *env) finishJob(t *testing.T, ns, name string, succeeded bool) {
	t.Helper()
	ctx := context.Background()
	var job batchv1.Job
	e.eventually(t, 20*time.Second, func() error {
		return e.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &job)
	})
	now := metav1.Now()
	job.Status.StartTime = &now
	if succeeded {
		job.Status.Succeeded = 1
		job.Status.CompletionTime = &now
		job.Status.Conditions = []batchv1.JobCondition{
			{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, Reason: "CompletionsReached", Message: "Reached expected number of succeeded pods", LastTransitionTime: now, LastProbeTime: now},
			{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, Reason: "CompletionsReached", Message: "Reached expected number of succeeded pods", LastTransitionTime: now, LastProbeTime: now},
		}
	} else {
		job.Status.Failed = 2
		job.Status.Conditions = []batchv1.JobCondition{
			{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit", LastTransitionTime: now, LastProbeTime: now},
			{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit", LastTransitionTime: now, LastProbeTime: now},
		}
	}
	if err := e.c.Status().Update(ctx, &job); err != nil {
		t.Fatalf("set Job %s status: %v", name, err)
	}
}

// report plays the matcher: it writes shadow agreement and gallery counts
// for the candidate through the status subresource (a merge patch of only
// its own fields, as the matcher's RBAC allows).
func (e *env) report(t *testing.T, g *facegatev1.FaceGallery, model string, samples int64, agreement float64, expected, embedded int64) {
	t.Helper()
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	patch := map[string]any{"status": map[string]any{"rollout": map[string]any{
		"shadow":  facegatev1.ShadowReport{Model: model, Samples: samples, Agreement: agreement, ObservedAt: now},
		"gallery": facegatev1.GalleryReport{Model: model, Expected: expected, Embedded: embedded, ObservedAt: now},
	}}}
	b, err := json.Marshal(patch)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.Status().Patch(context.Background(), g, client.RawPatch(types.MergePatchType, b)); err != nil {
		t.Fatalf("matcher status report: %v", err)
	}
}

func (e *env) exists(t *testing.T, obj client.Object) bool {
	t.Helper()
	err := e.c.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)
	if apierrors.IsNotFound(err) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return obj.GetDeletionTimestamp().IsZero()
}

func (e *env) waitGone(t *testing.T, obj client.Object) {
	t.Helper()
	e.eventually(t, 20*time.Second, func() error {
		if e.exists(t, obj) {
			return fmt.Errorf("%T %s still exists", obj, obj.GetName())
		}
		return nil
	})
}

// bindingLog watches a gallery and checks, on every status version the API
// server stored, that a binding's collection belongs to its model and that
// no two bindings share a collection: encodings of two models never meet.
type bindingLog struct {
	mu       sync.Mutex
	versions int
	actives  []string
	problems []string
}

func (e *env) watchBindings(t *testing.T, ns, name string, sha map[string]string) *bindingLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w, err := e.c.Watch(ctx, &facegatev1.FaceGalleryList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	bl := &bindingLog{}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			g, ok := ev.Object.(*facegatev1.FaceGallery)
			if !ok || g.Name != name {
				continue
			}
			bl.mu.Lock()
			bl.versions++
			seen := map[string]string{}
			for role, b := range map[string]*facegatev1.ModelBinding{"active": g.Status.Active, "candidate": g.Status.Candidate, "previous": g.Status.Previous} {
				if b == nil {
					continue
				}
				if !strings.HasSuffix(b.Collection, "_"+sha[b.Model][:12]) || b.SHA256 != sha[b.Model] {
					bl.problems = append(bl.problems, fmt.Sprintf("%s binding of %s uses collection %s", role, b.Model, b.Collection))
				}
				if other, dup := seen[b.Collection]; dup {
					bl.problems = append(bl.problems, fmt.Sprintf("%s and %s share collection %s", role, other, b.Collection))
				}
				seen[b.Collection] = role
			}
			if a := g.Status.Active; a != nil && (len(bl.actives) == 0 || bl.actives[len(bl.actives)-1] != a.Model) {
				bl.actives = append(bl.actives, a.Model)
			}
			bl.mu.Unlock()
		}
	}()
	return bl
}

func (bl *bindingLog) check(t *testing.T, wantActives ...string) {
	t.Helper()
	bl.mu.Lock()
	defer bl.mu.Unlock()
	t.Logf("%d gallery status versions watched; active models %v", bl.versions, bl.actives)
	for _, p := range bl.problems {
		t.Error(p)
	}
	if !slices.Equal(bl.actives, wantActives) {
		t.Errorf("active model sequence %v, want %v", bl.actives, wantActives)
	}
}

// startRollout creates models m1 (active) and m2 and a gallery on m1, then
// asks for m2 and waits for the re-embedding Job.
func (e *env) startRollout(t *testing.T, prefix string) (ns string, g *facegatev1.FaceGallery, bl *bindingLog) {
	t.Helper()
	ns = e.namespace(t, prefix)
	e.validModel(t, ns, "m1", "/enc-150-128.onnx", 150, 128)
	e.validModel(t, ns, "m2", "/enc-112-64.onnx", 112, 64)
	bl = e.watchBindings(t, ns, "lobby", map[string]string{"m1": e.sha("/enc-150-128.onnx"), "m2": e.sha("/enc-112-64.onnx")})
	g = e.gallery(t, ns, "lobby", "m1")
	g = e.waitGallery(t, ns, "lobby", activeIs("m1"))
	e.setModel(t, g, "m2")
	g = e.waitGallery(t, ns, "lobby", phaseIs(facegatev1.PhaseReembedding))
	return ns, g, bl
}

func TestRolloutSwitchesAfterShadowThenRetiresTheOldModel(t *testing.T) {
	e := cluster(t)
	ctx := context.Background()
	ns := e.namespace(t, "rollout")
	e.validModel(t, ns, "m1", "/enc-150-128.onnx", 150, 128)
	e.validModel(t, ns, "m2", "/enc-112-64.onnx", 112, 64)
	bl := e.watchBindings(t, ns, "lobby", map[string]string{"m1": e.sha("/enc-150-128.onnx"), "m2": e.sha("/enc-112-64.onnx")})

	// First model: active at once, with its pool.
	g := e.gallery(t, ns, "lobby", "m1")
	g = e.waitGallery(t, ns, "lobby", func(g *facegatev1.FaceGallery) error {
		if err := activeIs("m1")(g); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(g.Status.Conditions, facegatev1.ConditionReady) {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	e.waitEvent(t, ns, "lobby", "Activated", `FaceModel "m1" active in collection fg_lobby_tiny_enc_150_128_`)
	oldPool := &facegatev1.EmbedderPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lobby-a-m1"}}
	if !e.exists(t, oldPool) {
		t.Fatal("pool lobby-a-m1 missing")
	}
	if oldPool.Spec.Collection != g.Status.Active.Collection || oldPool.Spec.ModelRef.Name != "m1" || !metav1.IsControlledBy(oldPool, g) {
		t.Fatalf("active pool %+v", oldPool.Spec)
	}
	activeCollection := g.Status.Active.Collection

	// New model: validated, its pool started, the re-embedding Job created.
	e.setModel(t, g, "m2")
	g = e.waitGallery(t, ns, "lobby", phaseIs(facegatev1.PhaseReembedding))
	cand := g.Status.Candidate
	if cand == nil || cand.Model != "m2" || cand.Collection == activeCollection || cand.EmbeddingSize != 64 {
		t.Fatalf("candidate %+v (active collection %s)", cand, activeCollection)
	}
	newPool := &facegatev1.EmbedderPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lobby-a-m2"}}
	if !e.exists(t, newPool) || newPool.Spec.ModelRef.Name != "m2" || newPool.Spec.Collection != cand.Collection ||
		newPool.Spec.Consumer.Durable == oldPool.Spec.Consumer.Durable {
		t.Fatalf("candidate pool %+v", newPool.Spec)
	}
	var newDep appsv1.Deployment
	if err := e.c.Get(ctx, client.ObjectKeyFromObject(newPool), &newDep); err != nil {
		t.Fatalf("candidate pool has no Deployment: %v", err)
	}
	envOf := map[string]string{}
	for _, v := range newDep.Spec.Template.Spec.Containers[0].Env {
		envOf[v.Name] = v.Value
	}
	ann := newDep.Spec.Template.Annotations
	if ann[AnnotationCollection] != cand.Collection || ann[AnnotationEmbeddingSize] != "64" || envOf["FACEGATE_DURABLE"] != "lobby-a-m2" {
		t.Fatalf("candidate embedder env %v, annotations %v", envOf, ann)
	}
	var job batchv1.Job
	if err := e.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: g.Status.Rollout.ReembedJob}, &job); err != nil {
		t.Fatalf("re-embedding Job: %v", err)
	}
	checkReembedJob(t, &job, "tiny-enc-112-64")
	if !metav1.IsControlledBy(&job, g) {
		t.Errorf("job not owned by the gallery")
	}

	// Re-embedded: shadowing. Too few samples, then an incomplete gallery,
	// keep it there.
	e.finishJob(t, ns, job.Name, true)
	g = e.waitGallery(t, ns, "lobby", phaseIs(facegatev1.PhaseShadowing))
	e.report(t, g, "m2", 500, 1.0, 40, 40)
	g = e.waitGallery(t, ns, "lobby", func(g *facegatev1.FaceGallery) error {
		if !strings.Contains(g.Status.Rollout.Message, "agreement 1.0000 over 500 faces (minimum 0.9900 over 1000)") {
			return fmt.Errorf("message %q", g.Status.Rollout.Message)
		}
		return phaseIs(facegatev1.PhaseShadowing)(g)
	})
	e.report(t, g, "m2", 1500, 0.995, 40, 39)
	g = e.waitGallery(t, ns, "lobby", func(g *facegatev1.FaceGallery) error {
		if !strings.Contains(g.Status.Rollout.Message, "completeness 0.9750 (minimum 1.0000)") {
			return fmt.Errorf("message %q", g.Status.Rollout.Message)
		}
		return phaseIs(facegatev1.PhaseShadowing)(g)
	})
	// A report about another model is ignored.
	e.report(t, g, "m1", 5000, 1.0, 40, 40)
	time.Sleep(500 * time.Millisecond)
	if g = e.getGallery(t, ns, "lobby"); g.Status.Rollout.Phase != facegatev1.PhaseShadowing {
		t.Fatalf("a report about m1 moved the rollout: %s", describe(g))
	}

	// Gates pass: the switch.
	e.report(t, g, "m2", 1500, 0.995, 40, 40)
	g = e.waitGallery(t, ns, "lobby", phaseIs(facegatev1.PhaseSwitched))
	st := g.Status
	if st.Active.Model != "m2" || st.Active.Collection != cand.Collection || st.Previous == nil || st.Previous.Model != "m1" ||
		st.Previous.Collection != activeCollection || st.Candidate != nil || st.RetireAfter == nil {
		t.Fatalf("after the switch: %s", describe(g))
	}
	if d := st.RetireAfter.Sub(e.clock.Now()); d < rollbackWindow-time.Minute || d > rollbackWindow {
		t.Errorf("retire after %s, want the %s rollback window", d, rollbackWindow)
	}
	e.waitEvent(t, ns, "lobby", "Switched", `from "m1"`, `to "m2"`, "agreement 0.9950 over 1500 faces")
	if c := meta.FindStatusCondition(st.Conditions, facegatev1.ConditionProgressing); c == nil || c.Status != metav1.ConditionFalse || c.Reason != "Switched" {
		t.Errorf("progressing: %s", condition(st.Conditions, facegatev1.ConditionProgressing))
	}
	if !e.exists(t, oldPool) {
		t.Fatal("the old pool went before the rollback window ended")
	}

	// Still inside the window after a day minus a minute.
	e.clock.Advance(rollbackWindow - time.Minute)
	e.poke(t, g)
	time.Sleep(time.Second)
	if g = e.getGallery(t, ns, "lobby"); g.Status.Previous == nil || !e.exists(t, oldPool) {
		t.Fatalf("retired inside the window: %s", describe(g))
	}
	// Window over: retired.
	e.clock.Advance(2 * time.Minute)
	e.poke(t, g)
	g = e.waitGallery(t, ns, "lobby", phaseIs(facegatev1.PhaseCompleted))
	if g.Status.Previous != nil || g.Status.RetireAfter != nil || g.Status.Active.Model != "m2" {
		t.Fatalf("after retirement: %s", describe(g))
	}
	e.waitGone(t, oldPool)
	if !e.exists(t, newPool) {
		t.Fatal("the new pool went away")
	}
	e.waitEvent(t, ns, "lobby", "Retired", `retired FaceModel "m1"`, "the rollback window ended")
	bl.check(t, "m1", "m2")
}

func TestRolloutAbortsOnLowAgreement(t *testing.T) {
	e := cluster(t)
	ns, g, bl := e.startRollout(t, "lowagree")
	e.finishJob(t, ns, g.Status.Rollout.ReembedJob, true)
	g = e.waitGallery(t, ns, "lobby", phaseIs(facegatev1.PhaseShadowing))
	jobName := g.Status.Rollout.ReembedJob

	// Complete gallery, plenty of samples, but the models disagree on 10%.
	e.report(t, g, "m2", 2000, 0.90, 40, 40)
	g = e.waitGallery(t, ns, "lobby", phaseIs(facegatev1.PhaseAborted))
	st := g.Status
	if st.Rollout.Reason != "LowAgreement" || !strings.Contains(st.Rollout.Message, "agreement 0.9000 over 2000 faces (minimum 0.9900 over 1000)") ||
		!strings.Contains(st.Rollout.Message, `"m1" stays active`) {
		t.Fatalf("abort: %s", describe(g))
	}
	if st.Active.Model != "m1" || st.Candidate != nil || st.Previous != nil {
		t.Fatalf("bindings after the abort: %s", describe(g))
	}
	if c := meta.FindStatusCondition(st.Conditions, facegatev1.ConditionRolloutAborted); c == nil || c.Status != metav1.ConditionTrue || c.Reason != "LowAgreement" {
		t.Errorf("%s", condition(st.Conditions, facegatev1.ConditionRolloutAborted))
	}
	e.waitEvent(t, ns, "lobby", "RolloutAborted", `rollout of "m2" aborted (LowAgreement)`)
	e.waitGone(t, &facegatev1.EmbedderPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lobby-a-m2"}})
	e.waitGone(t, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: jobName}})
	if !e.exists(t, &facegatev1.EmbedderPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lobby-a-m1"}}) {
		t.Fatal("the active pool was removed")
	}

	// An aborted rollout is not retried by itself.
	e.poke(t, g)
	time.Sleep(time.Second)
	g = e.getGallery(t, ns, "lobby")
	if g.Status.Rollout.Phase != facegatev1.PhaseAborted || e.exists(t, &facegatev1.EmbedderPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lobby-a-m2"}}) {
		t.Fatalf("the aborted rollout restarted: %s", describe(g))
	}
	bl.check(t, "m1")
}

func TestRolloutAbortsWhenReembeddingFails(t *testing.T) {
	e := cluster(t)
	ns, g, bl := e.startRollout(t, "jobfail")
	e.finishJob(t, ns, g.Status.Rollout.ReembedJob, false)
	g = e.waitGallery(t, ns, "lobby", phaseIs(facegatev1.PhaseAborted))
	if g.Status.Rollout.Reason != "ReembedFailed" || !strings.Contains(g.Status.Rollout.Message, "BackoffLimitExceeded") || g.Status.Active.Model != "m1" {
		t.Fatalf("abort: %s", describe(g))
	}
	e.waitGone(t, &facegatev1.EmbedderPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lobby-a-m2"}})
	bl.check(t, "m1")
}

func TestRolloutAbortsWhenShadowGatesTimeOut(t *testing.T) {
	e := cluster(t)
	ns, g, bl := e.startRollout(t, "timeout")
	e.finishJob(t, ns, g.Status.Rollout.ReembedJob, true)
	g = e.waitGallery(t, ns, "lobby", phaseIs(facegatev1.PhaseShadowing))
	// Agreement is good but the gallery never completes.
	e.report(t, g, "m2", 3000, 0.999, 40, 30)
	e.clock.Advance(2*time.Hour + time.Minute)
	e.poke(t, g)
	g = e.waitGallery(t, ns, "lobby", phaseIs(facegatev1.PhaseAborted))
	if g.Status.Rollout.Reason != "ShadowTimeout" || !strings.Contains(g.Status.Rollout.Message, "gates not passed within 2h0m0s") ||
		!strings.Contains(g.Status.Rollout.Message, "completeness 0.7500") {
		t.Fatalf("abort: %s", describe(g))
	}
	bl.check(t, "m1")
}

func TestRolloutCancelledBySettingTheActiveModelBack(t *testing.T) {
	e := cluster(t)
	ns, g, bl := e.startRollout(t, "cancel")
	e.setModel(t, g, "m1")
	g = e.waitGallery(t, ns, "lobby", phaseIs(facegatev1.PhaseAborted))
	if g.Status.Rollout.Reason != "Cancelled" || g.Status.Active.Model != "m1" || g.Status.Candidate != nil {
		t.Fatalf("cancel: %s", describe(g))
	}
	e.waitGone(t, &facegatev1.EmbedderPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lobby-a-m2"}})
	bl.check(t, "m1")
}

func TestRolloutOfAnInvalidModelAborts(t *testing.T) {
	e := cluster(t)
	ns := e.namespace(t, "invalidroll")
	e.validModel(t, ns, "m1", "/enc-150-128.onnx", 150, 128)
	bad := e.model(t, ns, "m3", "/enc-112-96.onnx", 112, 128) // the file's output is 96-d
	g := e.gallery(t, ns, "lobby", "m1")
	g = e.waitGallery(t, ns, "lobby", activeIs("m1"))
	e.setModel(t, g, bad.Name)
	g = e.waitGallery(t, ns, "lobby", phaseIs(facegatev1.PhaseAborted))
	if g.Status.Rollout.Reason != "ValidationFailed" || !strings.Contains(g.Status.Rollout.Message, "InputSpecMismatch") ||
		!strings.Contains(g.Status.Rollout.Message, "want the embedding size 128") || g.Status.Candidate != nil {
		t.Fatalf("abort: %s", describe(g))
	}
	if e.exists(t, &facegatev1.EmbedderPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lobby-a-m3"}}) {
		t.Fatal("a pool was started for an invalid model")
	}

	// A gallery naming a model that does not exist waits and says so.
	e.setModel(t, g, "m9")
	g = e.waitGallery(t, ns, "lobby", func(g *facegatev1.FaceGallery) error {
		if g.Status.Rollout.Phase != facegatev1.PhaseValidating || g.Status.Rollout.Reason != facegatev1.ReasonUnknownModel ||
			!strings.Contains(g.Status.Rollout.Message, `FaceModel "m9" does not exist`) {
			return fmt.Errorf("rollout %+v", g.Status.Rollout)
		}
		return nil
	})
	e.waitEvent(t, ns, "lobby", facegatev1.ReasonUnknownModel, `FaceModel "m9" does not exist`)
}

func TestRollbackWithinTheWindowSwitchesBack(t *testing.T) {
	e := cluster(t)
	ns, g, bl := e.startRollout(t, "rollback")
	e.finishJob(t, ns, g.Status.Rollout.ReembedJob, true)
	g = e.waitGallery(t, ns, "lobby", phaseIs(facegatev1.PhaseShadowing))
	e.report(t, g, "m2", 1200, 1.0, 40, 40)
	g = e.waitGallery(t, ns, "lobby", phaseIs(facegatev1.PhaseSwitched))
	oldCollection := g.Status.Previous.Collection

	// Half-way through the window, the operators roll back.
	e.clock.Advance(rollbackWindow / 2)
	e.setModel(t, g, "m1")
	g = e.waitGallery(t, ns, "lobby", phaseIs(facegatev1.PhaseRolledBack))
	st := g.Status
	if st.Active.Model != "m1" || st.Active.Collection != oldCollection || st.Previous != nil || st.Candidate != nil || st.RetireAfter != nil {
		t.Fatalf("after rollback: %s", describe(g))
	}
	e.waitEvent(t, ns, "lobby", "RolledBack", `switched back from "m2"`, `to "m1"`)
	e.waitGone(t, &facegatev1.EmbedderPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lobby-a-m2"}})
	if !e.exists(t, &facegatev1.EmbedderPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lobby-a-m1"}}) {
		t.Fatal("the restored model's pool is missing")
	}
	// And it stays so: no new rollout starts, nothing is retired later.
	e.clock.Advance(rollbackWindow)
	e.poke(t, g)
	time.Sleep(time.Second)
	if g = e.getGallery(t, ns, "lobby"); g.Status.Rollout.Phase != facegatev1.PhaseRolledBack || g.Status.Active.Model != "m1" ||
		!e.exists(t, &facegatev1.EmbedderPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lobby-a-m1"}}) {
		t.Fatalf("after the window: %s", describe(g))
	}
	bl.check(t, "m1", "m2", "m1")
}

// TestGallerySweepsPoolsOfUnboundModels: a pool the gallery owns for a model
// it no longer binds (left behind by a crash between two writes, say) is
// removed; the active model's pool is not.
func TestGallerySweepsPoolsOfUnboundModels(t *testing.T) {
	e := cluster(t)
	ctx := context.Background()
	ns := e.namespace(t, "sweep")
	e.validModel(t, ns, "m1", "/enc-150-128.onnx", 150, 128)
	e.validModel(t, ns, "m2", "/enc-112-64.onnx", 112, 64)
	g := e.gallery(t, ns, "lobby", "m1")
	g = e.waitGallery(t, ns, "lobby", activeIs("m1"))

	orphan := gpuPool(ns, "lobby-a-m2", "m2", siteFilter(t, ns), facegatev1.ScalingSpec{MinReplicas: 1, MaxReplicas: 1, TargetLagPerReplica: 10, PollingSeconds: 1})
	orphan.Labels = map[string]string{LabelGallery: "lobby", LabelModel: "m2"}
	orphan.OwnerReferences = []metav1.OwnerReference{{
		APIVersion: facegatev1.GroupVersion.String(), Kind: "FaceGallery", Name: g.Name, UID: g.UID,
		Controller: ptrTo(true), BlockOwnerDeletion: ptrTo(true),
	}}
	if err := e.c.Create(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	e.poke(t, g)
	e.waitGone(t, &facegatev1.EmbedderPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lobby-a-m2"}})
	if !e.exists(t, &facegatev1.EmbedderPool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lobby-a-m1"}}) {
		t.Fatal("the active pool was swept")
	}
}

// checkReembedJob checks the contract of the re-embedding Job with
// `facegate gallery reembed` and with the chart's photo store and keys.
func checkReembedJob(t *testing.T, job *batchv1.Job, modelID string) {
	t.Helper()
	pod := job.Spec.Template.Spec
	c := pod.Containers[0]
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"gallery reembed --json", "--model " + modelID, "--photos /var/lib/facegate/photos/store", "--keys /run/facegate/private/keys"} {
		if !strings.Contains(args, want) {
			t.Errorf("job args %q lack %q", args, want)
		}
	}
	if len(c.Command) != 1 || c.Command[0] != "/usr/local/bin/facegate" {
		t.Errorf("job command %v", c.Command)
	}
	vol := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vol[v.Name] = v
	}
	if v := vol["photos"]; v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "photos" || !v.PersistentVolumeClaim.ReadOnly {
		t.Errorf("job does not mount the photo claim read-only: %+v", pod.Volumes)
	}
	if v := vol["keys"]; v.Secret == nil || v.Secret.SecretName != "facegate-keys" {
		t.Errorf("job does not mount the keys Secret: %+v", pod.Volumes)
	}
	if v := vol["private"]; v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
		t.Errorf("key copies not in a memory volume: %+v", pod.Volumes)
	}
	if v := vol["nats-creds"]; v.Secret == nil || v.Secret.SecretName != "reembed-nats" {
		t.Errorf("job does not mount its NATS credential: %+v", pod.Volumes)
	}
	// The keys reach the CLI only through the init container's copy.
	if len(pod.InitContainers) != 1 || pod.InitContainers[0].Name != "install-secrets" ||
		!slices.Contains(pod.InitContainers[0].Command, "/etc/facegate/keys=/run/facegate/private/keys") {
		t.Fatalf("init containers %+v", pod.InitContainers)
	}
	mounted := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounted[m.Name] = m
	}
	if _, ok := mounted["keys"]; ok {
		t.Error("the keys Secret is mounted into the re-embedding container itself")
	}
	if m, ok := mounted["private"]; !ok || m.MountPath != "/run/facegate/private" || !m.ReadOnly {
		t.Errorf("private mount %+v", m)
	}
	env := map[string]corev1.EnvVar{}
	for _, v := range c.Env {
		env[v.Name] = v
	}
	if !strings.HasPrefix(env["FACEGATE_NATS_URL"].Value, "nats://") || env["FACEGATE_NATS_CREDS"].Value != "/etc/facegate/nats/nats.creds" ||
		env["FACEGATE_CACHE"].Value != "/opt/facegate/cache" {
		t.Errorf("job env %+v", c.Env)
	}
	if ref := env["FACEGATE_NATS_INBOX_PREFIX"].ValueFrom; ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != "reembed-nats" ||
		ref.SecretKeyRef.Key != "inbox-prefix" {
		t.Errorf("inbox prefix not from the credential Secret: %+v", env["FACEGATE_NATS_INBOX_PREFIX"])
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsUser == nil || *pod.SecurityContext.RunAsUser != 65532 ||
		pod.SecurityContext.FSGroup == nil || *pod.SecurityContext.FSGroup != 65532 {
		t.Errorf("pod security context %+v: the keys Secret is group-readable for fsGroup 65532", pod.SecurityContext)
	}
}
