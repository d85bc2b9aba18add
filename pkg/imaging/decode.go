package imaging

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"

	"golang.org/x/image/bmp"
	"golang.org/x/image/webp"
)

// Errors every decoding failure wraps; test with errors.Is.
var (
	// ErrEmpty: no bytes at all.
	ErrEmpty = errors.New("empty image data")
	// ErrTooLarge: the byte size or the pixel count exceeds the Limits.
	ErrTooLarge = errors.New("image too large")
	// ErrUnsupportedFormat: the bytes are not JPEG, PNG, GIF, WebP or BMP
	// (for example a text file named .jpg).
	ErrUnsupportedFormat = errors.New("unsupported image format")
	// ErrCorrupt: the format is recognised but the data is malformed or truncated.
	ErrCorrupt = errors.New("corrupt image data")
	// ErrDecoderPanic wraps ErrCorrupt when a decoder panicked on hostile
	// input. Decoding recovers so one bad upload cannot take down an
	// embedder; the fuzz test fails on it so such bugs are still found.
	ErrDecoderPanic = fmt.Errorf("%w: decoder panicked", ErrCorrupt)
)

// Default limits. 40 MP covers every current phone camera (a 200 MP sensor
// bins to 12-50 MP output) while keeping the worst case near 40e6*(4+3)
// bytes = 280 MB per decode; 20 MiB covers a 40 MP JPEG at high quality.
const (
	DefaultMaxBytes  = 20 << 20
	DefaultMaxPixels = 40_000_000
)

// Limits bound what Decode accepts. Zero fields take the defaults.
type Limits struct {
	MaxBytes  int64 // encoded size
	MaxPixels int64 // width*height announced by the header
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxPixels <= 0 {
		l.MaxPixels = DefaultMaxPixels
	}
	return l
}

// Format names as reported in Info.Format.
const (
	FormatJPEG = "jpeg"
	FormatPNG  = "png"
	FormatGIF  = "gif"
	FormatWebP = "webp"
	FormatBMP  = "bmp"
)

// Info describes the source of a decoded image.
type Info struct {
	Format string
	// Width and Height as stored in the file, before EXIF orientation.
	Width, Height int
	// Orientation is the EXIF orientation applied (1..8; 1 = none).
	Orientation int
}

type codec struct {
	name   string
	config func(io.Reader) (image.Config, error)
	decode func(io.Reader) (image.Image, error)
}

// sniff picks the decoder from magic bytes itself rather than through
// image.Decode's global registry, so an import elsewhere in the binary
// cannot silently widen the attack surface to another format.
func sniff(b []byte) (codec, bool) {
	switch {
	case len(b) >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff:
		return codec{FormatJPEG, jpeg.DecodeConfig, jpeg.Decode}, true
	case len(b) >= 8 && string(b[:8]) == "\x89PNG\r\n\x1a\n":
		return codec{FormatPNG, png.DecodeConfig, png.Decode}, true
	case len(b) >= 6 && (string(b[:6]) == "GIF87a" || string(b[:6]) == "GIF89a"):
		return codec{FormatGIF, gif.DecodeConfig, gif.Decode}, true // gif.Decode stops after the first frame
	case len(b) >= 12 && string(b[:4]) == "RIFF" && string(b[8:12]) == "WEBP":
		return codec{FormatWebP, webp.DecodeConfig, webp.Decode}, true
	case len(b) >= 2 && b[0] == 'B' && b[1] == 'M':
		return codec{FormatBMP, bmp.DecodeConfig, bmp.Decode}, true
	}
	return codec{}, false
}

