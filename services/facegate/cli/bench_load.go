package cli

import (
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/facegate/facegate/models"
	"github.com/facegate/facegate/pkg/loadbench"
)

func benchLoadCmd(a *app) *cobra.Command {
	var (
		o                loadbench.Options
		mirror, noMirror bool
		cpuProfile       string
	)
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Highest sustained frame rate of N simulated cameras through the bus pipeline, and latency at 80% of it",
		Long: `Load runs the whole pipeline in this process, as the all-in-one does: an embedded NATS server with
the streams, an embedder worker, a directory and a matcher with one identify door per camera and the
frame's person enrolled and allowed everywhere (cooldown 1 ns: every frame becomes a decision).
N cameras publish the one-face 640x480 JPEG of 'bench pipeline' with the headers a gateway sets.

The search doubles the offered rate from --start-rate until a step is not sustained (published
below the offer, frames missing or expired, p99 of a second or more, or latency growing through the
step), then bisects --refine times. A longer run at 80% of the maximum reports frame-to-decision
latency (capture to the decision's arrival at a subscriber) and the per-stage breakdown the
decisions carry. The same frame through the stages without the bus is timed first for reference.
Steps are progress lines on stderr; the load average is reported because the machine may be shared.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("mirror") && cmd.Flags().Changed("no-mirror") && mirror == noMirror {
				return usageErr("--mirror=%v and --no-mirror=%v contradict each other", mirror, noMirror)
			}
			o.NoMirror = noMirror || !mirror
			switch {
			case o.Cameras < 1:
				return usageErr("--cameras must be at least 1")
			case o.Step <= 0 || o.At80 <= 0:
				return usageErr("--step-duration and --duration-at-80 must be positive")
			case o.Warmup < 0 || o.Reference < 0:
				return usageErr("--warmup and --reference-duration must not be negative")
			case o.Refine < 0:
				return usageErr("--refine must not be negative")
			case o.StartRate <= 0:
				return usageErr("--start-rate must be positive")
			case o.MaxRate < 0:
				return usageErr("--max-rate must not be negative (0: no cap)")
			case o.Concurrency < 0 || o.Embedders < 1 || o.Batch < 0:
				return usageErr("--concurrency and --batch must not be negative, --embedders at least 1")
			}
			if o.Warmup == 0 {
				o.Warmup = -1 // loadbench: none (0 would be its default)
			}
			c, err := a.cache()
			if err != nil {
				return err
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("--cpu-profile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("--cpu-profile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			o.Progress = func(s string) { fmt.Fprintln(a.stderr, s) }
			o.Log = a.log
			rep, err := loadbench.Run(cmd.Context(), c, o)
			if errors.Is(err, models.ErrUnknownModel) {
				return usageErr("%v", err)
			}
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(rep)
			}
			fmt.Fprint(a.stdout, rep.Table())
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Cameras, "cameras", 4, "simulated cameras, one identify door each")
	f.DurationVar(&o.Step, "step-duration", 5*time.Second, "measured part of every search step")
	f.DurationVar(&o.Warmup, "warmup", 2*time.Second, "unmeasured load before every step (0: none)")
	f.IntVar(&o.Refine, "refine", 2, "bisection steps after the doubling search")
	f.DurationVar(&o.At80, "duration-at-80", 20*time.Second, "the run at 80% of the highest sustained rate")
	f.BoolVar(&mirror, "mirror", true, "mirror-averaged encodings (the engine's default)")
	f.BoolVar(&noMirror, "no-mirror", false, "encodings without mirror averaging (one encoder run per face)")
	f.StringVar(&o.Encoder, "model", "", "encoder model id (default: the manifest's default encoder)")
	f.IntVar(&o.Concurrency, "concurrency", 0, "frames each embedder replica analyses at once (default: the number of cores)")
	f.IntVar(&o.Embedders, "embedders", 1, "embedder replicas sharing the pool's consumer, each on its own connection")
	f.IntVar(&o.Batch, "batch", 0, "each embedder replica's fetch batch (default: the embedder's, 8)")
	f.Float64Var(&o.StartRate, "start-rate", 8, "first offered rate, frames/s over all cameras")
	f.Float64Var(&o.MaxRate, "max-rate", 0, "stop the search at this rate (0: no cap)")
	f.StringVar(&cpuProfile, "cpu-profile", "", "write a Go CPU profile of the whole run to this file (go tool pprof)")
	f.DurationVar(&o.Reference, "reference-duration", 3*time.Second, "time the frame through the stages without the bus for the ratio (0: skip)")
	return cmd
}
