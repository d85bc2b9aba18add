package embedded

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestKernels compares the scan kernels (whichever this build uses, and the
// plain Go ones) with a float64 / exact integer reference, for dimensions
// that do and do not fit the vector widths.
func TestKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, d := range []int{1, 7, 8, 15, 16, 31, 32, 33, 64, 128, 130, 512} {
		const rows = 37
		q := make([]float32, d)
		x := make([]float32, rows*d)
		for i := range q {
			q[i] = float32(r.NormFloat64())
		}
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		got := make([]float32, rows)
		gotGo := make([]float32, rows)
		dotBlockF32(q, x, got)
		dotBlockF32Go(q, x, gotGo)
		for j := 0; j < rows; j++ {
			var want, mag float64
			for i := 0; i < d; i++ {
				p := float64(q[i]) * float64(x[j*d+i])
				want += p
				mag += math.Abs(p)
			}
			tol := 1e-6 * mag * float64(d)
			if math.Abs(float64(got[j])-want) > tol || math.Abs(float64(gotGo[j])-want) > tol {
				t.Fatalf("d=%d row %d: kernel %v, go %v, want %v", d, j, got[j], gotGo[j], want)
			}
		}

		q8 := make([]int8, d)
		x8 := make([]int8, rows*d)
		for i := range q8 {
			q8[i] = int8(r.IntN(255) - 127)
		}
		for i := range x8 {
			x8[i] = int8(r.IntN(255) - 127)
		}
		// The extremes, where an overflow would show.
		q8[0], x8[0] = -127, -127
		q32 := make([]int32, d)
		q16 := make([]int16, d)
		for i, v := range q8 {
			q32[i], q16[i] = int32(v), int16(v)
		}
		gi := make([]int32, rows)
		giGo := make([]int32, rows)
		dotBlockI8(q32, q16, x8, gi)
		dotBlockI8Go(q32, x8, giGo)
		for j := 0; j < rows; j++ {
			var want int32
			for i := 0; i < d; i++ {
				want += int32(q8[i]) * int32(x8[j*d+i])
			}
			if gi[j] != want || giGo[j] != want {
				t.Fatalf("d=%d row %d: int8 kernel %d, go %d, want %d", d, j, gi[j], giGo[j], want)
			}
		}
	}
	t.Logf("kernel: %s", Kernel)
}

// TestQuantizeBound checks the quantisation error terms the exact int8 mode
// relies on: |q.x - sq*sx*(q8.x8)| <= ex + eq*|x8*sx| for random pairs.
func TestQuantizeBound(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	const d = 128
	for trial := 0; trial < 2000; trial++ {
		q, x := unitRand(r, d), unitRand(r, d)
		if trial%3 == 0 { // near-duplicates, where the match is decided
			for i := range x {
				x[i] = q[i] + float32(0.01*r.NormFloat64())
			}
			x = unitCopy(x)
		}
		cq, cx := make([]int8, d), make([]int8, d)
		sq, eq, _ := quantize(q, cq)
		sx, ex, nx := quantize(x, cx)
		var exact float64
		var idot int64
		for i := 0; i < d; i++ {
			exact += float64(q[i]) * float64(x[i])
			idot += int64(cq[i]) * int64(cx[i])
		}
		approx := float64(sq) * float64(sx) * float64(idot)
		bound := float64(ex) + float64(eq)*float64(nx)
		if math.Abs(exact-approx) > bound+float64(boundEps(d)) {
			t.Fatalf("trial %d: |%v - %v| = %v exceeds bound %v", trial, exact, approx, math.Abs(exact-approx), bound)
		}
		if bound > 0.05 {
			t.Fatalf("trial %d: bound %v is too loose to be useful", trial, bound)
		}
	}
}

func unitRand(r *rand.Rand, d int) []float32 {
	v := make([]float32, d)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return unitCopy(v)
}

// BenchmarkKernels times the scan kernels over 100k 128-d rows in blocks of
// 256, as a scan runs them (the result is compute plus memory traffic).
func BenchmarkKernels(b *testing.B) {
	const n, d, block = 100000, 128, 256
	r := rand.New(rand.NewPCG(1, 1))
	q := unitRand(r, d)
	rows := make([]float32, n*d)
	codes := make([]int8, n*d)
	for i := range rows {
		rows[i] = float32(r.NormFloat64())
		codes[i] = int8(r.IntN(255) - 127)
	}
	q32, q16 := make([]int32, d), make([]int16, d)
	for i := range q32 {
		q32[i] = int32(r.IntN(255) - 127)
		q16[i] = int16(q32[i])
	}
	fo := make([]float32, block)
	io := make([]int32, block)
	b.Run("float32", func(b *testing.B) {
		b.SetBytes(n * d * 4)
		for b.Loop() {
			for lo := 0; lo < n; lo += block {
				hi := min(lo+block, n)
				dotBlockF32(q, rows[lo*d:hi*d], fo[:hi-lo])
			}
		}
	})
	b.Run("int8", func(b *testing.B) {
		b.SetBytes(n * d)
		for b.Loop() {
			for lo := 0; lo < n; lo += block {
				hi := min(lo+block, n)
				dotBlockI8(q32, q16, codes[lo*d:hi*d], io[:hi-lo])
			}
		}
	})
}
