package controller

import (
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	facegatev1 "github.com/facegate/facegate/operator/api/v1alpha1"
)

// Paths of the re-embedding Job: the contract with `facegate gallery
// reembed` (services/facegate/cli/gallery.go) and with the Helm chart's
// API, whose photo store and key layout the Job reads.
const (
	// photoStoreDir is the photo store inside the photo claim: the chart's
	// API uses <claim>/store because pkg/photostore wants mode 0700,
	// which a volume's root (group-writable through fsGroup) is not.
	photoStoreDir = photoDir + "/store"
	// keysSecretDir is where the keys Secret is mounted for the init
	// container; keysDir the memory-backed copy the CLI reads.
	keysSecretDir = "/etc/facegate/keys"
	privateDir    = "/run/facegate/private"
	keysDir       = privateDir + "/keys"
)

// installSecretsScript copies each <from>=<to> folder's files into <to>
// with mode 0400 in a 0700 folder: sealed.FileKeyProvider refuses key
// files readable by group or others, which a Secret volume's files are
// (fsGroup). The same script as the chart's facegate.installSecrets.
const installSecretsScript = `umask 077
for pair in "$@"; do
  from=${pair%%=*}
  to=${pair#*=}
  install -d -m 0700 "$to"
  n=0
  for f in "$from"/*; do
    [ -f "$f" ] || continue
    install -m 0400 "$f" "$to/"
    n=$((n+1))
  done
  [ "$n" -gt 0 ] || { echo "install-secrets: no files in $from" >&2; exit 1; }
done
`

// reembedJobSpec is the Job running `facegate gallery reembed` for a
// model: it replays ENROLMENTS from natsURL, opens the sealed photos of
// the photo claim with the keys Secret, and publishes the new model's
// templates. Without a photo claim or keys Secret the command is told
// nothing and fails with a message naming the missing flag (EnvFrom may
// supply FACEGATE_PHOTOS and FACEGATE_KEYS instead).
func reembedJobSpec(spec facegatev1.ReembedSpec, labels map[string]string, image, modelID, natsURL string) batchv1.JobSpec {
	// The image's baked model cache is used as is (no volume over it).
	mounts := []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}}
	volumes := []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	env := []corev1.EnvVar{
		{Name: "FACEGATE_CACHE", Value: bakedCacheDir},
		{Name: "FACEGATE_EXECUTION_PROVIDER", Value: executionProvider(spec.Resources)},
		{Name: "FACEGATE_NATS_URL", Value: natsURL},
	}
	args := []string{"gallery", "reembed", "--json", "--model", modelID}
	var initContainers []corev1.Container
	if spec.PhotoClaimName != "" {
		mounts = append(mounts, corev1.VolumeMount{Name: "photos", MountPath: photoDir, ReadOnly: true})
		volumes = append(volumes, corev1.Volume{Name: "photos", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: spec.PhotoClaimName, ReadOnly: true}}})
		args = append(args, "--photos", photoStoreDir)
	}
	if spec.KeysSecretName != "" {
		volumes = append(volumes,
			corev1.Volume{Name: "keys", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: spec.KeysSecretName, DefaultMode: ptr.To[int32](0o440)}}},
			// The key copies live in memory only.
			corev1.Volume{Name: "private", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
				Medium: corev1.StorageMediumMemory, SizeLimit: ptr.To(resource.MustParse("1Mi"))}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "private", MountPath: privateDir, ReadOnly: true})
		initContainers = append(initContainers, corev1.Container{
			Name:    "install-secrets",
			Image:   image,
			Command: []string{"/bin/sh", "-ec", installSecretsScript, "install-secrets", keysSecretDir + "=" + keysDir},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")},
			},
			SecurityContext: restrictedSecurityContext(),
			VolumeMounts: []corev1.VolumeMount{
				{Name: "keys", MountPath: keysSecretDir, ReadOnly: true},
				{Name: "private", MountPath: privateDir},
			},
		})
		args = append(args, "--keys", keysDir)
	}
	if s := spec.NATSCredentialsSecret; s != "" {
		volumes = append(volumes, corev1.Volume{Name: "nats-creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: s, Items: []corev1.KeyToPath{{Key: natsCredsKey, Path: natsCredsKey}}, DefaultMode: ptr.To[int32](0o440),
		}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "nats-creds", MountPath: natsCredsDir, ReadOnly: true})
		env = append(env,
			corev1.EnvVar{Name: "FACEGATE_NATS_CREDS", Value: natsCredsDir + "/" + natsCredsKey},
			corev1.EnvVar{Name: "FACEGATE_NATS_INBOX_PREFIX", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: s}, Key: natsInboxPrefixKey, Optional: ptr.To(true)}}})
	}
	return batchv1.JobSpec{
		BackoffLimit:          ptr.To(spec.BackoffLimit),
		ActiveDeadlineSeconds: spec.ActiveDeadlineSeconds,
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec: corev1.PodSpec{
				RestartPolicy:                corev1.RestartPolicyNever,
				ServiceAccountName:           spec.ServiceAccountName,
				AutomountServiceAccountToken: ptr.To(false),
				NodeSelector:                 spec.NodeSelector,
				Tolerations:                  spec.Tolerations,
				RuntimeClassName:             spec.RuntimeClassName,
				SecurityContext: &corev1.PodSecurityContext{
					RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532), RunAsGroup: ptr.To[int64](65532), FSGroup: ptr.To[int64](65532),
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
				InitContainers: initContainers,
				Containers: []corev1.Container{{
					Name:  "reembed",
					Image: image,
					// The embedder image carries the facegate CLI next to the
					// embedder, with the same runtime and models.
					Command:         []string{"/usr/local/bin/facegate"},
					Args:            args,
					Env:             env,
					EnvFrom:         spec.EnvFrom,
					Resources:       spec.Resources,
					SecurityContext: restrictedSecurityContext(),
					VolumeMounts:    mounts,
					// The JSON summary (refusals included) is the last
					// output; on failure the log tail says why.
					TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				}},
				Volumes: volumes,
			},
		},
	}
}
