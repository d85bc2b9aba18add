package quality

import (
	"fmt"
	"math"

	"github.com/facegate/facegate/pkg/detect"
	"github.com/facegate/facegate/pkg/imaging"
)

// Thresholds for Check. A zero field disables that test.
type Thresholds struct {
	// MinInterOcular is the smallest accepted distance between the eye
	// centres, in original pixels.
	MinInterOcular float64
	// MinBoxSize is the smallest accepted min(box width, box height).
	MinBoxSize float64
	// MinSharpness is the smallest accepted Sharpness of the aligned chip.
	MinSharpness float64
	// MaxYaw, MaxPitch and MaxRoll bound the absolute pose angles, in degrees.
	MaxYaw, MaxPitch, MaxRoll float64
}

// DefaultThresholds are for the dlib 150x150 chip (the default encoder).
//
//   - MinInterOcular 32 px: the dlib chip places the eyes 53 px apart, the
//     ArcFace chip 35 px; below 32 px the embedder sees a chip upsampled
//     more than 1.6x, with no detail left to separate similar people.
//   - MinBoxSize 48 px: BlazeFace boxes are about 1.8 inter-ocular
//     distances wide for frontal faces, so this only catches boxes whose
//     keypoints are implausibly spread, not faces the IOD test passes.
//   - MinSharpness 0.24: measured on 771 dlib chips made from the LFW set
//     with ArcFaceToDlib150 (low-resolution web photos, already soft:
//     1st percentile 0.26, median 0.48), while the same chips blurred with a
//     Gaussian of sigma 2 px score 0.07..0.30 (99th percentile 0.23) and
//     with sigma 1 px have median 0.28 (TestSharpnessLFW re-measures this).
//     Sharper sources than LFW score higher, so live chips pass more easily.
//   - MaxYaw 20, MaxPitch 25, MaxRoll 30 degrees, where the errors of the
//     default encoder at its calibrated threshold start to rise on LFW
//     pairs run through the detector (`facegate eval pose`; the tables are
//     in the package documentation): false rejects rise eightfold from 15
//     degrees of yaw and false accepts from 20; pitch shows no rise up to
//     25, the end of what LFW holds; roll costs nothing while the detector
//     measures it (alignment undoes it), but BlazeFace under-reads strong
//     roll, and the unmeasured rest raises false rejects 1.7-fold at a
//     true 35 degrees and 5.5-fold at 50 (measured as about 20-25 and
//     30-35), so the limit stays at 30. On the 22 faces of the
//     face-api demo photos these limits pass 11 (the old model, which read
//     about twice the yaw, passed 4 at 35/30/30); the others are turned by
//     21-32 degrees, tilted by 33 and 47 degrees, or in profile.
func DefaultThresholds() Thresholds {
	return Thresholds{MinInterOcular: 32, MinBoxSize: 48, MinSharpness: 0.24, MaxYaw: 20, MaxPitch: 25, MaxRoll: 30}
}

// Scores are the measured values (NaN when not measurable).
type Scores struct {
	InterOcular float64 // px
	BoxSize     float64 // px, min(w, h)
	Sharpness   float64
	Yaw         float64 // degrees, positive: nose towards the image's right
	Pitch       float64 // degrees, positive: looking down
	Roll        float64 // degrees, positive: clockwise on screen
}

// Result of Check. Reasons lists every failed test, in a fixed order.
type Result struct {
	OK      bool
	Reasons []string
	Scores  Scores
}

