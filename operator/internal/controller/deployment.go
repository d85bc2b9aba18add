package controller

import (
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
// services/embedder (see operator/README.md). The embedder serves /metrics,
// /healthz and /readyz on one address (telemetry.Listen), so the probes and
// the scrape share embedderHTTPPort.
const (
	embedderHTTPPort = 8080
	natsCredsDir     = "/etc/facegate/nats"
	// bakedCacheDir is the model cache baked into the embedder image
	// (deploy/docker/Dockerfile.embedder): ONNX Runtime and the converted
	// models. It is read-only and must not be shadowed by a volume.
	bakedCacheDir = "/opt/facegate/cache"
	photoDir      = "/var/lib/facegate/photos"
)

// Keys of a pool's credentials Secret: the credential (a .creds file or
// an NKEY seed, pkg/natsconn tells them apart) and, optionally, the inbox
// prefix its natsauth user must use (natsauth.User.InboxPrefix).
const (
	natsCredsKey       = "nats.creds"
	natsInboxPrefixKey = "inbox-prefix"
)

// Pod annotations recording what a pool's embedders serve. The embedder
// itself only takes the model id (it loads the model baked into its
// image); these make the rest visible and roll the pods when it changes.
const (
	AnnotationCollection        = "facegate.io/collection"
	AnnotationEmbeddingSize     = "facegate.io/embedding-size"
	AnnotationModelSHA256       = "facegate.io/model-sha256"
	AnnotationExecutionProvider = "facegate.io/execution-provider"
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

// embedderEnv is the configuration contract with the embedder binary:
// every variable is FACEGATE_<FLAG> of a flag services/embedder defines
// (TestEmbedderEnvMatchesBinaryFlags builds the binary and checks). The
// operator creates the pool's durable consumer with the pool's filter
// (lag.EnsureConsumer), so the embedders only bind to it (--bind) and
// leave streams alone: a least-privilege natsauth embedder user may do
// neither, and an embedder creating the consumer would replace the
// operator's filter subject with its own.
func embedderEnv(pool *facegatev1.EmbedderPool, m *facegatev1.FaceModel, natsURL string) []corev1.EnvVar {
	spec := pool.Spec
	env := []corev1.EnvVar{
		{Name: "FACEGATE_NATS_URL", Value: natsURL},
		{Name: "FACEGATE_MODEL", Value: m.Spec.ModelID},
		{Name: "FACEGATE_CACHE", Value: bakedCacheDir},
		{Name: "FACEGATE_DURABLE", Value: spec.Consumer.Durable},
		{Name: "FACEGATE_BIND", Value: "true"},
		{Name: "FACEGATE_ENSURE_STREAMS", Value: "false"},
		{Name: "FACEGATE_BATCH", Value: strconv.Itoa(int(max(spec.BatchSize, 1)))},
		{Name: "FACEGATE_METRICS_ADDR", Value: ":" + strconv.Itoa(embedderHTTPPort)},
		// The pod name identifies the replica in face events.
		{Name: "FACEGATE_INSTANCE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
	}
	if s := spec.Consumer.CredentialsSecret; s != "" {
		env = append(env,
			corev1.EnvVar{Name: "FACEGATE_NATS_CREDS", Value: natsCredsDir + "/" + natsCredsKey},
			corev1.EnvVar{Name: "FACEGATE_NATS_INBOX_PREFIX", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: s}, Key: natsInboxPrefixKey, Optional: ptr.To(true)}}})
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
	provider := "cpu"
	if usesGPU(&pool.Spec.EmbedderTemplate) {
		provider = "cuda"
	}
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
		"prometheus.io/scrape":      "true",
		"prometheus.io/port":        strconv.Itoa(embedderHTTPPort),
		AnnotationCollection:        collection,
		AnnotationEmbeddingSize:     strconv.Itoa(int(m.Spec.EmbeddingSize)),
		AnnotationModelSHA256:       m.Spec.Artifact.SHA256,
		AnnotationExecutionProvider: provider,
	}
	maps.Copy(annotations, spec.PodAnnotations)

	volumes := []corev1.Volume{
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	// No volume over bakedCacheDir: the image's cache is the model.
	mounts := []corev1.VolumeMount{
		{Name: "tmp", MountPath: "/tmp"},
	}
	if s := spec.Consumer.CredentialsSecret; s != "" {
		volumes = append(volumes, corev1.Volume{Name: "nats-creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: s, Items: []corev1.KeyToPath{{Key: natsCredsKey, Path: natsCredsKey}}, DefaultMode: ptr.To[int32](0o440),
		}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "nats-creds", MountPath: natsCredsDir, ReadOnly: true})
	}

	probe := func(path string, initial int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("http")}},
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
				Env:             embedderEnv(pool, m, natsURL),
				Ports: []corev1.ContainerPort{
					{Name: "http", ContainerPort: embedderHTTPPort, Protocol: corev1.ProtocolTCP},
				},
				Resources:       spec.Resources,
				LivenessProbe:   probe("/healthz", 10),
				ReadinessProbe:  probe("/readyz", 5),
				StartupProbe:    &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}, PeriodSeconds: 5, FailureThreshold: 60},
				SecurityContext: restrictedSecurityContext(),
				VolumeMounts:    mounts,
			}},
			Volumes: volumes,
		},
	}
}
