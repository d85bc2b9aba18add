package sealed

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

var bg = context.Background()

func newProvider(t testing.TB) (*FileKeyProvider, string) {
	t.Helper()
	dir := t.TempDir() // created 0700
	p, err := OpenFileKeyProvider(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Rotate(bg); err != nil {
		t.Fatal(err)
	}
	return p, dir
}

// encoding returns a 128-d float32 template as bytes, like the gallery stores.
func encoding(seed int) []byte {
	b := make([]byte, 0, 512)
	for i := 0; i < 128; i++ {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(math.Sin(float64(seed*128+i)))))
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	p, _ := newProvider(t)
	photo := make([]byte, 150<<10)
	rand.Read(photo)
	for _, pt := range [][]byte{nil, {0x42}, encoding(1), photo} {
		ctxName := TemplateContext("dlib-resnet34-128", fmt.Sprintf("t-%d", len(pt)))
		blob, err := Seal(bg, p, pt, ctxName)
		if err != nil {
			t.Fatal(err)
		}
		if len(pt) > 16 && bytes.Contains(blob, pt[:16]) {
			t.Fatal("plaintext visible in the blob")
		}
		got, err := Open(bg, p, blob, ctxName)
		if err != nil {
			t.Fatalf("open %d bytes: %v", len(pt), err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("round trip of %d bytes differs", len(pt))
		}
		// Overhead: fixed header + key id + 60-byte wrapped key + nonce + tag.
		if want := len(pt) + 8 + len(p.ActiveKeyID()) + 60 + 12 + 16; len(blob) != want {
			t.Fatalf("blob of %d bytes, want %d", len(blob), want)
		}
	}
}

func TestFreshKeyAndNonceEachTime(t *testing.T) {
	p, _ := newProvider(t)
	c := TemplateContext("m", "t1")
	a, _ := Seal(bg, p, encoding(1), c)
	b, _ := Seal(bg, p, encoding(1), c)
	ha, _ := parse(a)
	hb, _ := parse(b)
	if bytes.Equal(ha.wrapped, hb.wrapped) || bytes.Equal(ha.nonce, hb.nonce) || bytes.Equal(ha.body, hb.body) {
		t.Fatal("two seals of the same data share a wrapped key, nonce or ciphertext")
	}
}

func TestWrongContext(t *testing.T) {
	p, _ := newProvider(t)
	blob, err := Seal(bg, p, encoding(2), TemplateContext("dlib-resnet34-128", "t-1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, other := range []string{
		TemplateContext("dlib-resnet34-128", "t-2"),
		TemplateContext("mobileface-256", "t-1"),
		PhotoContext("dlib-resnet34-128", "t-1"),
		TemplateContext("dlib-resnet34-128", "t-1") + " ",
	} {
		_, err := Open(bg, p, blob, other)
		if !errors.Is(err, ErrWrongContext) || !errors.Is(err, ErrTampered) {
			t.Fatalf("open under %q: %v, want ErrWrongContext", other, err)
		}
	}
	if _, err := Seal(bg, p, []byte("x"), ""); err == nil {
		t.Fatal("seal without a context accepted")
	}
	if _, err := Open(bg, p, blob, ""); err == nil {
		t.Fatal("open without a context accepted")
	}
}

func TestContextsDoNotCollide(t *testing.T) {
	if TemplateContext("a/b", "c") == TemplateContext("a", "b/c") {
		t.Fatal("path separators in ids make contexts collide")
	}
}

// Every single-byte change anywhere in a blob makes Open fail with one of
// the typed errors, never with garbage plaintext.
func TestEveryByteFlipFails(t *testing.T) {
	p, _ := newProvider(t)
	c := TemplateContext("m", "t-9")
	blob, err := Seal(bg, p, []byte("a small template"), c)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for i := range blob {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			mod := bytes.Clone(blob)
			mod[i] ^= mask
			pt, err := Open(bg, p, mod, c)
			switch {
			case err == nil:
				t.Fatalf("flip %#x at byte %d opened: %q", mask, i, pt)
			case errors.Is(err, ErrFormat):
				counts["format"]++
			case errors.Is(err, ErrUnknownKey):
				counts["unknown key"]++
			case errors.Is(err, ErrTampered):
				counts["tampered"]++
			default:
				t.Fatalf("flip %#x at byte %d: untyped error %v", mask, i, err)
			}
		}
	}
	// Each part of the format is hit: magic/version/lengths, key id, and
	// wrapped key, nonce and ciphertext.
	if counts["format"] == 0 || counts["unknown key"] == 0 || counts["tampered"] == 0 {
		t.Fatalf("error mix %v", counts)
	}
	t.Logf("%d flips: %v", 3*len(blob), counts)
}

func TestTruncatedAndGarbage(t *testing.T) {
	p, _ := newProvider(t)
	c := TemplateContext("m", "t")
	blob, _ := Seal(bg, p, encoding(3), c)
	for n := 0; n < len(blob); n++ {
		_, err := Open(bg, p, blob[:n], c)
		if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrTampered) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	if _, err := Open(bg, p, append(bytes.Clone(blob), 0), c); !errors.Is(err, ErrTampered) {
		t.Fatalf("extended blob: %v", err)
	}
	junk := make([]byte, 300)
	rand.Read(junk)
	if _, err := Open(bg, p, junk, c); !errors.Is(err, ErrFormat) {
		t.Fatalf("junk: %v", err)
	}
	v2 := bytes.Clone(blob)
	v2[4] = 2
	if _, err := Open(bg, p, v2, c); !errors.Is(err, ErrFormat) {
		t.Fatalf("version 2: %v", err)
	}
}

func TestUnknownKey(t *testing.T) {
	p, _ := newProvider(t)
	other, _ := newProvider(t)
	c := PhotoContext("person-1", "photo-1")
	blob, _ := Seal(bg, p, []byte("jpeg bytes"), c)
	if _, err := Open(bg, other, blob, c); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("open with another key directory: %v, want ErrUnknownKey", err)
	}
	id, err := BlobKeyID(blob)
	if err != nil || id != p.ActiveKeyID() {
		t.Fatalf("BlobKeyID %q, %v", id, err)
	}
	// A key id that could escape the directory is refused, not looked up.
	h, _ := parse(blob)
	h.keyID = "../" + p.ActiveKeyID()
	if _, err := Open(bg, p, h.marshal(), c); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("path key id: %v", err)
	}
}

