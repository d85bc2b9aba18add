package align

import (
	"errors"
	"fmt"
	"math"

	"github.com/facegate/facegate/pkg/imaging"
)

// Similarity is x' = A*x - B*y + Tx, y' = B*x + A*y + Ty: a rotation by
// atan2(B, A), a uniform scale by hypot(A, B) and a translation. It has no
// reflection, so a mirrored face is not "aligned" onto an unmirrored one.
type Similarity struct{ A, B, Tx, Ty float64 }

// Identity is the identity transform.
func Identity() Similarity { return Similarity{A: 1} }

// Apply maps a point.
func (s Similarity) Apply(p imaging.Point) imaging.Point {
	return imaging.Point{X: s.A*p.X - s.B*p.Y + s.Tx, Y: s.B*p.X + s.A*p.Y + s.Ty}
}

// Scale is the uniform scale factor.
func (s Similarity) Scale() float64 { return math.Hypot(s.A, s.B) }

// Rotation is the rotation angle in radians (counter-clockwise in a y-up
// frame, clockwise on screen where y points down).
func (s Similarity) Rotation() float64 { return math.Atan2(s.B, s.A) }

// Inverse returns the inverse transform.
func (s Similarity) Inverse() (Similarity, error) {
	d := s.A*s.A + s.B*s.B
	if !(d > 0) || math.IsInf(d, 0) {
		return Similarity{}, fmt.Errorf("align: similarity %+v is not invertible", s)
	}
	a, b := s.A/d, -s.B/d
	return Similarity{A: a, B: b, Tx: -(a*s.Tx - b*s.Ty), Ty: -(b*s.Tx + a*s.Ty)}, nil
}

// Then returns the transform applying s first and t second.
func (s Similarity) Then(t Similarity) Similarity {
	return Similarity{
		A:  t.A*s.A - t.B*s.B,
		B:  t.B*s.A + t.A*s.B,
		Tx: t.A*s.Tx - t.B*s.Ty + t.Tx,
		Ty: t.B*s.Tx + t.A*s.Ty + t.Ty,
	}
}

// ErrDegenerate is returned when the source points do not determine a
// transform (fewer than two distinct points).
var ErrDegenerate = errors.New("align: landmarks are degenerate")

// EstimateSimilarity returns the similarity minimising the sum of squared
// distances between Apply(src[i]) and dst[i]. This is Umeyama's (1991)
// least-squares estimate, as in skimage's SimilarityTransform.estimate used
// by insightface; in 2-D without reflection it reduces to the closed form
// A = sum(x.u + y.v)/sum|x|^2, B = sum(x.v - y.u)/sum|x|^2 over centred
// coordinates (x, y source, u, v destination).
func EstimateSimilarity(src, dst []imaging.Point) (Similarity, error) {
	if len(src) != len(dst) {
		return Similarity{}, fmt.Errorf("align: %d source points but %d destination points", len(src), len(dst))
	}
	if len(src) < 2 {
		return Similarity{}, fmt.Errorf("%w: %d point(s), need at least 2", ErrDegenerate, len(src))
	}
	var msx, msy, mdx, mdy float64
	for i := range src {
		msx += src[i].X
		msy += src[i].Y
		mdx += dst[i].X
		mdy += dst[i].Y
	}
	n := float64(len(src))
	msx, msy, mdx, mdy = msx/n, msy/n, mdx/n, mdy/n
	var den, na, nb float64
	for i := range src {
		x, y := src[i].X-msx, src[i].Y-msy
		u, v := dst[i].X-mdx, dst[i].Y-mdy
		den += x*x + y*y
		na += x*u + y*v
		nb += x*v - y*u
	}
	if !(den > 1e-12*n) || math.IsNaN(na) || math.IsNaN(nb) || math.IsInf(den, 0) {
		return Similarity{}, fmt.Errorf("%w: source points coincide or are not finite", ErrDegenerate)
	}
	a, b := na/den, nb/den
	return Similarity{A: a, B: b, Tx: mdx - (a*msx - b*msy), Ty: mdy - (b*msx + a*msy)}, nil
}
