package cli

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/facegate/facegate/models"
	"github.com/facegate/facegate/pkg/eval"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/imaging"
)

func evalCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "eval", Short: "Measure accuracy on labelled data"}
	cmd.AddCommand(evalLFWCmd(a), evalPairsCmd(a), evalTripletsCmd(a), evalLivenessCmd(a), evalPoseCmd(a))
	return cmd
}

// encodeAll encodes every path once, with one worker per core, and returns
// the encodings by path (nil where no face was found).
func (a *app) encodeAll(ctx context.Context, s *session, paths []string, aligned bool, what string) (map[string][]float32, error) {
	bar := a.bar(len(paths), what)
	out := make(map[string][]float32, len(paths))
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
	)
	jobs := make(chan string)
	for w := 0; w < runtime.NumCPU(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range jobs {
				v, err := s.encodeOne(ctx, p, aligned)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				out[p] = v
				mu.Unlock()
				_ = bar.Add(1)
			}
		}()
	}
	for _, p := range paths {
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop || ctx.Err() != nil {
			break
		}
		jobs <- p
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return out, ctx.Err()
}

// encodeOne encodes the face of one image: the ArcFace-aligned path when the
// dataset is aligned, else detection and the largest face.
func (s *session) encodeOne(ctx context.Context, path string, aligned bool) ([]float32, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if aligned {
		img, _, err := imaging.Decode(data, imaging.Limits{})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		v, err := s.eng.EncodeArcFace112(ctx, []*imaging.RGB{img})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return v[0], nil
	}
	res, err := s.eng.Analyze(ctx, data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(res.Faces) == 0 {
		return nil, nil
	}
	return subject(res).Encoding, nil
}

func (a *app) bar(n int, what string) *progressbar.ProgressBar {
	return progressbar.NewOptions(n, progressbar.OptionSetWriter(a.stderr), progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(a.stderr) }), progressbar.OptionSetVisibility(isTerminal(a.stderr)))
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// VerificationReport is the output of the pair evaluations.
type VerificationReport struct {
	Model         string            `json:"model"`
	Dataset       string            `json:"dataset"`
	Protocol      string            `json:"protocol"`
	Alignment     string            `json:"alignment"`
	Pairs         int               `json:"pairs"`
	NoFace        int               `json:"pairs_without_face"`
	MeanAccuracy  float64           `json:"mean_accuracy"`
	StdAccuracy   float64           `json:"std_accuracy"`
	StdErr        float64           `json:"std_err"`
	Threshold     float64           `json:"threshold"`
	FoldThreshold []float64         `json:"fold_thresholds,omitempty"`
	AUC           float64           `json:"auc"`
	EER           float64           `json:"eer"`
	TARAtFAR      map[string]TARAt  `json:"tar_at_far"`
	Seconds       float64           `json:"seconds"`
	Extra         map[string]string `json:"extra,omitempty"`
}

// TARAt is one operating point.
type TARAt struct {
	TAR          float64 `json:"tar"`
	FAR          float64 `json:"far"`
	Threshold    float64 `json:"threshold"`
	FalseAccepts int     `json:"false_accepts"`
}

func report(scored []eval.Scored, kfold bool) (VerificationReport, eval.ROC, error) {
	var r VerificationReport
	roc, err := eval.ComputeROC(scored)
	if err != nil {
		return r, roc, err
	}
	r.AUC = roc.AUC()
	r.EER, _ = roc.EER()
	r.TARAtFAR = map[string]TARAt{}
	for _, far := range []float64{1e-2, 1e-3} {
		op, err := roc.TARAtFAR(far)
		if err != nil {
			return r, roc, err
		}
		r.TARAtFAR[fmt.Sprintf("%g", far)] = TARAt{TAR: op.TAR, FAR: op.FAR, Threshold: op.Threshold, FalseAccepts: op.FP}
	}
	best, err := eval.BestThreshold(scored)
	if err != nil {
		return r, roc, err
	}
	r.Threshold = best.Threshold
	if kfold {
		kf, err := eval.KFold(scored)
		if err != nil {
			return r, roc, err
		}
		r.MeanAccuracy, r.StdAccuracy, r.StdErr = kf.Mean, kf.StdPopulation, kf.StdErr
		for _, f := range kf.Folds {
			r.FoldThreshold = append(r.FoldThreshold, f.Threshold)
		}
	} else {
		r.MeanAccuracy = best.Accuracy
	}
	return r, roc, nil
}

