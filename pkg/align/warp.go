package align

import (
	"fmt"
	"math"

	"github.com/facegate/facegate/pkg/imaging"
)

// BorderMode says what the warp reads outside the source image.
type BorderMode int

const (
	// BorderConstant reads Border.Value (black by default; see the package doc).
	BorderConstant BorderMode = iota
	// BorderReplicate repeats the nearest edge pixel.
	BorderReplicate
)

// Border configures the warp outside the source image.
type Border struct {
	Mode  BorderMode
	Value imaging.Color
}

// maxChipPixels bounds a warp's output; chips are small, and a caller
// passing a frame-sized chip by mistake should get an error, not 1 GB.
const maxChipPixels = 4096 * 4096

// Warp returns the w x h image whose pixel centres q take the bilinear
// sample of src at m^-1(q): m maps source coordinates to chip coordinates.
// Taps outside src read the border, as cv2.warpAffine does.
func Warp(src *imaging.RGB, m Similarity, w, h int, border Border) (*imaging.RGB, error) {
	if err := src.Valid(); err != nil {
		return nil, fmt.Errorf("align: warp: %w", err)
	}
	if w <= 0 || h <= 0 || w*h > maxChipPixels {
		return nil, fmt.Errorf("align: warp to %dx%d: size must be positive and at most %d pixels", w, h, maxChipPixels)
	}
	if border.Mode != BorderConstant && border.Mode != BorderReplicate {
		return nil, fmt.Errorf("align: unknown border mode %d", border.Mode)
	}
	inv, err := m.Inverse()
	if err != nil {
		return nil, err
	}
	dst := imaging.NewRGB(w, h)
	bv := [3]float64{float64(border.Value[0]), float64(border.Value[1]), float64(border.Value[2])}
	tap := func(x, y int) (r, g, b float64) {
		if x < 0 || y < 0 || x >= src.W || y >= src.H {
			if border.Mode == BorderConstant {
				return bv[0], bv[1], bv[2]
			}
			x, y = min(max(x, 0), src.W-1), min(max(y, 0), src.H-1)
		}
		i := 3 * (y*src.W + x)
		return float64(src.Pix[i]), float64(src.Pix[i+1]), float64(src.Pix[i+2])
	}
	for v := 0; v < h; v++ {
		for u := 0; u < w; u++ {
			p := inv.Apply(imaging.Point{X: float64(u) + 0.5, Y: float64(v) + 0.5})
			// index coordinates: pixel i's centre is at i
			sx, sy := p.X-0.5, p.Y-0.5
			o := 3 * (v*w + u)
			if math.IsNaN(sx) || math.IsNaN(sy) || sx < -2 || sy < -2 || sx > float64(src.W)+1 || sy > float64(src.H)+1 {
				if border.Mode == BorderConstant {
					dst.Pix[o], dst.Pix[o+1], dst.Pix[o+2] = border.Value[0], border.Value[1], border.Value[2]
					continue
				}
				sx, sy = math.Min(math.Max(sx, -1), float64(src.W)), math.Min(math.Max(sy, -1), float64(src.H))
			}
			x0, y0 := int(math.Floor(sx)), int(math.Floor(sy))
			fx, fy := sx-float64(x0), sy-float64(y0)
			r00, g00, b00 := tap(x0, y0)
			r10, g10, b10 := tap(x0+1, y0)
			r01, g01, b01 := tap(x0, y0+1)
			r11, g11, b11 := tap(x0+1, y0+1)
			lerp := func(c00, c10, c01, c11 float64) uint8 {
				top := c00 + fx*(c10-c00)
				bot := c01 + fx*(c11-c01)
				return uint8(math.Min(math.Max(top+fy*(bot-top)+0.5, 0), 255))
			}
			dst.Pix[o] = lerp(r00, r10, r01, r11)
			dst.Pix[o+1] = lerp(g00, g10, g01, g11)
			dst.Pix[o+2] = lerp(b00, b10, b01, b11)
		}
	}
	return dst, nil
}
