package deploytest

// The chart against the real service binaries: the environment the chart
// gives each container is parsed by the binary itself, the init containers'
// scripts run here with /bin/sh on files shaped like Kubernetes Secret
// volumes and their output is read by the services' own loaders, and the
// Dockerfiles build the binaries the chart runs.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/facegate/facegate/pkg/audit"
	"github.com/facegate/facegate/pkg/auditsink"
	"github.com/facegate/facegate/pkg/gateway"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/retention"
	"github.com/facegate/facegate/pkg/sealed"
	"github.com/facegate/facegate/pkg/svcflag"
)

// services are the binaries the chart runs, by image.repositories key.
var services = []string{"gateway", "embedder", "matcher", "api", "audit"}

// serviceOf is the image.repositories key of a container's image
// ("facegate/matcher:0.1.0" -> "matcher").
func serviceOf(image string) string {
	base := image[strings.LastIndex(image, "/")+1:]
	if i := strings.Index(base, ":"); i >= 0 {
		base = base[:i]
	}
	return base
}

// renderAll renders every value file with ServiceMonitors enabled where
// the values ask for them.
func renderAll(t *testing.T) map[string][]*unstructured.Unstructured {
	t.Helper()
	out := map[string][]*unstructured.Unstructured{}
	for _, f := range append(slices.Clone(valueFiles), "testdata/values-standalone-pool.yaml") {
		out[name(f)] = render(t, f, "--api-versions", "monitoring.coreos.com/v1")
	}
	return out
}

func initContainer(t *testing.T, ps corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range ps.InitContainers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no init container %q", name)
	return corev1.Container{}
}