type lfwFlags struct {
	faceFlags
	data, pairs, plot string
	detect            bool
}

// lfwScores encodes the LFW images and scores every pair.
func (a *app) lfwScores(ctx context.Context, s *session, fl *lfwFlags) ([]eval.Scored, int, error) {
	pf, err := os.Open(fl.pairs)
	if err != nil {
		return nil, 0, usageErr("--pairs: %v", err)
	}
	defer pf.Close()
	pairs, err := eval.ParsePairs(pf)
	if err != nil {
		return nil, 0, usageErr("--pairs %s: %v", fl.pairs, err)
	}
	seen := map[string]bool{}
	var paths []string
	for _, p := range pairs.Pairs {
		for _, rel := range []string{p.Path1(), p.Path2()} {
			full := filepath.Join(fl.data, rel)
			if !seen[full] {
				seen[full] = true
				paths = append(paths, full)
			}
		}
	}
	encs, err := a.encodeAll(ctx, s, paths, !fl.detect, "encoding LFW images")
	if err != nil {
		return nil, 0, err
	}
	var scored []eval.Scored
	noFace := 0
	for _, p := range pairs.Pairs {
		x, y := encs[filepath.Join(fl.data, p.Path1())], encs[filepath.Join(fl.data, p.Path2())]
		d := 2.0 // the largest distance between unit vectors: a pair without a face is rejected
		if x == nil || y == nil {
			noFace++
		} else {
			d = face.Distance(x, y)
		}
		scored = append(scored, eval.Scored{Fold: p.Fold, Same: p.Same, Distance: d})
	}
	return scored, noFace, nil
}

func (fl *lfwFlags) register(cmd *cobra.Command) {
	fl.faceFlags.register(cmd, false)
	cmd.Flags().StringVar(&fl.data, "data", "", "LFW folder holding data/NAME/NAME_NNNN.jpg (required)")
	cmd.Flags().StringVar(&fl.pairs, "pairs", "", "LFW pairs.txt (default: DATA/pairs.txt)")
	cmd.Flags().BoolVar(&fl.detect, "detect", false, "find and align faces with the detector instead of trusting the dataset's ArcFace alignment")
	_ = cmd.MarkFlagRequired("data")
}

func evalLFWCmd(a *app) *cobra.Command {
	var fl lfwFlags
	cmd := &cobra.Command{
		Use:   "lfw --data DIR [--pairs FILE]",
		Short: "LFW verification, standard 10-fold protocol: accuracy mean/std, threshold, TAR@FAR, AUC",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if fl.pairs == "" {
				fl.pairs = filepath.Join(fl.data, "pairs.txt")
			}
			start := time.Now()
			ctx := cmd.Context()
			s, err := a.openSession(ctx, &fl.faceFlags, false, false)
			if err != nil {
				return err
			}
			defer s.close()
			scored, noFace, err := a.lfwScores(ctx, s, &fl)
			if err != nil {
				return err
			}
			rep, roc, err := report(scored, true)
			if err != nil {
				return err
			}
			rep.Model, rep.Dataset, rep.Pairs, rep.NoFace = s.eng.Space(), "LFW "+fl.pairs, len(scored), noFace
			rep.Protocol = "10-fold: threshold chosen on 9 folds, accuracy on the 10th; std over folds with divisor 10"
			rep.Alignment = "dataset ArcFace-112 alignment mapped to the encoder's template"
			if fl.detect {
				rep.Alignment = "facegate detector + alignment"
			}
			rep.Seconds = time.Since(start).Seconds()
			if fl.plot != "" {
				if err := writePlot(fl.plot, rep.Model, roc); err != nil {
					return err
				}
			}
			fmt.Fprintf(a.stderr, "%s on LFW: accuracy %.4f ± %.4f, threshold %.4f, TAR@FAR=1e-3 %.4f, AUC %.5f\n",
				rep.Model, rep.MeanAccuracy, rep.StdAccuracy, rep.Threshold, rep.TARAtFAR["0.001"].TAR, rep.AUC)
			return a.printJSON(rep)
		},
	}
	fl.register(cmd)
	cmd.Flags().StringVar(&fl.plot, "plot", "", "write the ROC curve to this PNG file")
	return cmd
}

