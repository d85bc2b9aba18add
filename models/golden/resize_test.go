package golden_test

import (
	"slices"
	"testing"

	"github.com/facegate/facegate/models/golden"
)

func gray(w, h int, v ...uint8) *golden.RGB {
	p := &golden.RGB{W: w, H: h}
	for _, x := range v {
		p.Pix = append(p.Pix, x, x, x)
	}
	return p
}

func channel0(v []float32) []float32 {
	var out []float32
	for i := 0; i < len(v); i += 3 {
		out = append(out, v[i])
	}
	return out
}

func TestResizeSameSizeIsIdentity(t *testing.T) {
	p := &golden.RGB{W: 3, H: 2, Pix: []uint8{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18}}
	got := p.Resize(2, 3)
	for i, x := range p.Pix {
		if got[i] != float32(x) {
			t.Fatalf("value %d: %v, want %v", i, got[i], x)
		}
	}
}

// Upsampling [0, 100] to 4 pixels samples source x = (d+0.5)/2-0.5 =
// -0.25, 0.25, 0.75, 1.25; the outer two clamp to the border pixels.
func TestResizeHalfPixelCentresAndClampedBorders(t *testing.T) {
	got := channel0(gray(2, 1, 0, 100).Resize(1, 4))
	if want := []float32{0, 25, 75, 100}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// Downsampling 4 -> 2 samples x = 0.5 and 2.5: the mean of each pair.
	got = channel0(gray(4, 1, 10, 20, 30, 50).Resize(1, 2))
	if want := []float32{15, 40}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestResizeKeepsChannelsApart(t *testing.T) {
	p := &golden.RGB{W: 2, H: 2, Pix: []uint8{255, 0, 10, 255, 0, 10, 255, 0, 10, 255, 0, 10}}
	got := p.Resize(3, 3)
	for i := 0; i < len(got); i += 3 {
		if got[i] != 255 || got[i+1] != 0 || got[i+2] != 10 {
			t.Fatalf("pixel %d = %v, want [255 0 10]", i/3, got[i:i+3])
		}
	}
}

func TestCenterSquare(t *testing.T) {
	wide := gray(4, 2, 1, 2, 3, 4, 5, 6, 7, 8).CenterSquare()
	if wide.W != 2 || wide.H != 2 || !slices.Equal(channel0(wide.Resize(2, 2)), []float32{2, 3, 6, 7}) {
		t.Fatalf("wide: %+v", wide)
	}
	tall := gray(1, 3, 1, 2, 3).CenterSquare()
	if tall.W != 1 || tall.H != 1 || tall.Pix[0] != 2 {
		t.Fatalf("tall: %+v", tall)
	}
}

func TestLoadRGBMissingFile(t *testing.T) {
	if _, err := golden.LoadRGB("testdata/no-such-image.jpg"); err == nil {
		t.Fatal("no error for a missing file")
	}
}
