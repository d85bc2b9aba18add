package eval

import (
	"context"
	"fmt"

	"github.com/facegate/facegate/pkg/detect"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/imaging"
	"github.com/facegate/facegate/pkg/inference"
	"github.com/facegate/facegate/pkg/modelcache"
)

// OpenDetector loads the project's face detector (the one face.Engine
// uses, with the same default options) and returns it as a Detector, with
// a function that releases its session.
func OpenDetector(ctx context.Context, rt *inference.Runtime, c *modelcache.Cache) (Detector, func() error, error) {
	sess, err := rt.LoadFile(ctx, c.ONNXPath(face.DetectorModel))
	if err != nil {
		return nil, nil, fmt.Errorf("liveness eval: detector (run `facegate models fetch`): %w", err)
	}
	d, err := detect.New(face.DetectorRunner(sess), detect.Options{})
	if err != nil {
		sess.Close()
		return nil, nil, fmt.Errorf("liveness eval: %w", err)
	}
	return func(ctx context.Context, img *imaging.RGB) ([]detect.Face, error) {
		r, err := d.Detect(ctx, img)
		return r.Faces, err
	}, sess.Close, nil
}
