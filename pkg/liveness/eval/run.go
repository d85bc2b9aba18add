package eval

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/facegate/facegate/pkg/align"
	"github.com/facegate/facegate/pkg/detect"
	"github.com/facegate/facegate/pkg/imaging"
	"github.com/facegate/facegate/pkg/liveness"
)

// Warning is printed with every result, in the JSON and in the table.
const Warning = "SYNTHETIC attacks only: no printed photo, screen replay or mask was ever captured by a camera for this measurement. APCER here is the acceptance of image transforms that imitate some print and screen artefacts; it says nothing reliable about real presentation attacks. BPCER on real photos is a real measurement (of web and press photos, not of door cameras)."

// ErrNoData means a dataset folder the evaluation needs is missing or holds
// no images.
var ErrNoData = errors.New("no images")

// Detector finds faces; the evaluation keeps the best-scoring one per image.
type Detector func(ctx context.Context, img *imaging.RGB) ([]detect.Face, error)

// Config configures Run.
type Config struct {
	// Data is the shared datasets folder (../shared/datasets).
	Data string
	// LFW is how many LFW aligned crops to sample, evenly spaced over the
	// sorted file list. Default 1000.
	LFW int
	// Limit caps the images taken from each source and the control
	// inputs of each kind (0: no cap). Tests use it.
	Limit int
	// Controls is how many noise and how many flat-colour inputs to score.
	// Default 200.
	Controls int
	// Workers run images in parallel. Default runtime.NumCPU().
	Workers int
	Gate    *liveness.Gate
	Detect  Detector
	Limits  imaging.Limits
	// Progress, when set, is called after each image (from any goroutine).
	Progress func(done, total int)
}

// Source is one folder of real photos.
type Source struct {
	Name string `json:"name"`
	Dir  string `json:"dir"`
	What string `json:"what"`
}

// Sources are the bona fide photos, relative to the datasets folder.
func Sources() []Source {
	return []Source{
		{"lfw", "lfw_pairs_aligned/data", "LFW, ArcFace-aligned 112x112 crops (press photos), evenly spaced sample"},
		{"deepface", "deepface/dataset", "deepface test photos, full scenes"},
		{"face_recognition", "face_recognition", "face_recognition examples and test images, full scenes"},
		{"detector_single", "detector/single", "two single-face test photos"},
	}
}

// SourceCount says what was taken from a source.
type SourceCount struct {
	Name        string `json:"name"`
	Images      int    `json:"images"`
	Faces       int    `json:"faces"`
	NoFace      int    `json:"no_face"`
	Undecodable int    `json:"undecodable"`
}

// Control is a sanity input that is neither a face nor an attack.
type Control struct {
	Name  string `json:"name"`
	What  string `json:"what"`
	Count int    `json:"count"`
}

// ModelReport is the result for one score (antispoof, liveness or combined).
type ModelReport struct {
	// DefaultThreshold is the model's decision point as trained (0.5).
	DefaultThreshold float64 `json:"default_threshold"`
	// AtDefault has BPCER, and APCER of every attack and control (for a
	// control: the fraction accepted as live), at DefaultThreshold.
	AtDefault     Point              `json:"at_default"`
	BPCERBySource map[string]float64 `json:"bpcer_by_source_at_default"`
	// EER is where BPCER equals the worst species' APCER (print, replay).
	EER     Point   `json:"eer_point"`
	EERRate float64 `json:"eer"`
	// EERBySpecies is the equal-error point of each attack on its own.
	EERBySpecies map[string]SpeciesEER `json:"eer_by_attack"`
	// BPCERAtAPCER: the lowest BPCER with the worst-species APCER at most
	// 5% (ISO's BPCER20) and 10% (BPCER10).
	BPCERAtAPCER map[string]Point `json:"bpcer_at_max_apcer"`
	// AUC against each attack and control: 0.5 is chance, below 0.5 the
	// model finds the attack more live than real faces.
	AUC map[string]float64 `json:"auc"`
	// BonaFide summarises the bona fide scores (min, quartiles, max).
	BonaFide Quantiles `json:"bona_fide_scores"`
	ROC      []Point   `json:"roc"`
}

// SpeciesEER is one attack's equal-error point.
type SpeciesEER struct {
	Threshold float64 `json:"threshold"`
	BPCER     float64 `json:"bpcer"`
	APCER     float64 `json:"apcer"`
}

// Quantiles of a score set.
type Quantiles struct {
	Min    float64 `json:"min"`
	P25    float64 `json:"p25"`
	Median float64 `json:"median"`
	P75    float64 `json:"p75"`
	Max    float64 `json:"max"`
}

