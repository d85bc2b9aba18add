// Package dlib converts face-api's FaceRecognitionNet, a tfjs port of dlib's
// dlib_face_recognition_resnet_model_v1 (a ResNet-34-like face descriptor,
// published LFW accuracy 99.38%), from its weights-only tfjs files into an
// ONNX model. It is facegate's default encoder: a 150x150 RGB face chip in,
// 128 numbers out.
//
// face-api ships only weights; the network is code (src/faceRecognitionNet in
// the face-api package). This package rebuilds that code as an ONNX graph,
// operation for operation, so the ONNX model computes what face-api computes:
//
//	x = (rgb - [122.782, 117.001, 104.298]) / 255   (face-api divides by 255)
//	conv 7x7/2 'valid' + bias, scale layer, relu; maxpool 3x3/2 'valid'
//	3 x residual(32), residualDown(64), 3 x residual(64),
//	residualDown(128), 2 x residual(128), residualDown(256), 2 x residual(256),
//	residualDown(256)
//	mean over height and width; matmul by fc (256x128)
//
// residual(x)     = relu(convNoRelu(conv(x)) + x), 3x3 'same' convolutions.
// residualDown(x) = relu(pad(convNoRelu(convDown(x))) + padC(avgPool2x2/2(x))):
// convDown is a 3x3 stride-2 'valid' convolution; when the pooled shortcut is
// one row and column larger than the residual branch (8->3 vs 8->4, 4->1 vs
// 4->2), face-api appends a zero row at the bottom and a zero column at the
// right of the branch; when the shortcut has half the channels it appends as
// many zero channels. Every "scale layer" (per-channel multiply and add after
// a convolution and its bias) is folded into that convolution's weights and
// bias, which is exact up to float32 rounding.
//
// The output "descriptor" is raw, not L2-normalised, as in face-api.
package dlib

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/facegate/facegate/pkg/onnx/onnxbuild"
	"github.com/facegate/facegate/pkg/onnx/onnxpb"
)

const (
	// DefaultModelID names the converted model when Options.ModelID is empty.
	DefaultModelID = "dlib-resnet34-128"
	// ManifestFile is the weights manifest's name in face-api's model folder.
	ManifestFile = "face_recognition_model-weights_manifest.json"
	// InputSize is the side of the square RGB chip the network takes.
	InputSize = 150
	// DescriptorSize is the length of the descriptor.
	DescriptorSize = 128
	// InputName and OutputName are the graph's input and output names.
	InputName  = "input"
	OutputName = "descriptor"
)

// Options tunes a conversion.
type Options struct {
	// ModelID is recorded in the model's metadata and names the graph;
	// empty means DefaultModelID.
	ModelID string
}

// Convert builds the ONNX model from a tfjs weights manifest and the
// concatenated bytes of the weight files it lists.
func Convert(ctx context.Context, manifestJSON []byte, weights []byte, opts Options) (*onnxpb.ModelProto, error) {
	m, err := parseManifest(manifestJSON)
	if err != nil {
		return nil, err
	}
	return convert(ctx, m, weights, opts)
}

// ConvertDir reads face_recognition_model-weights_manifest.json and the
// weight files it lists from dir, converts them, and returns the serialised
// ONNX model (deterministic bytes).
func ConvertDir(ctx context.Context, dir string, opts Options) ([]byte, error) {
	manifestJSON, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("dlib: read manifest: %w", err)
	}
	m, err := parseManifest(manifestJSON)
	if err != nil {
		return nil, err
	}
	var blob []byte
	for _, p := range m.paths {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("dlib: read weights: %w", err)
		}
		// Manifest paths are relative to the manifest; refusing anything
		// else keeps a crafted manifest from reading files outside dir.
		local := filepath.FromSlash(p)
		if !filepath.IsLocal(local) {
			return nil, fmt.Errorf("dlib: manifest names weight file %q outside the model folder", p)
		}
		data, err := os.ReadFile(filepath.Join(dir, local))
		if err != nil {
			return nil, fmt.Errorf("dlib: read weights: %w", err)
		}
		blob = append(blob, data...)
	}
	model, err := convert(ctx, m, blob, opts)
	if err != nil {
		return nil, err
	}
	return onnxbuild.Marshal(model)
}

