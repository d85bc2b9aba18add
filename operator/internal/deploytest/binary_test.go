package deploytest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	facegatev1 "github.com/facegate/facegate/operator/api/v1alpha1"
	"github.com/facegate/facegate/operator/internal/natstest"
	"github.com/facegate/facegate/operator/internal/testcluster"
	"github.com/facegate/facegate/pkg/testenv"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestOperatorBinaryRunsAgainstTheAPIServer builds operator/cmd and runs it
// as a process against the envtest API server and a real NATS server, with
// the flags the chart passes: leader election, one watched namespace,
// metrics and health endpoints. It must take the lease, serve its probes and
// reconcile a pool into a Deployment.
func TestOperatorBinaryRunsAgainstTheAPIServer(t *testing.T) {
	if shared.clusterErr != "" {
		testenv.Missing(t, shared.clusterErr, testcluster.HowToGet)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "facegate-operator")
	if out, err := goBuild(shared.root, bin, "./operator/cmd"); err != nil {
		t.Fatalf("build operator: %v\n%s", err, out)
	}

	// A kubeconfig for the envtest admin user.
	cfg := shared.cfg
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.CurrentContext = "envtest"
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(facegatev1.AddToScheme(scheme))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns := fmt.Sprintf("binary-%d", time.Now().UnixNano()%1000000)
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	natsURL := natstest.Start(t)
	metrics, health := freePort(t), freePort(t)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(runCtx, bin,
		"--kubeconfig="+kubeconfig,
		"--leader-elect=true", "--leader-election-namespace="+ns,
		"--watch-namespaces="+ns,
		"--nats-url="+natsURL,
		"--embedder-image=facegate/embedder:test",
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", metrics),
		fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", health),
		"--zap-log-level=info",
	)
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("operator output:\n%s", logs.String())
		}
	}()

	wait := func(what string, f func() error) {
		t.Helper()
		deadline := time.Now().Add(45 * time.Second)
		for {
			err := f()
			if err == nil {
				return
			}
			select {
			case e := <-exited:
				t.Fatalf("operator exited (%v) while waiting for %s", e, what)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", what, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	get := func(port int, path string) (string, error) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("%s: HTTP %d", path, resp.StatusCode)
		}
		return string(b), nil
	}
	wait("readyz", func() error { _, err := get(health, "/readyz"); return err })
	wait("leader lease", func() error {
		var lease coordinationv1.Lease
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "facegate-operator.facegate.io"}, &lease); err != nil {
			return err
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return fmt.Errorf("lease without holder")
		}
		return nil
	})

	// A model whose artefact cannot be fetched stays Pending; the pool waits
	// for it. Then a pool on an unknown model shows the condition; both are
	// reconciled by the process, through the real API server.
	pool := &facegatev1.EmbedderPool{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns},
		Spec: facegatev1.EmbedderPoolSpec{
			ModelRef:         facegatev1.ModelReference{Name: "missing"},
			Consumer:         facegatev1.ConsumerSpec{ConsumerTemplate: facegatev1.ConsumerTemplate{Stream: "FRAMES"}, Durable: "p"},
			EmbedderTemplate: facegatev1.EmbedderTemplate{Scaling: facegatev1.ScalingSpec{MinReplicas: 1, MaxReplicas: 2, TargetLagPerReplica: 10, PollingSeconds: 1}},
		},
	}
	if err := c.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	wait("UnknownModel condition", func() error {
		if err := c.Get(ctx, client.ObjectKeyFromObject(pool), pool); err != nil {
			return err
		}
		for _, cond := range pool.Status.Conditions {
			if cond.Type == facegatev1.ConditionModelResolved && cond.Reason == facegatev1.ReasonUnknownModel {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", pool.Status.Conditions)
	})
	var dep appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKeyFromObject(pool), &dep); err == nil {
		t.Fatal("a Deployment was created for an unknown model")
	}
	m, err := get(metrics, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m, `controller_runtime_reconcile_total{controller="embedderpool"`) {
		t.Errorf("metrics lack the embedderpool reconcile counter")
	}
	if !strings.Contains(logs.String(), `"msg":"starting"`) && !strings.Contains(logs.String(), "starting") {
		t.Errorf("no start-up log line")
	}
}
