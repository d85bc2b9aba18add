package source

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"strings"
)

// MJPEGReader reads the parts of a multipart/x-mixed-replace body, the way
// IP cameras serve MJPEG over HTTP: one JPEG per part.
type MJPEGReader struct {
	mr  *multipart.Reader
	max int
}

// NewMJPEGReader reads body, whose Content-Type header is contentType, with
// parts of at most maxBytes.
func NewMJPEGReader(body io.Reader, contentType string, maxBytes int) (*MJPEGReader, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, fmt.Errorf("source: MJPEG content type %q: %w", contentType, err)
	}
	if !strings.HasPrefix(mt, "multipart/") {
		return nil, fmt.Errorf("source: MJPEG content type is %q, want multipart/x-mixed-replace", mt)
	}
	boundary := params["boundary"]
	if boundary == "" {
		return nil, fmt.Errorf("source: MJPEG content type %q has no boundary", contentType)
	}
	return &MJPEGReader{mr: multipart.NewReader(body, boundary), max: maxBytes}, nil
}

// Next returns the next part's bytes. ErrOversize and ErrCorrupt (a part
// that is not a complete JPEG or PNG) skip one part: call Next again.
// io.EOF is the end of the stream; other errors mean the stream itself is
// broken.
func (m *MJPEGReader) Next() (Frame, error) {
	p, err := m.mr.NextPart()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return Frame{}, io.EOF
		}
		return Frame{}, fmt.Errorf("source: MJPEG stream: %w", err)
	}
	defer p.Close()
	data, err := io.ReadAll(io.LimitReader(p, int64(m.max)+1))
	if err != nil {
		return Frame{}, fmt.Errorf("source: MJPEG part: %w", eofInside(err))
	}
	if len(data) > m.max {
		// NextPart skips the rest of this part.
		return Frame{}, fmt.Errorf("source: MJPEG part over %d bytes skipped: %w", m.max, ErrOversize)
	}
	return Probe(data)
}
