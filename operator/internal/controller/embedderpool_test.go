package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	facegatev1 "github.com/facegate/facegate/operator/api/v1alpha1"
)

// replicaLog records every replica count the API server stored for the
// Deployments of a namespace, from a watch: a scale outside the bounds
// would be seen even if corrected a moment later.
type replicaLog struct {
	mu   sync.Mutex
	seen map[string][]int32
}

func (e *env) watchReplicas(t *testing.T, ns string) *replicaLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w, err := e.c.Watch(ctx, &appsv1.DeploymentList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatalf("watch deployments: %v", err)
	}
	rl := &replicaLog{seen: map[string][]int32{}}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			d, ok := ev.Object.(*appsv1.Deployment)
			if !ok || ev.Type == watch.Deleted || d.Spec.Replicas == nil {
				continue
			}
			rl.mu.Lock()
			if s := rl.seen[d.Name]; len(s) == 0 || s[len(s)-1] != *d.Spec.Replicas {
				rl.seen[d.Name] = append(s, *d.Spec.Replicas)
			}
			rl.mu.Unlock()
		}
	}()
	return rl
}

func (rl *replicaLog) of(name string) []int32 {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return slices.Clone(rl.seen[name])
}

func (e *env) publish(t *testing.T, subject string, n int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		if _, err := e.js.Publish(ctx, subject, fmt.Appendf(nil, "jpeg %d", i)); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
}

// drain plays an embedder: it fetches and acknowledges n messages of the
// consumer (all of them when n < 0).
func (e *env) drain(t *testing.T, durable string, n int, ack bool) []jetstream.Msg {
	t.Helper()
	ctx := context.Background()
	cons, err := e.js.Consumer(ctx, "FRAMES", durable)
	if err != nil {
		t.Fatalf("consumer %s: %v", durable, err)
	}
	var got []jetstream.Msg
	for n < 0 || len(got) < n {
		want := 100
		if n >= 0 {
			want = min(want, n-len(got))
		}
		batch, err := cons.Fetch(want, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		k := 0
		for m := range batch.Messages() {
			k++
			if ack {
				if err := m.DoubleAck(ctx); err != nil {
					t.Fatalf("ack: %v", err)
				}
			}
			got = append(got, m)
		}
		if k == 0 {
			break
		}
	}
	return got
}

func (e *env) pool(t *testing.T, ns, name string) *facegatev1.EmbedderPool {
	t.Helper()
	var p facegatev1.EmbedderPool
	if err := e.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &p); err != nil {
		t.Fatalf("get pool %s: %v", name, err)
	}
	return &p
}

// waitReplicas waits until the Deployment and the pool status both say want.
func (e *env) waitReplicas(t *testing.T, ns, name string, want int32, extra func(*facegatev1.EmbedderPool) error) {
	t.Helper()
	e.eventually(t, 30*time.Second, func() error {
		var d appsv1.Deployment
		if err := e.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &d); err != nil {
			return err
		}
		var p facegatev1.EmbedderPool
		if err := e.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &p); err != nil {
			return err
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas != want || p.Status.Replicas != want {
			return fmt.Errorf("deployment replicas %v, status %d, want %d; lag %+v; %s", ptrVal(d.Spec.Replicas), p.Status.Replicas, want,
				p.Status.Lag, condition(p.Status.Conditions, facegatev1.ConditionScalingActive))
		}
		if extra != nil {
			return extra(&p)
		}
		return nil
	})
}

func ptrVal(p *int32) any {
	if p == nil {
		return nil
	}
	return *p
}