func writePlot(path, name string, roc eval.ROC) error {
	f, err := os.Create(path)
	if err != nil {
		return usageErr("--plot: %v", err)
	}
	if err := eval.PlotROC(f, []eval.Curve{{Name: name, ROC: roc}}, eval.PlotOptions{}); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func calibrateCmd(a *app) *cobra.Command {
	var (
		fl        lfwFlags
		targetFAR float64
	)
	cmd := &cobra.Command{
		Use:   "calibrate --model ID --data DIR [--pairs FILE] [--target-far F]",
		Short: "Choose a model's threshold on labelled pairs and write it to the cache's calibration folder",
		Long: `Calibrate encodes the labelled pairs (LFW layout), picks the threshold that maximises accuracy
(or, with --target-far, the largest threshold whose false-accept rate stays within the target) and
writes it to <cache>/calibration/<model>.json, where every command then takes it from.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if fl.pairs == "" {
				fl.pairs = filepath.Join(fl.data, "pairs.txt")
			}
			if targetFAR < 0 || targetFAR >= 1 {
				return usageErr("--target-far %v: want 0 (maximise accuracy) or a rate in (0,1)", targetFAR)
			}
			ctx := cmd.Context()
			s, err := a.openSession(ctx, &fl.faceFlags, false, false)
			if err != nil {
				return err
			}
			defer s.close()
			scored, _, err := a.lfwScores(ctx, s, &fl)
			if err != nil {
				return err
			}
			mode, method := eval.MaxAccuracy, "max accuracy"
			if targetFAR > 0 {
				mode, method = eval.AtTargetFAR, fmt.Sprintf("FAR <= %g", targetFAR)
			}
			r, err := eval.Calibrate(scored, mode, targetFAR)
			if err != nil {
				return err
			}
			c, err := a.cache()
			if err != nil {
				return err
			}
			cal := models.Calibration{Model: s.eng.Space(), Threshold: r.Threshold, Method: method, Dataset: fl.pairs,
				Pairs: len(scored), Accuracy: r.Accuracy, TAR: r.TAR, FAR: r.FAR, Created: time.Now().UTC()}
			if err := models.WriteCalibration(c.Root, cal); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "%s: threshold %.4f (%s; on these pairs accuracy %.4f, TAR %.4f, FAR %.4f) written to %s\n",
				cal.Model, cal.Threshold, method, r.Accuracy, r.TAR, r.FAR, models.CalibrationPath(c.Root, cal.Model))
			return a.printJSON(cal)
		},
	}
	fl.register(cmd)
	cmd.Flags().Float64Var(&targetFAR, "target-far", 0, "pick the threshold for this false-accept rate instead of maximum accuracy")
	return cmd
}

func evalPairsCmd(a *app) *cobra.Command {
	var (
		f             faceFlags
		data, csvPath string
	)
	cmd := &cobra.Command{
		Use:   "pairs --data DIR --csv FILE",
		Short: "Verification on full scenes from a CSV of labelled pairs (file_x,file_y,Yes|No), through detect + align + encode",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			start := time.Now()
			fh, err := os.Open(csvPath)
			if err != nil {
				return usageErr("--csv: %v", err)
			}
			rows, err := csv.NewReader(fh).ReadAll()
			fh.Close()
			if err != nil {
				return usageErr("--csv %s: %v", csvPath, err)
			}
			var pairs []labelledPair
			seen := map[string]bool{}
			var paths []string
			for i, r := range rows {
				if i == 0 && len(r) > 0 && strings.EqualFold(r[0], "file_x") {
					continue
				}
				if len(r) < 3 || (r[2] != "Yes" && r[2] != "No") {
					return usageErr("--csv %s: line %d: want file_x,file_y,Yes|No", csvPath, i+1)
				}
				p := labelledPair{filepath.Join(data, r[0]), filepath.Join(data, r[1]), r[2] == "Yes"}
				pairs = append(pairs, p)
				for _, q := range []string{p.x, p.y} {
					if !seen[q] {
						seen[q] = true
						paths = append(paths, q)
					}
				}
			}
			ctx := cmd.Context()
			s, err := a.openSession(ctx, &f, false, true)
			if err != nil {
				return err
			}
			defer s.close()
			encs, err := a.encodeAll(ctx, s, paths, false, "encoding images")
			if err != nil {
				return err
			}
			var scored []eval.Scored
			noFace := 0
			for _, p := range pairs {
				d := 2.0
				if encs[p.x] == nil || encs[p.y] == nil {
					noFace++
				} else {
					d = face.Distance(encs[p.x], encs[p.y])
				}
				scored = append(scored, eval.Scored{Same: p.same, Distance: d})
			}
			rep, _, err := report(scored, false)
			if err != nil {
				return err
			}
			rep.Model, rep.Dataset, rep.Pairs, rep.NoFace = s.eng.Space(), csvPath, len(scored), noFace
			rep.Protocol = "all pairs; accuracy at the best threshold on these pairs (optimistic: no held-out fold)"
			rep.Alignment = "facegate detector + alignment, largest face"
			at := eval.RatesAt(scored, s.threshold)
			rep.Extra = map[string]string{"accuracy_at_model_threshold": fmt.Sprintf("%.4f", at.Accuracy), "model_threshold": fmt.Sprintf("%.4f", s.threshold)}
			// Rank-1 identification: each image against all others of the set (leave-one-out).
			rank1, n := rank1(encs, labelsFromPairs(pairs))
			if n > 0 {
				if rep.Extra == nil {
					rep.Extra = map[string]string{}
				}
				rep.Extra["rank1_identification"] = fmt.Sprintf("%.4f (%d probes)", rank1, n)
			}
			rep.Seconds = time.Since(start).Seconds()
			return a.printJSON(rep)
		},
	}
	f.register(cmd, false)
	cmd.Flags().StringVar(&data, "data", "", "folder of the images named in the CSV (required)")
	cmd.Flags().StringVar(&csvPath, "csv", "", "CSV of labelled pairs (required)")
	_ = cmd.MarkFlagRequired("data")
	_ = cmd.MarkFlagRequired("csv")
	return cmd
}

// labelledPair is one line of a pairs CSV.
type labelledPair struct {
	x, y string
	same bool
}

// labelsFromPairs groups images into identities by the "Yes" pairs (union-find).
func labelsFromPairs(pairs []labelledPair) map[string]string {
	parent := map[string]string{}
	var find func(string) string
	find = func(x string) string {
		if parent[x] == "" || parent[x] == x {
			parent[x] = x
			return x
		}
		r := find(parent[x])
		parent[x] = r
		return r
	}
	for _, p := range pairs {
		find(p.x)
		find(p.y)
		if p.same {
			parent[find(p.x)] = find(p.y)
		}
	}
	out := map[string]string{}
	for x := range parent {
		out[x] = find(x)
	}
	return out
}

// rank1 is leave-one-out rank-1 identification over images whose identity
// has at least two encoded images.
func rank1(encs map[string][]float32, label map[string]string) (float64, int) {
	count := map[string]int{}
	for p, v := range encs {
		if v != nil {
			count[label[p]]++
		}
	}
	var keys []string
	for p := range encs {
		keys = append(keys, p)
	}
	sort.Strings(keys)
	hit, n := 0, 0
	for _, p := range keys {
		v := encs[p]
		if v == nil || count[label[p]] < 2 {
			continue
		}
		best, bd := "", 9.0
		for _, q := range keys {
			if q == p || encs[q] == nil {
				continue
			}
			if d := face.Distance(v, encs[q]); d < bd {
				best, bd = q, d
			}
		}
		n++
		if label[best] == label[p] {
			hit++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return float64(hit) / float64(n), n
}

func evalTripletsCmd(a *app) *cobra.Command {
	var (
		f     faceFlags
		data  string
		alpha float64
	)
	cmd := &cobra.Command{
		Use:   "triplets --data DIR",
		Short: "Triplet loss and hard/semi-hard counts on a labelled set (DIR/PERSON/images), every anchor-positive pair with every negative",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			people, err := os.ReadDir(data)
			if err != nil {
				return usageErr("--data: %v", err)
			}
			byPerson := map[string][]string{}
			var paths []string
			for _, p := range people {
				if !p.IsDir() {
					continue
				}
				files, _ := filepath.Glob(filepath.Join(data, p.Name(), "*"))
				for _, fl := range files {
					byPerson[p.Name()] = append(byPerson[p.Name()], fl)
					paths = append(paths, fl)
				}
			}
			if len(byPerson) < 2 {
				return usageErr("--data %s: want one folder per person, at least two people", data)
			}
			ctx := cmd.Context()
			s, err := a.openSession(ctx, &f, false, false)
			if err != nil {
				return err
			}
			defer s.close()
			encs, err := a.encodeAll(ctx, s, paths, false, "encoding")
			if err != nil {
				return err
			}
			var A, P, N [][]float32
			names := make([]string, 0, len(byPerson))
			for n := range byPerson {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, who := range names {
				imgs := byPerson[who]
				for _, ai := range imgs {
					for _, pi := range imgs {
						if ai == pi || encs[ai] == nil || encs[pi] == nil {
							continue
						}
						for _, other := range names {
							if other == who {
								continue
							}
							for _, ni := range byPerson[other] {
								if encs[ni] != nil {
									A, P, N = append(A, encs[ai]), append(P, encs[pi]), append(N, encs[ni])
								}
							}
						}
					}
				}
			}
			st, err := eval.TripletLoss(A, P, N, alpha)
			if errors.Is(err, eval.ErrNoData) || len(A) == 0 {
				return usageErr("--data %s: no triplets could be formed", data)
			}
			if err != nil {
				return err
			}
			out := map[string]any{"model": s.eng.Model().ID, "alpha": alpha, "triplets": st.N, "loss": st.Loss,
				"mean_loss": st.Loss / float64(max(st.N, 1)), "active": st.Active, "hard": st.Hard, "semi_hard": st.SemiHard}
			fmt.Fprintf(a.stderr, "%s: %d triplets, loss %.3f (mean %.5f), %d hard, %d semi-hard\n", s.eng.Model().ID, st.N, st.Loss, st.Loss/float64(max(st.N, 1)), st.Hard, st.SemiHard)
			return a.printJSON(out)
		},
	}
	f.register(cmd, false)
	cmd.Flags().StringVar(&data, "data", "", "folder with one sub-folder of images per person (required)")
	cmd.Flags().Float64Var(&alpha, "alpha", 0.2, "triplet margin")
	_ = cmd.MarkFlagRequired("data")
	return cmd
}
