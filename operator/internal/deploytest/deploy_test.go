// Package deploytest checks the Helm chart (charts/facegate) and the example
// configurations (deploy/) with the real tools: helm lint and template, the
// rendered manifests applied with server-side dry-run to a real
// kube-apiserver, controller-gen re-run against the committed output, and
// the NATS account layout loaded into a real NATS server.
package deploytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/facegate/facegate/operator/internal/testcluster"
	"github.com/facegate/facegate/pkg/gateway"
	"github.com/facegate/facegate/pkg/testenv"
)

// shared is written by TestMain only.
var shared struct {
	root       string
	helm       string
	helmErr    error
	cfg        *rest.Config
	clusterErr string
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	shared.root = root
	// Quiet controller-runtime's client (it warns when no logger is set).
	ctrllog.SetLogger(logr.Discard())

	// helm is pinned in go.mod's tool block.
	start := time.Now()
	shared.helm, err = toolBinary(root, "helm.sh/helm/v3", "helm.sh/helm/v3/cmd/helm")
	if err != nil {
		shared.helmErr = err
	} else {
		fmt.Fprintf(os.Stderr, "deploytest: helm ready in %s\n", time.Since(start).Round(10*time.Millisecond))
	}

	assets, missing := testcluster.AssetsDir()
	if missing != "" {
		shared.clusterErr = missing
		return m.Run()
	}
	start = time.Now()
	// The chart's CRDs, and a trimmed ServiceMonitor CRD so that the
	// chart's ServiceMonitors are validated too.
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env, cfg, err := testcluster.Start(assets, filepath.Join(root, "charts", "facegate", "crds"), filepath.Join(wd, "testdata", "crds"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	fmt.Fprintf(os.Stderr, "deploytest: kube-apiserver and etcd up in %s\n", time.Since(start).Round(10*time.Millisecond))
	shared.cfg = cfg
	return m.Run()
}

// toolBinary builds a tool pinned in go.mod with `go build -o` into a cache
// folder keyed by the module's version, and reuses it while the pin holds
// (linking helm takes 10-15 s here; the compile itself is in the build cache).
func toolBinary(root, module, pkg string) (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Version}}", module)
	cmd.Dir = root
	v, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("version of %s: %w", module, err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "facegate", "tools")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, filepath.Base(pkg)+"-"+strings.TrimSpace(string(v)))
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() {
		return bin, nil
	}
	tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
	if out, err := goBuild(root, tmp, pkg); err != nil {
		return "", fmt.Errorf("build %s: %v\n%s", pkg, err, out)
	}
	// Rename is atomic: concurrent test processes never see a partial file.
	return bin, os.Rename(tmp, bin)
}

func goBuild(dir, out, pkg string) ([]byte, error) {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	return cmd.CombinedOutput()
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

func chartDir() string { return filepath.Join(shared.root, "charts", "facegate") }

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	if shared.helmErr != nil {
		t.Fatal(shared.helmErr)
	}
	cmd := exec.Command(shared.helm, args...)
	cmd.Dir = shared.root
	// Keep helm away from the user's repositories and caches.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// valueFiles are the shipped value files ("" is the chart's defaults).
var valueFiles = []string{"", "values-one-building.yaml", "values-campus.yaml"}

func valuesArgs(file string) []string {
	if file == "" {
		return nil
	}
	if strings.HasPrefix(file, "testdata/") {
		wd, _ := os.Getwd()
		return []string{"-f", filepath.Join(wd, file)}
	}
	return []string{"-f", filepath.Join(chartDir(), file)}
}

func TestChartLintStrict(t *testing.T) {
	for _, f := range append(slices.Clone(valueFiles), "testdata/values-standalone-pool.yaml") {
		t.Run(name(f), func(t *testing.T) {
			out, err := helm(t, append([]string{"lint", "--strict", chartDir()}, valuesArgs(f)...)...)
			if err != nil || !strings.Contains(out, "1 chart(s) linted, 0 chart(s) failed") {
				t.Fatalf("helm lint --strict: %v\n%s", err, out)
			}
			if strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") {
				t.Fatalf("lint findings:\n%s", out)
			}
			// helm lint reports a template's `required` and `fail` as
			// [INFO] and still passes: they would fail the install.
			if strings.Contains(out, "Missing required value") || strings.Contains(out, "Fail:") {
				t.Fatalf("the values do not render:\n%s", out)
			}
		})
	}
}

