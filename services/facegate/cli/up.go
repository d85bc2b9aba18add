package cli

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/facegate/facegate/pkg/allinone"
	"github.com/facegate/facegate/pkg/gateway"
)

func upCmd(a *app) *cobra.Command {
	var (
		cfg      allinone.Config
		gwFiles  []string
		dataDir  string
		keysDir  string
		noMirror bool
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run every service in one process on an embedded NATS server and the embedded index",
		Long: `up runs the whole pipeline in one process: gateways (one per --gateway config file), an embedder,
the matcher, the enrolment API, the audit consumer, on an embedded NATS JetStream server whose data
lives in --data. Everything persists there: stopping and starting again on the same --data resumes
with every enrolment, decision and audit record.

On the first start it creates the keys (in --keys, default <data>/keys): the key-encryption keys that
seal templates and photos, the JetStream store key, the audit signing keys, and a first admin bearer
token for the API (admin.token). When ready it prints where everything is, as JSON on stdout.
SIGINT or SIGTERM drains and stops.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				return usageErr("--data is required: the directory that keeps the streams, photos, snapshots and audit log")
			}
			for _, f := range gwFiles {
				gc, err := gateway.LoadConfig(f)
				if err != nil {
					return usageErr("%v", err)
				}
				cfg.Gateways = append(cfg.Gateways, gc)
			}
			cfg.DataDir, cfg.KeysDir, cfg.NoMirror, cfg.CacheDir, cfg.Log = dataDir, keysDir, noMirror, a.cacheDir, a.log
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return allinone.Run(ctx, cfg, func(info allinone.Info) {
				fmt.Fprintf(a.stderr, "facegate is up: API %s (admin token in %s), NATS %s; Ctrl-C stops\n",
					info.APIURL, info.AdminTokenFile, info.NATSURL)
				_ = a.printJSON(info)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data", "", "data directory (streams, photos, snapshots, audit log); created if missing")
	f.StringVar(&keysDir, "keys", "", "keys directory (default <data>/keys; keep it on another volume in production)")
	f.StringVar(&cfg.APIAddr, "api", "127.0.0.1:8080", "enrolment API listen address")
	f.StringVar(&cfg.MetricsAddr, "metrics", "127.0.0.1:9090", "Prometheus /metrics, /healthz, /readyz address; empty disables")
	f.IntVar(&cfg.NATSPort, "nats-port", 4222, "embedded NATS server port on 127.0.0.1 (0 picks a free one)")
	f.StringArrayVar(&gwFiles, "gateway", nil, "gateway config file (pkg/gateway YAML); repeat for several; its NATS settings are ignored")
	f.StringVar(&cfg.Model, "model", "", "encoder model id (default: the manifest's default)")
	f.BoolVar(&noMirror, "no-mirror", false, "encode without mirror averaging (faster, slightly less accurate)")
	f.IntVar(&cfg.Concurrency, "concurrency", 0, "frames the embedder processes at once (default: the CPU count)")
	f.DurationVar(&cfg.Cooldown, "cooldown", 0, "one grant per person per door within this time (default 5s)")
	f.DurationVar(&cfg.ClaimWindow, "claim-window", 0, "how long a badge swipe waits for a matching face (default 10s)")
	f.StringVar(&cfg.FFmpeg, "ffmpeg", "ffmpeg", "ffmpeg binary for video files and RTSP cameras")
	return cmd
}
