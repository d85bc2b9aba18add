package imaging

import (
	"math"
	"testing"
)

func row(vals ...uint8) *RGB {
	m := NewRGB(len(vals), 1)
	for i, v := range vals {
		m.SetRGB(i, 0, v, v, v)
	}
	return m
}

// Values worked out by hand with half-pixel centres (what OpenCV's
// INTER_LINEAR gives for the same input).
func TestResizeHalfPixelCentres(t *testing.T) {
	for _, tc := range []struct {
		in   *RGB
		w    int
		want []uint8
	}{
		{row(0, 100), 4, []uint8{0, 25, 75, 100}},
		{row(0, 100, 200, 40), 2, []uint8{50, 120}},
		{row(7, 9, 11), 3, []uint8{7, 9, 11}},
	} {
		out, err := Resize(tc.in, tc.w, 1)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range tc.want {
			if r, _, _ := out.RGBAt(i, 0); r != v {
				t.Errorf("resize %v to %d: x=%d got %d want %d", tc.in.Pix, tc.w, i, r, v)
			}
		}
	}
	if _, err := Resize(&RGB{W: 2, H: 2, Pix: make([]uint8, 5)}, 1, 1); err == nil {
		t.Error("malformed raster accepted")
	}
	if _, err := Resize(row(1, 2), 0, 1); err == nil {
		t.Error("zero output size accepted")
	}
}

func TestLetterboxGeometry(t *testing.T) {
	src := NewRGB(200, 100)
	for i := range src.Pix {
		src.Pix[i] = 50
	}
	// a white 20x10 block at (100,50)-(120,60)
	for y := 50; y < 60; y++ {
		for x := 100; x < 120; x++ {
			src.SetRGB(x, y, 255, 255, 255)
		}
	}
	fill := Color{1, 2, 3}
	out, tr, err := Letterbox(src, 256, 256, LetterboxOptions{Fill: fill})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 256*256*3 {
		t.Fatalf("len %d", len(out))
	}
	// scale 1.28, picture 256x128 centred vertically: bars 64 rows each.
	if tr.ScaleX != 1.28 || tr.ScaleY != 1.28 || tr.OffsetX != 0 || tr.OffsetY != 64 {
		t.Fatalf("transform %+v", tr)
	}
	at := func(x, y int) [3]float32 {
		i := 3 * (y*256 + x)
		return [3]float32{out[i], out[i+1], out[i+2]}
	}
	for _, p := range [][2]int{{0, 0}, {255, 63}, {128, 192}, {0, 255}} {
		if v := at(p[0], p[1]); v != [3]float32{1, 2, 3} {
			t.Errorf("bar pixel %v = %v, want the fill", p, v)
		}
	}
	if v := at(128, 64); v[0] != 50 {
		t.Errorf("first picture row = %v, want 50", v)
	}
	// The block's centre (110,55) maps to (140.8, 134.4) and is white there.
	c := tr.Forward(Point{110, 55})
	if math.Abs(c.X-140.8) > 1e-9 || math.Abs(c.Y-134.4) > 1e-9 {
		t.Fatalf("forward %v", c)
	}
	if v := at(int(c.X), int(c.Y)); v[0] != 255 {
		t.Errorf("block centre in the tensor = %v, want 255", v)
	}
	back := tr.ToOriginal(c)
	if math.Abs(back.X-110) > 1e-9 || math.Abs(back.Y-55) > 1e-9 {
		t.Errorf("round trip %v", back)
	}
}

func TestLetterboxShrinkAndReuse(t *testing.T) {
	src := NewRGB(112, 112)
	for i := range src.Pix {
		src.Pix[i] = 200
	}
	buf := make([]float32, 0, 256*256*3)
	out, tr, err := Letterbox(src, 256, 256, LetterboxOptions{Shrink: 2, Dst: buf})
	if err != nil {
		t.Fatal(err)
	}
	if &out[0] != &buf[:1][0] {
		t.Error("Dst was not reused")
	}
	// picture 128x128 in the middle: 64-pixel bars.
	if tr.OffsetX != 64 || tr.OffsetY != 64 || math.Abs(tr.ScaleX-128.0/112) > 1e-12 {
		t.Fatalf("transform %+v", tr)
	}
	if out[3*(64*256+63)] != 0 || out[3*(64*256+64)] != 200 || out[3*(191*256+191)] != 200 || out[3*(192*256+191)] != 0 {
		t.Error("picture not where the transform says")
	}
	if _, _, err := Letterbox(src, 256, 256, LetterboxOptions{Shrink: 0.5}); err == nil {
		t.Error("shrink < 1 accepted")
	}
}