func name(f string) string {
	if f == "" {
		return "defaults"
	}
	return strings.TrimSuffix(filepath.Base(f), ".yaml")
}

// render runs helm template and decodes every object.
func render(t *testing.T, file string, extra ...string) []*unstructured.Unstructured {
	t.Helper()
	args := append([]string{"template", "fg", chartDir(), "--namespace", "facegate", "--kube-version", testcluster.K8sVersion}, valuesArgs(file)...)
	out, err := helm(t, append(args, extra...)...)
	if err != nil {
		t.Fatalf("helm template %s: %v\n%s", file, err, out)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decode helm output: %v", err)
		}
		if len(u.Object) == 0 {
			continue
		}
		objs = append(objs, u)
	}
	if len(objs) == 0 {
		t.Fatal("helm template rendered nothing")
	}
	return objs
}

func TestChartRefusesImpossibleValues(t *testing.T) {
	cases := []struct {
		set  []string
		want string
	}{
		{[]string{"nats.url="}, "nats.url is required"},
		{[]string{"matcher.replicas=2"}, "run one matcher per site (matcher.perSite) instead"},
		{[]string{"keys.existingSecret="}, "keys.existingSecret is required"},
		{[]string{"api.auth.existingSecret="}, "api.auth.existingSecret is required"},
		{[]string{"audit.signing.existingSecret="}, "audit.signing.existingSecret is required"},
		{[]string{"gateway.claims.tokenHashesSecret="}, "gateway.claims.tokenHashesSecret is required when claims are enabled"},
		{[]string{"gateway.claims.enabled=false", `json:buildings=[{"name":"a","site":"a"}]`}, "the gateway would do nothing"},
		{[]string{"api.tls.clientCASecret=ca"}, "api.tls.clientCASecret needs api.tls.existingSecret"},
		{[]string{"api.photoStore.accessMode=ReadWriteOnce"}, "api.photoStore.accessMode must be ReadWriteMany"},
		{[]string{`json:buildings=[{"name":"a","site":"x","cameras":[{"id":"c","source":"rtsp://h/s","fps":1}]},{"name":"b","site":"x","cameras":[{"id":"c","source":"rtsp://h/s","fps":1}]}]`}, `site "x" is listed twice`},
		{[]string{"audit.retention.sites.main.decision=30d"}, "audit.retention.sites.main.decision: only frames, faces and decisions"},
	}
	for _, c := range cases {
		var args []string
		for _, s := range c.set {
			if j, ok := strings.CutPrefix(s, "json:"); ok {
				args = append(args, "--set-json", j)
			} else {
				args = append(args, "--set", s)
			}
		}
		out, err := helm(t, append([]string{"template", "fg", chartDir()}, args...)...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("--set %v: err %v, output lacks %q:\n%s", c.set, err, c.want, tail(out))
		}
	}
}

func tail(s string) string {
	if len(s) > 2000 {
		return "..." + s[len(s)-2000:]
	}
	return s
}

