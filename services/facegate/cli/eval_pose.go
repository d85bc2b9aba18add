package cli

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/facegate/facegate/pkg/detect"
	"github.com/facegate/facegate/pkg/eval"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/imaging"
	"github.com/facegate/facegate/pkg/quality"
)

// PoseReport is the output of `facegate eval pose`: LFW pairs through the
// detector, binned by the worse pose of each pair, at the deployed
// threshold. It is what the quality gate's pose limits are chosen from.
type PoseReport struct {
	Model     string  `json:"model"`
	Dataset   string  `json:"dataset"`
	Threshold float64 `json:"threshold"`
	Pairs     int     `json:"pairs"`
	NoFace    int     `json:"pairs_without_face"`
	// Rotate is the in-plane rotation applied to each pair's second image
	// (degrees, counter-clockwise on screen), to measure what roll costs.
	Rotate float64 `json:"rotate_degrees"`
	// AbsYaw, AbsPitch and AbsRoll are percentiles (p50, p90, p95, p99) of
	// the faces' estimated pose, in degrees.
	AbsYaw   map[string]float64 `json:"abs_yaw_percentiles"`
	AbsPitch map[string]float64 `json:"abs_pitch_percentiles"`
	AbsRoll  map[string]float64 `json:"abs_roll_percentiles"`
	// ByYaw, ByPitch and ByRoll bin the pairs by the larger |angle| of their
	// two faces.
	ByYaw   []PoseBin `json:"by_max_abs_yaw"`
	ByPitch []PoseBin `json:"by_max_abs_pitch"`
	ByRoll  []PoseBin `json:"by_max_abs_roll"`
	// All and Gated are the rates over every pair with two faces and over
	// those whose faces both pass the default pose limits (MaxYaw, MaxPitch,
	// MaxRoll of quality.DefaultThresholds).
	All     PoseBin `json:"all"`
	Gated   PoseBin `json:"gated"`
	Seconds float64 `json:"seconds"`
}

// PoseBin is one bin's counts and rates at the threshold.
type PoseBin struct {
	Lo           float64 `json:"lo"`
	Hi           float64 `json:"hi"`
	Pairs        int     `json:"pairs"`
	Same         int     `json:"same"`
	Different    int     `json:"different"`
	Accuracy     float64 `json:"accuracy"`
	FalseRejects int     `json:"false_rejects"`
	FalseAccepts int     `json:"false_accepts"`
	FRR          float64 `json:"frr"`
	FAR          float64 `json:"far"`
}

func poseBin(b eval.Bin) PoseBin {
	r := b.Rates
	return PoseBin{Lo: b.Lo, Hi: b.Hi, Pairs: b.Pairs, Same: r.TP + r.FN, Different: r.FP + r.TN, Accuracy: r.Accuracy,
		FalseRejects: r.FN, FalseAccepts: r.FP, FRR: r.FRR, FAR: r.FAR}
}

// poseEdges are the bin edges in degrees: fine where the data are.
var poseEdges = []float64{0, 5, 10, 15, 20, 25, 30, 35, 45, 90.0001}

