package modelcache_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/facegate/facegate/models"
	"github.com/facegate/facegate/pkg/modelcache"
)

// localPacker serves a tarball made by the test instead of asking npm: the
// cache's own checksum, extraction and install logic is what is under test.
type localPacker struct {
	tarball []byte
	calls   int
}

func (p *localPacker) Pack(_ context.Context, spec, dir string) (string, error) {
	p.calls++
	path := filepath.Join(dir, "pkg.tgz")
	return path, os.WriteFile(path, p.tarball, 0o644)
}

func makeTarball(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: "package/" + name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func fixture(t *testing.T) (*modelcache.Cache, *localPacker, *models.Package) {
	t.Helper()
	files := map[string]string{"model/w.bin": "weights-bytes", "model/m.json": `{"a":1}`, "README.md": "not taken"}
	tgz := makeTarball(t, files)
	pkg := models.Package{
		Name: "@test/pkg", Version: "1.0.0", TarballSHA256: sum(tgz),
		Files: []models.File{{Path: "model/w.bin", SHA256: sum([]byte(files["model/w.bin"]))}, {Path: "model/m.json", SHA256: sum([]byte(files["model/m.json"]))}},
	}
	p := &localPacker{tarball: tgz}
	c := &modelcache.Cache{Root: t.TempDir(), Manifest: &models.Manifest{Schema: 1, Packages: []models.Package{pkg}}, Packer: p, Log: zap.NewNop()}
	return c, p, &c.Manifest.Packages[0]
}

func TestFetchExtractsOnlyListedFilesAndIsIdempotent(t *testing.T) {
	c, p, pkg := fixture(t)
	st, err := c.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || !st[0].Fetched || st[0].Files != 2 {
		t.Fatalf("status = %+v", st)
	}
	dir := c.PackageDir(pkg)
	if b, err := os.ReadFile(filepath.Join(dir, "model", "w.bin")); err != nil || string(b) != "weights-bytes" {
		t.Fatalf("extracted weights = %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "README.md")); !os.IsNotExist(err) {
		t.Fatalf("unlisted file was extracted: %v", err)
	}
	st, err = c.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st[0].Fetched || p.calls != 1 {
		t.Fatalf("second fetch was not a no-op: status %+v, packer calls %d", st, p.calls)
	}
	// A damaged file in the cache is noticed and fetched again.
	if err := os.WriteFile(filepath.Join(dir, "model", "w.bin"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	if st, err = c.Fetch(context.Background()); err != nil || !st[0].Fetched || p.calls != 2 {
		t.Fatalf("refetch after damage: %+v %v calls=%d", st, err, p.calls)
	}
}

func TestWrongTarballChecksum(t *testing.T) {
	c, _, pkg := fixture(t)
	pkg.TarballSHA256 = strings.Repeat("0", 64)
	_, err := c.Fetch(context.Background())
	if !errors.Is(err, modelcache.ErrChecksum) || !strings.Contains(err.Error(), "@test/pkg@1.0.0") {
		t.Fatalf("err = %v, want a checksum error naming the package", err)
	}
	if _, err := os.Stat(c.PackageDir(pkg)); !os.IsNotExist(err) {
		t.Fatal("a package that failed verification was installed")
	}
}

func TestWrongFileChecksum(t *testing.T) {
	c, _, pkg := fixture(t)
	pkg.Files[0].SHA256 = strings.Repeat("a", 64)
	_, err := c.Fetch(context.Background())
	if !errors.Is(err, modelcache.ErrChecksum) || !strings.Contains(err.Error(), "model/w.bin") {
		t.Fatalf("err = %v, want a checksum error naming the file", err)
	}
}

func TestCorruptedTarball(t *testing.T) {
	c, p, pkg := fixture(t)
	for name, bad := range map[string][]byte{
		"not gzip":  []byte("<html>proxy error</html>"),
		"truncated": p.tarball[:len(p.tarball)/2],
	} {
		p.tarball = bad
		pkg.TarballSHA256 = sum(bad) // the pin matches, so the unpacker itself must notice
		if _, err := c.Fetch(context.Background()); err == nil {
			t.Errorf("%s tarball: fetch succeeded", name)
		}
		if _, err := os.Stat(c.PackageDir(pkg)); !os.IsNotExist(err) {
			t.Errorf("%s tarball: package installed anyway", name)
		}
	}
}

func TestListedFileMissingFromTarball(t *testing.T) {
	c, _, pkg := fixture(t)
	pkg.Files = append(pkg.Files, models.File{Path: "model/absent.bin", SHA256: strings.Repeat("b", 64)})
	_, err := c.Fetch(context.Background())
	if err == nil || !strings.Contains(err.Error(), "model/absent.bin") {
		t.Fatalf("err = %v, want one naming the missing file", err)
	}
}

func TestMissingNPM(t *testing.T) {
	c, _, _ := fixture(t)
	c.Packer = modelcache.NPM{Command: "npm-not-installed-here"}
	_, err := c.Fetch(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not on PATH") || !strings.Contains(err.Error(), "install Node.js") {
		t.Fatalf("err = %v, want one saying how to install npm", err)
	}
}

func TestEmbeddedManifestPaths(t *testing.T) {
	c, err := modelcache.New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(c.LibraryPath(), filepath.Join("onnxruntime-node-1.30.0", "bin", "napi-v6", "linux", "x64", "libonnxruntime.so.1")) {
		t.Fatalf("library path %s", c.LibraryPath())
	}
	p, err := c.File("@vladmandic/face-api", "demo/sample1.jpg")
	if err != nil || !strings.HasSuffix(p, filepath.Join("vladmandic-face-api-1.7.15", "demo", "sample1.jpg")) {
		t.Fatalf("sample path %s %v", p, err)
	}
	if _, err := c.File("left-pad", "x"); err == nil {
		t.Fatal("unknown package accepted")
	}
}
