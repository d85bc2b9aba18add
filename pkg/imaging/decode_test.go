package imaging

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/image/bmp"

	"github.com/facegate/facegate/pkg/testenv"
)

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDecodeDatasetImages decodes every non-LFW picture of the shared
// datasets (JPEG and PNG from several sources, grey and colour, with and
// without alpha, baseline and progressive) and checks the size against
// MANIFEST.tsv, which was measured by a different decoder.
func TestDecodeDatasetImages(t *testing.T) {
	root := testenv.Datasets(t)
	f, err := os.Open(filepath.Join(root, "MANIFEST.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	n := 0
	formats := map[string]int{}
	for sc.Scan() {
		col := strings.Split(sc.Text(), "\t")
		if len(col) < 9 || strings.HasPrefix(col[0], "lfw") || col[8] == "aux-file" {
			continue
		}
		w, err1 := strconv.Atoi(col[6])
		h, err2 := strconv.Atoi(col[7])
		if err1 != nil || err2 != nil {
			t.Fatalf("MANIFEST row %q: bad size", col[0])
		}
		data := readFile(t, filepath.Join(root, col[0]))
		if testing.Short() && len(data) > 300<<10 {
			continue
		}
		img, info, err := Decode(data, Limits{})
		if err != nil {
			t.Errorf("%s: %v", col[0], err)
			continue
		}
		if img.W != w || img.H != h {
			t.Errorf("%s: decoded %dx%d, manifest says %dx%d", col[0], img.W, img.H, w, h)
		}
		if err := img.Valid(); err != nil {
			t.Errorf("%s: %v", col[0], err)
		}
		formats[info.Format]++
		n++
	}
	if n < 150 && !testing.Short() {
		t.Fatalf("decoded only %d dataset images; the manifest lists more", n)
	}
	if formats[FormatJPEG] == 0 || formats[FormatPNG] == 0 {
		t.Fatalf("expected both JPEG and PNG among the dataset images, got %v", formats)
	}
	t.Logf("decoded %d dataset images: %v", n, formats)
}

// deepface's img47.jpg is a WebP file with a .jpg name: the format must be
// taken from the content.
func TestDecodeMisnamedWebP(t *testing.T) {
	img, info, err := Decode(readFile(t, testenv.Dataset(t, "deepface/dataset/img47.jpg")), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != FormatWebP || img.W == 0 {
		t.Fatalf("format %q, %dx%d", info.Format, img.W, img.H)
	}
}

// Grey PNGs in the face-api.js set must come out with R=G=B.
func TestDecodeGreyDatasetPNG(t *testing.T) {
	p := testenv.Dataset(t, "detector/nonface/skimage_coins.png")
	data := readFile(t, p)
	ref, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	g, ok := ref.(*image.Gray)
	if !ok {
		t.Fatalf("expected a grey PNG, image/png gives %T", ref)
	}
	img, _, err := Decode(data, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for y := 0; y < img.H; y++ {
		for x := 0; x < img.W; x++ {
			r, gg, b := img.RGBAt(x, y)
			v := g.GrayAt(x, y).Y
			if r != v || gg != v || b != v {
				t.Fatalf("(%d,%d) = %d,%d,%d, want grey %d", x, y, r, gg, b, v)
			}
		}
	}
}

func meanAbsDiff(t *testing.T, a *RGB, b image.Image) float64 {
	t.Helper()
	if a.W != b.Bounds().Dx() || a.H != b.Bounds().Dy() {
		t.Fatalf("size %dx%d vs %v", a.W, a.H, b.Bounds())
	}
	ref := FromImage(b)
	var s float64
	for i := range a.Pix {
		d := float64(a.Pix[i]) - float64(ref.Pix[i])
		if d < 0 {
			d = -d
		}
		s += d
	}
	return s / float64(len(a.Pix))
}

func refPicture(t *testing.T) image.Image {
	t.Helper()
	m, err := png.Decode(bytes.NewReader(readFile(t, "testdata/video-001.png")))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A 4-component Adobe JPEG must match its PNG rendering (Go's own test
// pair); an un-inverted CMYK conversion would be about 200 off. The lossy
// WebP of the same scene is a 3 KB encode, hence the wider tolerance; a
// channel swap would still be far outside it.
func TestDecodeCMYKAndWebPMatchReference(t *testing.T) {
	for _, tc := range []struct {
		file, ref, format string
		maxDiff           float64
	}{
		{"testdata/video-001.cmyk.jpeg", "testdata/video-001.cmyk.png", FormatJPEG, 1},
		{"testdata/video-001.lossy.webp", "testdata/video-001.png", FormatWebP, 15},
	} {
		ref, err := png.Decode(bytes.NewReader(readFile(t, tc.ref)))
		if err != nil {
			t.Fatal(err)
		}
		data := readFile(t, tc.file)
		if tc.format == FormatJPEG {
			m, err := jpeg.Decode(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := m.(*image.CMYK); !ok {
				t.Fatalf("%s: image/jpeg gives %T, the test needs a CMYK source", tc.file, m)
			}
		}
		img, info, err := Decode(data, Limits{})
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if info.Format != tc.format {
			t.Errorf("%s: format %q, want %q", tc.file, info.Format, tc.format)
		}
		d := meanAbsDiff(t, img, ref)
		t.Logf("%s: mean abs difference to %s %.2f", tc.file, tc.ref, d)
		if d > tc.maxDiff {
			t.Errorf("%s: mean abs difference %.2f > %.0f", tc.file, d, tc.maxDiff)
		}
	}
}

// opaque hides an image's concrete type so FromImage takes its generic path.
type opaque struct{ image.Image }

// Every fast path of FromImage must agree exactly with the generic
// color-model path for the image types decoders return.
func TestFromImageFastPathsMatchGeneric(t *testing.T) {
	r := image.Rect(3, 2, 20, 13) // non-zero origin exercises the offsets
	fill := func(set func(x, y int, i int)) {
		i := 0
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				set(x, y, i)
				i++
			}
		}
	}
	ycc := image.NewYCbCr(r, image.YCbCrSubsampleRatio420)
	for i := range ycc.Y {
		ycc.Y[i] = uint8(i * 7)
	}
	for i := range ycc.Cb {
		ycc.Cb[i], ycc.Cr[i] = uint8(i*13), uint8(255-i*5)
	}
	nycca := image.NewNYCbCrA(r, image.YCbCrSubsampleRatio422)
	for i := range nycca.Y {
		nycca.Y[i], nycca.A[i] = uint8(i*3), uint8(i)
	}
	for i := range nycca.Cb {
		nycca.Cb[i], nycca.Cr[i] = uint8(i*11), uint8(i*17)
	}
	gray, gray16 := image.NewGray(r), image.NewGray16(r)
	nrgba, nrgba64, rgba, cmyk := image.NewNRGBA(r), image.NewNRGBA64(r), image.NewRGBA(r), image.NewCMYK(r)
	pal := image.NewPaletted(r, color.Palette{color.RGBA{1, 2, 3, 255}, color.NRGBA{200, 100, 50, 128}, color.Gray{77}})
	fill(func(x, y, i int) {
		gray.SetGray(x, y, color.Gray{uint8(i * 5)})
		gray16.SetGray16(x, y, color.Gray16{uint16(i * 331)})
		nrgba.SetNRGBA(x, y, color.NRGBA{uint8(i), uint8(i * 3), uint8(i * 7), uint8(i * 11)})
		nrgba64.SetNRGBA64(x, y, color.NRGBA64{uint16(i * 301), uint16(i * 503), uint16(i * 707), uint16(i * 911)})
		a := uint8(i * 13)
		rgba.SetRGBA(x, y, color.RGBA{a / 2, a / 3, a, a}) // valid premultiplied
		cmyk.SetCMYK(x, y, color.CMYK{uint8(i), uint8(i * 2), uint8(i * 3), uint8(i * 5)})
		pal.SetColorIndex(x, y, uint8(i%3))
	})
	for name, m := range map[string]image.Image{
		"YCbCr": ycc, "Gray": gray, "Gray16": gray16, "NRGBA": nrgba,
		"RGBA": rgba, "CMYK": cmyk, "Paletted": pal,
	} {
		fast, slow := FromImage(m), FromImage(opaque{m})
		if fast.W != r.Dx() || fast.H != r.Dy() {
			t.Fatalf("%s: size %dx%d", name, fast.W, fast.H)
		}
		for i := range fast.Pix {
			d := int(fast.Pix[i]) - int(slow.Pix[i])
			// premultiplied RGBA: image/color un-premultiplies from 16-bit
			// values, so rounding may differ by one.
			if d != 0 && !(name == "RGBA" && (d == 1 || d == -1)) {
				t.Fatalf("%s: byte %d fast %d generic %d", name, i, fast.Pix[i], slow.Pix[i])
			}
		}
	}
	// NYCbCrA: alpha is dropped, so the colour is the YCbCr part's even
	// where alpha is 0 (the generic path would premultiply it to black).
	if a, b := FromImage(nycca), FromImage(opaque{&nycca.YCbCr}); !bytes.Equal(a.Pix, b.Pix) {
		t.Fatal("NYCbCrA: colour differs from its YCbCr part")
	}
	// NRGBA64: the generic path goes through premultiplied 16-bit values and
	// loses precision at low alpha; the fast path keeps the stored colour's
	// high byte exactly.
	fast := FromImage(nrgba64)
	fill(func(x, y, i int) {
		c := nrgba64.NRGBA64At(x, y)
		r, g, b := fast.RGBAt(x-r.Min.X, y-r.Min.Y)
		if r != uint8(c.R>>8) || g != uint8(c.G>>8) || b != uint8(c.B>>8) {
			t.Fatalf("NRGBA64 (%d,%d): %d,%d,%d want %v", x, y, r, g, b, c)
		}
	})
}

func TestDecodeWebPWithAlpha(t *testing.T) {
	img, info, err := Decode(readFile(t, "testdata/gopher-doc.with-alpha.lossless.webp"), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != FormatWebP || img.W == 0 || img.H == 0 {
		t.Fatalf("got %+v %dx%d", info, img.W, img.H)
	}
}

func TestDecodeBMPExact(t *testing.T) {
	ref := refPicture(t)
	var buf bytes.Buffer
	if err := bmp.Encode(&buf, ref); err != nil {
		t.Fatal(err)
	}
	img, info, err := Decode(buf.Bytes(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != FormatBMP {
		t.Fatalf("format %q", info.Format)
	}
	if d := meanAbsDiff(t, img, ref); d != 0 {
		t.Fatalf("lossless BMP differs from its source by %.3f", d)
	}
}

// GIF: a paletted frame with a custom palette must map each index to its
// palette colour; only the first frame counts.
func TestDecodeGIFFirstFrame(t *testing.T) {
	pal := color.Palette{color.RGBA{10, 20, 30, 255}, color.RGBA{200, 100, 50, 255}, color.RGBA{0, 255, 0, 255}}
	f1 := image.NewPaletted(image.Rect(0, 0, 5, 4), pal)
	for i := range f1.Pix {
		f1.Pix[i] = uint8(i % 3)
	}
	f2 := image.NewPaletted(image.Rect(0, 0, 5, 4), pal) // all index 0
	var buf bytes.Buffer
	if err := gif.EncodeAll(&buf, &gif.GIF{Image: []*image.Paletted{f1, f2}, Delay: []int{0, 0}}); err != nil {
		t.Fatal(err)
	}
	img, info, err := Decode(buf.Bytes(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != FormatGIF || img.W != 5 || img.H != 4 {
		t.Fatalf("got %+v %dx%d", info, img.W, img.H)
	}
	for i := 0; i < 20; i++ {
		c := pal[i%3].(color.RGBA)
		r, g, b := img.RGBAt(i%5, i/5)
		if r != c.R || g != c.G || b != c.B {
			t.Fatalf("pixel %d = %d,%d,%d want %v", i, r, g, b, c)
		}
	}
}

// 16-bit PNGs (colour, grey, with alpha) keep their high byte; alpha is
// dropped keeping the un-premultiplied colour.
func TestDecode16BitAndAlphaPNG(t *testing.T) {
	rgb16 := image.NewRGBA64(image.Rect(0, 0, 3, 2))
	rgb16.SetRGBA64(1, 1, color.RGBA64{0x1234, 0xabcd, 0xff00, 0xffff})
	grey16 := image.NewGray16(image.Rect(0, 0, 3, 2))
	grey16.SetGray16(2, 0, color.Gray16{0x80ff})
	nrgba := image.NewNRGBA(image.Rect(0, 0, 3, 2))
	nrgba.SetNRGBA(0, 1, color.NRGBA{10, 20, 30, 0})    // fully transparent, colour kept
	nrgba.SetNRGBA(2, 1, color.NRGBA{200, 100, 50, 77}) // half transparent
	nrgba64 := image.NewNRGBA64(image.Rect(0, 0, 3, 2))
	nrgba64.SetNRGBA64(1, 0, color.NRGBA64{0x7700, 0x6600, 0x5500, 0x1000})
	for _, tc := range []struct {
		name    string
		img     image.Image
		x, y    int
		r, g, b uint8
	}{
		{"rgb16", rgb16, 1, 1, 0x12, 0xab, 0xff},
		{"grey16", grey16, 2, 0, 0x80, 0x80, 0x80},
		{"nrgba-transparent", nrgba, 0, 1, 10, 20, 30},
		{"nrgba-partial", nrgba, 2, 1, 200, 100, 50},
		{"nrgba64", nrgba64, 1, 0, 0x77, 0x66, 0x55},
	} {
		var buf bytes.Buffer
		if err := png.Encode(&buf, tc.img); err != nil {
			t.Fatal(err)
		}
		img, _, err := Decode(buf.Bytes(), Limits{})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		r, g, b := img.RGBAt(tc.x, tc.y)
		if r != tc.r || g != tc.g || b != tc.b {
			t.Errorf("%s: got %d,%d,%d want %d,%d,%d", tc.name, r, g, b, tc.r, tc.g, tc.b)
		}
	}
}

func TestDecodeGreyJPEG(t *testing.T) {
	g := image.NewGray(image.Rect(0, 0, 16, 16))
	for i := range g.Pix {
		g.Pix[i] = uint8(i)
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, g, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	img, _, err := Decode(buf.Bytes(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(img.Pix); i += 3 {
		if img.Pix[i] != img.Pix[i+1] || img.Pix[i] != img.Pix[i+2] {
			t.Fatalf("grey JPEG pixel %d is not grey: %v", i/3, img.Pix[i:i+3])
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	small := encodePNG(t, image.NewGray(image.Rect(0, 0, 4, 4)))
	for _, tc := range []struct {
		name string
		data []byte
		lim  Limits
		want error
	}{
		{"nil", nil, Limits{}, ErrEmpty},
		{"empty", []byte{}, Limits{}, ErrEmpty},
		{"text named .jpg", []byte("this is not a picture, just a text file renamed photo.jpg\n"), Limits{}, ErrUnsupportedFormat},
		{"tiff", []byte("II*\x00\x08\x00\x00\x00"), Limits{}, ErrUnsupportedFormat},
		{"bytes over limit", small, Limits{MaxBytes: int64(len(small) - 1)}, ErrTooLarge},
		{"pixels over limit", small, Limits{MaxPixels: 15}, ErrTooLarge},
		{"png magic only", []byte("\x89PNG\r\n\x1a\n"), Limits{}, ErrCorrupt},
		{"jpeg magic only", []byte{0xff, 0xd8, 0xff}, Limits{}, ErrCorrupt},
	} {
		_, _, err := Decode(tc.data, tc.lim)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	// The limit is inclusive.
	if _, _, err := Decode(small, Limits{MaxBytes: int64(len(small)), MaxPixels: 16}); err != nil {
		t.Errorf("image exactly at the limits refused: %v", err)
	}
	// DecodeReader stops reading past the limit.
	_, _, err := DecodeReader(bytes.NewReader(append(small, make([]byte, 100)...)), Limits{MaxBytes: int64(len(small) + 10)})
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("DecodeReader over the limit: %v", err)
	}
	if _, _, err := DecodeReader(bytes.NewReader(small), Limits{}); err != nil {
		t.Errorf("DecodeReader: %v", err)
	}
}

func encodePNG(t testing.TB, m image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bombs returns tiny files whose headers announce 50000x50000 (or the
// format's maximum) pixels.
func bombs(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	// PNG: IHDR with a valid CRC, nothing else.
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], 50000)
	binary.BigEndian.PutUint32(ihdr[4:], 50000)
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	chunk := append([]byte("IHDR"), ihdr...)
	var p bytes.Buffer
	p.WriteString("\x89PNG\r\n\x1a\n")
	binary.Write(&p, binary.BigEndian, uint32(13))
	p.Write(chunk)
	binary.Write(&p, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	out["png"] = p.Bytes()
	// JPEG: a real 8x8 JPEG with the SOF0 size patched.
	var j bytes.Buffer
	if err := jpeg.Encode(&j, image.NewGray(image.Rect(0, 0, 8, 8)), nil); err != nil {
		t.Fatal(err)
	}
	jb := j.Bytes()
	sof := bytes.Index(jb, []byte{0xff, 0xc0})
	binary.BigEndian.PutUint16(jb[sof+5:], 50000)
	binary.BigEndian.PutUint16(jb[sof+7:], 50000)
	out["jpeg"] = jb
	// GIF: logical screen 65535x65535.
	var g bytes.Buffer
	if err := gif.Encode(&g, image.NewPaletted(image.Rect(0, 0, 2, 2), color.Palette{color.Black, color.White}), nil); err != nil {
		t.Fatal(err)
	}
	gb := g.Bytes()
	binary.LittleEndian.PutUint16(gb[6:], 65535)
	binary.LittleEndian.PutUint16(gb[8:], 65535)
	out["gif"] = gb
	// BMP: 50000x50000 in the info header.
	var bm bytes.Buffer
	if err := bmp.Encode(&bm, image.NewRGBA(image.Rect(0, 0, 2, 2))); err != nil {
		t.Fatal(err)
	}
	bb := bm.Bytes()
	binary.LittleEndian.PutUint32(bb[18:], 50000)
	binary.LittleEndian.PutUint32(bb[22:], 50000)
	out["bmp"] = bb
	// WebP VP8L: 14-bit width-1 and height-1 fields, 16384x16384 maximum.
	vp8l := []byte{0x2f, 0xff, 0xff, 0xff, 0x0f}
	var w bytes.Buffer
	w.WriteString("RIFF")
	binary.Write(&w, binary.LittleEndian, uint32(4+8+len(vp8l)+1))
	w.WriteString("WEBPVP8L")
	binary.Write(&w, binary.LittleEndian, uint32(len(vp8l)))
	w.Write(vp8l)
	w.WriteByte(0)
	out["webp"] = w.Bytes()
	return out
}

// A decompression bomb is refused from its header: the error is
// ErrTooLarge and almost nothing is allocated.
func TestDecodeRefusesBombs(t *testing.T) {
	for name, data := range bombs(t) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, info, err := Decode(data, Limits{})
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s bomb: got %v, want ErrTooLarge", name, err)
			continue
		}
		if info.Width < 16000 || info.Height < 16000 {
			t.Errorf("%s bomb: header read as %dx%d", name, info.Width, info.Height)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
			t.Errorf("%s bomb: %d bytes allocated before refusing", name, alloc)
		}
	}
}

// A JPEG cut anywhere is an error. A progressive JPEG cut between two
// scans is the case image/jpeg decodes "successfully" into a partial
// picture, which Decode must refuse.
func TestDecodeTruncatedJPEG(t *testing.T) {
	data := readFile(t, testenv.Dataset(t, "deepface/dataset/img2.jpg"))
	for _, frac := range []float64{0.3, 0.6, 0.95} {
		_, _, err := Decode(data[:int(float64(len(data))*frac)], Limits{})
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("cut at %.0f%%: got %v, want ErrCorrupt", 100*frac, err)
		}
	}
	var sos []int
	for i := 0; i+1 < len(data); i++ {
		if data[i] == 0xff && data[i+1] == 0xda {
			sos = append(sos, i)
		}
	}
	if len(sos) < 3 {
		t.Fatalf("img2.jpg has %d scans; the test needs a progressive JPEG", len(sos))
	}
	cut := data[:sos[len(sos)/2]]
	if _, err := jpeg.Decode(bytes.NewReader(cut)); err != nil {
		t.Logf("note: image/jpeg now reports the scan-boundary cut itself: %v", err)
	}
	_, _, err := Decode(cut, Limits{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("progressive JPEG cut between scans: got %v, want a truncation ErrCorrupt", err)
	}
	if _, _, err := Decode(data, Limits{}); err != nil {
		t.Fatalf("the complete file: %v", err)
	}
}