// Decode decodes an image held in memory, applying the limits before any
// pixel buffer is allocated and the EXIF orientation after decoding.
func Decode(data []byte, lim Limits) (*RGB, Info, error) {
	lim = lim.withDefaults()
	if len(data) == 0 {
		return nil, Info{}, fmt.Errorf("imaging: %w", ErrEmpty)
	}
	if int64(len(data)) > lim.MaxBytes {
		return nil, Info{}, fmt.Errorf("imaging: %w: %d bytes exceeds the limit of %d", ErrTooLarge, len(data), lim.MaxBytes)
	}
	c, ok := sniff(data)
	if !ok {
		return nil, Info{}, fmt.Errorf("imaging: %w: the data is not JPEG, PNG, GIF, WebP or BMP", ErrUnsupportedFormat)
	}
	info := Info{Format: c.name, Orientation: 1}
	cfg, err := safeConfig(c, data)
	if err != nil {
		return nil, info, fmt.Errorf("imaging: %s header: %w", c.name, err)
	}
	info.Width, info.Height = cfg.Width, cfg.Height
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, info, fmt.Errorf("imaging: %s header: %w: size %dx%d", c.name, ErrCorrupt, cfg.Width, cfg.Height)
	}
	if px := int64(cfg.Width) * int64(cfg.Height); px > lim.MaxPixels {
		return nil, info, fmt.Errorf("imaging: %w: %s of %dx%d = %d pixels exceeds the limit of %d",
			ErrTooLarge, c.name, cfg.Width, cfg.Height, px, lim.MaxPixels)
	}
	if c.name == FormatJPEG && !jpegHasEOI(data) {
		// Go's decoder returns a partial picture without error when a
		// progressive JPEG stops between scans; a door camera that sent
		// half a frame must not be matched on the blurry remainder.
		return nil, info, fmt.Errorf("imaging: jpeg: %w: truncated (no end-of-image marker after the last scan)", ErrCorrupt)
	}
	img, err := safeDecode(c, data)
	if err != nil {
		return nil, info, fmt.Errorf("imaging: %s: %w", c.name, err)
	}
	if b := img.Bounds(); b.Dx() != cfg.Width || b.Dy() != cfg.Height {
		// Never trust a decoder to respect its own header: the pixel limit
		// was checked against the header.
		if int64(b.Dx())*int64(b.Dy()) > lim.MaxPixels || b.Dx() > cfg.Width || b.Dy() > cfg.Height {
			return nil, info, fmt.Errorf("imaging: %s: %w: decoded %dx%d but the header says %dx%d",
				c.name, ErrCorrupt, b.Dx(), b.Dy(), cfg.Width, cfg.Height)
		}
	}
	rgb := FromImage(img)
	if rgb.W == 0 || rgb.H == 0 {
		return nil, info, fmt.Errorf("imaging: %s: %w: decoded an empty picture", c.name, ErrCorrupt)
	}
	if c.name == FormatJPEG {
		info.Orientation = ExifOrientation(data)
		rgb = Orient(rgb, info.Orientation)
	}
	return rgb, info, nil
}

// DecodeReader reads at most lim.MaxBytes+1 bytes from r and decodes them,
// so a client streaming an endless body is cut off at the limit.
func DecodeReader(r io.Reader, lim Limits) (*RGB, Info, error) {
	lim = lim.withDefaults()
	data, err := io.ReadAll(io.LimitReader(r, lim.MaxBytes+1))
	if err != nil {
		return nil, Info{}, fmt.Errorf("imaging: reading image: %w", err)
	}
	return Decode(data, lim)
}

func safeConfig(c codec, data []byte) (cfg image.Config, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrDecoderPanic, r)
		}
	}()
	cfg, err = c.config(bytes.NewReader(data))
	if err != nil {
		return cfg, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return cfg, nil
}

func safeDecode(c codec, data []byte) (img image.Image, err error) {
	defer func() {
		if r := recover(); r != nil {
			img, err = nil, fmt.Errorf("%w: %v", ErrDecoderPanic, r)
		}
	}()
	img, err = c.decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return img, nil
}

// jpegHasEOI reports whether an end-of-image marker follows the last
// start-of-scan marker. Inside entropy-coded data every 0xFF byte is
// followed by 0x00 or a restart marker, so FF DA and FF D9 there can only
// be real markers; an EXIF thumbnail's own SOS/EOI come before the main
// image's SOS and do not confuse the test.
func jpegHasEOI(b []byte) bool {
	sos := bytes.LastIndex(b, []byte{0xff, 0xda})
	eoi := bytes.LastIndex(b, []byte{0xff, 0xd9})
	return sos >= 0 && eoi > sos
}
