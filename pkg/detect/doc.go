// Package detect finds faces with BlazeFace (MediaPipe's "back" 256x256
// model as shipped in @vladmandic/human) and reports each face's box, score
// and six keypoints in the original image's pixel coordinates.
//
// The package does not run the network itself: a Runner (the ONNX session
// in production) executes it, so decoding, suppression and coordinate
// mapping are pure Go and testable without a model. The runner receives
// raw 0..255 RGB pixels (NHWC); by the project's model contract the ONNX
// graph normalises its own input.
//
// Decoding follows Human 3.x / MediaPipe: the 896 anchors are the centres
// of a 16x16 grid (2 anchors per cell) and an 8x8 grid (6 per cell) in
// model-input pixels; each anchor row is [score logit, dx, dy, w, h,
// 6 x (kx, ky)] where the centre and the keypoints are offsets from the
// anchor and w, h are in pixels. The model's four outputs (scores and
// regressors for each grid) are matched to the grids by their row counts,
// which is what Human's "sort by size and concatenate 512 then 384" does.
//
// Defaults differ from Human's on purpose (see Options): a score threshold
// of 0.5 instead of 0.2 and weighted NMS at IoU 0.3 instead of hard NMS at
// 0.1, because an access-control camera sees a few near, frontal faces and
// a spurious face costs an embedding and an "unknown person" event, while a
// missed face is retried on the next frame.
//
// Keypoints can be averaged over the image and its mirror
// (Options.MirrorAverage), which cancels a left-right asymmetry of the
// model's keypoints measured on LFW.
//
// Faces that fill the picture (ID-photo crops of 96..250 px) are larger
// than anything BlazeFace-back was trained to find. The detector therefore
// also runs the image shrunk inside a border (Options.Pad), mapping the
// results back exactly through the letterbox transform.
package detect
