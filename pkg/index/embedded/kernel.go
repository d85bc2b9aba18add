package embedded

// The scan kernels compute one query against a block of rows. They are plain
// Go: the toolchain emits scalar SSE for them, so they are unrolled by 8 with
// independent accumulators (to hide add latency) and re-sliced to constant
// lengths (so the compiler drops bounds checks). A build with
// GOEXPERIMENT=simd swaps in vector kernels (kernel_simd.go).

// dotBlockF32Go sets out[r] = q . rows[r*d:(r+1)*d] for d = len(q).
func dotBlockF32Go(q, rows []float32, out []float32) {
	d := len(q)
	rows = rows[:len(out)*d]
	for r := range out {
		out[r] = dotF32(q, rows[r*d:(r+1)*d])
	}
}

func dotF32(q, x []float32) float32 {
	x = x[:len(q)]
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
	i := 0
	for ; i+8 <= len(q); i += 8 {
		qq := q[i : i+8 : i+8]
		xx := x[i : i+8 : i+8]
		s0 += qq[0] * xx[0]
		s1 += qq[1] * xx[1]
		s2 += qq[2] * xx[2]
		s3 += qq[3] * xx[3]
		s4 += qq[4] * xx[4]
		s5 += qq[5] * xx[5]
		s6 += qq[6] * xx[6]
		s7 += qq[7] * xx[7]
	}
	for ; i < len(q); i++ {
		s0 += q[i] * x[i]
	}
	return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}

// dotBlockI8Go sets out[r] = q . rows[r*d:(r+1)*d] in exact integer
// arithmetic; q holds the query's int8 code widened to int32.
func dotBlockI8Go(q []int32, rows []int8, out []int32) {
	d := len(q)
	rows = rows[:len(out)*d]
	for r := range out {
		x := rows[r*d : (r+1)*d]
		x = x[:len(q)]
		var s0, s1, s2, s3 int32
		i := 0
		for ; i+8 <= len(q); i += 8 {
			qq := q[i : i+8 : i+8]
			xx := x[i : i+8 : i+8]
			s0 += qq[0]*int32(xx[0]) + qq[4]*int32(xx[4])
			s1 += qq[1]*int32(xx[1]) + qq[5]*int32(xx[5])
			s2 += qq[2]*int32(xx[2]) + qq[6]*int32(xx[6])
			s3 += qq[3]*int32(xx[3]) + qq[7]*int32(xx[7])
		}
		for ; i < len(q); i++ {
			s0 += q[i] * int32(x[i])
		}
		out[r] = s0 + s1 + s2 + s3
	}
}
