package embedded

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkSnapshot measures restart: writing a snapshot (fsync included)
// and loading it back, for 100k and 1M 128-d templates.
//
//	go test ./pkg/index/embedded -run X -bench Snapshot -benchtime 1x
func BenchmarkSnapshot(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{100000, 1000000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			x := newIndex(b, Options{})
			fill(b, x, "gal", 128, n, 2, rand.New(rand.NewPCG(1, 1)))
			path := filepath.Join(b.TempDir(), "gallery.snap")
			b.Run("write", func(b *testing.B) {
				for b.Loop() {
					if err := x.WriteSnapshot(ctx, path, 1); err != nil {
						b.Fatal(err)
					}
				}
				if st, err := os.Stat(path); err == nil {
					b.ReportMetric(float64(st.Size())/float64(n), "bytes/template")
				}
			})
			b.Run("load", func(b *testing.B) {
				for b.Loop() {
					y, _, err := LoadSnapshot(ctx, path, Options{})
					if err != nil {
						b.Fatal(err)
					}
					if c, _ := y.Count(ctx, "gal"); c != n {
						b.Fatalf("loaded %d templates", c)
					}
					y.Close()
				}
			})
		})
	}
}
