package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/facegate/facegate/pkg/apiauth"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/sealed"
	"github.com/facegate/facegate/pkg/testenv"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseFlagsAndEnvironment(t *testing.T) {
	s, err := parse([]string{"--listen", ":9000", "--photo-dir=/flag-photos"}, env(map[string]string{
		"FACEGATE_LISTEN":    ":1", // the flag wins
		"FACEGATE_TOKENS":    "/etc/facegate/tokens.yaml",
		"FACEGATE_KEYS_DIR":  "/keys",
		"FACEGATE_PHOTO_DIR": "/env-photos",
		"FACEGATE_NATS_URL":  "nats://bus:4222",
		"FACEGATE_TLS_CERT":  "/tls/cert.pem",
		"FACEGATE_TLS_KEY":   "/tls/key.pem",
		"FACEGATE_CLIENT_CA": "/tls/ca.pem",
		"FACEGATE_CACHE_DIR": "/cache",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.listen != ":9000" || s.photoDir != "/flag-photos" || s.tokens != "/etc/facegate/tokens.yaml" || s.keysDir != "/keys" ||
		s.natsURL != "nats://bus:4222" || s.tlsCert != "/tls/cert.pem" || s.clientCA != "/tls/ca.pem" || s.cacheDir != "/cache" {
		t.Errorf("parsed %+v", s)
	}
}

func TestParseRefuses(t *testing.T) {
	base := map[string]string{"FACEGATE_TOKENS": "/t", "FACEGATE_KEYS_DIR": "/k", "FACEGATE_PHOTO_DIR": "/p"}
	without := func(k string) map[string]string {
		m := map[string]string{}
		for kk, v := range base {
			if kk != k {
				m[kk] = v
			}
		}
		return m
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, without("FACEGATE_TOKENS"), "tokens"},
		{nil, without("FACEGATE_KEYS_DIR"), "keys-dir"},
		{nil, without("FACEGATE_PHOTO_DIR"), "photo-dir"},
		{[]string{"--tls-cert", "/c"}, base, "tls-key"},
		{[]string{"--client-ca", "/ca"}, base, "client-ca"},
		{[]string{"--threshold", "2"}, base, "threshold"},
		{[]string{"--analyses", "0"}, base, "analyses"},
		{[]string{"stray"}, base, "unexpected"},
	} {
		if _, err := parse(tc.args, env(tc.env), io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse(%q) = %v, want an error mentioning %q", tc.args, err, tc.want)
		}
	}
}

// writePEM writes a certificate or key.
func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T) testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return testCA{c, key}
}

func (ca testCA) issue(t *testing.T, cn string, server bool) (certDER []byte, key *ecdsa.PrivateKey) {
	key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// TestRunServesOverMutualTLSAndStops runs the binary's run with real NATS,
// real models and a TLS listener, calls it with a client certificate and
// with a token, then cancels (SIGTERM's path) and expects a clean return.
func TestRunServesOverMutualTLSAndStops(t *testing.T) {
	cache := testenv.Models(t)
	srvNATS := natstest.Start(t, embedded.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, js2 := natstest.Connect(t, srvNATS.URL())
	if err := bus.EnsureStreams(ctx, js2, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	keysDir := filepath.Join(dir, "keys")
	if err := os.Mkdir(keysDir, 0o700); err != nil {
		t.Fatal(err)
	}
	kp, err := sealed.OpenFileKeyProvider(keysDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kp.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	ca := newCA(t)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.cert.Raw)
	sDER, sKey := ca.issue(t, "api", true)
	writePEM(t, filepath.Join(dir, "server.pem"), "CERTIFICATE", sDER)
	kDER, _ := x509.MarshalECPrivateKey(sKey)
	writePEM(t, filepath.Join(dir, "server-key.pem"), "EC PRIVATE KEY", kDER)
	tokens := fmt.Sprintf("principals:\n- {name: console, client_cert: console.hq, role: operator, sites: [hq]}\n- {name: root, token_sha256: %s, role: admin}\n",
		apiauth.HashToken("root-token"))
	if err := os.WriteFile(filepath.Join(dir, "tokens.yaml"), []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}

	s, err := parse([]string{"--listen", "127.0.0.1:0", "--nats-url", srvNATS.URL(), "--tokens", filepath.Join(dir, "tokens.yaml"),
		"--keys-dir", keysDir, "--photo-dir", filepath.Join(dir, "photos"), "--cache-dir", cache,
		"--tls-cert", filepath.Join(dir, "server.pem"), "--tls-key", filepath.Join(dir, "server-key.pem"),
		"--client-ca", filepath.Join(dir, "ca.pem"), "--metrics-addr", "127.0.0.1:0"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, s, zaptest.NewLogger(t), ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run ended before serving: %v", err)
	}

	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	cDER, cKey := ca.issue(t, "console.hq", false)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{cDER}, PrivateKey: cKey}}}}}
	resp, err := client.Post("https://"+addr+"/v1/people", "application/json", strings.NewReader(`{"person_id":"p-1","display_name":"P","site":"hq"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create over mTLS: %d %s", resp.StatusCode, body)
	}
	// Token over the same TLS listener, reading the write back.
	plain := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	req, _ := http.NewRequest("GET", "https://"+addr+"/v1/people/p-1", nil)
	req.Header.Set("Authorization", "Bearer root-token")
	resp, err = plain.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"display_name":"P"`) {
		t.Fatalf("get with token: %d %s", resp.StatusCode, body)
	}
	// No credentials: 401.
	resp, err = plain.Get("https://" + addr + "/v1/people")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no credentials: %d", resp.StatusCode)
	}

	// SIGHUP re-reads the tokens file: the root token is revoked.
	revoked := "principals:\n- {name: console, client_cert: console.hq, role: operator, sites: [hq]}\n"
	if err := os.WriteFile(filepath.Join(dir, "tokens.yaml"), []byte(revoked), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	status := 0
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		req, _ := http.NewRequest("GET", "https://"+addr+"/v1/people/p-1", nil)
		req.Header.Set("Authorization", "Bearer root-token")
		resp, err := plain.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if status = resp.StatusCode; status == http.StatusUnauthorized {
			break
		}
	}
	if status != http.StatusUnauthorized {
		t.Fatalf("revoked token after SIGHUP: %d", status)
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after shutdown: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("run did not return after cancel")
	}
	if _, err := plain.Get("https://" + addr + "/v1/people"); err == nil {
		t.Fatal("still serving after shutdown")
	}
}