// Report is the outcome of Run.
type Report struct {
	Synthetic  bool                           `json:"synthetic_attacks"`
	Warning    string                         `json:"warning"`
	Rule       string                         `json:"rule"`
	Preprocess map[string]liveness.Preprocess `json:"preprocess"`
	CropSize   int                            `json:"crop_size"`
	BonaFide   int                            `json:"bona_fide"`
	Sources    []SourceCount                  `json:"sources"`
	Attacks    []Attack                       `json:"attacks"`
	Species    []string                       `json:"species"`
	Controls   []Control                      `json:"controls"`
	Models     map[string]ModelReport         `json:"models"`
}

// ModelNames are the keys of Report.Models, in report order.
func ModelNames() []string { return []string{"antispoof", "liveness", "combined"} }

// ROCThresholds are the thresholds of the ROC-ish table.
func ROCThresholds() []float64 {
	return []float64{0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999}
}

// Canvas geometry: attacks are applied to a square "scene" around the face,
// as the camera would see the presented artefact, 2.5 face boxes wide at
// 320 px (the face box at 128 px).
const (
	canvasSize  = 320
	canvasScale = 2.5
)

type item struct {
	source, path string
}

// result is what one image produced.
type result struct {
	undecodable, noFace bool
	bona                liveness.Scores
	resampled           liveness.Scores
	attacks             []liveness.Scores
}

// Run measures the gate and returns the report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Gate == nil || cfg.Detect == nil {
		return nil, errors.New("liveness eval: Gate and Detect are required")
	}
	if cfg.LFW <= 0 {
		cfg.LFW = 1000
	}
	if cfg.Controls <= 0 {
		cfg.Controls = 200
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.NumCPU()
	}
	items, err := collect(cfg)
	if err != nil {
		return nil, err
	}
	nonface, err := listImages(filepath.Join(cfg.Data, "detector", "nonface"))
	if err != nil {
		return nil, fmt.Errorf("liveness eval: %w", err)
	}
	if cfg.Limit > 0 && len(nonface) > cfg.Limit {
		nonface = nonface[:cfg.Limit]
	}
	nControls := cfg.Controls
	if cfg.Limit > 0 {
		nControls = min(nControls, cfg.Limit)
	}
	attacks := Attacks()

	results := make([]result, len(items))
	noise := make([]liveness.Scores, nControls)
	flat := make([]liveness.Scores, nControls)
	nonfaceScores := make([]liveness.Scores, len(nonface))
	total := len(items) + 2*nControls + len(nonface)
	var done atomic.Int64
	jobs := make(chan func() error)
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range cfg.Workers {
		wg.Go(func() {
			for job := range jobs {
				if err := job(); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
				}
				if cfg.Progress != nil {
					cfg.Progress(int(done.Add(1)), total)
				}
			}
		})
	}
	send := func(job func() error) bool {
		select {
		case jobs <- job:
			return true
		case <-ctx.Done():
			return false
		}
	}
	func() {
		defer close(jobs)
		for i, it := range items {
			if !send(func() error {
				r, err := scoreImage(ctx, cfg, it, attacks)
				results[i] = r
				return err
			}) {
				return
			}
		}
		for i := range nControls {
			if !send(func() error {
				rng := rand.New(rand.NewPCG(uint64(i), 1))
				var err error
				noise[i], err = scoreCanvas(ctx, cfg.Gate, noiseCanvas(canvasSize, canvasSize, rng))
				return err
			}) {
				return
			}
			if !send(func() error {
				rng := rand.New(rand.NewPCG(uint64(i), 2))
				var err error
				flat[i], err = scoreCanvas(ctx, cfg.Gate, flatCanvas(canvasSize, canvasSize, rng))
				return err
			}) {
				return
			}
		}
		for i, p := range nonface {
			if !send(func() error {
				img, err := decodeFile(p, cfg.Limits)
				if err != nil {
					return fmt.Errorf("liveness eval: non-face control %s: %w", p, err)
				}
				side := 0.4 * float64(min(img.W, img.H)) / liveness.BoxScale
				f := detect.Face{Box: detect.Box{X: float64(img.W)/2 - side/2, Y: float64(img.H)/2 - side/2, W: side, H: side}}
				s, err := cfg.Gate.Score(ctx, img, f)
				nonfaceScores[i] = s
				return err
			}) {
				return
			}
		}
	}()
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	anti, live := cfg.Gate.Preprocessing()
	rep := &Report{
		Synthetic: true, Warning: Warning, Rule: cfg.Gate.Rule().String(),
		Preprocess: map[string]liveness.Preprocess{"antispoof": anti, "liveness": live},
		CropSize:   liveness.CropSize, Attacks: attacks, Species: []string{"print", "replay"},
		Controls: []Control{
			{"bona-fide-resampled", "NOT an attack: the real face's scene canvas with no transform; shows what the canvas resampling alone does to the scores", 0},
			{"noise", "uniform random RGB noise, face-sized box in the centre", nControls},
			{"flat", "one flat colour (random skin-like tone), face-sized box in the centre", nControls},
			{"nonface", "detector/nonface pictures (cat, coffee, coins, page, ...), centre box", len(nonface)},
		},
		Models: map[string]ModelReport{},
	}
	counts := map[string]*SourceCount{}
	for _, s := range Sources() {
		rep.Sources = append(rep.Sources, SourceCount{Name: s.Name})
	}
	for i := range rep.Sources {
		counts[rep.Sources[i].Name] = &rep.Sources[i]
	}
	type scored struct {
		source string
		s      liveness.Scores
	}
	var bona []scored
	var resampled []liveness.Scores
	attackScores := make([][]liveness.Scores, len(attacks))
	for i, r := range results {
		c := counts[items[i].source]
		c.Images++
		switch {
		case r.undecodable:
			c.Undecodable++
		case r.noFace:
			c.NoFace++
		default:
			c.Faces++
			bona = append(bona, scored{items[i].source, r.bona})
			resampled = append(resampled, r.resampled)
			for a := range attacks {
				attackScores[a] = append(attackScores[a], r.attacks[a])
			}
		}
	}
	rep.BonaFide = len(bona)
	rep.Controls[0].Count = len(resampled)
	if len(bona) == 0 {
		return nil, fmt.Errorf("liveness eval: no face found in any of the %d bona fide images under %s", len(items), cfg.Data)
	}
	pick := []func(liveness.Scores) float32{
		func(s liveness.Scores) float32 { return s.Antispoof },
		func(s liveness.Scores) float32 { return s.Liveness },
		func(s liveness.Scores) float32 { return s.Combined },
	}
	project := func(in []liveness.Scores, k int) []float32 {
		out := make([]float32, len(in))
		for i, s := range in {
			out[i] = pick[k](s)
		}
		return out
	}
	for k, name := range ModelNames() {
		bonaAll := make([]float32, len(bona))
		bySource := map[string][]float32{}
		for i, b := range bona {
			v := pick[k](b.s)
			bonaAll[i] = v
			bySource[b.source] = append(bySource[b.source], v)
		}
		sets := map[string][]float32{}
		for a, at := range attacks {
			sets[at.Name] = project(attackScores[a], k)
		}
		sets["bona-fide-resampled"] = project(resampled, k)
		sets["noise"] = project(noise, k)
		sets["flat"] = project(flat, k)
		sets["nonface"] = project(nonfaceScores, k)
		mr, err := modelReport(bonaAll, bySource, sets, rep.Species)
		if err != nil {
			return nil, fmt.Errorf("liveness eval: %s: %w", name, err)
		}
		rep.Models[name] = mr
	}
	return rep, nil
}

