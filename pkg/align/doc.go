// Package align warps a detected face onto the canonical crop ("chip") an
// embedding network was trained on.
//
// Alignment is a similarity transform (rotation, uniform scale,
// translation) fitted by least squares from the detector's landmarks to a
// template's, then a bilinear warp. BlazeFace gives the two eye centres,
// the nose tip and the mouth centre, so templates are expressed in those
// four points:
//
//   - ArcFace112: insightface's 112x112 five-point template, the mouth
//     centre being the mean of its two mouth corners. MobileFace and the
//     LFW set in the shared datasets use this crop.
//   - Dlib150: the 150x150 chip dlib's get_face_chip_details(det, 150, 0.25)
//     extracts for its ResNet face encoder (face_recognition's default),
//     derived in dlib.go from dlib's own constants.
//
// ArcFaceToDlib150 re-crops an ArcFace-aligned image into the dlib chip by
// warping between the two templates' five points, so the dlib encoder can
// be evaluated on the pre-aligned LFW set without running a detector.
//
// Coordinates are continuous (package imaging): pixel (i, j) has its centre
// at (i+0.5, j+0.5). OpenCV and dlib put pixel centres on integers; the
// templates are converted where they are defined, so a warp here equals
// cv2.warpAffine (insightface's norm_crop) on the same landmarks.
//
// Outside the source image the warp uses a constant border, black by
// default: insightface's norm_crop (borderValue 0) and dlib's
// extract_image_chip (black background) both do, so a face near the frame
// edge reaches the network the way its training crops did.
package align
