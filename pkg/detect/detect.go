package detect

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/facegate/facegate/pkg/imaging"
)

// Tensor is a dense float32 tensor, row-major, as the inference runtime
// hands it over.
type Tensor struct {
	Shape []int64
	Data  []float32
}

// Runner executes the detection network. input has shape [n, size, size, 3]
// holding raw RGB values 0..255; the outputs may come in any order and with
// or without a leading batch dimension of n.
type Runner interface {
	Run(ctx context.Context, input Tensor) ([]Tensor, error)
}

// Keypoint indices. "Left" and "right" are as seen in the image: LeftEye is
// the eye nearer the image's left edge, which is the subject's right eye.
const (
	LeftEye = iota
	RightEye
	Nose
	Mouth
	LeftEar
	RightEar
	NumKeypoints
)

// Box is an axis-aligned rectangle in original-image pixels (continuous
// coordinates; see package imaging). It is not clipped to the image: a face
// cut by the frame edge keeps its true extent.
type Box struct{ X, Y, W, H float64 }

// Face is one detection.
type Face struct {
	Box       Box
	Score     float64 // sigmoid of the logit, 0..1
	Keypoints [NumKeypoints]imaging.Point
}

// NMSMode selects how overlapping detections are merged.
type NMSMode int

const (
	// WeightedNMS averages every detection overlapping the best one,
	// weighted by score (MediaPipe's choice for BlazeFace). The average of
	// a dozen anchors' keypoints jitters less between frames than any single
	// anchor, which steadies alignment.
	WeightedNMS NMSMode = iota
	// HardNMS keeps the best detection and drops those overlapping it (Human's choice).
	HardNMS
)

// PadPolicy decides when the image is also tried shrunk inside a border.
type PadPolicy int

const (
	// PadAuto: images whose longer side is at most Options.SmallImageSide
	// (crops, not camera frames) are run plain and padded in one batch of
	// two; larger ones are run padded only when the plain pass finds nothing.
	PadAuto PadPolicy = iota
	// PadWhenEmpty runs the padded pass only when the plain pass finds nothing.
	PadWhenEmpty
	// PadAlways runs both passes for every image.
	PadAlways
	// PadNever runs the plain pass only.
	PadNever
)

// Options configure a Detector. The zero value of a field means its default.
type Options struct {
	// InputSize is the model's square input side (256 for BlazeFace-back).
	InputSize int
	// ScoreThreshold: detections scoring below it are discarded before NMS.
	// Default 0.5 (MediaPipe's default minimum detection confidence). With
	// the converted model and these defaults, the 22 faces of the six
	// face-api.js demo group photos score 0.64-0.95 and two false ones 0.25
	// and 0.26; on the 13 non-face pictures of the shared datasets Human's
	// 0.2 lets through 47 detections, 0.5 lets through four (a cat's face
	// 0.78, a coffee cup 0.67, a rocket 0.51, a horse 0.50), which the
	// quality gate and the matcher's threshold handle.
	ScoreThreshold float64
	// Recheck confirms every detection by running the detector again on a
	// square crop twice the face's size around it, where a real face sits
	// at the scale BlazeFace sees best. Faces keep their first-pass score.
	// A candidate scoring at least ScoreThreshold must score RecheckScore
	// in the crop; a weaker one (CandidateThreshold..ScoreThreshold) must
	// score WeakRecheckScore. Measured on ../shared/datasets/detector: every
	// counted face rechecks at >= 0.78, while the textures BlazeFace fires
	// on (a coffee cup, a horse, galaxies, a rocket) recheck at <= 0.64 or
	// vanish; a closed-eyes face at 0.43 in the frame rechecks at 0.94,
	// while weak hits on coins and a text page recheck at <= 0.77. These
	// thresholds were chosen on that same set (46 faces, 13 non-face
	// images), so they carry its selection bias. Zero fields take the
	// defaults 0.4, 0.7 and 0.85; NoRecheck turns the second pass off.
	//
	// A candidate scoring at least ConfirmedScore (default 0.9) is taken
	// without a recheck: the recheck costs a second network run per face,
	// which halved single-face throughput, and no false detection in that
	// set scored above 0.83. Set it to 1 to recheck everything.
	CandidateThreshold float64
	ConfirmedScore     float64
	RecheckScore       float64
	WeakRecheckScore   float64
	NoRecheck          bool
	// IoUThreshold: detections overlapping a better one by more than this
	// are merged (weighted) or dropped (hard). Default 0.3 (MediaPipe's
	// value for this model family). Human's 0.1 suppresses a face partly
	// hidden behind another one in a queue at the door.
	IoUThreshold float64
	NMS          NMSMode
	// ContainThreshold drops a detection when more than this fraction of its
	// box lies inside a better-scoring kept face. BlazeFace fires weakly
	// (0.5-0.7) on parts of a large face: a box over one eye and cheek,
	// nested in the real face's box. IoU misses these because the sizes
	// differ, so a crop of one face would count as two or three people.
	// Default 0.5; 1 disables it.
	ContainThreshold float64
	// MaxFaces caps the result (best scores first); the rest are counted in
	// Result.Dropped. Default 20.
	MaxFaces int
	Pad      PadPolicy
	// PadFactor is how many times larger than the image the padded canvas
	// is: 2 puts a face that fills a crop at half the model input, inside
	// the range BlazeFace-back finds. Default 2.
	PadFactor float64
	// SmallImageSide is PadAuto's crop/frame boundary. Default 256 (an image
	// no larger than the model input is a crop, not a camera frame).
	SmallImageSide int
	// Fill is the colour around the picture in the letterboxed input.
	// Default black. On 309 LFW crops run padded, black and mid-grey found
	// the same faces with the same keypoints (mean difference < 0.1 px).
	Fill imaging.Color
	// MirrorAverage also runs every pass on the mirrored image and lets
	// weighted NMS average each face's keypoints over both. The converted
	// BlazeFace (faithful to its tfjs original) places keypoints
	// asymmetrically: on LFW crops its image-right eye, nose and mouth sit
	// 2.0-2.7 px left of where the mirrored run puts them (boxes agree to
	// 0.15 px). Averaging cancels that, cutting the nose's mean error
	// against the ArcFace template from 4.2 to 3.2 px, for twice the
	// detector work. Only meaningful with WeightedNMS.
	MirrorAverage bool
}

