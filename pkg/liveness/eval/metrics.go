package eval

import (
	"fmt"
	"math"
	"sort"
)

// ISO/IEC 30107-3 error rates at a threshold t on a "live" score (a
// presentation is accepted as bona fide when its score is >= t):
//
//	APCER(t) = attack presentations of one species accepted / that species' presentations
//	BPCER(t) = bona fide presentations rejected / bona fide presentations

// BPCER is the fraction of bona fide scores below t.
func BPCER(bona []float32, t float64) float64 {
	if len(bona) == 0 {
		return math.NaN()
	}
	n := 0
	for _, s := range bona {
		if float64(s) < t {
			n++
		}
	}
	return float64(n) / float64(len(bona))
}

// APCER is the fraction of attack scores at or above t.
func APCER(attack []float32, t float64) float64 {
	if len(attack) == 0 {
		return math.NaN()
	}
	n := 0
	for _, s := range attack {
		if float64(s) >= t {
			n++
		}
	}
	return float64(n) / float64(len(attack))
}

// maxAPCER is the APCER of the worst species at t (ISO/IEC 30107-3's
// APCER_AP for a set of species).
func maxAPCER(species map[string][]float32, t float64) float64 {
	worst := 0.0
	for _, s := range species {
		worst = max(worst, APCER(s, t))
	}
	return worst
}

// candidates are the thresholds where a rate can change: every distinct
// score, and one above the largest.
func candidates(sets ...[]float32) []float64 {
	seen := map[float32]bool{}
	var ts []float64
	for _, set := range sets {
		for _, s := range set {
			if !seen[s] {
				seen[s] = true
				ts = append(ts, float64(s))
			}
		}
	}
	sort.Float64s(ts)
	if len(ts) > 0 {
		ts = append(ts, math.Nextafter(ts[len(ts)-1], math.Inf(1)))
	}
	return ts
}

// Point is one operating point.
type Point struct {
	Threshold float64            `json:"threshold"`
	BPCER     float64            `json:"bpcer"`
	APCER     map[string]float64 `json:"apcer"`
	// MaxAPCER is the worst APCER over the species (not the components
	// or controls).
	MaxAPCER float64 `json:"max_apcer"`
}

// at computes the point at t for bona fide scores and every attack set;
// species names the sets that count in MaxAPCER.
func at(t float64, bona []float32, attacks map[string][]float32, species []string) Point {
	p := Point{Threshold: t, BPCER: BPCER(bona, t), APCER: map[string]float64{}}
	for name, s := range attacks {
		p.APCER[name] = APCER(s, t)
	}
	sp := map[string][]float32{}
	for _, name := range species {
		sp[name] = attacks[name]
	}
	p.MaxAPCER = maxAPCER(sp, t)
	return p
}

// EER finds the threshold where BPCER and the worst species' APCER are
// closest (they are step functions and rarely meet exactly) and returns
// the point there, with the equal error rate as the mean of the two.
func EER(bona []float32, attacks map[string][]float32, species []string) (Point, float64, error) {
	sets := [][]float32{bona}
	for _, name := range species {
		s, ok := attacks[name]
		if !ok || len(s) == 0 {
			return Point{}, 0, fmt.Errorf("eer: no scores for species %q", name)
		}
		sets = append(sets, s)
	}
	if len(bona) == 0 {
		return Point{}, 0, fmt.Errorf("eer: no bona fide scores")
	}
	best, bestGap := Point{}, math.Inf(1)
	for _, t := range candidates(sets...) {
		p := at(t, bona, attacks, species)
		if gap := math.Abs(p.BPCER - p.MaxAPCER); gap < bestGap {
			best, bestGap = p, gap
		}
	}
	return best, (best.BPCER + best.MaxAPCER) / 2, nil
}

// BPCERAtAPCER is the lowest BPCER whose worst-species APCER is at most
// target, and the threshold that achieves it (ISO/IEC 30107-3 reports
// BPCER20 = BPCER at APCER 5%).
func BPCERAtAPCER(bona []float32, attacks map[string][]float32, species []string, target float64) Point {
	sets := [][]float32{bona}
	for _, name := range species {
		sets = append(sets, attacks[name])
	}
	ts := candidates(sets...)
	// BPCER rises and APCER falls with t: the first t meeting the target
	// has the lowest BPCER.
	for _, t := range ts {
		p := at(t, bona, attacks, species)
		if p.MaxAPCER <= target {
			return p
		}
	}
	return at(math.Inf(1), bona, attacks, species)
}

// AUC is the probability that a random bona fide score exceeds a random
// attack score (ties count half): 1 separates perfectly, 0.5 is chance,
// below 0.5 means the model ranks attacks as more live than real faces.
func AUC(bona, attack []float32) float64 {
	if len(bona) == 0 || len(attack) == 0 {
		return math.NaN()
	}
	a := append([]float32(nil), attack...)
	sort.Slice(a, func(i, j int) bool { return a[i] < a[j] })
	var sum float64
	for _, b := range bona {
		lo := sort.Search(len(a), func(i int) bool { return a[i] >= b })
		hi := sort.Search(len(a), func(i int) bool { return a[i] > b })
		sum += float64(lo) + float64(hi-lo)/2
	}
	return sum / float64(len(bona)) / float64(len(a))
}
