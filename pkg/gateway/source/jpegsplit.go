package source

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// JPEGSplitter cuts a byte stream of concatenated JPEG images (what
// `ffmpeg -f image2pipe -c:v mjpeg` writes) into single images.
//
// It follows the JPEG marker structure instead of searching for the first
// FF D9 after FF D8: an EXIF thumbnail inside APP1 has its own SOI/EOI pair,
// and a naive search would cut the frame at the thumbnail's end. Bytes
// between images are skipped. An image larger than the limit is read to its
// end without being kept and reported as ErrOversize, so memory stays
// bounded by the limit whatever the stream holds.
type JPEGSplitter struct {
	r   *bufio.Reader
	max int
	buf []byte
	// over is set once the current image passed max; bytes are then parsed
	// but no longer kept.
	over bool
	// haveSOI: the previous image was cut short by a new SOI, which has
	// already been consumed.
	haveSOI bool
}

// NewJPEGSplitter reads images of at most maxBytes from r.
func NewJPEGSplitter(r io.Reader, maxBytes int) *JPEGSplitter {
	return &JPEGSplitter{r: bufio.NewReaderSize(r, 64<<10), max: maxBytes}
}

func (s *JPEGSplitter) keep(b ...byte) {
	if s.over {
		return
	}
	if len(s.buf)+len(b) > s.max {
		s.over = true
		s.buf = s.buf[:0]
		return
	}
	s.buf = append(s.buf, b...)
}

// Next returns the next complete image (a fresh slice the caller owns).
// ErrOversize and ErrCorrupt (an image cut short by the next one's start,
// or bytes that break the marker structure) skip one image: call Next
// again. io.EOF means the stream ended between images,
// io.ErrUnexpectedEOF inside one; other errors are the reader's.
func (s *JPEGSplitter) Next() ([]byte, error) {
	if !s.haveSOI {
		if err := s.findSOI(); err != nil {
			return nil, err
		}
	}
	s.haveSOI = false
	s.buf = s.buf[:0]
	s.over = false
	s.keep(0xFF, 0xD8)

	var marker byte
	haveMarker := false
	for {
		if !haveMarker {
			b, err := s.r.ReadByte()
			if err != nil {
				return nil, eofInside(err)
			}
			if b != 0xFF {
				return nil, fmt.Errorf("source: JPEG stream: byte %#02x where a marker was expected: %w", b, ErrCorrupt)
			}
			if marker, err = s.markerAfterFF(); err != nil {
				return nil, err
			}
		}
		haveMarker = false
		switch {
		case marker == 0xD9: // EOI
			s.keep(0xFF, 0xD9)
			if s.over {
				return nil, fmt.Errorf("source: JPEG image over %d bytes skipped: %w", s.max, ErrOversize)
			}
			return append([]byte(nil), s.buf...), nil
		case marker == 0xD8: // SOI inside an image: the previous one was cut short
			s.haveSOI = true
			return nil, fmt.Errorf("source: JPEG image cut short by the next image: %w", ErrCorrupt)
		case marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7): // standalone
			s.keep(0xFF, marker)
			continue
		case marker == 0x00:
			return nil, fmt.Errorf("source: JPEG stream: stuffed byte outside a scan: %w", ErrCorrupt)
		}
		var lb [2]byte
		if _, err := io.ReadFull(s.r, lb[:]); err != nil {
			return nil, eofInside(err)
		}
		n := int(lb[0])<<8 | int(lb[1])
		if n < 2 {
			return nil, fmt.Errorf("source: JPEG segment %#02x has length %d: %w", marker, n, ErrCorrupt)
		}
		s.keep(0xFF, marker, lb[0], lb[1])
		if err := s.copySegment(n - 2); err != nil {
			return nil, err
		}
		if marker != 0xDA { // not SOS
			continue
		}
		// Entropy-coded data: FF is always followed by 00 (a stuffed FF)
		// or a restart marker; anything else is the next marker.
		m, err := s.scan()
		if err != nil {
			return nil, err
		}
		marker, haveMarker = m, true
	}
}

// findSOI skips bytes up to and including the next FF D8.
func (s *JPEGSplitter) findSOI() error {
	prevFF := false
	for {
		b, err := s.r.ReadByte()
		if err != nil {
			return err // io.EOF between images is a clean end
		}
		if prevFF && b == 0xD8 {
			return nil
		}
		prevFF = b == 0xFF
	}
}

// markerAfterFF reads the marker code after an FF, skipping fill bytes.
func (s *JPEGSplitter) markerAfterFF() (byte, error) {
	for {
		b, err := s.r.ReadByte()
		if err != nil {
			return 0, eofInside(err)
		}
		if b != 0xFF {
			return b, nil
		}
	}
}

func (s *JPEGSplitter) copySegment(n int) error {
	for n > 0 {
		chunk := min(n, 4096)
		p, err := s.r.Peek(chunk)
		if len(p) == 0 && err != nil {
			return eofInside(err)
		}
		s.keep(p...)
		if _, err := s.r.Discard(len(p)); err != nil {
			return eofInside(err)
		}
		n -= len(p)
	}
	return nil
}

// scan consumes entropy-coded data and returns the marker that ends it.
func (s *JPEGSplitter) scan() (byte, error) {
	for {
		// Copy the run of bytes up to the next FF in one go: entropy-coded
		// data is most of a JPEG, and byte-at-a-time is 10x slower.
		if n := s.r.Buffered(); n > 0 {
			p, _ := s.r.Peek(n)
			i := bytes.IndexByte(p, 0xFF)
			if i < 0 {
				i = len(p)
			}
			if i > 0 {
				s.keep(p[:i]...)
				_, _ = s.r.Discard(i)
				continue
			}
		}
		b, err := s.r.ReadByte()
		if err != nil {
			return 0, eofInside(err)
		}
		if b != 0xFF {
			s.keep(b)
			continue
		}
		m, err := s.markerAfterFF()
		if err != nil {
			return 0, err
		}
		if m == 0x00 || (m >= 0xD0 && m <= 0xD7) {
			s.keep(0xFF, m)
			continue
		}
		return m, nil
	}
}

func eofInside(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
