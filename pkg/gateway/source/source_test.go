package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/facegate/facegate/pkg/testenv"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// recorder is a Sink that keeps what it got.
type recorder struct {
	mu      sync.Mutex
	frames  []Frame
	drops   map[string]int
	onN     int
	reached chan struct{}
}

func newRecorder(n int) *recorder {
	return &recorder{drops: map[string]int{}, onN: n, reached: make(chan struct{})}
}

func (r *recorder) Frame(f Frame) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.frames = append(r.frames, f)
	if len(r.frames) == r.onN {
		close(r.reached)
	}
}

func (r *recorder) Drop(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drops[reason]++
}

func (r *recorder) snapshot() ([]Frame, map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := map[string]int{}
	for k, v := range r.drops {
		d[k] = v
	}
	return append([]Frame(nil), r.frames...), d
}

func datasetJPEGs(t testing.TB, n int) [][]byte {
	t.Helper()
	dir := testenv.Dataset(t, "deepface/dataset")
	var out [][]byte
	for i := 1; len(out) < n; i++ {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("img%d.jpg", i)))
		if err != nil {
			t.Fatalf("dataset image: %v", err)
		}
		out = append(out, b)
	}
	return out
}

func tinyJPEG(t testing.TB, shade uint8) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 16, 8))
	for i := range img.Pix {
		img.Pix[i] = shade + uint8(i)
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 80}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// withThumbnail puts a complete JPEG inside an APP1 segment, as EXIF
// thumbnails are: a naive SOI..EOI search would cut the frame there.
func withThumbnail(t testing.TB, outer, thumb []byte) []byte {
	t.Helper()
	seg := append([]byte("Exif\x00\x00"), thumb...)
	n := len(seg) + 2
	out := append([]byte{0xFF, 0xD8, 0xFF, 0xE1, byte(n >> 8), byte(n)}, seg...)
	return append(out, outer[2:]...)
}

func TestJPEGSplitterDatasetStream(t *testing.T) {
	imgs := datasetJPEGs(t, 4)
	thumbed := withThumbnail(t, imgs[3], tinyJPEG(t, 10))
	var stream bytes.Buffer
	stream.WriteString("garbage before the first image\xff\x00")
	want := [][]byte{imgs[0], imgs[1], thumbed}
	for _, b := range want {
		stream.Write(b)
		stream.WriteString("\r\n")
	}
	sp := NewJPEGSplitter(&stream, 1<<22)
	for i, w := range want {
		got, err := sp.Next()
		if err != nil {
			t.Fatalf("image %d: %v", i, err)
		}
		if !bytes.Equal(got, w) {
			t.Fatalf("image %d: got %d bytes, want %d (the exact input image)", i, len(got), len(w))
		}
	}
	if _, err := sp.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last image: %v, want io.EOF", err)
	}
}

func TestJPEGSplitterOversizeAndTruncated(t *testing.T) {
	imgs := datasetJPEGs(t, 2)
	small := tinyJPEG(t, 50)
	var stream bytes.Buffer
	stream.Write(imgs[0]) // larger than the limit
	stream.Write(small)
	stream.Write(small[:len(small)-4]) // cut short (in its scan data) by the next image
	stream.Write(small)
	stream.Write(imgs[1][:100]) // stream ends inside an image
	sp := NewJPEGSplitter(&stream, len(small)+10)
	if _, err := sp.Next(); !errors.Is(err, ErrOversize) {
		t.Fatalf("oversized image: %v, want ErrOversize", err)
	}
	if got, err := sp.Next(); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("image after the oversized one: %v (%d bytes)", err, len(got))
	}
	if _, err := sp.Next(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("cut-short image: %v, want ErrCorrupt", err)
	}
	if got, err := sp.Next(); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("image after the cut-short one: %v (%d bytes)", err, len(got))
	}
	if _, err := sp.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("stream ending inside an image: %v, want io.ErrUnexpectedEOF", err)
	}
}

func FuzzJPEGSplitter(f *testing.F) {
	a, b := tinyJPEG(f, 0), tinyJPEG(f, 100)
	f.Add(append(append([]byte{}, a...), b...), 4096)
	f.Add(withThumbnail(f, a, b), 4096)
	f.Add(append([]byte("xx\xff\xd8\xff\xda\x00\x02\xff\x00\xff\xd0"), a...), 64)
	f.Add([]byte{0xFF, 0xD8, 0xFF, 0xD8, 0xFF, 0xD9}, 10)
	f.Fuzz(func(t *testing.T, data []byte, limit int) {
		if limit < 2 || limit > 1<<20 {
			limit = 4096
		}
		sp := NewJPEGSplitter(bytes.NewReader(data), limit)
		total := 0
		for i := 0; ; i++ {
			if i > len(data)+1 {
				t.Fatalf("more results (%d) than input bytes (%d): not consuming", i, len(data))
			}
			img, err := sp.Next()
			if errors.Is(err, ErrOversize) || errors.Is(err, ErrCorrupt) {
				continue
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				break
			}
			if len(img) > limit {
				t.Fatalf("image of %d bytes over the %d limit", len(img), limit)
			}
			if len(img) < 4 || img[0] != 0xFF || img[1] != 0xD8 || img[len(img)-2] != 0xFF || img[len(img)-1] != 0xD9 {
				t.Fatalf("image does not run from SOI to EOI: % x", img[:min(len(img), 8)])
			}
			total += len(img)
		}
		if total > len(data) {
			t.Fatalf("returned %d image bytes from %d input bytes", total, len(data))
		}
	})
}