// Check measures the face and its aligned chip against the thresholds.
// chip may be nil when only geometry is wanted; if MinSharpness is set, a
// nil chip is itself a reason.
func Check(f detect.Face, chip *imaging.RGB, th Thresholds) Result {
	var r Result
	kp := f.Keypoints
	finite := true
	for _, p := range kp {
		if !isFinite(p.X) || !isFinite(p.Y) {
			finite = false
		}
	}
	r.Scores.InterOcular = math.NaN()
	r.Scores.Yaw, r.Scores.Pitch, r.Scores.Roll = math.NaN(), math.NaN(), math.NaN()
	if finite {
		r.Scores.InterOcular = dist(kp[detect.LeftEye], kp[detect.RightEye])
		r.Scores.Yaw, r.Scores.Pitch, r.Scores.Roll = Pose(kp)
	} else {
		r.Reasons = append(r.Reasons, "invalid landmarks: non-finite keypoint")
	}
	r.Scores.BoxSize = math.Min(f.Box.W, f.Box.H)
	r.Scores.Sharpness = math.NaN()
	if chip != nil {
		if s, err := Sharpness(chip); err == nil {
			r.Scores.Sharpness = s
		} else if th.MinSharpness > 0 {
			r.Reasons = append(r.Reasons, fmt.Sprintf("cannot measure sharpness: %v", err))
		}
	} else if th.MinSharpness > 0 {
		r.Reasons = append(r.Reasons, "cannot measure sharpness: no aligned chip")
	}
	s := r.Scores
	if th.MinInterOcular > 0 && finite && !(s.InterOcular >= th.MinInterOcular) {
		r.Reasons = append(r.Reasons, fmt.Sprintf("face too small: inter-ocular %.1f px < %g", s.InterOcular, th.MinInterOcular))
	}
	if th.MinBoxSize > 0 && !(s.BoxSize >= th.MinBoxSize) {
		r.Reasons = append(r.Reasons, fmt.Sprintf("face too small: box %.1f px < %g", s.BoxSize, th.MinBoxSize))
	}
	if th.MinSharpness > 0 && !math.IsNaN(s.Sharpness) && s.Sharpness < th.MinSharpness {
		r.Reasons = append(r.Reasons, fmt.Sprintf("too blurry: sharpness %.3f < %g", s.Sharpness, th.MinSharpness))
	}
	if finite {
		if th.MaxYaw > 0 && !(math.Abs(s.Yaw) <= th.MaxYaw) {
			r.Reasons = append(r.Reasons, fmt.Sprintf("head turned: yaw %.0f deg > %g", math.Abs(s.Yaw), th.MaxYaw))
		}
		if th.MaxPitch > 0 && !(math.Abs(s.Pitch) <= th.MaxPitch) {
			r.Reasons = append(r.Reasons, fmt.Sprintf("head tilted up or down: pitch %.0f deg > %g", math.Abs(s.Pitch), th.MaxPitch))
		}
		if th.MaxRoll > 0 && !(math.Abs(s.Roll) <= th.MaxRoll) {
			r.Reasons = append(r.Reasons, fmt.Sprintf("head tilted sideways: roll %.0f deg > %g", math.Abs(s.Roll), th.MaxRoll))
		}
	}
	r.OK = len(r.Reasons) == 0
	return r
}

// CentralFraction is the part of the chip (per axis, centred) Sharpness
// looks at: in both the ArcFace and the dlib chip it holds the eyes, nose
// and mouth and excludes the background and any warp border.
const CentralFraction = 0.6

// Sharpness returns var(Laplacian) / mean(|gradient|^2) of the grey chip
// over its central region: the mean squared spatial frequency of the
// chip's edges, independent of contrast and exposure (0 for a flat region;
// about 5 for white noise, at most 8). Normalising by the gradient energy
// rather than by the grey variance keeps smooth shading and dark hair from
// dominating: on 771 LFW dlib chips, separating them from the same chips
// blurred with sigma 1 px scored AUC 0.953 this way against 0.863 with the
// grey variance (sigma 2 px: 0.9995 against 0.993).
func Sharpness(chip *imaging.RGB) (float64, error) {
	if err := chip.Valid(); err != nil {
		return 0, fmt.Errorf("quality: sharpness: %w", err)
	}
	m := int(math.Round(float64(chip.W) * (1 - CentralFraction) / 2))
	n := int(math.Round(float64(chip.H) * (1 - CentralFraction) / 2))
	x0, x1, y0, y1 := max(m, 1), min(chip.W-m, chip.W-1), max(n, 1), min(chip.H-n, chip.H-1)
	if x1-x0 < 3 || y1-y0 < 3 {
		return 0, fmt.Errorf("quality: sharpness: chip %dx%d is too small", chip.W, chip.H)
	}
	grey := func(x, y int) float64 {
		i := 3 * (y*chip.W + x)
		return 0.299*float64(chip.Pix[i]) + 0.587*float64(chip.Pix[i+1]) + 0.114*float64(chip.Pix[i+2])
	}
	var sl, sll, sgg float64
	cnt := float64((x1 - x0) * (y1 - y0))
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			g := grey(x, y)
			l := grey(x-1, y) + grey(x+1, y) + grey(x, y-1) + grey(x, y+1) - 4*g
			gx, gy := grey(x+1, y)-g, grey(x, y+1)-g
			sl += l
			sll += l * l
			sgg += gx*gx + gy*gy
		}
	}
	vl := sll/cnt - (sl/cnt)*(sl/cnt)
	eg := sgg / cnt
	if eg < 1e-6 {
		return 0, nil
	}
	return vl / eg, nil
}

func dist(a, b imaging.Point) float64 { return math.Hypot(a.X-b.X, a.Y-b.Y) }

func isFinite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