// DefaultOptions returns the documented defaults.
func DefaultOptions() Options {
	return Options{
		InputSize:          256,
		ScoreThreshold:     0.5,
		IoUThreshold:       0.3,
		NMS:                WeightedNMS,
		MaxFaces:           20,
		Pad:                PadAuto,
		PadFactor:          2,
		SmallImageSide:     256,
		ContainThreshold:   0.5,
		CandidateThreshold: 0.4,
		RecheckScore:       0.7,
		WeakRecheckScore:   0.85,
		ConfirmedScore:     0.9,
	}
}

func (o Options) withDefaults() (Options, error) {
	d := DefaultOptions()
	if o.InputSize == 0 {
		o.InputSize = d.InputSize
	}
	if o.ScoreThreshold == 0 {
		o.ScoreThreshold = d.ScoreThreshold
	}
	if o.IoUThreshold == 0 {
		o.IoUThreshold = d.IoUThreshold
	}
	if o.MaxFaces == 0 {
		o.MaxFaces = d.MaxFaces
	}
	if o.PadFactor == 0 {
		o.PadFactor = d.PadFactor
	}
	if o.SmallImageSide == 0 {
		o.SmallImageSide = d.SmallImageSide
	}
	if o.ContainThreshold == 0 {
		o.ContainThreshold = d.ContainThreshold
	}
	if o.CandidateThreshold == 0 {
		o.CandidateThreshold = min(d.CandidateThreshold, o.ScoreThreshold)
	}
	if o.RecheckScore == 0 {
		o.RecheckScore = d.RecheckScore
	}
	if o.WeakRecheckScore == 0 {
		o.WeakRecheckScore = d.WeakRecheckScore
	}
	if o.ConfirmedScore == 0 {
		o.ConfirmedScore = d.ConfirmedScore
	}
	switch {
	case o.InputSize < 16 || o.InputSize%16 != 0:
		return o, fmt.Errorf("detect: input size %d must be a positive multiple of 16", o.InputSize)
	case !(o.ScoreThreshold > 0 && o.ScoreThreshold < 1):
		return o, fmt.Errorf("detect: score threshold %v must be in (0,1)", o.ScoreThreshold)
	case !(o.IoUThreshold > 0 && o.IoUThreshold <= 1):
		return o, fmt.Errorf("detect: IoU threshold %v must be in (0,1]", o.IoUThreshold)
	case o.MaxFaces < 0:
		return o, fmt.Errorf("detect: max faces %d is negative", o.MaxFaces)
	case !(o.CandidateThreshold > 0 && o.CandidateThreshold <= o.ScoreThreshold):
		return o, fmt.Errorf("detect: candidate threshold %v must be in (0, score threshold %v]", o.CandidateThreshold, o.ScoreThreshold)
	case !(o.ConfirmedScore > 0 && o.ConfirmedScore <= 1):
		return o, fmt.Errorf("detect: confirmed score %v must be in (0,1]", o.ConfirmedScore)
	case !(o.RecheckScore > 0 && o.RecheckScore < 1) || !(o.WeakRecheckScore > 0 && o.WeakRecheckScore < 1):
		return o, fmt.Errorf("detect: recheck scores %v and %v must be in (0,1)", o.RecheckScore, o.WeakRecheckScore)
	case !(o.ContainThreshold > 0 && o.ContainThreshold <= 1):
		return o, fmt.Errorf("detect: contain threshold %v must be in (0,1]", o.ContainThreshold)
	case !(o.PadFactor >= 1) || math.IsInf(o.PadFactor, 0):
		return o, fmt.Errorf("detect: pad factor %v must be >= 1", o.PadFactor)
	case o.NMS != WeightedNMS && o.NMS != HardNMS:
		return o, fmt.Errorf("detect: unknown NMS mode %d", o.NMS)
	case o.Pad < PadAuto || o.Pad > PadNever:
		return o, fmt.Errorf("detect: unknown pad policy %d", o.Pad)
	}
	return o, nil
}

