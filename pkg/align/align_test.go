package align

import (
	"errors"
	"math"
	"math/rand"
	"path/filepath"
	"testing"

	"github.com/facegate/facegate/pkg/detect"
	"github.com/facegate/facegate/pkg/imaging"
	"github.com/facegate/facegate/pkg/testenv"
)

func pt(x, y float64) imaging.Point { return imaging.Point{X: x, Y: y} }

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func simFrom(scale, deg, tx, ty float64) Similarity {
	r := deg * math.Pi / 180
	return Similarity{A: scale * math.Cos(r), B: scale * math.Sin(r), Tx: tx, Ty: ty}
}

func TestEstimateRecoversKnownSimilarity(t *testing.T) {
	want := simFrom(1.7, 30, 12.5, -40)
	src := []imaging.Point{pt(10, 20), pt(50, 22), pt(31, 45), pt(30, 70), pt(-5, 3)}
	dst := make([]imaging.Point, len(src))
	for i, p := range src {
		dst[i] = want.Apply(p)
	}
	for n := 2; n <= len(src); n++ {
		got, err := EstimateSimilarity(src[:n], dst[:n])
		if err != nil {
			t.Fatal(err)
		}
		if !near(got.A, want.A, 1e-9) || !near(got.B, want.B, 1e-9) || !near(got.Tx, want.Tx, 1e-9) || !near(got.Ty, want.Ty, 1e-9) {
			t.Errorf("%d points: got %+v want %+v", n, got, want)
		}
	}
	if !near(want.Scale(), 1.7, 1e-12) || !near(want.Rotation(), math.Pi/6, 1e-12) {
		t.Errorf("scale %v rotation %v", want.Scale(), want.Rotation())
	}
}

func cost(s Similarity, src, dst []imaging.Point) float64 {
	var c float64
	for i := range src {
		q := s.Apply(src[i])
		c += (q.X-dst[i].X)*(q.X-dst[i].X) + (q.Y-dst[i].Y)*(q.Y-dst[i].Y)
	}
	return c
}

