package natsauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/facegate/facegate/pkg/bus"
)

func TestGatewayPermissionsExact(t *testing.T) {
	p, err := PermissionsFor(User{Name: "gw-north", Role: RoleGateway, Site: "north"})
	if err != nil {
		t.Fatal(err)
	}
	want := &Permissions{
		Publish:   []string{"facegate.claims.north.>", "facegate.frames.north.>"},
		Subscribe: []string{"_INBOX.gw-north.>"},
	}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("gateway permissions\n got %+v\nwant %+v", p, want)
	}
}

func TestEmbedderPermissionsExact(t *testing.T) {
	p, err := PermissionsFor(User{Name: "emb-north-dlib", Role: RoleEmbedder, Site: "north", Durable: "pool-dlib-north"})
	if err != nil {
		t.Fatal(err)
	}
	want := &Permissions{
		Publish: []string{
			"$JS.ACK.FRAMES.pool-dlib-north.>",
			"$JS.API.CONSUMER.INFO.FRAMES.pool-dlib-north",
			"$JS.API.CONSUMER.MSG.NEXT.FRAMES.pool-dlib-north",
			"$JS.API.STREAM.INFO.FRAMES",
			"facegate.errors.embedder",
			"facegate.faces.north.>",
		},
		Subscribe: []string{"_INBOX.emb-north-dlib.>"},
	}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("embedder permissions\n got %+v\nwant %+v", p, want)
	}
}

