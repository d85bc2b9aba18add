package align

import (
	"testing"

	"github.com/facegate/facegate/pkg/imaging"
)

func TestDlibAlignmentIgnoresTheMouth(t *testing.T) {
	img := imaging.NewRGB(200, 200)
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 7)
	}
	lm := Landmarks{LeftEye: imaging.Point{X: 70, Y: 80}, RightEye: imaging.Point{X: 130, Y: 82}, Nose: imaging.Point{X: 100, Y: 115}, Mouth: imaging.Point{X: 100, Y: 140}}
	_, m1, err := Align(img, lm, Dlib150(), Border{})
	if err != nil {
		t.Fatal(err)
	}
	lm.Mouth.Y += 12 // a mouth keypoint off by 12 px must not move the dlib chip
	_, m2, err := Align(img, lm, Dlib150(), Border{})
	if err != nil {
		t.Fatal(err)
	}
	if m1 != m2 {
		t.Fatalf("dlib alignment moved with the mouth: %+v vs %+v", m1, m2)
	}
	// The ArcFace template still fits all four points.
	_, a1, _ := Align(img, lm, ArcFace112(), Border{})
	lm.Mouth.Y -= 12
	_, a2, _ := Align(img, lm, ArcFace112(), Border{})
	if a1 == a2 {
		t.Fatal("ArcFace alignment ignored the mouth")
	}
}
