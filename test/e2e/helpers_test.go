package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/jpeg"
	_ "image/png" // the crops
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/testenv"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

// crop is one of the face-api.js crops (8 TV characters x 5, 150x150
// grayscale PNGs): small, so they decode and embed fast. With the default
// encoder (dlib, mirrored; threshold 0.4163) sheldon, howard and penny are
// more than 0.43 apart from each other, and each one's crops within 0.35 of
// one another, so the tests' identities cannot be confused.
func crop(t testing.TB, who string, i int) []byte {
	t.Helper()
	return readDataset(t, fmt.Sprintf("face-api.js/examples/images/%s/%s%d.png", who, who, i))
}

func readDataset(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(testenv.Dataset(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// passingCrops are the crops showing exactly one face that passes the
// quality gate (the API refuses others with 422), as dataset paths. Which
// ones pass depends on the gate's thresholds (a few are turned heads), so
// it is measured, not listed.
func passingCrops(t testing.TB, eng *face.Engine) []string {
	t.Helper()
	var out []string
	for _, who := range []string{"amy", "bernadette", "howard", "leonard", "penny", "raj", "sheldon", "stuart"} {
		for i := 1; i <= 5; i++ {
			rel := fmt.Sprintf("face-api.js/examples/images/%s/%s%d.png", who, who, i)
			res, err := eng.Analyze(context.Background(), readDataset(t, rel))
			if err != nil {
				t.Fatalf("analyze %s: %v", rel, err)
			}
			if len(res.Faces) == 1 && res.Faces[0].Quality.OK {
				out = append(out, rel)
			}
		}
	}
	if len(out) < 10 {
		t.Fatalf("only %d face-api.js crops pass the quality gate", len(out))
	}
	return out
}

// blankJPEG is an empty grey frame: a camera looking at a corridor.
func blankJPEG(t testing.TB) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 160, 120))
	for i := range img.Pix {
		img.Pix[i] = 128
	}
	img.Set(3, 3, color.Gray{Y: 10})
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// scene is what a folder camera sees: a folder holding one image file that
// the camera replays in a loop. The gateway's folder source lists the folder
// once and reads each file when it sends it, so replacing the file
// (atomically, by rename) changes what the camera shows from the next frame
// on; a frame captured after the rename shows the new content, because the
// source stamps the capture time after reading the file.
type scene struct {
	dir  string
	name string
}

func newScene(t testing.TB, initial []byte) *scene {
	t.Helper()
	s := &scene{dir: t.TempDir(), name: "scene.jpg"}
	s.show(t, initial)
	return s
}

// show replaces the image and returns the time from which captured frames
// show it.
func (s *scene) show(t testing.TB, img []byte) time.Time {
	t.Helper()
	tmp := filepath.Join(s.dir, ".next")
	if err := os.WriteFile(tmp, img, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, s.name)); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

func (s *scene) source() string { return "folder:" + s.dir }

// apiClient calls the enrolment API with a bearer token.
type apiClient struct {
	base, token string
	hc          *http.Client
}

// reply is an answer, or the error that prevented one.
type reply struct {
	status int
	body   []byte
	err    error
}

func (r reply) String() string {
	if r.err != nil {
		return r.err.Error()
	}
	return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.body))
}

func (c *apiClient) do(ctx context.Context, method, path, contentType string, body []byte) reply {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return reply{err: err}
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{status: resp.StatusCode, err: err}
	}
	return reply{status: resp.StatusCode, body: b}
}

func (c *apiClient) json(ctx context.Context, method, path string, v any) reply {
	var body []byte
	if v != nil {
		var err error
		if body, err = json.Marshal(v); err != nil {
			return reply{err: err}
		}
	}
	ct := ""
	if body != nil {
		ct = "application/json"
	}
	return c.do(ctx, method, path, ct, body)
}

// photos uploads images in form field "photo".
func (c *apiClient) photos(ctx context.Context, person string, imgs ...[]byte) reply {
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for i, img := range imgs {
		fw, err := w.CreateFormFile("photo", fmt.Sprintf("photo%d.png", i))
		if err != nil {
			return reply{err: err}
		}
		if _, err := fw.Write(img); err != nil {
			return reply{err: err}
		}
	}
	if err := w.Close(); err != nil {
		return reply{err: err}
	}
	return c.do(ctx, "POST", "/v1/people/"+person+"/photos", w.FormDataContentType(), b.Bytes())
}

// must fails the test unless the call answered want.
func must(t testing.TB, what string, r reply, want int) reply {
	t.Helper()
	if r.err != nil || r.status != want {
		t.Fatalf("%s: %s, want %d", what, r, want)
	}
	return r
}

// decisionLog follows the DECISIONS stream from its first message with an
// ordered consumer, so no decision is missed, whenever it was stored.
type decisionLog struct {
	mu   sync.Mutex
	all  []*fv1.Decision
	seqs []uint64
	cond chan struct{} // closed and replaced on every append
	errs []error
}