// TestRenderedManifestsPassServerSideDryRun applies every rendered object
// with server-side apply in dry-run mode to a real kube-apiserver that has
// the chart's own CRDs installed: the API server validates each against its
// schema (built-in kinds and the facegate CRDs with their CEL rules), and
// server-side apply refuses fields the schema does not declare.
func TestRenderedManifestsPassServerSideDryRun(t *testing.T) {
	if shared.clusterErr != "" {
		testenv.Missing(t, shared.clusterErr, testcluster.HowToGet)
	}
	scheme := runtime.NewScheme()
	c, err := client.New(shared.cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "facegate"}}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	for _, f := range append(slices.Clone(valueFiles), "testdata/values-standalone-pool.yaml") {
		t.Run(name(f), func(t *testing.T) {
			// As on a cluster with the Prometheus operator: ServiceMonitors
			// render where the values enable them.
			objs := render(t, f, "--api-versions", "monitoring.coreos.com/v1")
			kinds := map[string]int{}
			for _, o := range objs {
				err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o), client.DryRunAll, client.FieldOwner("facegate-chart-test"), client.ForceOwnership)
				if err != nil {
					t.Errorf("%s %s: %v", o.GetKind(), o.GetName(), err)
				}
				kinds[o.GetKind()]++
			}
			t.Logf("%d objects accepted: %v", len(objs), kinds)
			if kinds["ServiceMonitor"] == 0 && f != "" {
				t.Errorf("%s enables serviceMonitor but none rendered", name(f))
			}
		})
	}

	// The dry run is not lenient: a misspelt field and a CEL rule's
	// violation are refused by the same path.
	var gallery *unstructured.Unstructured
	for _, o := range render(t, "values-one-building.yaml") {
		if o.GetKind() == "FaceGallery" {
			gallery = o
		}
	}
	for _, bc := range []struct {
		mutate func(pool map[string]any)
		want   string
	}{
		{func(p map[string]any) { p["batchSzie"] = int64(8) }, `.spec.pools[name="cpu"].batchSzie: field not declared in schema`},
		{func(p map[string]any) { p["scaling"].(map[string]any)["minReplicas"] = int64(9) }, "minReplicas must be less than or equal to maxReplicas"},
	} {
		bad := gallery.DeepCopy()
		pools, _, _ := unstructured.NestedSlice(bad.Object, "spec", "pools")
		bc.mutate(pools[0].(map[string]any))
		if err := unstructured.SetNestedSlice(bad.Object, pools, "spec", "pools"); err != nil {
			t.Fatal(err)
		}
		err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(bad), client.DryRunAll, client.FieldOwner("facegate-chart-test"), client.ForceOwnership)
		if err == nil || !strings.Contains(err.Error(), bc.want) {
			t.Errorf("error %v, want %q", err, bc.want)
		}
	}
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func ofKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

