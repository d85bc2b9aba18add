//go:build !unix

package loadbench

import "time"

// processCPU is not measured here: reports show 0 cores used.
func processCPU() time.Duration { return 0 }
