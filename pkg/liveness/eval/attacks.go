package eval

import (
	"math"
	"math/rand/v2"

	"github.com/facegate/facegate/pkg/imaging"
)

// Attack is a SYNTHETIC approximation of a presentation attack: an image
// transform that imitates some artefacts a camera would record when shown
// a printed photo or a screen. It is not a presentation attack; see the
// package doc.
type Attack struct {
	Name string `json:"name"`
	// Species groups the attacks for the APCER of the worst species:
	// "print" or "replay". Component attacks carry their parent's species.
	Species string `json:"species"`
	// Component is true for attacks that apply only part of a species'
	// artefacts (reported, but not in the worst-species APCER).
	Component bool   `json:"component"`
	What      string `json:"what"`
	// Apply returns the attacked copy of a scene canvas; rng makes the
	// random parts reproducible per image.
	Apply func(src *imaging.RGB, rng *rand.Rand) *imaging.RGB `json:"-"`
}

// Attacks lists the synthetic attacks in report order.
func Attacks() []Attack {
	return []Attack{
		{Name: "print", Species: "print", What: "synthetic print: resolution loss (1/3 area downsample, bilinear upsample), CMY halftone dots (4 px period, rotated screens) on a warm paper white, reduced dynamic range, camera blur (sigma 1.2)", Apply: printAttack},
		{Name: "print-lowres", Species: "print", Component: true, What: "print component: resolution loss and camera blur only", Apply: printLowres},
		{Name: "print-halftone", Species: "print", Component: true, What: "print component: halftone dots on paper white and blur, full resolution", Apply: printHalftone},
		{Name: "replay", Species: "replay", What: "synthetic screen replay: RGB-stripe pixel grid of pitch 3.3 px rotated 2 degrees, point-sampled (moire), gamma 0.8, contrast 1.2, 5-bit colour banding, cool white point, specular highlight, camera blur (sigma 1.0)", Apply: replayAttack},
		{Name: "replay-moire", Species: "replay", Component: true, What: "replay component: resampled pixel grid (moire) and blur only", Apply: replayMoire},
		{Name: "replay-tone", Species: "replay", Component: true, What: "replay component: gamma, contrast, banding, white point and highlight, no pixel grid", Apply: replayTone},
	}
}

// clamp8 rounds and clamps to a byte.
func clamp8(v float64) uint8 {
	if v <= 0 || math.IsNaN(v) {
		return 0
	}
	if v >= 255 {
		return 255
	}
	return uint8(v + 0.5)
}

// shrinkArea reduces src by an integer factor, averaging each block, so
// the reduction does not alias.
func shrinkArea(src *imaging.RGB, f int) *imaging.RGB {
	w, h := max(src.W/f, 1), max(src.H/f, 1)
	dst := imaging.NewRGB(w, h)
	for y := range h {
		for x := range w {
			var s [3]int
			n := 0
			for dy := range f {
				for dx := range f {
					sx, sy := min(x*f+dx, src.W-1), min(y*f+dy, src.H-1)
					i := 3 * (sy*src.W + sx)
					s[0] += int(src.Pix[i])
					s[1] += int(src.Pix[i+1])
					s[2] += int(src.Pix[i+2])
					n++
				}
			}
			o := 3 * (y*w + x)
			for c := range 3 {
				dst.Pix[o+c] = uint8((s[c] + n/2) / n)
			}
		}
	}
	return dst
}

// blur is a separable Gaussian blur with edge replication.
func blur(src *imaging.RGB, sigma float64) *imaging.RGB {
	r := int(math.Ceil(3 * sigma))
	k := make([]float64, 2*r+1)
	var sum float64
	for i := range k {
		d := float64(i - r)
		k[i] = math.Exp(-d * d / (2 * sigma * sigma))
		sum += k[i]
	}
	for i := range k {
		k[i] /= sum
	}
	w, h := src.W, src.H
	tmp := make([]float64, len(src.Pix))
	for y := range h {
		for x := range w {
			for c := range 3 {
				var v float64
				for i, kv := range k {
					sx := min(max(x+i-r, 0), w-1)
					v += kv * float64(src.Pix[3*(y*w+sx)+c])
				}
				tmp[3*(y*w+x)+c] = v
			}
		}
	}
	dst := imaging.NewRGB(w, h)
	for y := range h {
		for x := range w {
			for c := range 3 {
				var v float64
				for i, kv := range k {
					sy := min(max(y+i-r, 0), h-1)
					v += kv * tmp[3*(sy*w+x)+c]
				}
				dst.Pix[3*(y*w+x)+c] = clamp8(v)
			}
		}
	}
	return dst
}

