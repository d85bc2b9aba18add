package cli

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/facegate/facegate/pkg/imaging"
)

// demoDecision is one line of the demo's output.
type demoDecision struct {
	Frame     string  `json:"frame"`
	Door      string  `json:"door"`
	Mode      string  `json:"mode"`     // identify or verify
	Decision  string  `json:"decision"` // grant, deny or unknown
	Identity  *string `json:"identity"`
	Claimed   string  `json:"claimed,omitempty"`
	Distance  float64 `json:"distance"`
	Threshold float64 `json:"threshold"`
	Model     string  `json:"model"`
	Box       [4]int  `json:"box"`
	LatencyMS float64 `json:"latency_ms"`
}

func demoCmd(a *app) *cobra.Command {
	var (
		f   faceFlags
		dir string
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Enrol the people of one sample photo, then decide at a door for every face in the other frames",
		Long: `The demo runs the main job in one process on the embedded index, with the group photos that ship
in @vladmandic/face-api (fetched by 'facegate models fetch'):
  1. every face of demo/sample1.jpg is enrolled as visitor-1, visitor-2, ...;
  2. camera frames arrive at door-1: sample1 mirrored (the same people in a new image), then sample2..6;
     every face is identified against the gallery: grant for an enrolled person, unknown otherwise;
  3. a badge claim for visitor-1 is verified against the mirrored frame.
Decisions are printed as JSON lines on stdout, and as sentences on stderr.
The NATS JetStream pipeline (gateway -> embedder -> matcher) is not built yet; see the README.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, err := a.cache()
			if err != nil {
				return err
			}
			if dir == "" {
				if dir, err = os.MkdirTemp("", "facegate-demo-"); err != nil {
					return err
				}
				defer os.RemoveAll(dir)
			}
			f.db = dir
			s, err := a.openSession(ctx, &f, true, true)
			if err != nil {
				return err
			}
			defer s.close()
			sample := func(i int) (*imaging.RGB, []byte, string, error) {
				p, err := c.File("@vladmandic/face-api", fmt.Sprintf("demo/sample%d.jpg", i))
				if err != nil {
					return nil, nil, "", err
				}
				b, err := os.ReadFile(p)
				if err != nil {
					return nil, nil, "", fmt.Errorf("%w: run `facegate models fetch`", err)
				}
				img, _, err := imaging.Decode(b, imaging.Limits{})
				return img, b, filepath.Base(p), err
			}
			img, raw, name, err := sample(1)
			if err != nil {
				return err
			}
			enrol, err := s.eng.AnalyzeImage(ctx, img)
			if err != nil {
				return err
			}
			for i, fc := range enrol.Faces {
				who := fmt.Sprintf("visitor-%d", i+1)
				// One photo, several people: each face is its own enrolment record.
				key := fmt.Sprintf("%x#face%d", sha256.Sum256(raw), i)
				if _, err := s.gal.EnrollKey(ctx, who, key, fc.Encoding); err != nil {
					return err
				}
				fmt.Fprintf(a.stderr, "enrolled %s from %s (face at %.0f,%.0f)\n", who, name, fc.Box.X, fc.Box.Y)
			}
			if err := s.gal.Save(ctx); err != nil {
				return err
			}
			model := s.eng.Model().ID
			emit := func(d demoDecision) error {
				who := "unknown person"
				if d.Identity != nil {
					who = *d.Identity
				}
				fmt.Fprintf(a.stderr, "%-22s %s %-8s %-14s distance %.3f (threshold %.3f) %5.1f ms\n", d.Frame, d.Door, d.Decision, who, d.Distance, d.Threshold, d.LatencyMS)
				return a.printJSONLine(d)
			}
			type frame struct {
				name string
				img  *imaging.RGB
			}
			frames := []frame{{"sample1.jpg (mirrored)", imaging.Orient(img, 2)}}
			for i := 2; i <= 6; i++ {
				im, _, n, err := sample(i)
				if err != nil {
					return err
				}
				frames = append(frames, frame{n, im})
			}
			for _, fr := range frames {
				t0 := time.Now()
				res, err := s.eng.AnalyzeImage(ctx, fr.img)
				if err != nil {
					return err
				}
				encs := make([][]float32, len(res.Faces))
				for i, fc := range res.Faces {
					encs[i] = fc.Encoding
				}
				// One person is in a frame at most once: faces and people are paired nearest first.
				ms, err := s.gal.IdentifyFaces(ctx, encs, s.threshold)
				if err != nil {
					return err
				}
				for i, fc := range res.Faces {
					m := ms[i]
					d := demoDecision{Frame: fr.name, Door: "door-1", Mode: "identify", Decision: "unknown", Distance: m.Distance,
						Threshold: s.threshold, Model: model, Box: [4]int{int(fc.Box.X), int(fc.Box.Y), int(fc.Box.W), int(fc.Box.H)},
						LatencyMS: float64(time.Since(t0).Microseconds()) / 1e3}
					if m.Name != "" {
						name := m.Name
						d.Decision, d.Identity = "grant", &name
					}
					if err := emit(d); err != nil {
						return err
					}
				}
			}
			// A badge swipe claims visitor-1 at door-1; the mirrored frame is checked against that claim only.
			t0 := time.Now()
			res, err := s.eng.AnalyzeImage(ctx, frames[0].img)
			if err != nil {
				return err
			}
			best := demoDecision{Distance: 2}
			for _, fc := range res.Faces {
				m, err := s.gal.Verify(ctx, "visitor-1", fc.Encoding)
				if err != nil {
					return err
				}
				if m.Distance < best.Distance {
					best = demoDecision{Distance: m.Distance, Box: [4]int{int(fc.Box.X), int(fc.Box.Y), int(fc.Box.W), int(fc.Box.H)}}
				}
			}
			best.Frame, best.Door, best.Mode, best.Claimed, best.Threshold, best.Model = frames[0].name, "door-1", "verify", "visitor-1", s.threshold, model
			best.Decision = "deny"
			if best.Distance < s.threshold {
				who := "visitor-1"
				best.Decision, best.Identity = "grant", &who
			}
			best.LatencyMS = float64(time.Since(t0).Microseconds()) / 1e3
			if err := emit(best); err != nil {
				return err
			}
			people := s.gal.People()
			fmt.Fprintf(a.stderr, "gallery %s: %d people, model %s\n", dir, len(people), model)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "db", "", "keep the demo gallery in this folder (default: a temporary folder, removed afterwards)")
	cmd.Flags().StringVar(&f.model, "model", "", "encoder model id (default: the manifest's default encoder)")
	cmd.Flags().Float64Var(&f.threshold, "threshold", 0, "match threshold (default: the model's calibrated threshold)")
	return cmd
}