// Result is what Detect found.
type Result struct {
	// Faces, best score first, at most Options.MaxFaces.
	Faces []Face
	// Dropped counts faces that passed the threshold and NMS but exceeded MaxFaces.
	Dropped int
	// Padded reports whether a padded pass was run.
	Padded bool
	// Rejected counts candidates the recheck did not confirm.
	Rejected int
}

// Detector decodes BlazeFace output for images of any size. It holds no
// mutable state and is safe for concurrent use if its Runner is.
type Detector struct {
	run     Runner
	opt     Options
	anchors []imaging.Point
	layers  []Layer
}

// New returns a Detector with the given options (zero fields take defaults).
func New(r Runner, opt Options) (*Detector, error) {
	if r == nil {
		return nil, errors.New("detect: nil runner")
	}
	o, err := opt.withDefaults()
	if err != nil {
		return nil, err
	}
	layers := Layers(o.InputSize)
	return &Detector{run: r, opt: o, anchors: Anchors(layers), layers: layers}, nil
}

// Options returns the effective options.
func (d *Detector) Options() Options { return d.opt }

type pass struct {
	tr       imaging.Transform
	mirrored bool
}

// Detect finds the faces in img.
func (d *Detector) Detect(ctx context.Context, img *imaging.RGB) (Result, error) {
	if err := img.Valid(); err != nil {
		return Result{}, fmt.Errorf("detect: %w", err)
	}
	small := max(img.W, img.H) <= d.opt.SmallImageSide
	var first []float64
	switch {
	case d.opt.Pad == PadAlways, d.opt.Pad == PadAuto && small:
		first = []float64{1, d.opt.PadFactor}
	default:
		first = []float64{1}
	}
	recheck := !d.opt.NoRecheck && !small // see below
	minScore := d.opt.ScoreThreshold
	if recheck {
		minScore = d.opt.CandidateThreshold
	}
	faces, err := d.runPasses(ctx, img, first, minScore)
	if err != nil {
		return Result{}, err
	}
	padded := len(first) > 1
	if len(faces) == 0 && !padded && d.opt.Pad != PadNever && d.opt.PadFactor > 1 {
		if faces, err = d.runPasses(ctx, img, []float64{d.opt.PadFactor}, minScore); err != nil {
			return Result{}, err
		}
		padded = true
	}
	faces = Suppress(faces, d.opt.NMS, d.opt.IoUThreshold)
	faces = SuppressContained(faces, d.opt.ContainThreshold)
	rejected := 0
	// The recheck guards camera frames against textures that look like a
	// face. An image no larger than SmallImageSide is a face crop by the same
	// contract PadAuto relies on (an ID photo, an aligned chip), and zooming
	// into a crop re-reads mostly border: measured on LFW's 112x112 crops, the
	// recheck dropped real faces from 41 of the 6000 pairs.
	if recheck {
		kept := faces[:0:0]
		for _, f := range faces {
			if f.Score >= d.opt.ConfirmedScore && d.opt.ConfirmedScore < 1 {
				kept = append(kept, f)
				continue
			}
			ok, err := d.recheck(ctx, img, f)
			if err != nil {
				return Result{}, err
			}
			if ok {
				kept = append(kept, f)
			} else {
				rejected++
			}
		}
		faces = kept
	}
	res := Result{Faces: faces, Padded: padded, Rejected: rejected}
	if len(faces) > d.opt.MaxFaces {
		res.Faces, res.Dropped = faces[:d.opt.MaxFaces], len(faces)-d.opt.MaxFaces
	}
	return res, nil
}

