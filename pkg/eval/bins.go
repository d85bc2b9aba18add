package eval

import (
	"fmt"
	"math"
	"sort"
)

// Bin is the outcome at a fixed threshold of the pairs whose covariate
// (for instance the larger |yaw| of a pair's two faces) lies in [Lo, Hi).
type Bin struct {
	Lo, Hi float64
	Rates  Rates
	Pairs  int
}

// BinRates splits pairs by a per-pair covariate into the bins between
// consecutive edges and counts each bin's outcomes at threshold t (accept
// when distance < t). It answers "at the threshold we deploy, where do
// errors rise as faces get worse?", which a single overall accuracy hides.
// Values below edges[0] or at or above the last edge fall in no bin and
// are counted in the returned outside total; a NaN value (pose not
// measurable) is always outside. edges must be strictly increasing and
// hold at least two values; values must have one entry per pair.
func BinRates(pairs []Scored, values, edges []float64, t float64) (bins []Bin, outside int, err error) {
	if len(values) != len(pairs) {
		return nil, 0, fmt.Errorf("eval: bin rates: %d values for %d pairs", len(values), len(pairs))
	}
	if len(edges) < 2 {
		return nil, 0, fmt.Errorf("eval: bin rates: need at least two edges, got %d", len(edges))
	}
	for i := 1; i < len(edges); i++ {
		if !(edges[i] > edges[i-1]) {
			return nil, 0, fmt.Errorf("eval: bin rates: edges %v are not strictly increasing", edges)
		}
	}
	if _, _, err := checkScored(pairs, false); err != nil {
		return nil, 0, fmt.Errorf("eval: bin rates: %w", err)
	}
	groups := make([][]Scored, len(edges)-1)
	for i, p := range pairs {
		v := values[i]
		if math.IsNaN(v) || v < edges[0] || v >= edges[len(edges)-1] {
			outside++
			continue
		}
		k := sort.SearchFloat64s(edges, v) // first edge >= v
		if k == len(edges) || edges[k] != v {
			k--
		}
		groups[k] = append(groups[k], p)
	}
	for k, g := range groups {
		b := Bin{Lo: edges[k], Hi: edges[k+1], Pairs: len(g)}
		if len(g) > 0 {
			b.Rates = RatesAt(g, t)
		} else {
			b.Rates = Rates{Threshold: t}
		}
		bins = append(bins, b)
	}
	return bins, outside, nil
}
