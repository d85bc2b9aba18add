package detect

import "testing"

func TestSuppressContainedDropsNestedPartialFaces(t *testing.T) {
	// Measured on face-api.js's amy1.png: the face and two weak detections on
	// parts of it, which IoU-based NMS keeps (IoU 0.27 and 0.24).
	faces := []Face{
		{Box: Box{29, 5, 114, 114}, Score: 0.90},
		{Box: Box{-5, 6, 84, 84}, Score: 0.55},
		{Box: Box{88, 26, 81, 81}, Score: 0.53},
		{Box: Box{400, 400, 100, 100}, Score: 0.52}, // a second, separate person stays
	}
	if IoU(faces[0].Box, faces[1].Box) > 0.3 || IoU(faces[0].Box, faces[2].Box) > 0.3 {
		t.Fatal("fixture: IoU would already suppress these")
	}
	got := SuppressContained(faces, 0.5)
	if len(got) != 2 || got[0].Score != 0.90 || got[1].Score != 0.52 {
		t.Fatalf("kept %+v, want the face and the separate person", got)
	}
	if got := SuppressContained(faces, 1); len(got) != 4 {
		t.Fatalf("frac 1 must keep everything, kept %d", len(got))
	}
	// Two people side by side, boxes touching: both stay.
	pair := []Face{{Box: Box{0, 0, 100, 100}, Score: 0.9}, {Box: Box{80, 0, 100, 100}, Score: 0.8}}
	if got := SuppressContained(pair, 0.5); len(got) != 2 {
		t.Fatalf("neighbours overlapping 20%% were merged: %+v", got)
	}
}

func TestContainment(t *testing.T) {
	a := Box{0, 0, 10, 10}
	if c := Containment(a, Box{2, 2, 4, 4}); c != 1 {
		t.Fatalf("box inside: %v", c)
	}
	if c := Containment(a, Box{5, 0, 10, 10}); c != 0.5 {
		t.Fatalf("half inside: %v", c)
	}
	if c := Containment(a, Box{20, 20, 5, 5}); c != 0 {
		t.Fatalf("disjoint: %v", c)
	}
	if c := Containment(a, Box{1, 1, 0, 0}); c != 0 {
		t.Fatalf("empty box: %v", c)
	}
}
