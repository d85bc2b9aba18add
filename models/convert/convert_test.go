package convert_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/facegate/facegate/models"
	"github.com/facegate/facegate/models/convert"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/testenv"
)

// cacheWithPackages returns a cache in a fresh folder that shares the real
// cache's fetched packages, so conversion output is isolated per test.
func cacheWithPackages(t *testing.T) *modelcache.Cache {
	t.Helper()
	real := testenv.Models(t)
	root := t.TempDir()
	if err := os.Symlink(filepath.Join(real, "packages"), filepath.Join(root, "packages")); err != nil {
		t.Fatal(err)
	}
	m, err := models.Load()
	if err != nil {
		t.Fatal(err)
	}
	return &modelcache.Cache{Root: root, Manifest: m, Log: zap.NewNop()}
}

func TestAllConvertsEveryModelDeterministically(t *testing.T) {
	c := cacheWithPackages(t)
	var seen []string
	first, err := convert.All(context.Background(), c, func(r convert.Result) { seen = append(seen, r.ID) })
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != len(c.Manifest.Models) || len(seen) != len(first) {
		t.Fatalf("converted %d models (progress %d), manifest has %d", len(first), len(seen), len(c.Manifest.Models))
	}
	var ready []convert.Result
	b, err := os.ReadFile(filepath.Join(c.Root, modelcache.ReadyFile))
	if err != nil {
		t.Fatalf("READY not written: %v", err)
	}
	if err := json.Unmarshal(b, &ready); err != nil || len(ready) != len(first) {
		t.Fatalf("READY = %s (%v)", b, err)
	}
	second, err := convert.All(context.Background(), c, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range first {
		if first[i].SHA256 != second[i].SHA256 {
			t.Errorf("%s: converting twice gave different bytes", first[i].ID)
		}
		if fi, err := os.Stat(c.ONNXPath(first[i].ID)); err != nil || fi.Size() != int64(first[i].Bytes) {
			t.Errorf("%s: file %v, size mismatch", first[i].ID, err)
		}
	}
}

func TestUnknownConverter(t *testing.T) {
	m, err := models.Load()
	if err != nil {
		t.Fatal(err)
	}
	c := &modelcache.Cache{Root: t.TempDir(), Manifest: m, Log: zap.NewNop()}
	md := m.Models[0]
	md.Converter = "caffe"
	if _, err := convert.Model(context.Background(), c, &md); err == nil || !strings.Contains(err.Error(), `unknown converter "caffe"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestMissingPackageFilesFailClearly(t *testing.T) {
	m, err := models.Load()
	if err != nil {
		t.Fatal(err)
	}
	c := &modelcache.Cache{Root: t.TempDir(), Manifest: m, Log: zap.NewNop()}
	for i := range m.Models {
		if _, err := convert.Model(context.Background(), c, &m.Models[i]); err == nil || !strings.Contains(err.Error(), m.Models[i].ID) {
			t.Errorf("%s with no fetched files: err = %v, want one naming the model", m.Models[i].ID, err)
		}
	}
	if _, err := os.Stat(filepath.Join(c.Root, modelcache.ReadyFile)); !os.IsNotExist(err) {
		t.Fatal("READY exists without a conversion")
	}
}
