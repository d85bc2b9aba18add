package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/facegate/facegate/models"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/gallery"
	"github.com/facegate/facegate/pkg/imaging"
	"github.com/facegate/facegate/pkg/inference"
)

// faceFlags are shared by the commands that encode faces.
type faceFlags struct {
	db        string
	model     string
	threshold float64
	noMirror  bool
}

func (f *faceFlags) register(cmd *cobra.Command, needDB bool) {
	cmd.Flags().StringVar(&f.model, "model", "", "encoder model id (default: the manifest's default encoder)")
	cmd.Flags().Float64Var(&f.threshold, "threshold", 0, "match threshold on the L2 distance (default: the model's calibrated threshold)")
	cmd.Flags().BoolVar(&f.noMirror, "no-mirror", false, "encode each face once instead of averaging it with its mirror image (a separate embedding space)")
	if needDB {
		cmd.Flags().StringVar(&f.db, "db", "", "gallery directory (required)")
		_ = cmd.MarkFlagRequired("db")
	}
}

// session is an open engine (runtime, detector, encoder) and, optionally, a gallery.
type session struct {
	rt        *inference.Runtime
	eng       *face.Engine
	gal       *gallery.Gallery
	threshold float64
}

func (s *session) close() {
	if s.gal != nil {
		s.gal.Close()
	}
	if s.eng != nil {
		s.eng.Close()
	}
	if s.rt != nil {
		s.rt.Close()
	}
}

func (a *app) openSession(ctx context.Context, f *faceFlags, withGallery, withThreshold bool) (*session, error) {
	c, err := a.cache()
	if err != nil {
		return nil, err
	}
	s := &session{}
	if s.rt, err = inference.Open(inference.Options{LibraryPath: c.LibraryPath()}); err != nil {
		return nil, err
	}
	if s.eng, err = face.Open(ctx, s.rt, c, face.Options{Encoder: f.model, NoMirror: f.noMirror}); err != nil {
		s.close()
		if errors.Is(err, models.ErrUnknownModel) {
			return nil, usageErr("%v", err)
		}
		return nil, err
	}
	md := s.eng.Model()
	switch {
	case f.threshold < 0 || f.threshold >= 2:
		s.close()
		return nil, usageErr("--threshold %v: an L2 distance between unit vectors lies in [0,2)", f.threshold)
	case f.threshold > 0:
		s.threshold = f.threshold
	case withThreshold:
		th, err := models.ThresholdFor(c.Root, md, s.eng.Mirrored())
		if err != nil {
			s.close()
			return nil, err
		}
		s.threshold = th
	}
	if withGallery {
		if s.gal, err = gallery.Open(ctx, f.db, s.eng.Space(), md.Output.Size); err != nil {
			s.close()
			if errors.Is(err, gallery.ErrModelMismatch) {
				return nil, usageErr("%v", err)
			}
			return nil, err
		}
	}
	return s, nil
}

// readImage reads and analyses one image; decoding problems are input errors.
func (s *session) analyze(ctx context.Context, path string) (*face.Result, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, usageErr("read %s: %v", path, err)
	}
	res, err := s.eng.Analyze(ctx, data)
	if err != nil {
		for _, e := range []error{imaging.ErrEmpty, imaging.ErrCorrupt, imaging.ErrTooLarge, imaging.ErrUnsupportedFormat} {
			if errors.Is(err, e) {
				return nil, nil, usageErr("%s: %v", path, err)
			}
		}
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(res.Faces) == 0 {
		return nil, nil, &exitError{code: ExitNoFace, err: fmt.Errorf("%s: %w", path, face.ErrNoFace)}
	}
	return res, data, nil
}

// subject is the face a decision is about when an image shows several: the
// largest, i.e. the person nearest the camera.
func subject(res *face.Result) face.Face {
	best := res.Faces[0]
	for _, f := range res.Faces[1:] {
		if f.Box.W*f.Box.H > best.Box.W*best.Box.H {
			best = f
		}
	}
	return best
}