// runScript runs an init container's `/bin/sh -ec SCRIPT NAME ARGS...`
// command here, with every absolute path in ARGS moved under root.
func runScript(t *testing.T, c corev1.Container, root string) (string, error) {
	t.Helper()
	if len(c.Command) < 4 || c.Command[0] != "/bin/sh" || c.Command[1] != "-ec" {
		t.Fatalf("init container %s: command %q is not /bin/sh -ec SCRIPT NAME ARGS", c.Name, c.Command)
	}
	args := []string{"-ec", c.Command[2], c.Command[3]}
	for _, a := range append(slices.Clone(c.Command[4:]), c.Args...) {
		var parts []string
		for _, p := range strings.Split(a, "=") {
			parts = append(parts, filepath.Join(root, p))
		}
		args = append(args, strings.Join(parts, "="))
	}
	cmd := exec.Command("/bin/sh", args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// completeGatewayConfig runs the gateway Deployment's config init container
// on its ConfigMap and a token hashes file holding tokens, and parses the
// result with the gateway's loader.
func completeGatewayConfig(t *testing.T, objs []*unstructured.Unstructured, deployment, tokens string) (*gateway.FileConfig, error) {
	t.Helper()
	var d struct {
		Spec struct {
			Template corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	u := find(objs, "Deployment", deployment)
	if u == nil {
		t.Fatalf("no Deployment %s", deployment)
	}
	toTyped(t, u, &d)
	ps := d.Spec.Template.Spec
	cm := find(objs, "ConfigMap", deployment)
	if cm == nil {
		t.Fatalf("no ConfigMap %s", deployment)
	}
	data, _, _ := unstructured.NestedString(cm.Object, "data", "gateway.yaml")
	main := ps.Containers[0]
	cfgPath := envOf(main)["FACEGATE_CONFIG"]
	if len(ps.InitContainers) == 0 {
		// Without claims the ConfigMap is the configuration.
		if filepath.Dir(cfgPath) != mountPath(main, "config-template") {
			t.Fatalf("%s: FACEGATE_CONFIG %s is not in the ConfigMap's mount", deployment, cfgPath)
		}
		return gateway.ParseConfig([]byte(data))
	}
	ic := initContainer(t, ps, "config")
	args := ic.Command[4:]
	if len(args) != 3 || args[0] != mountPath(ic, "config-template")+"/gateway.yaml" || filepath.Dir(args[1]) != mountPath(ic, "claims-tokens") ||
		filepath.Dir(args[2]) != mountPath(ic, "config") || args[2] != cfgPath || filepath.Dir(cfgPath) != mountPath(main, "config") {
		t.Fatalf("%s: init container arguments %q do not connect the ConfigMap, the token Secret and FACEGATE_CONFIG %s", deployment, args, cfgPath)
	}
	root := t.TempDir()
	for p, content := range map[string]string{args[0]: data, args[1]: tokens} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, filepath.Dir(args[2])), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := runScript(t, ic, root); err != nil {
		t.Fatalf("%s: config init container: %v\n%s", deployment, err, out)
	}
	b, err := os.ReadFile(filepath.Join(root, args[2]))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(root, args[2])); fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("%s: completed configuration has mode %v", deployment, fi.Mode().Perm())
	}
	return gateway.ParseConfig(b)
}

// TestGatewayConfigurationsLoad: every gateway of every value file gets a
// configuration the gateway accepts, with its cameras, its NATS seed where
// the pod mounts it, and the token hashes of its Secret; a malformed hash
// stops the gateway with a clear error instead of being dropped.
func TestGatewayConfigurationsLoad(t *testing.T) {
	if _, err := exec.LookPath("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	h1, h2 := strings.Repeat("0f", 32), strings.Repeat("A1", 32)
	n := 0
	for f, objs := range renderAll(t) {
		for _, u := range ofKind(objs, "Deployment") {
			if u.GetLabels()["facegate.io/role"] != "gateway" {
				continue
			}
			n++
			cfg, err := completeGatewayConfig(t, objs, u.GetName(), "# readers of "+f+"\n"+h1+"\n\n   "+h2+"\t\n")
			if err != nil {
				t.Errorf("%s %s: the gateway refuses its configuration: %v", f, u.GetName(), err)
				continue
			}
			site := u.GetLabels()["facegate.io/site"]
			if cfg.Site != site || cfg.Gateway != u.GetName() || len(cfg.Cameras) == 0 && cfg.Claims == nil {
				t.Errorf("%s %s: site %q gateway %q cameras %d claims %v", f, u.GetName(), cfg.Site, cfg.Gateway, len(cfg.Cameras), cfg.Claims)
			}
			var d struct {
				Spec struct {
					Template corev1.PodTemplateSpec `json:"template"`
				} `json:"spec"`
			}
			toTyped(t, u, &d)
			main := d.Spec.Template.Spec.Containers[0]
			if cfg.NATS.NKeySeed != "" && filepath.Dir(cfg.NATS.NKeySeed) != mountPath(main, "nats-seed") {
				t.Errorf("%s %s: nkey_seed %s is not where the seed Secret is mounted (%s)", f, u.GetName(), cfg.NATS.NKeySeed, mountPath(main, "nats-seed"))
			}
			if cfg.Claims == nil {
				continue
			}
			if got := cfg.TokenHashes(); len(got) != 2 || fmt.Sprintf("%x", got[1]) != strings.ToLower(h2) {
				t.Errorf("%s %s: token hashes %x, want %s and %s", f, u.GetName(), got, h1, h2)
			}
			ports := map[string]int32{}
			for _, p := range main.Ports {
				ports[p.Name] = p.ContainerPort
			}
			if cfg.Claims.Listen != fmt.Sprintf(":%d", ports["claims"]) {
				t.Errorf("%s %s: claims listen on %s, container port %d", f, u.GetName(), cfg.Claims.Listen, ports["claims"])
			}
			if _, err := completeGatewayConfig(t, objs, u.GetName(), h1+"\nnot-a-hash\n"); err == nil || !strings.Contains(err.Error(), "token_sha256") {
				t.Errorf("%s %s: a malformed token hash gives %v, want the gateway's token_sha256 error", f, u.GetName(), err)
			}
		}
	}
	if n < 11 {
		t.Errorf("only %d gateways checked", n)
	}
}

// secretVolume lays files out the way the kubelet does for a Secret
// volume: a world-writable sticky folder, the files in a ..data folder,
// group- and world-readable, reached through symbolic links.
func secretVolume(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	data := filepath.Join(dir, "..2026_11_27_00_00_00.000000001")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(data, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(data, name), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(data), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
}

// podOf returns the pod spec of the named Deployment or StatefulSet.
func podOf(t *testing.T, objs []*unstructured.Unstructured, key string) corev1.PodSpec {
	t.Helper()
	tpl, ok := workloads(t, objs)[key]
	if !ok {
		t.Fatalf("no %s", key)
	}
	return tpl.Spec
}

// installInto runs a pod's install-secrets container with the Secret
// volumes it copies from laid out under root; it returns the script's
// output and error.
func installInto(t *testing.T, ps corev1.PodSpec, root string, secrets map[string]map[string][]byte) (string, error) {
	t.Helper()
	ic := initContainer(t, ps, "install-secrets")
	for _, pair := range ic.Command[4:] {
		from, to, ok := strings.Cut(pair, "=")
		if !ok {
			t.Fatalf("install-secrets argument %q is not from=to", pair)
		}
		files, ok := secrets[from]
		if !ok {
			t.Fatalf("install-secrets copies from %s, which the test does not provide", from)
		}
		secretVolume(t, filepath.Join(root, from), files)
		// The destination's parent is the pod's memory volume.
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(to)), 0o777); err != nil {
			t.Fatal(err)
		}
	}
	return runScript(t, ic, root)
}

// TestInstallSecretsGivesTheServicesTheModesTheyDemand: the KEKs and the
// audit signing keys, as a Secret volume presents them, are refused by
// pkg/sealed and pkg/audit; after the chart's install-secrets container
// they load, from the paths the service containers are given.
func TestInstallSecretsGivesTheServicesTheModesTheyDemand(t *testing.T) {
	if _, err := exec.LookPath("install"); err != nil {
		t.Skip("coreutils install is not on PATH")
	}
	ctx := context.Background()
	// Real key material made by the packages that read it.
	kdir := t.TempDir()
	if err := os.Chmod(kdir, 0o700); err != nil {
		t.Fatal(err)
	}
	kp, err := sealed.OpenFileKeyProvider(kdir)
	if err != nil {
		t.Fatal(err)
	}
	active, err := kp.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kp.Close()
	keyFiles := map[string][]byte{}
	entries, _ := os.ReadDir(kdir)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(kdir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		keyFiles[e.Name()] = b
	}
	sk, err := audit.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	adir := t.TempDir()
	if err := sk.WriteKeyFile(filepath.Join(adir, "checkpoint.key")); err != nil {
		t.Fatal(err)
	}
	if err := auditsink.GenerateSubjectKey(filepath.Join(adir, "subject.key")); err != nil {
		t.Fatal(err)
	}
	signing := map[string][]byte{}
	for _, n := range []string{"checkpoint.key", "subject.key"} {
		if signing[n], err = os.ReadFile(filepath.Join(adir, n)); err != nil {
			t.Fatal(err)
		}
	}

	objs := render(t, "values-campus.yaml")
	// A Secret volume as it is: the services refuse it, which is why the
	// chart copies.
	raw := filepath.Join(t.TempDir(), "raw")
	secretVolume(t, raw, keyFiles)
	if _, err := sealed.OpenFileKeyProvider(raw); !errors.Is(err, sealed.ErrKeyPermissions) {
		t.Fatalf("a Secret volume as KEK folder: %v, want ErrKeyPermissions", err)
	}

	for _, key := range []string{"StatefulSet fg-facegate-matcher-north", "Deployment fg-facegate-api"} {
		ps := podOf(t, objs, key)
		root := t.TempDir()
		if out, err := installInto(t, ps, root, map[string]map[string][]byte{"/etc/facegate/keys": keyFiles}); err != nil {
			t.Fatalf("%s: install-secrets: %v\n%s", key, err, out)
		}
		env := envOf(ps.Containers[0])
		if !strings.HasPrefix(env["FACEGATE_KEYS_DIR"], mountPath(ps.Containers[0], "private")+"/") {
			t.Errorf("%s: FACEGATE_KEYS_DIR %s is not in the private volume", key, env["FACEGATE_KEYS_DIR"])
		}
		p, err := sealed.OpenFileKeyProvider(filepath.Join(root, env["FACEGATE_KEYS_DIR"]))
		if err != nil {
			t.Errorf("%s: the service cannot open the installed KEKs: %v", key, err)
			continue
		}
		blob, err := sealed.Seal(ctx, p, []byte("template"), sealed.TemplateContext("s", "p1"))
		if err != nil {
			t.Errorf("%s: seal with the installed active key %s: %v", key, active, err)
		}
		if pt, err := sealed.Open(ctx, p, blob, sealed.TemplateContext("s", "p1")); err != nil || string(pt) != "template" {
			t.Errorf("%s: open: %q %v", key, pt, err)
		}
		p.Close()
	}

	ps := podOf(t, objs, "StatefulSet fg-facegate-audit")
	root := t.TempDir()
	if out, err := installInto(t, ps, root, map[string]map[string][]byte{"/etc/facegate/signing": signing}); err != nil {
		t.Fatalf("audit: install-secrets: %v\n%s", err, out)
	}
	env := envOf(ps.Containers[0])
	if _, err := audit.LoadKeyFile(filepath.Join(root, "etc/facegate/signing/checkpoint.key")); !errors.Is(err, audit.ErrKeyPermissions) {
		t.Errorf("checkpoint key in a Secret volume: %v, want ErrKeyPermissions", err)
	}
	if k, err := audit.LoadKeyFile(filepath.Join(root, env["FACEGATE_CHECKPOINT_KEY"])); err != nil || k.ID() != sk.ID() {
		t.Errorf("audit: installed checkpoint key %s: %v", env["FACEGATE_CHECKPOINT_KEY"], err)
	}
	if _, err := auditsink.LoadSubjectKey(filepath.Join(root, env["FACEGATE_SUBJECT_KEY"])); err != nil {
		t.Errorf("audit: installed subject key %s: %v", env["FACEGATE_SUBJECT_KEY"], err)
	}

	// An empty Secret (wrong keys, or items missing) stops the pod at the
	// init container with a message, not the service with a puzzle.
	out, err := installInto(t, ps, t.TempDir(), map[string]map[string][]byte{"/etc/facegate/signing": {}})
	if err == nil || !strings.Contains(out, "no files in") {
		t.Errorf("empty Secret: %v %q, want a failure naming the folder", err, out)
	}
}

// TestRetentionConfigLoads: the audit service's retention ConfigMap is read
// by pkg/retention as the per-site values say.
func TestRetentionConfigLoads(t *testing.T) {
	objs := render(t, "values-campus.yaml")
	cm := find(objs, "ConfigMap", "fg-facegate-audit-retention")
	if cm == nil {
		t.Fatal("no retention ConfigMap")
	}
	data, _, _ := unstructured.NestedString(cm.Object, "data", "retention.json")
	p, err := retention.ParseConfig([]byte(data))
	if err != nil {
		t.Fatalf("pkg/retention refuses the chart's configuration: %v\n%s", err, data)
	}
	if len(p) != 3 || p["lab"].Decisions != 52*7*24*time.Hour || p["north"].Frames != 30*time.Second || p["south"].Faces != 5*time.Minute {
		t.Errorf("policy %+v", p)
	}
	ps := podOf(t, objs, "StatefulSet fg-facegate-audit")
	if env := envOf(ps.Containers[0]); filepath.Dir(env["FACEGATE_RETENTION_CONFIG"]) != mountPath(ps.Containers[0], "retention") {
		t.Errorf("FACEGATE_RETENTION_CONFIG %s is not in the retention mount", env["FACEGATE_RETENTION_CONFIG"])
	}
	// Without sites the janitor is off: no ConfigMap, no flag.
	objs = render(t, "")
	if find(objs, "ConfigMap", "fg-facegate-audit-retention") != nil {
		t.Error("retention ConfigMap without sites")
	}
	if _, ok := envOf(podOf(t, objs, "StatefulSet fg-facegate-audit").Containers[0])["FACEGATE_RETENTION_CONFIG"]; ok {
		t.Error("FACEGATE_RETENTION_CONFIG without sites")
	}
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// serviceBinaries builds services/<name> for every chart service once.
func serviceBinaries(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "facegate-deploytest-bin")
		if binErr != nil {
			return
		}
		for _, s := range services {
			if out, err := goBuild(shared.root, filepath.Join(binDir, s), "./services/"+s); err != nil {
				binErr = fmt.Errorf("build services/%s: %v\n%s", s, err, out)
				return
			}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

var flagLine = regexp.MustCompile(`(?m)^\s+-([a-z0-9][a-z0-9-]*)`)

// flagsOf runs `BINARY -h` and returns its flag names.
func flagsOf(t *testing.T, bin string) map[string]bool {
	t.Helper()
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	flags := map[string]bool{}
	for _, m := range flagLine.FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if len(flags) < 5 {
		t.Fatalf("%s -h lists %d flags:\n%s", bin, len(flags), out)
	}
	return flags
}

// required are the settings each binary refuses to start without.
var required = map[string][]string{
	"gateway": {"FACEGATE_CONFIG"},
	"matcher": {"FACEGATE_KEYS_DIR"},
	"api":     {"FACEGATE_TOKENS", "FACEGATE_KEYS_DIR", "FACEGATE_PHOTO_DIR"},
	"audit":   {"FACEGATE_LOG", "FACEGATE_CHECKPOINT_KEY", "FACEGATE_SUBJECT_KEY"},
}

// TestContainersMatchTheBinaries builds the five services and checks every
// container the chart runs them in: each FACEGATE_* variable is one of the
// binary's flags (svcflag ignores unknown ones, so a misspelt variable
// would silently do nothing), the required ones are set, every file path
// lies in a volume the container mounts, and the binary started with
// exactly that environment gets past flag parsing (exit status 2 is a
// flag or environment error; it fails later, on files and NATS that do not
// exist here).
func TestContainersMatchTheBinaries(t *testing.T) {
	bins := serviceBinaries(t)
	flags := map[string]map[string]bool{}
	for _, s := range services {
		flags[s] = flagsOf(t, filepath.Join(bins, s))
	}
	seen := map[string]bool{}
	for f, objs := range renderAll(t) {
		keys := make([]string, 0)
		wl := workloads(t, objs)
		for k := range wl {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, key := range keys {
			ps := wl[key].Spec
			for _, c := range ps.Containers {
				svc := serviceOf(c.Image)
				if flags[svc] == nil {
					continue // the operator: checked by TestOperatorBinaryRunsAgainstTheAPIServer
				}
				seen[svc] = true
				where := f + ": " + key + "/" + c.Name
				env := envOf(c)
				for _, e := range c.Env {
					flag := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(e.Name, "FACEGATE_"), "_", "-"))
					if !strings.HasPrefix(e.Name, "FACEGATE_") || !flags[svc][flag] || svcflag.EnvName(flag) != e.Name {
						t.Errorf("%s: %s is not a flag of services/%s", where, e.Name, svc)
					}
				}
				for _, r := range required[svc] {
					if env[r] == "" {
						t.Errorf("%s: %s is required by services/%s", where, r, svc)
					}
				}
				if env["FACEGATE_METRICS_ADDR"] == "" {
					t.Errorf("%s: no FACEGATE_METRICS_ADDR: nothing would answer the probes", where)
				}
				for name, v := range env {
					if strings.HasPrefix(v, "/") && !underMount(c, v) {
						t.Errorf("%s: %s=%s is in no volume the container mounts", where, name, v)
					}
				}
				runWithEnv(t, where, filepath.Join(bins, svc), c)
			}
		}
		// The operator's embedder pods get the pools' env after its own.
		for _, kind := range []string{"FaceGallery", "EmbedderPool"} {
			for _, o := range ofKind(objs, kind) {
				var envs []any
				if kind == "EmbedderPool" {
					envs, _, _ = unstructured.NestedSlice(o.Object, "spec", "env")
				} else {
					pools, _, _ := unstructured.NestedSlice(o.Object, "spec", "pools")
					for _, p := range pools {
						e, _, _ := unstructured.NestedSlice(p.(map[string]any), "env")
						envs = append(envs, e...)
					}
				}
				if len(envs) == 0 {
					t.Errorf("%s: %s %s sets no embedder env", f, kind, o.GetName())
				}
				for _, e := range envs {
					n := e.(map[string]any)["name"].(string)
					flag := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(n, "FACEGATE_"), "_", "-"))
					if !flags["embedder"][flag] {
						t.Errorf("%s: %s %s sets %s, not an embedder flag", f, kind, o.GetName(), n)
					}
				}
			}
		}
	}
	for _, s := range services {
		if !seen[s] {
			t.Errorf("no value file runs services/%s", s)
		}
	}
}