func toTyped(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
		t.Fatalf("convert %s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

func envOf(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

func TestCampusHasAGatewayPerBuildingWithItsOwnAccount(t *testing.T) {
	objs := render(t, "values-campus.yaml")
	want := map[string]struct {
		claimsReplicas int32
		seed           string
		tokens         string
	}{
		"north": {2, "facegate-nats-gateway-north", "facegate-north-reader-tokens"},
		"south": {1, "facegate-nats-gateway-south", "facegate-south-reader-tokens"},
		"lab":   {3, "facegate-nats-gateway-lab", "facegate-lab-reader-tokens"},
	}
	var gateways []string
	for _, u := range ofKind(objs, "Deployment") {
		if u.GetLabels()["facegate.io/role"] != "gateway" {
			continue
		}
		var d appsv1.Deployment
		toTyped(t, u, &d)
		site, part := d.Labels["facegate.io/site"], d.Labels["facegate.io/gateway"]
		gateways = append(gateways, site+"/"+part)
		w, ok := want[site]
		if !ok {
			t.Errorf("unexpected gateway %s for site %q", d.Name, site)
			continue
		}
		replicas := int32(1) // every camera gateway replica would read every camera
		if part == "claims" {
			replicas = w.claimsReplicas
		}
		if *d.Spec.Replicas != replicas {
			t.Errorf("gateway %s replicas %d, want %d", d.Name, *d.Spec.Replicas, replicas)
		}
		secrets := map[string]string{}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret != nil {
				secrets[v.Name] = v.Secret.SecretName
			}
		}
		if secrets["nats-seed"] != w.seed || (part == "claims") != (secrets["claims-tokens"] == w.tokens) {
			t.Errorf("gateway %s mounts Secrets %v, want its building's seed %q (and reader tokens %q for claims)", d.Name, secrets, w.seed, w.tokens)
		}
		cfg := gatewayConfig(t, objs, d.Name)
		if cfg.Site != site || cfg.NATS.NKeySeed != "/etc/facegate/nats/gateway-"+site+".nk" || cfg.NATS.InboxPrefix != "_INBOX.gateway-"+site {
			t.Errorf("gateway %s configuration: site %q nats %+v", d.Name, cfg.Site, cfg.NATS)
		}
		if (part == "claims") != (cfg.Claims != nil) || (part == "cameras") != (len(cfg.Cameras) > 0) {
			t.Errorf("%s gateway %s: %d cameras, claims %+v", part, d.Name, len(cfg.Cameras), cfg.Claims)
		}
		pdb := find(objs, "PodDisruptionBudget", d.Name)
		if (replicas > 1) != (pdb != nil) {
			t.Errorf("gateway %s with %d replicas: PodDisruptionBudget present = %v", d.Name, replicas, pdb != nil)
		}
		if find(objs, "NetworkPolicy", d.Name) == nil || find(objs, "Service", d.Name) == nil {
			t.Errorf("gateway %s lacks its NetworkPolicy or Service", d.Name)
		}
	}
	sort.Strings(gateways)
	if !slices.Equal(gateways, []string{"lab/cameras", "lab/claims", "north/cameras", "north/claims", "south/cameras", "south/claims"}) {
		t.Fatalf("gateways %v, want a camera and a claims gateway for lab, north, south", gateways)
	}

	g := find(objs, "FaceGallery", "campus")
	if g == nil {
		t.Fatal("no FaceGallery campus")
	}
	pools, _, _ := unstructured.NestedSlice(g.Object, "spec", "pools")
	if len(pools) != 3 {
		t.Fatalf("%d pools, want one per building", len(pools))
	}
	gpu, _, _ := unstructured.NestedFieldNoCopy(pools[2].(map[string]any), "resources", "limits", "nvidia.com/gpu")
	rc, _, _ := unstructured.NestedString(pools[2].(map[string]any), "runtimeClassName")
	if fmt.Sprint(gpu) != "1" || rc != "nvidia" {
		t.Errorf("lab-gpu pool: gpu limit %v runtime class %q", gpu, rc)
	}
	if n := len(ofKind(objs, "FaceModel")); n != 2 {
		t.Errorf("%d FaceModels, want 2", n)
	}
	// A matcher per site, each with that site's NATS user.
	for _, site := range []string{"north", "south", "lab"} {
		u := find(objs, "StatefulSet", "fg-facegate-matcher-"+site)
		if u == nil {
			t.Errorf("no matcher for %s", site)
			continue
		}
		var m appsv1.StatefulSet
		toTyped(t, u, &m)
		env := envOf(m.Spec.Template.Spec.Containers[0])
		if *m.Spec.Replicas != 1 || env["FACEGATE_SITE"] != site || env["FACEGATE_NATS_CREDS"] != "/etc/facegate/nats/matcher-"+site+".nk" || env["FACEGATE_NATS_INBOX_PREFIX"] != "_INBOX.matcher-"+site {
			t.Errorf("matcher %s: replicas %d env %v", site, *m.Spec.Replicas, env)
		}
	}
	if n := len(ofKind(objs, "StatefulSet")); n != 4 {
		t.Errorf("%d StatefulSets, want three matchers and the audit log", n)
	}
	var api appsv1.Deployment
	toTyped(t, find(objs, "Deployment", "fg-facegate-api"), &api)
	if env := envOf(api.Spec.Template.Spec.Containers[0]); *api.Spec.Replicas != 2 || env["FACEGATE_CLIENT_CA"] == "" || env["FACEGATE_TLS_CERT"] == "" {
		t.Errorf("api: replicas %d, mTLS env %v", *api.Spec.Replicas, env)
	}
	for _, n := range []string{"fg-facegate-api", "fg-facegate-matcher"} {
		if find(objs, "PodDisruptionBudget", n) == nil {
			t.Errorf("no PodDisruptionBudget %s", n)
		}
	}
	sel, _, _ := unstructured.NestedStringMap(find(objs, "PodDisruptionBudget", "fg-facegate-matcher").Object, "spec", "selector", "matchLabels")
	for _, site := range []string{"north", "south", "lab"} {
		var m appsv1.StatefulSet
		toTyped(t, find(objs, "StatefulSet", "fg-facegate-matcher-"+site), &m)
		for k, v := range sel {
			if m.Spec.Template.Labels[k] != v {
				t.Errorf("the matchers' PodDisruptionBudget (%v) does not cover matcher %s", sel, site)
			}
		}
	}
}

// gatewayConfig returns the configuration a gateway Deployment runs with:
// its ConfigMap, completed by its init container's script (run here with
// /bin/sh on a token hashes file), parsed by the gateway's own parser.
func gatewayConfig(t *testing.T, objs []*unstructured.Unstructured, deployment string) *gateway.FileConfig {
	t.Helper()
	cfg, err := completeGatewayConfig(t, objs, deployment, strings.Repeat("ab", 32)+"\n# the lobby reader\n\n  "+strings.Repeat("CD", 32)+"  \n")
	if err != nil {
		t.Fatalf("gateway %s: %v", deployment, err)
	}
	return cfg
}

func TestOneBuildingKeepsItsStateOnVolumes(t *testing.T) {
	objs := render(t, "values-one-building.yaml")
	var gw int
	for _, u := range ofKind(objs, "Deployment") {
		if u.GetLabels()["facegate.io/role"] == "gateway" {
			gw++
		}
	}
	if gw != 2 {
		t.Errorf("%d gateways, want a camera and a claims gateway", gw)
	}
	if find(objs, "PersistentVolumeClaim", "fg-facegate-photos") == nil {
		t.Error("the photo store has no claim")
	}
	for _, c := range []struct{ sts, claim, mount string }{
		{"fg-facegate-matcher", "snapshots", "/var/lib/facegate/snapshots"},
		{"fg-facegate-audit", "log", "/var/lib/facegate/audit"},
	} {
		var s appsv1.StatefulSet
		toTyped(t, find(objs, "StatefulSet", c.sts), &s)
		if len(s.Spec.VolumeClaimTemplates) != 1 || s.Spec.VolumeClaimTemplates[0].Name != c.claim {
			t.Errorf("%s: volume claim templates %+v, want %q", c.sts, s.Spec.VolumeClaimTemplates, c.claim)
		}
		if mountPath(s.Spec.Template.Spec.Containers[0], c.claim) != c.mount {
			t.Errorf("%s: %s not mounted at %s", c.sts, c.claim, c.mount)
		}
	}
	var a appsv1.Deployment
	toTyped(t, find(objs, "Deployment", "fg-facegate-api"), &a)
	var claim string
	for _, v := range a.Spec.Template.Spec.Volumes {
		if v.Name == "photos" && v.PersistentVolumeClaim != nil {
			claim = v.PersistentVolumeClaim.ClaimName
		}
	}
	if claim != "fg-facegate-photos" || !strings.HasPrefix(envOf(a.Spec.Template.Spec.Containers[0])["FACEGATE_PHOTO_DIR"], mountPath(a.Spec.Template.Spec.Containers[0], "photos")+"/") {
		t.Errorf("api photo store: claim %q, photo dir %q", claim, envOf(a.Spec.Template.Spec.Containers[0])["FACEGATE_PHOTO_DIR"])
	}
	g := find(objs, "FaceGallery", "hq")
	reembed, _, _ := unstructured.NestedString(g.Object, "spec", "rollout", "reembed", "photoClaimName")
	if reembed != "fg-facegate-photos" {
		t.Errorf("re-embedding Job photo claim %q", reembed)
	}
	// The re-embedding Job opens the API's photos with the API's keys, and
	// reads the store at <claim>/store (controller.photoStoreDir).
	var keys string
	for _, v := range a.Spec.Template.Spec.Volumes {
		if v.Name == "keys" && v.Secret != nil {
			keys = v.Secret.SecretName
		}
	}
	if ks, _, _ := unstructured.NestedString(g.Object, "spec", "rollout", "reembed", "keysSecretName"); keys == "" || ks != keys {
		t.Errorf("re-embedding Job keys Secret %q, the API's %q", ks, keys)
	}
	api := a.Spec.Template.Spec.Containers[0]
	if rel := strings.TrimPrefix(envOf(api)["FACEGATE_PHOTO_DIR"], mountPath(api, "photos")); rel != "/store" {
		t.Errorf("the API's photo store is %q inside its claim; the re-embedding Job reads /store", rel)
	}
}

func mountPath(c corev1.Container, volume string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m.MountPath
		}
	}
	return ""
}

