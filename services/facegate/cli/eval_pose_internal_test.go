package cli

import (
	"testing"

	"github.com/facegate/facegate/pkg/imaging"
)

// rotateImage turns counter-clockwise on screen: on a 5x5 picture a turn by
// 90 degrees takes the top-right pixel to the top-left, and 0 changes
// nothing.
func TestRotateImage(t *testing.T) {
	img := imaging.NewRGB(5, 5)
	for y := 0; y < 5; y++ {
		for x := 0; x < 5; x++ {
			img.SetRGB(x, y, uint8(10*x), uint8(10*y), 7)
		}
	}
	same := rotateImage(img, 0)
	for i := range img.Pix {
		if same.Pix[i] != img.Pix[i] {
			t.Fatalf("rotate 0 changed byte %d: %d -> %d", i, img.Pix[i], same.Pix[i])
		}
	}
	r := rotateImage(img, 90)
	for y := 0; y < 5; y++ {
		for x := 0; x < 5; x++ {
			// counter-clockwise by 90 on screen: destination (x, y) shows
			// source (4-y, x)
			wr, wg, _ := img.RGBAt(4-y, x)
			gr, gg, _ := r.RGBAt(x, y)
			if gr != wr || gg != wg {
				t.Fatalf("rotate 90 at (%d,%d): got (%d,%d), want (%d,%d)", x, y, gr, gg, wr, wg)
			}
		}
	}
}
