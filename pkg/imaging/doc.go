// Package imaging turns untrusted image bytes into a plain RGB raster and
// prepares model input tensors from it.
//
// Camera frames and enrolment photos come from outside the system, so
// decoding is defensive: the byte size and the pixel count announced by the
// header are checked against Limits before any pixel buffer is allocated
// (a 50000x50000 header is refused without decoding), truncated JPEGs are
// reported as corrupt instead of silently yielding a half-grey picture, and
// every failure wraps one of ErrEmpty, ErrTooLarge, ErrUnsupportedFormat or
// ErrCorrupt so callers can tell a client error from an internal one.
//
// Every decoded picture becomes an *RGB (8-bit, 3 channels, row-major, no
// alpha) in its display orientation: JPEG EXIF orientation is applied,
// grey, paletted, CMYK/YCCK and 16-bit sources are converted. Alpha is
// dropped keeping the un-premultiplied colour, which is what PIL's
// convert("RGB") and OpenCV's imread do, so embeddings computed here match
// the reference pipelines the models were validated with.
//
// Geometry uses continuous pixel coordinates: pixel (i, j) covers
// [i, i+1) x [j, j+1) and its centre is (i+0.5, j+0.5). Resizing samples
// with half-pixel centres (OpenCV INTER_LINEAR, TensorFlow
// half_pixel_centers), so a resize by factor s maps coordinate u exactly to
// u*s and the Transform returned by Letterbox is exact.
package imaging
