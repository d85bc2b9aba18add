package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/gateway/source"
)

// DefaultMaxFrameBytes is a camera's frame limit when the file sets none:
// a 1080p JPEG at ordinary quality is 200-600 KiB, and the server's default
// max_payload is 1 MiB.
const DefaultMaxFrameBytes = 900 << 10

// FileConfig is the gateway's YAML configuration file:
//
//	gateway: lobby-gw-1
//	site: hq
//	nats:
//	  url: nats://nats:4222
//	  creds: /etc/facegate/gateway.creds   # or nkey_seed: /etc/facegate/gateway.nk
//	  inbox_prefix: _INBOX.gateway-hq      # required with natsauth users
//	publish_timeout: 2s
//	cameras:
//	  - id: lobby
//	    source: rtsp://cam1.local/stream1
//	    fps: 5
//	    max_frame_bytes: 921600
//	claims:
//	  listen: ":8080"
//	  token_sha256: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08]
type FileConfig struct {
	Gateway        string         `json:"gateway"`
	Site           string         `json:"site"`
	NATS           NATSConfig     `json:"nats"`
	PublishTimeout string         `json:"publish_timeout,omitempty"`
	Cameras        []CameraConfig `json:"cameras"`
	Claims         *ClaimsFile    `json:"claims,omitempty"`
}

// NATSConfig is how the gateway connects.
type NATSConfig struct {
	URL string `json:"url"`
	// Creds is a .creds file (JWT + seed); NKeySeed a file holding an NKEY
	// seed (pkg/natsauth writes these). At most one.
	Creds    string `json:"creds,omitempty"`
	NKeySeed string `json:"nkey_seed,omitempty"`
	// InboxPrefix for JetStream replies; natsauth users may subscribe only
	// to their own (_INBOX.<user>).
	InboxPrefix string `json:"inbox_prefix,omitempty"`
}

// CameraConfig is one camera entry.
type CameraConfig struct {
	ID            string  `json:"id"`
	Source        string  `json:"source"`
	FPS           float64 `json:"fps"`
	MaxFrameBytes int     `json:"max_frame_bytes,omitempty"`
	// Loop replays folder: and file: sources forever.
	Loop bool `json:"loop,omitempty"`
	// KeepPNG publishes PNG stills as PNG instead of JPEG.
	KeepPNG bool `json:"keep_png,omitempty"`
}

// ClaimsFile configures the claims endpoint; absent disables it.
type ClaimsFile struct {
	Listen string `json:"listen"`
	// TokenSHA256 are hex SHA-256 digests of the readers' bearer tokens
	// (`printf %s TOKEN | sha256sum`).
	TokenSHA256 []string `json:"token_sha256"`
}

// LoadConfig reads and checks a configuration file.
func LoadConfig(path string) (*FileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gateway: config: %w", err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("gateway: config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses YAML strictly: unknown and duplicate keys are errors,
// so a misspelt option is not silently ignored.
func ParseConfig(data []byte) (*FileConfig, error) {
	var c FileConfig
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks every field, reporting all problems at once.
func (c *FileConfig) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Gateway == "" {
		add("gateway: name is required")
	}
	if err := bus.ValidateToken("site", c.Site); err != nil {
		add("site: %v", err)
	}
	if c.NATS.URL == "" {
		add("nats.url is required")
	}
	if c.NATS.Creds != "" && c.NATS.NKeySeed != "" {
		add("nats: set creds or nkey_seed, not both")
	}
	if _, err := c.publishTimeout(); err != nil {
		add("publish_timeout: %v", err)
	}
	if len(c.Cameras) == 0 && c.Claims == nil {
		add("cameras: none configured and no claims endpoint: the gateway would do nothing")
	}
	seen := map[string]bool{}
	for i, cam := range c.Cameras {
		where := fmt.Sprintf("cameras[%d]", i)
		if cam.ID != "" {
			where += fmt.Sprintf(" (%s)", cam.ID)
		}
		if err := bus.ValidateToken("camera", cam.ID); err != nil {
			add("%s.id: %v", where, err)
		} else if seen[cam.ID] {
			add("%s.id: camera %q is configured twice", where, cam.ID)
		}
		seen[cam.ID] = true
		if cam.Source == "" {
			add("%s.source is required", where)
		}
		if cam.FPS <= 0 || cam.FPS > 60 {
			add("%s.fps: %v is outside (0, 60]", where, cam.FPS)
		}
		if cam.MaxFrameBytes < 0 {
			add("%s.max_frame_bytes: %d is negative", where, cam.MaxFrameBytes)
		}
		if cam.Source != "" && cam.FPS > 0 && cam.MaxFrameBytes >= 0 {
			if _, err := source.Parse(cam.Source, cam.sourceOptions(source.HTTPOptions{}, "")); err != nil {
				add("%s.source: %v", where, err)
			}
		}
	}
	if c.Claims != nil {
		if c.Claims.Listen == "" {
			add("claims.listen is required when claims is set")
		}
		if len(c.Claims.TokenSHA256) == 0 {
			add("claims.token_sha256: at least one token hash is required")
		}
		if _, err := c.Claims.hashes(); err != nil {
			add("claims.token_sha256: %v", err)
		}
	}
	return errors.Join(errs...)
}

func (c *FileConfig) publishTimeout() (time.Duration, error) {
	if c.PublishTimeout == "" {
		return 2 * time.Second, nil
	}
	d, err := time.ParseDuration(c.PublishTimeout)
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, fmt.Errorf("%v must be positive", d)
	}
	return d, nil
}

func (cam CameraConfig) maxBytes() int {
	if cam.MaxFrameBytes == 0 {
		return DefaultMaxFrameBytes
	}
	return cam.MaxFrameBytes
}

func (cam CameraConfig) sourceOptions(h source.HTTPOptions, ffmpeg string) source.Options {
	return source.Options{FPS: cam.FPS, MaxFrameBytes: cam.maxBytes(), Loop: cam.Loop, KeepPNG: cam.KeepPNG, HTTP: h, FFmpeg: ffmpeg}
}

func (f *ClaimsFile) hashes() ([][sha256.Size]byte, error) {
	var out [][sha256.Size]byte
	for i, s := range f.TokenSHA256 {
		b, err := hex.DecodeString(strings.TrimSpace(s))
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("entry %d is not a hex SHA-256 digest (64 hex digits)", i)
		}
		out = append(out, [sha256.Size]byte(b))
	}
	return out, nil
}

// TokenHashes returns the decoded claims token hashes (nil without claims).
func (c *FileConfig) TokenHashes() [][sha256.Size]byte {
	if c.Claims == nil {
		return nil
	}
	h, _ := c.Claims.hashes() // checked by Validate
	return h
}

// PublishTimeoutValue is publish_timeout parsed (default 2 s).
func (c *FileConfig) PublishTimeoutValue() time.Duration {
	d, _ := c.publishTimeout() // checked by Validate
	return d
}

// BuildCameras turns the camera entries into Cameras with their sources.
func (c *FileConfig) BuildCameras(h source.HTTPOptions, ffmpeg string) ([]Camera, error) {
	cams := make([]Camera, 0, len(c.Cameras))
	for _, cc := range c.Cameras {
		src, err := source.Parse(cc.Source, cc.sourceOptions(h, ffmpeg))
		if err != nil {
			return nil, fmt.Errorf("gateway: camera %q: %w", cc.ID, err)
		}
		cams = append(cams, Camera{ID: cc.ID, Source: src, FPS: cc.FPS, MaxFrameBytes: cc.maxBytes()})
	}
	return cams, nil
}