// With noisy points there is no exact fit; the estimate must be the least
// squares optimum: nudging any parameter makes the cost worse.
func TestEstimateIsLeastSquaresOptimum(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	truth := simFrom(0.8, -12, 3, 9)
	src := make([]imaging.Point, 6)
	dst := make([]imaging.Point, 6)
	for i := range src {
		src[i] = pt(rng.Float64()*100, rng.Float64()*100)
		q := truth.Apply(src[i])
		dst[i] = pt(q.X+rng.NormFloat64()*2, q.Y+rng.NormFloat64()*2)
	}
	s, err := EstimateSimilarity(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	c0 := cost(s, src, dst)
	if c0 <= 0 {
		t.Fatal("noisy points fitted exactly: the test is not testing anything")
	}
	for i := 0; i < 4; i++ {
		for _, d := range []float64{-1e-3, 1e-3} {
			p := s
			switch i {
			case 0:
				p.A += d
			case 1:
				p.B += d
			case 2:
				p.Tx += d
			case 3:
				p.Ty += d
			}
			if c := cost(p, src, dst); c <= c0 {
				t.Errorf("perturbing parameter %d by %v lowers the cost %v -> %v", i, d, c0, c)
			}
		}
	}
}

// A mirrored configuration cannot be reached without reflection.
func TestEstimateHasNoReflection(t *testing.T) {
	src := []imaging.Point{pt(0, 0), pt(10, 0), pt(0, 5)}
	dst := []imaging.Point{pt(0, 0), pt(-10, 0), pt(0, 5)}
	s, err := EstimateSimilarity(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if cost(s, src, dst) < 1 {
		t.Fatalf("mirror image fitted: %+v", s)
	}
}

func TestEstimateErrors(t *testing.T) {
	if _, err := EstimateSimilarity([]imaging.Point{pt(1, 1)}, []imaging.Point{pt(2, 2)}); !errors.Is(err, ErrDegenerate) {
		t.Errorf("one point: %v", err)
	}
	if _, err := EstimateSimilarity([]imaging.Point{pt(1, 1), pt(1, 1)}, []imaging.Point{pt(2, 2), pt(3, 3)}); !errors.Is(err, ErrDegenerate) {
		t.Errorf("coincident points: %v", err)
	}
	if _, err := EstimateSimilarity([]imaging.Point{pt(math.NaN(), 1), pt(1, 1)}, []imaging.Point{pt(2, 2), pt(3, 3)}); !errors.Is(err, ErrDegenerate) {
		t.Errorf("NaN point: %v", err)
	}
	if _, err := EstimateSimilarity([]imaging.Point{pt(0, 0), pt(1, 1)}, []imaging.Point{pt(2, 2)}); err == nil {
		t.Error("length mismatch accepted")
	}
}

func TestInverseAndThen(t *testing.T) {
	s := simFrom(2.5, 77, -3, 8)
	inv, err := s.Inverse()
	if err != nil {
		t.Fatal(err)
	}
	u := simFrom(0.5, -20, 1, 2)
	for _, p := range []imaging.Point{pt(0, 0), pt(13, -7), pt(100, 50)} {
		q := inv.Apply(s.Apply(p))
		if !near(q.X, p.X, 1e-9) || !near(q.Y, p.Y, 1e-9) {
			t.Errorf("inverse round trip %v -> %v", p, q)
		}
		a, b := s.Then(u).Apply(p), u.Apply(s.Apply(p))
		if !near(a.X, b.X, 1e-9) || !near(a.Y, b.Y, 1e-9) {
			t.Errorf("Then: %v vs %v", a, b)
		}
	}
	if _, err := (Similarity{}).Inverse(); err == nil {
		t.Error("zero transform inverted")
	}
}

// gradient fills an image with I(x,y) = 2x + 3y + 10 at pixel centres
// (continuous coordinates), which bilinear interpolation reproduces
// exactly, so any warp's output is known in closed form.
func gradient(w, h int) *imaging.RGB {
	m := imaging.NewRGB(w, h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := uint8(2*(float64(x)+0.5) + 3*(float64(y)+0.5) + 10 - 2.5) // integer-valued: 2x+3y+10
			m.SetRGB(x, y, v, 255-v, 7)
		}
	}
	return m
}

func TestWarpGradientExact(t *testing.T) {
	src := gradient(40, 40)
	m := simFrom(1.3, 25, 5, -10) // source -> chip
	inv, _ := m.Inverse()
	chip, err := Warp(src, m, 50, 50, Border{Value: imaging.Color{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	inside, outside := 0, 0
	for v := 0; v < 50; v++ {
		for u := 0; u < 50; u++ {
			p := inv.Apply(pt(float64(u)+0.5, float64(v)+0.5))
			r, g, b := chip.RGBAt(u, v)
			switch {
			case p.X >= 0.5 && p.Y >= 0.5 && p.X <= 39.5 && p.Y <= 39.5: // all four taps inside
				want := 2*(p.X-0.5) + 3*(p.Y-0.5) + 10
				if math.Abs(float64(r)-want) > 0.5+1e-9 || int(r)+int(g) != 255 || b != 7 {
					t.Fatalf("chip (%d,%d) <- src %v: got %d,%d,%d want R=%.2f", u, v, p, r, g, b, want)
				}
				inside++
			case p.X < -1 || p.Y < -1 || p.X > 41 || p.Y > 41: // every tap outside
				if r != 1 || g != 2 || b != 3 {
					t.Fatalf("chip (%d,%d) outside the source: %d,%d,%d, want the border", u, v, r, g, b)
				}
				outside++
			}
		}
	}
	if inside < 500 || outside < 100 {
		t.Fatalf("test geometry covers %d inside / %d outside pixels", inside, outside)
	}
}

func TestWarpIdentityAndReplicate(t *testing.T) {
	src := gradient(9, 7)
	out, err := Warp(src, Identity(), 9, 7, Border{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range src.Pix {
		if out.Pix[i] != src.Pix[i] {
			t.Fatalf("identity warp changed byte %d", i)
		}
	}
	// Upscaling [0,100] by 2 with a replicated border gives OpenCV's
	// INTER_LINEAR resize values, like imaging.Resize.
	two := imaging.NewRGB(2, 1)
	two.SetRGB(1, 0, 100, 100, 100)
	up, err := Warp(two, Similarity{A: 2}, 4, 1, Border{Mode: BorderReplicate})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []uint8{0, 25, 75, 100} {
		if r, _, _ := up.RGBAt(i, 0); r != want {
			t.Errorf("x=%d: %d want %d", i, r, want)
		}
	}
	// Far outside with replicate: the nearest edge.
	far, err := Warp(two, Similarity{A: 1, Tx: -50}, 3, 1, Border{Mode: BorderReplicate})
	if err != nil {
		t.Fatal(err)
	}
	if r, _, _ := far.RGBAt(0, 0); r != 100 {
		t.Errorf("replicate far right: %d", r)
	}
	if _, err := Warp(two, Similarity{}, 3, 3, Border{}); err == nil {
		t.Error("singular transform accepted")
	}
	if _, err := Warp(two, Identity(), 0, 3, Border{}); err == nil {
		t.Error("zero size accepted")
	}
}

// dot draws a soft green blob (Gaussian, sigma = radius/2) at p on a grey
// background; smooth, so resampling does not alias its centroid.
func dot(w, h int, p imaging.Point, radius float64) *imaging.RGB {
	m := imaging.NewRGB(w, h)
	sigma := radius / 2
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			d := math.Hypot(float64(x)+0.5-p.X, float64(y)+0.5-p.Y)
			g := 60 + 195*math.Exp(-d*d/(2*sigma*sigma))
			m.SetRGB(x, y, 60, uint8(g+0.5), 60)
		}
	}
	return m
}

// centroid of the green excess (the interpolated rim counts in proportion).
func centroid(t *testing.T, m *imaging.RGB) imaging.Point {
	t.Helper()
	var sx, sy, sw float64
	for y := 0; y < m.H; y++ {
		for x := 0; x < m.W; x++ {
			_, g, _ := m.RGBAt(x, y)
			w := float64(g) - 60
			if w <= 0 {
				continue
			}
			sx += w * (float64(x) + 0.5)
			sy += w * (float64(y) + 0.5)
			sw += w
		}
	}
	if sw == 0 {
		t.Fatal("dot not found")
	}
	return pt(sx/sw, sy/sw)
}

// A face in a 400x300 frame, rotated by 20 degrees and scaled by 2.3:
// after Align the landmarks sit on the template positions.
func TestAlignPutsLandmarksOnTemplate(t *testing.T) {
	for _, tmpl := range []Template{ArcFace112(), Dlib150()} {
		place := simFrom(2.3, 20, 150, 40) // template -> frame
		tl := tmpl.Landmarks.points()
		frame := make([]imaging.Point, len(tl))
		for i, p := range tl {
			frame[i] = place.Apply(p)
		}
		lm := Landmarks{frame[0], frame[1], frame[2], frame[3]}
		for k, want := range tl {
			// one image per landmark, so dots cannot be confused
			img := dot(500, 500, frame[k], 7) // large enough not to alias at 1/2.3
			chip, m, err := Align(img, lm, tmpl, Border{})
			if err != nil {
				t.Fatal(err)
			}
			if chip.W != tmpl.W || chip.H != tmpl.H {
				t.Fatalf("%s: chip %dx%d", tmpl.Name, chip.W, chip.H)
			}
			if !near(m.Scale(), 1/2.3, 1e-9) || !near(m.Rotation(), -20*math.Pi/180, 1e-9) {
				t.Errorf("%s: transform scale %v rotation %v", tmpl.Name, m.Scale(), m.Rotation())
			}
			// The rasterised disc's own centroid is what the warp must carry
			// over exactly; the template position itself is met up to the
			// rasterisation error of a disc.
			c := centroid(t, chip)
			if w := m.Apply(centroid(t, img)); !near(c.X, w.X, 0.1) || !near(c.Y, w.Y, 0.1) {
				t.Errorf("%s: landmark %d at %v in the chip, the transform puts it at %v", tmpl.Name, k, c, w)
			}
			if !near(c.X, want.X, 0.2) || !near(c.Y, want.Y, 0.2) {
				t.Errorf("%s: landmark %d at %v in the chip, template says %v", tmpl.Name, k, c, want)
			}
		}
	}
}

// Round trip: warping the chip back with the inverse transform restores
// the face region of the frame up to interpolation error.
func TestAlignRoundTrip(t *testing.T) {
	frame := imaging.NewRGB(300, 300)
	for y := 0; y < 300; y++ {
		for x := 0; x < 300; x++ {
			v := 128 + 100*math.Sin(float64(x)/9)*math.Cos(float64(y)/13)
			frame.SetRGB(x, y, uint8(v), uint8(255-v), uint8(x%256))
		}
	}
	tmpl := ArcFace112()
	place := simFrom(1.5, -15, 90, 80)
	var lm [4]imaging.Point
	for i, p := range tmpl.Landmarks.points() {
		lm[i] = place.Apply(p)
	}
	chip, m, err := Align(frame, Landmarks{lm[0], lm[1], lm[2], lm[3]}, tmpl, Border{})
	if err != nil {
		t.Fatal(err)
	}
	inv, _ := m.Inverse()
	back, err := Warp(chip, inv, 300, 300, Border{})
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	n := 0
	for y := 0; y < 300; y++ {
		for x := 0; x < 300; x++ {
			c := m.Apply(pt(float64(x)+0.5, float64(y)+0.5))
			if c.X < 3 || c.Y < 3 || c.X > 109 || c.Y > 109 { // keep away from the chip border
				continue
			}
			a, _, _ := frame.RGBAt(x, y)
			b, _, _ := back.RGBAt(x, y)
			sum += math.Abs(float64(a) - float64(b))
			n++
		}
	}
	if n < 10000 {
		t.Fatalf("only %d pixels compared", n)
	}
	if mean := sum / float64(n); mean > 3 {
		t.Errorf("round trip mean abs error %.2f", mean)
	} else {
		t.Logf("round trip over %d pixels: mean abs error %.2f", n, mean)
	}
}

// TestDlibChipNumbers pins the derived dlib chip positions documented in dlib.go.
func TestDlibChipNumbers(t *testing.T) {
	s := meanShapeTo5Point()
	if !near(s.Scale(), 1.0039, 5e-5) || !near(s.Rotation()*180/math.Pi, -0.014, 5e-4) {
		t.Errorf("mean shape -> 5-point frame: scale %v rotation %v deg", s.Scale(), s.Rotation()*180/math.Pi)
	}
	want := [5]imaging.Point{pt(47.44, 46.34), pt(100.57, 46.33), pt(74.01, 76.42), pt(50.33, 102.99), pt(97.71, 102.98)}
	got := DlibChipPoints5(150, 0.25)
	for i := range want {
		if !near(got[i].X, want[i].X, 0.005) || !near(got[i].Y, want[i].Y, 0.005) {
			t.Errorf("point %d: %v, documented %v", i, got[i], want[i])
		}
	}
	// With no padding and size 1 the chip is the unit face: the eye corners
	// of the 5-point template fall where dlib puts them.
	unit := DlibChipPoints5(1, 0)
	d := dlib5()
	for _, c := range [][2]int{{0, 2}, {1, 0}} { // eye centre lies between the template's corners
		lo, hi := math.Min(d[c[1]].X, d[c[1]+1].X), math.Max(d[c[1]].X, d[c[1]+1].X)
		if unit[c[0]].X < lo || unit[c[0]].X > hi {
			t.Errorf("eye %d centre x %v outside its corners [%v,%v]", c[0], unit[c[0]].X, lo, hi)
		}
	}
	if m := Dlib150().Landmarks.Mouth; !near(m.X, 74.02, 0.005) || !near(m.Y, 102.98, 0.005) {
		t.Errorf("mouth centre %v", m)
	}
	if a := ArcFace112().Landmarks; a.LeftEye != pt(38.7946, 52.1963) || !near(a.Mouth.X, 56.6396, 1e-9) {
		t.Errorf("ArcFace landmarks %+v", a)
	}
}

func TestArcFaceToDlib150Synthetic(t *testing.T) {
	a5 := ArcFace112Points5()
	m, _ := ArcFaceToDlib150Transform()
	d5 := DlibChipPoints5(150, 0.25)
	var chip *imaging.RGB
	for k := range a5 {
		var err error
		src := dot(112, 112, a5[k], 3)
		if chip, err = ArcFaceToDlib150(src, Border{}); err != nil {
			t.Fatal(err)
		}
		c := centroid(t, chip)
		if w := m.Apply(centroid(t, src)); !near(c.X, w.X, 0.1) || !near(c.Y, w.Y, 0.1) {
			t.Errorf("point %d at %v, transform says %v", k, c, w)
		}
		// Eyes and nose are what the transform fits; the mouth corners carry
		// the documented mismatch of the two mean faces (dlib's mouth is lower).
		tol := 2.0
		if k >= 3 {
			tol = 5.0
		}
		if !near(c.X, d5[k].X, tol) || !near(c.Y, d5[k].Y, tol) {
			t.Errorf("point %d at %v, more than %v px from dlib's %v", k, c, tol, d5[k])
		}
	}
	// Rows below the ArcFace crop's bottom edge read the border.
	edge := m.Apply(imaging.Point{X: 56, Y: 112}).Y
	if edge >= 149 {
		t.Fatalf("ArcFace bottom edge maps to row %v: the chip has no border rows to check", edge)
	}
	for _, row := range []int{int(math.Ceil(edge)) + 1, 149} {
		if r, g, b := chip.RGBAt(75, row); r|g|b != 0 {
			t.Errorf("row %d (below the crop edge at %.1f) should be border, got %d,%d,%d", row, edge, r, g, b)
		}
	}
	if r, _, _ := chip.RGBAt(75, int(edge)-6); r == 0 {
		t.Errorf("row %d should still be inside the ArcFace crop", int(edge)-6)
	}
	if _, err := ArcFaceToDlib150(imaging.NewRGB(100, 112), Border{}); err == nil {
		t.Error("non-112 input accepted")
	}
}

// Real LFW ArcFace-aligned images re-cropped for dlib: the eyes of the
// ArcFace template (dark pupils) must land on dlib's eye positions, which
// is checked by comparing the darkness at the dlib eye centres with the
// cheek below them, averaged over several images.
func TestArcFaceToDlib150LFW(t *testing.T) {
	root := testenv.Datasets(t)
	files := []string{
		"lfw_pairs_aligned/data/Abel_Pacheco/Abel_Pacheco_0001.jpg",
		"lfw_pairs_aligned/data/Akhmed_Zakayev/Akhmed_Zakayev_0001.jpg",
		"lfw_pairs_aligned/data/Amber_Tamblyn/Amber_Tamblyn_0001.jpg",
		"lfw_pairs_aligned/data/Anders_Fogh_Rasmussen/Anders_Fogh_Rasmussen_0001.jpg",
		"lfw_pairs_aligned/data/Angela_Bassett/Angela_Bassett_0001.jpg",
	}
	d5 := DlibChipPoints5(150, 0.25)
	var eye, cheek float64
	for _, f := range files {
		img, _, err := imaging.DecodeReader(openOrSkip(t, filepath.Join(root, f)), imaging.Limits{})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		chip, err := ArcFaceToDlib150(img, Border{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range d5[:2] {
			eye += lum(chip, e.X, e.Y)
			cheek += lum(chip, e.X, e.Y+22)
		}
	}
	if eye >= cheek*0.85 {
		t.Errorf("eyes (%.0f) not darker than cheeks (%.0f) at dlib's eye positions", eye, cheek)
	}
	t.Logf("mean luminance at dlib eye centres %.1f, 22 px below %.1f", eye/10, cheek/10)
}

func lum(m *imaging.RGB, x, y float64) float64 {
	var s float64
	for dy := -2; dy <= 2; dy++ {
		for dx := -2; dx <= 2; dx++ {
			r, g, b := m.RGBAt(int(x)+dx, int(y)+dy)
			s += 0.299*float64(r) + 0.587*float64(g) + 0.114*float64(b)
		}
	}
	return s / 25
}

func TestFromBlazeFace(t *testing.T) {
	var f detect.Face
	for k := range f.Keypoints {
		f.Keypoints[k] = pt(float64(k), float64(10*k))
	}
	lm := FromBlazeFace(f)
	if lm.LeftEye != pt(0, 0) || lm.RightEye != pt(1, 10) || lm.Nose != pt(2, 20) || lm.Mouth != pt(3, 30) {
		t.Fatalf("%+v", lm)
	}
}
