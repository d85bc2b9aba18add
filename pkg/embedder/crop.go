package embedder

import (
	"bytes"
	"fmt"
	"image"
	"image/jpeg"

	"github.com/facegate/facegate/pkg/align"
	"github.com/facegate/facegate/pkg/detect"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/imaging"
)

// CropQuality is the JPEG quality of console crops: at 112x112 it gives
// about 3 KB per face (2.8 to 3.3 KB measured on the face-api.js demo's
// sample1 and a portrait crop), small next to the frame the event replaces.
const CropQuality = 85

// cropJPEG is the face aligned to the ArcFace 112x112 template, JPEG
// encoded. The console shows it; the matcher never reads it. The encoder's
// own chip size is not used on purpose: 112 px is enough to recognise a
// person on screen and keeps the event small whatever the model.
func cropJPEG(img *imaging.RGB, f face.Face) ([]byte, error) {
	lm := align.FromBlazeFace(detect.Face{Box: f.Box, Score: f.Score, Keypoints: f.Keypoints})
	chip, _, err := align.Align(img, lm, align.ArcFace112(), align.Border{Mode: align.BorderReplicate})
	if err != nil {
		return nil, fmt.Errorf("embedder: crop: %w", err)
	}
	rgba := image.NewRGBA(image.Rect(0, 0, chip.W, chip.H))
	for i, j := 0, 0; i+2 < len(chip.Pix); i, j = i+3, j+4 {
		rgba.Pix[j], rgba.Pix[j+1], rgba.Pix[j+2], rgba.Pix[j+3] = chip.Pix[i], chip.Pix[i+1], chip.Pix[i+2], 0xff
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, rgba, &jpeg.Options{Quality: CropQuality}); err != nil {
		return nil, fmt.Errorf("embedder: crop: encode: %w", err)
	}
	return buf.Bytes(), nil
}
