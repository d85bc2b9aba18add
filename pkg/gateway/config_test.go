package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/facegate/facegate/pkg/gateway/source"
)

const goodConfig = `
gateway: gw-1
site: hq
nats:
  url: nats://127.0.0.1:4222
  nkey_seed: /etc/facegate/gw.nk
  inbox_prefix: _INBOX.gw-1
publish_timeout: 1500ms
cameras:
  - id: lobby
    source: folder:/srv/frames
    fps: 5
    loop: true
  - id: door-2
    source: rtsp://user:pw@cam2.local/stream1
    fps: 10
    max_frame_bytes: 500000
  - id: door-3
    source: mjpeg+http://cam3.local/video
    fps: 2
  - id: door-4
    source: snapshot+https://cam4.local/snap.jpg
    fps: 1
  - id: door-5
    source: file:/srv/clip.mp4
    fps: 5
claims:
  listen: ":8080"
  token_sha256:
    - 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
`

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if c.PublishTimeoutValue().Milliseconds() != 1500 || len(c.TokenHashes()) != 1 {
		t.Fatalf("publish timeout %v, %d token hashes", c.PublishTimeoutValue(), len(c.TokenHashes()))
	}
	cams, err := c.BuildCameras(source.HTTPOptions{}, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(cams) != 5 || cams[0].MaxFrameBytes != DefaultMaxFrameBytes || cams[1].MaxFrameBytes != 500000 {
		t.Fatalf("cameras: %+v", cams)
	}
	if strings.Contains(cams[1].Source.String(), "pw") {
		t.Fatalf("camera source shows the RTSP password: %s", cams[1].Source)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "gw.yaml")
	os.WriteFile(p, []byte(goodConfig), 0o600)
	if _, err := LoadConfig(p); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("a missing file loaded")
	}
}

func TestParseConfigRefusals(t *testing.T) {
	for name, tc := range map[string]struct{ old, new, want string }{
		"unknown key":      {"publish_timeout: 1500ms", "publish_timeout: 1500ms\nframerate: 3", "framerate"},
		"unknown cam key":  {"    loop: true", "    loop: true\n    rotate: 90", "rotate"},
		"bad site":         {"site: hq", "site: h.q", "site"},
		"no gateway":       {"gateway: gw-1", "", "gateway"},
		"no nats url":      {"  url: nats://127.0.0.1:4222", "", "nats.url"},
		"two creds":        {"  nkey_seed:", "  creds: /x.creds\n  nkey_seed:", "creds or nkey_seed"},
		"bad duration":     {"1500ms", "soon", "publish_timeout"},
		"bad camera id":    {"id: lobby", "id: lob by", "cameras[0]"},
		"duplicate camera": {"id: door-3", "id: lobby", "twice"},
		"no fps":           {"    fps: 5\n    loop", "    loop", "fps"},
		"fps too high":     {"fps: 10", "fps: 500", "fps"},
		"bad source":       {"folder:/srv/frames", "ftp://cam/x", "unknown kind"},
		"negative size":    {"max_frame_bytes: 500000", "max_frame_bytes: -1", "max_frame_bytes"},
		"bad token hash":   {"    - 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "    - not-hex", "token_sha256"},
		"no listen":        {"  listen: \":8080\"", "", "claims.listen"},
		"duplicate key":    {"site: hq", "site: hq\nsite: hq2", "site"},
		"wrong type":       {"fps: 1\n", "fps: fast\n", "fps"},
	} {
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(goodConfig, tc.old) {
				t.Fatalf("test setup: %q not in the config", tc.old)
			}
			_, err := ParseConfig([]byte(strings.Replace(goodConfig, tc.old, tc.new, 1)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}
