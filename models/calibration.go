package models

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/facegate/facegate/pkg/atomicfile"
)

// Calibration is a threshold chosen on labelled pairs, written by
// `facegate calibrate` into <cache>/calibration/<model>.json. A local
// calibration overrides the manifest's, so a site can calibrate on its own
// population and cameras.
type Calibration struct {
	Model     string    `json:"model"` // the embedding space (see Space)
	Threshold float64   `json:"threshold"`
	Method    string    `json:"method"`  // e.g. "max accuracy" or "FAR 1e-3"
	Dataset   string    `json:"dataset"` // what the pairs were
	Pairs     int       `json:"pairs"`
	Accuracy  float64   `json:"accuracy,omitempty"`
	TAR       float64   `json:"tar,omitempty"`
	FAR       float64   `json:"far,omitempty"`
	Created   time.Time `json:"created"`
}

// Space names an embedding space: a model's encodings, "+mirror" when each
// face is averaged with its mirror image (facegate's default). Thresholds
// and galleries belong to a space, not just to a model.
func Space(id string, mirrored bool) string {
	if mirrored {
		return id + "+mirror"
	}
	return id
}

// CalibrationPath is where a local calibration of an embedding space lives.
func CalibrationPath(cacheRoot, space string) string {
	return filepath.Join(cacheRoot, "calibration", space+".json")
}

// ThresholdFor returns the threshold in force for md's encodings: a local
// calibration in the cache if there is one, else the manifest's, which is
// calibrated for the default (mirrored) space.
func ThresholdFor(cacheRoot string, md *Model, mirrored bool) (float64, error) {
	space := Space(md.ID, mirrored)
	b, err := os.ReadFile(CalibrationPath(cacheRoot, space))
	switch {
	case err == nil:
		var c Calibration
		if err := json.Unmarshal(b, &c); err != nil {
			return 0, fmt.Errorf("models: calibration of %s is corrupt: %w", md.ID, err)
		}
		if c.Model != space || !(c.Threshold > 0 && c.Threshold < 2) {
			return 0, fmt.Errorf("models: calibration file for %s names %q with threshold %v", space, c.Model, c.Threshold)
		}
		return c.Threshold, nil
	case !errors.Is(err, os.ErrNotExist):
		return 0, fmt.Errorf("models: read calibration of %s: %w", md.ID, err)
	}
	if md.Threshold == nil || !mirrored {
		return 0, fmt.Errorf("models: %s has no calibrated threshold: run `facegate calibrate --model %s` or pass --threshold", space, md.ID)
	}
	return *md.Threshold, nil
}

// WriteCalibration stores c as the local calibration.
func WriteCalibration(cacheRoot string, c Calibration) error {
	p := CalibrationPath(cacheRoot, c.Model)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(p, b, 0o644)
}
