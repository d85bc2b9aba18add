package apiauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	adminToken    = "admin-secret-token"
	operatorToken = "operator-secret-token"
	auditorToken  = "auditor-secret-token"
)

func tokensFile() string {
	return `principals:
- name: alice
  token_sha256: ` + HashToken(adminToken) + `
  role: admin
- name: olga
  token_sha256: ` + HashToken(operatorToken) + `
  role: operator
  sites: [hq]
- name: audrey
  token_sha256: ` + HashToken(auditorToken) + `
  role: auditor
  sites: ["*"]
- name: door-controller
  client_cert: door-controller.hq
  role: operator
  sites: [hq]
- name: spiffe-admin
  client_cert: spiffe://facegate/admin
  role: admin
`
}

func mustStore(t *testing.T) *Store {
	t.Helper()
	s, err := Parse([]byte(tokensFile()))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseTokensFile(t *testing.T) {
	s := mustStore(t)
	p, err := s.ByToken(operatorToken)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "olga" || p.Role != RoleOperator || len(p.Sites) != 1 || p.Sites[0] != "hq" || p.Method != "token" {
		t.Fatalf("operator principal %+v", p)
	}
	if _, err := s.ByToken("nope"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("unknown token: %v", err)
	}
	// A list at top level works too.
	list := "- name: a\n  token_sha256: " + HashToken("x") + "\n  role: admin\n"
	if s2, err := Parse([]byte(list)); err != nil {
		t.Fatal(err)
	} else if p, err := s2.ByToken("x"); err != nil || p.Name != "a" {
		t.Fatalf("list form: %+v %v", p, err)
	}
}

func TestParseRejects(t *testing.T) {
	h := HashToken("x")
	for name, doc := range map[string]string{
		"unknown field":     "principals:\n- name: a\n  token_sha256: " + h + "\n  role: admin\n  rol: x\n",
		"bad role":          "principals:\n- name: a\n  token_sha256: " + h + "\n  role: root\n",
		"short hash":        "principals:\n- name: a\n  token_sha256: abcd\n  role: admin\n",
		"upper hash":        "principals:\n- name: a\n  token_sha256: " + strings.ToUpper(h) + "\n  role: admin\n",
		"no name":           "principals:\n- token_sha256: " + h + "\n  role: admin\n",
		"no credential":     "principals:\n- name: a\n  role: admin\n",
		"both credentials":  "principals:\n- name: a\n  token_sha256: " + h + "\n  client_cert: a\n  role: admin\n",
		"duplicate name":    "principals:\n- name: a\n  token_sha256: " + h + "\n  role: admin\n- name: a\n  client_cert: c\n  role: admin\n",
		"duplicate hash":    "principals:\n- name: a\n  token_sha256: " + h + "\n  role: admin\n- name: b\n  token_sha256: " + h + "\n  role: admin\n",
		"operator no sites": "principals:\n- name: a\n  token_sha256: " + h + "\n  role: operator\n",
		"bad site":          "principals:\n- name: a\n  token_sha256: " + h + "\n  role: operator\n  sites: [\"h.q\"]\n",
		"not yaml":          "principals: [",
	} {
		if _, err := Parse([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRoleMatrix(t *testing.T) {
	s := mustStore(t)
	admin, _ := s.ByToken(adminToken)
	op, _ := s.ByToken(operatorToken)
	aud, _ := s.ByToken(auditorToken)
	cases := []struct {
		p    Principal
		perm Permission
		site string
		ok   bool
	}{
		{admin, PermPolicies, "", true},
		{admin, PermPhotos, "anywhere", true},
		{op, PermPhotos, "hq", true},
		{op, PermPhotos, "branch", false}, // wrong site
		{op, PermPeopleWrite, "", false},  // no-site people are admin-only
		{op, PermGroups, "hq", false},     // groups span sites
		{op, PermPolicies, "hq", false},
		{op, PermMatch, "hq", true},
		{aud, PermPeopleRead, "branch", true}, // "*"
		{aud, PermPeopleWrite, "hq", false},
		{aud, PermPhotos, "hq", false},
		{aud, PermMatch, "hq", false},
		{aud, PermBiometricRead, "hq", false},
	}
	for _, c := range cases {
		err := c.p.Authorize(c.perm, c.site)
		if (err == nil) != c.ok {
			t.Errorf("%s %s on %q: err %v, want ok=%v", c.p.Name, c.perm, c.site, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrForbidden) {
			t.Errorf("%s %s: error %v does not wrap ErrForbidden", c.p.Name, c.perm, err)
		}
	}
}

// fakeClock makes the limiter deterministic.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestLimiterBuckets(t *testing.T) {
	l := NewLimiter(Limits{})
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	l.now = clk.now
	for i := 0; i < 5; i++ {
		if ok, _ := l.Allow("p", ClassMatch); !ok {
			t.Fatalf("match call %d refused within burst 5", i)
		}
	}
	ok, wait := l.Allow("p", ClassMatch)
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("6th match call: ok=%v wait=%v, want refused with wait in (0, 1s]", ok, wait)
	}
	// Another principal and another class have their own buckets.
	if ok, _ := l.Allow("q", ClassMatch); !ok {
		t.Fatal("other principal refused")
	}
	if ok, _ := l.Allow("p", ClassWrite); !ok {
		t.Fatal("other class refused")
	}
	// After 0.5 s at 2/s one token is back.
	clk.t = clk.t.Add(500 * time.Millisecond)
	if ok, _ := l.Allow("p", ClassMatch); !ok {
		t.Fatal("token not refilled after 0.5s")
	}
	if ok, _ := l.Allow("p", ClassMatch); ok {
		t.Fatal("second call after refill allowed")
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, 1500 * time.Millisecond: 2, 3 * time.Second: 3} {
		if got := RetryAfterSeconds(d); got != want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}

func echoPrincipal() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := FromContext(r.Context())
		if !ok {
			http.Error(w, "no principal", 500)
			return
		}
		if err := p.Authorize(PermPhotos, r.URL.Query().Get("site")); err != nil {
			WriteError(w, http.StatusForbidden, err.Error())
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"name": p.Name, "method": p.Method, "role": string(p.Role)})
	})
}

func do(t *testing.T, c *http.Client, method, u, token string) (*http.Response, map[string]string) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object: %v", method, u, b, err)
	}
	return resp, m
}

