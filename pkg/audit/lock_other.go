//go:build !unix

package audit

import "os"

// lockFile is a no-op where flock is unavailable: run one writer per log.
func lockFile(*os.File) (func() error, error) { return func() error { return nil }, nil }
