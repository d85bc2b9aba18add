//go:build unix

package loadbench

import (
	"syscall"
	"time"
)

// processCPU is the CPU time this process has used (user + system): set
// against wall time it shows how much of the machine the benchmark got,
// which other work on a shared machine takes away.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