func gpuPool(ns, name, model, subject string, sc facegatev1.ScalingSpec) *facegatev1.EmbedderPool {
	return &facegatev1.EmbedderPool{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: facegatev1.EmbedderPoolSpec{
			ModelRef: facegatev1.ModelReference{Name: model},
			Consumer: facegatev1.ConsumerSpec{ConsumerTemplate: facegatev1.ConsumerTemplate{Stream: "FRAMES", FilterSubject: subject}, Durable: name},
			EmbedderTemplate: facegatev1.EmbedderTemplate{
				BatchSize: 32,
				Scaling:   sc,
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("2Gi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("4Gi"), facegatev1.GPUResource: resource.MustParse("1")},
				},
				NodeSelector:     map[string]string{"nvidia.com/gpu.present": "true"},
				Tolerations:      []corev1.Toleration{{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
				RuntimeClassName: ptrTo("nvidia"),
				Env:              []corev1.EnvVar{{Name: "FACEGATE_EXTRA", Value: "1"}},
			},
		},
	}
}

func TestPoolScalesWithRealConsumerLag(t *testing.T) {
	e := cluster(t)
	ctx := context.Background()
	ns := e.namespace(t, "scale")
	e.validModel(t, ns, "enc", "/enc-150-128.onnx", 150, 128)
	rl := e.watchReplicas(t, ns)
	subject := framesSubject(t, ns, "cam1")

	pool := gpuPool(ns, "bldg-a", "enc", siteFilter(t, ns), facegatev1.ScalingSpec{
		MinReplicas: 1, MaxReplicas: 4, TargetLagPerReplica: 100,
		ScaleDownStabilizationSeconds: 120, CooldownSeconds: 60, PollingSeconds: 1,
	})
	if err := e.c.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}

	// Idle: the Deployment starts at min, and the operator created the
	// durable consumer on the real server.
	e.waitReplicas(t, ns, "bldg-a", 1, nil)
	if _, err := e.js.Consumer(ctx, "FRAMES", "bldg-a"); err != nil {
		t.Fatalf("operator did not create the consumer: %v", err)
	}
	e.waitEvent(t, ns, "bldg-a", "ConsumerCreated", "created durable bldg-a on stream FRAMES")

	// The GPU settings reach the pod template.
	var dep appsv1.Deployment
	if err := e.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "bldg-a"}, &dep); err != nil {
		t.Fatal(err)
	}
	checkGPUTemplate(t, &dep, pool)

	// 250 pending frames: ceil(250/100) = 3.
	e.publish(t, subject, 250)
	e.waitReplicas(t, ns, "bldg-a", 3, func(p *facegatev1.EmbedderPool) error {
		if p.Status.Lag == nil || p.Status.Lag.Pending != 250 || p.Status.Lag.Total != 250 {
			return fmt.Errorf("lag %+v, want 250 pending", p.Status.Lag)
		}
		return nil
	})
	e.waitEvent(t, ns, "bldg-a", "ScaledUp", "pending 250 + ack pending 0", "-> 3")

	// 650: ceil = 7, capped at max 4, and the pool says so.
	e.publish(t, subject, 400)
	e.waitReplicas(t, ns, "bldg-a", 4, func(p *facegatev1.EmbedderPool) error {
		c := meta.FindStatusCondition(p.Status.Conditions, facegatev1.ConditionScalingLimited)
		if p.Status.DesiredReplicas != 7 || c == nil || c.Status != metav1.ConditionTrue || c.Reason != "TooManyReplicas" {
			return fmt.Errorf("desired %d, %s", p.Status.DesiredReplicas, condition(p.Status.Conditions, facegatev1.ConditionScalingLimited))
		}
		return nil
	})
	e.waitEvent(t, ns, "bldg-a", "TooManyReplicas", "capped at the maximum 4")

	// Messages in flight but not acknowledged still count (ack pending).
	inflight := e.drain(t, "bldg-a", 300, false)
	e.eventually(t, 15*time.Second, func() error {
		p := e.pool(t, ns, "bldg-a")
		if l := p.Status.Lag; l == nil || l.Pending != 350 || l.AckPending != 300 || l.Total != 650 {
			return fmt.Errorf("lag %+v, want 350 pending + 300 ack pending", l)
		}
		return nil
	})
	for _, m := range inflight {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Drained: the lag is zero, but the 120 s scale-down window still holds
	// the highest recent recommendation (4).
	e.drain(t, "bldg-a", -1, true)
	e.eventually(t, 15*time.Second, func() error {
		p := e.pool(t, ns, "bldg-a")
		c := meta.FindStatusCondition(p.Status.Conditions, facegatev1.ConditionScalingActive)
		if p.Status.Lag == nil || p.Status.Lag.Total != 0 || c == nil || c.Reason != "Stabilizing" {
			return fmt.Errorf("lag %+v, %s", p.Status.Lag, condition(p.Status.Conditions, facegatev1.ConditionScalingActive))
		}
		if p.Status.Replicas != 4 {
			return fmt.Errorf("scaled down to %d inside the stabilisation window", p.Status.Replicas)
		}
		return nil
	})
	// Past the window: down to min 1, never below.
	e.clock.Advance(125 * time.Second)
	e.waitReplicas(t, ns, "bldg-a", 1, nil)
	e.waitEvent(t, ns, "bldg-a", "ScaledDown", "scaling 4 -> 1")
	// Long idle: min 1 keeps one replica (no scale to zero).
	e.clock.Advance(10 * time.Minute)
	e.poke(t, e.pool(t, ns, "bldg-a"))
	time.Sleep(2500 * time.Millisecond)
	e.waitReplicas(t, ns, "bldg-a", 1, nil)

	checkSequence(t, rl.of("bldg-a"), 1, 4, []int32{1}, []int32{4, 1})
}