func underMount(c corev1.Container, path string) bool {
	for _, m := range c.VolumeMounts {
		if path == m.MountPath || strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			return true
		}
	}
	return false
}

// runWithEnv starts the binary with the container's literal environment
// (and a local telemetry address) and requires that it gets past parsing.
func runWithEnv(t *testing.T, where, bin string, c corev1.Container) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	// A clean environment: only what the chart sets, plus a HOME and a
	// model cache that do not exist, so nothing of this machine is used.
	home := t.TempDir()
	cmd.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin", "FACEGATE_CACHE=" + filepath.Join(home, "cache")}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			continue
		}
		v := e.Value
		if e.Name == "FACEGATE_METRICS_ADDR" {
			v = "127.0.0.1:0"
		}
		cmd.Env = append(cmd.Env, e.Name+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		t.Errorf("%s: %s exited 0 without its files and NATS:\n%s", where, filepath.Base(bin), tail(out.String()))
	case ctx.Err() != nil:
		t.Errorf("%s: %s still running after 60 s:\n%s", where, filepath.Base(bin), tail(out.String()))
	case errors.As(err, &ee) && ee.ExitCode() == 2:
		t.Errorf("%s: %s refuses the chart's settings (exit 2):\n%s", where, filepath.Base(bin), tail(out.String()))
	case !errors.As(err, &ee):
		t.Errorf("%s: run %s: %v", where, filepath.Base(bin), err)
	}
}

