package eval

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// LFWPair is one line of LFW's pairs.txt.
type LFWPair struct {
	Fold  int // 0-based
	Same  bool
	Name1 string
	Num1  int
	Name2 string // equals Name1 for same-person pairs
	Num2  int
}

// Path1 and Path2 are the image paths relative to the dataset root.
func (p LFWPair) Path1() string { return lfwPath(p.Name1, p.Num1) }

// Path2: see Path1.
func (p LFWPair) Path2() string { return lfwPath(p.Name2, p.Num2) }

func lfwPath(name string, n int) string { return fmt.Sprintf("data/%s/%s_%04d.jpg", name, name, n) }

// PairsFile is a parsed pairs.txt.
type PairsFile struct {
	Folds   int // 10 for the standard file
	PerFold int // same-person pairs per fold, and as many different-person pairs (300)
	Pairs   []LFWPair
}

// ParseError locates a problem in pairs.txt.
type ParseError struct {
	Line int // 1-based
	Err  error
}

func (e *ParseError) Error() string { return fmt.Sprintf("eval: pairs.txt line %d: %v", e.Line, e.Err) }
func (e *ParseError) Unwrap() error { return e.Err }

// ErrPairs is wrapped by every ParseError.
var ErrPairs = errors.New("malformed pairs file")

// Bounds that keep a hostile file from allocating without limit; the
// standard file has 10 folds of 300.
const (
	maxFolds   = 100
	maxPerFold = 100000
	maxImageNo = 9999 // the path format has four digits
)

// ParsePairs reads LFW's pairs.txt: a header "folds n", then for each fold
// n same-person lines "name i j" followed by n different-person lines
// "name1 i name2 j". Fields are separated by tabs or spaces; CRLF line ends
// and trailing blank lines are accepted. Names must be usable as a path
// component, image numbers are 1..9999, a same-person pair must name two
// different images and a different-person pair two different people.
func ParsePairs(r io.Reader) (*PairsFile, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<16)
	line := 0
	fail := func(format string, a ...any) error {
		return &ParseError{Line: line, Err: fmt.Errorf("%w: %s", ErrPairs, fmt.Sprintf(format, a...))}
	}
	next := func() (string, bool) {
		if !sc.Scan() {
			return "", false
		}
		line++
		return strings.TrimRight(sc.Text(), "\r"), true
	}
	head, ok := next()
	if !ok {
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("eval: reading pairs.txt: %w", err)
		}
		line = 1
		return nil, fail("empty file")
	}
	hf := strings.Fields(head)
	if len(hf) != 2 {
		return nil, fail("header %q: want \"folds pairs-per-fold\"", head)
	}
	folds, err1 := strconv.Atoi(hf[0])
	per, err2 := strconv.Atoi(hf[1])
	if err1 != nil || err2 != nil || folds < 1 || per < 1 || folds > maxFolds || per > maxPerFold {
		return nil, fail("header %q: want two positive integers (at most %d folds of %d)", head, maxFolds, maxPerFold)
	}
	pf := &PairsFile{Folds: folds, PerFold: per, Pairs: make([]LFWPair, 0, min(folds*2*per, 1<<16))}
	for f := 0; f < folds; f++ {
		for k := 0; k < 2*per; k++ {
			text, ok := next()
			if !ok {
				if err := sc.Err(); err != nil {
					return nil, &ParseError{Line: line + 1, Err: fmt.Errorf("%w: %w", ErrPairs, err)}
				}
				line++
				return nil, fail("file ends in fold %d after %d of %d lines", f+1, k, 2*per)
			}
			same := k < per
			p, err := parsePairLine(text, same)
			if err != nil {
				return nil, fail("fold %d, %s pair: %v", f+1, map[bool]string{true: "same-person", false: "different-person"}[same], err)
			}
			p.Fold = f
			pf.Pairs = append(pf.Pairs, p)
		}
	}
	for {
		text, ok := next()
		if !ok {
			break
		}
		if strings.TrimSpace(text) != "" {
			return nil, fail("unexpected line after %d folds of %d pairs", folds, 2*per)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, &ParseError{Line: line + 1, Err: fmt.Errorf("%w: %w", ErrPairs, err)}
	}
	return pf, nil
}

func parsePairLine(text string, same bool) (LFWPair, error) {
	f := strings.Fields(text)
	var p LFWPair
	var err error
	if same {
		if len(f) != 3 {
			return p, fmt.Errorf("%d fields, want 3 (name i j)", len(f))
		}
		p.Same = true
		p.Name1, p.Name2 = f[0], f[0]
		if p.Num1, err = imageNo(f[1]); err != nil {
			return p, err
		}
		if p.Num2, err = imageNo(f[2]); err != nil {
			return p, err
		}
		if p.Num1 == p.Num2 {
			return p, fmt.Errorf("both images are number %d", p.Num1)
		}
	} else {
		if len(f) != 4 {
			return p, fmt.Errorf("%d fields, want 4 (name1 i name2 j)", len(f))
		}
		p.Name1, p.Name2 = f[0], f[2]
		if p.Num1, err = imageNo(f[1]); err != nil {
			return p, err
		}
		if p.Num2, err = imageNo(f[3]); err != nil {
			return p, err
		}
		if p.Name1 == p.Name2 {
			return p, fmt.Errorf("both images are of %q", p.Name1)
		}
	}
	if err := checkName(p.Name1); err != nil {
		return p, err
	}
	return p, checkName(p.Name2)
}

func imageNo(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxImageNo {
		return 0, fmt.Errorf("image number %q: want an integer 1..%d", s, maxImageNo)
	}
	return n, nil
}

// checkName refuses names that would escape the data folder when used in
// a path (the file comes from outside the program).
func checkName(s string) error {
	if s == "." || s == ".." || strings.ContainsAny(s, "/\\\x00") {
		return fmt.Errorf("name %q cannot be a folder name", s)
	}
	if _, err := strconv.Atoi(s); err == nil {
		return fmt.Errorf("name %q is a number: a field is missing or misplaced", s)
	}
	return nil
}
