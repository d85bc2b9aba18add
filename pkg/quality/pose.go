package quality

import (
	"math"

	"github.com/facegate/facegate/pkg/detect"
	"github.com/facegate/facegate/pkg/imaging"
)

// The pose model, fitted to BlazeFace's own keypoints rather than to
// anatomy. Lengths are in units of E, half the distance between the eye
// keypoints of a frontal face; the eyes lie in the plane z = 0.
//
// BlazeFace's "nose" keypoint is not the nose tip of the 5-point templates:
// on 6144 of the 7701 LFW crops (aligned so that the template's nose tip
// sits 1.143 E below the eyes) the detector puts it at a median 1.359 E
// below the eyes (quartiles 1.317-1.393) and its mouth keypoint at 2.249 E
// (quartiles 2.237-2.261; template mouth centre: 2.309), so it sits
// between the tip and the base of the nose. With the template's
// heights (the old model), every frontal face read 22 degrees of pitch
// "down", which shrank the nose's depth after pitching from 0.8 to 0.32
// and multiplied yaw by about 2.5: the gate refused 18 of the 22 faces of
// the face-api demo photos.
//
// The depths are calibrated on turned faces, not taken from anatomy: a
// turned face's eye distance shrinks by cos(yaw) while its eye-to-mouth
// height does not, which gives yaw independently of the nose. On the
// faces of the demo photos and the shared full-scene datasets whose nose
// offset is at least 0.8 E (n=9, yaw 29-46 degrees by this cue), the nose
// offset equals noseDepth*tan(yaw) for a median noseDepth of 1.39 E
// (quartiles 1.30-1.53); regressing the squared eye-to-mouth height on
// the squared nose offset over whole sets gives 1.1-1.9 depending on the
// set and the fit (least squares or Theil-Sen), noisier but consistent. The
// detector moves its nose point sideways about 1.75 times as far as a real
// nose tip (about 0.8 E in front of the eyes) would move: its keypoints
// follow the face's overall turn, not the nose. The mouth keypoint moves
// 0.55 times as far as the nose keypoint (slope on LFW, n=6139; 0.55-0.59
// elsewhere), hence mouthDepth.
//
// The ear (tragion) keypoints add no independent yaw cue: the eyes'
// midpoint between the two ear points is 0.674 times the nose offset, with
// a residual of +-0.005 E (10th-90th percentile) on LFW (n=6139; 0.74-0.78
// with residuals within +-0.05 on the full scenes), i.e. the detector
// derives all six points from one pose; averaging the two cues would only
// count the same measurement twice. Pose therefore ignores the ears.
//
// The detector is not mirror-symmetric: on LFW its nose point sits a
// median 0.083 E to the image's left of the eyes' midpoint, about 3.4
// degrees of yaw. Pose does not correct it (that would make a face and its
// mirror image read different sizes of yaw); detect.Options.MirrorAverage
// cancels it at the source.
//
// The model is orthographic: good enough to tell 10 degrees from 35, not to
// measure 3.
const (
	noseDepth   = 1.4
	mouthDepth  = 0.77
	eyeToNose   = 1.359
	noseToMouth = 0.890
)

// Pose estimates yaw, pitch and roll in degrees from BlazeFace keypoints.
//
// Convention: the head pitches about its own ear-to-ear axis (positive:
// looking down), then turns about the vertical (yaw, positive: nose towards
// the image's right), then the picture rolls in the image plane (positive:
// clockwise on screen), i.e. R = Rroll * Ryaw * Rpitch. Under it the eye
// line stays level for any yaw and pitch, and the estimates below are exact
// for keypoints of the model face:
//
//   - roll is the eye line's angle; the other points are then rotated by
//     -roll about the eyes' midpoint and measured in half-eye-distances;
//   - pitch: the eye-to-nose and nose-to-mouth heights become
//     a*cos(phi) + noseDepth*sin(phi) and b*cos(phi) + (mouthDepth -
//     noseDepth)*sin(phi) (yaw does not change heights), so their ratio R
//     gives tan(phi) = (a - R b) / (R (mouthDepth - noseDepth) - noseDepth);
//   - yaw: the nose point's depth in front of the eyes after pitching is
//     d = noseDepth*cos(phi) - a*sin(phi); turning by theta moves it
//     sideways by d*sin(theta) while the eyes' half distance shrinks to
//     cos(theta), so theta = atan(offset / d). d is floored at 0.2 (reached at
//     40 degrees down): looking further down, the nose point sinks to the
//     eyes' depth (at 46 degrees) and yaw cannot be read from it; pitch
//     still can, and fails any sensible MaxPitch first.
//
// Ratios are used throughout so the face's size cancels out.
func Pose(kp [detect.NumKeypoints]imaging.Point) (yaw, pitch, roll float64) {
	le, re := kp[detect.LeftEye], kp[detect.RightEye]
	dx, dy := re.X-le.X, re.Y-le.Y
	rollRad := math.Atan2(dy, dx)
	half := math.Hypot(dx, dy) / 2
	if half == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	mid := imaging.Point{X: (le.X + re.X) / 2, Y: (le.Y + re.Y) / 2}
	c, s := math.Cos(-rollRad), math.Sin(-rollRad)
	local := func(p imaging.Point) (float64, float64) {
		x, y := p.X-mid.X, p.Y-mid.Y
		return (c*x - s*y) / half, (s*x + c*y) / half
	}
	nx, ny := local(kp[detect.Nose])
	_, my := local(kp[detect.Mouth])
	eyeNose, noseMouth := ny, my-ny
	var phi float64
	if noseMouth <= 0 || eyeNose <= 0 {
		// the nose is not between the eyes and the mouth: beyond what the
		// model describes; report it as extreme in the right sense
		phi = math.Copysign(math.Pi/2, eyeNose-noseMouth)
	} else {
		ratio := eyeNose / noseMouth
		phi = math.Atan((eyeToNose - ratio*noseToMouth) / (ratio*(mouthDepth-noseDepth) - noseDepth))
	}
	depth := math.Max(noseDepth*math.Cos(phi)-eyeToNose*math.Sin(phi), 0.2)
	yaw = math.Atan(nx/depth) * 180 / math.Pi
	return yaw, phi * 180 / math.Pi, rollRad * 180 / math.Pi
}