// mjpegBody builds a multipart/x-mixed-replace body of parts.
func mjpegBody(t testing.TB, parts [][]byte) (string, []byte) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for _, p := range parts {
		pw, err := w.CreatePart(textproto.MIMEHeader{"Content-Type": {"image/jpeg"}})
		if err != nil {
			t.Fatal(err)
		}
		pw.Write(p)
	}
	w.Close()
	return "multipart/x-mixed-replace; boundary=" + w.Boundary(), b.Bytes()
}

func TestMJPEGReader(t *testing.T) {
	imgs := datasetJPEGs(t, 2)
	ct, body := mjpegBody(t, [][]byte{imgs[0], []byte("not a jpeg at all"), imgs[0][:len(imgs[0])/2], imgs[1]})
	r, err := NewMJPEGReader(bytes.NewReader(body), ct, 1<<22)
	if err != nil {
		t.Fatal(err)
	}
	if f, err := r.Next(); err != nil || !bytes.Equal(f.Data, imgs[0]) || f.Encoding != facegatev1.ImageEncoding_IMAGE_ENCODING_JPEG || f.Width == 0 {
		t.Fatalf("part 1: %v %+v", err, f.Width)
	}
	for i := 2; i <= 3; i++ {
		if _, err := r.Next(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("part %d (corrupt): %v, want ErrCorrupt", i, err)
		}
	}
	if f, err := r.Next(); err != nil || !bytes.Equal(f.Data, imgs[1]) {
		t.Fatalf("part 4: %v", err)
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v, want io.EOF", err)
	}
	if _, err := NewMJPEGReader(bytes.NewReader(body), "image/jpeg", 10); err == nil {
		t.Fatal("a non-multipart content type was accepted")
	}
	if _, err := NewMJPEGReader(bytes.NewReader(body), "multipart/x-mixed-replace", 10); err == nil {
		t.Fatal("a content type without boundary was accepted")
	}
}

func FuzzMJPEGReader(f *testing.F) {
	a := tinyJPEG(f, 0)
	ct, body := mjpegBody(f, [][]byte{a, []byte("junk"), a})
	_, boundary, _ := bytes.Cut([]byte(ct), []byte("boundary="))
	f.Add(body, string(boundary), 4096)
	f.Add([]byte("--b\r\n\r\n\xff\xd8\xff\xd9\r\n--b--"), "b", 16)
	f.Fuzz(func(t *testing.T, body []byte, boundary string, limit int) {
		if limit < 1 || limit > 1<<20 {
			limit = 4096
		}
		r, err := NewMJPEGReader(bytes.NewReader(body), "multipart/x-mixed-replace; boundary=\""+boundary+"\"", limit)
		if err != nil {
			return
		}
		for i := 0; i <= len(body); i++ {
			fr, err := r.Next()
			if errors.Is(err, ErrOversize) || errors.Is(err, ErrCorrupt) {
				continue
			}
			if err != nil {
				return
			}
			if len(fr.Data) > limit || fr.Width <= 0 || fr.Height <= 0 {
				t.Fatalf("frame of %d bytes (%dx%d) with limit %d", len(fr.Data), fr.Width, fr.Height, limit)
			}
		}
		t.Fatalf("more parts than body bytes (%d)", len(body))
	})
}

func TestImagesFolderSortedPNGAndLoop(t *testing.T) {
	dir := t.TempDir()
	jpgs := datasetJPEGs(t, 2)
	png, err := os.ReadFile(testenv.Dataset(t, "detector/single/skimage_astronaut.png"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"b.jpg": jpgs[1], "a.jpg": jpgs[0], "c.png": png, "notes.txt": []byte("x"), "d.jpg": []byte("broken")} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep_png=%v", keep), func(t *testing.T) {
			src := &Images{Path: dir, Interval: time.Millisecond, Loop: true, KeepPNG: keep, MaxFrameBytes: 4 << 20}
			rec := newRecorder(6) // two rounds of three images
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- src.Run(ctx, rec) }()
			select {
			case <-rec.reached:
			case <-time.After(30 * time.Second):
				t.Fatal("no 6 frames from a looping folder")
			}
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("Run after cancel: %v", err)
			}
			frames, drops := rec.snapshot()
			if !bytes.Equal(frames[0].Data, jpgs[0]) || !bytes.Equal(frames[1].Data, jpgs[1]) || !bytes.Equal(frames[3].Data, jpgs[0]) {
				t.Fatal("frames are not the folder's images in name order, looping")
			}
			wantEnc := facegatev1.ImageEncoding_IMAGE_ENCODING_JPEG
			if keep {
				wantEnc = facegatev1.ImageEncoding_IMAGE_ENCODING_PNG
			}
			if frames[2].Encoding != wantEnc || frames[2].Width != 512 || frames[2].Height != 512 {
				t.Fatalf("PNG frame: %v %dx%d, want %v 512x512", frames[2].Encoding, frames[2].Width, frames[2].Height, wantEnc)
			}
			if _, err := Probe(frames[2].Data); err != nil {
				t.Fatalf("PNG frame does not decode: %v", err)
			}
			if drops[DropCorrupt] < 1 {
				t.Fatalf("the broken d.jpg was not counted as corrupt: %v", drops)
			}
		})
	}
	// Without loop, Run ends after one pass.
	rec := newRecorder(-1)
	if err := (&Images{Path: dir, Interval: time.Millisecond, MaxFrameBytes: 100}).Run(context.Background(), rec); err != nil {
		t.Fatalf("finite replay: %v", err)
	}
	if frames, drops := rec.snapshot(); len(frames) != 0 || drops[DropOversize] != 3 {
		t.Fatalf("100-byte limit: %d frames, drops %v; want every image dropped as oversize", len(frames), drops)
	}
}

