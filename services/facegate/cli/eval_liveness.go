package cli

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/liveness"
	leval "github.com/facegate/facegate/pkg/liveness/eval"
)

// LivenessEvalReport is the JSON output of `eval liveness`.
type LivenessEvalReport struct {
	*leval.Report
	Dataset string  `json:"dataset"`
	Seconds float64 `json:"seconds"`
}

func evalLivenessCmd(a *app) *cobra.Command {
	var (
		data, rule              string
		lfw, limit, liveElement int
		antiScale, liveScale    float64
		antiRGB, liveBGR        bool
	)
	cmd := &cobra.Command{
		Use:   "liveness --data DIR [--lfw N] [--limit N] [--json]",
		Short: "Presentation-attack gate: BPCER on real photos, APCER on SYNTHETIC print/replay approximations (not a real PAD evaluation)",
		Long: "Scores real faces (LFW sample, deepface, face_recognition, detector/single) and synthetic attack\n" +
			"approximations made from them (print: halftone, paper white, low resolution, blur; replay: moire\n" +
			"pixel grid, gamma, banding, highlight) plus noise, flat-colour and non-face controls with both\n" +
			"liveness models. No real presentation attack was captured: see docs/liveness.md.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if data == "" {
				return usageErr("--data is required (the shared datasets folder)")
			}
			if lfw < 0 || limit < 0 {
				return usageErr("--lfw and --limit must not be negative")
			}
			opts := liveness.Options{}
			switch rule {
			case "min":
				opts.Rule = liveness.RuleMin
			case "mean":
				opts.Rule = liveness.RuleMean
			default:
				return usageErr("--rule %q: want min or mean", rule)
			}
			opts.Antispoof, opts.Liveness = liveness.AntispoofPreprocess(), liveness.LivenessPreprocess()
			if antiScale != 0 {
				opts.Antispoof.Scale = antiScale
			}
			if liveScale != 0 {
				opts.Liveness.Scale = liveScale
			}
			if antiRGB {
				opts.Antispoof.BGR = false
			}
			opts.Liveness.BGR = opts.Liveness.BGR || liveBGR
			if liveElement >= 0 {
				opts.Liveness.Element = liveElement
			}
			start := time.Now()
			ctx := cmd.Context()
			c, err := a.cache()
			if err != nil {
				return err
			}
			rt, err := inference.Open(inference.Options{LibraryPath: c.LibraryPath()})
			if err != nil {
				return err
			}
			defer rt.Close()
			g, err := liveness.Open(ctx, rt, c, opts)
			if err != nil {
				return usageErr("%v", err)
			}
			defer g.Close()
			det, closeDet, err := leval.OpenDetector(ctx, rt, c)
			if err != nil {
				return err
			}
			defer closeDet()
			bar := a.bar(-1, "liveness")
			rep, err := leval.Run(ctx, leval.Config{Data: data, LFW: lfw, Limit: limit, Gate: g, Detect: det,
				Progress: func(done, total int) {
					bar.ChangeMax(total)
					_ = bar.Set(done)
				}})
			_ = bar.Finish()
			if errors.Is(err, leval.ErrNoData) {
				return usageErr("--data %s: %v", data, err)
			}
			if err != nil {
				return err
			}
			out := LivenessEvalReport{Report: rep, Dataset: data, Seconds: time.Since(start).Seconds()}
			if a.jsonOut {
				return a.printJSON(out)
			}
			writeLivenessTable(a.stdout, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&data, "data", "", "the shared datasets folder (../shared/datasets)")
	f.IntVar(&lfw, "lfw", 1000, "LFW aligned crops to sample")
	f.IntVar(&limit, "limit", 0, "cap the images of each source and the controls of each kind (0: no cap)")
	f.StringVar(&rule, "rule", "min", "how the two scores combine: min or mean")
	// Preprocessing overrides, to reproduce the comparison in docs/liveness.md.
	f.Float64Var(&antiScale, "antispoof-scale", 0, "antispoof crop: detector box enlargement (default 1.0)")
	f.Float64Var(&liveScale, "liveness-scale", 0, "liveness crop: detector box enlargement (default 1.4, Human's)")
	f.BoolVar(&antiRGB, "antispoof-rgb", false, "feed antispoof RGB (Human's) instead of BGR")
	f.BoolVar(&liveBGR, "liveness-bgr", false, "feed liveness BGR instead of RGB")
	f.IntVar(&liveElement, "liveness-element", -1, "liveness softmax element reported as live (default 0, Human's)")
	return cmd
}

