package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/facegate/facegate/pkg/index/indexbench"
)

func benchIndexCmd(a *app) *cobra.Command {
	var (
		sizes  []int
		dim    int
		single int
		recall int
	)
	cmd := &cobra.Command{
		Use:   "index",
		Short: "Gallery search: latency p50/p99, batched throughput, memory and recall per gallery size, against the memory-bandwidth limit",
		Long: `Builds galleries of random unit vectors in the embedded index (float32 exact, int8 exact, int8 with
a fixed re-rank) and measures single-query latency, batched queries per second, memory and recall@1,
each compared with bytes read per query over the measured memory bandwidth. The vector kernels are
plain Go unless the binary was built with GOEXPERIMENT=simd (AVX2 kernels; see pkg/index/README.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, n := range sizes {
				if n < 1 {
					return usageErr("--sizes: %d is not a gallery size", n)
				}
			}
			cfg := indexbench.Config{Sizes: sizes, Dim: dim, SingleQueries: single, RecallQueries: recall,
				Progress: func(s string) { fmt.Fprintln(a.stderr, s) }}
			rep, err := indexbench.Run(cmd.Context(), cfg)
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
	cmd.Flags().IntSliceVar(&sizes, "sizes", []int{10000, 100000, 1000000}, "gallery sizes")
	cmd.Flags().IntVar(&dim, "dim", 128, "vector dimension")
	cmd.Flags().IntVar(&single, "single", 200, "single queries timed per case")
	cmd.Flags().IntVar(&recall, "recall", 1000, "queries for recall@1")
	return cmd
}
