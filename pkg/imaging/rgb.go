package imaging

import (
	"fmt"
	"image"
	"image/color"
)

// RGB is an 8-bit RGB raster, row-major, 3 bytes per pixel, no padding
// between rows. It is the one pixel format the pipeline works on, so the
// detector, the aligner and the quality checks never switch on image types.
type RGB struct {
	W, H int
	Pix  []uint8 // len = 3*W*H
}

// NewRGB allocates a black w x h raster.
func NewRGB(w, h int) *RGB {
	if w < 0 || h < 0 {
		panic(fmt.Sprintf("imaging: negative size %dx%d", w, h))
	}
	return &RGB{W: w, H: h, Pix: make([]uint8, 3*w*h)}
}

// Valid reports whether the raster's buffer matches its size, so functions
// taking an *RGB from callers can refuse a malformed one with an error
// instead of indexing out of range.
func (m *RGB) Valid() error {
	if m == nil {
		return fmt.Errorf("imaging: nil image")
	}
	if m.W <= 0 || m.H <= 0 {
		return fmt.Errorf("imaging: empty image %dx%d", m.W, m.H)
	}
	if len(m.Pix) != 3*m.W*m.H {
		return fmt.Errorf("imaging: %dx%d image has %d bytes, want %d", m.W, m.H, len(m.Pix), 3*m.W*m.H)
	}
	return nil
}

// RGBAt returns the pixel at (x, y); it panics outside the raster like a slice would.
func (m *RGB) RGBAt(x, y int) (r, g, b uint8) {
	i := 3 * (y*m.W + x)
	return m.Pix[i], m.Pix[i+1], m.Pix[i+2]
}

// SetRGB sets the pixel at (x, y).
func (m *RGB) SetRGB(x, y int, r, g, b uint8) {
	i := 3 * (y*m.W + x)
	m.Pix[i], m.Pix[i+1], m.Pix[i+2] = r, g, b
}

// ColorModel, Bounds and At make *RGB an image.Image, so it can be handed
// to image/png for debugging output without a copy.
func (m *RGB) ColorModel() color.Model { return color.RGBAModel }

// Bounds returns (0,0)-(W,H).
func (m *RGB) Bounds() image.Rectangle { return image.Rect(0, 0, m.W, m.H) }

// At returns the pixel as an opaque color.RGBA, or transparent black outside.
func (m *RGB) At(x, y int) color.Color {
	if x < 0 || y < 0 || x >= m.W || y >= m.H {
		return color.RGBA{}
	}
	r, g, b := m.RGBAt(x, y)
	return color.RGBA{r, g, b, 0xff}
}

// Clone returns a deep copy.
func (m *RGB) Clone() *RGB {
	c := &RGB{W: m.W, H: m.H, Pix: make([]uint8, len(m.Pix))}
	copy(c.Pix, m.Pix)
	return c
}

