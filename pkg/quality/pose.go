package quality

import (
	"math"

	"github.com/facegate/facegate/pkg/detect"
	"github.com/facegate/facegate/pkg/imaging"
)

// The pose model. Lengths are in units of E, half the distance between the
// eye centres of a frontal face. The eyes lie in the plane z = 0; the nose
// tip is noseDepth in front of it and the mouth mouthDepth. These are rough
// adult averages (OpenCV's head-pose sample model has the nose tip 0.8 E in
// front of the eye centres and the mouth about 0.3 E); the vertical
// distances are the ArcFace template's (eyes to nose tip 1.143 E, nose tip
// to mouth centre 1.166 E). The model is orthographic: good enough to tell
// 10 degrees from 40, not to measure 3.
const (
	noseDepth   = 0.8
	mouthDepth  = 0.3
	eyeToNose   = 1.143
	noseToMouth = 1.166
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
//   - yaw: the nose tip's depth in front of the eyes after pitching is
//     d = noseDepth*cos(phi) - a*sin(phi); turning by theta moves it
//     sideways by d*sin(theta) while the eyes' half distance shrinks to
//     cos(theta), so theta = atan(offset / d). d is floored at 0.2 (reached at
//     25.6 degrees down): looking further down, the nose tip sinks to the
//     eyes' depth (at 35 degrees) and yaw cannot be read from it; pitch
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
