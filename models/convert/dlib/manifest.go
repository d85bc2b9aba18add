package dlib

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// maxElements bounds one tensor's element count. The largest tensor of this
// network has 589,824 elements; the bound only keeps a hostile manifest from
// making the converter allocate or overflow while multiplying dimensions.
const maxElements = 1 << 28

// ErrTruncated is wrapped by every error about weight bytes running out
// before the manifest is satisfied.
var ErrTruncated = errors.New("weights data truncated")

// quantization is tfjs' per-tensor weight quantisation. Scale and Min are
// pointers because tfjs rejects uint8/uint16 entries that lack them, and a
// zero value would silently turn every weight into a constant.
type quantization struct {
	Dtype string   `json:"dtype"`
	Scale *float64 `json:"scale"`
	Min   *float64 `json:"min"`
}

type weightEntry struct {
	Name         string        `json:"name"`
	Shape        []int64       `json:"shape"`
	Dtype        string        `json:"dtype"`
	Quantization *quantization `json:"quantization"`
}

type weightGroup struct {
	Paths   []string      `json:"paths"`
	Weights []weightEntry `json:"weights"`
}

// weightSpec is one validated manifest entry: where its bytes sit in the
// concatenated shards and how to turn them into float32 values.
type weightSpec struct {
	name   string
	shape  []int64
	count  int64
	quant  string // "" for raw float32, else uint8, uint16 or float16
	scale  float64
	min    float64
	offset int64
	size   int64
}

// manifest is a parsed tfjs weights manifest (weights_manifest.json).
type manifest struct {
	paths   []string
	weights []weightSpec
	byName  map[string]int
	total   int64
}

// bytesPerElement returns the stored width of one element, or an error for
// a quantisation tfjs does not define.
func bytesPerElement(quant string) (int64, error) {
	switch quant {
	case "":
		return 4, nil
	case "uint8":
		return 1, nil
	case "uint16", "float16":
		return 2, nil
	default:
		return 0, fmt.Errorf("unknown quantization dtype %q (want uint8, uint16 or float16)", quant)
	}
}

// parseManifest validates a tfjs weights manifest. It checks everything that
// can be checked without the weight bytes, so that a bad manifest is reported
// as such rather than as a confusing size mismatch later.
func parseManifest(data []byte) (*manifest, error) {
	var groups []weightGroup
	if err := json.Unmarshal(data, &groups); err != nil {
		return nil, fmt.Errorf("dlib: manifest: not a tfjs weights manifest: %w", err)
	}
	if len(groups) == 0 {
		return nil, fmt.Errorf("dlib: manifest: no weight groups")
	}
	m := &manifest{byName: map[string]int{}}
	for gi, g := range groups {
		if len(g.Paths) == 0 {
			return nil, fmt.Errorf("dlib: manifest: group %d lists no weight files", gi)
		}
		m.paths = append(m.paths, g.Paths...)
		for _, w := range g.Weights {
			spec, err := validateEntry(w)
			if err != nil {
				return nil, fmt.Errorf("dlib: manifest: %w", err)
			}
			if _, dup := m.byName[spec.name]; dup {
				return nil, fmt.Errorf("dlib: manifest: weight %q listed twice", spec.name)
			}
			spec.offset = m.total
			m.total += spec.size
			m.byName[spec.name] = len(m.weights)
			m.weights = append(m.weights, spec)
		}
	}
	if len(m.weights) == 0 {
		return nil, fmt.Errorf("dlib: manifest: no weights")
	}
	return m, nil
}

func validateEntry(w weightEntry) (weightSpec, error) {
	if w.Name == "" {
		return weightSpec{}, fmt.Errorf("weight with an empty name")
	}
	if w.Dtype != "float32" {
		return weightSpec{}, fmt.Errorf("weight %q: dtype %q, want float32", w.Name, w.Dtype)
	}
	count := int64(1)
	for _, d := range w.Shape {
		if d < 0 {
			return weightSpec{}, fmt.Errorf("weight %q: negative dimension in shape %v", w.Name, w.Shape)
		}
		if d > 0 && count > maxElements/d {
			return weightSpec{}, fmt.Errorf("weight %q: shape %v exceeds %d elements", w.Name, w.Shape, maxElements)
		}
		count *= d
	}
	spec := weightSpec{name: w.Name, shape: append([]int64(nil), w.Shape...), count: count}
	if q := w.Quantization; q != nil {
		spec.quant = q.Dtype
		if spec.quant == "" {
			return weightSpec{}, fmt.Errorf("weight %q: quantization without a dtype", w.Name)
		}
		if spec.quant == "uint8" || spec.quant == "uint16" {
			if q.Scale == nil || q.Min == nil {
				return weightSpec{}, fmt.Errorf("weight %q: %s quantization needs scale and min", w.Name, spec.quant)
			}
			spec.scale, spec.min = *q.Scale, *q.Min
			if math.IsNaN(spec.scale) || math.IsInf(spec.scale, 0) || math.IsNaN(spec.min) || math.IsInf(spec.min, 0) {
				return weightSpec{}, fmt.Errorf("weight %q: quantization scale %v, min %v are not finite", w.Name, spec.scale, spec.min)
			}
		}
	}
	width, err := bytesPerElement(spec.quant)
	if err != nil {
		return weightSpec{}, fmt.Errorf("weight %q: %w", w.Name, err)
	}
	spec.size = count * width
	return spec, nil
}

// tensor is one dequantised weight.
type tensor struct {
	shape []int64
	data  []float32
}

// checkSize reports a weights blob that does not match the manifest exactly,
// naming the first weight whose bytes are missing.
func (m *manifest) checkSize(n int64) error {
	if n < m.total {
		for _, w := range m.weights {
			if w.offset+w.size > n {
				return fmt.Errorf("dlib: weight %q needs bytes %d..%d, data has %d of the manifest's %d: %w",
					w.name, w.offset, w.offset+w.size, n, m.total, ErrTruncated)
			}
		}
	}
	if n != m.total {
		return fmt.Errorf("dlib: weights data has %d bytes, manifest describes %d", n, m.total)
	}
	return nil
}

// decode dequantises one weight exactly as tfjs' io.decodeWeights does:
// q*scale+min evaluated in float64 and stored as float32, float16 widened.
func (m *manifest) decode(spec weightSpec, blob []byte) tensor {
	raw := blob[spec.offset : spec.offset+spec.size]
	out := make([]float32, spec.count)
	switch spec.quant {
	case "":
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case "uint8":
		for i := range out {
			out[i] = float32(float64(raw[i])*spec.scale + spec.min)
		}
	case "uint16":
		for i := range out {
			out[i] = float32(float64(binary.LittleEndian.Uint16(raw[2*i:]))*spec.scale + spec.min)
		}
	case "float16":
		for i := range out {
			out[i] = halfToFloat(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	}
	return tensor{shape: spec.shape, data: out}
}

// halfToFloat widens an IEEE 754 binary16 value; every half value is exactly
// representable in float32.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: value = frac * 2^-24
		v := float32(frac) / (1 << 24)
		if sign != 0 {
			v = -v
		}
		return v
	default:
		return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
	}
}
