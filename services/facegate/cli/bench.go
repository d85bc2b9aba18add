package cli

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/modelbench"
)

func benchCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Measure speed against the machine's limits"}
	cmd.AddCommand(benchModelsCmd(a), benchIndexCmd(a))
	cmd.AddCommand(benchPipelineCmd(a), benchLoadCmd(a))
	return cmd
}

func benchModelsCmd(a *app) *cobra.Command {
	var (
		ids []string
		dur time.Duration
	)
	cmd := &cobra.Command{
		Use:   "models",
		Short: "FLOPs per image, ms per image on one thread and on all cores, GFLOP/s and the ratio to the conv peak",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			if len(ids) == 0 {
				for _, md := range c.Manifest.Models {
					ids = append(ids, md.ID)
				}
			}
			var ms []modelbench.Model
			for _, id := range ids {
				if _, err := c.Manifest.Model(id); err != nil {
					return usageErr("%v", err)
				}
				p := c.ONNXPath(id)
				if _, err := os.Stat(p); err != nil {
					return fmt.Errorf("model %s is not converted (%v): run `facegate models fetch`", id, err)
				}
				ms = append(ms, modelbench.Model{ID: id, Path: p})
			}
			if dur <= 0 {
				return usageErr("--duration must be positive")
			}
			rt, err := inference.Open(inference.Options{LibraryPath: c.LibraryPath()})
			if err != nil {
				return err
			}
			defer rt.Close()
			rep, err := modelbench.Run(cmd.Context(), rt, ms, dur, func(s string) { fmt.Fprintln(a.stderr, s+" ...") })
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
	cmd.Flags().StringSliceVar(&ids, "model", nil, "model ids to measure (default: all)")
	cmd.Flags().DurationVar(&dur, "duration", 3*time.Second, "how long to time each configuration")
	return cmd
}