func modelReport(bona []float32, bySource map[string][]float32, sets map[string][]float32, species []string) (ModelReport, error) {
	const def = 0.5
	mr := ModelReport{DefaultThreshold: def, BPCERBySource: map[string]float64{}, EERBySpecies: map[string]SpeciesEER{},
		BPCERAtAPCER: map[string]Point{}, AUC: map[string]float64{}}
	mr.AtDefault = at(def, bona, sets, species)
	for s, v := range bySource {
		mr.BPCERBySource[s] = BPCER(v, def)
	}
	var err error
	if mr.EER, mr.EERRate, err = EER(bona, sets, species); err != nil {
		return mr, err
	}
	for name, s := range sets {
		if len(s) == 0 {
			continue
		}
		p, _, err := EER(bona, sets, []string{name})
		if err != nil {
			return mr, err
		}
		mr.EERBySpecies[name] = SpeciesEER{Threshold: p.Threshold, BPCER: p.BPCER, APCER: p.APCER[name]}
		mr.AUC[name] = AUC(bona, s)
	}
	mr.BPCERAtAPCER["0.05"] = BPCERAtAPCER(bona, sets, species, 0.05)
	mr.BPCERAtAPCER["0.10"] = BPCERAtAPCER(bona, sets, species, 0.10)
	for _, t := range ROCThresholds() {
		mr.ROC = append(mr.ROC, at(t, bona, sets, species))
	}
	mr.BonaFide = quantiles(bona)
	return mr, nil
}

