package natsconn

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// An NKEY seed file authenticates against a real server, and the inbox
// prefix is the one the client uses for its requests.
func TestOptionsNKEYSeedConnects(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		Nkeys: []*server.NkeyUser{{Nkey: pub, Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"svc", "_INBOX.emb.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.emb.>", "svc"}},
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(ns.Shutdown)
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	// A request/reply round trip works only when replies arrive under
	// the allowed inbox.
	opts, err := Options("test", writeFile(t, "emb.nk", string(seed)+"\n"), "_INBOX.emb", nil)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect with the seed: %v", err)
	}
	defer nc.Close()
	sub, err := nc.Subscribe("svc", func(m *nats.Msg) { _ = m.Respond([]byte("pong")) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if m, err := nc.Request("svc", []byte("ping"), 5*time.Second); err != nil || string(m.Data) != "pong" {
		t.Fatalf("request under the inbox prefix: %v", err)
	}
	if !strings.HasPrefix(nc.NewRespInbox(), "_INBOX.emb.") {
		t.Errorf("inbox %s", nc.NewRespInbox())
	}
	// Without credentials the server refuses.
	bare, _ := Options("test", "", "", nil)
	if nc2, err := nats.Connect(ns.ClientURL(), bare...); err == nil {
		nc2.Close()
		t.Error("connected without credentials")
	}
}

func TestCredentialKinds(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	creds := "-----BEGIN NATS USER JWT-----\neyJhbGciOi.x.y\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n" + string(seed) + "\n------END USER NKEY SEED------\n"
	if _, err := Credential(writeFile(t, "svc.creds", creds)); err != nil {
		t.Errorf(".creds file: %v", err)
	}
	if _, err := Credential(writeFile(t, "seed-without-suffix", string(seed))); err != nil {
		t.Errorf("seed file: %v", err)
	}
	for name, content := range map[string]string{"garbage": "not a key\n", "empty": ""} {
		if _, err := Credential(writeFile(t, name, content)); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v, want an error naming the file", name, err)
		}
	}
	if _, err := Options("x", filepath.Join(t.TempDir(), "absent.nk"), "", nil); err == nil || !strings.Contains(err.Error(), "absent.nk") {
		t.Errorf("missing file: %v", err)
	}
	for _, bad := range []string{"_INBOX.*", "_INBOX.>", "_INBOX.", "_INBOX. x"} {
		if _, err := Options("x", "", bad, nil); err == nil {
			t.Errorf("inbox prefix %q accepted", bad)
		}
	}
}

// FuzzCredential: any file content yields an option or an error, never a
// panic.
func FuzzCredential(f *testing.F) {
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	f.Add(seed)
	f.Add([]byte("-----BEGIN NATS USER JWT-----\n"))
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "c")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		o, err := Credential(p)
		if (o == nil) == (err == nil) {
			t.Fatalf("option %v, error %v", o != nil, err)
		}
	})
}
