package quality

import (
	"math"

	"github.com/facegate/facegate/pkg/imaging"
)

// gaussBlur is a separable Gaussian blur with edge clamping, for tests.
func gaussBlur(src *imaging.RGB, sigma float64) *imaging.RGB {
	r := int(math.Ceil(3 * sigma))
	k := make([]float64, 2*r+1)
	var sum float64
	for i := range k {
		d := float64(i - r)
		k[i] = math.Exp(-d * d / (2 * sigma * sigma))
		sum += k[i]
	}
	for i := range k {
		k[i] /= sum
	}
	pass := func(in *imaging.RGB, dx, dy int) *imaging.RGB {
		out := imaging.NewRGB(in.W, in.H)
		for y := 0; y < in.H; y++ {
			for x := 0; x < in.W; x++ {
				var acc [3]float64
				for i, w := range k {
					xx := min(max(x+dx*(i-r), 0), in.W-1)
					yy := min(max(y+dy*(i-r), 0), in.H-1)
					p := in.Pix[3*(yy*in.W+xx):]
					acc[0] += w * float64(p[0])
					acc[1] += w * float64(p[1])
					acc[2] += w * float64(p[2])
				}
				o := 3 * (y*in.W + x)
				for c := 0; c < 3; c++ {
					out.Pix[o+c] = uint8(math.Min(255, acc[c]+0.5))
				}
			}
		}
		return out
	}
	return pass(pass(src, 1, 0), 0, 1)
}
