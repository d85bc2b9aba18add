package bus_test

import (
	"context"
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/events"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var captured = time.Date(2026, 3, 4, 8, 30, 15, 123456789, time.UTC)

func frameRef(seq uint64) *facegatev1.FrameRef {
	return &facegatev1.FrameRef{Site: "hq", Camera: "lobby-1", Sequence: seq, CaptureTime: timestamppb.New(captured)}
}

// unitEmbedding is a deterministic L2-normalised vector of length dim.
func unitEmbedding(dim int, seed float64) []float32 {
	v := make([]float32, dim)
	var sum float64
	for i := range v {
		x := math.Sin(seed + float64(i)*0.37)
		v[i] = float32(x)
		sum += x * x
	}
	n := math.Sqrt(sum)
	for i := range v {
		v[i] = float32(float64(v[i]) / n)
	}
	return v
}

func testFaceEvent(seq uint64) *facegatev1.FaceEvent {
	liveness := float32(0.97)
	return &facegatev1.FaceEvent{
		SchemaVersion: events.SchemaVersion,
		Frame:         frameRef(seq),
		ModelId:       "dlib-resnet34-128",
		ModelVersion:  "1.7.15",
		DetectorId:    "blazeface-256",
		Faces: []*facegatev1.Face{{
			Index:              0,
			Box:                &facegatev1.Box{X: 100, Y: 80, Width: 120, Height: 140},
			Keypoints:          []*facegatev1.Point{{X: 130, Y: 120}, {X: 190, Y: 121}, {X: 160, Y: 150}, {X: 160, Y: 180}},
			KeypointLayout:     "blazeface-6",
			DetectorScore:      0.98,
			Quality:            &facegatev1.Quality{Passed: true, Overall: 0.9, Sharpness: 0.8, InterEyePixels: 60},
			Embedding:          unitEmbedding(128, float64(seq)),
			EmbeddingDimension: 128,
			LivenessScore:      &liveness,
		}},
		Latencies: []*facegatev1.StageLatency{
			{Stage: "detect", Duration: durationpb.New(12 * time.Millisecond)},
			{Stage: "embed", Duration: durationpb.New(30 * time.Millisecond)},
		},
		ProcessedTime: timestamppb.New(captured.Add(50 * time.Millisecond)),
	}
}

func testDecision(id string) *facegatev1.Decision {
	person, dist := "p-0042", float32(0.41)
	return &facegatev1.Decision{
		SchemaVersion: events.SchemaVersion,
		DecisionId:    id,
		Site:          "hq",
		Door:          "main-entrance",
		Camera:        "lobby-1",
		Outcome:       facegatev1.Outcome_OUTCOME_GRANT,
		Mode:          facegatev1.Mode_MODE_IDENTIFY,
		PersonId:      &person,
		Distance:      &dist,
		Threshold:     0.6,
		ModelId:       "dlib-resnet34-128",
		ModelVersion:  "1.7.15",
		Frame:         frameRef(7),
		PolicyRule:    "staff-weekdays",
		DecidedTime:   timestamppb.New(captured.Add(80 * time.Millisecond)),
	}
}