func TestMiddleware401403429(t *testing.T) {
	g := NewGuard(mustStore(t), NewLimiter(Limits{Match: Rate{PerSecond: 0.001, Burst: 2}, AuthFailures: Rate{PerSecond: 0.001, Burst: 3}}))
	srv := httptest.NewServer(g.Middleware(ClassMatch, echoPrincipal()))
	defer srv.Close()
	c := srv.Client()

	resp, body := do(t, c, "GET", srv.URL+"?site=hq", operatorToken)
	if resp.StatusCode != 200 || body["name"] != "olga" {
		t.Fatalf("operator on own site: %d %v", resp.StatusCode, body)
	}
	resp, body = do(t, c, "GET", srv.URL+"?site=branch", operatorToken)
	if resp.StatusCode != 403 || !strings.Contains(body["error"], "branch") {
		t.Fatalf("operator on other site: %d %v", resp.StatusCode, body)
	}
	// Burst 2 used up: the third call is limited.
	resp, body = do(t, c, "GET", srv.URL+"?site=hq", operatorToken)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over match limit: %d %v retry-after %q", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	if n, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || n < 1 {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}

	// No credentials, bad token, wrong scheme: 401 with WWW-Authenticate,
	// three failures allowed from this IP.
	resp, body = do(t, c, "GET", srv.URL, "")
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") || body["error"] == "" {
		t.Fatalf("no credentials: %d %v %q", resp.StatusCode, body, resp.Header.Get("WWW-Authenticate"))
	}
	resp, _ = do(t, c, "GET", srv.URL, "wrong-token")
	if resp.StatusCode != 401 {
		t.Fatalf("bad token: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", srv.URL, nil)
	req.Header.Set("Authorization", "Basic "+adminToken)
	r2, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != 401 {
		t.Fatalf("basic scheme: %d", r2.StatusCode)
	}
	// The fourth failure is over the per-IP limit, and from then on even a
	// valid token from this IP waits.
	resp, _ = do(t, c, "GET", srv.URL, "another-wrong-token")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("failed-auth flood: %d", resp.StatusCode)
	}
	resp, _ = do(t, c, "GET", srv.URL+"?site=hq", adminToken)
	if resp.StatusCode != 429 {
		t.Fatalf("valid token from a blocked IP: %d", resp.StatusCode)
	}
}