// workloads returns the pod templates of every Deployment and StatefulSet.
func workloads(t *testing.T, objs []*unstructured.Unstructured) map[string]corev1.PodTemplateSpec {
	t.Helper()
	out := map[string]corev1.PodTemplateSpec{}
	for _, u := range objs {
		switch u.GetKind() {
		case "Deployment":
			var d appsv1.Deployment
			toTyped(t, u, &d)
			out[u.GetKind()+" "+u.GetName()] = d.Spec.Template
		case "StatefulSet":
			var s appsv1.StatefulSet
			toTyped(t, u, &s)
			out[u.GetKind()+" "+u.GetName()] = s.Spec.Template
		}
	}
	return out
}

// TestEveryWorkloadIsLockedDown checks the pod security settings, resources,
// probes and network policies of every workload in every value file.
func TestEveryWorkloadIsLockedDown(t *testing.T) {
	for _, f := range append(slices.Clone(valueFiles), "testdata/values-standalone-pool.yaml") {
		objs := render(t, f)
		wl := workloads(t, objs)
		claims := map[string][]string{}
		for _, u := range ofKind(objs, "StatefulSet") {
			vcts, _, _ := unstructured.NestedSlice(u.Object, "spec", "volumeClaimTemplates")
			for _, v := range vcts {
				n, _, _ := unstructured.NestedString(v.(map[string]any), "metadata", "name")
				claims["StatefulSet "+u.GetName()] = append(claims["StatefulSet "+u.GetName()], n)
			}
		}
		if len(wl) < 5 {
			t.Errorf("%s: only %d workloads rendered", name(f), len(wl))
		}
		for key, tpl := range wl {
			where := name(f) + ": " + key
			wname := strings.SplitN(key, " ", 2)[1]
			ps := tpl.Spec
			if sc := ps.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 ||
				sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("%s: pod security context %+v", where, sc)
			}
			if ps.ServiceAccountName == "" {
				t.Errorf("%s: no dedicated service account", where)
			}
			// The kubelet must not re-open the modes of a volume's existing
			// files on every mount: pkg/photostore refuses a store others
			// can read.
			if sc := ps.SecurityContext; sc == nil || sc.FSGroupChangePolicy == nil || *sc.FSGroupChangePolicy != corev1.FSGroupChangeOnRootMismatch {
				t.Errorf("%s: fsGroupChangePolicy is not OnRootMismatch", where)
			}
			// Only the operator talks to the Kubernetes API.
			token := ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken
			if token != (wname == "fg-facegate-operator") {
				t.Errorf("%s: service account token mounted = %v", where, token)
			}
			all := append(slices.Clone(ps.InitContainers), ps.Containers...)
			for _, c := range all {
				sc := c.SecurityContext
				if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
					sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault ||
					sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
					t.Errorf("%s/%s: security context %+v", where, c.Name, sc)
				}
				if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
					t.Errorf("%s/%s: resources %+v", where, c.Name, c.Resources)
				}
			}
			for _, c := range ps.Containers {
				ports := map[string]int32{}
				for _, p := range c.Ports {
					ports[p.Name] = p.ContainerPort
				}
				for kind, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
					if p == nil || p.HTTPGet == nil {
						t.Errorf("%s/%s: no HTTP %s probe", where, c.Name, kind)
						continue
					}
					if _, ok := ports[p.HTTPGet.Port.StrVal]; !ok {
						t.Errorf("%s/%s: %s probe on port %q, which the container does not declare (%v)", where, c.Name, kind, p.HTTPGet.Port.String(), ports)
					}
					if want := map[string]string{"liveness": "/healthz", "readiness": "/readyz"}[kind]; p.HTTPGet.Path != want {
						t.Errorf("%s/%s: %s probe path %q, want %q", where, c.Name, kind, p.HTTPGet.Path, want)
					}
				}
				// pkg/telemetry serves the probes on --metrics-addr.
				if addr, ok := envOf(c)["FACEGATE_METRICS_ADDR"]; ok && addr != fmt.Sprintf(":%d", ports["metrics"]) {
					t.Errorf("%s/%s: FACEGATE_METRICS_ADDR %q but the metrics port is %d", where, c.Name, addr, ports["metrics"])
				}
				// A mount of a volume the pod does not declare is refused
				// at admission only for Deployments' pods, late.
				for _, m := range c.VolumeMounts {
					if !volumeExists(ps, m.Name) && !slices.Contains(claims[key], m.Name) {
						t.Errorf("%s/%s: mounts undeclared volume %q", where, c.Name, m.Name)
					}
				}
			}
			np := find(objs, "NetworkPolicy", wname)
			if np == nil {
				t.Errorf("%s: no NetworkPolicy", where)
				continue
			}
			types, _, _ := unstructured.NestedStringSlice(np.Object, "spec", "policyTypes")
			if !slices.Equal(types, []string{"Ingress", "Egress"}) {
				t.Errorf("%s: NetworkPolicy types %v, want both directions restricted", where, types)
			}
		}
		if find(objs, "NetworkPolicy", "fg-facegate-default-deny") == nil {
			t.Errorf("%s: no default-deny NetworkPolicy", name(f))
		}
	}
}