// Same-size wrapped key under the same KEK but from another blob: the data
// key unwraps, the data does not authenticate.
func TestSwappedWrappedKey(t *testing.T) {
	p, _ := newProvider(t)
	c := TemplateContext("m", "t")
	a, _ := Seal(bg, p, []byte("aaaa"), c)
	b, _ := Seal(bg, p, []byte("bbbb"), c)
	ha, _ := parse(a)
	hb, _ := parse(b)
	ha.wrapped = hb.wrapped
	if _, err := Open(bg, p, ha.marshal(), c); !errors.Is(err, ErrTampered) {
		t.Fatalf("swapped wrapped key: %v", err)
	}
}

func TestRotateRewrapRemove(t *testing.T) {
	p, dir := newProvider(t)
	k1 := p.ActiveKeyID()
	c := TemplateContext("dlib-resnet34-128", "t-77")
	old, err := Seal(bg, p, encoding(7), c)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := p.Rotate(bg)
	if err != nil {
		t.Fatal(err)
	}
	if k2 == k1 || p.ActiveKeyID() != k2 {
		t.Fatalf("rotate: active %q, old %q, new %q", p.ActiveKeyID(), k1, k2)
	}
	// Before rewrap the old blob opens while k1 exists.
	if got, err := Open(bg, p, old, c); err != nil || !bytes.Equal(got, encoding(7)) {
		t.Fatalf("old blob after rotate: %v", err)
	}
	fresh, _ := Seal(bg, p, encoding(8), c)
	if id, _ := BlobKeyID(fresh); id != k2 {
		t.Fatalf("new blob wrapped under %q, want %q", id, k2)
	}
	re, err := Rewrap(bg, p, old)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := BlobKeyID(re); id != k2 {
		t.Fatalf("rewrapped blob under %q", id)
	}
	ho, _ := parse(old)
	hr, _ := parse(re)
	if !bytes.Equal(ho.nonce, hr.nonce) || !bytes.Equal(ho.body, hr.body) {
		t.Fatal("rewrap changed the nonce or ciphertext")
	}
	if err := p.Remove(bg, k2); err == nil {
		t.Fatal("removed the active key")
	}
	if err := p.Remove(bg, k1); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, k1+kekExt)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("key file still there: %v", err)
	}
	// A fresh provider over the directory, which now holds only k2.
	p2, err := OpenFileKeyProvider(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ids := p2.KeyIDs(); len(ids) != 1 || ids[0] != k2 || p2.ActiveKeyID() != k2 {
		t.Fatalf("keys after removal %v, active %q", ids, p2.ActiveKeyID())
	}
	if got, err := Open(bg, p2, re, c); err != nil || !bytes.Equal(got, encoding(7)) {
		t.Fatalf("rewrapped blob with only the new key: %v", err)
	}
	if _, err := Open(bg, p2, old, c); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("un-rewrapped blob after its key was removed: %v, want ErrUnknownKey", err)
	}
	if _, err := Rewrap(bg, p2, old); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("rewrap without the old key: %v", err)
	}
}

