//go:build !unix

package embedded

import "os"

// lockDir is a no-op where flock is unavailable; callers there must not start
// two servers on one directory.
func lockDir(string) (*os.File, error) { return nil, nil }
