package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

func TestRunWritesParsableConfig(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "nats.conf")
	seeds := filepath.Join(dir, "seeds")
	if err := run([]string{"-deployment", "../../testdata/deployment.json", "-seeds", seeds, "-out", out}); err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(seeds)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 11 {
		t.Fatalf("%d seed files, want 11", len(entries))
	}
	// The TLS files named in the example do not exist here, so check the
	// text and parse a copy without the tls block.
	for _, want := range []string{`cert_file: "/etc/nats/tls/tls.crt"`, `"SITE_north"`, `{service: "facegate.frames.north.>", accounts: ["SITE_north"]}`} {
		if !strings.Contains(string(conf), want) {
			t.Fatalf("configuration lacks %s:\n%s", want, conf)
		}
	}
	i, j := strings.Index(string(conf), "tls {"), strings.Index(string(conf), "accounts {")
	if i < 0 || j < i {
		t.Fatalf("no tls block before accounts:\n%s", conf)
	}
	noTLS := filepath.Join(dir, "notls.conf")
	if err := os.WriteFile(noTLS, append(conf[:i:i], conf[j:]...), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(noTLS)
	if err != nil {
		t.Fatalf("nats-server refused the configuration: %v", err)
	}
	if len(opts.Nkeys) != 11 {
		t.Fatalf("%d users parsed, want 11", len(opts.Nkeys))
	}
}

func TestRunRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"listen":"127.0.0.1:4222","store_dir":"/d","server_name":"s","users":[{"name":"gw","role":"gateway"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run([]string{"-deployment", bad, "-seeds", filepath.Join(dir, "s")})
	if err == nil || !strings.Contains(err.Error(), "site is required") {
		t.Fatalf("want a missing-site error, got %v", err)
	}
	unknown := filepath.Join(dir, "unknown.json")
	if err := os.WriteFile(unknown, []byte(`{"listen":"127.0.0.1:4222","colour":"red"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{"-deployment", unknown, "-seeds", filepath.Join(dir, "s")}); err == nil || !strings.Contains(err.Error(), "colour") {
		t.Fatalf("want an unknown-field error, got %v", err)
	}
	if err := run(nil); err == nil {
		t.Fatal("no flags accepted")
	}
}