func TestParse(t *testing.T) {
	o := Options{FPS: 5, MaxFrameBytes: 1000}
	for spec, want := range map[string]string{
		"folder:/x":                         "*source.Images",
		"file:/x/a.PNG":                     "*source.Images",
		"file:/x/clip.mp4":                  "*source.FFmpeg",
		"rtsp://u:secret@cam/stream":        "*source.FFmpeg",
		"mjpeg+http://cam/video":            "*source.MJPEG",
		"snapshot+https://cam/snapshot.jpg": "*source.Snapshot",
	} {
		s, err := Parse(spec, o)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if got := fmt.Sprintf("%T", s); got != want {
			t.Errorf("%s: %s, want %s", spec, got, want)
		}
		if bytes.Contains([]byte(s.String()), []byte("secret")) {
			t.Errorf("%s: String() shows the password: %s", spec, s)
		}
	}
	for _, bad := range []string{"", "ftp://x", "folder:", "mjpeg+http://", "/no/scheme"} {
		if _, err := Parse(bad, o); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
	if _, err := Parse("folder:/x", Options{FPS: 0, MaxFrameBytes: 1}); err == nil {
		t.Error("fps 0 was accepted")
	}
}

func TestSnapshotAndMJPEGOverHTTP(t *testing.T) {
	imgs := datasetJPEGs(t, 3)
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/snapshot.jpg":
			mu.Lock()
			i := n
			n++
			mu.Unlock()
			if i == 1 {
				w.Write([]byte("corrupt snapshot"))
				return
			}
			w.Write(imgs[i%len(imgs)])
		case "/video":
			ct, body := mjpegBody(t, [][]byte{imgs[0], []byte("\xff\xd8corrupt part"), imgs[1], imgs[2]})
			w.Header().Set("Content-Type", ct)
			w.Write(body)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()

	snap := &Snapshot{URL: srv.URL + "/snapshot.jpg", Interval: time.Millisecond, Opts: HTTPOptions{MaxFrameBytes: 4 << 20}}
	rec := newRecorder(3)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- snap.Run(ctx, rec) }()
	select {
	case <-rec.reached:
	case <-time.After(30 * time.Second):
		t.Fatal("no 3 snapshots")
	}
	cancel()
	<-done
	frames, drops := rec.snapshot()
	if !bytes.Equal(frames[0].Data, imgs[0]) || !bytes.Equal(frames[1].Data, imgs[2]) || drops[DropCorrupt] != 1 {
		t.Fatalf("snapshots: first two frames wrong or corrupt snapshot not counted once (drops %v)", drops)
	}

	mj := &MJPEG{URL: srv.URL + "/video", Opts: HTTPOptions{MaxFrameBytes: 4 << 20}}
	rec = newRecorder(-1)
	err := mj.Run(context.Background(), rec)
	if err == nil {
		t.Fatal("an MJPEG stream that ended returned nil; it should be an error so the gateway reconnects")
	}
	frames, drops = rec.snapshot()
	if len(frames) != 3 || drops[DropCorrupt] != 1 || !bytes.Equal(frames[2].Data, imgs[2]) {
		t.Fatalf("MJPEG: %d frames, drops %v; want 3 frames and 1 corrupt part", len(frames), drops)
	}

	bad := &Snapshot{URL: srv.URL + "/missing", Interval: time.Millisecond, Opts: HTTPOptions{MaxFrameBytes: 100}}
	if err := bad.Run(context.Background(), newRecorder(-1)); err == nil {
		t.Fatal("a 404 snapshot URL did not fail")
	}
}

// BenchmarkJPEGSplitter measures splitting a stream of dataset JPEGs.
func BenchmarkJPEGSplitter(b *testing.B) {
	imgs := datasetJPEGs(b, 4)
	var stream []byte
	for _, im := range imgs {
		stream = append(stream, im...)
	}
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		sp := NewJPEGSplitter(bytes.NewReader(stream), 4<<20)
		for {
			if _, err := sp.Next(); err != nil {
				if !errors.Is(err, io.EOF) {
					b.Fatal(err)
				}
				break
			}
		}
	}
}
