package gateway

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/gateway/source"
)

// Camera is one configured camera.
type Camera struct {
	// ID is the camera's subject token.
	ID string
	// Source produces its frames.
	Source source.Source
	// FPS is the most frames per second published; faster frames are
	// dropped (reason "rate").
	FPS float64
	// MaxFrameBytes bounds one published image.
	MaxFrameBytes int
}

// Backoff is the reconnect delay of a failed source: Initial, doubling up
// to Max, each wait drawn uniformly from [d/2, d] so that cameras that
// failed together (a switch rebooted) do not reconnect in lock-step.
type Backoff struct {
	Initial, Max time.Duration
}

func (b Backoff) next(d time.Duration) time.Duration {
	if d <= 0 {
		return b.Initial
	}
	return min(2*d, b.Max)
}

func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// camera runs one camera: its source in a reconnect loop, the sampler, and
// the publisher goroutine behind a one-frame mailbox.
type camera struct {
	cam     Camera
	site    string
	pub     *Publisher
	m       *Metrics
	log     *zap.Logger
	backoff Backoff

	interval time.Duration
	nextDue  time.Time // sampler state, source goroutine only
	seq      uint64    // publisher goroutine only

	mu      sync.Mutex
	pending *source.Frame
	wake    chan struct{}
	// delivered counts frames put in the mailbox in the current source
	// run; a run that delivered resets the back-off.
	delivered int
}

func newCamera(c Camera, site string, pub *Publisher, m *Metrics, log *zap.Logger, b Backoff) *camera {
	return &camera{
		cam: c, site: site, pub: pub, m: m, log: log.With(zap.String("camera", c.ID)), backoff: b,
		interval: time.Duration(float64(time.Second) / c.FPS),
		wake:     make(chan struct{}, 1),
	}
}

func (c *camera) drop(reason string) {
	c.m.Dropped.WithLabelValues(c.site, c.cam.ID, reason).Inc()
}

// Drop implements source.Sink.
func (c *camera) Drop(reason string) { c.drop(reason) }

// Frame implements source.Sink: sample to the target rate, bound the size,
// and leave the frame in the mailbox, replacing one still waiting.
func (c *camera) Frame(f source.Frame) {
	if len(f.Data) > c.cam.MaxFrameBytes {
		c.drop(source.DropOversize)
		return
	}
	// Accept a frame when its slot has come; slots advance by the interval
	// so that a camera slightly faster than the target still averages the
	// target, and restart after a gap so that a burst is not let through.
	// A quarter interval of slack absorbs scheduling jitter of a source
	// that already paces itself at the target rate.
	if f.Captured.Before(c.nextDue.Add(-c.interval / 4)) {
		c.drop(DropRate)
		return
	}
	c.nextDue = c.nextDue.Add(c.interval)
	if c.nextDue.Before(f.Captured) {
		c.nextDue = f.Captured.Add(c.interval)
	}
	c.mu.Lock()
	if c.pending != nil {
		c.drop(DropBacklog)
	}
	c.pending = &f
	c.delivered++
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *camera) take() *source.Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.pending
	c.pending = nil
	return f
}

// run reads the source until ctx ends or the source is exhausted, then
// publishes what is left in the mailbox and returns.
func (c *camera) run(ctx context.Context) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.publishLoop(ctx, done)
	}()
	c.sourceLoop(ctx)
	close(done)
	wg.Wait()
}

func (c *camera) sourceLoop(ctx context.Context) {
	var delay time.Duration
	for {
		c.mu.Lock()
		c.delivered = 0
		c.mu.Unlock()
		err := c.cam.Source.Run(ctx, c)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			c.log.Info("camera source finished", zap.Stringer("source", c.cam.Source))
			return
		}
		c.mu.Lock()
		if c.delivered > 0 {
			delay = 0
		}
		c.mu.Unlock()
		delay = c.backoff.next(delay)
		wait := jitter(delay)
		c.log.Warn("camera source failed; reconnecting", zap.Stringer("source", c.cam.Source),
			zap.Duration("after", wait), zap.Error(err))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		c.m.Reconnects.WithLabelValues(c.site, c.cam.ID).Inc()
	}
}

// publishLoop publishes mailbox frames until done is closed; then it
// publishes the last waiting frame (the drain) with a context of its own,
// since ctx has ended by then.
func (c *camera) publishLoop(ctx context.Context, done <-chan struct{}) {
	for {
		select {
		case <-c.wake:
			if f := c.take(); f != nil {
				c.publish(ctx, *f)
			}
		case <-done:
			if f := c.take(); f != nil {
				c.publish(context.WithoutCancel(ctx), *f)
			}
			return
		}
	}
}

func (c *camera) publish(ctx context.Context, f source.Frame) {
	c.seq++
	_, err := c.pub.Publish(ctx, c.cam.ID, c.seq, f)
	switch {
	case err == nil:
		c.m.Published.WithLabelValues(c.site, c.cam.ID).Inc()
	case errors.Is(err, ErrNATSUnavailable):
		// The sequence number is not spent on a frame that never left.
		c.seq--
		c.drop(DropNATSDown)
	case errors.Is(err, bus.ErrTooLarge):
		// Over the server's max_payload: the camera's max_frame_bytes is set
		// higher than the bus allows.
		c.seq--
		c.drop(source.DropOversize)
		c.log.Warn("frame larger than NATS accepts; lower max_frame_bytes", zap.Error(err))
	case errors.Is(err, ErrInvalidFrame):
		c.seq--
		c.drop(DropInvalid)
		c.log.Warn("frame refused", zap.Error(err))
	default:
		c.drop(DropPublishError)
		c.log.Debug("frame publish failed", zap.Error(err))
	}
}
