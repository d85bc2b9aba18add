//go:build !(goexperiment.simd && amd64)

package embedded

// Kernel names the scan kernels this binary uses.
const Kernel = "go"

func dotBlockF32(q, rows []float32, out []float32) { dotBlockF32Go(q, rows, out) }

func dotBlockI8(q []int32, _ []int16, rows []int8, out []int32) { dotBlockI8Go(q, rows, out) }
