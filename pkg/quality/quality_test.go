package quality

import (
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/facegate/facegate/pkg/align"
	"github.com/facegate/facegate/pkg/detect"
	"github.com/facegate/facegate/pkg/imaging"
	"github.com/facegate/facegate/pkg/testenv"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

const deg = math.Pi / 180

// project places the pose model's 3-D face (eyes at (+-1,0,0), nose tip at
// (0, eyeToNose, noseDepth), mouth at (0, eyeToNose+noseToMouth,
// mouthDepth), ears at (+-1.9, 0.6, -1.2)) pitched, then turned, then
// rolled (Pose's convention), scaled so the eyes are iod pixels apart,
// centred at (cx, cy).
func project(yawDeg, pitchDeg, rollDeg, iod, cx, cy float64) detect.Face {
	pts := [6][3]float64{
		{-1, 0, 0}, {1, 0, 0}, {0, eyeToNose, noseDepth}, {0, eyeToNose + noseToMouth, mouthDepth},
		{-1.9, 0.6, -1.2}, {1.9, 0.6, -1.2},
	}
	var f detect.Face
	ya, pa, ra := yawDeg*deg, pitchDeg*deg, rollDeg*deg
	for k, p := range pts {
		x, y, z := p[0], p[1], p[2]
		y, z = y*math.Cos(pa)+z*math.Sin(pa), -y*math.Sin(pa)+z*math.Cos(pa) // pitch: nose moves down for positive
		x, z = x*math.Cos(ya)+z*math.Sin(ya), -x*math.Sin(ya)+z*math.Cos(ya) // yaw about the vertical axis
		x, y = x*math.Cos(ra)-y*math.Sin(ra), x*math.Sin(ra)+y*math.Cos(ra)  // roll, clockwise on screen
		f.Keypoints[k] = imaging.Point{X: cx + x*iod/2, Y: cy + y*iod/2}
	}
	f.Box = detect.Box{X: cx - iod, Y: cy - iod, W: 2 * iod, H: 2.2 * iod}
	f.Score = 0.9
	return f
}

func TestPoseRecoversModelAngles(t *testing.T) {
	for _, a := range []float64{-40, -20, 0, 10, 35} {
		y, p, r := Pose(project(a, 0, 0, 60, 200, 200).Keypoints)
		if !near(y, a, 1e-9) || !near(p, 0, 1e-9) || !near(r, 0, 1e-9) {
			t.Errorf("yaw %v: got yaw %v pitch %v roll %v", a, y, p, r)
		}
		y, p, r = Pose(project(0, a, 0, 60, 200, 200).Keypoints)
		if !near(p, a, 1e-9) || !near(y, 0, 1e-9) || !near(r, 0, 1e-9) {
			t.Errorf("pitch %v: got yaw %v pitch %v roll %v", a, y, p, r)
		}
	}
	// Combined pitch and yaw are recovered exactly too.
	for _, yp := range [][2]float64{{25, 15}, {-30, -20}, {10, 22}} {
		y, p, r := Pose(project(yp[0], yp[1], 0, 60, 0, 0).Keypoints)
		if !near(y, yp[0], 1e-9) || !near(p, yp[1], 1e-9) || !near(r, 0, 1e-9) {
			t.Errorf("yaw %v pitch %v: got yaw %v pitch %v roll %v", yp[0], yp[1], y, p, r)
		}
	}
	// Looking far down, yaw is not measurable but pitch still is.
	if _, p, _ := Pose(project(20, 42, 0, 60, 0, 0).Keypoints); !near(p, 42, 1e-9) {
		t.Errorf("yaw 20 pitch 42: pitch %v", p)
	}
	// Looking up by more than 46 degrees lifts the nose point above the
	// eye line, outside the model: reported as extreme, in the right sense.
	if _, p, _ := Pose(project(0, -50, 0, 60, 0, 0).Keypoints); p != -90 {
		t.Errorf("pitch -50: got %v, want -90", p)
	}
	// Rolling the picture in its plane (about any point) adds to roll and
	// changes nothing else, whatever the size and place.
	base := project(20, -10, 0, 44, 90, 300)
	y0, p0, r0 := Pose(base.Keypoints)
	for _, roll := range []float64{-60, -15, 25, 170} {
		var kp [detect.NumKeypoints]imaging.Point
		c, s := math.Cos(roll*deg), math.Sin(roll*deg)
		for k, q := range base.Keypoints {
			x, y := q.X-10, q.Y+7
			kp[k] = imaging.Point{X: c*x - s*y, Y: s*x + c*y}
		}
		y, p, r := Pose(kp)
		if !near(r, r0+roll, 1e-9) || !near(y, y0, 1e-9) || !near(p, p0, 1e-9) {
			t.Errorf("roll %v: got yaw %v pitch %v roll %v, unrolled yaw %v pitch %v roll %v", roll, y, p, r, y0, p0, r0)
		}
	}
}

// blazeFaceFrontal is the median geometry of BlazeFace's keypoints on 6144
// LFW crops (half-eye-distance units, eyes at (+-1, 0)), with the
// detector's left-right bias (nose 0.08 E to the image's left) removed.
func blazeFaceFrontal(iod, cx, cy float64) detect.Face {
	var f detect.Face
	pts := [detect.NumKeypoints][2]float64{{-1, 0}, {1, 0}, {0, 1.359}, {0, 2.249}, {-2.02, 0.2}, {2.02, 0.2}}
	for k, p := range pts {
		f.Keypoints[k] = imaging.Point{X: cx + p[0]*iod/2, Y: cy + p[1]*iod/2}
	}
	return f
}

// BlazeFace's frontal geometry reads as frontal, and the 5-point templates'
// nose tip, which is higher than BlazeFace's nose point, reads as looking
// up: that offset is what made the old model (built on the template's
// heights) read every frontal face 22 degrees down and double its yaw.
// Mirroring flips the yaw sign and keeps its size, at any pose.
func TestPoseFrontalAndMirror(t *testing.T) {
	y, p, r := Pose(blazeFaceFrontal(60, 100, 80).Keypoints)
	if !near(y, 0, 1e-9) || !near(p, 0, 0.05) || !near(r, 0, 1e-9) {
		t.Errorf("BlazeFace frontal geometry: yaw %.2f pitch %.2f roll %.2f, want 0 0 0", y, p, r)
	}
	for _, tm := range []align.Template{align.ArcFace112(), align.Dlib150()} {
		var f detect.Face
		l := tm.Landmarks
		f.Keypoints[detect.LeftEye], f.Keypoints[detect.RightEye], f.Keypoints[detect.Nose], f.Keypoints[detect.Mouth] = l.LeftEye, l.RightEye, l.Nose, l.Mouth
		y, p, r := Pose(f.Keypoints)
		if math.Abs(y) > 0.5 || p > -5 || p < -20 || math.Abs(r) > 0.5 {
			t.Errorf("%s: yaw %.1f pitch %.1f roll %.1f, want yaw 0, roll 0, pitch 5-20 up", tm.Name, y, p, r)
		}
		t.Logf("%s template: yaw %.2f pitch %.2f roll %.2f", tm.Name, y, p, r)
	}
	for _, pose := range [][3]float64{{30, 0, 0}, {12, 8, -5}, {-25, -15, 20}, {40, 20, 3}} {
		a := project(pose[0], pose[1], pose[2], 60, 100, 100)
		ya, pa, ra := Pose(a.Keypoints)
		m := mirror(a, 200)
		ym, pm, rm := Pose(m.Keypoints)
		if !near(ym, -ya, 1e-9) || !near(pm, pa, 1e-9) || !near(rm, -ra, 1e-9) || !near(ya, pose[0], 1e-9) {
			t.Errorf("pose %v: yaw/pitch/roll %.2f %.2f %.2f, mirrored %.2f %.2f %.2f", pose, ya, pa, ra, ym, pm, rm)
		}
	}
}

// mirror flips a face left-right about x = w/2, relabelling left and right
// keypoints as the detector would.
func mirror(f detect.Face, w float64) detect.Face {
	var m detect.Face
	for k, p := range f.Keypoints {
		m.Keypoints[k] = imaging.Point{X: w - p.X, Y: p.Y}
	}
	k := &m.Keypoints
	k[detect.LeftEye], k[detect.RightEye] = k[detect.RightEye], k[detect.LeftEye]
	k[detect.LeftEar], k[detect.RightEar] = k[detect.RightEar], k[detect.LeftEar]
	m.Box = detect.Box{X: w - f.Box.X - f.Box.W, Y: f.Box.Y, W: f.Box.W, H: f.Box.H}
	return m
}

// texture makes a chip with detail at several scales.
func texture(w, h int, seed int64) *imaging.RGB {
	rng := rand.New(rand.NewSource(seed))
	m := imaging.NewRGB(w, h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := 128 + 50*math.Sin(float64(x)/5)*math.Cos(float64(y)/7) + 30*rng.NormFloat64()
			v = math.Min(255, math.Max(0, v))
			m.SetRGB(x, y, uint8(v), uint8(v*0.8), uint8(v*0.6))
		}
	}
	return m
}