// fmap is the static shape of one NCHW feature map (the batch is symbolic).
type fmap struct {
	name    string
	c, h, w int64
}

type builder struct {
	g     *onnxbuild.Graph
	m     *manifest
	blob  []byte
	flops int64
}

// block is one residual block of the network, named as face-api names its
// weights.
type block struct {
	name string
	out  int64
	down bool
}

func convert(ctx context.Context, m *manifest, blob []byte, opts Options) (*onnxpb.ModelProto, error) {
	if err := m.checkSize(int64(len(blob))); err != nil {
		return nil, err
	}
	id := opts.ModelID
	if id == "" {
		id = DefaultModelID
	}
	b := &builder{g: onnxbuild.New(id), m: m, blob: blob}
	x, err := b.stem()
	if err != nil {
		return nil, err
	}
	blocks := []block{
		{"conv32_1", 32, false}, {"conv32_2", 32, false}, {"conv32_3", 32, false},
		{"conv64_down", 64, true}, {"conv64_1", 64, false}, {"conv64_2", 64, false}, {"conv64_3", 64, false},
		{"conv128_down", 128, true}, {"conv128_1", 128, false}, {"conv128_2", 128, false},
		{"conv256_down", 256, true}, {"conv256_1", 256, false}, {"conv256_2", 256, false},
		{"conv256_down_out", 256, true},
	}
	for _, bl := range blocks {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("dlib: convert: %w", err)
		}
		if bl.down {
			x, err = b.residualDown(x, bl)
		} else {
			x, err = b.residual(x, bl)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := b.head(x); err != nil {
		return nil, err
	}
	return b.g.Model("facegate models/convert/dlib", map[string]string{
		"model_id":        id,
		"source":          "face-api FaceRecognitionNet (face_recognition_model), port of dlib_face_recognition_resnet_model_v1",
		"input":           fmt.Sprintf("%s: [N,%d,%d,3] float32 NHWC RGB 0..255", InputName, InputSize, InputSize),
		"output":          fmt.Sprintf("%s: [N,%d] float32, not L2-normalised", OutputName, DescriptorSize),
		"flops_per_image": strconv.FormatInt(b.flops, 10),
	}), nil
}

// weight returns a dequantised weight after checking its shape, so that a
// manifest for some other network fails here with the weight's name.
func (b *builder) weight(name string, shape ...int64) (tensor, error) {
	i, ok := b.m.byName[name]
	if !ok {
		return tensor{}, fmt.Errorf("dlib: weight %q missing from the manifest", name)
	}
	spec := b.m.weights[i]
	if !equalShape(spec.shape, shape) {
		return tensor{}, fmt.Errorf("dlib: weight %q has shape %v, want %v", name, spec.shape, shape)
	}
	return b.m.decode(spec, b.blob), nil
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// stem builds the input normalisation, the layout change, the 7x7 stride-2
// convolution and the max pool.
func (b *builder) stem() (fmap, error) {
	in, err := b.g.Input(InputName, -1, InputSize, InputSize, 3)
	if err != nil {
		return fmap{}, err
	}
	// face-api: normalize(x, meanRgb).div(255), on NHWC before the network;
	// kept as separate Sub and Div so the float32 results match tfjs.
	mean, err := b.g.Float("mean_rgb", []int64{3}, []float32{122.782, 117.001, 104.298})
	if err != nil {
		return fmap{}, err
	}
	div, err := b.g.Float("pixel_scale", []int64{}, []float32{255})
	if err != nil {
		return fmap{}, err
	}
	centred := b.g.Node("Sub", "centred", []string{in, mean})
	scaled := b.g.Node("Div", "normalised", []string{centred, div})
	nchw := b.g.Node("Transpose", "nchw", []string{scaled}, onnxbuild.Ints("perm", 0, 3, 1, 2))
	x := fmap{name: nchw, c: 3, h: InputSize, w: InputSize}

	x, err = b.conv(x, "conv32_down", 7, 32, 2, false, true)
	if err != nil {
		return fmap{}, err
	}
	// tf.maxPool(out, 3, 2, 'valid'): no padding, floor division.
	pooled := b.g.Node("MaxPool", "maxpool", []string{x.name},
		onnxbuild.Ints("kernel_shape", 3, 3), onnxbuild.Ints("strides", 2, 2))
	return fmap{name: pooled, c: x.c, h: (x.h-3)/2 + 1, w: (x.w-3)/2 + 1}, nil
}

// conv is face-api's convLayer: conv2d, add bias, scale layer, optional relu,
// with the scale layer folded into the convolution. same selects TF 'same'
// padding (else 'valid').
func (b *builder) conv(x fmap, prefix string, k, out, stride int64, same, relu bool) (fmap, error) {
	filters, err := b.weight(prefix+"/conv/filters", k, k, x.c, out)
	if err != nil {
		return fmap{}, err
	}
	bias, err := b.weight(prefix+"/conv/bias", out)
	if err != nil {
		return fmap{}, err
	}
	sw, err := b.weight(prefix+"/scale/weights", out)
	if err != nil {
		return fmap{}, err
	}
	sb, err := b.weight(prefix+"/scale/biases", out)
	if err != nil {
		return fmap{}, err
	}

	// (conv(x, W) + bias) * s + t = conv(x, W*s) + (bias*s + t), per output
	// channel; computed in float64 and rounded once. tfjs filters are HWIO,
	// ONNX wants OIHW.
	in := x.c
	w := make([]float32, out*in*k*k)
	bf := make([]float32, out)
	for o := range out {
		s := float64(sw.data[o])
		bf[o] = float32(float64(bias.data[o])*s + float64(sb.data[o]))
		for i := range in {
			for ky := range k {
				for kx := range k {
					src := ((ky*k+kx)*in+i)*out + o
					dst := ((o*in+i)*k+ky)*k + kx
					w[dst] = float32(float64(filters.data[src]) * s)
				}
			}
		}
	}
	wName, err := b.g.Float(prefix+"/W", []int64{out, in, k, k}, w)
	if err != nil {
		return fmap{}, err
	}
	bName, err := b.g.Float(prefix+"/B", []int64{out}, bf)
	if err != nil {
		return fmap{}, err
	}

	var oh, ow int64
	var pads []int64
	if same {
		// TF 'same': output ceil(n/stride); any odd padding goes to the
		// bottom/right.
		oh, ow = (x.h+stride-1)/stride, (x.w+stride-1)/stride
		ph := max((oh-1)*stride+k-x.h, 0)
		pw := max((ow-1)*stride+k-x.w, 0)
		pads = []int64{ph / 2, pw / 2, ph - ph/2, pw - pw/2}
	} else {
		if x.h < k || x.w < k {
			return fmap{}, fmt.Errorf("dlib: %s: %dx%d input is smaller than the %dx%d kernel", prefix, x.h, x.w, k, k)
		}
		oh, ow = (x.h-k)/stride+1, (x.w-k)/stride+1
		pads = []int64{0, 0, 0, 0}
	}
	y := b.g.Node("Conv", prefix, []string{x.name, wName, bName},
		onnxbuild.Ints("kernel_shape", k, k), onnxbuild.Ints("strides", stride, stride),
		onnxbuild.Ints("pads", pads...), onnxbuild.Ints("dilations", 1, 1), onnxbuild.Int("group", 1))
	b.flops += 2 * out * in * k * k * oh * ow
	if relu {
		y = b.g.Node("Relu", prefix+"_relu", []string{y})
	}
	return fmap{name: y, c: out, h: oh, w: ow}, nil
}

// residual is face-api's residual(): relu(convNoRelu(conv(x)) + x).
func (b *builder) residual(x fmap, bl block) (fmap, error) {
	if x.c != bl.out {
		return fmap{}, fmt.Errorf("dlib: %s: identity shortcut of %d channels cannot add to %d", bl.name, x.c, bl.out)
	}
	y, err := b.conv(x, bl.name+"/conv1", 3, bl.out, 1, true, true)
	if err != nil {
		return fmap{}, err
	}
	y, err = b.conv(y, bl.name+"/conv2", 3, bl.out, 1, true, false)
	if err != nil {
		return fmap{}, err
	}
	sum := b.g.Node("Add", bl.name+"_add", []string{y.name, x.name})
	return fmap{name: b.g.Node("Relu", bl.name+"_relu", []string{sum}), c: y.c, h: y.h, w: y.w}, nil
}

// residualDown is face-api's residualDown(), including its zero padding of
// the residual branch's spatial size and of the shortcut's channels.
func (b *builder) residualDown(x fmap, bl block) (fmap, error) {
	y, err := b.conv(x, bl.name+"/conv1", 3, bl.out, 2, false, true)
	if err != nil {
		return fmap{}, err
	}
	y, err = b.conv(y, bl.name+"/conv2", 3, bl.out, 1, true, false)
	if err != nil {
		return fmap{}, err
	}

	// tf.avgPool(x, 2, 2, 'valid'): no padding, so count_include_pad is moot.
	pooled := fmap{
		name: b.g.Node("AveragePool", bl.name+"_pool", []string{x.name},
			onnxbuild.Ints("kernel_shape", 2, 2), onnxbuild.Ints("strides", 2, 2)),
		c: x.c, h: x.h / 2, w: x.w / 2,
	}

	switch {
	case pooled.h == y.h && pooled.w == y.w:
	case pooled.h == y.h+1 && pooled.w == y.w+1:
		// face-api concatenates one zero row (axis 1) and then one zero
		// column (axis 2) after the branch: bottom and right.
		pads, err := b.g.Int64(bl.name+"/branch_pads", []int64{8}, []int64{0, 0, 0, 0, 0, 0, 1, 1})
		if err != nil {
			return fmap{}, err
		}
		y = fmap{name: b.g.Node("Pad", bl.name+"_branch_pad", []string{y.name, pads}), c: y.c, h: y.h + 1, w: y.w + 1}
	default:
		return fmap{}, fmt.Errorf("dlib: %s: branch %dx%d and shortcut %dx%d differ by more than face-api pads",
			bl.name, y.h, y.w, pooled.h, pooled.w)
	}

	switch {
	case pooled.c == y.c:
	case 2*pooled.c == y.c:
		// face-api: concat([pooled, zeros(pooled.shape)], channels).
		pads, err := b.g.Int64(bl.name+"/shortcut_pads", []int64{8}, []int64{0, 0, 0, 0, 0, pooled.c, 0, 0})
		if err != nil {
			return fmap{}, err
		}
		pooled = fmap{name: b.g.Node("Pad", bl.name+"_shortcut_pad", []string{pooled.name, pads}), c: y.c, h: pooled.h, w: pooled.w}
	default:
		return fmap{}, fmt.Errorf("dlib: %s: shortcut of %d channels cannot be padded to %d as face-api does", bl.name, pooled.c, y.c)
	}

	sum := b.g.Node("Add", bl.name+"_add", []string{pooled.name, y.name})
	return fmap{name: b.g.Node("Relu", bl.name+"_relu", []string{sum}), c: y.c, h: y.h, w: y.w}, nil
}

// head is the global average pool and the fully connected layer (no bias).
func (b *builder) head(x fmap) error {
	fc, err := b.weight("fc", x.c, DescriptorSize)
	if err != nil {
		return err
	}
	fcName, err := b.g.Float("fc", []int64{x.c, DescriptorSize}, fc.data)
	if err != nil {
		return err
	}
	gap := b.g.Node("GlobalAveragePool", "mean", []string{x.name})
	flat := b.g.Node("Flatten", "flatten", []string{gap}, onnxbuild.Int("axis", 1))
	if err := b.g.NodeOut("MatMul", []string{flat, fcName}, []string{OutputName}); err != nil {
		return err
	}
	b.g.Output(OutputName, -1, DescriptorSize)
	b.flops += 2 * x.c * DescriptorSize
	return nil
}
