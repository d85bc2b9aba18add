package eval

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/facegate/facegate/pkg/testenv"
)

const small = "2\t2\r\n" +
	"Ann_Lee\t1\t2\n" +
	"Bo\t3\t1\n" +
	"Ann_Lee\t1\tBo\t2\n" +
	"Cy_D'Arcy\t4\tBo\t1\n" +
	"Bo\t1 2\n" +
	"Cy_D'Arcy\t1\t2\n" +
	"Bo\t1\tAnn_Lee\t9999\n" +
	"Dee\t1\tBo\t1\n" +
	"\n\n"

func TestParsePairsSmall(t *testing.T) {
	pf, err := ParsePairs(strings.NewReader(small))
	if err != nil {
		t.Fatal(err)
	}
	if pf.Folds != 2 || pf.PerFold != 2 || len(pf.Pairs) != 8 {
		t.Fatalf("%+v", pf)
	}
	p := pf.Pairs[3]
	if p.Fold != 0 || p.Same || p.Name1 != "Cy_D'Arcy" || p.Num1 != 4 || p.Name2 != "Bo" || p.Num2 != 1 {
		t.Errorf("pair 3: %+v", p)
	}
	if p.Path1() != "data/Cy_D'Arcy/Cy_D'Arcy_0004.jpg" || p.Path2() != "data/Bo/Bo_0001.jpg" {
		t.Errorf("paths %q %q", p.Path1(), p.Path2())
	}
	q := pf.Pairs[4]
	if q.Fold != 1 || !q.Same || q.Name2 != "Bo" || q.Num2 != 2 {
		t.Errorf("pair 4: %+v", q)
	}
	if pf.Pairs[6].Path2() != "data/Ann_Lee/Ann_Lee_9999.jpg" {
		t.Errorf("pair 6 path %q", pf.Pairs[6].Path2())
	}
}

func TestParsePairsErrors(t *testing.T) {
	lines := strings.Split(strings.TrimRight(small, "\n"), "\n")
	with := func(i int, s string) string {
		l := append([]string(nil), lines...)
		l[i] = s
		return strings.Join(l, "\n")
	}
	for _, tc := range []struct {
		name, text string
		line       int
		msg        string
	}{
		{"empty", "", 1, "empty file"},
		{"header words", "ten 300\n", 1, "two positive integers"},
		{"header fields", "10\n", 1, "want \"folds"},
		{"header zero", "0 300\n", 1, "two positive integers"},
		{"header huge", "10 999999999\n", 1, "two positive integers"},
		{"short same", with(1, "Ann_Lee\t1"), 2, "2 fields, want 3"},
		{"diff as same", with(2, "Bo\t1\tCy\t2"), 3, "4 fields, want 3"},
		{"same as diff", with(3, "Ann_Lee\t1\t2"), 4, "3 fields, want 4"},
		{"number", with(1, "Ann_Lee\tone\t2"), 2, "image number \"one\""},
		{"zero image", with(1, "Ann_Lee\t0\t2"), 2, "image number \"0\""},
		{"big image", with(1, "Ann_Lee\t10000\t2"), 2, "image number \"10000\""},
		{"same image twice", with(1, "Ann_Lee\t2\t2"), 2, "both images are number 2"},
		{"same person as different", with(3, "Bo\t1\tBo\t2"), 4, "both images are of \"Bo\""},
		{"path escape", with(1, "..\t1\t2"), 2, "cannot be a folder name"},
		{"slash", with(3, "a/b\t1\tBo\t2"), 4, "cannot be a folder name"},
		{"truncated", strings.Join(lines[:6], "\n"), 7, "file ends in fold 2 after 1 of 4 lines"},
		{"extra", small + "Bo\t1\t2\n", 12, "unexpected line"},
	} {
		_, err := ParsePairs(strings.NewReader(tc.text))
		var pe *ParseError
		if !errors.As(err, &pe) || !errors.Is(err, ErrPairs) {
			t.Errorf("%s: got %v, want a ParseError", tc.name, err)
			continue
		}
		if pe.Line != tc.line || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v (line %d), want line %d and %q", tc.name, err, pe.Line, tc.line, tc.msg)
		}
	}
}

// The real LFW pairs.txt: 10 folds of 300+300, and every image it names is
// in the shared aligned set.
func TestParsePairsLFW(t *testing.T) {
	root := testenv.Dataset(t, "lfw_pairs_aligned")
	f, err := os.Open(filepath.Join(root, "pairs.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pf, err := ParsePairs(f)
	if err != nil {
		t.Fatal(err)
	}
	if pf.Folds != 10 || pf.PerFold != 300 || len(pf.Pairs) != 6000 {
		t.Fatalf("%d folds of %d, %d pairs", pf.Folds, pf.PerFold, len(pf.Pairs))
	}
	same, images := 0, map[string]bool{}
	for i, p := range pf.Pairs {
		if p.Fold != i/600 || p.Same != (i%600 < 300) {
			t.Fatalf("pair %d: fold %d same %v", i, p.Fold, p.Same)
		}
		if p.Same {
			same++
		}
		images[p.Path1()], images[p.Path2()] = true, true
	}
	if same != 3000 {
		t.Errorf("%d same-person pairs", same)
	}
	for img := range images {
		if _, err := os.Stat(filepath.Join(root, img)); err != nil {
			t.Errorf("pairs.txt names %s, which is missing: %v", img, err)
		}
	}
	if len(images) != 7701 {
		t.Errorf("%d distinct images, the dataset README says 7701", len(images))
	}
}

func FuzzParsePairs(f *testing.F) {
	f.Add(small)
	f.Add("1 1\nA 1 2\nA 1 B 2\n")
	f.Add("10\t300\n")
	f.Add("1 1\n.. 1 2\nA 1 B 2")
	f.Fuzz(func(t *testing.T, text string) {
		pf, err := ParsePairs(strings.NewReader(text))
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line < 1 {
				t.Fatalf("error without a line: %v", err)
			}
			return
		}
		if len(pf.Pairs) != pf.Folds*2*pf.PerFold {
			t.Fatalf("%d pairs for %d folds of %d", len(pf.Pairs), pf.Folds, pf.PerFold)
		}
		// Writing the pairs back out must parse to the same pairs.
		var b strings.Builder
		fmt.Fprintf(&b, "%d\t%d\n", pf.Folds, pf.PerFold)
		for _, p := range pf.Pairs {
			if p.Same {
				fmt.Fprintf(&b, "%s\t%d\t%d\n", p.Name1, p.Num1, p.Num2)
			} else {
				fmt.Fprintf(&b, "%s\t%d\t%s\t%d\n", p.Name1, p.Num1, p.Name2, p.Num2)
			}
			for _, path := range []string{p.Path1(), p.Path2()} {
				if strings.Count(path, "/") != 2 || strings.Contains(path, "/../") || strings.Contains(path, "/./") {
					t.Fatalf("path %q escapes data/NAME/", path)
				}
			}
		}
		again, err := ParsePairs(strings.NewReader(b.String()))
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		for i := range pf.Pairs {
			if again.Pairs[i] != pf.Pairs[i] {
				t.Fatalf("pair %d: %+v then %+v", i, pf.Pairs[i], again.Pairs[i])
			}
		}
	})
}