func TestSharpnessOrdersBlur(t *testing.T) {
	c := texture(150, 150, 1)
	prev := math.Inf(1)
	for _, sigma := range []float64{0, 0.7, 1.5, 3} {
		b := c
		if sigma > 0 {
			b = gaussBlur(c, sigma)
		}
		s, err := Sharpness(b)
		if err != nil {
			t.Fatal(err)
		}
		if !(s < prev) {
			t.Errorf("sigma %v: sharpness %v not below %v", sigma, s, prev)
		}
		prev = s
	}
	// Contrast and brightness do not matter (up to 8-bit rounding).
	low := imaging.NewRGB(c.W, c.H)
	for i, v := range c.Pix {
		low.Pix[i] = uint8(40 + float64(v)*0.5)
	}
	s1, _ := Sharpness(c)
	s2, _ := Sharpness(low)
	if !near(s1, s2, 0.03*s1) {
		t.Errorf("half contrast changed sharpness %v -> %v", s1, s2)
	}
	flat := imaging.NewRGB(50, 50)
	if s, err := Sharpness(flat); err != nil || s != 0 {
		t.Errorf("flat chip: %v %v", s, err)
	}
	if _, err := Sharpness(imaging.NewRGB(4, 4)); err == nil {
		t.Error("tiny chip accepted")
	}
}

