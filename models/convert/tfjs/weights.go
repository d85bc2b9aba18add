package tfjs

import (
	"encoding/binary"
	"fmt"
	"math"
)

// manifestGroup is one entry of weightsManifest: its files are concatenated
// and its weights are laid out back to back from offset 0 of that buffer.
type manifestGroup struct {
	Paths   []string     `json:"paths"`
	Weights []weightSpec `json:"weights"`
}

type weightSpec struct {
	Name         string        `json:"name"`
	Shape        []flexInt     `json:"shape"`
	Dtype        string        `json:"dtype"`
	Quantization *quantization `json:"quantization"`
}

// quantization is tfjs' weight compression: float16 halves, or uint8/uint16
// codes with value = q*scale + min.
type quantization struct {
	Dtype string     `json:"dtype"`
	Scale *flexFloat `json:"scale"`
	Min   *flexFloat `json:"min"`
}

// constTensor is a decoded weight; exactly one of f, i is set.
type constTensor struct {
	name  string
	shape []int64
	f     []float32
	i     []int32
}

func (c *constTensor) isInt() bool { return c.i != nil }

// maxElements bounds a single weight so a corrupt manifest cannot make the
// converter size arithmetic overflow; real face models are far below it.
const maxElements = 1 << 31

func elementCount(shape []int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		if d != 0 && n > maxElements/d {
			return 0, fmt.Errorf("shape %v has too many elements", shape)
		}
		n *= d
	}
	return n, nil
}

// storedSize is the bytes per element in the file and the decoded kind.
func storedSize(w *weightSpec) (size int64, isInt bool, err error) {
	switch w.Dtype {
	case "float32", "float16", "int32":
	default:
		return 0, false, fmt.Errorf("unknown dtype %q (supported: float32, float16, int32)", w.Dtype)
	}
	isInt = w.Dtype == "int32"
	if q := w.Quantization; q != nil {
		switch q.Dtype {
		case "float16":
			if isInt {
				return 0, false, fmt.Errorf("float16 quantization of an int32 weight is not defined")
			}
			return 2, false, nil
		case "uint8", "uint16":
			if q.Scale == nil || q.Min == nil {
				return 0, false, fmt.Errorf("%s quantization without scale and min", q.Dtype)
			}
			if q.Dtype == "uint8" {
				return 1, isInt, nil
			}
			return 2, isInt, nil
		default:
			return 0, false, fmt.Errorf("unknown quantization dtype %q (supported: float16, uint8, uint16)", q.Dtype)
		}
	}
	if w.Dtype == "float16" {
		return 2, false, nil
	}
	return 4, isInt, nil
}

// loadWeights reads every manifest group and decodes its weights by name.
func loadWeights(groups []manifestGroup, readFile func(string) ([]byte, error)) (map[string]*constTensor, error) {
	out := map[string]*constTensor{}
	for gi := range groups {
		g := &groups[gi]
		type placed struct {
			spec   *weightSpec
			shape  []int64
			n      int64
			size   int64
			isInt  bool
			offset int64
		}
		var need int64
		plan := make([]placed, 0, len(g.Weights))
		for wi := range g.Weights {
			w := &g.Weights[wi]
			if w.Name == "" {
				return nil, fmt.Errorf("tfjs: weights group %d (files %v): weight %d has no name", gi, g.Paths, wi)
			}
			if _, dup := out[w.Name]; dup {
				return nil, fmt.Errorf("tfjs: weight %q listed twice in the manifest", w.Name)
			}
			shape := make([]int64, len(w.Shape))
			for i, d := range w.Shape {
				shape[i] = int64(d)
			}
			n, err := elementCount(shape)
			if err != nil {
				return nil, fmt.Errorf("tfjs: weight %q (files %v): %w", w.Name, g.Paths, err)
			}
			size, isInt, err := storedSize(w)
			if err != nil {
				return nil, fmt.Errorf("tfjs: weight %q (files %v): %w", w.Name, g.Paths, err)
			}
			plan = append(plan, placed{spec: w, shape: shape, n: n, size: size, isInt: isInt, offset: need})
			need += n * size
			out[w.Name] = nil // reserve, for duplicate detection
		}
		if len(g.Paths) == 0 && need > 0 {
			return nil, fmt.Errorf("tfjs: weights group %d lists %d weights but no files", gi, len(g.Weights))
		}
		var buf []byte
		for _, p := range g.Paths {
			b, err := readFile(p)
			if err != nil {
				return nil, fmt.Errorf("tfjs: read weights file %q: %w", p, err)
			}
			buf = append(buf, b...)
		}
		if int64(len(buf)) != need {
			for _, pl := range plan {
				if end := pl.offset + pl.n*pl.size; end > int64(len(buf)) {
					return nil, fmt.Errorf("tfjs: weight %q needs bytes %d..%d but files %v hold only %d bytes (truncated weights file?)",
						pl.spec.Name, pl.offset, end, g.Paths, len(buf))
				}
			}
			return nil, fmt.Errorf("tfjs: weights files %v hold %d bytes but the manifest describes %d (wrong or corrupt file?)", g.Paths, len(buf), need)
		}
		for _, pl := range plan {
			raw := buf[pl.offset : pl.offset+pl.n*pl.size]
			c := &constTensor{name: pl.spec.Name, shape: pl.shape}
			decode(c, pl.spec, raw, pl.n, pl.size, pl.isInt)
			out[pl.spec.Name] = c
		}
	}
	return out, nil
}

func decode(c *constTensor, w *weightSpec, raw []byte, n, size int64, isInt bool) {
	le := binary.LittleEndian
	code := func(k int64) float64 { // quantized code k of raw
		if size == 1 {
			return float64(raw[k])
		}
		return float64(le.Uint16(raw[2*k:]))
	}
	q := w.Quantization
	switch {
	case q != nil && q.Dtype != "float16":
		scale, minV := float64(*q.Scale), float64(*q.Min)
		if isInt {
			c.i = make([]int32, n)
			for k := range n {
				c.i[k] = int32(math.Round(code(k)*scale + minV))
			}
			return
		}
		c.f = make([]float32, n)
		for k := range n {
			c.f[k] = float32(code(k)*scale + minV)
		}
	case (q != nil && q.Dtype == "float16") || w.Dtype == "float16":
		c.f = make([]float32, n)
		for k := range n {
			c.f[k] = halfToFloat(le.Uint16(raw[2*k:]))
		}
	case isInt:
		c.i = make([]int32, n)
		for k := range n {
			c.i[k] = int32(le.Uint32(raw[4*k:]))
		}
	default:
		c.f = make([]float32, n)
		for k := range n {
			c.f[k] = math.Float32frombits(le.Uint32(raw[4*k:]))
		}
	}
}

// halfToFloat widens an IEEE 754 binary16 value exactly.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf, nan
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	case exp == 0:
		if frac == 0 {
			return math.Float32frombits(sign)
		}
		// subnormal: value = frac * 2^-24
		v := float32(frac) * float32(math.Ldexp(1, -24))
		if sign != 0 {
			v = -v
		}
		return v
	default:
		return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
	}
}