// TestNoRoleReachesAcrossSites checks the matrix as a whole: no
// site-scoped user may publish or subscribe to another site's subjects, and
// only the admin has no restriction.
func TestNoRoleReachesAcrossSites(t *testing.T) {
	for _, u := range testUsers() {
		p, err := PermissionsFor(u)
		if err != nil {
			t.Fatalf("%s: %v", u.Name, err)
		}
		if u.Role == RoleAdmin {
			if p != nil {
				t.Fatalf("admin has restrictions %+v", p)
			}
			continue
		}
		if p == nil {
			t.Fatalf("%s (%s) is unrestricted", u.Name, u.Role)
		}
		for _, s := range append(append([]string(nil), p.Publish...), p.Subscribe...) {
			if s == ">" || strings.HasPrefix(s, "_INBOX.>") || s == "facegate.>" {
				t.Errorf("%s: over-broad subject %q", u.Name, s)
			}
			if u.Site != "" && strings.HasPrefix(s, "facegate.") && !strings.HasPrefix(s, "facegate.errors.") {
				if tok := strings.Split(s, "."); len(tok) < 3 || tok[2] != u.Site {
					t.Errorf("%s (site %s): subject %q is not scoped to its site", u.Name, u.Site, s)
				}
			}
		}
		if got, want := p.Subscribe[len(p.Subscribe)-1], u.InboxPrefix()+".>"; !contains(p.Subscribe, want) {
			t.Errorf("%s: subscribe %v lacks its inbox %q (last %q)", u.Name, p.Subscribe, want, got)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestUserValidation(t *testing.T) {
	bad := []User{
		{Name: "", Role: RoleGateway, Site: "north"},
		{Name: "gw.north", Role: RoleGateway, Site: "north"},
		{Name: "gw", Role: RoleGateway},
		{Name: "gw", Role: RoleGateway, Site: "nor>th"},
		{Name: "gw", Role: RoleGateway, Site: "north", Durable: "x"},
		{Name: "door", Role: RoleDoor},
		{Name: "audit", Role: RoleAudit, Site: "north"},
		{Name: "op", Role: RoleOperator, Durable: "x"},
		{Name: "emb", Role: RoleEmbedder, Durable: "a*"},
		{Name: "x", Role: "root"},
	}
	for _, u := range bad {
		if _, err := PermissionsFor(u); !errors.Is(err, ErrInvalidUser) {
			t.Errorf("%+v: want ErrInvalidUser, got %v", u, err)
		}
	}
}

func TestDeploymentValidation(t *testing.T) {
	good := Deployment{ServerName: "s", Listen: "127.0.0.1:4222", StoreDir: "/d", Users: testUsers()}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Deployment){
		"no users":       func(d *Deployment) { d.Users = nil },
		"duplicate user": func(d *Deployment) { d.Users = append(d.Users, d.Users[1]) },
		"bad listen":     func(d *Deployment) { d.Listen = "4222" },
		"bad port":       func(d *Deployment) { d.Listen = "127.0.0.1:99999" },
		"no store":       func(d *Deployment) { d.StoreDir = "" },
		"tls no key":     func(d *Deployment) { d.TLS = &TLS{CertFile: "c"} },
		"verify no ca":   func(d *Deployment) { d.TLS = &TLS{CertFile: "c", KeyFile: "k", VerifyClients: true} },
		"bad account":    func(d *Deployment) { d.Account = "A B" },
	} {
		d := good
		d.Users = append([]User(nil), good.Users...)
		mut(&d)
		if err := d.Validate(); !errors.Is(err, ErrInvalidDeployment) && !errors.Is(err, ErrInvalidUser) {
			t.Errorf("%s: want a validation error, got %v", name, err)
		}
	}
}

// TestGeneratedConfigParses reads the generated file back with
// nats-server's own parser and checks every user's permissions there.
func TestGeneratedConfigParses(t *testing.T) {
	t.Run("one account", func(t *testing.T) { checkParsedConfig(t, false) })
	t.Run("site accounts", func(t *testing.T) { checkParsedConfig(t, true) })
}

func checkParsedConfig(t *testing.T, siteAccounts bool) {
	dir := t.TempDir()
	d := Deployment{ServerName: "s", Listen: "127.0.0.1:-1", StoreDir: filepath.Join(dir, "js"), Users: testUsers(), SiteAccounts: siteAccounts}
	conf, err := Generate(d, filepath.Join(dir, "seeds"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, conf)
	}
	if len(opts.Nkeys) != len(d.Users) {
		t.Fatalf("%d nkey users parsed, want %d", len(opts.Nkeys), len(d.Users))
	}
	pubs, err := EnsureSeeds(filepath.Join(dir, "seeds"), d.Users)
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[string]*server.NkeyUser{}
	for _, nu := range opts.Nkeys {
		byKey[nu.Nkey] = nu
	}
	for _, u := range d.Users {
		nu := byKey[pubs[u.Name]]
		if nu == nil {
			t.Fatalf("%s: key not in the parsed configuration", u.Name)
		}
		wantAcc := DefaultAccount
		if siteAccounts && u.Site != "" && (u.Role == RoleGateway || u.Role == RoleDoor) {
			wantAcc = "SITE_" + u.Site
		}
		if nu.Account == nil || nu.Account.Name != wantAcc {
			t.Fatalf("%s: account %v, want %s", u.Name, nu.Account, wantAcc)
		}
		want, _ := PermissionsFor(u)
		if want == nil {
			if nu.Permissions != nil {
				t.Fatalf("admin has permissions %+v", nu.Permissions)
			}
			continue
		}
		gotPub, gotSub := nu.Permissions.Publish, nu.Permissions.Subscribe
		if len(want.Publish) == 0 {
			if !reflect.DeepEqual(gotPub.Deny, []string{">"}) || len(gotPub.Allow) != 0 {
				t.Errorf("%s: publish %+v, want deny everything", u.Name, gotPub)
			}
		} else if !reflect.DeepEqual(gotPub.Allow, want.Publish) || len(gotPub.Deny) != 0 {
			t.Errorf("%s: publish allow %v, want %v", u.Name, gotPub.Allow, want.Publish)
		}
		if !reflect.DeepEqual(gotSub.Allow, want.Subscribe) {
			t.Errorf("%s: subscribe allow %v, want %v", u.Name, gotSub.Allow, want.Subscribe)
		}
	}
}

func TestSeeds(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "seeds")
	users := testUsers()[:3]
	d := Deployment{ServerName: "s", Listen: "127.0.0.1:4222", StoreDir: "/d", Users: users}
	conf, err := Generate(d, dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("seed dir mode %v, err %v", st.Mode().Perm(), err)
	}
	first := map[string]string{}
	for _, u := range users {
		path := SeedFile(dir, u.Name)
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v, want 0600", path, st.Mode().Perm())
		}
		seed, _ := os.ReadFile(path)
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		first[u.Name] = pub
		if strings.Contains(string(conf), strings.TrimSpace(string(seed))) {
			t.Fatalf("configuration contains %s's seed", u.Name)
		}
		if !strings.Contains(string(conf), pub) {
			t.Fatalf("configuration lacks %s's public key", u.Name)
		}
	}
	// Regenerating keeps existing keys.
	again, err := EnsureSeeds(dir, users)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, first) {
		t.Fatalf("regeneration changed keys: %v -> %v", first, again)
	}
	// A seed readable by others is refused, not used.
	if err := os.Chmod(SeedFile(dir, users[0].Name), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureSeeds(dir, users); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable seed: want a mode error, got %v", err)
	}
	// A corrupt seed is an error that does not echo the file's content.
	bad := SeedFile(dir, "corrupt")
	if err := os.WriteFile(bad, []byte("SUNOTASEEDATALL"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = EnsureSeeds(dir, []User{{Name: "corrupt"}})
	if err == nil || strings.Contains(err.Error(), "SUNOTASEED") {
		t.Fatalf("corrupt seed: %v", err)
	}
}

// TestTLS runs the gateway's publish over TLS with a certificate made here,
// and checks that a client without TLS or without the CA is refused.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir)
	d := testDeployment(t)
	d.TLS = &TLS{CertFile: certFile, KeyFile: keyFile}
	srv := startServer(t, d)
	srv.tlsCA = certFile

	admin := srv.connect(t, "admin")
	if !admin.nc.TLSRequired() {
		t.Fatal("server does not require TLS")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	scs, err := bus.DefaultConfig().StreamConfigs()
	if err != nil {
		t.Fatal(err)
	}
	if scs[0].Name != bus.StreamFrames {
		t.Fatalf("first stream is %s", scs[0].Name)
	}
	if _, err := admin.js.CreateStream(ctx, scs[0]); err != nil {
		t.Fatal(err)
	}
	gw := srv.connect(t, "gw-north")
	if _, err := gw.js.Publish(ctx, "facegate.frames.north.cam1", []byte("frame")); err != nil {
		t.Fatalf("gateway publish over TLS: %v", err)
	}
	if _, err := gw.nc.TLSConnectionState(); err != nil {
		t.Fatalf("gateway connection is not TLS: %v", err)
	}
	gw.denyPublish(t, "facegate.frames.south.cam1")

	opt, err := nats.NkeyOptionFromSeed(SeedFile(srv.seedDir, "gw-north"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.url, opt, nats.MaxReconnects(0))
	if err == nil {
		nc.Close()
		t.Fatal("a client that does not trust the server's CA connected")
	}
	var unknownCA x509.UnknownAuthorityError
	if !errors.As(err, &unknownCA) {
		t.Fatalf("want an unknown-authority error, got %v", err)
	}
}

func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "natsauth test"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
