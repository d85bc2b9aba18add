package hostinfo

import (
	"os"
	"strings"
	"testing"
)

func TestHostInfo(t *testing.T) {
	if CPUModel() == "" {
		t.Fatal("empty CPU model")
	}
	if _, err := os.Stat("/proc/loadavg"); err == nil {
		if f := strings.Fields(LoadAverage()); len(f) != 3 {
			t.Fatalf("load average %q, want three fields", LoadAverage())
		}
	}
}