func volumeExists(ps corev1.PodSpec, name string) bool {
	for _, v := range ps.Volumes {
		if v.Name == name {
			return true
		}
	}
	return false
}

// TestTheChartRendersNoSecret: secret values are never in the chart; every
// Secret is referenced by name and created by the operator of the cluster.
func TestTheChartRendersNoSecret(t *testing.T) {
	// NKEY user seeds are "SU" and base32.
	nkeySeed := regexp.MustCompile(`SU[A-Z2-7]{50,}`)
	for _, f := range append(slices.Clone(valueFiles), "testdata/values-standalone-pool.yaml") {
		objs := render(t, f, "--api-versions", "monitoring.coreos.com/v1")
		for _, o := range objs {
			if o.GetKind() == "Secret" {
				t.Errorf("%s: renders Secret %s", name(f), o.GetName())
			}
			if o.GetKind() == "ConfigMap" {
				data, _, _ := unstructured.NestedStringMap(o.Object, "data")
				for k, v := range data {
					if strings.Contains(v, "PRIVATE KEY") || nkeySeed.MatchString(v) || strings.Contains(v, "token_sha256") {
						t.Errorf("%s: ConfigMap %s key %s holds secret material", name(f), o.GetName(), k)
					}
				}
			}
		}
	}
}

