package eval

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Curve is one ROC to draw.
type Curve struct {
	Name string
	ROC  ROC
}

// PlotOptions size the plot. Zero fields take defaults.
type PlotOptions struct {
	Width, Height int // default 640 x 480
	// MinFAR is the left end of the logarithmic FAR axis; default the
	// decade at or below 1/(impostor pairs) of the first curve, the
	// smallest FAR the data can show.
	MinFAR float64
}

// Colours of the curves, in order (they repeat).
func palette() []color.RGBA {
	return []color.RGBA{{0, 90, 200, 255}, {210, 60, 20, 255}, {20, 150, 60, 255}, {150, 40, 170, 255}}
}

// PlotROC writes a PNG of TAR against FAR with a logarithmic FAR axis
// (decades labelled), the chance diagonal TAR = FAR, and a legend with
// each curve's AUC and EER. Points at FAR below MinFAR (including FAR 0)
// are drawn at the left edge, so the curve's height there is its TAR at
// the smallest displayable FAR.
func PlotROC(w io.Writer, curves []Curve, opt PlotOptions) error {
	if len(curves) == 0 {
		return fmt.Errorf("eval: plot: no curves")
	}
	for i, c := range curves {
		if len(c.ROC.Points) < 2 || c.ROC.Neg == 0 {
			return fmt.Errorf("eval: plot: curve %d (%q) is empty", i, c.Name)
		}
	}
	if opt.Width == 0 {
		opt.Width = 640
	}
	if opt.Height == 0 {
		opt.Height = 480
	}
	if opt.Width < 200 || opt.Height < 150 || opt.Width > 4000 || opt.Height > 4000 {
		return fmt.Errorf("eval: plot: size %dx%d outside 200x150..4000x4000", opt.Width, opt.Height)
	}
	if opt.MinFAR == 0 {
		opt.MinFAR = math.Pow(10, math.Floor(math.Log10(1/float64(curves[0].ROC.Neg))))
	}
	if !(opt.MinFAR > 0 && opt.MinFAR < 1) {
		return fmt.Errorf("eval: plot: MinFAR %v outside (0,1)", opt.MinFAR)
	}
	img := image.NewRGBA(image.Rect(0, 0, opt.Width, opt.Height))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	pl := plotArea{left: 60, top: 20, right: opt.Width - 20, bottom: opt.Height - 50, minLog: math.Log10(opt.MinFAR)}
	grid := color.RGBA{225, 225, 225, 255}
	black := color.RGBA{0, 0, 0, 255}
	face := basicfont.Face7x13
	text := func(x, y int, s string) {
		d := font.Drawer{Dst: img, Src: image.NewUniform(black), Face: face, Dot: fixed.P(x, y)}
		d.DrawString(s)
	}
	for e := int(math.Ceil(pl.minLog)); e <= 0; e++ {
		x := pl.x(math.Pow(10, float64(e)))
		line(img, x, pl.top, x, pl.bottom, grid, 1)
		label := fmt.Sprintf("1e%d", e)
		if e == 0 {
			label = "1"
		}
		text(x-len(label)*7/2, pl.bottom+16, label)
	}
	for k := 0; k <= 10; k++ {
		y := pl.y(float64(k) / 10)
		line(img, pl.left, y, pl.right, y, grid, 1)
		if k%2 == 0 {
			text(pl.left-28, y+4, fmt.Sprintf("%.1f", float64(k)/10))
		}
	}
	// chance: TAR = FAR, a curve on the log axis
	prevX, prevY := -1, -1
	for i := 0; i <= 200; i++ {
		f := math.Pow(10, pl.minLog*(1-float64(i)/200))
		x, y := pl.x(f), pl.y(f)
		if prevX >= 0 {
			line(img, prevX, prevY, x, y, color.RGBA{150, 150, 150, 255}, 1)
		}
		prevX, prevY = x, y
	}
	line(img, pl.left, pl.bottom, pl.right, pl.bottom, black, 1)
	line(img, pl.left, pl.top, pl.left, pl.bottom, black, 1)
	text((pl.left+pl.right)/2-60, opt.Height-12, "FAR (log scale)")
	text(6, (pl.top+pl.bottom)/2+4, "TAR")
	labels := make([]string, len(curves))
	widest := 0
	for ci, c := range curves {
		eer, _ := c.ROC.EER()
		labels[ci] = fmt.Sprintf("%s  AUC %.4f  EER %.4f", c.Name, c.ROC.AUC(), eer)
		widest = max(widest, 7*len(labels[ci]))
	}
	for ci, c := range curves {
		// The polyline between consecutive ROC points: vertical runs are
		// genuine pairs gained at a fixed FAR, diagonal ones tied distances.
		pts := c.ROC.Points
		px, py := pl.x(pts[0].FAR), pl.y(pts[0].TAR)
		for _, p := range pts[1:] {
			x, y := pl.x(p.FAR), pl.y(p.TAR)
			line(img, px, py, x, y, palette()[ci%len(palette())], 2)
			px, py = x, y
		}
	}
	// Legend last, on white, so it stays readable over the curves.
	legendX := max(pl.left+10, pl.right-widest-40)
	for y := pl.bottom - 14*len(curves) - 12; y < pl.bottom-2; y++ {
		for x := legendX - 4; x < pl.right-2; x++ {
			img.SetRGBA(x, y, color.RGBA{255, 255, 255, 255})
		}
	}
	for ci := range curves {
		ly := pl.bottom - 14*(len(curves)-ci)
		line(img, legendX, ly-4, legendX+20, ly-4, palette()[ci%len(palette())], 2)
		text(legendX+26, ly, labels[ci])
	}
	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("eval: plot: %w", err)
	}
	return nil
}

type plotArea struct {
	left, top, right, bottom int
	minLog                   float64
}

// x maps a FAR to a column; FARs below the axis' start sit on the left edge.
func (p plotArea) x(far float64) int {
	l := pl10(far)
	if l < p.minLog {
		l = p.minLog
	}
	return p.left + int(math.Round((l-p.minLog)/(-p.minLog)*float64(p.right-p.left)))
}

func (p plotArea) y(tar float64) int {
	return p.bottom - int(math.Round(tar*float64(p.bottom-p.top)))
}

func pl10(v float64) float64 {
	if v <= 0 {
		return math.Inf(-1)
	}
	return math.Log10(v)
}

// line draws a segment of the given thickness (Bresenham, square pen).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA, width int) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := 1, 1
	if x0 > x1 {
		sx = -1
	}
	if y0 > y1 {
		sy = -1
	}
	e := dx + dy
	for {
		for oy := 0; oy < width; oy++ {
			for ox := 0; ox < width; ox++ {
				if image.Pt(x0+ox, y0+oy).In(img.Rect) {
					img.SetRGBA(x0+ox, y0+oy, c)
				}
			}
		}
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
