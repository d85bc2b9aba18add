// Package eval measures the liveness gate (package liveness) the only way
// this project can: BPCER on real photos of real faces, and APCER on
// SYNTHETIC approximations of presentation attacks.
//
// No presentation-attack data exists here: nobody printed a photo, held up
// a phone or wore a mask in front of a camera for this project. The
// "attacks" are image transforms of the same real photos that imitate some
// artefacts of a print (lost resolution, halftone dots, paper white,
// reduced dynamic range, blur) or of a screen filmed by a camera (a
// resampled pixel grid that aliases into moire, gamma and contrast, colour
// banding, a specular highlight). A real print or replay differs in many
// ways these do not model (paper texture, glare geometry, the edges of the
// medium, hands, depth, motion), so a low APCER here does not mean a low
// APCER against real attacks. Noise, flat-colour and non-face inputs are
// sanity controls, not attacks. Every report carries this warning.
//
// The error rates are the ones ISO/IEC 30107-3 defines: APCER (attack
// presentations wrongly accepted as bona fide), per attack species, and
// BPCER (bona fide presentations wrongly rejected).
package eval
