package controller

import (
	"fmt"
	"maps"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	facegatev1 "github.com/facegate/facegate/operator/api/v1alpha1"
)

// Ports and paths of the embedder container: the contract with
// services/embedder (see operator/README.md).
const (
	embedderHealthPort  = 8080
	embedderMetricsPort = 9090
	natsCredsDir        = "/etc/facegate/nats"
	modelCacheDir       = "/var/cache/facegate"
	photoDir            = "/var/lib/facegate/photos"
)

// usesGPU reports whether the pool asks for NVIDIA GPUs.
func usesGPU(t *facegatev1.EmbedderTemplate) bool {
	q, ok := t.Resources.Limits[facegatev1.GPUResource]
	if !ok {
		q, ok = t.Resources.Requests[facegatev1.GPUResource]
	}
	return ok && q.Cmp(resource.MustParse("0")) > 0
}

func poolLabels(pool *facegatev1.EmbedderPool, modelID string) map[string]string {
	l := map[string]string{
		LabelName:      "facegate-embedder",
		LabelComponent: "embedder",
		LabelInstance:  labelValue(pool.Name),
		LabelManagedBy: managedBy,
		LabelPool:      labelValue(pool.Name),
		LabelModelID:   labelValue(modelID),
	}
	if g, ok := pool.Labels[LabelGallery]; ok {
		l[LabelGallery] = g
	}
	return l
}

// embedderEnv is the configuration contract with the embedder binary.
func embedderEnv(pool *facegatev1.EmbedderPool, m *facegatev1.FaceModel, natsURL, collection string) []corev1.EnvVar {
	spec := pool.Spec
	provider := "cpu"
	if usesGPU(&spec.EmbedderTemplate) {
		provider = "cuda"
	}
	layout := string(m.Spec.Input.Layout)
	if layout == "" {
		layout = string(facegatev1.LayoutNHWC)
	}
	channels := channelsOf(m)
	env := []corev1.EnvVar{
		{Name: "FACEGATE_POOL", Value: pool.Name},
		{Name: "FACEGATE_MODEL", Value: m.Name},
		{Name: "FACEGATE_MODEL_ID", Value: m.Spec.ModelID},
		{Name: "FACEGATE_MODEL_URL", Value: m.Spec.Artifact.URL},
		{Name: "FACEGATE_MODEL_SHA256", Value: m.Spec.Artifact.SHA256},
		{Name: "FACEGATE_MODEL_INPUT", Value: fmt.Sprintf("%dx%dx%d %s", m.Spec.Input.Width, m.Spec.Input.Height, channels, layout)},
		{Name: "FACEGATE_EMBEDDING_SIZE", Value: strconv.Itoa(int(m.Spec.EmbeddingSize))},
		{Name: "FACEGATE_DETECTOR_ID", Value: m.Spec.Detector.ModelID},
		{Name: "FACEGATE_COLLECTION", Value: collection},
		{Name: "FACEGATE_BATCH_SIZE", Value: strconv.Itoa(int(max(spec.BatchSize, 1)))},
		{Name: "FACEGATE_EXECUTION_PROVIDER", Value: provider},
		{Name: "FACEGATE_NATS_URL", Value: natsURL},
		{Name: "FACEGATE_NATS_STREAM", Value: spec.Consumer.Stream},
		{Name: "FACEGATE_NATS_CONSUMER", Value: spec.Consumer.Durable},
		{Name: "FACEGATE_CACHE", Value: modelCacheDir},
	}
	if d := m.Spec.Detector.Artifact; d != nil {
		env = append(env,
			corev1.EnvVar{Name: "FACEGATE_DETECTOR_URL", Value: d.URL},
			corev1.EnvVar{Name: "FACEGATE_DETECTOR_SHA256", Value: d.SHA256})
	}
	if spec.Consumer.CredentialsSecret != "" {
		env = append(env, corev1.EnvVar{Name: "FACEGATE_NATS_CREDS", Value: natsCredsDir + "/nats.creds"})
	}
	return append(env, spec.Env...)
}

