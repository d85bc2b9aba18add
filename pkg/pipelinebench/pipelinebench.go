// Package pipelinebench measures the whole face pipeline on camera-sized
// frames: JPEG decode, detection, alignment, encoding and the gallery search
// that follows (match), per stage and end to end, on one worker and on every
// core.
//
// Frames are built from real photos that ship with the pinned model packages
// (face-api's demo pictures), so the benchmark runs wherever the model cache
// does: a frame with one face is a region of demo/sample3.jpg around its best
// face, and a frame with five faces is demo/sample5.jpg (five people) cut to
// the frame's aspect around its faces. Each frame is JPEG-encoded once, since
// decoding is part of what a camera frame costs.
//
// Run returns a Report that marshals to JSON (`facegate bench pipeline`);
// the Go benchmarks in this package time the same Process call.
package pipelinebench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/hostinfo"
	"github.com/facegate/facegate/pkg/imaging"
	"github.com/facegate/facegate/pkg/index"
	"github.com/facegate/facegate/pkg/index/embedded"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/modelcache"
)

// Source photos, in the face-api package of the model cache.
const (
	sourcePackage = "@vladmandic/face-api"
	singleSource  = "demo/sample3.jpg"
	groupSource   = "demo/sample5.jpg"
	groupFaces    = 5
	// singleFaceWidths is how many face widths wide the one-face frame's
	// region of the photo is: the face is then a quarter of the frame's
	// width (160 px at 640x480), a person at arm's length from a door camera.
	singleFaceWidths = 4
	jpegQuality      = 90
)

// Size is a frame size in pixels.
type Size struct {
	W int `json:"width"`
	H int `json:"height"`
}

func (s Size) String() string { return fmt.Sprintf("%dx%d", s.W, s.H) }

// DefaultSizes are a VGA door camera and a 1080p one.
func DefaultSizes() []Size { return []Size{{640, 480}, {1920, 1080}} }

// Frame is one benchmark input.
type Frame struct {
	Name   string `json:"name"`
	Size   Size   `json:"size"`
	Faces  int    `json:"faces"`  // people in the picture
	Found  int    `json:"found"`  // faces the pipeline finds in it
	Source string `json:"source"` // the photo it was cut from, and how
	Bytes  int    `json:"jpeg_bytes"`
	JPEG   []byte `json:"-"`
}

// BuildFrames makes a one-face and a five-face frame of every size and
// checks that the pipeline finds the right number of faces in each: a
// frame whose faces are not all found would time less work than it claims.
func BuildFrames(ctx context.Context, eng *face.Engine, c *modelcache.Cache, sizes []Size) ([]Frame, error) {
	single, err := loadSource(c, singleSource)
	if err != nil {
		return nil, err
	}
	group, err := loadSource(c, groupSource)
	if err != nil {
		return nil, err
	}
	sres, err := eng.AnalyzeImage(ctx, single)
	if err != nil {
		return nil, fmt.Errorf("pipelinebench: %s: %w", singleSource, err)
	}
	if len(sres.Faces) == 0 {
		return nil, fmt.Errorf("pipelinebench: %s: no face found", singleSource)
	}
	best := sres.Faces[0] // best score first
	gres, err := eng.AnalyzeImage(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("pipelinebench: %s: %w", groupSource, err)
	}
	if len(gres.Faces) != groupFaces {
		return nil, fmt.Errorf("pipelinebench: %s: found %d faces, want the %d people in it", groupSource, len(gres.Faces), groupFaces)
	}
	var frames []Frame
	for _, sz := range sizes {
		if sz.W < 64 || sz.H < 64 || sz.W > 8192 || sz.H > 8192 {
			return nil, fmt.Errorf("pipelinebench: frame size %v outside 64..8192", sz)
		}
		// One face: a region singleFaceWidths face widths wide around the
		// best face, scaled to the frame. A wider region would take in the
		// photo's other people, so a large frame is enlarged from it (at
		// 1920x1080 by 2.4: a person close to the camera).
		cx, cy := best.Box.X+best.Box.W/2, best.Box.Y+best.Box.H/2
		r := region(single, sz, singleFaceWidths*best.Box.W, cx, cy)
		f1, err := makeFrame(ctx, eng, single, r, sz, fmt.Sprintf("%v, 1 face", sz), 1,
			fmt.Sprintf("%s region %v, face %.0f px wide in the frame", singleSource, r, best.Box.W*float64(sz.W)/float64(r.Dx())))
		if err != nil {
			return nil, err
		}
		// Five faces: the largest region of the photo with the frame's
		// aspect, centred on the faces.
		u := union(gres.Faces)
		r = region(group, sz, math.Inf(1), (u.Min.X+u.Max.X)/2, (u.Min.Y+u.Max.Y)/2)
		f5, err := makeFrame(ctx, eng, group, r, sz, fmt.Sprintf("%v, %d faces", sz, groupFaces), groupFaces,
			fmt.Sprintf("%s region %v", groupSource, r))
		if err != nil {
			return nil, err
		}
		frames = append(frames, f1, f5)
	}
	return frames, nil
}