// A second process rotating: this provider still unwraps the new key's
// blobs (it looks the key up on disk) and picks up the new active key on
// Reload.
func TestKeyFromAnotherProcess(t *testing.T) {
	p, dir := newProvider(t)
	q, err := OpenFileKeyProvider(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := q.Rotate(bg)
	c := TemplateContext("m", "t")
	blob, _ := Seal(bg, q, encoding(1), c)
	if _, err := Open(bg, p, blob, c); err != nil {
		t.Fatalf("blob under a key created elsewhere: %v", err)
	}
	if p.ActiveKeyID() == k2 {
		t.Fatal("active key changed without Reload")
	}
	if err := p.Reload(); err != nil || p.ActiveKeyID() != k2 {
		t.Fatalf("reload: %v, active %q", err, p.ActiveKeyID())
	}
}

func TestKeyFilePermissions(t *testing.T) {
	p, dir := newProvider(t)
	path := filepath.Join(dir, p.ActiveKeyID()+kekExt)
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		os.Chmod(path, mode)
		_, err := OpenFileKeyProvider(dir)
		if !errors.Is(err, ErrKeyPermissions) {
			t.Fatalf("key file mode %04o: %v, want ErrKeyPermissions", mode, err)
		}
	}
	os.Chmod(path, 0o400)
	if _, err := OpenFileKeyProvider(dir); err != nil {
		t.Fatalf("0400 key refused: %v", err)
	}
	os.Chmod(path, 0o600)
	st, _ := os.Stat(path)
	if _, err := p.Rotate(bg); err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(filepath.Join(dir, p.ActiveKeyID()+kekExt))
	if st.Mode().Perm() != 0o600 || st2.Mode().Perm() != 0o600 {
		t.Fatalf("created key modes %04o, %04o", st.Mode().Perm(), st2.Mode().Perm())
	}

	os.Chmod(dir, 0o777)
	defer os.Chmod(dir, 0o700)
	if _, err := OpenFileKeyProvider(dir); !errors.Is(err, ErrKeyPermissions) {
		t.Fatalf("world-writable key directory: %v", err)
	}
}

