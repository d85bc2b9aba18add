package cli

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/facegate/facegate/pkg/keyrotation"
	"github.com/facegate/facegate/pkg/sealed"
)

// ExitKeyInUse: `keys retire` refused because objects are still wrapped
// under the key.
const ExitKeyInUse = 5

// keysFlags are the stores every keys subcommand looks at.
type keysFlags struct {
	keysDir, dataDir     string
	photoDirs, snapshots []string
	natsURL, natsCreds   string
}

func (f *keysFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.keysDir, "keys", "", "key-encryption key folder (sealed.FileKeyProvider; required)")
	cmd.Flags().StringVar(&f.dataDir, "data", "", "all-in-one data folder: its photos/ store and directory/directory.snapshot")
	cmd.Flags().StringArrayVar(&f.photoDirs, "photos", nil, "a photo store folder (repeatable; a service's --photo-dir)")
	cmd.Flags().StringArrayVar(&f.snapshots, "snapshot", nil, "a directory snapshot file (repeatable; <--snapshot-dir>/directory.snapshot of each service)")
	cmd.Flags().StringVar(&f.natsURL, "nats-url", "", "NATS server URL with the ENROLMENTS stream (empty: the stream is not looked at)")
	cmd.Flags().StringVar(&f.natsCreds, "nats-creds", "", "NATS credential: a .creds file, or an NKEY seed file ending in .nk")
	_ = cmd.MarkFlagRequired("keys")
}

// open opens the key folder and NATS; close releases both.
func (f *keysFlags) open(a *app) (cfg keyrotation.Config, closeFn func(), err error) {
	kp, err := sealed.OpenFileKeyProvider(f.keysDir)
	if err != nil {
		return cfg, nil, usageErr("--keys: %v", err)
	}
	cfg = keyrotation.Config{Keys: kp, KeysDir: f.keysDir, PhotoDirs: append([]string(nil), f.photoDirs...),
		SnapshotFiles: append([]string(nil), f.snapshots...), Log: a.log}
	if f.dataDir != "" {
		photos, snap := keyrotation.DataLayout(f.dataDir)
		cfg.PhotoDirs = append(cfg.PhotoDirs, photos)
		cfg.SnapshotFiles = append(cfg.SnapshotFiles, snap)
	}
	closers := []func(){func() { kp.Close() }}
	closeFn = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	if f.natsURL != "" {
		opts := []nats.Option{nats.Name("facegate-keys")}
		switch {
		case strings.HasSuffix(f.natsCreds, ".nk"):
			o, err := nats.NkeyOptionFromSeed(f.natsCreds)
			if err != nil {
				closeFn()
				return cfg, nil, usageErr("--nats-creds %s: %v", f.natsCreds, err)
			}
			opts = append(opts, o)
		case f.natsCreds != "":
			opts = append(opts, nats.UserCredentials(f.natsCreds))
		}
		nc, err := nats.Connect(f.natsURL, opts...)
		if err != nil {
			closeFn()
			return cfg, nil, fmt.Errorf("connect to NATS at %s: %w", f.natsURL, err)
		}
		closers = append(closers, nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			closeFn()
			return cfg, nil, fmt.Errorf("jetstream: %w", err)
		}
		cfg.JetStream = js
	} else if f.natsCreds != "" {
		closeFn()
		return cfg, nil, usageErr("--nats-creds without --nats-url")
	}
	return cfg, closeFn, nil
}

func keysCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Rotate and retire the key-encryption keys of biometric data at rest",
		Long: `Biometric data at rest is sealed (pkg/sealed): face templates in the ENROLMENTS stream, retained
enrolment photos, directory snapshots. Each object's data key is wrapped by a key-encryption key (KEK).

  status  which KEKs exist and how many objects each one wraps, per store
  rotate  make a new active KEK and re-wrap every object under an older one (no data is decrypted)
  retire  remove an old KEK once nothing uses it (--force: crypto-shred what still does)

Services load the key folder at start and keep sealing under the KEK that was active then: after
rotate, restart them, run rotate again (it finishes instead of making another key while objects
remain under an older key, or use --no-new-key), check status, then retire.`}
	cmd.AddCommand(keysStatusCmd(a), keysRotateCmd(a), keysRetireCmd(a))
	return cmd
}

