package imaging

import (
	"fmt"
	"math"
)

// Point is a position in continuous pixel coordinates (see the package doc).
type Point struct{ X, Y float64 }

// Color is an RGB fill colour.
type Color [3]uint8

// Transform maps original-image coordinates to tensor coordinates:
// t = p*Scale + Offset, per axis. Letterbox returns one so detections made
// on the tensor can be mapped back to the original image.
type Transform struct {
	ScaleX, ScaleY   float64
	OffsetX, OffsetY float64
}

// Forward maps an original-image point into the tensor.
func (t Transform) Forward(p Point) Point {
	return Point{p.X*t.ScaleX + t.OffsetX, p.Y*t.ScaleY + t.OffsetY}
}

// ToOriginal maps a tensor point back to the original image.
func (t Transform) ToOriginal(p Point) Point {
	return Point{(p.X - t.OffsetX) / t.ScaleX, (p.Y - t.OffsetY) / t.ScaleY}
}

// axisTaps precomputes, for each output index, the two source indices and
// the weight of the second, with half-pixel centres and edge clamping.
func axisTaps(dst, src int, scale float64) (i0, i1 []int, f []float32) {
	i0, i1, f = make([]int, dst), make([]int, dst), make([]float32, dst)
	for d := 0; d < dst; d++ {
		s := (float64(d)+0.5)/scale - 0.5
		if s < 0 {
			s = 0
		}
		lo := int(math.Floor(s))
		if lo > src-1 {
			lo = src - 1
		}
		hi := lo + 1
		if hi > src-1 {
			hi = src - 1
		}
		i0[d], i1[d], f[d] = lo, hi, float32(s-float64(lo))
		if lo == hi {
			f[d] = 0
		}
	}
	return i0, i1, f
}

// Resize scales src to w x h with bilinear interpolation and half-pixel
// centres. It does not low-pass filter first, like TensorFlow's
// resize_bilinear that BlazeFace's reference pipeline uses, so large
// reductions alias; callers wanting a faithful thumbnail should reduce in
// steps of at most 2.
func Resize(src *RGB, w, h int) (*RGB, error) {
	if err := src.Valid(); err != nil {
		return nil, fmt.Errorf("imaging: resize: %w", err)
	}
	if w <= 0 || h <= 0 {
		return nil, fmt.Errorf("imaging: resize to %dx%d: size must be positive", w, h)
	}
	dst := NewRGB(w, h)
	x0, x1, fx := axisTaps(w, src.W, float64(w)/float64(src.W))
	y0, y1, fy := axisTaps(h, src.H, float64(h)/float64(src.H))
	for y := 0; y < h; y++ {
		ra, rb, wy := src.Pix[3*y0[y]*src.W:], src.Pix[3*y1[y]*src.W:], fy[y]
		o := 3 * y * w
		for x := 0; x < w; x++ {
			a, b, wx := 3*x0[x], 3*x1[x], fx[x]
			for c := 0; c < 3; c++ {
				top := float32(ra[a+c]) + wx*(float32(ra[b+c])-float32(ra[a+c]))
				bot := float32(rb[a+c]) + wx*(float32(rb[b+c])-float32(rb[a+c]))
				v := top + wy*(bot-top) + 0.5
				dst.Pix[o+c] = uint8(v) // v is in [0.5, 255.5]
			}
			o += 3
		}
	}
	return dst, nil
}

// LetterboxOptions tunes Letterbox.
type LetterboxOptions struct {
	// Fill colours the bars around the picture.
	Fill Color
	// Shrink >= 1 makes the picture occupy 1/Shrink of the space it would
	// fill, the rest being Fill. Detecting a face that fills a 112x112 ID
	// crop needs this: BlazeFace only finds faces up to about half its
	// input, so the crop is shown inside a wider border. 0 means 1.
	Shrink float64
	// Dst, if it has capacity for w*h*3 values, is reused (appending a
	// batch item to a batch buffer avoids a copy).
	Dst []float32
}

// Letterbox fits src inside a w x h canvas keeping its aspect ratio,
// centres it, fills the rest, and returns the canvas as float32 HWC RGB in
// 0..255 (the model contract: the graph normalises) together with the
// Transform from original-image coordinates to canvas coordinates.
//
// The picture's size on the canvas is rounded to whole pixels and the
// Transform uses that exact ratio per axis, so mapping detections back is
// exact, not off by the rounding.
func Letterbox(src *RGB, w, h int, opt LetterboxOptions) ([]float32, Transform, error) {
	if err := src.Valid(); err != nil {
		return nil, Transform{}, fmt.Errorf("imaging: letterbox: %w", err)
	}
	if w <= 0 || h <= 0 {
		return nil, Transform{}, fmt.Errorf("imaging: letterbox to %dx%d: size must be positive", w, h)
	}
	shrink := opt.Shrink
	if shrink == 0 {
		shrink = 1
	}
	if shrink < 1 || math.IsNaN(shrink) || math.IsInf(shrink, 0) {
		return nil, Transform{}, fmt.Errorf("imaging: letterbox: shrink %v must be >= 1", opt.Shrink)
	}
	s := math.Min(float64(w)/float64(src.W), float64(h)/float64(src.H)) / shrink
	nw := max(1, int(math.Round(float64(src.W)*s)))
	nh := max(1, int(math.Round(float64(src.H)*s)))
	ox, oy := (w-nw)/2, (h-nh)/2
	t := Transform{
		ScaleX: float64(nw) / float64(src.W), ScaleY: float64(nh) / float64(src.H),
		OffsetX: float64(ox), OffsetY: float64(oy),
	}
	n := w * h * 3
	out := opt.Dst
	if cap(out) >= n {
		out = out[:n]
	} else {
		out = make([]float32, n)
	}
	fr, fg, fb := float32(opt.Fill[0]), float32(opt.Fill[1]), float32(opt.Fill[2])
	for i := 0; i < n; i += 3 {
		out[i], out[i+1], out[i+2] = fr, fg, fb
	}
	x0, x1, fx := axisTaps(nw, src.W, t.ScaleX)
	y0, y1, fy := axisTaps(nh, src.H, t.ScaleY)
	for y := 0; y < nh; y++ {
		ra, rb, wy := src.Pix[3*y0[y]*src.W:], src.Pix[3*y1[y]*src.W:], fy[y]
		o := 3 * ((oy+y)*w + ox)
		for x := 0; x < nw; x++ {
			a, b, wx := 3*x0[x], 3*x1[x], fx[x]
			for c := 0; c < 3; c++ {
				top := float32(ra[a+c]) + wx*(float32(ra[b+c])-float32(ra[a+c]))
				bot := float32(rb[a+c]) + wx*(float32(rb[b+c])-float32(rb[a+c]))
				out[o+c] = top + wy*(bot-top)
			}
			o += 3
		}
	}
	return out, t, nil
}