// FromImage converts any image.Image to RGB. Common decoder outputs take a
// direct path (a 12 MP camera JPEG through the generic At() path costs
// about a second); anything else goes through color.NRGBAModel. Alpha is
// dropped keeping the un-premultiplied colour (see the package doc).
func FromImage(src image.Image) *RGB {
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	dst := NewRGB(w, h)
	p := dst.Pix
	switch s := src.(type) {
	case *image.YCbCr:
		for y := 0; y < h; y++ {
			o := 3 * y * w
			for x := 0; x < w; x++ {
				yi := s.YOffset(b.Min.X+x, b.Min.Y+y)
				ci := s.COffset(b.Min.X+x, b.Min.Y+y)
				r, g, bb := color.YCbCrToRGB(s.Y[yi], s.Cb[ci], s.Cr[ci])
				p[o], p[o+1], p[o+2] = r, g, bb
				o += 3
			}
		}
	case *image.NYCbCrA:
		for y := 0; y < h; y++ {
			o := 3 * y * w
			for x := 0; x < w; x++ {
				yi := s.YOffset(b.Min.X+x, b.Min.Y+y)
				ci := s.COffset(b.Min.X+x, b.Min.Y+y)
				r, g, bb := color.YCbCrToRGB(s.Y[yi], s.Cb[ci], s.Cr[ci])
				p[o], p[o+1], p[o+2] = r, g, bb
				o += 3
			}
		}
	case *image.Gray:
		for y := 0; y < h; y++ {
			row := s.Pix[s.PixOffset(b.Min.X, b.Min.Y+y):]
			o := 3 * y * w
			for x := 0; x < w; x++ {
				v := row[x]
				p[o], p[o+1], p[o+2] = v, v, v
				o += 3
			}
		}
	case *image.Gray16:
		for y := 0; y < h; y++ {
			row := s.Pix[s.PixOffset(b.Min.X, b.Min.Y+y):]
			o := 3 * y * w
			for x := 0; x < w; x++ {
				v := row[2*x] // big-endian: high byte first
				p[o], p[o+1], p[o+2] = v, v, v
				o += 3
			}
		}
	case *image.NRGBA:
		for y := 0; y < h; y++ {
			row := s.Pix[s.PixOffset(b.Min.X, b.Min.Y+y):]
			o := 3 * y * w
			for x := 0; x < w; x++ {
				p[o], p[o+1], p[o+2] = row[4*x], row[4*x+1], row[4*x+2]
				o += 3
			}
		}
	case *image.NRGBA64:
		for y := 0; y < h; y++ {
			row := s.Pix[s.PixOffset(b.Min.X, b.Min.Y+y):]
			o := 3 * y * w
			for x := 0; x < w; x++ {
				p[o], p[o+1], p[o+2] = row[8*x], row[8*x+2], row[8*x+4]
				o += 3
			}
		}
	case *image.RGBA:
		for y := 0; y < h; y++ {
			row := s.Pix[s.PixOffset(b.Min.X, b.Min.Y+y):]
			o := 3 * y * w
			for x := 0; x < w; x++ {
				r, g, bb, a := row[4*x], row[4*x+1], row[4*x+2], row[4*x+3]
				if a != 0xff && a != 0 {
					r, g, bb = unpremul8(r, a), unpremul8(g, a), unpremul8(bb, a)
				}
				p[o], p[o+1], p[o+2] = r, g, bb
				o += 3
			}
		}
	case *image.CMYK:
		for y := 0; y < h; y++ {
			row := s.Pix[s.PixOffset(b.Min.X, b.Min.Y+y):]
			o := 3 * y * w
			for x := 0; x < w; x++ {
				r, g, bb := color.CMYKToRGB(row[4*x], row[4*x+1], row[4*x+2], row[4*x+3])
				p[o], p[o+1], p[o+2] = r, g, bb
				o += 3
			}
		}
	case *image.Paletted:
		var lut [256][3]uint8
		for i, c := range s.Palette {
			n := color.NRGBAModel.Convert(c).(color.NRGBA)
			lut[i] = [3]uint8{n.R, n.G, n.B}
		}
		for y := 0; y < h; y++ {
			row := s.Pix[s.PixOffset(b.Min.X, b.Min.Y+y):]
			o := 3 * y * w
			for x := 0; x < w; x++ {
				c := lut[row[x]] // an index beyond the palette reads black, as image/draw would
				p[o], p[o+1], p[o+2] = c[0], c[1], c[2]
				o += 3
			}
		}
	default:
		o := 0
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				n := color.NRGBAModel.Convert(src.At(x, y)).(color.NRGBA)
				p[o], p[o+1], p[o+2] = n.R, n.G, n.B
				o += 3
			}
		}
	}
	return dst
}

func unpremul8(c, a uint8) uint8 {
	v := (uint32(c)*0xff + uint32(a)/2) / uint32(a)
	if v > 0xff {
		v = 0xff
	}
	return uint8(v)
}
