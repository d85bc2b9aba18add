package pipelinebench_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/imaging"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/pipelinebench"
	"github.com/facegate/facegate/pkg/testenv"
)

type env struct {
	c    *modelcache.Cache
	rt   *inference.Runtime
	engs map[bool]*face.Engine // by mirror
}

func open(tb testing.TB) *env {
	tb.Helper()
	c, err := modelcache.New(testenv.Models(tb), nil)
	if err != nil {
		tb.Fatal(err)
	}
	rt, err := inference.Open(inference.Options{LibraryPath: c.LibraryPath()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { rt.Close() })
	e := &env{c: c, rt: rt, engs: map[bool]*face.Engine{}}
	for _, mirror := range []bool{true, false} {
		eng, err := face.Open(context.Background(), rt, c, face.Options{NoMirror: !mirror})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { eng.Close() })
		e.engs[mirror] = eng
	}
	return e
}

func TestBuildFrames(t *testing.T) {
	e := open(t)
	ctx := context.Background()
	sizes := []pipelinebench.Size{{W: 640, H: 480}, {W: 1920, H: 1080}, {W: 800, H: 600}}
	frames, err := pipelinebench.BuildFrames(ctx, e.engs[true], e.c, sizes)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 2*len(sizes) {
		t.Fatalf("%d frames for %d sizes, want a one-face and a five-face frame each", len(frames), len(sizes))
	}
	for i, fr := range frames {
		sz := sizes[i/2]
		wantFaces := []int{1, 5}[i%2]
		img, info, err := imaging.Decode(fr.JPEG, imaging.Limits{})
		if err != nil {
			t.Fatalf("%s: %v", fr.Name, err)
		}
		if info.Format != imaging.FormatJPEG || img.W != sz.W || img.H != sz.H || fr.Size != sz || fr.Bytes != len(fr.JPEG) {
			t.Errorf("%s: %s %dx%d (%d bytes, says %d), want a %v JPEG", fr.Name, info.Format, img.W, img.H, len(fr.JPEG), fr.Bytes, sz)
		}
		// The frame must hold the faces it is named for, found by the
		// engine the benchmark times; the no-mirror engine shares the
		// detector and must agree.
		res, err := e.engs[false].Analyze(ctx, fr.JPEG)
		if err != nil {
			t.Fatal(err)
		}
		if fr.Faces != wantFaces || fr.Found != wantFaces || len(res.Faces) != wantFaces {
			t.Errorf("%s: faces %d, found %d, re-analysed %d; want %d", fr.Name, fr.Faces, fr.Found, len(res.Faces), wantFaces)
		}
		t.Logf("%s: %d bytes, %s", fr.Name, fr.Bytes, fr.Source)
	}
	if _, err := pipelinebench.BuildFrames(ctx, e.engs[true], e.c, []pipelinebench.Size{{W: 10, H: 10}}); err == nil || !strings.Contains(err.Error(), "10x10") {
		t.Errorf("a 10x10 frame: err %v, want one naming the size", err)
	}
	// A portrait frame cut from the landscape group photo cannot hold all
	// five people: BuildFrames must refuse it rather than time a frame
	// that is not what its name says.
	if _, err := pipelinebench.BuildFrames(ctx, e.engs[true], e.c, []pipelinebench.Size{{W: 480, H: 640}}); err == nil || !strings.Contains(err.Error(), "want 5") {
		t.Errorf("a portrait five-face frame: err %v, want one saying the faces are not all there", err)
	}
}

