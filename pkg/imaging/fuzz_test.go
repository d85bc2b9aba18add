package imaging

import (
	"bytes"
	"encoding/binary"
	"errors"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"os"
	"runtime"
	"testing"

	"golang.org/x/image/bmp"
)

// fuzzLimits keep each fuzz iteration small; the property checked is that
// the limits hold whatever the input.
var fuzzLimits = Limits{MaxBytes: 1 << 20, MaxPixels: 1 << 20}

func FuzzDecode(f *testing.F) {
	for _, name := range []string{"testdata/video-001.lossy.webp", "testdata/gopher-doc.with-alpha.lossless.webp", "testdata/video-001.cmyk.jpeg"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	for _, b := range bombs(f) {
		f.Add(b)
	}
	small := image.NewRGBA(image.Rect(0, 0, 9, 7))
	var buf bytes.Buffer
	jpeg.Encode(&buf, small, nil)
	f.Add(withExif(buf.Bytes(), exifSegment(binary.BigEndian, 6)))
	f.Add(encodePNG(f, small))
	buf.Reset()
	gif.Encode(&buf, image.NewPaletted(image.Rect(0, 0, 3, 3), color.Palette{color.White}), nil)
	f.Add(buf.Bytes())
	buf.Reset()
	bmp.Encode(&buf, small)
	f.Add(buf.Bytes())
	f.Add([]byte("plain text"))

	f.Fuzz(func(t *testing.T, data []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		img, _, err := Decode(data, fuzzLimits)
		runtime.ReadMemStats(&after)
		if errors.Is(err, ErrDecoderPanic) {
			t.Fatalf("decoder panicked: %v", err)
		}
		// Decoders allocate a few buffers per pixel (webp lossless: ARGB
		// words plus transforms; progressive jpeg: coefficients) plus
		// work proportional to the input; 64 bytes per allowed pixel and
		// 64 per input byte is far above any legitimate need and far below
		// what an unchecked header (gigabytes) would cost.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64*uint64(fuzzLimits.MaxPixels)+64*uint64(len(data))+(4<<20) {
			t.Fatalf("decode allocated %d bytes for %d input bytes", alloc, len(data))
		}
		// Decoders allocate a few buffers per pixel (webp lossless: ARGB
		// words plus transforms; progressive jpeg: coefficients) plus
		// work proportional to the input; 64 bytes per allowed pixel and
		// 64 per input byte is far above any legitimate need and far below
		// what an unchecked header (gigabytes) would cost.
		if err != nil {
			if !errors.Is(err, ErrEmpty) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrUnsupportedFormat) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if err := img.Valid(); err != nil {
			t.Fatal(err)
		}
		if int64(img.W)*int64(img.H) > fuzzLimits.MaxPixels {
			t.Fatalf("decoded %dx%d beyond the pixel limit", img.W, img.H)
		}
	})
}

func FuzzExif(f *testing.F) {
	f.Add(exifSegment(binary.LittleEndian, 6)[10:])
	f.Add(exifSegment(binary.BigEndian, 8)[10:])
	f.Add([]byte("MM\x00\x2a\x00\x00\x00\x08\xff\xff"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, tiff []byte) {
		o, err := ParseExifOrientation(tiff)
		if err == nil && (o < 1 || o > 8) {
			t.Fatalf("orientation %d without error", o)
		}
		// The same bytes as a JPEG APP1 segment must never break the walk.
		seg := []byte{0xff, 0xe1, 0, 0}
		n := len(tiff) + 8
		if n > 0xffff {
			return
		}
		binary.BigEndian.PutUint16(seg[2:], uint16(n))
		jpg := append([]byte{0xff, 0xd8}, seg...)
		jpg = append(jpg, "Exif\x00\x00"...)
		jpg = append(jpg, tiff...)
		got := ExifOrientation(jpg)
		if err == nil && got != o {
			t.Fatalf("ExifOrientation %d, ParseExifOrientation %d", got, o)
		}
		if err != nil && got != 1 {
			t.Fatalf("ExifOrientation %d for an unreadable block", got)
		}
	})
}
