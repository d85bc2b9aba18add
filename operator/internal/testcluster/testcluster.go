// Package testcluster starts a real kube-apiserver and etcd (envtest) for
// the operator's tests, from binaries built by operator/hack/envtest-assets.sh.
package testcluster

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Versions of the cached binaries; keep in step with envtest-assets.sh.
const (
	K8sVersion  = "1.37.2"
	EtcdVersion = "3.7.3"
)

// AssetsDir returns the folder holding kube-apiserver and etcd:
// $KUBEBUILDER_ASSETS, else the script's default cache folder. The second
// result says what is missing ("" when both binaries exist).
func AssetsDir() (string, string) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		root := os.Getenv("FACEGATE_ENVTEST_CACHE")
		if root == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", "no home directory for the envtest cache: " + err.Error()
			}
			root = filepath.Join(home, ".cache", "facegate", "envtest")
		}
		dir = filepath.Join(root, fmt.Sprintf("k8s-%s-etcd-%s", K8sVersion, EtcdVersion))
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if fi, err := os.Stat(filepath.Join(dir, bin)); err != nil || fi.IsDir() {
			return dir, fmt.Sprintf("envtest binary %s in %s", bin, dir)
		}
	}
	return dir, ""
}

// HowToGet is the instruction printed when the binaries are missing.
const HowToGet = "run operator/hack/envtest-assets.sh (builds kube-apiserver and etcd from the Go module proxy, ~15 min cold) or set KUBEBUILDER_ASSETS"

// Start runs a control plane with the given CRD directories installed.
func Start(assets string, crdDirs ...string) (*envtest.Environment, *rest.Config, error) {
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     crdDirs,
		ErrorIfCRDPathMissing: true,
		// The first start on a loaded machine can be slow.
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("testcluster: start kube-apiserver and etcd from %s: %w", assets, err)
	}
	return env, cfg, nil
}
