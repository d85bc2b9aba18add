// Package golden checks the converted ONNX models against the original
// TensorFlow.js models they were converted from.
//
// The inputs are made here, in Go, and written to files that both runtimes
// read, so the reference (golden.mjs: pure-JS tfjs with the CPU backend) and
// ONNX Runtime see exactly the same float32 values. Image decoding and
// resizing differ between tfjs and Go; sharing the floats takes them out of
// the comparison, which then measures the conversion alone.
//
// Regenerate the reference outputs with regen.sh (see its header).
package golden

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // the npm demo photos and most dataset images
	_ "image/png"  // the face-api.js crops
	"math"
	"os"
	"path/filepath"
)

// Model is a converted model and the input size it takes.
type Model struct {
	ID string
	H  int
	W  int
}

// Models lists the converted models that have golden outputs, in a fixed
// order. The sizes are the original networks' input sizes.
func Models() []Model {
	return []Model{
		{ID: "blazeface-256", H: 256, W: 256},
		{ID: "hse-faceres-1024", H: 224, W: 224},
		{ID: "mobileface-256", H: 112, W: 112},
		{ID: "antispoof-128", H: 128, W: 128},
		{ID: "liveness-32", H: 32, W: 32},
		{ID: "dlib-resnet34-128", H: 150, W: 150},
	}
}

// Root says which folder an Image is found under.
type Root int

const (
	// Cache is the model cache ($FACEGATE_CACHE), holding the unpacked npm
	// packages; a fresh machine gets it with `facegate models fetch`.
	Cache Root = iota
	// Datasets is ../shared/datasets beside the repository.
	Datasets
)

func (r Root) String() string {
	switch r {
	case Cache:
		return "cache"
	case Datasets:
		return "datasets"
	}
	return fmt.Sprintf("Root(%d)", int(r))
}

// Image is one fixed source photo.
type Image struct {
	Name string // short, unique; names the case
	Root Root
	Rel  string // slash-separated path under Root
}

// Source names the image as "<root>:<rel>", the form recorded in index.json
// and in the golden files.
func (im Image) Source() string { return im.Root.String() + ":" + im.Rel }

// Path is the image's file path given the two roots.
func (im Image) Path(datasetsDir, cacheDir string) string {
	base := cacheDir
	if im.Root == Datasets {
		base = datasetsDir
	}
	return filepath.Join(base, filepath.FromSlash(im.Rel))
}

// Images lists the photos every model is run on: three group photos that ship
// in an npm package (so any machine that fetched the models has them), and
// three kinds of dataset image the system meets: an ArcFace-aligned crop, a
// loose face crop (PNG) and a full scene.
func Images() []Image {
	return []Image{
		{Name: "sample1", Root: Cache, Rel: "packages/vladmandic-face-api-1.7.15/demo/sample1.jpg"},
		{Name: "sample2", Root: Cache, Rel: "packages/vladmandic-face-api-1.7.15/demo/sample2.jpg"},
		{Name: "sample3", Root: Cache, Rel: "packages/vladmandic-face-api-1.7.15/demo/sample3.jpg"},
		{Name: "lfw-aaron-peirsol-1", Root: Datasets, Rel: "lfw_pairs_aligned/data/Aaron_Peirsol/Aaron_Peirsol_0001.jpg"},
		{Name: "faceapi-amy1", Root: Datasets, Rel: "face-api.js/examples/images/amy/amy1.png"},
		{Name: "deepface-img10", Root: Datasets, Rel: "deepface/dataset/img10.jpg"},
	}
}

// Case is one model input: a photo, centre-cropped to a square and resized to
// the model's input size. Input is NHWC [1,H,W,3], RGB, values 0..255 (not
// rounded).
type Case struct {
	Model  string
	Name   string
	Source string
	Input  []float32
	H, W   int
}