// TestDockerfilesBuildTheChartsBinaries: one Dockerfile per image the chart
// names, building the service the chart runs in it, as the non-root user
// the pods run as, with the shell and coreutils the init containers use,
// and the model cache where the binaries and the chart look for it.
func TestDockerfilesBuildTheChartsBinaries(t *testing.T) {
	objs := render(t, "testdata/values-standalone-pool.yaml")
	images := map[string]bool{}
	for _, tpl := range workloads(t, objs) {
		for _, c := range append(slices.Clone(tpl.Spec.InitContainers), tpl.Spec.Containers...) {
			images[serviceOf(c.Image)] = true
		}
	}
	if len(images) != 6 {
		t.Errorf("images %v, want the operator's and the five services'", images)
	}
	c, err := modelcache.New("/cache", nil)
	if err != nil {
		t.Fatal(err)
	}
	lib := strings.TrimPrefix(c.LibraryPath(), "/cache/")
	for img := range images {
		b, err := os.ReadFile(filepath.Join(shared.root, "deploy", "docker", "Dockerfile."+img))
		if err != nil {
			t.Errorf("image %s: %v", img, err)
			continue
		}
		df := string(b)
		runtime := df[strings.LastIndex(df, "\nFROM "):]
		bin := "/usr/local/bin/" + img
		pkg := "./services/" + img
		if img == "operator" {
			bin, pkg = "/usr/local/bin/facegate-operator", "./operator/cmd"
		}
		for _, want := range []string{pkg + "\n", `ENTRYPOINT ["` + bin + `"]`, "USER 65532:65532", "FROM debian:${DEBIAN}-slim", "images cannot be built"} {
			if !strings.Contains(df, want) {
				t.Errorf("Dockerfile.%s lacks %q", img, want)
			}
		}
		if _, err := os.Stat(filepath.Join(shared.root, pkg, "main.go")); err != nil && img != "operator" {
			t.Errorf("Dockerfile.%s builds %s: %v", img, pkg, err)
		}
		switch img {
		case "gateway":
			if !regexp.MustCompile(`apt-get install[^\n]*\bffmpeg\b`).MatchString(runtime) {
				t.Error("Dockerfile.gateway: no ffmpeg for RTSP cameras")
			}
		case "api", "embedder":
			// The cache layout pkg/modelcache reads, and the root the
			// chart's pools point FACEGATE_CACHE at.
			if !strings.Contains(df, "ENV FACEGATE_CACHE=/opt/facegate/cache") || !strings.Contains(df, "cp -r /cache/onnx /out/cache/onnx") ||
				!strings.Contains(df, "'*/"+lib[strings.Index(lib, "/bin/")+1:]+"'") || !strings.HasPrefix(lib, "packages/") {
				t.Errorf("Dockerfile.%s does not bake the model cache layout (library at %s, models at onnx/)", img, lib)
			}
		}
	}
	g := find(objs, "EmbedderPool", "visitor-desk")
	envs, _, _ := unstructured.NestedSlice(g.Object, "spec", "env")
	if fmt.Sprint(envs[0]) != "map[name:FACEGATE_CACHE value:/opt/facegate/cache]" {
		t.Errorf("pool env %v does not point at the image's model cache", envs)
	}
	// No stale Dockerfile for an image nothing runs.
	all, _ := filepath.Glob(filepath.Join(shared.root, "deploy", "docker", "Dockerfile.*"))
	for _, p := range all {
		if !images[strings.TrimPrefix(filepath.Ext(p), ".")] {
			t.Errorf("%s builds an image the chart does not run", filepath.Base(p))
		}
	}
}

