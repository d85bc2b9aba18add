//go:build goexperiment.simd && amd64

package embedded

import "simd/archsimd"

// Kernel names the scan kernels this binary uses. GOEXPERIMENT=simd builds
// use AVX2 (FMA for float32, VPMADDWD for int8) when the CPU has it.
var Kernel = func() string {
	if hasAVX2 {
		return "simd-avx2"
	}
	return "go"
}()

var hasAVX2 = archsimd.X86.AVX2() && archsimd.X86.FMA()

// Four independent accumulators hide the latency of the vector
// multiply-adds.

func dotBlockF32(q, rows []float32, out []float32) {
	d := len(q)
	if !hasAVX2 || d%32 != 0 {
		dotBlockF32Go(q, rows, out)
		return
	}
	// One row at a time with four accumulators: the compiler keeps this
	// loop in registers, which it does not for four rows at once.
	rows = rows[:len(out)*d]
	for r := range out {
		x := rows[r*d : (r+1)*d]
		var a0, a1, a2, a3 archsimd.Float32x8
		for i := 0; i+32 <= d; i += 32 {
			a0 = archsimd.LoadFloat32x8Slice(x[i:]).MulAdd(archsimd.LoadFloat32x8Slice(q[i:]), a0)
			a1 = archsimd.LoadFloat32x8Slice(x[i+8:]).MulAdd(archsimd.LoadFloat32x8Slice(q[i+8:]), a1)
			a2 = archsimd.LoadFloat32x8Slice(x[i+16:]).MulAdd(archsimd.LoadFloat32x8Slice(q[i+16:]), a2)
			a3 = archsimd.LoadFloat32x8Slice(x[i+24:]).MulAdd(archsimd.LoadFloat32x8Slice(q[i+24:]), a3)
		}
		out[r] = sumF32(a0.Add(a1).Add(a2.Add(a3)))
	}
}

func sumF32(a archsimd.Float32x8) float32 {
	var o [8]float32
	a.Store(&o)
	return ((o[0] + o[1]) + (o[2] + o[3])) + ((o[4] + o[5]) + (o[6] + o[7]))
}

func dotBlockI8(q32 []int32, q16 []int16, rows []int8, out []int32) {
	d := len(q32)
	if !hasAVX2 || d%16 != 0 {
		dotBlockI8Go(q32, rows, out)
		return
	}
	rows = rows[:len(out)*d]
	r := 0
	for ; r+4 <= len(out); r += 4 {
		x := rows[r*d : (r+4)*d]
		var a0, a1, a2, a3 archsimd.Int32x8
		for i := 0; i+16 <= d; i += 16 {
			qv := archsimd.LoadInt16x16Slice(q16[i:])
			a0 = a0.Add(archsimd.LoadInt8x16Slice(x[i:]).ExtendToInt16().DotProductPairs(qv))
			a1 = a1.Add(archsimd.LoadInt8x16Slice(x[d+i:]).ExtendToInt16().DotProductPairs(qv))
			a2 = a2.Add(archsimd.LoadInt8x16Slice(x[2*d+i:]).ExtendToInt16().DotProductPairs(qv))
			a3 = a3.Add(archsimd.LoadInt8x16Slice(x[3*d+i:]).ExtendToInt16().DotProductPairs(qv))
		}
		h := a0.AddPairsGrouped(a1).AddPairsGrouped(a2.AddPairsGrouped(a3))
		h.GetLo().Add(h.GetHi()).StoreSlice(out[r:])
	}
	for ; r < len(out); r++ {
		x := rows[r*d : (r+1)*d]
		var a archsimd.Int32x8
		for i := 0; i+16 <= d; i += 16 {
			a = a.Add(archsimd.LoadInt8x16Slice(x[i:]).ExtendToInt16().DotProductPairs(archsimd.LoadInt16x16Slice(q16[i:])))
		}
		out[r] = sumI32(a)
	}
}

func sumI32(a archsimd.Int32x8) int32 {
	var o [8]int32
	a.Store(&o)
	return o[0] + o[1] + o[2] + o[3] + o[4] + o[5] + o[6] + o[7]
}
