package imaging

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/color"
	"image/jpeg"
	"testing"

	"github.com/facegate/facegate/pkg/testenv"
)

// exifSegment builds an APP1 Exif segment holding IFD0 with a leading
// unrelated tag and then the orientation tag.
func exifSegment(order binary.ByteOrder, orientation uint16) []byte {
	var t bytes.Buffer
	if order == binary.LittleEndian {
		t.WriteString("II")
	} else {
		t.WriteString("MM")
	}
	binary.Write(&t, order, uint16(42))
	binary.Write(&t, order, uint32(8))
	binary.Write(&t, order, uint16(2)) // two entries
	// 0x010f Make, ASCII, count 4, inline "Go\0\0"
	binary.Write(&t, order, uint16(0x010f))
	binary.Write(&t, order, uint16(2))
	binary.Write(&t, order, uint32(4))
	t.WriteString("Go\x00\x00")
	// 0x0112 Orientation, SHORT, count 1
	binary.Write(&t, order, uint16(0x0112))
	binary.Write(&t, order, uint16(3))
	binary.Write(&t, order, uint32(1))
	binary.Write(&t, order, orientation)
	binary.Write(&t, order, uint16(0))
	binary.Write(&t, order, uint32(0)) // no next IFD
	payload := append([]byte("Exif\x00\x00"), t.Bytes()...)
	seg := []byte{0xff, 0xe1, 0, 0}
	binary.BigEndian.PutUint16(seg[2:], uint16(len(payload)+2))
	return append(seg, payload...)
}

// withExif inserts an APP1 segment right after SOI.
func withExif(jpg, seg []byte) []byte {
	out := append([]byte{}, jpg[:2]...)
	out = append(out, seg...)
	return append(out, jpg[2:]...)
}

func TestParseExifOrientationBothByteOrders(t *testing.T) {
	for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		for o := uint16(1); o <= 8; o++ {
			seg := exifSegment(bo, o)
			got, err := ParseExifOrientation(seg[10:])
			if err != nil || got != int(o) {
				t.Errorf("%v orientation %d: got %d, %v", bo, o, got, err)
			}
		}
		for _, bad := range []uint16{0, 9, 0xffff} {
			if _, err := ParseExifOrientation(exifSegment(bo, bad)[10:]); err == nil {
				t.Errorf("%v orientation %d accepted", bo, bad)
			}
		}
	}
}

// Real camera files in the dataset carry EXIF in both byte orders; all
// say orientation 1 (none of the dataset images is rotated).
func TestExifOrientationOfRealFiles(t *testing.T) {
	for _, tc := range []struct{ file, order string }{
		{"deepface/dataset/img26.jpg", "II"},
		{"deepface/dataset/img21.jpg", "MM"},
	} {
		data := readFile(t, testenv.Dataset(t, tc.file))
		tiff := exifTIFF(data)
		if tiff == nil || string(tiff[:2]) != tc.order {
			t.Fatalf("%s: expected an %s EXIF block", tc.file, tc.order)
		}
		o, err := ParseExifOrientation(tiff)
		if err != nil || o != 1 {
			t.Errorf("%s: orientation %d, %v; want 1", tc.file, o, err)
		}
	}
}

type side int

const (
	top side = iota
	bottom
	left
	right
)

// TestOrientationEndToEnd stores a picture whose first row is red and
// whose first column is green, tags it with each orientation in both byte
// orders, and checks where the red and green bands end up after Decode,
// using the EXIF specification's table directly (0th row / 0th column
// is the visual ... side), independently of Orient's formulas.
func TestOrientationEndToEnd(t *testing.T) {
	const w, h = 64, 40
	stored := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.RGBA{128, 128, 128, 255}
			if y < 8 && x >= 16 {
				c = color.RGBA{255, 0, 0, 255} // row band, away from the corner
			}
			if x < 8 && y >= 16 {
				c = color.RGBA{0, 255, 0, 255} // column band
			}
			stored.Set(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, stored, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	spec := map[int][2]side{ // orientation -> (side of row 0, side of column 0)
		1: {top, left}, 2: {top, right}, 3: {bottom, right}, 4: {bottom, left},
		5: {left, top}, 6: {right, top}, 7: {right, bottom}, 8: {left, bottom},
	}
	for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		for o := 1; o <= 8; o++ {
			img, info, err := Decode(withExif(buf.Bytes(), exifSegment(bo, uint16(o))), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if info.Orientation != o {
				t.Errorf("%v o=%d: Info.Orientation %d", bo, o, info.Orientation)
			}
			wantW, wantH := w, h
			if o >= 5 {
				wantW, wantH = h, w
			}
			if img.W != wantW || img.H != wantH {
				t.Fatalf("%v o=%d: size %dx%d want %dx%d", bo, o, img.W, img.H, wantW, wantH)
			}
			if got := bandSide(img, 0); got != spec[o][0] {
				t.Errorf("%v o=%d: red band (row 0) on side %d, want %d", bo, o, got, spec[o][0])
			}
			if got := bandSide(img, 1); got != spec[o][1] {
				t.Errorf("%v o=%d: green band (column 0) on side %d, want %d", bo, o, got, spec[o][1])
			}
		}
	}
}

// bandSide finds which edge the pure red (ch=0) or green (ch=1) band touches.
func bandSide(img *RGB, ch int) side {
	var sx, sy, n float64
	for y := 0; y < img.H; y++ {
		for x := 0; x < img.W; x++ {
			p := img.Pix[3*(y*img.W+x):]
			if p[ch] > 200 && p[1-ch] < 60 && p[2] < 60 {
				sx += float64(x)
				sy += float64(y)
				n++
			}
		}
	}
	cx, cy := sx/n/float64(img.W), sy/n/float64(img.H) // band centroid, 0..1
	dist := map[side]float64{top: cy, bottom: 1 - cy, left: cx, right: 1 - cx}
	best := top
	for s, d := range dist {
		if d < dist[best] {
			best = s
		}
	}
	return best
}

func TestExifOrientationIgnoresDamage(t *testing.T) {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, image.NewGray(image.Rect(0, 0, 8, 8)), nil); err != nil {
		t.Fatal(err)
	}
	seg := exifSegment(binary.BigEndian, 6)
	damaged := append([]byte{}, seg...)
	damaged[10+4] = 0xff // IFD0 offset far outside the block
	img, info, err := Decode(withExif(buf.Bytes(), damaged), Limits{})
	if err != nil || info.Orientation != 1 || img.W != 8 {
		t.Fatalf("damaged EXIF: %v orientation %d", err, info.Orientation)
	}
}