// Bytes is the input as little-endian float32, the layout of the .f32 files.
func (c Case) Bytes() []byte {
	b := make([]byte, 4*len(c.Input))
	for i, v := range c.Input {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// SHA256 is the hex sha256 of Bytes: the golden files record it so a change
// to the images or to the resize is caught before outputs are compared.
func (c Case) SHA256() string {
	s := sha256.Sum256(c.Bytes())
	return hex.EncodeToString(s[:])
}

// Cases builds every model's inputs from every image. The datasets are
// expected at ../shared/datasets beside repoRoot; any missing image is an
// error (use CasesIn and Image.Path to work with a partial set).
func Cases(repoRoot, cacheDir string) ([]Case, error) {
	return CasesIn(filepath.Join(repoRoot, "..", "shared", "datasets"), cacheDir)
}

// CasesIn is Cases with the datasets folder given directly.
func CasesIn(datasetsDir, cacheDir string) ([]Case, error) {
	pixels := make([]*RGB, 0, len(Images()))
	for _, im := range Images() {
		p, err := LoadRGB(im.Path(datasetsDir, cacheDir))
		if err != nil {
			return nil, fmt.Errorf("golden: image %s: %w", im.Name, err)
		}
		pixels = append(pixels, p)
	}
	var cases []Case
	for _, m := range Models() {
		for i, im := range Images() {
			cases = append(cases, NewCase(m, im, pixels[i]))
		}
	}
	return cases, nil
}

// NewCase makes the model's input from an already loaded image.
func NewCase(m Model, im Image, px *RGB) Case {
	return Case{
		Model:  m.ID,
		Name:   im.Name,
		Source: im.Source(),
		Input:  px.CenterSquare().Resize(m.H, m.W),
		H:      m.H,
		W:      m.W,
	}
}

// RGB is an image as 8-bit RGB samples, row-major, 3 per pixel.
type RGB struct {
	W, H int
	Pix  []uint8
}

// LoadRGB decodes a JPEG or PNG file. Alpha, if any, is dropped: colours are
// taken un-premultiplied, as stored.
func LoadRGB(path string) (*RGB, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	b := img.Bounds()
	if b.Dx() < 1 || b.Dy() < 1 {
		return nil, fmt.Errorf("decode %s: empty image %v", path, b)
	}
	out := &RGB{W: b.Dx(), H: b.Dy(), Pix: make([]uint8, 3*b.Dx()*b.Dy())}
	i := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
			out.Pix[i], out.Pix[i+1], out.Pix[i+2] = c.R, c.G, c.B
			i += 3
		}
	}
	return out, nil
}

// CenterSquare crops the largest centred square, so resizing keeps the
// aspect ratio of faces.
func (p *RGB) CenterSquare() *RGB {
	side := min(p.W, p.H)
	x0, y0 := (p.W-side)/2, (p.H-side)/2
	out := &RGB{W: side, H: side, Pix: make([]uint8, 3*side*side)}
	for y := 0; y < side; y++ {
		src := 3 * ((y0+y)*p.W + x0)
		copy(out.Pix[3*y*side:3*(y+1)*side], p.Pix[src:src+3*side])
	}
	return out
}

// Resize samples the image bilinearly at h x w, with pixel centres aligned
// (source coordinate = (dst+0.5)*scale-0.5, as TF's half_pixel_centers and
// OpenCV's INTER_LINEAR) and coordinates clamped to the border pixels. The
// result is NHWC float32 in 0..255.
//
// The arithmetic is float64 with every product converted explicitly, which
// forbids the compiler from fusing multiply-adds: the result, and so the
// sha256 recorded in the golden files, is the same on every architecture.
func (p *RGB) Resize(h, w int) []float32 {
	out := make([]float32, 0, h*w*3)
	sy := float64(p.H) / float64(h)
	sx := float64(p.W) / float64(w)
	for y := 0; y < h; y++ {
		y0, y1, fy := sample(y, sy, p.H)
		for x := 0; x < w; x++ {
			x0, x1, fx := sample(x, sx, p.W)
			for c := 0; c < 3; c++ {
				v00 := float64(p.Pix[3*(y0*p.W+x0)+c])
				v01 := float64(p.Pix[3*(y0*p.W+x1)+c])
				v10 := float64(p.Pix[3*(y1*p.W+x0)+c])
				v11 := float64(p.Pix[3*(y1*p.W+x1)+c])
				top := float64(v00*(1-fx)) + float64(v01*fx)
				bottom := float64(v10*(1-fx)) + float64(v11*fx)
				out = append(out, float32(float64(top*(1-fy))+float64(bottom*fy)))
			}
		}
	}
	return out
}

// sample maps destination index d to the two source indices to blend and the
// weight of the second.
func sample(d int, scale float64, n int) (int, int, float64) {
	s := float64((float64(d)+0.5)*scale) - 0.5
	if s <= 0 {
		return 0, 0, 0
	}
	if s >= float64(n-1) {
		return n - 1, n - 1, 0
	}
	i := int(math.Floor(s))
	return i, i + 1, s - float64(i)
}
