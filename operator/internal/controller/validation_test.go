package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	facegatev1 "github.com/facegate/facegate/operator/api/v1alpha1"
)

// object decodes a YAML manifest, as a user would write it (so fields the
// Go types would always send, like zero numbers, can be left out).
func object(t *testing.T, ns, manifest string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096).Decode(&u.Object); err != nil {
		t.Fatalf("decode manifest: %v", err)
	}
	u.SetNamespace(ns)
	return u
}

const validModelYAML = `
apiVersion: facegate.io/v1alpha1
kind: FaceModel
metadata: {name: m}
spec:
  modelID: dlib-resnet34-128
  artifact:
    url: http://models.example/dlib.onnx
    sha256: 21af72e6b0ba8bef2f481cfbc150b8d52e2b0c5390033ec1a7aab2edd005444c
  input: {width: 150, height: 150}
  embeddingSize: 128
  threshold: 0.6
  detector: {modelID: blazeface-256}
`

const validPoolYAML = `
apiVersion: facegate.io/v1alpha1
kind: EmbedderPool
metadata: {name: p}
spec:
  modelRef: {name: m}
  consumer: {stream: FRAMES, durable: p}
  scaling: {minReplicas: 1, maxReplicas: 3, targetLagPerReplica: 50}
`

const validGalleryYAML = `
apiVersion: facegate.io/v1alpha1
kind: FaceGallery
metadata: {name: g}
spec:
  model: m
  pools:
    - name: cpu
      consumer: {stream: FRAMES}
      scaling: {minReplicas: 1, maxReplicas: 3, targetLagPerReplica: 50}
`