// runPasses letterboxes img once per shrink factor into one batch, runs the
// model, and returns every candidate above the threshold in original-image
// coordinates (before NMS, so candidates of both passes merge).
func (d *Detector) runPasses(ctx context.Context, img *imaging.RGB, shrinks []float64, minScore float64) ([]Face, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("detect: %w", err)
	}
	s := d.opt.InputSize
	per := s * s * 3
	n := len(shrinks)
	if d.opt.MirrorAverage {
		n *= 2
	}
	batch := make([]float32, 0, per*n)
	passes := make([]pass, 0, n)
	for _, k := range shrinks {
		t, tr, err := imaging.Letterbox(img, s, s, imaging.LetterboxOptions{Fill: d.opt.Fill, Shrink: k, Dst: batch[len(batch):]})
		if err != nil {
			return nil, fmt.Errorf("detect: %w", err)
		}
		batch = batch[:len(batch)+len(t)]
		passes = append(passes, pass{tr: tr})
		if d.opt.MirrorAverage {
			m := batch[len(batch) : len(batch)+per]
			mirrorHWC(m, t, s)
			batch = batch[:len(batch)+per]
			passes = append(passes, pass{tr: tr, mirrored: true})
		}
	}
	outs, err := d.run.Run(ctx, Tensor{Shape: []int64{int64(n), int64(s), int64(s), 3}, Data: batch})
	if err != nil {
		return nil, fmt.Errorf("detect: running the model: %w", err)
	}
	perImage, err := DecodeOutputs(outs, n, d.layers, d.anchors, minScore)
	if err != nil {
		return nil, err
	}
	var all []Face
	for i, cands := range perImage {
		for _, f := range cands {
			if passes[i].mirrored {
				f = unmirror(f, float64(s))
			}
			all = append(all, MapFace(f, passes[i].tr))
		}
	}
	return all, nil
}

// mirrorHWC writes the left-right mirror of a size x size x 3 tensor.
func mirrorHWC(dst, src []float32, size int) {
	for y := 0; y < size; y++ {
		row := y * size * 3
		for x := 0; x < size; x++ {
			o, i := row+3*x, row+3*(size-1-x)
			dst[o], dst[o+1], dst[o+2] = src[i], src[i+1], src[i+2]
		}
	}
}

// unmirror maps a detection made on the mirrored input back onto the
// unmirrored input: x -> size - x, and the image-left and image-right
// keypoints trade places.
func unmirror(f Face, size float64) Face {
	f.Box.X = size - (f.Box.X + f.Box.W)
	for k := range f.Keypoints {
		f.Keypoints[k].X = size - f.Keypoints[k].X
	}
	k := &f.Keypoints
	k[LeftEye], k[RightEye] = k[RightEye], k[LeftEye]
	k[LeftEar], k[RightEar] = k[RightEar], k[LeftEar]
	return f
}

// MapFace maps a face from model-input coordinates back to the original
// image through the letterbox transform.
func MapFace(f Face, tr imaging.Transform) Face {
	a := tr.ToOriginal(imaging.Point{X: f.Box.X, Y: f.Box.Y})
	b := tr.ToOriginal(imaging.Point{X: f.Box.X + f.Box.W, Y: f.Box.Y + f.Box.H})
	out := Face{Box: Box{a.X, a.Y, b.X - a.X, b.Y - a.Y}, Score: f.Score}
	for k, p := range f.Keypoints {
		out.Keypoints[k] = tr.ToOriginal(p)
	}
	return out
}

// recheck runs the detector on a square crop twice the face's size centred
// on it and reports whether a face is confirmed there (see Options.Recheck).
func (d *Detector) recheck(ctx context.Context, img *imaging.RGB, f Face) (bool, error) {
	need := d.opt.RecheckScore
	if f.Score < d.opt.ScoreThreshold {
		need = d.opt.WeakRecheckScore
	}
	side := int(math.Ceil(2 * max(f.Box.W, f.Box.H)))
	if side < 16 || side > 8192 {
		return false, nil
	}
	x0 := int(math.Round(f.Box.X + f.Box.W/2 - float64(side)/2))
	y0 := int(math.Round(f.Box.Y + f.Box.H/2 - float64(side)/2))
	crop := imaging.NewRGB(side, side)
	for y := 0; y < side; y++ {
		sy := y0 + y
		for x := 0; x < side; x++ {
			sx := x0 + x
			if sx < 0 || sy < 0 || sx >= img.W || sy >= img.H {
				crop.SetRGB(x, y, d.opt.Fill[0], d.opt.Fill[1], d.opt.Fill[2])
				continue
			}
			r, g, b := img.RGBAt(sx, sy)
			crop.SetRGB(x, y, r, g, b)
		}
	}
	cands, err := d.runPasses(ctx, crop, []float64{1}, need)
	if err != nil {
		return false, err
	}
	want := Box{X: f.Box.X - float64(x0), Y: f.Box.Y - float64(y0), W: f.Box.W, H: f.Box.H}
	for _, c := range cands {
		if c.Score >= need && IoU(c.Box, want) > 0.3 {
			return true, nil
		}
	}
	return false, nil
}