func loadSource(c *modelcache.Cache, rel string) (*imaging.RGB, error) {
	p, err := c.File(sourcePackage, rel)
	if err != nil {
		return nil, fmt.Errorf("pipelinebench: %w", err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("pipelinebench: source photo (run `facegate models fetch`): %w", err)
	}
	img, _, err := imaging.Decode(data, imaging.Limits{})
	if err != nil {
		return nil, fmt.Errorf("pipelinebench: %s: %w", p, err)
	}
	return img, nil
}

type rectF struct{ Min, Max imaging.Point }

func union(fs []face.Face) rectF {
	u := rectF{imaging.Point{X: math.Inf(1), Y: math.Inf(1)}, imaging.Point{X: math.Inf(-1), Y: math.Inf(-1)}}
	for _, f := range fs {
		u.Min.X, u.Min.Y = math.Min(u.Min.X, f.Box.X), math.Min(u.Min.Y, f.Box.Y)
		u.Max.X, u.Max.Y = math.Max(u.Max.X, f.Box.X+f.Box.W), math.Max(u.Max.Y, f.Box.Y+f.Box.H)
	}
	return u
}

// region is a rectangle of img with the aspect of sz, at most w wide (and as
// large as img allows), centred on (cx, cy) as far as img's edges allow.
func region(img *imaging.RGB, sz Size, w, cx, cy float64) image.Rectangle {
	aspect := float64(sz.W) / float64(sz.H)
	w = math.Min(w, float64(img.W))
	h := w / aspect
	if h > float64(img.H) {
		h = float64(img.H)
		w = h * aspect
	}
	iw, ih := int(math.Round(w)), int(math.Round(h))
	x0 := min(max(int(math.Round(cx-w/2)), 0), img.W-iw)
	y0 := min(max(int(math.Round(cy-h/2)), 0), img.H-ih)
	return image.Rect(x0, y0, x0+iw, y0+ih)
}

func makeFrame(ctx context.Context, eng *face.Engine, src *imaging.RGB, r image.Rectangle, sz Size, name string, faces int, how string) (Frame, error) {
	img := crop(src, r)
	// Resize does not low-pass filter: halve first so no step shrinks by
	// more than 2 and the frame does not alias.
	for img.W >= 2*sz.W && img.H >= 2*sz.H {
		var err error
		if img, err = imaging.Resize(img, (img.W+1)/2, (img.H+1)/2); err != nil {
			return Frame{}, fmt.Errorf("pipelinebench: %s: %w", name, err)
		}
	}
	if img.W != sz.W || img.H != sz.H {
		var err error
		if img, err = imaging.Resize(img, sz.W, sz.H); err != nil {
			return Frame{}, fmt.Errorf("pipelinebench: %s: %w", name, err)
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, toRGBA(img), &jpeg.Options{Quality: jpegQuality}); err != nil {
		return Frame{}, fmt.Errorf("pipelinebench: %s: encode JPEG: %w", name, err)
	}
	fr := Frame{Name: name, Size: sz, Faces: faces, Source: how, Bytes: buf.Len(), JPEG: buf.Bytes()}
	res, err := eng.Analyze(ctx, fr.JPEG)
	if err != nil {
		return Frame{}, fmt.Errorf("pipelinebench: %s: %w", name, err)
	}
	fr.Found = len(res.Faces)
	if fr.Found != faces {
		return Frame{}, fmt.Errorf("pipelinebench: frame %s (%s): the pipeline finds %d faces, want %d", name, how, fr.Found, faces)
	}
	return fr, nil
}

func crop(src *imaging.RGB, r image.Rectangle) *imaging.RGB {
	dst := imaging.NewRGB(r.Dx(), r.Dy())
	for y := 0; y < r.Dy(); y++ {
		o := 3 * ((r.Min.Y+y)*src.W + r.Min.X)
		copy(dst.Pix[3*y*dst.W:3*(y+1)*dst.W], src.Pix[o:o+3*dst.W])
	}
	return dst
}

func toRGBA(m *imaging.RGB) *image.RGBA {
	out := image.NewRGBA(image.Rect(0, 0, m.W, m.H))
	for i, j := 0, 0; i < len(m.Pix); i, j = i+3, j+4 {
		out.Pix[j], out.Pix[j+1], out.Pix[j+2], out.Pix[j+3] = m.Pix[i], m.Pix[i+1], m.Pix[i+2], 0xff
	}
	return out
}

// Gallery is an embedded index of random unit templates: the distances are
// meaningless, but a search over n templates costs what it costs with n
// enrolled ones, since the exact index scans them all.
type Gallery struct {
	idx  *embedded.Index
	coll string
	n    int
}

// GalleryK is how many templates a match asks for: enough to group the
// nearest templates by person, as identification does.
const GalleryK = 10

// NewGallery fills an embedded index with n random unit vectors of dim
// numbers (four templates per person), reproducibly from seed.
func NewGallery(ctx context.Context, dim, n int, seed uint64) (*Gallery, error) {
	if n < 1 || dim < 1 {
		return nil, fmt.Errorf("pipelinebench: gallery of %d templates of %d numbers: both must be positive", n, dim)
	}
	idx, err := embedded.New(embedded.Options{})
	if err != nil {
		return nil, err
	}
	g := &Gallery{idx: idx, coll: "bench", n: n}
	if err := idx.CreateCollection(ctx, index.Collection{Name: g.coll, Dim: dim}); err != nil {
		idx.Close()
		return nil, fmt.Errorf("pipelinebench: %w", err)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	ts := make([]index.Template, n)
	for i := range ts {
		v := make([]float32, dim)
		for j := range v {
			v[j] = float32(rng.NormFloat64())
		}
		if err := face.Normalize(v); err != nil {
			idx.Close()
			return nil, fmt.Errorf("pipelinebench: %w", err)
		}
		ts[i] = index.Template{TemplateInfo: index.TemplateInfo{ID: fmt.Sprintf("t%06d", i), Person: fmt.Sprintf("p%06d", i/4)}, Vector: v}
	}
	if err := idx.Upsert(ctx, g.coll, ts); err != nil {
		idx.Close()
		return nil, fmt.Errorf("pipelinebench: %w", err)
	}
	return g, nil
}

// Len is the number of templates.
func (g *Gallery) Len() int { return g.n }

// Close releases the index.
func (g *Gallery) Close() error { return g.idx.Close() }

// Stages is the time one frame spent in each stage.
type Stages struct {
	Decode, Detect, Align, Encode, Match, Total time.Duration
}

// Process runs one JPEG frame through the pipeline and searches the gallery
// for every face found; it returns the stage times and the number of faces.
func Process(ctx context.Context, eng *face.Engine, g *Gallery, frame []byte) (Stages, int, error) {
	t0 := time.Now()
	res, err := eng.Analyze(ctx, frame)
	if err != nil {
		return Stages{}, 0, err
	}
	tm := time.Now()
	for i, f := range res.Faces {
		if _, err := g.idx.Search(ctx, g.coll, f.Encoding, index.SearchOptions{K: GalleryK}); err != nil {
			return Stages{}, 0, fmt.Errorf("pipelinebench: match face %d: %w", i, err)
		}
	}
	end := time.Now()
	t := res.Timings
	return Stages{Decode: t.Decode, Detect: t.Detect, Align: t.Align, Encode: t.Encode, Match: end.Sub(tm), Total: end.Sub(t0)}, len(res.Faces), nil
}

// Result is one configuration's measurement. Stage times are means per
// frame as one worker sees them (with several workers they include waiting
// for the shared cores); FPS is frames completed per second by all workers.
type Result struct {
	Frame    string  `json:"frame"`
	Size     Size    `json:"size"`
	Faces    int     `json:"faces"`
	Mirror   bool    `json:"mirror"`
	Workers  int     `json:"workers"`
	Frames   int     `json:"frames"`
	Seconds  float64 `json:"seconds"`
	FPS      float64 `json:"frames_per_s"`
	DecodeMS float64 `json:"decode_ms"`
	DetectMS float64 `json:"detect_ms"`
	AlignMS  float64 `json:"align_ms"`
	EncodeMS float64 `json:"encode_ms"`
	MatchMS  float64 `json:"match_ms"`
	TotalMS  float64 `json:"total_ms"`
	P50MS    float64 `json:"p50_ms"`
	P99MS    float64 `json:"p99_ms"`
}

// Measure runs frame through the pipeline on workers goroutines sharing eng
// and g for about dur, after one warm-up frame per worker.
func Measure(ctx context.Context, eng *face.Engine, g *Gallery, fr Frame, workers int, dur time.Duration) (Result, error) {
	if workers < 1 {
		return Result{}, fmt.Errorf("pipelinebench: %d workers: want at least 1", workers)
	}
	if dur <= 0 {
		return Result{}, fmt.Errorf("pipelinebench: duration %v: want a positive one", dur)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		sum      Stages
		totals   []time.Duration
		firstErr error
	)
	// Warm up every worker's path before the clock starts: the first runs
	// of a session allocate ORT's buffers.
	for w := 0; w < workers; w++ {
		if _, _, err := Process(ctx, eng, g, fr.JPEG); err != nil {
			return Result{}, fmt.Errorf("pipelinebench: %s: %w", fr.Name, err)
		}
	}
	start := time.Now()
	deadline := start.Add(dur)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine Stages
			var lat []time.Duration
			for time.Now().Before(deadline) && ctx.Err() == nil {
				s, n, err := Process(ctx, eng, g, fr.JPEG)
				if err == nil && n != fr.Faces {
					err = fmt.Errorf("found %d faces, want %d", n, fr.Faces)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("pipelinebench: %s: %w", fr.Name, err)
					}
					mu.Unlock()
					return
				}
				mine.Decode += s.Decode
				mine.Detect += s.Detect
				mine.Align += s.Align
				mine.Encode += s.Encode
				mine.Match += s.Match
				mine.Total += s.Total
				lat = append(lat, s.Total)
			}
			mu.Lock()
			sum.Decode += mine.Decode
			sum.Detect += mine.Detect
			sum.Align += mine.Align
			sum.Encode += mine.Encode
			sum.Match += mine.Match
			sum.Total += mine.Total
			totals = append(totals, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	if firstErr != nil {
		return Result{}, firstErr
	}
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("pipelinebench: %w", err)
	}
	n := len(totals)
	if n == 0 {
		return Result{}, fmt.Errorf("pipelinebench: %s: no frame finished in %v", fr.Name, dur)
	}
	slices.Sort(totals)
	ms := func(d time.Duration) float64 { return d.Seconds() * 1e3 / float64(n) }
	return Result{
		Frame: fr.Name, Size: fr.Size, Faces: fr.Faces, Mirror: eng.Mirrored(), Workers: workers,
		Frames: n, Seconds: wall.Seconds(), FPS: float64(n) / wall.Seconds(),
		DecodeMS: ms(sum.Decode), DetectMS: ms(sum.Detect), AlignMS: ms(sum.Align), EncodeMS: ms(sum.Encode), MatchMS: ms(sum.Match), TotalMS: ms(sum.Total),
		P50MS: totals[n/2].Seconds() * 1e3, P99MS: totals[min(n-1, n*99/100)].Seconds() * 1e3,
	}, nil
}

// Options shape Run. Zero fields take the defaults in brackets.
type Options struct {
	Duration time.Duration // per configuration [2s]
	Sizes    []Size        // [DefaultSizes]
	Workers  []int         // [1 and runtime.NumCPU()]
	Gallery  int           // templates in the gallery [1000]
	// Mirror lists the encodings to measure: true is the engine's default
	// mirror averaging (two encoder runs per face), false is --no-mirror
	// [both].
	Mirror  []bool
	Encoder string // model id ["" = the manifest's default encoder]
	// Progress, when set, receives a line per step.
	Progress func(string)
}

// Goal is the target: GoalFPS single-face 640x480 frames per second
// through the whole pipeline on the machine's cores.
const GoalFPS = 60

// GoalCheck states where an encoding stands against the goal: its best
// single-face 640x480 throughput over the worker counts measured.
type GoalCheck struct {
	Mirror  bool    `json:"mirror"`
	Workers int     `json:"workers"`
	FPS     float64 `json:"frames_per_s"`
	Met     bool    `json:"met"`
}

// Report is the output of `facegate bench pipeline`.
type Report struct {
	CPU        string      `json:"cpu"`
	Cores      int         `json:"cores"`
	ORTVersion string      `json:"onnxruntime"`
	Encoder    string      `json:"encoder"`
	LoadBefore string      `json:"load_before,omitempty"` // /proc/loadavg: the machine may be shared
	LoadAfter  string      `json:"load_after,omitempty"`
	Gallery    int         `json:"gallery_templates"`
	GalleryK   int         `json:"gallery_k"`
	Frames     []Frame     `json:"frames"`
	Results    []Result    `json:"results"`
	GoalFPS    int         `json:"goal_frames_per_s"`
	Goal       []GoalCheck `json:"goal_640x480_1face"`
}

func (o Options) withDefaults() (Options, error) {
	if o.Duration == 0 {
		o.Duration = 2 * time.Second
	}
	if o.Duration < 0 {
		return o, fmt.Errorf("pipelinebench: duration %v is negative", o.Duration)
	}
	if len(o.Sizes) == 0 {
		o.Sizes = DefaultSizes()
	}
	if len(o.Workers) == 0 {
		o.Workers = []int{1, runtime.NumCPU()}
	}
	slices.Sort(o.Workers)
	o.Workers = slices.Compact(o.Workers)
	if o.Workers[0] < 1 {
		return o, fmt.Errorf("pipelinebench: %d workers: want at least 1", o.Workers[0])
	}
	if o.Gallery == 0 {
		o.Gallery = 1000
	}
	if o.Gallery < 0 {
		return o, fmt.Errorf("pipelinebench: gallery of %d templates", o.Gallery)
	}
	if len(o.Mirror) == 0 {
		o.Mirror = []bool{true, false}
	}
	if o.Progress == nil {
		o.Progress = func(string) {}
	}
	return o, nil
}

// Run builds the frames and measures every frame, encoding and worker count.
func Run(ctx context.Context, rt *inference.Runtime, c *modelcache.Cache, opts Options) (*Report, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	rep := &Report{CPU: hostinfo.CPUModel(), Cores: runtime.NumCPU(), ORTVersion: rt.Version(), LoadBefore: hostinfo.LoadAverage(),
		Gallery: o.Gallery, GalleryK: GalleryK, GoalFPS: GoalFPS}
	var frames []Frame
	for _, mirror := range o.Mirror {
		eng, err := face.Open(ctx, rt, c, face.Options{Encoder: o.Encoder, NoMirror: !mirror})
		if err != nil {
			return nil, fmt.Errorf("pipelinebench: %w", err)
		}
		rep.Encoder = eng.Model().ID
		if frames == nil {
			o.Progress("building frames")
			if frames, err = BuildFrames(ctx, eng, c, o.Sizes); err != nil {
				eng.Close()
				return nil, err
			}
			rep.Frames = frames
		}
		g, err := NewGallery(ctx, eng.Dim(), o.Gallery, 1)
		if err != nil {
			eng.Close()
			return nil, err
		}
		for _, fr := range frames {
			for _, w := range o.Workers {
				o.Progress(fmt.Sprintf("%s, %s, %d worker(s)", fr.Name, mirrorName(mirror), w))
				r, err := Measure(ctx, eng, g, fr, w, o.Duration)
				if err != nil {
					g.Close()
					eng.Close()
					return nil, err
				}
				rep.Results = append(rep.Results, r)
			}
		}
		err = errors.Join(g.Close(), eng.Close())
		if err != nil {
			return nil, fmt.Errorf("pipelinebench: %w", err)
		}
	}
	for _, mirror := range o.Mirror {
		if r, ok := rep.best(Size{640, 480}, 1, mirror); ok {
			rep.Goal = append(rep.Goal, GoalCheck{Mirror: mirror, Workers: r.Workers, FPS: r.FPS, Met: r.FPS >= GoalFPS})
		}
	}
	rep.LoadAfter = hostinfo.LoadAverage()
	return rep, nil
}

// best is the highest-throughput result for a frame kind and encoding.
func (r *Report) best(sz Size, faces int, mirror bool) (Result, bool) {
	var out Result
	ok := false
	for _, x := range r.Results {
		if x.Size == sz && x.Faces == faces && x.Mirror == mirror && (!ok || x.FPS > out.FPS) {
			out, ok = x, true
		}
	}
	return out, ok
}

func mirrorName(m bool) string {
	if m {
		return "mirror"
	}
	return "no-mirror"
}

// Table formats the report for people.
func (r *Report) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "CPU: %s, %d cores; ONNX Runtime %s; encoder %s; gallery %d templates (k=%d)\n", r.CPU, r.Cores, r.ORTVersion, r.Encoder, r.Gallery, r.GalleryK)
	if r.LoadBefore != "" {
		fmt.Fprintf(&b, "load average before: %s, after: %s\n", r.LoadBefore, r.LoadAfter)
	}
	for _, f := range r.Frames {
		fmt.Fprintf(&b, "frame %-20s %7d JPEG bytes, %d face(s) found: %s\n", f.Name, f.Bytes, f.Found, f.Source)
	}
	fmt.Fprintf(&b, "\n%-20s %-9s %7s %8s %8s %8s %8s %8s %8s %8s %8s %8s\n", "frame", "encoding", "workers", "frames/s", "decode", "detect", "align", "encode", "match", "total", "p50", "p99")
	for _, x := range r.Results {
		fmt.Fprintf(&b, "%-20s %-9s %7d %8.1f %8.2f %8.2f %8.2f %8.2f %8.3f %8.2f %8.2f %8.2f\n", x.Frame, mirrorName(x.Mirror), x.Workers, x.FPS,
			x.DecodeMS, x.DetectMS, x.AlignMS, x.EncodeMS, x.MatchMS, x.TotalMS, x.P50MS, x.P99MS)
	}
	b.WriteString("(stage columns: mean ms per frame as one worker sees it)\n")
	for _, g := range r.Goal {
		verdict := "not met"
		if g.Met {
			verdict = "met"
		}
		fmt.Fprintf(&b, "goal %d frames/s (640x480, 1 face), %s: best %.1f frames/s (%d worker(s)), %s\n", r.GoalFPS, mirrorName(g.Mirror), g.FPS, g.Workers, verdict)
	}
	return b.String()
}
