package imaging

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ExifOrientation returns the EXIF orientation (1..8) of a JPEG, or 1 when
// there is none or it cannot be read. A damaged EXIF block must not make an
// otherwise good photo unusable, so problems degrade to "no rotation".
func ExifOrientation(jpegData []byte) int {
	tiff := exifTIFF(jpegData)
	if tiff == nil {
		return 1
	}
	o, err := ParseExifOrientation(tiff)
	if err != nil {
		return 1
	}
	return o
}

// exifTIFF walks the JPEG marker segments up to the first scan and returns
// the TIFF payload of the first APP1 "Exif" segment, or nil.
func exifTIFF(b []byte) []byte {
	if len(b) < 4 || b[0] != 0xff || b[1] != 0xd8 {
		return nil
	}
	i := 2
	for i+4 <= len(b) {
		if b[i] != 0xff {
			return nil
		}
		m := b[i+1]
		if m == 0xff { // fill byte before a marker
			i++
			continue
		}
		if m == 0xd8 || m == 0x01 || (m >= 0xd0 && m <= 0xd7) { // markers without a length
			i += 2
			continue
		}
		if m == 0xda || m == 0xd9 { // start of scan or end of image: metadata is over
			return nil
		}
		n := int(binary.BigEndian.Uint16(b[i+2:]))
		if n < 2 || i+2+n > len(b) {
			return nil
		}
		seg := b[i+4 : i+2+n]
		if m == 0xe1 && len(seg) >= 6 && string(seg[:6]) == "Exif\x00\x00" {
			return seg[6:]
		}
		i += 2 + n
	}
	return nil
}

var errNoOrientation = errors.New("no orientation tag")

// ParseExifOrientation reads tag 0x0112 from IFD0 of an EXIF TIFF block
// ("II" little-endian or "MM" big-endian). It returns an error for
// malformed blocks, a missing tag or a value outside 1..8.
func ParseExifOrientation(tiff []byte) (int, error) {
	if len(tiff) < 8 {
		return 0, fmt.Errorf("exif: %d-byte TIFF header is too short", len(tiff))
	}
	var bo binary.ByteOrder
	switch string(tiff[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 0, fmt.Errorf("exif: byte order mark %q is neither II nor MM", tiff[:2])
	}
	if bo.Uint16(tiff[2:]) != 42 {
		return 0, fmt.Errorf("exif: TIFF magic %d, want 42", bo.Uint16(tiff[2:]))
	}
	off := int64(bo.Uint32(tiff[4:]))
	if off < 8 || off+2 > int64(len(tiff)) {
		return 0, fmt.Errorf("exif: IFD0 offset %d outside the %d-byte block", off, len(tiff))
	}
	n := int64(bo.Uint16(tiff[off:]))
	if off+2+12*n > int64(len(tiff)) {
		return 0, fmt.Errorf("exif: IFD0 with %d entries overruns the %d-byte block", n, len(tiff))
	}
	for k := int64(0); k < n; k++ {
		e := tiff[off+2+12*k:]
		if bo.Uint16(e) != 0x0112 {
			continue
		}
		typ, count := bo.Uint16(e[2:]), bo.Uint32(e[4:])
		var v uint32
		switch {
		case typ == 3 && count == 1: // SHORT, left-justified in the value field
			v = uint32(bo.Uint16(e[8:]))
		case typ == 4 && count == 1: // LONG: out of spec but written by some tools
			v = bo.Uint32(e[8:])
		default:
			return 0, fmt.Errorf("exif: orientation has type %d count %d, want SHORT x1", typ, count)
		}
		if v < 1 || v > 8 {
			return 0, fmt.Errorf("exif: orientation value %d outside 1..8", v)
		}
		return int(v), nil
	}
	return 0, fmt.Errorf("exif: %w", errNoOrientation)
}

// Orient returns the image as it should be displayed for the given EXIF
// orientation. The table follows the EXIF specification's wording ("the
// 0th row of the stored image is the visual top/bottom/left/right side,
// the 0th column is the visual left/right/top/bottom side"):
//
//	1 row0=top,    col0=left    identity
//	2 row0=top,    col0=right   mirror left-right
//	3 row0=bottom, col0=right   rotate 180
//	4 row0=bottom, col0=left    mirror top-bottom
//	5 row0=left,   col0=top     transpose
//	6 row0=right,  col0=top     rotate 90 clockwise
//	7 row0=right,  col0=bottom  transverse
//	8 row0=left,   col0=bottom  rotate 90 counter-clockwise
//
// Values outside 1..8 are treated as 1. The input is not modified.
func Orient(src *RGB, orientation int) *RGB {
	if orientation < 2 || orientation > 8 {
		return src
	}
	w, h := src.W, src.H
	dw, dh := w, h
	if orientation >= 5 {
		dw, dh = h, w
	}
	dst := NewRGB(dw, dh)
	for y := 0; y < dh; y++ {
		for x := 0; x < dw; x++ {
			var sx, sy int // stored pixel shown at display (x, y)
			switch orientation {
			case 2:
				sx, sy = w-1-x, y
			case 3:
				sx, sy = w-1-x, h-1-y
			case 4:
				sx, sy = x, h-1-y
			case 5:
				sx, sy = y, x
			case 6:
				sx, sy = y, h-1-x
			case 7:
				sx, sy = w-1-y, h-1-x
			case 8:
				sx, sy = w-1-y, x
			}
			si, di := 3*(sy*w+sx), 3*(y*dw+x)
			dst.Pix[di], dst.Pix[di+1], dst.Pix[di+2] = src.Pix[si], src.Pix[si+1], src.Pix[si+2]
		}
	}
	return dst
}