// TestInvalidObjectsAreRejectedByTheAPIServer sends invalid objects to the
// real kube-apiserver: the CRDs' OpenAPI schemas and CEL rules reject them
// with messages that say what is wrong.
func TestInvalidObjectsAreRejectedByTheAPIServer(t *testing.T) {
	e := cluster(t)
	ctx := context.Background()
	ns := e.namespace(t, "invalid")

	// The valid versions are accepted (dry run), so each rejection below is
	// caused by the one change it makes.
	for _, m := range []string{validModelYAML, validPoolYAML, validGalleryYAML} {
		if err := e.c.Create(ctx, object(t, ns, m), client.DryRunAll); err != nil {
			t.Fatalf("valid object rejected: %v", err)
		}
	}

	cases := []struct {
		name, base, from, to string
		want                 []string
	}{
		{"min above max", validPoolYAML, "minReplicas: 1, maxReplicas: 3", "minReplicas: 5, maxReplicas: 3",
			[]string{"spec.scaling", "minReplicas must be less than or equal to maxReplicas"}},
		{"negative lag target", validPoolYAML, "targetLagPerReplica: 50", "targetLagPerReplica: -10",
			[]string{"spec.scaling.targetLagPerReplica", "targetLagPerReplica must be greater than 0"}},
		{"zero lag target", validPoolYAML, "targetLagPerReplica: 50", "targetLagPerReplica: 0",
			[]string{"targetLagPerReplica must be greater than 0"}},
		{"missing lag target", validPoolYAML, ", targetLagPerReplica: 50", "",
			[]string{"spec.scaling.targetLagPerReplica: Required value"}},
		{"negative min", validPoolYAML, "minReplicas: 1,", "minReplicas: -1,",
			[]string{"spec.scaling.minReplicas", "should be greater than or equal to 0"}},
		{"missing model reference", validPoolYAML, "  modelRef: {name: m}\n", "",
			[]string{"spec.modelRef: Required value"}},
		{"missing checksum", validModelYAML, "    sha256: 21af72e6b0ba8bef2f481cfbc150b8d52e2b0c5390033ec1a7aab2edd005444c\n", "",
			[]string{"spec.artifact.sha256: Required value"}},
		{"malformed checksum", validModelYAML, "sha256: 21af72e6", "sha256: 21AF72E6",
			[]string{"spec.artifact.sha256", "sha256 must be 64 lowercase hexadecimal digits"}},
		{"short checksum", validModelYAML, "sha256: 21af72e6b0ba8bef2f481cfbc150b8d52e2b0c5390033ec1a7aab2edd005444c", "sha256: abc123",
			[]string{"sha256 must be 64 lowercase hexadecimal digits"}},
		{"artefact not http", validModelYAML, "url: http://models.example/dlib.onnx", "url: /models/dlib.onnx",
			[]string{"spec.artifact.url", "should match"}},
		{"threshold out of range", validModelYAML, "threshold: 0.6", "threshold: 2.5",
			[]string{"spec.threshold", "threshold must be an L2 distance in (0, 2]"}},
		{"unknown layout", validModelYAML, "input: {width: 150, height: 150}", "input: {width: 150, height: 150, layout: HWC}",
			[]string{"spec.input.layout", `supported values: "NHWC", "NCHW"`}},
		{"agreement above one", validGalleryYAML, "  model: m\n", "  model: m\n  rollout: {minAgreement: 1.5}\n",
			[]string{"spec.rollout.minAgreement", "minAgreement must be a fraction in (0, 1]"}},
		{"gallery without pools", validGalleryYAML, "  pools:\n    - name: cpu\n      consumer: {stream: FRAMES}\n      scaling: {minReplicas: 1, maxReplicas: 3, targetLagPerReplica: 50}\n", "  pools: []\n",
			[]string{"spec.pools", "should have at least 1 items"}},
		{"gallery pool min above max", validGalleryYAML, "minReplicas: 1, maxReplicas: 3", "minReplicas: 4, maxReplicas: 3",
			[]string{"spec.pools[0].scaling", "minReplicas must be less than or equal to maxReplicas"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(c.base, c.from) {
				t.Fatalf("test bug: %q not in the base manifest", c.from)
			}
			obj := object(t, ns, strings.Replace(c.base, c.from, c.to, 1))
			err := e.c.Create(ctx, obj, client.DryRunAll)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestFaceModelArtefactIsImmutable(t *testing.T) {
	e := cluster(t)
	ctx := context.Background()
	ns := e.namespace(t, "immutable")
	m := e.validModel(t, ns, "enc", "/enc-150-128.onnx", 150, 128)
	m.Spec.Artifact.SHA256 = e.sha("/enc-112-64.onnx")
	err := e.c.Update(ctx, m)
	if err == nil || !strings.Contains(err.Error(), "artifact, input and embeddingSize are immutable: create a new FaceModel for a new model version") {
		t.Fatalf("changing the artefact of a FaceModel: %v", err)
	}
	// The calibrated threshold may change in place.
	if err := e.c.Get(ctx, client.ObjectKeyFromObject(m), m); err != nil {
		t.Fatal(err)
	}
	m.Spec.Threshold = 0.55
	if err := e.c.Update(ctx, m); err != nil {
		t.Fatalf("changing the threshold: %v", err)
	}
}

// TestFaceModelValidationFailures serves artefacts that do not match their
// FaceModel: the operator downloads them and reports why they are invalid.
func TestFaceModelValidationFailures(t *testing.T) {
	e := cluster(t)
	ctx := context.Background()
	ns := e.namespace(t, "badmodel")

	wrongSum := e.model(t, ns, "wrong-sum", "/enc-150-128.onnx", 150, 128)
	wrongSum.Spec.Artifact.SHA256 = e.sha("/enc-112-64.onnx")
	// Created with the wrong sum from the start (the spec is immutable).
	wrongSum = recreate(t, e, wrongSum)

	wrongInput := e.model(t, ns, "wrong-input", "/enc-112-64.onnx", 160, 64)
	wrongDim := e.model(t, ns, "wrong-dim", "/enc-112-64.onnx", 112, 512)

	for _, c := range []struct {
		m      *facegatev1.FaceModel
		reason string
		msg    string
	}{
		{wrongSum, facegatev1.ReasonChecksumMismatch, "the FaceModel declares " + e.sha("/enc-112-64.onnx")},
		{wrongInput, facegatev1.ReasonInputSpecMismatch, `input "image" height is 112, the FaceModel declares 160`},
		{wrongDim, facegatev1.ReasonInputSpecMismatch, "want the embedding size 512"},
	} {
		e.eventually(t, 20*time.Second, func() error {
			var m facegatev1.FaceModel
			if err := e.c.Get(ctx, client.ObjectKeyFromObject(c.m), &m); err != nil {
				return err
			}
			cond := meta.FindStatusCondition(m.Status.Conditions, facegatev1.ConditionValidated)
			if m.Status.Phase != facegatev1.FaceModelInvalid || cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != c.reason || !strings.Contains(cond.Message, c.msg) {
				return fmt.Errorf("%s: phase %q, %s", m.Name, m.Status.Phase, condition(m.Status.Conditions, facegatev1.ConditionValidated))
			}
			return nil
		})
		e.waitEvent(t, ns, c.m.Name, c.reason, c.msg)
	}

	// A pool on an invalid model says why and runs nothing.
	p := gpuPool(ns, "p", "wrong-sum", siteFilter(t, ns), facegatev1.ScalingSpec{MinReplicas: 1, MaxReplicas: 2, TargetLagPerReplica: 10, PollingSeconds: 1})
	if err := e.c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	e.eventually(t, 15*time.Second, func() error {
		p := e.pool(t, ns, "p")
		c := meta.FindStatusCondition(p.Status.Conditions, facegatev1.ConditionModelResolved)
		if c == nil || c.Reason != facegatev1.ReasonModelNotValidated || !strings.Contains(c.Message, "validation failed (ChecksumMismatch") {
			return fmt.Errorf("%s", condition(p.Status.Conditions, facegatev1.ConditionModelResolved))
		}
		return nil
	})

	// An unreachable artefact is not final: Pending, retried.
	gone := e.model(t, ns, "gone", "/enc-150-128.onnx", 150, 128)
	gone.Spec.Artifact.URL = e.baseURL + "/missing.onnx"
	gone = recreate(t, e, gone)
	e.eventually(t, 20*time.Second, func() error {
		var m facegatev1.FaceModel
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(gone), &m); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(m.Status.Conditions, facegatev1.ConditionValidated)
		if m.Status.Phase != facegatev1.FaceModelPending || cond == nil || cond.Reason != facegatev1.ReasonArtifactUnavailable || !strings.Contains(cond.Message, "HTTP 404") {
			return fmt.Errorf("phase %q, %s", m.Status.Phase, condition(m.Status.Conditions, facegatev1.ConditionValidated))
		}
		return nil
	})
}

// recreate deletes and creates the object again with its new spec (a
// FaceModel's artefact cannot be changed in place).
func recreate(t *testing.T, e *env, m *facegatev1.FaceModel) *facegatev1.FaceModel {
	t.Helper()
	ctx := context.Background()
	if err := e.c.Delete(ctx, m); err != nil {
		t.Fatal(err)
	}
	e.eventually(t, 10*time.Second, func() error {
		var old facegatev1.FaceModel
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(m), &old); err == nil {
			return fmt.Errorf("FaceModel %s still exists", m.Name)
		}
		return nil
	})
	fresh := &facegatev1.FaceModel{ObjectMeta: metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace}, Spec: m.Spec}
	if err := e.c.Create(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	return fresh
}