func enrollCmd(a *app) *cobra.Command {
	var (
		f    faceFlags
		name string
	)
	cmd := &cobra.Command{
		Use:   "enroll --db DIR --name NAME IMAGE...",
		Short: "Enrol a person from one or more photos (each must show exactly one face)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := gallery.ValidateName(name); err != nil {
				return usageErr("--name: %v", err)
			}
			ctx := cmd.Context()
			s, err := a.openSession(ctx, &f, true, false)
			if err != nil {
				return err
			}
			defer s.close()
			bar := a.bar(len(args), "enrolling "+name)
			type photo struct {
				File      string `json:"file"`
				Photo     string `json:"photo"`
				Duplicate bool   `json:"duplicate"`
			}
			var done []photo
			for _, p := range args {
				res, data, err := s.analyze(ctx, p)
				if err != nil {
					return err
				}
				if len(res.Faces) != 1 {
					return usageErr("%s: %d faces found; an enrolment photo must show exactly one person", p, len(res.Faces))
				}
				if q := res.Faces[0].Quality; !q.OK {
					return usageErr("%s: the face is not good enough to enrol: %s", p, strings.Join(q.Reasons, "; "))
				}
				e, err := s.gal.Enroll(ctx, name, data, res.Faces[0].Encoding)
				if err != nil {
					return err
				}
				done = append(done, photo{p, e.Photo, e.Duplicate})
				_ = bar.Add(1)
			}
			if err := s.gal.Save(ctx); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "Enrolled %s from %d photo(s).\n", name, len(done))
			return a.printJSON(map[string]any{"identity": name, "photos": done, "model": s.eng.Model().ID})
		},
	}
	f.register(cmd, true)
	cmd.Flags().StringVar(&name, "name", "", "the person's name (required)")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

func verifyCmd(a *app) *cobra.Command {
	var (
		f  faceFlags
		as string
	)
	cmd := &cobra.Command{
		Use:   "verify --db DIR --as NAME IMAGE",
		Short: "Is the person in IMAGE the enrolled NAME? (1:1)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			s, _, subj, err := a.probe(ctx, &f, args[0])
			if err != nil {
				return err
			}
			defer s.close()
			m, err := s.gal.Verify(ctx, as, subj.Encoding)
			if errors.Is(err, gallery.ErrUnknownPerson) {
				return usageErr("%q is not enrolled in %s", as, f.db)
			}
			if err != nil {
				return err
			}
			match := m.Distance < s.threshold
			if match {
				fmt.Fprintf(a.stderr, "It's %s, welcome in!\n", as)
			} else {
				fmt.Fprintf(a.stderr, "It's not %s, please go away\n", as)
			}
			return a.printJSONLine(map[string]any{"identity": as, "distance": m.Distance, "threshold": s.threshold, "match": match, "model": s.eng.Model().ID})
		},
	}
	f.register(cmd, true)
	cmd.Flags().StringVar(&as, "as", "", "the claimed identity (required)")
	_ = cmd.MarkFlagRequired("as")
	return cmd
}

func identifyCmd(a *app) *cobra.Command {
	var f faceFlags
	cmd := &cobra.Command{
		Use:   "identify --db DIR IMAGE",
		Short: "Who is the person in IMAGE? (1:K)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			s, res, subj, err := a.probe(ctx, &f, args[0])
			if err != nil {
				return err
			}
			defer s.close()
			m, err := s.gal.Identify(ctx, subj.Encoding)
			if errors.Is(err, gallery.ErrEmpty) {
				return usageErr("%s has nobody enrolled: run `facegate enroll` first", f.db)
			}
			if err != nil {
				return err
			}
			var identity any
			if m.Distance < s.threshold {
				identity = m.Name
				fmt.Fprintf(a.stderr, "it's %s, the distance is %.4f\n", m.Name, m.Distance)
			} else {
				fmt.Fprintln(a.stderr, "Not in the database.")
			}
			return a.printJSONLine(map[string]any{"identity": identity, "distance": m.Distance, "threshold": s.threshold, "model": s.eng.Model().ID, "faces": len(res.Faces)})
		},
	}
	f.register(cmd, true)
	return cmd
}

