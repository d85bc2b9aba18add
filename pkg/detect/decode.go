package detect

import (
	"fmt"
	"math"

	"github.com/facegate/facegate/pkg/imaging"
)

// Layer is one anchor grid of the SSD head.
type Layer struct {
	Stride  int // grid cell size in input pixels
	Grid    int // cells per side
	Anchors int // anchors per cell
}

// Rows is the number of output rows (anchors) the layer contributes.
func (l Layer) Rows() int { return l.Grid * l.Grid * l.Anchors }

// Layers returns BlazeFace's two grids for a square input: strides
// size/16 and size/8 with 2 and 6 anchors per cell, as in Human's
// generateAnchors (for 256: 16x16x2 = 512 rows, then 8x8x6 = 384).
func Layers(inputSize int) []Layer {
	out := make([]Layer, 0, 2)
	for i, st := range []int{inputSize / 16, inputSize / 8} {
		out = append(out, Layer{Stride: st, Grid: (inputSize + st - 1) / st, Anchors: []int{2, 6}[i]})
	}
	return out
}

// Anchors lists the anchor centres in output-row order: layer by layer,
// grid rows, grid columns, anchors within a cell; centre = stride*(g+0.5).
func Anchors(layers []Layer) []imaging.Point {
	var out []imaging.Point
	for _, l := range layers {
		for gy := 0; gy < l.Grid; gy++ {
			for gx := 0; gx < l.Grid; gx++ {
				for n := 0; n < l.Anchors; n++ {
					out = append(out, imaging.Point{X: float64(l.Stride) * (float64(gx) + 0.5), Y: float64(l.Stride) * (float64(gy) + 0.5)})
				}
			}
		}
	}
	return out
}

// RegressorWidth is the number of values per anchor in a regressor output:
// box centre offset (2), box size (2), 6 keypoints (12).
const RegressorWidth = 4 + 2*NumKeypoints

type layerOutputs struct{ scores, regs *Tensor }

// DecodeOutputs turns the model's raw outputs for a batch of n images into
// per-image candidate faces scoring at least minScore, in model-input
// pixel coordinates, unsorted and not yet suppressed.
//
// Each output is [n, rows, 1] (score logits) or [n, rows, 16]
// (regressors), or the same without the batch dimension when n is 1. Each
// layer must have exactly one scores and one regressor output with its row
// count; anything else is an error naming the shapes, because a silently
// mis-paired output would yield plausible-looking garbage boxes.
func DecodeOutputs(outs []Tensor, n int, layers []Layer, anchors []imaging.Point, minScore float64) ([][]Face, error) {
	if n <= 0 {
		return nil, fmt.Errorf("detect: batch size %d", n)
	}
	byRows := map[int]*layerOutputs{}
	total := 0
	for _, l := range layers {
		if byRows[l.Rows()] != nil {
			return nil, fmt.Errorf("detect: two anchor layers have %d rows; outputs would be ambiguous", l.Rows())
		}
		byRows[l.Rows()] = &layerOutputs{}
		total += l.Rows()
	}
	if total != len(anchors) {
		return nil, fmt.Errorf("detect: %d anchors for layers totalling %d rows", len(anchors), total)
	}
	for i := range outs {
		t := &outs[i]
		rows, width, err := outputGeometry(t, n)
		if err != nil {
			return nil, fmt.Errorf("detect: output %d: %w", i, err)
		}
		lo := byRows[rows]
		if lo == nil {
			return nil, fmt.Errorf("detect: output %d has shape %v: %d rows match no anchor layer", i, t.Shape, rows)
		}
		switch width {
		case 1:
			if lo.scores != nil {
				return nil, fmt.Errorf("detect: two score outputs with %d rows (shapes %v and %v)", rows, lo.scores.Shape, t.Shape)
			}
			lo.scores = t
		case RegressorWidth:
			if lo.regs != nil {
				return nil, fmt.Errorf("detect: two regressor outputs with %d rows (shapes %v and %v)", rows, lo.regs.Shape, t.Shape)
			}
			lo.regs = t
		default:
			return nil, fmt.Errorf("detect: output %d has shape %v: last dimension must be 1 or %d", i, t.Shape, RegressorWidth)
		}
	}
	result := make([][]Face, n)
	base := 0
	for _, l := range layers {
		lo := byRows[l.Rows()]
		if lo.scores == nil || lo.regs == nil {
			return nil, fmt.Errorf("detect: missing score or regressor output for the %d-row layer (stride %d)", l.Rows(), l.Stride)
		}
		rows := l.Rows()
		for b := 0; b < n; b++ {
			sc := lo.scores.Data[b*rows : (b+1)*rows]
			rg := lo.regs.Data[b*rows*RegressorWidth : (b+1)*rows*RegressorWidth]
			for r := 0; r < rows; r++ {
				s := sigmoid(float64(sc[r]))
				if !(s >= minScore) { // also drops NaN
					continue
				}
				f, ok := decodeRow(rg[r*RegressorWidth:(r+1)*RegressorWidth], anchors[base+r], s)
				if ok {
					result[b] = append(result[b], f)
				}
			}
		}
		base += rows
	}
	return result, nil
}

func outputGeometry(t *Tensor, n int) (rows, width int, err error) {
	var s []int64
	switch len(t.Shape) {
	case 3:
		if t.Shape[0] != int64(n) {
			return 0, 0, fmt.Errorf("shape %v: batch %d, want %d", t.Shape, t.Shape[0], n)
		}
		s = t.Shape[1:]
	case 2:
		if n != 1 {
			return 0, 0, fmt.Errorf("shape %v has no batch dimension but the batch is %d", t.Shape, n)
		}
		s = t.Shape
	default:
		return 0, 0, fmt.Errorf("shape %v: want [n, rows, 1|%d]", t.Shape, RegressorWidth)
	}
	if s[0] <= 0 || s[1] <= 0 || s[0] > 1<<20 || s[1] > 1<<10 {
		return 0, 0, fmt.Errorf("shape %v is implausible", t.Shape)
	}
	rows, width = int(s[0]), int(s[1])
	if len(t.Data) != n*rows*width {
		return 0, 0, fmt.Errorf("shape %v needs %d values, has %d", t.Shape, n*rows*width, len(t.Data))
	}
	return rows, width, nil
}

func decodeRow(v []float32, a imaging.Point, score float64) (Face, bool) {
	for _, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return Face{}, false
		}
	}
	cx, cy := a.X+float64(v[0]), a.Y+float64(v[1])
	w, h := float64(v[2]), float64(v[3])
	if !(w > 0 && h > 0) {
		return Face{}, false
	}
	f := Face{Box: Box{cx - w/2, cy - h/2, w, h}, Score: score}
	for k := 0; k < NumKeypoints; k++ {
		f.Keypoints[k] = imaging.Point{X: a.X + float64(v[4+2*k]), Y: a.Y + float64(v[5+2*k])}
	}
	return f, true
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
