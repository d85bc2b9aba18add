// Package natsauthtest runs a real nats-server (in process) from the
// configuration pkg/natsauth generates, for tests that must show a service
// works under its least-privilege credential.
package natsauthtest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/facegate/facegate/pkg/natsauth"
)

// Start runs the server for users and returns its URL and the directory of
// the users' NKEY seeds (natsauth.SeedFile(seedDir, name)). It is shut down
// by t.Cleanup.
func Start(t testing.TB, users []natsauth.User) (url, seedDir string) {
	t.Helper()
	dir := t.TempDir()
	seedDir = filepath.Join(dir, "seeds")
	conf, err := natsauth.Generate(natsauth.Deployment{ServerName: "natsauthtest", Listen: "127.0.0.1:-1",
		StoreDir: filepath.Join(dir, "js"), Users: users}, seedDir)
	if err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(confPath, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(confPath)
	if err != nil {
		t.Fatalf("nats-server refused the generated configuration: %v", err)
	}
	opts.NoSigs, opts.NoLog = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready after 10 s")
	}
	return ns.ClientURL(), seedDir
}