func keysStatusCmd(a *app) *cobra.Command {
	var f keysFlags
	cmd := &cobra.Command{
		Use:   "status --keys DIR [--data DIR | --photos DIR --snapshot FILE] [--nats-url URL [--nats-creds FILE]]",
		Short: "List the KEKs and how many stored objects each one wraps, per store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, closeFn, err := f.open(a)
			if err != nil {
				return err
			}
			defer closeFn()
			bar := a.keysProgress(&cfg)
			st, err := keyrotation.GetStatus(cmd.Context(), cfg)
			bar.finish()
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(st)
			}
			a.printKeyTable(st)
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func (a *app) printKeyTable(st *keyrotation.Status) {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tCREATED\tACTIVE\tSTREAM TEMPLATES\tPHOTO FILES\tSNAPSHOTS")
	for _, k := range st.Keys {
		created := "-"
		if !k.Created.IsZero() {
			created = k.Created.Format(time.RFC3339)
		}
		active := ""
		switch {
		case k.Active:
			active = "yes"
		case !k.Present:
			active = "MISSING"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\n", k.ID, created, active, k.Stream, k.Photos, k.Snapshots)
	}
	tw.Flush()
	checked := "nothing"
	if len(st.Checked) > 0 {
		checked = strings.Join(st.Checked, ", ")
	}
	fmt.Fprintf(a.stderr, "stores checked: %s\n", checked)
	if st.Unreadable > 0 {
		fmt.Fprintf(a.stderr, "%d objects are not sealed blobs at all\n", st.Unreadable)
	}
}

func keysRotateCmd(a *app) *cobra.Command {
	var (
		f        keysFlags
		noNewKey bool
	)
	cmd := &cobra.Command{
		Use:   "rotate --keys DIR [--data DIR | --photos DIR --snapshot FILE] [--nats-url URL [--nats-creds FILE]] [--no-new-key]",
		Short: "Make a new active KEK and re-wrap every stored object under an older one",
		Long: `Rotate makes a new active KEK, then re-wraps every object under another KEK: photo files and
snapshots by atomic replace; stream templates by republishing each PhotoAdd still in effect with its
template re-wrapped (same subject and fields, a new change_id) and securely deleting the original.
PhotoAdds no longer in effect (superseded, photo removed, person deleted) are deleted, not republished.
A change to a person that lands meanwhile wins (the republish is guarded by the subject's last
sequence, and the stream is replayed again).

Re-running is safe: while objects remain under an older KEK (an unfinished rotation), rotate finishes it
instead of making another key. --no-new-key only re-wraps. A JSON summary goes to stdout with --json.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, closeFn, err := f.open(a)
			if err != nil {
				return err
			}
			defer closeFn()
			bar := a.keysProgress(&cfg)
			sum, err := keyrotation.Rotate(cmd.Context(), cfg, keyrotation.RotateOptions{NoNewKey: noNewKey})
			bar.finish()
			if sum != nil {
				if a.jsonOut {
					if jerr := a.printJSON(sum); jerr != nil {
						return errors.Join(err, jerr)
					}
				} else {
					a.printRotateSummary(sum)
				}
			}
			return err
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&noNewKey, "no-new-key", false, "do not make a new key: only re-wrap objects under older keys with the active one")
	return cmd
}

func (a *app) printRotateSummary(sum *keyrotation.Summary) {
	how := "existing"
	switch {
	case sum.Created:
		how = "new"
	case sum.Resumed:
		how = "existing (finishing an earlier rotation)"
	}
	fmt.Fprintf(a.stdout, "active key: %s (%s)\n", sum.Active, how)
	s := sum.Stream
	fmt.Fprintf(a.stdout, "stream templates: %d republished, %d superseded deleted, %d conflicts retried, %d failed\n",
		s.Republished, s.Dropped, s.Conflicts, s.Failed)
	fmt.Fprintf(a.stdout, "photo files: %d re-wrapped, %d already current, %d failed\n", sum.Photos.Rewrapped, sum.Photos.Current, sum.Photos.Failed)
	fmt.Fprintf(a.stdout, "snapshots: %d re-wrapped, %d already current, %d failed\n", sum.Snapshots.Rewrapped, sum.Snapshots.Current, sum.Snapshots.Failed)
	if sum.After != nil {
		for _, k := range sum.After.Keys {
			if !k.Active && k.Total() > 0 {
				fmt.Fprintf(a.stderr, "key %s still wraps %s\n", k.ID, k.Uses())
			}
		}
	}
}

func keysRetireCmd(a *app) *cobra.Command {
	var (
		f     keysFlags
		key   string
		force bool
	)
	cmd := &cobra.Command{
		Use:   "retire --keys DIR --key ID --nats-url URL (--data DIR | --photos DIR) [--force]",
		Short: "Remove an old KEK once nothing is wrapped under it",
		Long: `Retire removes a KEK that is not active, after checking that no stream template, photo file or
snapshot is still wrapped under it (the stream and the photo store must be given, else exit 2).
Otherwise it exits 5 naming what still uses the key: run rotate (again) first.

--force removes the key whatever still uses it. This is crypto-shredding: every object still wrapped
under the key, including copies in backups, old disk blocks and deleted stream messages not yet
compacted, becomes unreadable for good. No command can undo it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if key == "" {
				return usageErr("--key is required")
			}
			cfg, closeFn, err := f.open(a)
			if err != nil {
				return err
			}
			defer closeFn()
			res, err := keyrotation.Retire(cmd.Context(), cfg, key, force)
			switch {
			case errors.Is(err, keyrotation.ErrInUse):
				err = &exitError{code: ExitKeyInUse, err: err}
			case errors.Is(err, keyrotation.ErrNotChecked):
				err = &exitError{code: ExitUsage, err: err}
			}
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(res)
			}
			if u := res.Shredded.Uses(); u != "" {
				fmt.Fprintf(a.stdout, "removed key %s; shredded: %s (unreadable from now on)\n", key, u)
			} else {
				fmt.Fprintf(a.stdout, "removed key %s (nothing in the checked stores used it)\n", key)
			}
			if len(res.Unchecked) > 0 {
				fmt.Fprintf(a.stderr, "not checked: %s; anything there under the key is unreadable now\n", strings.Join(res.Unchecked, ", "))
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&key, "key", "", "the key id to remove (see keys status)")
	cmd.Flags().BoolVar(&force, "force", false, "remove it even though objects are still wrapped under it: they become unreadable forever")
	return cmd
}

// keysBar drives one progress bar per phase on stderr (shown only on a
// terminal, like the other commands' bars).
type keysBar struct {
	a    *app
	what string
	bar  *progressbar.ProgressBar
}

func (a *app) keysProgress(cfg *keyrotation.Config) *keysBar {
	b := &keysBar{a: a}
	cfg.Progress = func(what string, done, total int) {
		if what != b.what || b.bar == nil {
			b.finish()
			b.what = what
			b.bar = a.bar(total, what)
		}
		_ = b.bar.Set(done)
	}
	return b
}

func (b *keysBar) finish() {
	if b.bar != nil {
		_ = b.bar.Finish()
		b.bar = nil
	}
}
