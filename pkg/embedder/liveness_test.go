package embedder

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/facegate/facegate/pkg/detect"
	"github.com/facegate/facegate/pkg/imaging"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/liveness"
	"github.com/facegate/facegate/pkg/modelcache"
	"github.com/facegate/facegate/pkg/testenv"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// measuredThreshold is the combined score's equal-error threshold measured
// by `facegate eval liveness --data ../shared/datasets` (docs/liveness.md:
// 0.862, where BPCER on 1087 real photos equals the worst APCER of the
// synthetic attacks, 43%). At it many real faces are rejected, which is
// what this test exercises with real photos.
const measuredThreshold = 0.86

func openGate(t *testing.T, threshold float32) *liveness.Gate {
	t.Helper()
	c, err := modelcache.New(testenv.Models(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := inference.Open(inference.Options{LibraryPath: c.LibraryPath()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	g, err := liveness.Open(context.Background(), rt, c, liveness.Options{Threshold: threshold})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// With a liveness gate, a face that passed quality gets liveness_score; a
// real face scoring below the (measured) threshold is rejected as NOT_LIVE
// and carries no embedding, while one above it keeps its embedding. The
// faces are real: the rejections are bona fide presentations the gate
// wrongly refuses (BPCER), which is the honest way to exercise the path
// without attack data.
func TestLivenessGateRejectsBelowThreshold(t *testing.T) {
	e := newEnv(t)
	g := openGate(t, measuredThreshold)
	// the first crop of each of the eight people
	var pick []testImage
	for i, img := range crops(t, 40) {
		if i%5 == 0 {
			pick = append(pick, img)
		}
	}
	// The expected outcome, computed directly: engine, then gate.
	want := map[string]liveness.Scores{}
	live, notLive := 0, 0
	for _, img := range pick {
		res, err := e.engine.Analyze(testCtx(t), img.data)
		if err != nil || len(res.Faces) != 1 || !res.Faces[0].Quality.OK {
			t.Fatalf("%s: the engine must find one face passing quality: %v %+v", img.name, err, res)
		}
		decoded, _, err := imaging.Decode(img.data, imaging.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		f := res.Faces[0]
		s, err := g.Score(testCtx(t), decoded, detect.Face{Box: f.Box, Score: f.Score, Keypoints: f.Keypoints})
		if err != nil {
			t.Fatal(err)
		}
		want[img.name] = s
		if g.Live(s) {
			live++
		} else {
			notLive++
		}
		t.Logf("%s: %+v live=%v", img.name, s, g.Live(s))
	}
	// Both paths must be exercised by real photos.
	if live == 0 || notLive == 0 {
		t.Fatalf("at threshold %v, %d crops are live and %d not: the test needs both", measuredThreshold, live, notLive)
	}

	now := time.Now()
	for i, img := range pick {
		e.publishFrame(t, uint64(i+1), now, img)
	}
	cfg := e.config(t)
	cfg.Liveness = g
	r := start(t, cfg)
	waitFor(t, "every frame", func() bool { return ended(r.w) == uint64(len(pick)) })
	r.stop(t)

	evs := e.faceEvents(t)
	if len(evs) != len(pick) {
		t.Fatalf("%d face events, want %d", len(evs), len(pick))
	}
	for _, ev := range evs {
		img := pick[ev.GetFrame().GetSequence()-1]
		if len(ev.GetFaces()) != 1 {
			t.Fatalf("%s: %d faces", img.name, len(ev.GetFaces()))
		}
		f := ev.GetFaces()[0]
		w := want[img.name]
		if f.LivenessScore == nil || f.GetLivenessScore() != w.Combined {
			t.Errorf("%s: liveness_score %v, want %v", img.name, f.LivenessScore, w.Combined)
		}
		reasons := f.GetQuality().GetRejectionReasons()
		notLive := slices.Contains(reasons, facegatev1.RejectionReason_REJECTION_REASON_NOT_LIVE)
		if g.Live(w) {
			if notLive || !f.GetQuality().GetPassed() || len(f.GetEmbedding()) != e.engine.Dim() {
				t.Errorf("%s (live): reasons %v, passed %v, embedding %d", img.name, reasons, f.GetQuality().GetPassed(), len(f.GetEmbedding()))
			}
		} else {
			if !notLive || len(reasons) != 1 || f.GetQuality().GetPassed() || len(f.GetEmbedding()) != 0 || f.GetEmbeddingDimension() != 0 {
				t.Errorf("%s (not live): reasons %v, passed %v, embedding %d; want only NOT_LIVE, not passed, no embedding",
					img.name, reasons, f.GetQuality().GetPassed(), len(f.GetEmbedding()))
			}
		}
		stages := []string{}
		for _, l := range ev.GetLatencies() {
			stages = append(stages, l.GetStage())
		}
		if !slices.Contains(stages, "liveness") {
			t.Errorf("%s: latency stages %v lack liveness", img.name, stages)
		}
	}
}

// Without a gate nothing changes: no liveness_score, no liveness stage.
func TestNoLivenessGateNoScore(t *testing.T) {
	e := newEnv(t)
	e.publishFrame(t, 1, time.Now(), crops(t, 1)[0])
	r := start(t, e.config(t))
	waitFor(t, "1 frame", func() bool { return ended(r.w) == 1 })
	r.stop(t)
	evs := e.faceEvents(t)
	if len(evs) != 1 || len(evs[0].GetFaces()) != 1 {
		t.Fatalf("events %v", evs)
	}
	if f := evs[0].GetFaces()[0]; f.LivenessScore != nil || len(f.GetEmbedding()) == 0 {
		t.Errorf("gate off: liveness_score %v, embedding %d", f.LivenessScore, len(f.GetEmbedding()))
	}
	for _, l := range evs[0].GetLatencies() {
		if l.GetStage() == "liveness" {
			t.Error("gate off but a liveness latency is reported")
		}
	}
}
