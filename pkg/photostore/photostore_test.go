package photostore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/sealed"
)

var bg = context.Background()

func newStore(t *testing.T) *Store {
	t.Helper()
	kp, err := sealed.OpenFileKeyProvider(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kp.Rotate(bg); err != nil {
		t.Fatal(err)
	}
	s, err := New(filepath.Join(t.TempDir(), "photos"), kp)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPutGetDelete(t *testing.T) {
	s := newStore(t)
	photo := []byte("\xff\xd8\xff\xe0 pretend jpeg bytes that must not be stored in the clear")
	ref, err := s.Put(bg, "p-1", "ph-1", photo)
	if err != nil {
		t.Fatal(err)
	}
	if ref != events.PersonHash("p-1")+"/ph-1" {
		t.Fatalf("ref %q", ref)
	}
	path := filepath.Join(s.Dir(), ref)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, photo[4:]) {
		t.Fatal("stored file contains the plaintext photo")
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, want 0600", fi.Mode().Perm())
	}
	di, _ := os.Stat(filepath.Dir(path))
	if di.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v, want 0700", di.Mode().Perm())
	}
	// The directory names the hash, never the id.
	entries, _ := os.ReadDir(s.Dir())
	for _, e := range entries {
		if strings.Contains(e.Name(), "p-1") {
			t.Fatalf("directory %q names the person id", e.Name())
		}
	}
	got, err := s.Get(bg, "p-1", "ph-1")
	if err != nil || !bytes.Equal(got, photo) {
		t.Fatalf("get: %v", err)
	}
	if err := s.Delete(bg, "p-1", "ph-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(bg, "p-1", "ph-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if err := s.Delete(bg, "p-1", "ph-1"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
}

func TestTamper(t *testing.T) {
	s := newStore(t)
	if _, err := s.Put(bg, "alice", "a1", []byte("alice photo")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(bg, "alice", "a2", []byte("alice photo two")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(bg, "bob", "b1", []byte("bob photo")); err != nil {
		t.Fatal(err)
	}
	copyFile := func(from, to string) {
		b, err := os.ReadFile(filepath.Join(s.Dir(), from))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(s.Dir(), to), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Bob's file put in place of Alice's photo: fails, does not yield Bob's photo.
	copyFile(Ref("bob", "b1"), Ref("alice", "a1"))
	if got, err := s.Get(bg, "alice", "a1"); err == nil || !errors.Is(err, sealed.ErrTampered) {
		t.Fatalf("swapped across people: %q, %v", got, err)
	}
	// Swapped between two photos of one person: fails too.
	copyFile(Ref("alice", "a2"), Ref("bob", "b1"))
	copyFile(Ref("alice", "a2"), Ref("alice", "a1"))
	if _, err := s.Get(bg, "alice", "a1"); !errors.Is(err, sealed.ErrTampered) {
		t.Fatalf("swapped within a person: %v", err)
	}
	// A flipped byte fails.
	p := filepath.Join(s.Dir(), Ref("alice", "a2"))
	b, _ := os.ReadFile(p)
	b[len(b)-3] ^= 1
	_ = os.WriteFile(p, b, 0o600)
	if _, err := s.Get(bg, "alice", "a2"); !errors.Is(err, sealed.ErrTampered) {
		t.Fatalf("flipped byte: %v", err)
	}
}

func TestDeletePerson(t *testing.T) {
	s := newStore(t)
	for _, ph := range []string{"x1", "x2", "x3"} {
		if _, err := s.Put(bg, "carol", ph, []byte(ph)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Put(bg, "dave", "d1", []byte("d")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePerson(bg, "carol"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.PersonDir("carol")); !os.IsNotExist(err) {
		t.Fatalf("person directory still there: %v", err)
	}
	if _, err := s.Get(bg, "dave", "d1"); err != nil {
		t.Fatalf("other person's photo: %v", err)
	}
	if err := s.DeletePerson(bg, "carol"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
}

func TestBadIDs(t *testing.T) {
	s := newStore(t)
	for _, c := range [][2]string{{"", "a"}, {"a", ""}, {"../x", "a"}, {"a", "../../etc"}, {"a", "b/c"}, {"a.b", "c"}} {
		if _, err := s.Put(bg, c[0], c[1], []byte("x")); err == nil {
			t.Errorf("Put(%q, %q) accepted", c[0], c[1])
		}
		if _, err := s.Get(bg, c[0], c[1]); err == nil {
			t.Errorf("Get(%q, %q) accepted", c[0], c[1])
		}
	}
	if err := s.DeletePerson(bg, "../"); err == nil {
		t.Error("DeletePerson(../) accepted")
	}
}

func TestOpenRefusesOpenDirectory(t *testing.T) {
	kp, _ := sealed.OpenFileKeyProvider(t.TempDir())
	dir := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := New(dir, kp); err == nil {
		t.Fatal("world-readable photo directory accepted")
	}
}
