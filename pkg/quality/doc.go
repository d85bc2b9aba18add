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
//   - pose from the keypoints, with a model of BlazeFace's own keypoint
//     geometry (pose.go): roll from the eye line, yaw from the nose point's
//     offset from the eyes' midpoint, pitch from the ratio of the
//     eye-to-nose and nose-to-mouth heights. The model's heights are the
//     detector's (measured on LFW), its depths are calibrated on turned
//     faces (a turned face's eye distance shrinks by cos(yaw) while its
//     eye-to-mouth height does not); the ear keypoints carry no
//     independent information and are not used. See pose.go for the
//     numbers.
//
// What pose costs, measured (so the limits sit where errors rise, not at
// a round number): `facegate eval pose --data
// ../shared/datasets/lfw_pairs_aligned` runs all 6000 LFW View 2 pairs
// through detector, alignment and the default encoder (dlib ResNet,
// mirror-averaged) and counts errors at the calibrated threshold (0.4163)
// for pairs binned by the larger estimated |yaw| of their two faces
// (4 minutes on 2 cores):
//
//	max |yaw|   pairs  same  false rejects   diff  false accepts
//	 0-15        5877  2942   39 (1.3%)      2935   25 (0.85%)
//	15-20          71    34    5 (15%)         37    0
//	20-25          31    11    0               20    1 (5%)
//	25-35          16     9    0                7    1 (14%)
//	35+             5     4    0                1    0
//
// False rejects rise about eightfold from 15 degrees (5 of 45 same-person
// pairs at 15-25, p < 0.001 against the 1.3% base rate); false accepts
// rise from 20 degrees (2 of 28 different-person pairs at 20+ against
// 0.23 expected, p = 0.02). LFW holds few turned faces (|yaw| p50 3.7,
// p95 8.9, p99 15.5 degrees), so nothing beyond 25 degrees is measured
// with any precision. MaxYaw is 20: past it the cost that matters at a
// door, a false accept, rises; between 15 and 20 a door probe only risks a
// false reject, which the next frame retries. Enrolment photos, whose
// template every later probe is compared with, are better held to 15.
// With the default limits 5940 of the 6000 pairs keep both faces
// (accuracy 0.9884 against 0.9882 for all; 2 of the 27 false accepts go).
//
// Pitch shows no rise within what LFW holds: max |pitch| 0-5 degrees
// (4623 pairs) 1.4% false rejects and 0.9% false accepts, 5-15 (1288)
// 1.9% and 0.9%, 15-25 (81) none and 1 of 39; only 8 pairs lie beyond 25.
// MaxPitch is 25, the end of the measured range.
//
// Roll cannot be read off LFW (its crops are upright), so each pair's
// second image is turned in its plane first: `facegate eval pose --data
// ... --every 3 --rotate R` (2000 pairs, about 2 minutes each):
//
//	rotation  accuracy  false rejects  false accepts  measured roll (median)
//	  0        0.9865     1.8%           0.9%           1
//	 20        0.9855     2.1%           0.8%          10-15
//	 35        0.9790     3.0%           1.2%          20-25
//	 50        0.9395     9.9%           2.2%          30-35
//
// BlazeFace under-reads in-plane rotation (its keypoints lean towards an
// upright face), so alignment undoes only the measured part. Where it
// measures the roll, roll is harmless: at a true 50 degrees, pairs read at
// 35+ degrees score 0.979 (908 pairs), those read at 15-25 degrees 0.75
// (194). The cost rises between a true 35 and 50 degrees, which the
// detector reports as about 25-35: MaxRoll stays at 30. A detector pass on
// the image turned by the measured roll would recover the rest.
package quality
