package eval

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/facegate/facegate/pkg/detect"
	"github.com/facegate/facegate/pkg/imaging"
)

func TestRates(t *testing.T) {
	bona := []float32{0.2, 0.6, 0.7, 0.9}
	attack := []float32{0.1, 0.3, 0.6, 0.8}
	if got := BPCER(bona, 0.6); got != 0.25 {
		t.Errorf("BPCER at 0.6 = %v, want 0.25 (one of four below)", got)
	}
	if got := APCER(attack, 0.6); got != 0.5 {
		t.Errorf("APCER at 0.6 = %v, want 0.5 (a score equal to the threshold is accepted)", got)
	}
	if !math.IsNaN(BPCER(nil, 0.5)) || !math.IsNaN(APCER(nil, 0.5)) {
		t.Error("rates of empty sets must be NaN, not 0")
	}
	attacks := map[string][]float32{"a": attack, "b": {0.95, 0.05, 0.05, 0.05}}
	p, eer, err := EER(bona, attacks, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	// At 0.6: BPCER 0.25, worst APCER 0.5 (a); at 0.7 and 0.8: BPCER 0.5,
	// worst 0.25. No threshold closes the gap below 0.25; the first
	// (lowest) one is kept.
	if p.Threshold != float64(float32(0.6)) || eer != 0.375 || p.APCER["b"] != 0.25 {
		t.Errorf("EER point %+v, rate %v; want threshold 0.6, rate 0.375", p, eer)
	}
	if _, _, err := EER(bona, attacks, []string{"missing"}); err == nil {
		t.Error("EER over a missing species succeeded")
	}
	q := BPCERAtAPCER(bona, attacks, []string{"a"}, 0.25)
	// APCER of a falls to 0.25 first at 0.7, where BPCER is 0.5.
	if q.Threshold != float64(float32(0.7)) || q.BPCER != 0.5 || q.MaxAPCER != 0.25 {
		t.Errorf("BPCER at APCER <= 0.25: %+v", q)
	}
	if auc := AUC([]float32{0.9, 0.8}, []float32{0.1, 0.2}); auc != 1 {
		t.Errorf("separated AUC %v, want 1", auc)
	}
	if auc := AUC([]float32{0.1}, []float32{0.9}); auc != 0 {
		t.Errorf("inverted AUC %v, want 0", auc)
	}
	if auc := AUC([]float32{0.5}, []float32{0.5}); auc != 0.5 {
		t.Errorf("tied AUC %v, want 0.5", auc)
	}
}

func testCanvas() *imaging.RGB {
	img := imaging.NewRGB(canvasSize, canvasSize)
	for y := range img.H {
		for x := range img.W {
			// a gradient with fine texture (2 px checks), as skin and hair have
			t := uint8(((x/2 + y/2) % 2) * 60)
			img.SetRGB(x, y, uint8(x*195/img.W)+t, uint8(y*195/img.H)+t, 128)
		}
	}
	return img
}

// Every attack is deterministic for a seed, keeps the size, and changes
// the picture.
func TestAttacksDeterministicAndEffective(t *testing.T) {
	src := testCanvas()
	for _, a := range Attacks() {
		x := a.Apply(src, rand.New(rand.NewPCG(1, 2)))
		y := a.Apply(src, rand.New(rand.NewPCG(1, 2)))
		if x.W != src.W || x.H != src.H || x.Valid() != nil {
			t.Fatalf("%s: %dx%d", a.Name, x.W, x.H)
		}
		if string(x.Pix) != string(y.Pix) {
			t.Errorf("%s: not deterministic for a fixed seed", a.Name)
		}
		var diff float64
		for i := range x.Pix {
			diff += math.Abs(float64(x.Pix[i]) - float64(src.Pix[i]))
		}
		if mean := diff / float64(len(x.Pix)); mean < 2 {
			t.Errorf("%s: mean change %.2f grey levels: the attack does nothing", a.Name, mean)
		}
		if a.Species != "print" && a.Species != "replay" {
			t.Errorf("%s: species %q", a.Name, a.Species)
		}
	}
}

// The scene canvas puts the face box in its centre at a fixed size, for
// small and large faces alike.
func TestSceneCanvas(t *testing.T) {
	for _, side := range []float64{40, 600} {
		img := imaging.NewRGB(int(side*4), int(side*4))
		box := detect.Box{X: side, Y: side * 1.5, W: side, H: side}
		// mark the face box white
		for y := int(box.Y); y < int(box.Y+box.H); y++ {
			for x := int(box.X); x < int(box.X+box.W); x++ {
				img.SetRGB(x, y, 255, 255, 255)
			}
		}
		c, f, err := sceneCanvas(img, box)
		if err != nil {
			t.Fatal(err)
		}
		want := canvasSize / canvasScale
		if math.Abs(f.Box.W-want) > 1e-9 || math.Abs(f.Box.X+f.Box.W/2-canvasSize/2) > 1e-9 {
			t.Errorf("side %v: canvas box %+v, want %v wide and centred", side, f.Box, want)
		}
		if r, _, _ := c.RGBAt(canvasSize/2, canvasSize/2); r < 250 {
			t.Errorf("side %v: canvas centre %d, want the white face box", side, r)
		}
		if r, _, _ := c.RGBAt(5, canvasSize/2); r > 5 {
			t.Errorf("side %v: canvas edge %d, want outside the box", side, r)
		}
	}
}
