package embedded

import (
	"math"

	"github.com/facegate/facegate/pkg/index"
)

// store holds one collection's templates in flat, row-aligned arrays: row r's
// vector is vecs[r*dim:(r+1)*dim]. Flat arrays are what the scan kernels
// stream through; maps only locate rows. Deletion moves the last row into the
// hole and zeroes the vacated slot, so no deleted vector or id lingers in a
// backing array.
type store struct {
	dim  int
	int8 bool
	n    int

	vecs []float32 // n*dim, unit vectors

	// int8 mode: vecs[r] ≈ qscale[r]*codes[r], with qerr[r] = ||vecs[r] - qscale[r]*codes[r]||
	// and qnorm[r] = ||qscale[r]*codes[r]||, the two terms of the error bound.
	codes  []int8
	qscale []float32
	qerr   []float32
	qnorm  []float32

	ids    []string
	person []int32 // index into persons
	site   []int32 // index into sites, -1 when none
	photo  []string

	byID    map[string]int32
	persons interner
	sites   interner
	// personRows[p] lists the rows of person p: verify scans only these.
	personRows [][]int32
}

func newStore(dim int, int8Mode bool) *store {
	return &store{dim: dim, int8: int8Mode, byID: make(map[string]int32)}
}

// interner maps strings to small reusable integers with reference counts.
// A name whose count drops to zero is forgotten at once: after a person is
// erased, not even their id stays in the map.
type interner struct {
	ids   map[string]int32
	names []string
	refs  []int32
	free  []int32
}

func (in *interner) lookup(s string) (int32, bool) {
	i, ok := in.ids[s]
	return i, ok
}

func (in *interner) acquire(s string) int32 {
	if in.ids == nil {
		in.ids = make(map[string]int32)
	}
	if i, ok := in.ids[s]; ok {
		in.refs[i]++
		return i
	}
	var i int32
	if n := len(in.free); n > 0 {
		i = in.free[n-1]
		in.free = in.free[:n-1]
		in.names[i] = s
		in.refs[i] = 1
	} else {
		i = int32(len(in.names))
		in.names = append(in.names, s)
		in.refs = append(in.refs, 1)
	}
	in.ids[s] = i
	return i
}

// release drops one reference and reports whether the name is now gone.
func (in *interner) release(i int32) bool {
	in.refs[i]--
	if in.refs[i] > 0 {
		return false
	}
	delete(in.ids, in.names[i])
	in.names[i] = ""
	in.free = append(in.free, i)
	return true
}

func (in *interner) bytes() int64 {
	var b int64
	for _, s := range in.names {
		b += int64(len(s))
	}
	// map entry (string header, int32, bucket overhead) plus the slices.
	return b + int64(len(in.ids))*48 + int64(cap(in.names))*16 + int64(cap(in.refs))*4 + int64(cap(in.free))*4
}

func (s *store) row(r int) []float32 { return s.vecs[r*s.dim : (r+1)*s.dim : (r+1)*s.dim] }

func (s *store) info(r int) index.TemplateInfo {
	t := index.TemplateInfo{ID: s.ids[r], Person: s.persons.names[s.person[r]], Photo: s.photo[r]}
	if s.site[r] >= 0 {
		t.Site = s.sites.names[s.site[r]]
	}
	return t
}

// upsert stores one validated, normalised template.
func (s *store) upsert(t index.TemplateInfo, v []float32) {
	if r, ok := s.byID[t.ID]; ok {
		s.detach(int(r))
		s.attach(int(r), t, v)
		return
	}
	r := s.n
	s.n++
	s.vecs = append(s.vecs, v...)
	s.ids = append(s.ids, "")
	s.person = append(s.person, 0)
	s.site = append(s.site, -1)
	s.photo = append(s.photo, "")
	if s.int8 {
		s.codes = append(s.codes, make([]int8, s.dim)...)
		s.qscale = append(s.qscale, 0)
		s.qerr = append(s.qerr, 0)
		s.qnorm = append(s.qnorm, 0)
	}
	s.attach(r, t, v)
}

// attach writes template t into row r, which is detached or new.
func (s *store) attach(r int, t index.TemplateInfo, v []float32) {
	copy(s.row(r), v)
	if s.int8 {
		s.qscale[r], s.qerr[r], s.qnorm[r] = quantize(v, s.codes[r*s.dim:(r+1)*s.dim])
	}
	s.ids[r] = t.ID
	s.photo[r] = t.Photo
	s.byID[t.ID] = int32(r)
	p := s.persons.acquire(t.Person)
	s.person[r] = p
	for int(p) >= len(s.personRows) {
		s.personRows = append(s.personRows, nil)
	}
	s.personRows[p] = append(s.personRows[p], int32(r))
	s.site[r] = -1
	if t.Site != "" {
		s.site[r] = s.sites.acquire(t.Site)
	}
}

