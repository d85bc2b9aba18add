package source

import (
	"bytes"
	"context"
	"fmt"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// Images replays still images (a folder's .jpg, .jpeg and .png files in
// name order, or one file) at a fixed interval, like a camera would send
// them. It is how a site is tested without cameras.
type Images struct {
	// Path is a folder or one image file.
	Path string
	// Interval between frames.
	Interval time.Duration
	// Loop starts over after the last image; without it Run returns nil.
	Loop bool
	// KeepPNG publishes PNG files as PNG; by default they are re-encoded to
	// JPEG, the format every consumer is tuned for.
	KeepPNG bool
	// MaxFrameBytes bounds one image; larger files are dropped.
	MaxFrameBytes int
}

func (s *Images) String() string { return "images " + s.Path }

// List returns the files Run replays, in order.
func (s *Images) List() ([]string, error) {
	st, err := os.Stat(s.Path)
	if err != nil {
		return nil, fmt.Errorf("source: images: %w", err)
	}
	if !st.IsDir() {
		return []string{s.Path}, nil
	}
	entries, err := os.ReadDir(s.Path)
	if err != nil {
		return nil, fmt.Errorf("source: images: %w", err)
	}
	var files []string
	for _, e := range entries {
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".jpg", ".jpeg", ".png":
			if e.Type().IsRegular() {
				files = append(files, filepath.Join(s.Path, e.Name()))
			}
		}
	}
	slices.Sort(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("source: images: no .jpg, .jpeg or .png files in %s", s.Path)
	}
	return files, nil
}

// Run implements Source.
func (s *Images) Run(ctx context.Context, sink Sink) error {
	files, err := s.List()
	if err != nil {
		return err
	}
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		for _, name := range files {
			if err := s.send(name, sink); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
			}
		}
		if !s.Loop {
			return nil
		}
	}
}

func (s *Images) send(name string, sink Sink) error {
	st, err := os.Stat(name)
	if err != nil {
		return fmt.Errorf("source: images: %w", err)
	}
	// A PNG that will be re-encoded may be larger than the limit on disk;
	// the limit applies to what is published, with a generous bound on what
	// is read.
	limit := int64(s.MaxFrameBytes)
	if s.isPNG(name) && !s.KeepPNG {
		limit *= 16
	}
	if st.Size() > limit {
		sink.Drop(DropOversize)
		return nil
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return fmt.Errorf("source: images: %w", err)
	}
	captured := time.Now()
	f, err := Probe(data)
	if err != nil {
		sink.Drop(DropCorrupt)
		return nil
	}
	if f.Encoding == facegatev1.ImageEncoding_IMAGE_ENCODING_PNG && !s.KeepPNG {
		jpg, err := pngToJPEG(data)
		if err != nil {
			sink.Drop(DropCorrupt)
			return nil
		}
		f.Data, f.Encoding = jpg, facegatev1.ImageEncoding_IMAGE_ENCODING_JPEG
	}
	if len(f.Data) > s.MaxFrameBytes {
		sink.Drop(DropOversize)
		return nil
	}
	f.Captured = captured
	sink.Frame(f)
	return nil
}

func (s *Images) isPNG(name string) bool { return strings.EqualFold(filepath.Ext(name), ".png") }

func pngToJPEG(data []byte) ([]byte, error) {
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
