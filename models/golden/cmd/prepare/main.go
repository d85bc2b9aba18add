// Command prepare writes the golden inputs for golden.mjs: each case as raw
// little-endian float32 DIR/<model>/<name>.f32 plus DIR/index.json.
//
//	go run ./models/golden/cmd/prepare -out DIR
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/facegate/facegate/models/golden"
)

// Entry is one case in index.json.
type Entry struct {
	Model  string `json:"model"`
	Name   string `json:"name"`
	Source string `json:"source"`
	Shape  []int  `json:"shape"`
	SHA256 string `json:"sha256"`
	File   string `json:"file"` // relative to the index
}

// Index is index.json.
type Index struct {
	Cache string  `json:"cache"`
	Cases []Entry `json:"cases"`
}

func main() {
	out := flag.String("out", "", "folder to write the inputs to (required)")
	cache := flag.String("cache", "", "model cache (default $FACEGATE_CACHE or $HOME/.cache/facegate)")
	datasets := flag.String("datasets", "", "shared datasets (default $FACEGATE_DATASETS or ../shared/datasets beside the repository)")
	flag.Parse()
	if err := run(*out, *cache, *datasets); err != nil {
		fmt.Fprintln(os.Stderr, "prepare:", err)
		os.Exit(1)
	}
}

func run(out, cache, datasets string) error {
	if out == "" {
		return errors.New("-out is required")
	}
	if cache == "" {
		cache = os.Getenv("FACEGATE_CACHE")
	}
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return fmt.Errorf("no -cache given and no home folder: %w", err)
		}
		cache = filepath.Join(home, ".cache", "facegate")
	}
	if datasets == "" {
		datasets = os.Getenv("FACEGATE_DATASETS")
	}
	if datasets == "" {
		root, err := repoRoot()
		if err != nil {
			return err
		}
		datasets = filepath.Join(root, "..", "shared", "datasets")
	}
	cases, err := golden.CasesIn(datasets, cache)
	if err != nil {
		return err
	}
	cacheAbs, err := filepath.Abs(cache)
	if err != nil {
		return fmt.Errorf("cache path: %w", err)
	}
	idx := Index{Cache: cacheAbs}
	for _, c := range cases {
		rel := filepath.ToSlash(filepath.Join(c.Model, c.Name+".f32"))
		p := filepath.Join(out, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("case %s/%s: %w", c.Model, c.Name, err)
		}
		if err := os.WriteFile(p, c.Bytes(), 0o644); err != nil {
			return fmt.Errorf("case %s/%s: %w", c.Model, c.Name, err)
		}
		idx.Cases = append(idx.Cases, Entry{
			Model: c.Model, Name: c.Name, Source: c.Source,
			Shape: []int{1, c.H, c.W, 3}, SHA256: c.SHA256(), File: rel,
		})
	}
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "index.json"), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("index: %w", err)
	}
	fmt.Printf("prepare: %d cases written to %s\n", len(cases), out)
	return nil
}

// repoRoot walks up from the working directory to the folder holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory; pass -datasets")
		}
		dir = parent
	}
}