func followDecisions(t testing.TB, js jetstream.JetStream) *decisionLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cons, err := js.OrderedConsumer(ctx, bus.StreamDecisions, jetstream.OrderedConsumerConfig{})
	if err != nil {
		cancel()
		t.Fatalf("follow decisions: %v", err)
	}
	l := &decisionLog{cond: make(chan struct{})}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		d, err := bus.DecodeDecision(m.Data())
		l.mu.Lock()
		defer l.mu.Unlock()
		if err != nil {
			l.errs = append(l.errs, fmt.Errorf("decision on %s: %w", m.Subject(), err))
			return
		}
		var seq uint64
		if md, err := m.Metadata(); err == nil {
			seq = md.Sequence.Stream
		}
		l.all = append(l.all, d)
		l.seqs = append(l.seqs, seq)
		close(l.cond)
		l.cond = make(chan struct{})
	})
	if err != nil {
		cancel()
		t.Fatalf("follow decisions: %v", err)
	}
	t.Cleanup(func() { cc.Stop(); cancel() })
	return l
}

func (l *decisionLog) snapshot() []*fv1.Decision {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) > 0 {
		panic(fmt.Sprintf("undecodable decisions: %v", l.errs))
	}
	return slices.Clone(l.all)
}

// waitFor returns the first decision (in stream order) for which match is
// true, waiting up to timeout for it to be stored.
func (l *decisionLog) waitFor(t testing.TB, timeout time.Duration, what string, match func(*fv1.Decision) bool) *fv1.Decision {
	t.Helper()
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		for _, d := range l.all {
			if match(d) {
				l.mu.Unlock()
				return d
			}
		}
		wake := l.cond
		l.mu.Unlock()
		select {
		case <-wake:
		case <-deadline:
			t.Fatalf("no decision %s within %v; decisions so far:\n%s", what, timeout, describe(l.snapshot()))
		}
	}
}

// waitFrame returns the decisions of the first frame (in stream order of
// its first decision) for which match is true, waiting up to timeout.
func (l *decisionLog) waitFrame(t testing.TB, timeout time.Duration, what string, match func([]*fv1.Decision) bool) []*fv1.Decision {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		all := l.snapshot()
		type key struct {
			camera string
			seq    uint64
		}
		var order []key
		frames := map[key][]*fv1.Decision{}
		for _, d := range all {
			if d.GetFrame() == nil {
				continue
			}
			k := key{d.GetFrame().GetCamera(), d.GetFrame().GetSequence()}
			if frames[k] == nil {
				order = append(order, k)
			}
			frames[k] = append(frames[k], d)
		}
		for _, k := range order {
			if match(frames[k]) {
				return frames[k]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no frame with decisions %s within %v; decisions so far:\n%s", what, timeout, describe(all))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func describe(ds []*fv1.Decision) string {
	var b bytes.Buffer
	for _, d := range ds {
		fmt.Fprintf(&b, "  %s\n", brief(d))
	}
	return b.String()
}

func brief(d *fv1.Decision) string {
	s := fmt.Sprintf("%s %s/%s %s person=%q", d.GetDecisionId(), d.GetSite(), d.GetDoor(), d.GetOutcome(), d.GetPersonId())
	if d.Distance != nil {
		s += fmt.Sprintf(" dist=%.3f", d.GetDistance())
	}
	if d.GetFrame() != nil {
		s += fmt.Sprintf(" frame=%s#%d@%s", d.GetFrame().GetCamera(), d.GetFrame().GetSequence(),
			d.GetFrame().GetCaptureTime().AsTime().Format("15:04:05.000"))
	}
	if d.GetClaimId() != "" {
		s += " claim=" + d.GetClaimId()
	}
	return s
}

// stages lists a decision's latency stage names.
func stages(d *fv1.Decision) []string {
	var out []string
	for _, l := range d.GetLatencies() {
		out = append(out, l.GetStage())
	}
	return out
}

// streamMsgs returns every message of a stream still stored, in order.
func streamMsgs(t testing.TB, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		out = append(out, m)
	}
	return out
}

func streamCount(t testing.TB, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	return info.State.Msgs
}

// eventually polls cond every 50 ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sideBySide composes images left to right into one JPEG frame: several
// people in front of one camera.
func sideBySide(t testing.TB, imgs ...[]byte) []byte {
	t.Helper()
	var decoded []image.Image
	w, h := 0, 0
	for _, b := range imgs {
		img, _, err := image.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		decoded = append(decoded, img)
		w += img.Bounds().Dx()
		h = max(h, img.Bounds().Dy())
	}
	out := image.NewRGBA(image.Rect(0, 0, w, h))
	x := 0
	for _, img := range decoded {
		r := img.Bounds()
		draw.Draw(out, image.Rect(x, 0, x+r.Dx(), r.Dy()), img, r.Min, draw.Src)
		x += r.Dx()
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, out, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
