// Package convert turns every model of the manifest into an ONNX file in the
// model cache, choosing the converter the manifest names: the TensorFlow.js
// graph-model converter (tfjs) or the dlib/face-api weights converter (dlib).
package convert

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/facegate/facegate/models"
	"github.com/facegate/facegate/models/convert/dlib"
	"github.com/facegate/facegate/models/convert/tfjs"
	"github.com/facegate/facegate/pkg/atomicfile"
	"github.com/facegate/facegate/pkg/modelcache"
)

// Result describes one converted model.
type Result struct {
	ID       string  `json:"id"`
	Path     string  `json:"path"`
	Bytes    int     `json:"bytes"`
	SHA256   string  `json:"sha256"`
	Seconds  float64 `json:"seconds"`
	Producer string  `json:"converter"`
}

// Model converts one model from the fetched package files and returns the ONNX bytes.
func Model(ctx context.Context, c *modelcache.Cache, md *models.Model) ([]byte, error) {
	pkg, err := c.Manifest.Package(md.Package)
	if err != nil {
		return nil, err
	}
	dir := c.PackageDir(pkg)
	switch md.Converter {
	case "tfjs-graph":
		if len(md.Files) == 0 {
			return nil, fmt.Errorf("convert %s: no model.json listed", md.ID)
		}
		b, err := tfjs.ConvertFile(ctx, filepath.Join(dir, filepath.FromSlash(md.Files[0])), tfjs.Options{
			ModelID:      md.ID,
			InputHW:      md.Convert.InputHW,
			Scale:        md.Convert.Scale,
			Bias:         md.Convert.Bias,
			ExtraOutputs: md.Convert.ExtraOutputs,
		})
		if err != nil {
			return nil, fmt.Errorf("convert %s: %w", md.ID, err)
		}
		return b, nil
	case "dlib-faceapi":
		if len(md.Files) == 0 {
			return nil, fmt.Errorf("convert %s: no weights listed", md.ID)
		}
		b, err := dlib.ConvertDir(ctx, filepath.Join(dir, filepath.Dir(filepath.FromSlash(md.Files[0]))), dlib.Options{ModelID: md.ID})
		if err != nil {
			return nil, fmt.Errorf("convert %s: %w", md.ID, err)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("convert %s: unknown converter %q (want tfjs-graph or dlib-faceapi)", md.ID, md.Converter)
	}
}

// All converts every model of the manifest into the cache and then marks the
// cache ready. Conversion is deterministic and takes seconds, so it always
// runs: a changed converter can never leave a stale file behind.
func All(ctx context.Context, c *modelcache.Cache, progress func(Result)) ([]Result, error) {
	if err := os.MkdirAll(filepath.Join(c.Root, "onnx"), 0o755); err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	_ = os.Remove(filepath.Join(c.Root, modelcache.ReadyFile))
	var out []Result
	for i := range c.Manifest.Models {
		md := &c.Manifest.Models[i]
		start := time.Now()
		data, err := Model(ctx, c, md)
		if err != nil {
			return out, err
		}
		path := c.ONNXPath(md.ID)
		if err := atomicfile.Write(path, data, 0o644); err != nil {
			return out, fmt.Errorf("convert %s: %w", md.ID, err)
		}
		sum := sha256.Sum256(data)
		r := Result{ID: md.ID, Path: path, Bytes: len(data), SHA256: hex.EncodeToString(sum[:]), Seconds: time.Since(start).Seconds(), Producer: md.Converter}
		out = append(out, r)
		if progress != nil {
			progress(r)
		}
	}
	ready, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return out, err
	}
	if err := atomicfile.Write(filepath.Join(c.Root, modelcache.ReadyFile), ready, 0o644); err != nil {
		return out, fmt.Errorf("convert: mark cache ready: %w", err)
	}
	return out, nil
}
