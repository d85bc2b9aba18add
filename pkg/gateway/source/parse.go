package source

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// Options are the per-camera settings Parse builds a source with.
type Options struct {
	// FPS is the camera's target rate: the replay rate of images, the
	// sampling rate given to ffmpeg, the polling rate of snapshots.
	FPS float64
	// MaxFrameBytes bounds one frame.
	MaxFrameBytes int
	// Loop replays folders and files forever.
	Loop bool
	// KeepPNG publishes PNG images as PNG instead of re-encoding them.
	KeepPNG bool
	// HTTP is used by the HTTP sources (Client, StallTimeout).
	HTTP HTTPOptions
	// FFmpeg is the ffmpeg binary; default "ffmpeg".
	FFmpeg string
}

// Parse builds the source a camera's configured spec names:
//
//	folder:/path            still images in name order (Images)
//	file:/path.jpg|.png     one still image (Images)
//	file:/path.mp4          any other file: a video decoded by ffmpeg
//	rtsp://... rtsps://...  an RTSP stream decoded by ffmpeg
//	mjpeg+http(s)://...     MJPEG over HTTP
//	snapshot+http(s)://...  HTTP snapshots polled at FPS
func Parse(spec string, o Options) (Source, error) {
	if o.FPS <= 0 {
		return nil, fmt.Errorf("source %q: fps %v must be positive", redactSpec(spec), o.FPS)
	}
	if o.MaxFrameBytes <= 0 {
		return nil, fmt.Errorf("source %q: max_frame_bytes %d must be positive", redactSpec(spec), o.MaxFrameBytes)
	}
	interval := time.Duration(float64(time.Second) / o.FPS)
	o.HTTP.MaxFrameBytes = o.MaxFrameBytes
	scheme, rest, ok := strings.Cut(spec, ":")
	if !ok {
		return nil, fmt.Errorf("source %q: want folder:, file:, rtsp://, mjpeg+http:// or snapshot+http://", redactSpec(spec))
	}
	switch scheme {
	case "folder", "file":
		if rest == "" {
			return nil, fmt.Errorf("source %q: path is empty", spec)
		}
		if scheme == "file" && !isImage(rest) {
			return &FFmpeg{Input: rest, FPS: o.FPS, Loop: o.Loop, MaxFrameBytes: o.MaxFrameBytes, Binary: o.FFmpeg}, nil
		}
		return &Images{Path: rest, Interval: interval, Loop: o.Loop, KeepPNG: o.KeepPNG, MaxFrameBytes: o.MaxFrameBytes}, nil
	case "rtsp", "rtsps":
		if err := checkURL(spec); err != nil {
			return nil, err
		}
		return &FFmpeg{Input: spec, FPS: o.FPS, MaxFrameBytes: o.MaxFrameBytes, Binary: o.FFmpeg}, nil
	case "mjpeg+http", "mjpeg+https":
		u := strings.TrimPrefix(spec, "mjpeg+")
		if err := checkURL(u); err != nil {
			return nil, err
		}
		return &MJPEG{URL: u, Opts: o.HTTP}, nil
	case "snapshot+http", "snapshot+https":
		u := strings.TrimPrefix(spec, "snapshot+")
		if err := checkURL(u); err != nil {
			return nil, err
		}
		return &Snapshot{URL: u, Interval: interval, Opts: o.HTTP}, nil
	}
	return nil, fmt.Errorf("source %q: unknown kind %q: want folder:, file:, rtsp://, mjpeg+http:// or snapshot+http://", redactSpec(spec), scheme)
}

func isImage(path string) bool {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jpg", ".jpeg", ".png":
		return true
	}
	return false
}

func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("source: URL %s does not parse", Redact(raw))
	}
	if u.Host == "" {
		return fmt.Errorf("source: URL %s has no host", Redact(raw))
	}
	return nil
}

func redactSpec(spec string) string {
	if strings.Contains(spec, "://") {
		return Redact(spec)
	}
	return spec
}