// detach removes row r from the person and site tables and the id map,
// leaving the row's arrays for the caller to overwrite or clear.
func (s *store) detach(r int) {
	p := s.person[r]
	rows := s.personRows[p]
	for i, x := range rows {
		if int(x) == r {
			rows[i] = rows[len(rows)-1]
			rows = rows[:len(rows)-1]
			break
		}
	}
	s.personRows[p] = rows
	if s.persons.release(p) {
		s.personRows[p] = nil
	}
	if s.site[r] >= 0 {
		s.sites.release(s.site[r])
	}
	delete(s.byID, s.ids[r])
}

// remove deletes row r: the last row moves into it and the last slot is
// zeroed.
func (s *store) remove(r int) {
	s.detach(r)
	last := s.n - 1
	if r != last {
		copy(s.row(r), s.row(last))
		s.ids[r] = s.ids[last]
		s.photo[r] = s.photo[last]
		s.person[r] = s.person[last]
		s.site[r] = s.site[last]
		if s.int8 {
			copy(s.codes[r*s.dim:(r+1)*s.dim], s.codes[last*s.dim:(last+1)*s.dim])
			s.qscale[r], s.qerr[r], s.qnorm[r] = s.qscale[last], s.qerr[last], s.qnorm[last]
		}
		s.byID[s.ids[r]] = int32(r)
		rows := s.personRows[s.person[r]]
		for i, x := range rows {
			if int(x) == last {
				rows[i] = int32(r)
				break
			}
		}
	}
	clear(s.row(last))
	s.ids[last], s.photo[last] = "", ""
	s.person[last], s.site[last] = 0, -1
	if s.int8 {
		clear(s.codes[last*s.dim : (last+1)*s.dim])
		s.qscale[last], s.qerr[last], s.qnorm[last] = 0, 0, 0
	}
	s.n = last
	s.vecs = s.vecs[:last*s.dim]
	s.ids, s.photo, s.person, s.site = s.ids[:last], s.photo[:last], s.person[:last], s.site[:last]
	if s.int8 {
		s.codes = s.codes[:last*s.dim]
		s.qscale, s.qerr, s.qnorm = s.qscale[:last], s.qerr[:last], s.qnorm[:last]
	}
	s.maybeShrink()
}

// maybeShrink reallocates the arrays when most of their capacity is unused,
// so that a gallery that shrank gives its memory back.
func (s *store) maybeShrink() {
	if cap(s.vecs) < 4096*s.dim || len(s.vecs)*4 > cap(s.vecs) {
		return
	}
	s.vecs = append([]float32(nil), s.vecs...)
	s.ids = append([]string(nil), s.ids...)
	s.photo = append([]string(nil), s.photo...)
	s.person = append([]int32(nil), s.person...)
	s.site = append([]int32(nil), s.site...)
	if s.int8 {
		s.codes = append([]int8(nil), s.codes...)
		s.qscale = append([]float32(nil), s.qscale...)
		s.qerr = append([]float32(nil), s.qerr...)
		s.qnorm = append([]float32(nil), s.qnorm...)
	}
}

// memory estimates the bytes the store holds: array capacities, string
// bytes and a per-entry allowance for maps.
func (s *store) memory() int64 {
	b := int64(cap(s.vecs))*4 + int64(cap(s.codes)) + int64(cap(s.qscale)+cap(s.qerr)+cap(s.qnorm))*4
	b += int64(cap(s.ids)+cap(s.photo))*16 + int64(cap(s.person)+cap(s.site))*4
	for i := 0; i < s.n; i++ {
		b += int64(len(s.ids[i]) + len(s.photo[i]))
	}
	b += int64(len(s.byID)) * 48
	b += s.persons.bytes() + s.sites.bytes()
	b += int64(cap(s.personRows)) * 24
	for _, rows := range s.personRows {
		b += int64(cap(rows)) * 4
	}
	return b
}

// quantize writes the int8 code of v into code and returns the scale, the
// error norm ||v - scale*code|| and the norm of the reconstruction. The
// scale is per vector: max|v_i|/127, so every code uses the full range.
func quantize(v []float32, code []int8) (scale, errNorm, recNorm float32) {
	var m float64
	for _, x := range v {
		m = math.Max(m, math.Abs(float64(x)))
	}
	if m == 0 {
		clear(code)
		return 0, 0, 0
	}
	sc := m / 127
	var e, r float64
	for i, x := range v {
		c := math.Round(float64(x) / sc)
		c = math.Max(-127, math.Min(127, c))
		code[i] = int8(c)
		rec := c * sc
		d := float64(x) - rec
		e += d * d
		r += rec * rec
	}
	return float32(sc), float32(math.Sqrt(e)), float32(math.Sqrt(r))
}