func TestCheckReasons(t *testing.T) {
	th := DefaultThresholds()
	sharp := texture(150, 150, 2)
	good := project(5, 3, 4, 60, 300, 300)
	if r := Check(good, sharp, th); !r.OK || len(r.Reasons) != 0 {
		t.Fatalf("good face rejected: %+v", r)
	}
	for _, tc := range []struct {
		name string
		face detect.Face
		chip *imaging.RGB
		want []string
	}{
		{"small", project(0, 0, 0, 18, 100, 100), sharp, []string{"face too small: inter-ocular 18.0 px < 32", "face too small: box 36.0 px < 48"}},
		{"blurry", good, gaussBlur(sharp, 3), []string{"too blurry: sharpness"}},
		{"turned", project(40, 0, 0, 60, 100, 100), sharp, []string{"head turned: yaw 40 deg > 20"}},
		{"nodding", project(0, 35, 0, 60, 100, 100), sharp, []string{"head tilted up or down: pitch 35 deg > 25"}},
		{"rolled", project(0, 0, -50, 60, 100, 100), sharp, []string{"head tilted sideways: roll 50 deg > 30"}},
		{"no chip", good, nil, []string{"cannot measure sharpness: no aligned chip"}},
	} {
		r := Check(tc.face, tc.chip, th)
		if r.OK || len(r.Reasons) != len(tc.want) {
			t.Errorf("%s: %+v, want reasons %q", tc.name, r, tc.want)
			continue
		}
		for i, w := range tc.want {
			if !strings.HasPrefix(r.Reasons[i], w) {
				t.Errorf("%s: reason %q, want %q", tc.name, r.Reasons[i], w)
			}
		}
	}
	// NaN keypoints are a reason, not a panic or a pass.
	bad := good
	bad.Keypoints[detect.Nose].X = math.NaN()
	if r := Check(bad, sharp, th); r.OK || !strings.HasPrefix(r.Reasons[0], "invalid landmarks") {
		t.Errorf("NaN keypoint: %+v", r)
	}
	// Zero thresholds disable every test.
	if r := Check(project(80, 0, 0, 5, 0, 0), nil, Thresholds{}); !r.OK {
		t.Errorf("zero thresholds: %+v", r)
	}
}

// TestSharpnessLFW re-measures the default threshold's basis on real
// faces: dlib chips from every 40th LFW image, and the same chips blurred.
func TestSharpnessLFW(t *testing.T) {
	root := testenv.Datasets(t)
	files, err := filepath.Glob(filepath.Join(root, "lfw_pairs_aligned/data/*/*.jpg"))
	if err != nil || len(files) < 7000 {
		testenv.Missing(t, "the LFW images", "the shared datasets are incomplete")
	}
	sort.Strings(files)
	th := DefaultThresholds().MinSharpness
	var n, passOrig, passBlur int
	for i := 0; i < len(files); i += 40 {
		b, err := os.ReadFile(files[i])
		if err != nil {
			t.Fatal(err)
		}
		img, _, err := imaging.Decode(b, imaging.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		chip, err := align.ArcFaceToDlib150(img, align.Border{})
		if err != nil {
			t.Fatal(err)
		}
		s, _ := Sharpness(chip)
		sb, _ := Sharpness(gaussBlur(chip, 2))
		n++
		if s >= th {
			passOrig++
		}
		if sb >= th {
			passBlur++
		}
	}
	t.Logf("%d LFW dlib chips: %d pass the %.2f threshold; blurred with sigma 2: %d pass", n, passOrig, th, passBlur)
	if float64(passOrig) < 0.97*float64(n) || float64(passBlur) > 0.03*float64(n) {
		t.Errorf("threshold %.2f passes %d/%d real chips and %d/%d blurred ones", th, passOrig, n, passBlur, n)
	}
}
