package tfjs

import (
	"math"
	"slices"
)

// Straightforward NHWC reference implementations of the TF ops, written
// from TF's documented semantics, to check the converted ONNX graphs.

// tfWindow is TF's output size and leading pad for one spatial dimension.
func tfWindow(in, k, s int, padding string) (before, out int) {
	if padding == "VALID" {
		return 0, (in-k)/s + 1
	}
	out = (in + s - 1) / s
	total := max((out-1)*s+k-in, 0)
	return total / 2, out
}

func refConv(x, k *tensor, sh, sw int, padding string) *tensor {
	n, h, w, c := x.shape[0], x.shape[1], x.shape[2], x.shape[3]
	kh, kw, ci, co := k.shape[0], k.shape[1], k.shape[2], k.shape[3]
	if ci != c {
		panic("refConv: channel mismatch")
	}
	pt, oh := tfWindow(h, kh, sh, padding)
	pl, ow := tfWindow(w, kw, sw, padding)
	out := newTensor(n, oh, ow, co)
	for b := range n {
		for i := range oh {
			for j := range ow {
				for o := range co {
					var sum float64
					for dy := range kh {
						y := i*sh + dy - pt
						if y < 0 || y >= h {
							continue
						}
						for dx := range kw {
							xx := j*sw + dx - pl
							if xx < 0 || xx >= w {
								continue
							}
							for q := range c {
								sum += float64(x.data[x.offset(b, y, xx, q)]) * float64(k.data[k.offset(dy, dx, q, o)])
							}
						}
					}
					out.data[out.offset(b, i, j, o)] = float32(sum)
				}
			}
		}
	}
	return out
}

func refDepthwise(x, k *tensor, sh, sw int, padding string) *tensor {
	n, h, w, c := x.shape[0], x.shape[1], x.shape[2], x.shape[3]
	kh, kw, mult := k.shape[0], k.shape[1], k.shape[3]
	pt, oh := tfWindow(h, kh, sh, padding)
	pl, ow := tfWindow(w, kw, sw, padding)
	out := newTensor(n, oh, ow, c*mult)
	for b := range n {
		for i := range oh {
			for j := range ow {
				for q := range c {
					for m := range mult {
						var sum float64
						for dy := range kh {
							y := i*sh + dy - pt
							if y < 0 || y >= h {
								continue
							}
							for dx := range kw {
								xx := j*sw + dx - pl
								if xx < 0 || xx >= w {
									continue
								}
								sum += float64(x.data[x.offset(b, y, xx, q)]) * float64(k.data[k.offset(dy, dx, q, m)])
							}
						}
						out.data[out.offset(b, i, j, q*mult+m)] = float32(sum)
					}
				}
			}
		}
	}
	return out
}

func refMaxPool(x *tensor, kh, kw, sh, sw int, padding string) *tensor {
	n, h, w, c := x.shape[0], x.shape[1], x.shape[2], x.shape[3]
	pt, oh := tfWindow(h, kh, sh, padding)
	pl, ow := tfWindow(w, kw, sw, padding)
	out := newTensor(n, oh, ow, c)
	for b := range n {
		for i := range oh {
			for j := range ow {
				for q := range c {
					best := float32(math.Inf(-1))
					for dy := range kh {
						for dx := range kw {
							y, xx := i*sh+dy-pt, j*sw+dx-pl
							if y >= 0 && y < h && xx >= 0 && xx < w {
								best = max(best, x.data[x.offset(b, y, xx, q)])
							}
						}
					}
					out.data[out.offset(b, i, j, q)] = best
				}
			}
		}
	}
	return out
}

// forEachIndex calls f with every multi-index of shape in row-major order.
func forEachIndex(shape []int, f func(idx []int)) {
	idx := make([]int, len(shape))
	n := 1
	for _, d := range shape {
		n *= d
	}
	for range n {
		f(idx)
		for i := len(idx) - 1; i >= 0; i-- {
			idx[i]++
			if idx[i] < shape[i] {
				break
			}
			idx[i] = 0
		}
	}
}