// pki is a CA and certificates made for the test.
type pki struct {
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &pki{caCert: cert, caKey: key, pool: pool}
}

func (p *pki) issue(t *testing.T, cn string, uris []string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestMutualTLS(t *testing.T) {
	ca := newPKI(t, "facegate test CA")
	rogue := newPKI(t, "rogue CA")
	g := NewGuard(mustStore(t), NewLimiter(Limits{}))
	srv := httptest.NewUnstartedServer(g.Middleware(ClassWrite, echoPrincipal()))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{ca.issue(t, "server", nil, true)},
		ClientCAs:    ca.pool, ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12,
	}
	srv.StartTLS()
	defer srv.Close()

	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: ca.pool, Certificates: certs, MinVersion: tls.VersionTLS12}}}
	}

	// CommonName names an operator entry.
	resp, body := do(t, client(ca.issue(t, "door-controller.hq", nil, false)), "GET", srv.URL+"?site=hq", "")
	if resp.StatusCode != 200 || body["name"] != "door-controller" || body["method"] != "mtls" {
		t.Fatalf("client cert by CN: %d %v", resp.StatusCode, body)
	}
	resp, _ = do(t, client(ca.issue(t, "door-controller.hq", nil, false)), "GET", srv.URL+"?site=branch", "")
	if resp.StatusCode != 403 {
		t.Fatalf("cert operator on other site: %d", resp.StatusCode)
	}
	// URI SAN names an admin entry.
	resp, body = do(t, client(ca.issue(t, "someone", []string{"spiffe://facegate/admin"}, false)), "GET", srv.URL+"?site=branch", "")
	if resp.StatusCode != 200 || body["name"] != "spiffe-admin" {
		t.Fatalf("client cert by URI SAN: %d %v", resp.StatusCode, body)
	}
	// A verified certificate naming no entry: 401.
	resp, _ = do(t, client(ca.issue(t, "stranger", nil, false)), "GET", srv.URL, "")
	if resp.StatusCode != 401 {
		t.Fatalf("unknown client cert: %d", resp.StatusCode)
	}
	// No certificate: 401. A bearer token still works over the same listener.
	resp, _ = do(t, client(), "GET", srv.URL, "")
	if resp.StatusCode != 401 {
		t.Fatalf("no client cert: %d", resp.StatusCode)
	}
	resp, body = do(t, client(), "GET", srv.URL+"?site=x", adminToken)
	if resp.StatusCode != 200 || body["method"] != "token" {
		t.Fatalf("token over TLS: %d %v", resp.StatusCode, body)
	}
	// A certificate from another CA with a CN that is in the file never
	// authenticates: the handshake refuses it.
	// GetClientCertificate forces the client to present it (Go's client
	// otherwise sends only certificates from the CAs the server names).
	rc := rogue.issue(t, "door-controller.hq", nil, false)
	forced := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: ca.pool, MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &rc, nil },
	}}}
	if r, err := forced.Get(srv.URL + "?site=hq"); err == nil {
		r.Body.Close()
		t.Fatalf("certificate from an untrusted CA was accepted: status %d", r.StatusCode)
	}
}

func TestTokenCompareVisitsEveryEntry(t *testing.T) {
	// Not a timing test: checks that the last entry is found, i.e. the
	// loop does not depend on an early match.
	var b strings.Builder
	b.WriteString("principals:\n")
	for i := 0; i < 50; i++ {
		b.WriteString("- name: p" + strconv.Itoa(i) + "\n  token_sha256: " + HashToken("t"+strconv.Itoa(i)) + "\n  role: auditor\n  sites: [hq]\n")
	}
	s, err := Parse([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 25, 49} {
		p, err := s.ByToken("t" + strconv.Itoa(i))
		if err != nil || p.Name != "p"+strconv.Itoa(i) {
			t.Fatalf("token %d: %+v %v", i, p, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(tokensFile()))
	f.Add([]byte("- name: a\n  client_cert: x\n  role: admin\n"))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			return
		}
		for _, e := range s.tokenEntries {
			if e.Name == "" || !Allows(e.Role, PermPeopleRead) {
				t.Fatalf("accepted entry %+v", e)
			}
		}
	})
}