func peopleCmd(a *app) *cobra.Command {
	var f faceFlags
	cmd := &cobra.Command{
		Use:   "people --db DIR",
		Short: "List enrolled people",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			g, err := a.openGalleryOnly(cmd.Context(), &f)
			if err != nil {
				return err
			}
			defer g.Close()
			type row struct {
				Name   string `json:"name"`
				Photos int    `json:"photos"`
			}
			rows := []row{}
			for _, p := range g.People() {
				rows = append(rows, row{p.Name, len(p.Photos)})
			}
			if a.jsonOut {
				return a.printJSON(rows)
			}
			for _, r := range rows {
				fmt.Fprintf(a.stdout, "%s\t%d photo(s)\n", r.Name, r.Photos)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&f.db, "db", "", "gallery directory (required)")
	cmd.Flags().StringVar(&f.model, "model", "", "encoder model id (default: the manifest's default encoder)")
	cmd.Flags().BoolVar(&f.noMirror, "no-mirror", false, "the gallery was built with --no-mirror")
	_ = cmd.MarkFlagRequired("db")
	return cmd
}

func forgetCmd(a *app) *cobra.Command {
	var (
		f    faceFlags
		name string
	)
	cmd := &cobra.Command{
		Use:   "forget --db DIR --name NAME",
		Short: "Delete a person and every template of theirs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			g, err := a.openGalleryOnly(cmd.Context(), &f)
			if err != nil {
				return err
			}
			defer g.Close()
			n, err := g.Forget(cmd.Context(), name)
			if errors.Is(err, gallery.ErrUnknownPerson) {
				return usageErr("%q is not enrolled in %s", name, f.db)
			}
			if err != nil {
				return err
			}
			if err := g.Save(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "Forgot %s (%d template(s) deleted).\n", name, n)
			return a.printJSONLine(map[string]any{"identity": name, "templates_deleted": n})
		},
	}
	cmd.Flags().StringVar(&f.db, "db", "", "gallery directory (required)")
	cmd.Flags().StringVar(&f.model, "model", "", "encoder model id (default: the manifest's default encoder)")
	cmd.Flags().BoolVar(&f.noMirror, "no-mirror", false, "the gallery was built with --no-mirror")
	cmd.Flags().StringVar(&name, "name", "", "the person to delete (required)")
	_ = cmd.MarkFlagRequired("db")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

// openGalleryOnly opens the gallery without loading any model.
func (a *app) openGalleryOnly(ctx context.Context, f *faceFlags) (*gallery.Gallery, error) {
	m, err := models.Load()
	if err != nil {
		return nil, err
	}
	md := m.DefaultEncoder()
	if f.model != "" {
		if md, err = m.Model(f.model); err != nil {
			return nil, usageErr("%v", err)
		}
	}
	g, err := gallery.Open(ctx, f.db, face.SpaceOf(md.ID, !f.noMirror), md.Output.Size)
	if errors.Is(err, gallery.ErrModelMismatch) {
		return nil, usageErr("%v", err)
	}
	return g, err
}

// probe opens a session with the gallery and finds the subject face of the
// image a verify or identify is about.
func (a *app) probe(ctx context.Context, f *faceFlags, path string) (*session, *face.Result, face.Face, error) {
	s, err := a.openSession(ctx, f, true, true)
	if err != nil {
		return nil, nil, face.Face{}, err
	}
	res, _, err := s.analyze(ctx, path)
	if err != nil {
		s.close()
		return nil, nil, face.Face{}, err
	}
	subj := subject(res)
	warnQuality(a, path, subj)
	return s, res, subj, nil
}

// warnQuality tells a person when the decision rests on a poor face; a door
// service turns the same result into a LOW_QUALITY decision instead.
func warnQuality(a *app, path string, f face.Face) {
	if !f.Quality.OK {
		fmt.Fprintf(a.stderr, "warning: %s: poor face: %s\n", path, strings.Join(f.Quality.Reasons, "; "))
	}
}
