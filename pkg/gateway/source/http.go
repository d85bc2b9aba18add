package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// HTTPOptions configure the HTTP sources.
type HTTPOptions struct {
	// Client is the HTTP client; nil is a client with no overall timeout
	// (an MJPEG response never ends) that follows redirects.
	Client *http.Client
	// MaxFrameBytes bounds one image.
	MaxFrameBytes int
	// StallTimeout ends an MJPEG stream that sent no part for this long,
	// and bounds one snapshot request. Default 10 s.
	StallTimeout time.Duration
}

func (o HTTPOptions) client() *http.Client {
	if o.Client != nil {
		return o.Client
	}
	return http.DefaultClient
}

func (o HTTPOptions) stall() time.Duration {
	if o.StallTimeout > 0 {
		return o.StallTimeout
	}
	return 10 * time.Second
}

// Redact returns u without its password, for logs and errors.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}

// MJPEG reads a multipart/x-mixed-replace stream from URL.
type MJPEG struct {
	URL  string
	Opts HTTPOptions
}

func (m *MJPEG) String() string { return "mjpeg " + Redact(m.URL) }

// Run implements Source.
func (m *MJPEG) Run(ctx context.Context, sink Sink) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.URL, nil)
	if err != nil {
		return fmt.Errorf("source: %s: %w", m, err)
	}
	// A camera that accepts the connection but does not answer, or keeps
	// it open and stops sending, is as dead as one that closed it; the
	// watchdog turns the silence into an error.
	errStalled := fmt.Errorf("source: %s: nothing received for %v", m, m.Opts.stall())
	watchdog := time.AfterFunc(m.Opts.stall(), func() { cancel(errStalled) })
	defer watchdog.Stop()
	resp, err := m.Opts.client().Do(req)
	if err != nil {
		if cerr := context.Cause(ctx); cerr != nil && errors.Is(cerr, errStalled) {
			return cerr
		}
		return fmt.Errorf("source: %s: %w", m, redactErr(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("source: %s: HTTP status %s", m, resp.Status)
	}
	mr, err := NewMJPEGReader(resp.Body, resp.Header.Get("Content-Type"), m.Opts.MaxFrameBytes)
	if err != nil {
		return fmt.Errorf("source: %s: %w", m, err)
	}
	for {
		f, err := mr.Next()
		watchdog.Reset(m.Opts.stall())
		if err == nil {
			f.Captured = time.Now()
			sink.Frame(f)
			continue
		}
		if reason := dropFor(err); reason != "" {
			sink.Drop(reason)
			continue
		}
		if cerr := context.Cause(ctx); cerr != nil {
			if errors.Is(cerr, context.Canceled) || errors.Is(cerr, context.DeadlineExceeded) {
				return ctx.Err()
			}
			return cerr
		}
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("source: %s: stream ended", m)
		}
		return fmt.Errorf("source: %s: %w", m, err)
	}
}

// Snapshot polls a still-image URL.
type Snapshot struct {
	URL string
	// Interval between requests (the camera's target rate).
	Interval time.Duration
	Opts     HTTPOptions
}

func (s *Snapshot) String() string { return "snapshot " + Redact(s.URL) }

// Run implements Source. A failed request ends Run with the error, so
// that the gateway's back-off applies instead of hammering a dead camera.
func (s *Snapshot) Run(ctx context.Context, sink Sink) error {
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		if err := s.once(ctx, sink); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (s *Snapshot) once(ctx context.Context, sink Sink) error {
	ctx, cancel := context.WithTimeout(ctx, s.Opts.stall())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	if err != nil {
		return fmt.Errorf("source: %s: %w", s, err)
	}
	resp, err := s.Opts.client().Do(req)
	if err != nil {
		return fmt.Errorf("source: %s: %w", s, redactErr(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("source: %s: HTTP status %s", s, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, int64(s.Opts.MaxFrameBytes)+1))
	if err != nil {
		return fmt.Errorf("source: %s: read body: %w", s, redactErr(err))
	}
	if len(data) > s.Opts.MaxFrameBytes {
		sink.Drop(DropOversize)
		return nil
	}
	deliver(sink, data, time.Now())
	return nil
}

// redactErr strips the URL (which may carry a password) from a client
// error: *url.Error prints it.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}
