package gateway

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// rtspCamera is a minimal RTSP server (RFC 2326, RTP over the RTSP TCP
// connection, H.264 packetised per RFC 6184) that plays an H.264 clip in a
// loop at 10 fps, the way an IP camera does.
//
// Debian's ffmpeg 5.1 cannot be the server: its -rtsp_flags listen is an
// input (demuxer) option that accepts a pushed stream, not a muxer option
// that serves clients. The client side, which is what is under test, is the
// real ffmpeg the gateway runs.
type rtspCamera struct {
	ln    net.Listener
	aus   [][][]byte // access units, each a list of NAL units
	sps   []byte
	pps   []byte
	mu    sync.Mutex
	conns map[net.Conn]bool
	wg    sync.WaitGroup
	once  sync.Once
}

// h264AnnexB converts clip to an Annex B H.264 stream with SPS/PPS before
// every key frame.
func h264AnnexB(t *testing.T, ffmpeg, clip string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "clip.h264")
	cmd := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-i", clip, "-c", "copy",
		"-bsf:v", "h264_mp4toannexb,dump_extra", "-f", "h264", "-y", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("annex B: %v: %s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// splitNALs splits an Annex B stream at its start codes.
func splitNALs(b []byte) [][]byte {
	var nals [][]byte
	for {
		i := bytes.Index(b, []byte{0, 0, 1})
		if i < 0 {
			break
		}
		b = b[i+3:]
		j := bytes.Index(b, []byte{0, 0, 1})
		if j < 0 {
			nals = append(nals, b)
			break
		}
		nal := bytes.TrimRight(b[:j], "\x00")
		if len(nal) > 0 {
			nals = append(nals, nal)
		}
		b = b[j:]
	}
	return nals
}

func startRTSPCamera(t *testing.T, addr string, annexB []byte) *rtspCamera {
	t.Helper()
	c := &rtspCamera{conns: map[net.Conn]bool{}}
	var au [][]byte
	for _, n := range splitNALs(annexB) {
		switch n[0] & 0x1F {
		case 7:
			c.sps = n
		case 8:
			c.pps = n
		}
		au = append(au, n)
		if typ := n[0] & 0x1F; typ == 1 || typ == 5 { // a slice ends the access unit (one slice per frame)
			c.aus = append(c.aus, au)
			au = nil
		}
	}
	if len(c.aus) == 0 || c.sps == nil || c.pps == nil {
		t.Fatalf("clip has %d access units, SPS %v, PPS %v", len(c.aus), c.sps != nil, c.pps != nil)
	}
	var err error
	for range 50 { // the port may still be held by the previous server's last connection
		if c.ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.wg.Add(1)
	go c.accept()
	t.Cleanup(c.Close)
	return c
}

// Close stops the server and drops every client, like a camera losing power.
func (c *rtspCamera) Close() {
	c.once.Do(func() {
		c.ln.Close()
		c.mu.Lock()
		for conn := range c.conns {
			conn.Close()
		}
		c.mu.Unlock()
		c.wg.Wait()
	})
}

func (c *rtspCamera) accept() {
	defer c.wg.Done()
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		c.conns[conn] = true
		c.mu.Unlock()
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer conn.Close()
			c.serve(conn)
		}()
	}
}

func (c *rtspCamera) sdp() string {
	b64 := base64.StdEncoding.EncodeToString
	return "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=facegate test camera\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n" +
		"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n" +
		"a=fmtp:96 packetization-mode=1;sprop-parameter-sets=" + b64(c.sps) + "," + b64(c.pps) + "\r\n" +
		"a=control:trackID=0\r\n"
}

func (c *rtspCamera) serve(conn net.Conn) {
	r := bufio.NewReader(conn)
	var wmu sync.Mutex
	write := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		_, err := conn.Write(b)
		return err
	}
	reply := func(cseq string, extra string, body string) error {
		msg := "RTSP/1.0 200 OK\r\nCSeq: " + cseq + "\r\n" + extra
		if body != "" {
			msg += fmt.Sprintf("Content-Length: %d\r\n", len(body))
		}
		return write([]byte(msg + "\r\n" + body))
	}
	stop := make(chan struct{})
	defer close(stop)
	playing := false
	for {
		// After PLAY the client interleaves RTCP ('$' frames) with requests.
		b, err := r.Peek(1)
		if err != nil {
			return
		}
		if b[0] == '$' {
			var hdr [4]byte
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return
			}
			if _, err := r.Discard(int(binary.BigEndian.Uint16(hdr[2:]))); err != nil {
				return
			}
			continue
		}
		tp := textproto.NewReader(r)
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		h, err := tp.ReadMIMEHeader()
		if err != nil {
			return
		}
		if n := h.Get("Content-Length"); n != "" {
			var l int
			fmt.Sscanf(n, "%d", &l)
			r.Discard(l)
		}
		method, url, _ := strings.Cut(line, " ")
		url, _, _ = strings.Cut(url, " ")
		cseq := h.Get("Cseq")
		switch method {
		case "OPTIONS":
			err = reply(cseq, "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n", "")
		case "DESCRIBE":
			err = reply(cseq, "Content-Type: application/sdp\r\nContent-Base: "+strings.TrimSuffix(url, "/")+"/\r\n", c.sdp())
		case "SETUP":
			err = reply(cseq, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\nSession: 12345678;timeout=60\r\n", "")
		case "PLAY":
			err = reply(cseq, "Session: 12345678\r\n", "")
			if err == nil && !playing {
				playing = true
				go c.stream(write, stop)
			}
		default: // GET_PARAMETER keep-alives, TEARDOWN
			err = reply(cseq, "Session: 12345678\r\n", "")
		}
		if err != nil {
			return
		}
	}
}

// stream sends the access units as RTP over the connection at 10 fps.
func (c *rtspCamera) stream(write func([]byte) error, stop <-chan struct{}) {
	const maxPayload = 1200
	var seq uint16
	var ts uint32
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	send := func(payload []byte, marker bool) error {
		pkt := make([]byte, 4+12+len(payload))
		pkt[0] = '$'
		binary.BigEndian.PutUint16(pkt[2:], uint16(12+len(payload)))
		rtp := pkt[4:]
		rtp[0] = 0x80
		rtp[1] = 96
		if marker {
			rtp[1] |= 0x80
		}
		binary.BigEndian.PutUint16(rtp[2:], seq)
		binary.BigEndian.PutUint32(rtp[4:], ts)
		binary.BigEndian.PutUint32(rtp[8:], 0xFACE6A7E)
		copy(rtp[12:], payload)
		seq++
		return write(pkt)
	}
	for {
		for _, au := range c.aus {
			for i, nal := range au {
				last := i == len(au)-1
				if len(nal) <= maxPayload {
					if send(nal, last) != nil {
						return
					}
					continue
				}
				// FU-A fragments.
				ind := nal[0]&0xE0 | 28
				rest := nal[1:]
				for first := true; len(rest) > 0; first = false {
					n := min(len(rest), maxPayload-2)
					fh := nal[0] & 0x1F
					if first {
						fh |= 0x80
					}
					end := n == len(rest)
					if end {
						fh |= 0x40
					}
					if send(append([]byte{ind, fh}, rest[:n]...), last && end) != nil {
						return
					}
					rest = rest[n:]
				}
			}
			ts += 90000 / 10
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}
}
