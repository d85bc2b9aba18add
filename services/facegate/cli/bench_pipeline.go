package cli

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/facegate/facegate/models"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/pipelinebench"
)

func benchPipelineCmd(a *app) *cobra.Command {
	var (
		dur      time.Duration
		gallery  int
		model    string
		noMirror bool
	)
	cmd := &cobra.Command{
		Use:   "pipeline",
		Short: "ms per stage (decode, detect, align, encode, match) and frames/s for camera frames, on one worker and on all cores",
		Long: `Pipeline times whole frames: a JPEG is decoded, its faces found, aligned and encoded, and each face
is searched in an embedded gallery of random templates. Frames are 640x480 and 1920x1080, with one face
and with five, cut from face-api's demo photos in the model cache. Each encoding is measured with mirror
averaging (the default: two encoder runs per face) and without it (--no-mirror).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dur <= 0 {
				return usageErr("--duration must be positive")
			}
			if gallery < 1 {
				return usageErr("--gallery must be at least 1")
			}
			c, err := a.cache()
			if err != nil {
				return err
			}
			rt, err := inference.Open(inference.Options{LibraryPath: c.LibraryPath()})
			if err != nil {
				return err
			}
			defer rt.Close()
			opts := pipelinebench.Options{Duration: dur, Gallery: gallery, Encoder: model,
				Progress: func(s string) { fmt.Fprintln(a.stderr, s+" ...") }}
			if noMirror {
				opts.Mirror = []bool{false}
			}
			rep, err := pipelinebench.Run(cmd.Context(), rt, c, opts)
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
	cmd.Flags().DurationVar(&dur, "duration", 2*time.Second, "how long to time each configuration")
	cmd.Flags().IntVar(&gallery, "gallery", 1000, "templates in the gallery searched for every face")
	cmd.Flags().StringVar(&model, "model", "", "encoder model id (default: the manifest's default encoder)")
	cmd.Flags().BoolVar(&noMirror, "no-mirror", false, "measure only encoding without mirror averaging (default: both)")
	return cmd
}