// checkSequence checks every replica count the Deployment ever had: inside
// [lo, hi], starting with start, rising without flapping to the peak, and
// ending with end. Intermediate counts on the way up depend on when a poll
// caught the publishing, so only the shape is fixed.
func checkSequence(t *testing.T, seen []int32, lo, hi int32, start, end []int32) {
	t.Helper()
	t.Logf("replica sequence %v", seen)
	for _, r := range seen {
		if r < lo || r > hi {
			t.Errorf("replicas %d outside [%d, %d] (sequence %v)", r, lo, hi, seen)
		}
	}
	if len(seen) < len(start)+len(end) || !slices.Equal(seen[:len(start)], start) || !slices.Equal(seen[len(seen)-len(end):], end) {
		t.Fatalf("replica sequence %v does not start with %v and end with %v", seen, start, end)
	}
	rise := seen[:len(seen)-len(end)+1]
	for i := 1; i < len(rise); i++ {
		if rise[i] < rise[i-1] {
			t.Errorf("replicas went down before the lag drained: %v", seen)
		}
	}
}

func checkGPUTemplate(t *testing.T, dep *appsv1.Deployment, pool *facegatev1.EmbedderPool) {
	t.Helper()
	ps := dep.Spec.Template.Spec
	if len(ps.Containers) != 1 {
		t.Fatalf("containers: %d", len(ps.Containers))
	}
	c := ps.Containers[0]
	if q := c.Resources.Limits[facegatev1.GPUResource]; q.String() != "1" {
		t.Errorf("GPU limit %q, want 1", q.String())
	}
	if q := c.Resources.Requests[corev1.ResourceMemory]; q.String() != "2Gi" {
		t.Errorf("memory request %q", q.String())
	}
	if ps.NodeSelector["nvidia.com/gpu.present"] != "true" {
		t.Errorf("node selector %v", ps.NodeSelector)
	}
	if len(ps.Tolerations) != 1 || ps.Tolerations[0].Key != "nvidia.com/gpu" || ps.Tolerations[0].Effect != corev1.TaintEffectNoSchedule {
		t.Errorf("tolerations %+v", ps.Tolerations)
	}
	if ps.RuntimeClassName == nil || *ps.RuntimeClassName != "nvidia" {
		t.Errorf("runtime class %v", ps.RuntimeClassName)
	}
	env := map[string]string{}
	for _, v := range c.Env {
		env[v.Name] = v.Value
	}
	want := map[string]string{
		"FACEGATE_BATCH":          "32",
		"FACEGATE_DURABLE":        pool.Spec.Consumer.Durable,
		"FACEGATE_MODEL":          "tiny-enc-150-128",
		"FACEGATE_CACHE":          bakedCacheDir,
		"FACEGATE_METRICS_ADDR":   ":8080",
		"FACEGATE_BIND":           "true",
		"FACEGATE_ENSURE_STREAMS": "false",
		"FACEGATE_EXTRA":          "1",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("env %s = %q, want %q", k, env[k], v)
		}
	}
	ann := dep.Spec.Template.Annotations
	if ann[AnnotationExecutionProvider] != "cuda" || ann[AnnotationEmbeddingSize] != "128" ||
		ann[AnnotationModelSHA256] != suite.sha("/enc-150-128.onnx") || !strings.HasPrefix(ann[AnnotationCollection], "fg_tiny_enc_150_128_") {
		t.Errorf("pod annotations %v", ann)
	}
	sc := c.SecurityContext
	if sc == nil || !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("security context %+v", sc)
	}
	if !metav1.IsControlledBy(dep, pool) && dep.OwnerReferences[0].Name != pool.Name {
		t.Errorf("deployment not owned by the pool: %+v", dep.OwnerReferences)
	}
}

