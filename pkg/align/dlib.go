package align

import (
	"github.com/facegate/facegate/pkg/imaging"
)

// How dlib's face chip is defined, and where the landmarks land in it.
//
// dlib (dlib/image_transforms/interpolation.h, get_face_chip_details) maps
// a fixed template onto the detected landmarks with find_similarity_transform.
// With the 5-point shape predictor that dlib's face encoder example and
// face_recognition (model="small", its default) use, the template is
//
//	p0 (0.8595674595992, 0.2134981538014)  outer corner of the image-right eye (iBUG point 45)
//	p1 (0.6460604764104, 0.2289674387677)  inner corner of the image-right eye (42)
//	p2 (0.1205750620789, 0.2137274526848)  outer corner of the image-left eye  (36)
//	p3 (0.3340850613712, 0.2290642403242)  inner corner of the image-left eye  (39)
//	p4 (0.4901123135679, 0.6277975316475)  base of the nose (33)
//
// in unit face coordinates, placed in the chip at (padding + p)/(1 + 2
// padding) * size. The 68-point variant uses mean_face_shape_x/y (iBUG
// points 17..67, same units) instead; the 5-point constants are that mean
// shape's eye corners and nose base to within 0.003.
//
// BlazeFace and ArcFace use eye centres, the nose tip and the mouth, which
// the 5-point template lacks, so they are taken from dlib's mean face
// shape: eye centre = mean of the six eye contour points (36..41, 42..47),
// nose tip = point 30, mouth corners = points 48 and 54. The mean shape is
// first brought into the 5-point template's frame by the least-squares
// similarity between its points 45, 42, 36, 39, 33 and p0..p4 (scale
// 1.0039, rotation -0.014 degrees, largest residual 0.0007 face units =
// 0.07 chip pixels), then placed in the chip like the template. For size
// 150 and padding 0.25 this gives
//
//	left eye centre    (47.44, 46.34)
//	right eye centre   (100.57, 46.33)
//	nose tip           (74.01, 76.42)
//	left mouth corner  (50.33, 102.99)
//	right mouth corner (97.71, 102.98)
//	mouth centre       (74.02, 102.98)
//
// (TestDlibChipNumbers pins these.) Whether these are continuous
// coordinates or dlib's integer-centred ones needs dlib's extraction step:
// chip_details builds rect = centered_drect(T(size/2, size/2), size*s,
// size*s) (centered_drect subtracts one pixel from the width) and
// get_mapping_to_chip sends that rectangle's corners to chip pixels 0 and
// size-1. A template point q therefore lands at integer-centred chip
// coordinate (size-1)/2 + k*(q - size/2) with k = (size-1)*s/(size*s - 1),
// i.e. at continuous coordinate q exactly when the image-to-chip scale s
// is 1, and within k-1 = +0.7% (s = 1/2) to -0.3% (s = 2) otherwise. The
// values above are used as continuous coordinates unchanged. (dlib's
// pyramid_down before large reductions adds sub-pixel shifts of its own
// that are not modelled.)
//
// The mouth centre is the mean of the corners, the same definition as for
// the ArcFace template, so both templates agree on what "mouth" means; the
// midpoint of the inner lips (points 62, 66) lies 2.8 chip pixels lower.

// dlib5 is the 5-point template of get_face_chip_details.
func dlib5() [5]imaging.Point {
	return [5]imaging.Point{
		{X: 0.8595674595992, Y: 0.2134981538014},
		{X: 0.6460604764104, Y: 0.2289674387677},
		{X: 0.1205750620789, Y: 0.2137274526848},
		{X: 0.3340850613712, Y: 0.2290642403242},
		{X: 0.4901123135679, Y: 0.6277975316475},
	}
}

// dlibMeanShape returns the iBUG points used here from dlib's
// mean_face_shape_x/y (which list points 17..67).
func dlibMeanShape() map[int]imaging.Point {
	return map[int]imaging.Point{
		30: {X: 0.490127, Y: 0.515625},
		33: {X: 0.490127, Y: 0.628106},
		36: {X: 0.121737, Y: 0.216423}, 37: {X: 0.187122, Y: 0.178758}, 38: {X: 0.265825, Y: 0.179852},
		39: {X: 0.334606, Y: 0.231733}, 40: {X: 0.260918, Y: 0.245099}, 41: {X: 0.182743, Y: 0.244077},
		42: {X: 0.645647, Y: 0.231733}, 43: {X: 0.714428, Y: 0.179852}, 44: {X: 0.793132, Y: 0.178758},
		45: {X: 0.858516, Y: 0.216423}, 46: {X: 0.79751, Y: 0.244077}, 47: {X: 0.719335, Y: 0.245099},
		48: {X: 0.254149, Y: 0.780233}, 54: {X: 0.726104, Y: 0.780233},
	}
}

// meanShapeTo5Point is the least-squares similarity bringing dlib's mean
// face shape into the 5-point template's frame.
func meanShapeTo5Point() Similarity {
	m, t := dlibMeanShape(), dlib5()
	src := []imaging.Point{m[45], m[42], m[36], m[39], m[33]}
	s, err := EstimateSimilarity(src, t[:])
	if err != nil {
		panic("align: dlib constants are degenerate: " + err.Error()) // constants; cannot happen
	}
	return s
}

// DlibChipPoints5 returns, for a dlib face chip of the given size and
// padding, the image-left eye centre, image-right eye centre, nose tip,
// left and right mouth corners (continuous chip coordinates).
func DlibChipPoints5(size int, padding float64) [5]imaging.Point {
	m := dlibMeanShape()
	mean := func(ids ...int) imaging.Point {
		var p imaging.Point
		for _, i := range ids {
			p.X += m[i].X
			p.Y += m[i].Y
		}
		return imaging.Point{X: p.X / float64(len(ids)), Y: p.Y / float64(len(ids))}
	}
	unit := [5]imaging.Point{mean(36, 37, 38, 39, 40, 41), mean(42, 43, 44, 45, 46, 47), m[30], m[48], m[54]}
	s := meanShapeTo5Point()
	var out [5]imaging.Point
	for i, p := range unit {
		q := s.Apply(p)
		out[i] = imaging.Point{
			X: (padding + q.X) / (1 + 2*padding) * float64(size),
			Y: (padding + q.Y) / (1 + 2*padding) * float64(size),
		}
	}
	return out
}
