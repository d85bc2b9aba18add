package controller

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	facegatev1 "github.com/facegate/facegate/operator/api/v1alpha1"
	"github.com/facegate/facegate/pkg/svcflag"
	"github.com/facegate/facegate/pkg/testenv"
)

// embedderFlags builds services/embedder and returns the flags its -h
// output lists: the binary's real interface, not a copy of it.
func embedderFlags(t *testing.T) map[string]bool {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "embedder")
	build := exec.Command("go", "build", "-o", bin, "./services/embedder")
	build.Dir = testenv.RepoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./services/embedder: %v\n%s", err, out)
	}
	var out bytes.Buffer
	help := exec.Command(bin, "-h")
	help.Stdout, help.Stderr = &out, &out
	if err := help.Run(); err != nil {
		t.Fatalf("embedder -h: %v\n%s", err, out.String())
	}
	// flag.PrintDefaults: "  -name type" or "  -name" (booleans).
	line := regexp.MustCompile(`^\s+-([a-z0-9][a-z0-9-]*)(\s|$)`)
	flags := map[string]bool{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if m := line.FindStringSubmatch(sc.Text()); m != nil {
			flags[m[1]] = true
		}
	}
	if !flags["nats-url"] || !flags["model"] || len(flags) < 10 {
		t.Fatalf("could not read the flags from embedder -h: %v\n%s", flags, out.String())
	}
	return flags
}

// Every FACEGATE_* variable the operator sets on embedder pods must be the
// environment fallback of a flag the embedder binary defines; anything
// else is silently ignored by the binary. The values that carry the
// contract (model id, baked cache, durable, metrics address behind the
// probes, credentials) are checked too.
func TestEmbedderEnvMatchesBinaryFlags(t *testing.T) {
	flags := embedderFlags(t)
	envOf := map[string]bool{}
	for f := range flags {
		envOf[svcflag.EnvName(f)] = true
	}
	m := &facegatev1.FaceModel{ObjectMeta: metav1.ObjectMeta{Name: "dlib-v2", Namespace: "fg"}, Spec: facegatev1.FaceModelSpec{
		ModelID: "dlib-resnet34-128", EmbeddingSize: 128, Threshold: 0.42,
		Artifact: facegatev1.ArtifactSource{URL: "https://models.example/dlib.onnx", SHA256: strings.Repeat("a", 64)},
		Input:    facegatev1.InputSpec{Width: 150, Height: 150}, Detector: facegatev1.DetectorRef{ModelID: "blazeface-256"},
	}}
	for _, creds := range []string{"", "pool-nats"} {
		pool := &facegatev1.EmbedderPool{ObjectMeta: metav1.ObjectMeta{Name: "lobby", Namespace: "fg"}, Spec: facegatev1.EmbedderPoolSpec{
			ModelRef: facegatev1.ModelReference{Name: m.Name},
			Consumer: facegatev1.ConsumerSpec{Durable: "lobby-dlib", ConsumerTemplate: facegatev1.ConsumerTemplate{
				Stream: "FRAMES", FilterSubject: "facegate.frames.hq.*", CredentialsSecret: creds}},
			EmbedderTemplate: facegatev1.EmbedderTemplate{BatchSize: 4},
		}}
		var dep appsv1.Deployment
		desiredDeployment(&dep, pool, m, "facegate/embedder:test", "nats://bus:4222", "fg_dlib", 1)
		c := dep.Spec.Template.Spec.Containers[0]
		got := map[string]corev1.EnvVar{}
		for _, e := range c.Env {
			if !strings.HasPrefix(e.Name, "FACEGATE_") {
				continue
			}
			if !envOf[e.Name] {
				t.Errorf("creds %q: the operator sets %s, but the embedder has no flag reading it (flags: %v)", creds, e.Name, flags)
			}
			if _, dup := got[e.Name]; dup {
				t.Errorf("creds %q: %s set twice", creds, e.Name)
			}
			got[e.Name] = e
		}
		want := map[string]string{
			"FACEGATE_MODEL": "dlib-resnet34-128", "FACEGATE_CACHE": "/opt/facegate/cache", "FACEGATE_DURABLE": "lobby-dlib",
			"FACEGATE_BATCH": "4", "FACEGATE_NATS_URL": "nats://bus:4222", "FACEGATE_METRICS_ADDR": ":8080",
			"FACEGATE_BIND": "true", "FACEGATE_ENSURE_STREAMS": "false",
		}
		if creds != "" {
			want["FACEGATE_NATS_CREDS"] = natsCredsDir + "/nats.creds"
		}
		for k, v := range want {
			if got[k].Value != v {
				t.Errorf("creds %q: %s = %q, want %q", creds, k, got[k].Value, v)
			}
		}
		if p, ok := got["FACEGATE_NATS_INBOX_PREFIX"]; (creds != "") != ok ||
			ok && (p.ValueFrom == nil || p.ValueFrom.SecretKeyRef == nil || p.ValueFrom.SecretKeyRef.Name != creds) {
			t.Errorf("creds %q: inbox prefix %+v", creds, p)
		}
		// The probes and the scrape must hit the address the embedder serves.
		for _, pr := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			port := pr.HTTPGet.Port.StrVal
			found := false
			for _, cp := range c.Ports {
				found = found || cp.Name == port && ":"+strconv.Itoa(int(cp.ContainerPort)) == got["FACEGATE_METRICS_ADDR"].Value
			}
			if !found {
				t.Errorf("probe %s on port %q does not reach %s (ports %+v)", pr.HTTPGet.Path, port, got["FACEGATE_METRICS_ADDR"].Value, c.Ports)
			}
		}
		if dep.Spec.Template.Annotations["prometheus.io/port"] != "8080" {
			t.Errorf("scrape port %q", dep.Spec.Template.Annotations["prometheus.io/port"])
		}
		// Nothing may be mounted over (or above) the image's model cache.
		for _, vm := range c.VolumeMounts {
			if vm.MountPath == bakedCacheDir || strings.HasPrefix(bakedCacheDir+"/", strings.TrimSuffix(vm.MountPath, "/")+"/") {
				t.Errorf("volume %s mounted at %s shadows the baked model cache %s", vm.Name, vm.MountPath, bakedCacheDir)
			}
		}
	}
}
