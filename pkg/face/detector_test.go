package face_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/testenv"
)

// detectorCount is one image's ground truth, counted by eye (see testdata/detector_counts.json).
type detectorCount struct {
	Visible   int          `json:"visible_faces"`
	Hard      int          `json:"hard_faces"`
	VisibleAt [][2]float64 `json:"visible_at"`
	HardAt    [][2]float64 `json:"hard_at"`
	Notes     string       `json:"notes"`
	CountedBy string       `json:"counted_by"`
}

// depictedFaces are the non-face images showing a face that is not a
// human's, with how many detections each may yield. A detector firing on a
// cat's face is doing what it was trained for (BlazeFace keys on two eyes
// above a nose); telling a cat from a person is not the detector's job but
// the quality gate's and the matcher's threshold's. The bound still catches
// a detector that sprays boxes over them.
var depictedFaces = map[string]struct {
	max    int
	reason string
}{
	"nonface/skimage_chelsea.png": {1, "a frontal cat face filling the image"},
	// The coins' heads are 20-40 px profiles (one facing): nothing a door
	// camera sees, and the default threshold finds none of them; a change
	// that starts finding them is a regression worth a look.
	"nonface/skimage_coins.png": {0, "profile heads on coins"},
}

func loadDetectorCounts(t *testing.T) map[string]detectorCount {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "detector_counts.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Images map[string]detectorCount `json:"images"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("testdata/detector_counts.json: %v", err)
	}
	if len(f.Images) == 0 {
		t.Fatal("testdata/detector_counts.json: no images")
	}
	return f.Images
}

// TestDetectorCounts runs the real pipeline with default options over every
// image of the shared detector set and compares the faces found with the
// counts made by looking at each image.
func TestDetectorCounts(t *testing.T) {
	counts := loadDetectorCounts(t)
	dir := testenv.Dataset(t, "detector")
	c, err := modelcache.New(testenv.Models(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := inference.Open(inference.Options{LibraryPath: c.LibraryPath()})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	ctx := context.Background()
	eng, err := face.Open(ctx, rt, c, face.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()

	// Every image of the set must have been counted, and every count must
	// name an image that exists: a new image without a count would otherwise
	// go untested.
	var files []string
	for _, sub := range []string{"group", "single", "nonface"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !e.IsDir() {
				files = append(files, sub+"/"+e.Name())
			}
		}
	}
	sort.Strings(files)
	onDisk := map[string]bool{}
	for _, f := range files {
		onDisk[f] = true
		if _, ok := counts[f]; !ok {
			t.Errorf("%s has no count in testdata/detector_counts.json: look at it and count its faces", f)
		}
	}
	for f := range counts {
		if !onDisk[f] {
			t.Errorf("testdata/detector_counts.json counts %s, which is not in %s", f, dir)
		}
	}
	for f := range depictedFaces {
		if !strings.HasPrefix(f, "nonface/") || !onDisk[f] {
			t.Errorf("depictedFaces names %s, not a non-face image of the set", f)
		}
	}

	var visibleTotal, visibleFound int
	for _, f := range files {
		want, ok := counts[f]
		if !ok {
			continue
		}
		t.Run(f, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			res, err := eng.Analyze(ctx, data)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if res.Dropped > 0 {
				t.Errorf("%s: %d faces dropped beyond MaxFaces; the set has at most 7 per image", f, res.Dropped)
			}
			var desc []string
			for _, fc := range res.Faces {
				desc = append(desc, fmt.Sprintf("%.2f@(%.0f,%.0f %.0fx%.0f)", fc.Score, fc.Box.X, fc.Box.Y, fc.Box.W, fc.Box.H))
			}
			found := len(res.Faces)
			t.Logf("%s %dx%d: expected %d (+%d hard), found %d: %s", f, res.Width, res.Height, want.Visible, want.Hard, found, strings.Join(desc, " "))

			if strings.HasPrefix(f, "nonface/") {
				limit, why := 0, "no face of any kind"
				if d, ok := depictedFaces[f]; ok {
					limit, why = d.max, d.reason
				}
				if found > limit {
					t.Errorf("%s (%s): %d faces found in a picture without a human face, at most %d allowed (%s): %s", f, want.Notes, found, limit, why, strings.Join(desc, " "))
				}
				return
			}
			if len(want.VisibleAt) != want.Visible || len(want.HardAt) != want.Hard {
				t.Fatalf("testdata/detector_counts.json: %s: %d visible_at for %d visible faces, %d hard_at for %d hard faces",
					f, len(want.VisibleAt), want.Visible, len(want.HardAt), want.Hard)
			}
			if found < want.Visible {
				t.Errorf("%s: found %d faces, but %d are clearly visible", f, found, want.Visible)
			}
			if found > want.Visible+want.Hard {
				t.Errorf("%s: found %d faces, more than the %d visible + %d hard ones in the picture", f, found, want.Visible, want.Hard)
			}
			// Which face is each detection? The nearest counted face whose
			// centre lies inside its box. Counts alone would let a found
			// hard face stand in for a missed visible one.
			centres := append(append([][2]float64{}, want.VisibleAt...), want.HardAt...)
			hits := make([]int, len(centres))
			for _, fc := range res.Faces {
				best, bd := -1, math.Inf(1)
				for i, c := range centres {
					if c[0] < fc.Box.X || c[0] > fc.Box.X+fc.Box.W || c[1] < fc.Box.Y || c[1] > fc.Box.Y+fc.Box.H {
						continue
					}
					if d := math.Hypot(c[0]-(fc.Box.X+fc.Box.W/2), c[1]-(fc.Box.Y+fc.Box.H/2)); d < bd {
						best, bd = i, d
					}
				}
				if best < 0 {
					t.Errorf("%s: phantom face %.2f@(%.0f,%.0f %.0fx%.0f): its box holds none of the counted faces", f, fc.Score, fc.Box.X, fc.Box.Y, fc.Box.W, fc.Box.H)
					continue
				}
				hits[best]++
			}
			for i, c := range centres {
				kind := "visible"
				if i >= want.Visible {
					kind = "hard"
				}
				switch {
				case hits[i] > 1:
					t.Errorf("%s: the %s face at (%.0f,%.0f) was found %d times", f, kind, c[0], c[1], hits[i])
				case hits[i] == 0 && i < want.Visible:
					t.Errorf("%s: missed the clearly visible face at (%.0f,%.0f) (%s); found: %s", f, c[0], c[1], want.Notes, strings.Join(desc, " "))
				}
				if i < want.Visible {
					visibleTotal++
					if hits[i] > 0 {
						visibleFound++
					}
				}
			}
		})
	}
	t.Logf("clearly visible faces found: %d of %d", visibleFound, visibleTotal)
}