// writeLivenessTable prints the report for people.
func writeLivenessTable(w io.Writer, r LivenessEvalReport) {
	fmt.Fprintf(w, "WARNING: %s\n\n", r.Warning)
	fmt.Fprintf(w, "bona fide faces: %d (", r.BonaFide)
	for i, s := range r.Sources {
		if i > 0 {
			fmt.Fprint(w, ", ")
		}
		fmt.Fprintf(w, "%s %d/%d", s.Name, s.Faces, s.Images)
	}
	fmt.Fprintf(w, "); rule %s; antispoof crop %+v, liveness crop %+v\n", r.Rule, r.Preprocess["antispoof"], r.Preprocess["liveness"])
	names := []string{}
	for _, at := range r.Attacks {
		names = append(names, at.Name)
	}
	for _, c := range r.Controls {
		names = append(names, c.Name)
	}
	for _, m := range leval.ModelNames() {
		mr := r.Models[m]
		fmt.Fprintf(w, "\n== %s ==\n", m)
		fmt.Fprintf(w, "bona fide scores: min %.3f  p25 %.3f  median %.3f  p75 %.3f  max %.3f\n",
			mr.BonaFide.Min, mr.BonaFide.P25, mr.BonaFide.Median, mr.BonaFide.P75, mr.BonaFide.Max)
		srcs := make([]string, 0, len(mr.BPCERBySource))
		for s := range mr.BPCERBySource {
			srcs = append(srcs, s)
		}
		sort.Strings(srcs)
		fmt.Fprintf(w, "at default threshold %.2f: BPCER %.3f (", mr.DefaultThreshold, mr.AtDefault.BPCER)
		for i, s := range srcs {
			if i > 0 {
				fmt.Fprint(w, ", ")
			}
			fmt.Fprintf(w, "%s %.3f", s, mr.BPCERBySource[s])
		}
		fmt.Fprintf(w, "), worst-species APCER %.3f\n", mr.AtDefault.MaxAPCER)
		fmt.Fprintf(w, "equal error (BPCER = worst of print, replay): threshold %.4f, BPCER %.3f, APCER %.3f\n",
			mr.EER.Threshold, mr.EER.BPCER, mr.EER.MaxAPCER)
		for _, k := range []string{"0.05", "0.10"} {
			p := mr.BPCERAtAPCER[k]
			fmt.Fprintf(w, "BPCER at worst APCER <= %s: %.3f (threshold %.4f)\n", k, p.BPCER, p.Threshold)
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "\t%s\t\n", strings.Join(append([]string{"AUC", "EER-thr", "EER-APCER", "APCER@0.5"}, ""), "\t"))
		for _, n := range names {
			e := mr.EERBySpecies[n]
			fmt.Fprintf(tw, "%s\t%.3f\t%.4f\t%.3f\t%.3f\t\t\n", n, mr.AUC[n], e.Threshold, e.APCER, mr.AtDefault.APCER[n])
		}
		tw.Flush()
		fmt.Fprintln(w, "ROC (APCER of each attack/control; a control's APCER is its acceptance rate):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "threshold\tBPCER\t%s\t\n", strings.Join(names, "\t"))
		for _, p := range mr.ROC {
			fmt.Fprintf(tw, "%.3f\t%.3f", p.Threshold, p.BPCER)
			for _, n := range names {
				fmt.Fprintf(tw, "\t%.3f", p.APCER[n])
			}
			fmt.Fprint(tw, "\t\n")
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\n%.1f s\n", r.Seconds)
}
