package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // DecodeConfig for JPEG frames
	_ "image/png"  // DecodeConfig for PNG frames
	"time"

	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// Drop reasons a source reports. They are metric label values.
const (
	// DropOversize: the frame was larger than MaxFrameBytes. It was skipped
	// without being held in memory whole.
	DropOversize = "oversize"
	// DropCorrupt: the bytes were not a decodable JPEG or PNG.
	DropCorrupt = "corrupt"
)

// ErrOversize and ErrCorrupt are returned by the stream readers for one
// frame that was skipped; the stream itself can go on.
var (
	ErrOversize = errors.New("frame larger than the size limit")
	ErrCorrupt  = errors.New("frame is not a complete image")
)

// Frame is one encoded camera image.
type Frame struct {
	Data     []byte
	Encoding facegatev1.ImageEncoding
	// Width and Height are read from the image header.
	Width, Height int
	// Captured is when the source received the frame (the cameras used
	// here do not send a usable timestamp of their own).
	Captured time.Time
}

// Sink receives a source's frames and drop notices. Calls come from the
// source's Run goroutine only; a Sink must not block for long, because a
// camera that is not read falls behind (the gateway's sink only swaps a
// pointer).
type Sink interface {
	Frame(f Frame)
	Drop(reason string)
}

// Source is a camera.
type Source interface {
	// Run delivers frames to sink until ctx ends (returns ctx.Err()), the
	// source is exhausted (returns nil) or fails (returns the error).
	Run(ctx context.Context, sink Sink) error
	// String describes the source for logs, without credentials.
	String() string
}

// Probe checks that data is a JPEG or PNG whose header decodes and returns
// a Frame for it (Captured unset).
func Probe(data []byte) (Frame, error) {
	var enc facegatev1.ImageEncoding
	switch {
	case len(data) >= 4 && data[0] == 0xFF && data[1] == 0xD8:
		// A JPEG cut short still has a decodable header; the end marker is
		// what says the camera finished writing it.
		end := bytes.TrimRight(data, "\r\n\x00") // cameras pad parts with CRLF or zeros
		if len(end) < 2 || end[len(end)-2] != 0xFF || end[len(end)-1] != 0xD9 {
			return Frame{}, fmt.Errorf("source: JPEG of %d bytes has no end-of-image marker: %w", len(data), ErrCorrupt)
		}
		data = end
		enc = facegatev1.ImageEncoding_IMAGE_ENCODING_JPEG
	case len(data) >= 8 && bytes.Equal(data[:8], []byte("\x89PNG\r\n\x1a\n")):
		enc = facegatev1.ImageEncoding_IMAGE_ENCODING_PNG
	default:
		return Frame{}, fmt.Errorf("source: %d bytes are neither JPEG nor PNG: %w", len(data), ErrCorrupt)
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return Frame{}, fmt.Errorf("source: image header: %v: %w", err, ErrCorrupt)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return Frame{}, fmt.Errorf("source: image is %dx%d: %w", cfg.Width, cfg.Height, ErrCorrupt)
	}
	return Frame{Data: data, Encoding: enc, Width: cfg.Width, Height: cfg.Height}, nil
}

// deliver probes data and hands it to sink, or reports why it was dropped.
func deliver(sink Sink, data []byte, captured time.Time) bool {
	f, err := Probe(data)
	if err != nil {
		sink.Drop(DropCorrupt)
		return false
	}
	f.Captured = captured
	sink.Frame(f)
	return true
}

// dropFor maps a stream reader's per-frame error to a drop reason, or ""
// when the error ends the stream.
func dropFor(err error) string {
	switch {
	case errors.Is(err, ErrOversize):
		return DropOversize
	case errors.Is(err, ErrCorrupt):
		return DropCorrupt
	}
	return ""
}