func evalPoseCmd(a *app) *cobra.Command {
	var (
		fl     lfwFlags
		every  int
		rotate float64
	)
	cmd := &cobra.Command{
		Use:   "pose --data DIR [--pairs FILE] [--every N] [--rotate DEG]",
		Short: "LFW pairs through the detector, accuracy at the calibrated threshold binned by estimated yaw, pitch and roll",
		Long: `Runs the detector, alignment and encoder on the images of LFW's pairs (every
Nth pair with --every), estimates each face's pose as the quality gate does,
and reports accuracy, false rejects and false accepts at the model's
calibrated threshold for pairs binned by the larger |yaw| (|pitch|, |roll|)
of their two faces. --rotate turns each pair's second image in its plane
first, to see what roll costs once alignment has undone it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if fl.pairs == "" {
				fl.pairs = filepath.Join(fl.data, "pairs.txt")
			}
			if every < 1 {
				return usageErr("--every %d: must be at least 1", every)
			}
			if math.IsNaN(rotate) || math.Abs(rotate) > 180 {
				return usageErr("--rotate %v: must be within [-180, 180]", rotate)
			}
			start := time.Now()
			ctx := cmd.Context()
			s, err := a.openSession(ctx, &fl.faceFlags, false, true)
			if err != nil {
				return err
			}
			defer s.close()
			rep, err := a.poseReport(ctx, s, fl.data, fl.pairs, every, rotate)
			if err != nil {
				return err
			}
			rep.Seconds = time.Since(start).Seconds()
			fmt.Fprintf(a.stderr, "%s: %d pairs, accuracy %.4f (all) %.4f (both faces within the pose limits, %d pairs); |yaw| p50 %.1f p95 %.1f\n",
				rep.Model, rep.Pairs, rep.All.Accuracy, rep.Gated.Accuracy, rep.Gated.Pairs, rep.AbsYaw["p50"], rep.AbsYaw["p95"])
			return a.printJSON(rep)
		},
	}
	fl.register(cmd)
	cmd.Flags().IntVar(&every, "every", 1, "use every Nth pair of pairs.txt (a subset that keeps the folds' mix of same and different pairs)")
	cmd.Flags().Float64Var(&rotate, "rotate", 0, "rotate each pair's second image by this many degrees before detection")
	return cmd
}

// posedFace is what the pose evaluation keeps of an image's main face.
type posedFace struct {
	enc              []float32
	yaw, pitch, roll float64
	passes           bool
}

func (a *app) poseReport(ctx context.Context, s *session, data, pairsPath string, every int, rotate float64) (*PoseReport, error) {
	pf, err := os.Open(pairsPath)
	if err != nil {
		return nil, usageErr("--pairs: %v", err)
	}
	defer pf.Close()
	all, err := eval.ParsePairs(pf)
	if err != nil {
		return nil, usageErr("--pairs %s: %v", pairsPath, err)
	}
	type job struct {
		path string
		rot  float64
	}
	var pairs []eval.LFWPair
	seen := map[job]bool{}
	var jobs []job
	for i, p := range all.Pairs {
		if i%every != 0 {
			continue
		}
		pairs = append(pairs, p)
		for _, j := range []job{{p.Path1(), 0}, {p.Path2(), rotate}} {
			if !seen[j] {
				seen[j] = true
				jobs = append(jobs, j)
			}
		}
	}
	faces := make(map[job]*posedFace, len(jobs))
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
	)
	th := quality.DefaultThresholds()
	bar := a.bar(len(jobs), "detecting and encoding LFW images")
	ch := make(chan job)
	for w := 0; w < runtime.NumCPU(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range ch {
				f, err := poseFace(ctx, s.eng, filepath.Join(data, j.path), j.rot, th)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				faces[j] = f
				mu.Unlock()
				_ = bar.Add(1)
			}
		}()
	}
	for _, j := range jobs {
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop || ctx.Err() != nil {
			break
		}
		ch <- j
	}
	close(ch)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rep := &PoseReport{Model: s.eng.Space(), Dataset: "LFW " + pairsPath, Threshold: s.threshold, Rotate: rotate}
	var (
		scored, gated     []eval.Scored
		yaws, pitches, rs []float64
		absY, absP, absR  []float64
	)
	for _, f := range faces {
		if f != nil {
			absY, absP, absR = append(absY, math.Abs(f.yaw)), append(absP, math.Abs(f.pitch)), append(absR, math.Abs(f.roll))
		}
	}
	for _, p := range pairs {
		x, y := faces[job{p.Path1(), 0}], faces[job{p.Path2(), rotate}]
		if x == nil || y == nil {
			rep.NoFace++
			continue
		}
		sc := eval.Scored{Fold: p.Fold, Same: p.Same, Distance: face.Distance(x.enc, y.enc)}
		scored = append(scored, sc)
		if x.passes && y.passes {
			gated = append(gated, sc)
		}
		yaws = append(yaws, math.Max(math.Abs(x.yaw), math.Abs(y.yaw)))
		pitches = append(pitches, math.Max(math.Abs(x.pitch), math.Abs(y.pitch)))
		rs = append(rs, math.Max(math.Abs(x.roll), math.Abs(y.roll)))
	}
	rep.Pairs = len(scored)
	if len(scored) == 0 {
		return nil, fmt.Errorf("eval pose: no pair has a face in both images")
	}
	for _, b := range []struct {
		vals []float64
		out  *[]PoseBin
	}{{yaws, &rep.ByYaw}, {pitches, &rep.ByPitch}, {rs, &rep.ByRoll}} {
		bins, _, err := eval.BinRates(scored, b.vals, poseEdges, s.threshold)
		if err != nil {
			return nil, fmt.Errorf("eval pose: %w", err)
		}
		for _, x := range bins {
			*b.out = append(*b.out, poseBin(x))
		}
	}
	rep.All = poseBin(eval.Bin{Lo: 0, Hi: 180, Pairs: len(scored), Rates: eval.RatesAt(scored, s.threshold)})
	rep.Gated = poseBin(eval.Bin{Lo: 0, Hi: 180, Pairs: len(gated), Rates: eval.RatesAt(gated, s.threshold)})
	rep.AbsYaw, rep.AbsPitch, rep.AbsRoll = percentiles(absY), percentiles(absP), percentiles(absR)
	return rep, nil
}

// poseFace detects, encodes and measures the largest face of an image,
// rotated first by rot degrees; nil when there is no face.
func poseFace(ctx context.Context, eng *face.Engine, path string, rot float64, th quality.Thresholds) (*posedFace, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	img, _, err := imaging.Decode(b, imaging.Limits{})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if rot != 0 {
		img = rotateImage(img, rot)
	}
	res, err := eng.AnalyzeImage(ctx, img)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(res.Faces) == 0 {
		return nil, nil
	}
	f := subject(res)
	sc := f.Quality.Scores
	// Only the gate's pose limits: this measures what pose costs (LFW's
	// 112 px crops fail the size and sharpness tests for reasons of their own).
	g := quality.Thresholds{MaxYaw: th.MaxYaw, MaxPitch: th.MaxPitch, MaxRoll: th.MaxRoll}
	return &posedFace{enc: f.Encoding, yaw: sc.Yaw, pitch: sc.Pitch, roll: sc.Roll,
		passes: quality.Check(detect.Face{Box: f.Box, Score: f.Score, Keypoints: f.Keypoints}, nil, g).OK}, nil
}

func percentiles(v []float64) map[string]float64 {
	if len(v) == 0 {
		return nil
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	at := func(q float64) float64 { return s[int(math.Round(q*float64(len(s)-1)))] }
	return map[string]float64{"p50": at(0.5), "p90": at(0.9), "p95": at(0.95), "p99": at(0.99)}
}

// rotateImage turns img by deg degrees counter-clockwise on screen about its
// centre (bilinear, edges replicated), keeping its size.
func rotateImage(img *imaging.RGB, deg float64) *imaging.RGB {
	out := imaging.NewRGB(img.W, img.H)
	c, s := math.Cos(deg*math.Pi/180), math.Sin(deg*math.Pi/180)
	cx, cy := float64(img.W-1)/2, float64(img.H-1)/2
	clamp := func(v, hi int) int { return max(0, min(v, hi-1)) }
	for y := 0; y < img.H; y++ {
		for x := 0; x < img.W; x++ {
			// inverse map: rotate the destination point back by -deg (y
			// points down, so counter-clockwise on screen is -deg in these axes)
			dx, dy := float64(x)-cx, float64(y)-cy
			sx, sy := c*dx-s*dy+cx, s*dx+c*dy+cy
			x0, y0 := int(math.Floor(sx)), int(math.Floor(sy))
			fx, fy := sx-float64(x0), sy-float64(y0)
			var px [3]float64
			for _, t := range [4]struct {
				x, y int
				w    float64
			}{{x0, y0, (1 - fx) * (1 - fy)}, {x0 + 1, y0, fx * (1 - fy)}, {x0, y0 + 1, (1 - fx) * fy}, {x0 + 1, y0 + 1, fx * fy}} {
				r, g, b := img.RGBAt(clamp(t.x, img.W), clamp(t.y, img.H))
				px[0] += t.w * float64(r)
				px[1] += t.w * float64(g)
				px[2] += t.w * float64(b)
			}
			out.SetRGB(x, y, uint8(math.Round(px[0])), uint8(math.Round(px[1])), uint8(math.Round(px[2])))
		}
	}
	return out
}