func refPad(x *tensor, pads [][2]int) *tensor {
	shape := make([]int, len(x.shape))
	for i, d := range x.shape {
		shape[i] = d + pads[i][0] + pads[i][1]
	}
	out := newTensor(shape...)
	forEachIndex(x.shape, func(idx []int) {
		o := make([]int, len(idx))
		for i := range idx {
			o[i] = idx[i] + pads[i][0]
		}
		out.data[out.offset(o...)] = x.data[x.offset(idx...)]
	})
	return out
}

// refReduce sums (or averages) over axes.
func refReduce(x *tensor, axes []int, keep, mean bool) *tensor {
	var shape []int
	count := 1
	for i, d := range x.shape {
		switch {
		case !slices.Contains(axes, i):
			shape = append(shape, d)
		case keep:
			shape = append(shape, 1)
			count *= d
		default:
			count *= d
		}
	}
	acc := make([]float64, len(newTensor(shape...).data))
	out := newTensor(shape...)
	forEachIndex(x.shape, func(idx []int) {
		var o []int
		for i, v := range idx {
			switch {
			case !slices.Contains(axes, i):
				o = append(o, v)
			case keep:
				o = append(o, 0)
			}
		}
		acc[out.offset(o...)] += float64(x.data[x.offset(idx...)])
	})
	for i, v := range acc {
		if mean {
			v /= float64(count)
		}
		out.data[i] = float32(v)
	}
	return out
}

func refMatMul(a, b *tensor, ta, tb bool) *tensor {
	m, k := a.shape[0], a.shape[1]
	if ta {
		m, k = k, m
	}
	cols := b.shape[1]
	if tb {
		cols = b.shape[0]
	}
	out := newTensor(m, cols)
	for i := range m {
		for j := range cols {
			var sum float64
			for q := range k {
				ai, bi := a.offset(i, q), b.offset(q, j)
				if ta {
					ai = a.offset(q, i)
				}
				if tb {
					bi = b.offset(j, q)
				}
				av, bv := a.data[ai], b.data[bi]
				sum += float64(av) * float64(bv)
			}
			out.data[out.offset(i, j)] = float32(sum)
		}
	}
	return out
}

// refBinary applies f elementwise with numpy broadcasting.
func refBinary(a, b *tensor, f func(x, y float32) float32) *tensor {
	r := max(len(a.shape), len(b.shape))
	pad := func(s []int) []int {
		out := make([]int, r)
		for i := range out {
			out[i] = 1
		}
		copy(out[r-len(s):], s)
		return out
	}
	as, bs := pad(a.shape), pad(b.shape)
	shape := make([]int, r)
	for i := range r {
		shape[i] = max(as[i], bs[i])
	}
	out := newTensor(shape...)
	pa := &tensor{shape: as, data: a.data}
	pb := &tensor{shape: bs, data: b.data}
	forEachIndex(shape, func(idx []int) {
		ia, ib := make([]int, r), make([]int, r)
		for i := range r {
			if as[i] != 1 {
				ia[i] = idx[i]
			}
			if bs[i] != 1 {
				ib[i] = idx[i]
			}
		}
		out.data[out.offset(idx...)] = f(pa.data[pa.offset(ia...)], pb.data[pb.offset(ib...)])
	})
	return out
}

func refMap(x *tensor, f func(float32) float32) *tensor {
	out := newTensor(x.shape...)
	for i, v := range x.data {
		out.data[i] = f(v)
	}
	return out
}

func refSoftmax(x *tensor) *tensor {
	last := x.shape[len(x.shape)-1]
	out := newTensor(x.shape...)
	for base := 0; base < len(x.data); base += last {
		row := x.data[base : base+last]
		m := slices.Max(row)
		var sum float64
		for _, v := range row {
			sum += math.Exp(float64(v - m))
		}
		for i, v := range row {
			out.data[base+i] = float32(math.Exp(float64(v-m)) / sum)
		}
	}
	return out
}

func relu(v float32) float32 { return max(v, 0) }

func sigmoid(v float32) float32 { return float32(1 / (1 + math.Exp(-float64(v)))) }

// reshaped views x's row-major data under another shape, as TF's Reshape does.
func reshaped(x *tensor, shape ...int) *tensor {
	return &tensor{shape: shape, data: x.data}
}
