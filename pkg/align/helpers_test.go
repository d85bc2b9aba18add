package align

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/facegate/facegate/pkg/testenv"
)

func openOrSkip(t *testing.T, path string) io.Reader {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		testenv.Missing(t, path, "the shared datasets are incomplete")
	}
	return bytes.NewReader(b)
}