func quantiles(v []float32) Quantiles {
	s := append([]float32(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) float64 { return float64(s[int(math.Round(p*float64(len(s)-1)))]) }
	return Quantiles{Min: q(0), P25: q(0.25), Median: q(0.5), P75: q(0.75), Max: q(1)}
}

// collect lists the bona fide images of every source.
func collect(cfg Config) ([]item, error) {
	var items []item
	for _, s := range Sources() {
		paths, err := listImages(filepath.Join(cfg.Data, filepath.FromSlash(s.Dir)))
		if err != nil {
			return nil, fmt.Errorf("liveness eval: source %s: %w", s.Name, err)
		}
		if s.Name == "lfw" && len(paths) > cfg.LFW {
			// evenly spaced over the sorted list: many people, few repeats
			step := float64(len(paths)) / float64(cfg.LFW)
			sample := make([]string, cfg.LFW)
			for i := range sample {
				sample[i] = paths[int(float64(i)*step)]
			}
			paths = sample
		}
		if cfg.Limit > 0 && len(paths) > cfg.Limit {
			paths = paths[:cfg.Limit]
		}
		for _, p := range paths {
			items = append(items, item{s.Name, p})
		}
	}
	return items, nil
}

// listImages walks dir for .jpg, .jpeg and .png files, sorted.
func listImages(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".jpg", ".jpeg", ".png":
			if !d.IsDir() {
				out = append(out, p)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w (%w)", dir, ErrNoData, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w under %s", ErrNoData, dir)
	}
	sort.Strings(out)
	return out, nil
}

func decodeFile(path string, lim imaging.Limits) (*imaging.RGB, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	img, _, err := imaging.Decode(b, lim)
	return img, err
}

// scoreImage scores one real photo's best face as is, then the same face
// on its scene canvas, plain and under every attack.
func scoreImage(ctx context.Context, cfg Config, it item, attacks []Attack) (result, error) {
	img, err := decodeFile(it.path, cfg.Limits)
	if err != nil {
		// A bad file in the datasets is counted, not fatal.
		return result{undecodable: true}, nil
	}
	faces, err := cfg.Detect(ctx, img)
	if err != nil {
		return result{}, fmt.Errorf("liveness eval: detect %s: %w", it.path, err)
	}
	if len(faces) == 0 {
		return result{noFace: true}, nil
	}
	f := faces[0]
	var r result
	if r.bona, err = cfg.Gate.Score(ctx, img, f); err != nil {
		return r, fmt.Errorf("liveness eval: %s: %w", it.path, err)
	}
	canvas, cf, err := sceneCanvas(img, f.Box)
	if err != nil {
		return r, fmt.Errorf("liveness eval: %s: %w", it.path, err)
	}
	if r.resampled, err = cfg.Gate.Score(ctx, canvas, cf); err != nil {
		return r, fmt.Errorf("liveness eval: %s: %w", it.path, err)
	}
	h := fnv.New64a()
	rel, err := filepath.Rel(cfg.Data, it.path)
	if err != nil {
		rel = it.path
	}
	h.Write([]byte(filepath.ToSlash(rel)))
	seed := h.Sum64()
	for a, at := range attacks {
		rng := rand.New(rand.NewPCG(seed, uint64(a)))
		s, err := cfg.Gate.Score(ctx, at.Apply(canvas, rng), cf)
		if err != nil {
			return r, fmt.Errorf("liveness eval: %s: %s: %w", it.path, at.Name, err)
		}
		r.attacks = append(r.attacks, s)
	}
	return r, nil
}

// scoreCanvas scores a control canvas with a face-sized centre box.
func scoreCanvas(ctx context.Context, g *liveness.Gate, c *imaging.RGB) (liveness.Scores, error) {
	return g.Score(ctx, c, canvasFace())
}

func canvasFace() detect.Face {
	side := canvasSize / canvasScale
	o := (canvasSize - side) / 2
	return detect.Face{Box: detect.Box{X: o, Y: o, W: side, H: side}}
}

// sceneCanvas cuts the square scene around a face box (canvasScale box
// sides wide, black outside the image) at canvasSize pixels, averaging
// blocks first when it shrinks so the canvas does not alias, and returns
// the face's box on it.
func sceneCanvas(img *imaging.RGB, box detect.Box) (*imaging.RGB, detect.Face, error) {
	side := max(box.W, box.H) * canvasScale
	cx, cy := box.X+box.W/2, box.Y+box.H/2
	// integer block-average factor for large faces
	f := int(side / canvasSize)
	src := img
	if f >= 2 {
		src = shrinkArea(img, f)
		cx, cy, side = cx/float64(f), cy/float64(f), side/float64(f)
	}
	k := canvasSize / side
	m := align.Similarity{A: k, Tx: -(cx - side/2) * k, Ty: -(cy - side/2) * k}
	c, err := align.Warp(src, m, canvasSize, canvasSize, align.Border{Mode: align.BorderConstant})
	if err != nil {
		return nil, detect.Face{}, err
	}
	// the box keeps its aspect: scale w and h by the same k
	kk := canvasSize / (max(box.W, box.H) * canvasScale)
	w, h := box.W*kk, box.H*kk
	return c, detect.Face{Box: detect.Box{X: canvasSize/2 - w/2, Y: canvasSize/2 - h/2, W: w, H: h}}, nil
}
