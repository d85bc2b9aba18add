package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/facegate/facegate/pkg/natsauth"
)

func natsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "nats", Short: "NATS deployment tooling"}
	var depPath, seeds, out string
	gen := &cobra.Command{
		Use:   "gen --deployment FILE --seeds DIR [--out FILE]",
		Short: "Generate a nats-server configuration with one least-privilege NKEY user per service (see pkg/natsauth)",
		Long: `Reads a deployment description (JSON: sites, services, TLS, account layout; see pkg/natsauth.Deployment),
writes one NKEY seed per user into --seeds (0600 files in a 0700 folder; existing seeds are kept so that
regenerating revokes nobody) and the server configuration, which holds only public keys, to --out or stdout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := os.ReadFile(depPath)
			if err != nil {
				return usageErr("--deployment: %v", err)
			}
			var d natsauth.Deployment
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&d); err != nil {
				return usageErr("--deployment %s: %v", depPath, err)
			}
			if err := d.Validate(); err != nil {
				return usageErr("--deployment %s: %v", depPath, err)
			}
			conf, err := natsauth.Generate(d, seeds)
			if err != nil {
				return err
			}
			if out == "" {
				_, err = a.stdout.Write(conf)
				return err
			}
			if err := os.WriteFile(out, conf, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "wrote %s (%d users; seeds in %s)\n", out, len(d.Users), seeds)
			return nil
		},
	}
	gen.Flags().StringVar(&depPath, "deployment", "", "deployment description, JSON (required)")
	gen.Flags().StringVar(&seeds, "seeds", "", "folder for the NKEY seeds; keep it out of the repository (required)")
	gen.Flags().StringVar(&out, "out", "", "configuration file to write (default stdout)")
	_ = gen.MarkFlagRequired("deployment")
	_ = gen.MarkFlagRequired("seeds")
	cmd.AddCommand(gen, natsBootstrapCmd(a))
	return cmd
}