func TestPoolScalesToZeroAndWakesOnActivation(t *testing.T) {
	e := cluster(t)
	ctx := context.Background()
	ns := e.namespace(t, "zero")
	e.validModel(t, ns, "enc", "/enc-150-128.onnx", 150, 128)
	rl := e.watchReplicas(t, ns)
	subject := framesSubject(t, ns, "cam1")

	p := gpuPool(ns, "night", "enc", siteFilter(t, ns), facegatev1.ScalingSpec{
		MinReplicas: 0, MaxReplicas: 3, TargetLagPerReplica: 50, ActivationLag: 5,
		ScaleDownStabilizationSeconds: 0, CooldownSeconds: 60, PollingSeconds: 1,
	})
	p.Spec.Resources = corev1.ResourceRequirements{}
	if err := e.c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	e.waitReplicas(t, ns, "night", 0, func(p *facegatev1.EmbedderPool) error {
		if !meta.IsStatusConditionTrue(p.Status.Conditions, facegatev1.ConditionReady) {
			return fmt.Errorf("idle pool at zero not ready: %s", condition(p.Status.Conditions, facegatev1.ConditionReady))
		}
		return nil
	})

	// Lag at the activation threshold does not wake the pool.
	e.publish(t, subject, 5)
	e.eventually(t, 15*time.Second, func() error {
		p := e.pool(t, ns, "night")
		if p.Status.Lag == nil || p.Status.Lag.Total != 5 {
			return fmt.Errorf("lag %+v", p.Status.Lag)
		}
		return nil
	})
	time.Sleep(1500 * time.Millisecond)
	e.waitReplicas(t, ns, "night", 0, nil)

	// One more: active; ceil(6/50) = 1.
	e.publish(t, subject, 1)
	e.waitReplicas(t, ns, "night", 1, nil)
	e.waitEvent(t, ns, "night", "Activated", "pending 6 + ack pending 0", "activating 0 -> 1")
	// Sized for the lag: ceil(120/50) = 3.
	e.publish(t, subject, 114)
	e.waitReplicas(t, ns, "night", 3, nil)

	// Drained: one replica stays through the cooldown, then zero.
	e.drain(t, "night", -1, true)
	e.waitReplicas(t, ns, "night", 1, func(p *facegatev1.EmbedderPool) error {
		if !strings.Contains(condition(p.Status.Conditions, facegatev1.ConditionScalingActive), "zero after the 1m0s cooldown") {
			return fmt.Errorf("%s", condition(p.Status.Conditions, facegatev1.ConditionScalingActive))
		}
		return nil
	})
	e.clock.Advance(61 * time.Second)
	e.waitReplicas(t, ns, "night", 0, nil)
	e.waitEvent(t, ns, "night", "ScaledToZero", "cooldown 1m0s", "scaling 1 -> 0")

	checkSequence(t, rl.of("night"), 0, 3, []int32{0, 1}, []int32{3, 1, 0})
	var dep appsv1.Deployment
	if err := e.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "night"}, &dep); err != nil {
		t.Fatal(err)
	}
	if v := dep.Spec.Template.Annotations[AnnotationExecutionProvider]; v != "cpu" {
		t.Errorf("a pool without GPUs got execution provider %q", v)
	}
}

func TestPoolWithUnknownModelReportsItAndRecovers(t *testing.T) {
	e := cluster(t)
	ctx := context.Background()
	ns := e.namespace(t, "unknown")
	p := gpuPool(ns, "orphan", "no-such-model", siteFilter(t, ns), facegatev1.ScalingSpec{
		MinReplicas: 1, MaxReplicas: 2, TargetLagPerReplica: 10, PollingSeconds: 1, ScaleDownStabilizationSeconds: 0,
	})
	if err := e.c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	e.eventually(t, 15*time.Second, func() error {
		p := e.pool(t, ns, "orphan")
		c := meta.FindStatusCondition(p.Status.Conditions, facegatev1.ConditionModelResolved)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != facegatev1.ReasonUnknownModel ||
			!strings.Contains(c.Message, `FaceModel "no-such-model" does not exist in namespace "`+ns+`"`) {
			return fmt.Errorf("%s", condition(p.Status.Conditions, facegatev1.ConditionModelResolved))
		}
		return nil
	})
	e.waitEvent(t, ns, "orphan", facegatev1.ReasonUnknownModel, "no-such-model")
	var dep appsv1.Deployment
	if err := e.c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "orphan"}, &dep); !apierrors.IsNotFound(err) {
		t.Fatalf("a pool with an unknown model got a Deployment (err %v)", err)
	}

	// Creating the model wakes the pool (it watches FaceModels).
	e.model(t, ns, "no-such-model", "/enc-150-128.onnx", 150, 128)
	e.waitReplicas(t, ns, "orphan", 1, func(p *facegatev1.EmbedderPool) error {
		if !meta.IsStatusConditionTrue(p.Status.Conditions, facegatev1.ConditionModelResolved) {
			return errors.New(condition(p.Status.Conditions, facegatev1.ConditionModelResolved))
		}
		return nil
	})
}