func TestChartCRDsAreTheGeneratedOnes(t *testing.T) {
	gen, err := filepath.Glob(filepath.Join(shared.root, "operator", "config", "crd", "bases", "*.yaml"))
	if err != nil || len(gen) != 3 {
		t.Fatalf("generated CRDs: %v %v", gen, err)
	}
	inChart, _ := filepath.Glob(filepath.Join(chartDir(), "crds", "*.yaml"))
	if len(inChart) != len(gen) {
		t.Fatalf("chart has %d CRD files, generated %d (run operator/hack/generate.sh)", len(inChart), len(gen))
	}
	for _, g := range gen {
		a, _ := os.ReadFile(g)
		b, err := os.ReadFile(filepath.Join(chartDir(), "crds", filepath.Base(g)))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("charts/facegate/crds/%s differs from the generated CRD (run operator/hack/generate.sh): %v", filepath.Base(g), err)
		}
	}
}

type rule struct{ group, resource, verb string }

func expand(t *testing.T, rules []any) []rule {
	t.Helper()
	var out []rule
	for _, r := range rules {
		m := r.(map[string]any)
		str := func(k string) []string {
			var s []string
			for _, v := range m[k].([]any) {
				s = append(s, v.(string))
			}
			return s
		}
		for _, g := range str("apiGroups") {
			for _, res := range str("resources") {
				for _, v := range str("verbs") {
					out = append(out, rule{g, res, v})
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i]) < fmt.Sprint(out[j]) })
	return out
}

// TestOperatorRBACIsTheGeneratedRole: the chart grants the operator exactly
// what the controllers' kubebuilder markers declare, namespaced or cluster-wide.
func TestOperatorRBACIsTheGeneratedRole(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(shared.root, "operator", "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	gen := &unstructured.Unstructured{}
	if err := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096).Decode(&gen.Object); err != nil {
		t.Fatal(err)
	}
	genRules, _, _ := unstructured.NestedSlice(gen.Object, "rules")
	want := expand(t, genRules)
	if len(want) < 20 {
		t.Fatalf("generated role has only %d grants", len(want))
	}
	for _, c := range []struct {
		kind string
		args []string
	}{{"Role", nil}, {"ClusterRole", []string{"--set", "operator.clusterWide=true"}}} {
		objs := render(t, "", c.args...)
		r := find(objs, c.kind, "fg-facegate-operator")
		if r == nil {
			t.Fatalf("no %s fg-facegate-operator", c.kind)
		}
		rules, _, _ := unstructured.NestedSlice(r.Object, "rules")
		if got := expand(t, rules); !slices.Equal(got, want) {
			t.Errorf("%s grants %v\nthe controllers need %v", c.kind, got, want)
		}
	}
}

