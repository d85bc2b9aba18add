package indexbench

import (
	"golang.org/x/sys/unix"
)

// On a shared machine wall-clock time includes waiting for a core; CPU time
// does not. The harness reports both.

// threadCPU is the calling OS thread's CPU time in nanoseconds.
func threadCPU() (int64, bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, false
	}
	return ts.Nano(), true
}

// processCPU is the process's user+system CPU time in nanoseconds.
func processCPU() (int64, bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts); err != nil {
		return 0, false
	}
	return ts.Nano(), true
}