func TestProcessAndGallery(t *testing.T) {
	e := open(t)
	ctx := context.Background()
	frames, err := pipelinebench.BuildFrames(ctx, e.engs[true], e.c, []pipelinebench.Size{{W: 640, H: 480}})
	if err != nil {
		t.Fatal(err)
	}
	g, err := pipelinebench.NewGallery(ctx, e.engs[true].Dim(), 1000, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.Len() != 1000 {
		t.Errorf("gallery holds %d templates, want 1000", g.Len())
	}
	for _, fr := range frames {
		s, n, err := pipelinebench.Process(ctx, e.engs[true], g, fr.JPEG)
		if err != nil {
			t.Fatal(err)
		}
		if n != fr.Faces {
			t.Errorf("%s: Process found %d faces, want %d", fr.Name, n, fr.Faces)
		}
		parts := s.Decode + s.Detect + s.Align + s.Encode + s.Match
		for name, d := range map[string]time.Duration{"decode": s.Decode, "detect": s.Detect, "align": s.Align, "encode": s.Encode, "match": s.Match} {
			if d <= 0 {
				t.Errorf("%s: %s took %v; every stage does work", fr.Name, name, d)
			}
		}
		// The stages partition the frame's time: what is left over is the
		// loop and the clock reads, well under a millisecond.
		if parts > s.Total || s.Total-parts > time.Millisecond {
			t.Errorf("%s: stages sum to %v, total %v", fr.Name, parts, s.Total)
		}
	}
	if _, _, err := pipelinebench.Process(ctx, e.engs[true], g, []byte("not a jpeg")); err == nil {
		t.Error("Process accepted bytes that are no image")
	}
	if _, err := pipelinebench.NewGallery(ctx, 128, 0, 1); err == nil {
		t.Error("NewGallery accepted an empty gallery")
	}
	if _, err := pipelinebench.Measure(ctx, e.engs[true], g, frames[0], 0, time.Second); err == nil {
		t.Error("Measure accepted 0 workers")
	}
}

func TestRun(t *testing.T) {
	e := open(t)
	opts := pipelinebench.Options{Duration: 300 * time.Millisecond, Sizes: []pipelinebench.Size{{W: 640, H: 480}}, Workers: []int{1, 2}, Gallery: 200}
	rep, err := pipelinebench.Run(context.Background(), e.rt, e.c, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep.Table())
	// 2 frames x 2 worker counts x 2 encodings.
	if len(rep.Results) != 8 || len(rep.Frames) != 2 || rep.Gallery != 200 || rep.Encoder != "dlib-resnet34-128" {
		t.Fatalf("report: %d results, %d frames, gallery %d, encoder %q; want 8, 2, 200, dlib-resnet34-128", len(rep.Results), len(rep.Frames), rep.Gallery, rep.Encoder)
	}
	seen := map[string]bool{}
	for _, r := range rep.Results {
		key := fmt.Sprintf("%d/%v/%d", r.Faces, r.Mirror, r.Workers)
		if seen[key] {
			t.Errorf("configuration %s measured twice", key)
		}
		seen[key] = true
		if r.Frames < 1 || !(r.FPS > 0) || !(r.Seconds >= 0.3) {
			t.Errorf("%s: %d frames in %.3f s (%.1f/s)", key, r.Frames, r.Seconds, r.FPS)
		}
		// Throughput and latency must agree: W workers each spending
		// TotalMS per frame cannot finish more than W*1000/TotalMS frames/s.
		if limit := float64(r.Workers) * 1000 / r.TotalMS; r.FPS > limit*1.05 {
			t.Errorf("%s: %.1f frames/s exceeds %d worker(s) x 1000 / %.2f ms", key, r.FPS, r.Workers, r.TotalMS)
		}
		sum := r.DecodeMS + r.DetectMS + r.AlignMS + r.EncodeMS + r.MatchMS
		if sum > r.TotalMS*1.0001 || r.TotalMS-sum > 1 {
			t.Errorf("%s: stages %.3f ms, total %.3f ms", key, sum, r.TotalMS)
		}
		if !(r.P50MS > 0 && r.P50MS <= r.P99MS) {
			t.Errorf("%s: p50 %.2f, p99 %.2f", key, r.P50MS, r.P99MS)
		}
	}
	if len(rep.Goal) != 2 {
		t.Fatalf("goal checks %v, want one per encoding", rep.Goal)
	}
	for _, g := range rep.Goal {
		if g.Met != (g.FPS >= pipelinebench.GoalFPS) || g.FPS <= 0 {
			t.Errorf("goal check %+v inconsistent with %d frames/s", g, pipelinebench.GoalFPS)
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"frames_per_s"`, `"decode_ms"`, `"detect_ms"`, `"align_ms"`, `"encode_ms"`, `"match_ms"`, `"goal_640x480_1face"`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("JSON report has no %s", k)
		}
	}
	if strings.Contains(string(b), `"JPEG"`) {
		t.Error("JSON report carries the frames' image bytes")
	}
	if _, err := pipelinebench.Run(context.Background(), e.rt, e.c, pipelinebench.Options{Duration: -time.Second}); err == nil {
		t.Error("Run accepted a negative duration")
	}
}

// BenchmarkPipeline times one frame through decode, detect, align, encode
// and match, for each frame kind and encoding, on one goroutine and on
// GOMAXPROCS goroutines sharing the engine (-cpu sets how many).
func BenchmarkPipeline(b *testing.B) {
	e := open(b)
	ctx := context.Background()
	frames, err := pipelinebench.BuildFrames(ctx, e.engs[true], e.c, pipelinebench.DefaultSizes())
	if err != nil {
		b.Fatal(err)
	}
	g, err := pipelinebench.NewGallery(ctx, e.engs[true].Dim(), 1000, 1)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { g.Close() })
	for _, fr := range frames {
		for _, mirror := range []bool{true, false} {
			eng := e.engs[mirror]
			name := fmt.Sprintf("%dx%d_%dface/mirror=%v", fr.Size.W, fr.Size.H, fr.Faces, mirror)
			b.Run(name+"/serial", func(b *testing.B) {
				var sum pipelinebench.Stages
				n := 0
				for b.Loop() {
					s, _, err := pipelinebench.Process(ctx, eng, g, fr.JPEG)
					if err != nil {
						b.Fatal(err)
					}
					add(&sum, s)
					n++
				}
				report(b, sum, n)
			})
			b.Run(name+"/parallel", func(b *testing.B) {
				var (
					mu  sync.Mutex
					sum pipelinebench.Stages
					n   int
				)
				b.RunParallel(func(pb *testing.PB) {
					var mine pipelinebench.Stages
					k := 0
					for pb.Next() {
						s, _, err := pipelinebench.Process(ctx, eng, g, fr.JPEG)
						if err != nil {
							b.Error(err)
							return
						}
						add(&mine, s)
						k++
					}
					mu.Lock()
					add(&sum, mine)
					n += k
					mu.Unlock()
				})
				report(b, sum, n)
			})
		}
	}
}

func add(sum *pipelinebench.Stages, s pipelinebench.Stages) {
	sum.Decode += s.Decode
	sum.Detect += s.Detect
	sum.Align += s.Align
	sum.Encode += s.Encode
	sum.Match += s.Match
	sum.Total += s.Total
}

func report(b *testing.B, s pipelinebench.Stages, n int) {
	if n == 0 {
		return
	}
	ms := func(d time.Duration) float64 { return d.Seconds() * 1e3 / float64(n) }
	b.ReportMetric(ms(s.Decode), "decode-ms")
	b.ReportMetric(ms(s.Detect), "detect-ms")
	b.ReportMetric(ms(s.Align), "align-ms")
	b.ReportMetric(ms(s.Encode), "encode-ms")
	b.ReportMetric(ms(s.Match), "match-ms")
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "frames/s")
}