// TestNetworkPoliciesAdmitOnlyWhatEachServiceNeeds looks at the rules, not
// just their presence.
func TestNetworkPoliciesAdmitOnlyWhatEachServiceNeeds(t *testing.T) {
	objs := render(t, "values-one-building.yaml")
	rules := func(name, dir string) []any {
		np := find(objs, "NetworkPolicy", name)
		if np == nil {
			t.Fatalf("no NetworkPolicy %s", name)
		}
		r, _, _ := unstructured.NestedSlice(np.Object, "spec", dir)
		return r
	}
	ports := func(rule any) []string {
		var out []string
		ps, _, _ := unstructured.NestedSlice(rule.(map[string]any), "ports")
		for _, p := range ps {
			out = append(out, fmt.Sprint(p.(map[string]any)["port"]))
		}
		return out
	}
	// Default deny: no rule at all.
	dd := find(objs, "NetworkPolicy", "fg-facegate-default-deny")
	if _, found, _ := unstructured.NestedFieldNoCopy(dd.Object, "spec", "ingress"); found {
		t.Error("default-deny has ingress rules")
	}
	for _, n := range []string{"fg-facegate-matcher", "fg-facegate-audit", "fg-facegate-api", "fg-facegate-gateway-hq", "fg-facegate-gateway-hq-claims", "fg-facegate-operator"} {
		var nats bool
		for _, r := range rules(n, "egress") {
			if slices.Contains(ports(r), "4222") {
				to, _, _ := unstructured.NestedSlice(r.(map[string]any), "to")
				nats = fmt.Sprint(to) == "[map[namespaceSelector:map[matchLabels:map[kubernetes.io/metadata.name:nats]]]]"
			}
		}
		if !nats {
			t.Errorf("%s: no egress to NATS in the nats namespace: %v", n, rules(n, "egress"))
		}
		for _, r := range rules(n, "ingress") {
			p := ports(r)
			switch {
			case slices.Equal(p, []string{"metrics"}):
			case n == "fg-facegate-api" && slices.Equal(p, []string{"api"}):
				from, _, _ := unstructured.NestedSlice(r.(map[string]any), "from")
				if fmt.Sprint(from) != "[map[namespaceSelector:map[matchLabels:map[kubernetes.io/metadata.name:ingress-nginx]]]]" {
					t.Errorf("api admitted from %v, want only ingress-nginx", from)
				}
			case n == "fg-facegate-gateway-hq-claims" && slices.Equal(p, []string{"claims"}):
				from, _, _ := unstructured.NestedSlice(r.(map[string]any), "from")
				if fmt.Sprint(from) != "[map[ipBlock:map[cidr:10.20.0.0/16]]]" {
					t.Errorf("claims admitted from %v, want the building network", from)
				}
			default:
				t.Errorf("%s admits %v on %v", n, r, p)
			}
		}
	}
	// The camera gateway reaches the building network, and only it.
	var cams bool
	for _, r := range rules("fg-facegate-gateway-hq", "egress") {
		to, _, _ := unstructured.NestedSlice(r.(map[string]any), "to")
		if fmt.Sprint(to) == "[map[ipBlock:map[cidr:10.20.0.0/16]]]" && len(ports(r)) == 0 {
			cams = true
		}
	}
	if !cams || len(rules("fg-facegate-gateway-hq", "egress")) != 3 {
		t.Errorf("camera gateway egress %v, want DNS, NATS and the building network", rules("fg-facegate-gateway-hq", "egress"))
	}
	// Nothing else reaches the matcher, the audit log or the camera
	// gateway but the metrics scrape.
	for _, n := range []string{"fg-facegate-matcher", "fg-facegate-audit", "fg-facegate-gateway-hq"} {
		if len(rules(n, "ingress")) != 1 {
			t.Errorf("%s: %d ingress rules", n, len(rules(n, "ingress")))
		}
	}
}