func TestBadKeyDirectory(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenFileKeyProvider(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing directory accepted")
	}
	p, err := OpenFileKeyProvider(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Seal(bg, p, []byte("x"), "c"); !errors.Is(err, ErrNoActiveKey) {
		t.Fatalf("seal with no key: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "short"+kekExt), []byte("too short"), 0o600)
	if _, err := OpenFileKeyProvider(dir); err == nil {
		t.Fatal("a 9-byte key accepted")
	}
	os.Remove(filepath.Join(dir, "short"+kekExt))
	os.WriteFile(filepath.Join(dir, "k1"+kekExt), bytes.Repeat([]byte{1}, 32), 0o600)
	if _, err := OpenFileKeyProvider(dir); err == nil {
		t.Fatal("keys without an active marker accepted")
	}
	os.WriteFile(filepath.Join(dir, activeFile), []byte("k2\n"), 0o600)
	if _, err := OpenFileKeyProvider(dir); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("active names a missing key: %v", err)
	}
	os.WriteFile(filepath.Join(dir, activeFile), []byte("k1\n"), 0o600)
	if q, err := OpenFileKeyProvider(dir); err != nil || q.ActiveKeyID() != "k1" {
		t.Fatalf("hand-made key directory: %v", err)
	}
}

func TestClosedProvider(t *testing.T) {
	p, _ := newProvider(t)
	c := TemplateContext("m", "t")
	blob, _ := Seal(bg, p, []byte("x"), c)
	p.Close()
	if _, err := Seal(bg, p, []byte("x"), c); !errors.Is(err, ErrClosed) {
		t.Fatalf("seal after close: %v", err)
	}
	// The key file is still on disk; a closed provider must not load it.
	if _, err := Open(bg, p, blob, c); !errors.Is(err, ErrClosed) {
		t.Fatalf("open after close: %v", err)
	}
	if _, err := p.Rotate(bg); !errors.Is(err, ErrClosed) {
		t.Fatalf("rotate after close: %v", err)
	}
	if err := p.Reload(); !errors.Is(err, ErrClosed) {
		t.Fatalf("reload after close: %v", err)
	}
}

func TestCancelledContext(t *testing.T) {
	p, _ := newProvider(t)
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if _, err := Seal(ctx, p, []byte("x"), "c"); !errors.Is(err, context.Canceled) {
		t.Fatalf("seal: %v", err)
	}
	if _, err := p.Rotate(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("rotate: %v", err)
	}
}

// badProvider misbehaves the ways a buggy KMS client might.
type badProvider struct {
	dek     []byte
	keyID   string
	wrapped []byte
}

func (b badProvider) WrapKey(context.Context, []byte) ([]byte, string, error) {
	return b.wrapped, b.keyID, nil
}
func (b badProvider) UnwrapKey(context.Context, string, []byte) ([]byte, error) { return b.dek, nil }

func TestMisbehavingProvider(t *testing.T) {
	for _, b := range []badProvider{
		{keyID: "", wrapped: []byte{1}},
		{keyID: string(bytes.Repeat([]byte("k"), 256)), wrapped: []byte{1}},
		{keyID: "k", wrapped: nil},
	} {
		if _, err := Seal(bg, b, []byte("x"), "c"); err == nil {
			t.Fatalf("seal accepted key id of %d bytes and wrapped key of %d", len(b.keyID), len(b.wrapped))
		}
	}
	p, _ := newProvider(t)
	blob, _ := Seal(bg, p, []byte("x"), "c")
	if _, err := Open(bg, badProvider{dek: make([]byte, 7)}, blob, "c"); !errors.Is(err, ErrTampered) {
		t.Fatalf("short data key: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	p, _ := newProvider(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				c := TemplateContext("m", fmt.Sprintf("%d-%d", g, i))
				blob, err := Seal(bg, p, encoding(i), c)
				if err == nil {
					var pt []byte
					pt, err = Open(bg, p, blob, c)
					if err == nil && !bytes.Equal(pt, encoding(i)) {
						err = errors.New("plaintext differs")
					}
				}
				if err != nil {
					errs <- err
					return
				}
				if g == 0 && i%10 == 0 {
					if _, err := p.Rotate(bg); err != nil {
						errs <- err
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	p, err := OpenFileKeyProvider(dir)
	if err != nil {
		f.Fatal(err)
	}
	p.Rotate(bg)
	c := TemplateContext("m", "t")
	blob, _ := Seal(bg, p, encoding(1), c)
	f.Add(blob, c)
	f.Add(blob[:40], c)
	f.Add([]byte("FGSB\x01\x00"), "c")
	f.Add([]byte("FGSB\x01\xff"), "c")
	f.Add([]byte{}, "")
	f.Fuzz(func(t *testing.T, in []byte, ctxName string) {
		pt, err := Open(bg, p, in, ctxName)
		if err == nil && !(bytes.Equal(in, blob) && ctxName == c) {
			// Forging a blob that authenticates is a break of AES-GCM.
			t.Fatalf("a blob other than the sealed one opened: %q", pt)
		}
		if err != nil && !errors.Is(err, ErrFormat) && !errors.Is(err, ErrUnknownKey) && !errors.Is(err, ErrTampered) && ctxName != "" && len(ctxName) <= maxContext {
			t.Fatalf("untyped error: %v", err)
		}
		BlobKeyID(in)
		Rewrap(bg, p, in)
	})
}

func BenchmarkSealOpenTemplate(b *testing.B) {
	dir := b.TempDir()
	p, _ := OpenFileKeyProvider(dir)
	p.Rotate(bg)
	c := TemplateContext("dlib-resnet34-128", "t-1")
	pt := encoding(1)
	for b.Loop() {
		blob, err := Seal(bg, p, pt, c)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Open(bg, p, blob, c); err != nil {
			b.Fatal(err)
		}
	}
}