// TestGeneratedFilesAreCurrent re-runs controller-gen (pinned in go.mod)
// and compares with the committed CRDs, RBAC role and deep-copy code.
func TestGeneratedFilesAreCurrent(t *testing.T) {
	dir := t.TempDir()
	cg, err := toolBinary(shared.root, "sigs.k8s.io/controller-tools", "sigs.k8s.io/controller-tools/cmd/controller-gen")
	if err != nil {
		t.Fatal(err)
	}
	gen := func(args ...string) {
		cmd := exec.Command(cg, args...)
		cmd.Dir = shared.root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("controller-gen %v: %v\n%s", args, err, out)
		}
	}
	// The same generators and options as operator/hack/generate.sh.
	gen("object", "paths=./operator/api/...", "output:object:dir="+filepath.Join(dir, "object"))
	gen("crd:allowDangerousTypes=true", "rbac:roleName=facegate-operator",
		"paths=./operator/api/...", "paths=./operator/internal/controller/...",
		"output:crd:artifacts:config="+filepath.Join(dir, "crd"), "output:rbac:artifacts:config="+filepath.Join(dir, "rbac"))
	pairs := map[string]string{
		filepath.Join(dir, "object", "zz_generated.deepcopy.go"): filepath.Join(shared.root, "operator", "api", "v1alpha1", "zz_generated.deepcopy.go"),
		filepath.Join(dir, "rbac", "role.yaml"):                  filepath.Join(shared.root, "operator", "config", "rbac", "role.yaml"),
	}
	crds, _ := filepath.Glob(filepath.Join(dir, "crd", "*.yaml"))
	if len(crds) != 3 {
		t.Fatalf("controller-gen wrote %d CRDs", len(crds))
	}
	for _, c := range crds {
		pairs[c] = filepath.Join(shared.root, "operator", "config", "crd", "bases", filepath.Base(c))
	}
	for fresh, committed := range pairs {
		a, _ := os.ReadFile(fresh)
		b, err := os.ReadFile(committed)
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s is out of date (run operator/hack/generate.sh): %v", strings.TrimPrefix(committed, shared.root+"/"), err)
		}
	}
}

// TestServicesCanBeDisabled: each service's enabled value removes all of its
// objects and nothing else breaks; ServiceMonitors need the Prometheus
// operator's API even when enabled.
func TestServicesCanBeDisabled(t *testing.T) {
	all := render(t, "values-one-building.yaml")
	if n := len(ofKind(all, "ServiceMonitor")); n != 0 {
		t.Errorf("%d ServiceMonitors rendered on a cluster without monitoring.coreos.com/v1", n)
	}
	for svc, prefix := range map[string]string{"gateway": "fg-facegate-gateway-", "matcher": "fg-facegate-matcher", "api": "fg-facegate-api", "audit": "fg-facegate-audit", "operator": "fg-facegate-operator"} {
		objs := render(t, "values-one-building.yaml", "--set", svc+".enabled=false")
		for _, o := range objs {
			if strings.HasPrefix(o.GetName(), prefix) {
				t.Errorf("%s.enabled=false still renders %s %s", svc, o.GetKind(), o.GetName())
			}
		}
		if len(objs) >= len(all) || len(objs) < 10 {
			t.Errorf("%s.enabled=false: %d objects of %d", svc, len(objs), len(all))
		}
	}
	// The photo claim of the re-embedding Job follows the API.
	objs := render(t, "values-one-building.yaml", "--set", "api.enabled=false")
	if c, found, _ := unstructured.NestedString(find(objs, "FaceGallery", "hq").Object, "spec", "rollout", "reembed", "photoClaimName"); found {
		t.Errorf("re-embedding from photo claim %q without the API", c)
	}
}
