// Package eval measures face-embedding models the way the literature does,
// so the numbers facegate reports for its models can be compared with
// published ones, and calibrates the distance threshold a deployment uses.
//
//   - TripletLoss: FaceNet's loss sum_i max(|A_i-P_i|^2 - |A_i-N_i|^2 + alpha, 0)
//     with hard and semi-hard triplet counts, for evaluating a model on
//     labelled triplets and for any adaptation step.
//   - LFW: ParsePairs reads the standard pairs.txt; KFold runs the 10-fold
//     protocol (threshold chosen on nine folds, accuracy measured on the
//     tenth).
//   - ROC, AUC, EER and TAR at a fixed FAR over all pairs; PlotROC draws the
//     curve as a PNG.
//   - Calibrate picks an operating threshold from labelled pairs.
//
// Everywhere a pair is accepted as "same person" when its distance is
// strictly below the threshold, matching the matcher's rule
// (distance < threshold).
package eval
