package matcher

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/directory"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/index"
	"github.com/facegate/facegate/pkg/policy"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

func unitVec(r *rand.Rand, dim int) []float32 {
	v := make([]float32, dim)
	var ss float64
	for i := range v {
		x := r.NormFloat64()
		v[i] = float32(x)
		ss += x * x
	}
	n := math.Sqrt(ss)
	for i := range v {
		v[i] = float32(float64(v[i]) / n)
	}
	return v
}

// BenchmarkIdentify is one identify decision (search of the space's
// collection, one-person-per-frame assignment, policy) for a frame with one
// face, against galleries of 1k and 10k templates (2 per person). Vectors are
// random unit vectors: the exact index's cost does not depend on them.
//
//	go test -run XXX -bench Identify -benchtime 2000x ./pkg/matcher
func BenchmarkIdentify(b *testing.B) {
	_, _, js := natstest.Run(b, embedded.Options{})
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("templates=%d", n), func(b *testing.B) {
			const space, dim = "bench-space", 128
			ctx := context.Background()
			dir, err := directory.New(ctx, directory.Config{JetStream: js, Keys: noKeys{}, Spaces: []directory.Space{{Name: space, Dim: dim}}})
			if err != nil {
				b.Fatal(err)
			}
			coll, _ := dir.Collection(space)
			r := rand.New(rand.NewPCG(1, 2))
			ts := make([]index.Template, n)
			for i := range ts {
				ts[i] = index.Template{TemplateInfo: index.TemplateInfo{ID: fmt.Sprintf("t%d", i), Person: fmt.Sprintf("p%d", i/2)}, Vector: unitVec(r, dim)}
			}
			if err := dir.Index().Upsert(ctx, coll, ts); err != nil {
				b.Fatal(err)
			}
			m, err := New(Config{JetStream: js, Directory: dir, Threshold: 0.4163})
			if err != nil {
				b.Fatal(err)
			}
			// The probe is a template slightly moved: a match.
			probe := append([]float32(nil), ts[n/3].Vector...)
			probe[0] += 0.01
			probe, _ = index.Normalize(dim, renorm(probe))
			ev := &fv1.FaceEvent{SchemaVersion: events.SchemaVersion, ModelId: space,
				Frame: &fv1.FrameRef{Site: "hq", Camera: "cam1", Sequence: 1, CaptureTime: timestamppb.Now()},
				Faces: []*fv1.Face{{Quality: &fv1.Quality{Passed: true}, Embedding: probe, EmbeddingDimension: dim}}}
			door := policy.Door{Site: "hq", ID: "front", Mode: fv1.Mode_MODE_IDENTIFY}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				out, err := m.identify(ctx, ev, door, time.Now())
				if err != nil || len(out) != 1 || out[0].d.GetDistance() > 0.1 {
					b.Fatalf("identify: %v %v", err, out)
				}
			}
		})
	}
}

func renorm(v []float32) []float32 {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	n := math.Sqrt(ss)
	for i := range v {
		v[i] = float32(float64(v[i]) / n)
	}
	return v
}

// noKeys satisfies sealed.KeyProvider for a directory that never unseals.
type noKeys struct{}

func (noKeys) WrapKey(context.Context, []byte) ([]byte, string, error) {
	return nil, "", fmt.Errorf("no keys")
}
func (noKeys) UnwrapKey(context.Context, string, []byte) ([]byte, error) {
	return nil, fmt.Errorf("no keys")
}
