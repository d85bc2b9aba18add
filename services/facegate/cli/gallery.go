package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/facegate/facegate/models"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/natsconn"
	"github.com/facegate/facegate/pkg/photostore"
	"github.com/facegate/facegate/pkg/reembed"
	"github.com/facegate/facegate/pkg/sealed"
)

// ExitIncomplete: `gallery reembed` stopped with photos left because the
// stream kept changing; running it again continues.
const ExitIncomplete = 6

func galleryCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "gallery", Short: "Maintain the enrolled gallery of a deployment (ENROLMENTS stream)"}
	cmd.AddCommand(galleryReembedCmd(a))
	return cmd
}

type reembedFlags struct {
	natsURL, natsCreds, inboxPrefix string
	keysDir, photoDir, model        string
	noMirror                        bool
	provider                        string
	threads                         int
}

func galleryReembedCmd(a *app) *cobra.Command {
	var f reembedFlags
	cmd := &cobra.Command{
		Use:   "reembed --nats-url URL [--nats-creds FILE] [--nats-inbox-prefix P] --keys DIR --photos DIR --model MODEL_ID [--no-mirror]",
		Short: "Re-embed the gallery into a new model's embedding space from the retained enrolment photos",
		Long: `Encodings of two models are not comparable, so rolling out a new model needs every enrolled photo
encoded again. reembed replays the ENROLMENTS stream, and for every live photo without a template
in the new model's space reads the sealed photo from the photo store (--photos, the API's
--photo-dir; keys from --keys), encodes it with --model (exactly one face must pass quality, as at
enrolment), and publishes a PhotoAdd of the new space with the same person and photo ids. The old
templates stay: services configured with both spaces hold both collections until the switch.

Photos the new model cannot enrol are reported (person hash, photo id, reason) and do not fail the
run. A run is idempotent: photos already in the new space are skipped, so an interrupted run is
finished by running it again. A removal or erasure landing during the run wins.

Every flag falls back to the environment variable FACEGATE_<FLAG> (--nats-url: FACEGATE_NATS_URL).
Exit codes: 0 done (refusals included), 1 error, 2 usage, 6 photos left (the stream kept changing:
run again).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := envFallback(cmd.Flags(), os.LookupEnv); err != nil {
				return err
			}
			return a.reembed(cmd, &f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.natsURL, "nats-url", "", "NATS server URL with the ENROLMENTS stream (required)")
	fl.StringVar(&f.natsCreds, "nats-creds", "", "NATS credential: a .creds file or an NKEY seed file (a natsauth reembed user)")
	fl.StringVar(&f.inboxPrefix, "nats-inbox-prefix", "", "inbox prefix of the NATS user (natsauth: _INBOX.<user>)")
	fl.StringVar(&f.keysDir, "keys", "", "key-encryption key folder (sealed.FileKeyProvider; required)")
	fl.StringVar(&f.photoDir, "photos", "", "photo store folder: the API's --photo-dir (required)")
	fl.StringVar(&f.model, "model", "", "the new encoder's model id (see `facegate models list`; required)")
	fl.BoolVar(&f.noMirror, "no-mirror", false, "encode without mirror averaging (the new space is then <model>, not <model>+mirror)")
	fl.StringVar(&f.provider, "execution-provider", "cpu", "ONNX Runtime execution provider: cpu, cuda or tensorrt")
	fl.IntVar(&f.threads, "intra-op-threads", 0, "ONNX Runtime threads per session (0: 1)")
	return cmd
}

// envFallback sets every flag not given on the command line from
// FACEGATE_<FLAG> ("nats-url" -> FACEGATE_NATS_URL), as the services'
// svcflag does: the operator's Job passes secrets' paths and prefixes
// through the environment.
func envFallback(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Changed {
			return
		}
		name := "FACEGATE_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		if v, ok := lookup(name); ok && v != "" {
			if err := fl.Value.Set(v); err != nil {
				errs = append(errs, usageErr("%s=%q: %v", name, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

func (a *app) reembed(cmd *cobra.Command, f *reembedFlags) error {
	ctx := cmd.Context()
	for _, req := range []struct{ flag, v string }{{"--nats-url", f.natsURL}, {"--keys", f.keysDir}, {"--photos", f.photoDir}, {"--model", f.model}} {
		if req.v == "" {
			return usageErr("%s is required (or FACEGATE_%s)", req.flag, strings.ToUpper(strings.ReplaceAll(strings.TrimPrefix(req.flag, "--"), "-", "_")))
		}
	}
	if fi, err := os.Stat(f.photoDir); err != nil || !fi.IsDir() {
		// photostore.New would create it: an empty store re-embeds
		// nothing and refuses every photo, which is a mistake here.
		return usageErr("--photos %s: not a folder (%v)", f.photoDir, err)
	}
	kp, err := sealed.OpenFileKeyProvider(f.keysDir)
	if err != nil {
		return usageErr("--keys: %v", err)
	}
	defer kp.Close()
	photos, err := photostore.New(f.photoDir, kp)
	if err != nil {
		return usageErr("--photos: %v", err)
	}
	c, err := a.cache()
	if err != nil {
		return err
	}
	rt, err := inference.Open(inference.Options{LibraryPath: c.LibraryPath(), Provider: inference.Provider(f.provider), IntraOpThreads: f.threads})
	if err != nil {
		return err
	}
	defer rt.Close()
	eng, err := face.Open(ctx, rt, c, face.Options{Encoder: f.model, NoMirror: f.noMirror})
	if err != nil {
		if errors.Is(err, models.ErrUnknownModel) {
			return usageErr("--model: %v", err)
		}
		return err
	}
	defer eng.Close()
	opts, err := natsconn.Options("facegate-reembed", f.natsCreds, f.inboxPrefix, a.log)
	if err != nil {
		return usageErr("NATS: %v", err)
	}
	conn, err := natsconn.Connect(ctx, f.natsURL, opts, false)
	if err != nil {
		return err
	}
	defer conn.Drain()

	cfg := reembed.Config{JetStream: conn.JS, Keys: kp, Photos: photos, Engine: eng, Log: a.log}
	var bar interface{ Set(int) error }
	pass := 0
	cfg.Progress = func(done, total int) {
		if done == 1 || bar == nil {
			pass++
			b := a.bar(total, fmt.Sprintf("re-embedding into %s (pass %d)", eng.Space(), pass))
			bar = b
		}
		_ = bar.Set(done)
	}
	sum, err := reembed.Run(ctx, cfg)
	if sum != nil {
		if perr := a.printReembed(sum); perr != nil && err == nil {
			err = perr
		}
	}
	if errors.Is(err, reembed.ErrIncomplete) {
		return &exitError{code: ExitIncomplete, err: err}
	}
	return err
}

func (a *app) printReembed(sum *reembed.Summary) error {
	if a.jsonOut {
		return a.printJSON(sum)
	}
	fmt.Fprintf(a.stdout, "space %s (dimension %d): %d photos seen, %d re-embedded, %d already done, %d refused",
		sum.Space, sum.Dim, sum.Seen, sum.Reembedded, sum.AlreadyDone, len(sum.Refused))
	if sum.Compensated > 0 {
		fmt.Fprintf(a.stdout, ", %d undone (person deleted meanwhile)", sum.Compensated)
	}
	if sum.Left > 0 {
		fmt.Fprintf(a.stdout, ", %d left (run again)", sum.Left)
	}
	fmt.Fprintln(a.stdout)
	if len(sum.Refused) > 0 {
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PERSON (SHA-256)\tPHOTO\tREASON\tDETAIL")
		for _, r := range sum.Refused {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.PersonHash, r.PhotoID, r.Reason, r.Detail)
		}
		return tw.Flush()
	}
	return nil
}
