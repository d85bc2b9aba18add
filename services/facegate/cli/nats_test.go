package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/facegate/facegate/pkg/testenv"
)

func TestNatsGen(t *testing.T) {
	// The example deployment names certificate files of a real installation;
	// without them nats-server cannot load the file, so TLS is left out here
	// (pkg/natsauth tests TLS with a certificate made in the test).
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "pkg", "natsauth", "testdata", "deployment.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	delete(d, "tls")
	dir := t.TempDir()
	dep := filepath.Join(dir, "deployment.json")
	b, _ := json.Marshal(d)
	if err := os.WriteFile(dep, b, 0o644); err != nil {
		t.Fatal(err)
	}
	seeds, out := filepath.Join(dir, "seeds"), filepath.Join(dir, "nats.conf")
	r := facegate(t, "nats", "gen", "--deployment", dep, "--seeds", seeds, "--out", out)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if _, err := server.ProcessConfigFile(out); err != nil {
		t.Fatalf("nats-server rejects the generated configuration: %v", err)
	}
	conf, _ := os.ReadFile(out)
	entries, _ := os.ReadDir(seeds)
	if len(entries) == 0 {
		t.Fatal("no seeds written")
	}
	for _, e := range entries {
		seed, _ := os.ReadFile(filepath.Join(seeds, e.Name()))
		if strings.Contains(string(conf), strings.TrimSpace(string(seed))) {
			t.Fatalf("the configuration contains the seed of %s", e.Name())
		}
		if fi, _ := e.Info(); fi.Mode().Perm() != 0o600 {
			t.Fatalf("seed %s has mode %v", e.Name(), fi.Mode().Perm())
		}
	}
	if r := facegate(t, "nats", "gen", "--deployment", filepath.Join(dir, "absent.json"), "--seeds", seeds); r.code != 2 {
		t.Fatalf("missing deployment file: exit %d", r.code)
	}
}
