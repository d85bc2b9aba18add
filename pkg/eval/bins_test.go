package eval

import (
	"errors"
	"math"
	"testing"
)

func TestBinRatesByHand(t *testing.T) {
	pairs := []Scored{
		{Same: true, Distance: 0.2},  // yaw 3: accepted
		{Same: false, Distance: 0.9}, // yaw 4: rejected
		{Same: true, Distance: 0.5},  // yaw 10 (on the edge: second bin): false reject
		{Same: false, Distance: 0.3}, // yaw 12: false accept
		{Same: true, Distance: 0.1},  // yaw 40: outside
		{Same: true, Distance: 0.1},  // NaN: outside
		{Same: false, Distance: 0.8}, // yaw -1: outside
	}
	values := []float64{3, 4, 10, 12, 40, math.NaN(), -1}
	bins, outside, err := BinRates(pairs, values, []float64{0, 10, 20}, 0.4)
	if err != nil {
		t.Fatal(err)
	}
	if outside != 3 || len(bins) != 2 {
		t.Fatalf("outside %d, %d bins: %+v", outside, len(bins), bins)
	}
	b0, b1 := bins[0], bins[1]
	if b0.Lo != 0 || b0.Hi != 10 || b0.Pairs != 2 || b0.Rates.Accuracy != 1 || b0.Rates.TP != 1 || b0.Rates.TN != 1 {
		t.Errorf("bin 0: %+v", b0)
	}
	if b1.Pairs != 2 || b1.Rates.Accuracy != 0 || b1.Rates.FRR != 1 || b1.Rates.FAR != 1 || b1.Rates.Threshold != 0.4 {
		t.Errorf("bin 1: %+v", b1)
	}
	// An empty bin is reported with zero counts, not dropped.
	bins, _, err = BinRates(pairs[:2], values[:2], []float64{0, 5, 10}, 0.4)
	if err != nil || len(bins) != 2 || bins[1].Pairs != 0 || bins[1].Rates.Accuracy != 0 {
		t.Errorf("empty bin: %+v %v", bins, err)
	}
}

func TestBinRatesErrors(t *testing.T) {
	p := []Scored{{Same: true, Distance: 0.1}}
	for name, c := range map[string]struct {
		pairs  []Scored
		values []float64
		edges  []float64
	}{
		"value count":  {p, []float64{1, 2}, []float64{0, 1}},
		"one edge":     {p, []float64{1}, []float64{0}},
		"unsorted":     {p, []float64{1}, []float64{0, 5, 5}},
		"NaN edge":     {p, []float64{1}, []float64{0, math.NaN()}},
		"NaN distance": {[]Scored{{Distance: math.NaN()}}, []float64{1}, []float64{0, 5}},
	} {
		if _, _, err := BinRates(c.pairs, c.values, c.edges, 0.4); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, _, err := BinRates(nil, nil, []float64{0, 1}, 0.4); !errors.Is(err, ErrNoData) {
		t.Errorf("no pairs: %v, want ErrNoData", err)
	}
}