// lowres loses resolution as a consumer print of a small photo does.
func lowres(src *imaging.RGB) *imaging.RGB {
	small := shrinkArea(src, 3)
	up, err := imaging.Resize(small, src.W, src.H)
	if err != nil {
		return src.Clone()
	}
	return up
}

// paper is the warm white of office paper under indoor light, and ink the
// darkest a cheap print reaches: together they reduce the dynamic range.
var (
	paper = [3]float64{236, 228, 206}
	ink   = [3]float64{38, 34, 40}
)

// halftone prints src with one dot screen per CMY ink: a pixel is inked
// when it falls inside the dot its screen cell grows for the local ink
// coverage. Screens are rotated (15, 75, 0 degrees) as in offset and laser
// printing; the period is 4 canvas pixels.
func halftone(src *imaging.RGB) *imaging.RGB {
	const period = 4.0
	angles := [3]float64{15, 75, 0}
	dst := imaging.NewRGB(src.W, src.H)
	for c := range 3 {
		sin, cos := math.Sincos(angles[c] * math.Pi / 180)
		for y := range src.H {
			for x := range src.W {
				i := 3*(y*src.W+x) + c
				cover := 1 - float64(src.Pix[i])/255 // ink coverage of this channel's complement
				u := (float64(x)*cos + float64(y)*sin) / period
				v := (-float64(x)*sin + float64(y)*cos) / period
				du, dv := u-math.Floor(u)-0.5, v-math.Floor(v)-0.5
				// the cosine spot function: round dots at low coverage,
				// round holes at high coverage, area close to `cover`
				spot := (2 - math.Cos(2*math.Pi*du) - math.Cos(2*math.Pi*dv)) / 4
				inked := spot < cover
				if inked {
					dst.Pix[i] = clamp8(ink[c])
				} else {
					dst.Pix[i] = clamp8(paper[c])
				}
			}
		}
	}
	return dst
}

// reduceRange maps 0..255 onto the ink..paper range a print can show.
func reduceRange(src *imaging.RGB) *imaging.RGB {
	dst := imaging.NewRGB(src.W, src.H)
	for i, v := range src.Pix {
		c := i % 3
		dst.Pix[i] = clamp8(ink[c] + float64(v)/255*(paper[c]-ink[c]))
	}
	return dst
}

func printAttack(src *imaging.RGB, rng *rand.Rand) *imaging.RGB {
	// A slight blend of the halftone with the range-reduced image stands in
	// for dot gain and the camera's own resolution limit.
	lr := lowres(src)
	ht := halftone(lr)
	rr := reduceRange(lr)
	mix := imaging.NewRGB(src.W, src.H)
	for i := range mix.Pix {
		mix.Pix[i] = clamp8(0.6*float64(ht.Pix[i]) + 0.4*float64(rr.Pix[i]))
	}
	return sensorNoise(blur(mix, 1.2), rng, 2)
}

func printLowres(src *imaging.RGB, rng *rand.Rand) *imaging.RGB {
	return sensorNoise(blur(lowres(src), 1.2), rng, 2)
}

func printHalftone(src *imaging.RGB, rng *rand.Rand) *imaging.RGB {
	return sensorNoise(blur(halftone(src), 1.2), rng, 2)
}

// sensorNoise adds the camera's own Gaussian noise (sigma in grey levels).
func sensorNoise(src *imaging.RGB, rng *rand.Rand, sigma float64) *imaging.RGB {
	dst := imaging.NewRGB(src.W, src.H)
	for i, v := range src.Pix {
		dst.Pix[i] = clamp8(float64(v) + rng.NormFloat64()*sigma)
	}
	return dst
}

// bilinear samples src at continuous pixel coordinates (edge replicated).
func bilinear(src *imaging.RGB, x, y float64, c int) float64 {
	x, y = x-0.5, y-0.5
	x0, y0 := int(math.Floor(x)), int(math.Floor(y))
	fx, fy := x-float64(x0), y-float64(y0)
	at := func(xi, yi int) float64 {
		xi, yi = min(max(xi, 0), src.W-1), min(max(yi, 0), src.H-1)
		return float64(src.Pix[3*(yi*src.W+xi)+c])
	}
	top := at(x0, y0) + fx*(at(x0+1, y0)-at(x0, y0))
	bot := at(x0, y0+1) + fx*(at(x0+1, y0+1)-at(x0, y0+1))
	return top + fy*(bot-top)
}

