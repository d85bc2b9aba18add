// Package quality decides whether a detected face is good enough to embed,
// and says why not.
//
// A face that is too small, blurred or turned away gives an embedding far
// from the person's enrolled templates, which shows up as a false reject
// at the door (or, worse, as a confident match to the wrong person when
// thresholds are loose). Refusing such faces early, with a reason the
// console can show ("face too small: inter-ocular 18 px < 32"), lets the
// system wait for a better frame instead.
//
// Measures:
//   - size: inter-ocular distance and the smaller box side, in original
//     image pixels;
//   - sharpness: variance of the Laplacian of the grey aligned chip divided
//     by its mean squared gradient, over the chip's central region.
//     Normalising makes it independent of contrast and exposure; the
//     central region keeps the warp's border and the background out. It
//     depends on how large the face is in the chip, so thresholds are per
//     template (DefaultThresholds is for dlib's 150 chip);
//   - pose from the keypoints, with a rough anthropometric model (pose.go):
//     roll from the eye line, yaw from the nose's offset from the eyes'
//     midpoint, pitch from the ratio of the eye-to-nose and nose-to-mouth
//     distances.
package quality