// restrictedSecurityContext satisfies the "restricted" Pod Security Standard.
func restrictedSecurityContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		RunAsNonRoot:             ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// desiredDeployment writes the operator-owned fields of the pool's
// Deployment into dep (keeping fields other controllers default).
func desiredDeployment(dep *appsv1.Deployment, pool *facegatev1.EmbedderPool, m *facegatev1.FaceModel, image, natsURL, collection string, replicas int32) {
	spec := pool.Spec
	labels := poolLabels(pool, m.Spec.ModelID)
	selector := map[string]string{LabelName: labels[LabelName], LabelPool: labels[LabelPool]}

	if dep.Labels == nil {
		dep.Labels = map[string]string{}
	}
	maps.Copy(dep.Labels, labels)
	dep.Spec.Replicas = ptr.To(replicas)
	if dep.Spec.Selector == nil {
		// The selector is immutable; it is set once and must stay a subset
		// of the template labels.
		dep.Spec.Selector = newSelector(selector)
	}
	dep.Spec.RevisionHistoryLimit = ptr.To[int32](3)
	dep.Spec.Strategy = appsv1.DeploymentStrategy{
		Type: appsv1.RollingUpdateDeploymentStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDeployment{
			MaxUnavailable: ptr.To(intstr.FromInt32(0)),
			MaxSurge:       ptr.To(intstr.FromString("25%")),
		},
	}

	annotations := map[string]string{
		"prometheus.io/scrape": "true",
		"prometheus.io/port":   strconv.Itoa(embedderMetricsPort),
	}
	maps.Copy(annotations, spec.PodAnnotations)

	volumes := []corev1.Volume{
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "model-cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("2Gi"))}}},
	}
	mounts := []corev1.VolumeMount{
		{Name: "tmp", MountPath: "/tmp"},
		{Name: "model-cache", MountPath: modelCacheDir},
	}
	if s := spec.Consumer.CredentialsSecret; s != "" {
		volumes = append(volumes, corev1.Volume{Name: "nats-creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: s, Items: []corev1.KeyToPath{{Key: "nats.creds", Path: "nats.creds"}}, DefaultMode: ptr.To[int32](0o440),
		}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "nats-creds", MountPath: natsCredsDir, ReadOnly: true})
	}

	probe := func(path string, initial int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("health")}},
			InitialDelaySeconds: initial, PeriodSeconds: 10, TimeoutSeconds: 2, FailureThreshold: 3,
		}
	}

	dep.Spec.Template = corev1.PodTemplateSpec{
		ObjectMeta: metaWith(labels, annotations),
		Spec: corev1.PodSpec{
			ServiceAccountName:           spec.ServiceAccountName,
			AutomountServiceAccountToken: ptr.To(false),
			NodeSelector:                 spec.NodeSelector,
			Tolerations:                  spec.Tolerations,
			Affinity:                     spec.Affinity,
			RuntimeClassName:             spec.RuntimeClassName,
			PriorityClassName:            spec.PriorityClassName,
			// Give the embedder time to finish and ack its batch.
			TerminationGracePeriodSeconds: ptr.To[int64](30),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](65532),
				RunAsGroup:     ptr.To[int64](65532),
				FSGroup:        ptr.To[int64](65532),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            "embedder",
				Image:           image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Env:             embedderEnv(pool, m, natsURL, collection),
				Ports: []corev1.ContainerPort{
					{Name: "health", ContainerPort: embedderHealthPort, Protocol: corev1.ProtocolTCP},
					{Name: "metrics", ContainerPort: embedderMetricsPort, Protocol: corev1.ProtocolTCP},
				},
				Resources:       spec.Resources,
				LivenessProbe:   probe("/healthz", 10),
				ReadinessProbe:  probe("/readyz", 5),
				StartupProbe:    &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("health")}}, PeriodSeconds: 5, FailureThreshold: 60},
				SecurityContext: restrictedSecurityContext(),
				VolumeMounts:    mounts,
			}},
			Volumes: volumes,
		},
	}
}