// pixelGrid shows src on a screen of RGB-stripe pixels and samples it with
// the camera's pixel grid. The screen pitch (3.3 camera pixels) and a 2
// degree rotation are incommensurate with the camera grid, so point
// sampling the stripes aliases into moire, as filming a screen does.
func pixelGrid(src *imaging.RGB) *imaging.RGB {
	const pitch = 3.3
	sin, cos := math.Sincos(2 * math.Pi / 180)
	cx, cy := float64(src.W)/2, float64(src.H)/2
	dst := imaging.NewRGB(src.W, src.H)
	for y := range src.H {
		for x := range src.W {
			px, py := float64(x)+0.5-cx, float64(y)+0.5-cy
			u := (px*cos + py*sin) / pitch
			v := (-px*sin + py*cos) / pitch
			iu, iv := math.Floor(u), math.Floor(v)
			fu, fv := u-iu, v-iv
			// the screen pixel's colour: the image at its centre
			sx := (iu+0.5)*pitch*cos - (iv+0.5)*pitch*sin + cx
			sy := (iu+0.5)*pitch*sin + (iv+0.5)*pitch*cos + cy
			sub := int(fu * 3) // 0 = R, 1 = G, 2 = B stripe
			lit := fv < 0.85   // a dark row between pixel rows
			for c := range 3 {
				var val float64
				if lit && c == sub {
					// three stripes of one third width: x3 keeps the mean brightness
					val = 2.6 * bilinear(src, sx, sy, c)
				}
				dst.Pix[3*(y*src.W+x)+c] = clamp8(val)
			}
		}
	}
	return dst
}

// tone applies a screen's tone curve and white point, quantises to 5 bits
// per channel (banding) and adds a specular reflection of a light.
func tone(src *imaging.RGB, rng *rand.Rand) *imaging.RGB {
	white := [3]float64{0.92, 0.98, 1.06}
	hx := float64(src.W) * (0.25 + 0.15*rng.Float64())
	hy := float64(src.H) * (0.2 + 0.1*rng.Float64())
	hr := float64(src.W) * 0.16
	dst := imaging.NewRGB(src.W, src.H)
	var mean float64
	for _, v := range src.Pix {
		mean += float64(v)
	}
	mean /= float64(len(src.Pix))
	for y := range src.H {
		for x := range src.W {
			dx, dy := (float64(x)-hx)/hr, (float64(y)-hy)/(0.6*hr)
			spec := 150 * math.Exp(-(dx*dx + dy*dy))
			for c := range 3 {
				i := 3*(y*src.W+x) + c
				v := 255 * math.Pow(float64(src.Pix[i])/255, 0.8)
				v = (v-mean)*1.2 + mean
				v = math.Floor(clampF(v*white[c])/8)*8 + 4
				dst.Pix[i] = clamp8(v + spec*[3]float64{0.95, 0.98, 1}[c])
			}
		}
	}
	return dst
}

func clampF(v float64) float64 { return math.Min(math.Max(v, 0), 255) }

func replayAttack(src *imaging.RGB, rng *rand.Rand) *imaging.RGB {
	return sensorNoise(blur(pixelGrid(tone(src, rng)), 1.0), rng, 2)
}

func replayMoire(src *imaging.RGB, rng *rand.Rand) *imaging.RGB {
	return sensorNoise(blur(pixelGrid(src), 1.0), rng, 2)
}

func replayTone(src *imaging.RGB, rng *rand.Rand) *imaging.RGB {
	return sensorNoise(blur(tone(src, rng), 1.0), rng, 2)
}

// Controls are inputs no gate should call live; they check the models
// react to anything at all. They are not presentation attacks either.
func noiseCanvas(w, h int, rng *rand.Rand) *imaging.RGB {
	m := imaging.NewRGB(w, h)
	for i := range m.Pix {
		m.Pix[i] = uint8(rng.IntN(256))
	}
	return m
}

func flatCanvas(w, h int, rng *rand.Rand) *imaging.RGB {
	m := imaging.NewRGB(w, h)
	// a random skin-ish or grey tone
	base := [3]int{100 + rng.IntN(120), 80 + rng.IntN(100), 60 + rng.IntN(100)}
	for i := range m.Pix {
		m.Pix[i] = uint8(base[i%3])
	}
	return m
}
