package detect

import (
	"sort"

	"github.com/facegate/facegate/pkg/imaging"
)

// IoU is the intersection over union of two boxes (0 when either is empty).
func IoU(a, b Box) float64 {
	x0, y0 := max(a.X, b.X), max(a.Y, b.Y)
	x1, y1 := min(a.X+a.W, b.X+b.W), min(a.Y+a.H, b.Y+b.H)
	if x1 <= x0 || y1 <= y0 {
		return 0
	}
	inter := (x1 - x0) * (y1 - y0)
	union := a.W*a.H + b.W*b.H - inter
	if union <= 0 {
		return 0
	}
	return inter / union
}

// Suppress merges overlapping detections and returns the survivors sorted
// by score, best first. Candidates overlapping the current best by more
// than iou are either dropped (HardNMS) or averaged into it, weighted by
// score, keeping the best score (WeightedNMS, as MediaPipe's
// WeightedNonMaxSuppression does). The input slice is reordered.
func Suppress(faces []Face, mode NMSMode, iou float64) []Face {
	sort.SliceStable(faces, func(i, j int) bool { return faces[i].Score > faces[j].Score })
	var out []Face
	used := make([]bool, len(faces))
	for i := range faces {
		if used[i] {
			continue
		}
		used[i] = true
		best := faces[i]
		if mode == HardNMS {
			for j := i + 1; j < len(faces); j++ {
				if !used[j] && IoU(best.Box, faces[j].Box) > iou {
					used[j] = true
				}
			}
			out = append(out, best)
			continue
		}
		var wsum, x0, y0, x1, y1 float64
		var kp [NumKeypoints]imaging.Point
		add := func(f Face) {
			w := f.Score
			wsum += w
			x0 += w * f.Box.X
			y0 += w * f.Box.Y
			x1 += w * (f.Box.X + f.Box.W)
			y1 += w * (f.Box.Y + f.Box.H)
			for k, p := range f.Keypoints {
				kp[k].X += w * p.X
				kp[k].Y += w * p.Y
			}
		}
		add(best)
		for j := i + 1; j < len(faces); j++ {
			if !used[j] && IoU(best.Box, faces[j].Box) > iou {
				used[j] = true
				add(faces[j])
			}
		}
		m := Face{Score: best.Score}
		m.Box = Box{x0 / wsum, y0 / wsum, (x1 - x0) / wsum, (y1 - y0) / wsum}
		for k := range kp {
			m.Keypoints[k] = imaging.Point{X: kp[k].X / wsum, Y: kp[k].Y / wsum}
		}
		out = append(out, m)
	}
	return out
}

// Containment is the fraction of b's area that lies inside a.
func Containment(a, b Box) float64 {
	x0, y0 := max(a.X, b.X), max(a.Y, b.Y)
	x1, y1 := min(a.X+a.W, b.X+b.W), min(a.Y+a.H, b.Y+b.H)
	if x1 <= x0 || y1 <= y0 || b.W <= 0 || b.H <= 0 {
		return 0
	}
	return (x1 - x0) * (y1 - y0) / (b.W * b.H)
}

// SuppressContained drops every face with more than frac of its box inside
// a better-scoring face that is kept. faces must be sorted best first (as
// Suppress returns them); frac >= 1 keeps everything.
func SuppressContained(faces []Face, frac float64) []Face {
	if frac >= 1 {
		return faces
	}
	out := faces[:0:0]
	for _, f := range faces {
		nested := false
		for _, k := range out {
			if Containment(k.Box, f.Box) > frac {
				nested = true
				break
			}
		}
		if !nested {
			out = append(out, f)
		}
	}
	return out
}
