// Package gallery is the stand-alone store behind the facegate CLI: people,
// their enrolment templates and the embedded index, kept in one directory.
// The seed semantics live here: several templates per person, the L2
// distance between normalised encodings, and a match when distance < threshold.
//
// Layout of the directory (created 0700: it holds biometric data):
//
//	gallery.json  people by name, with random person ids and per-photo records
//	index.snap    the embedded index snapshot (the encodings)
//	.lock         an advisory lock so two commands never write at once
//
// Enrolment photos are not kept, only their sha256 (so a re-enrolled photo is
// recognised); deleting a person rewrites both files without them.
package gallery

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/facegate/facegate/pkg/atomicfile"
	"github.com/facegate/facegate/pkg/index"
	"github.com/facegate/facegate/pkg/index/embedded"
)

// Errors callers test for.
var (
	ErrUnknownPerson = errors.New("unknown person")
	ErrEmpty         = errors.New("the gallery is empty")
	ErrModelMismatch = errors.New("gallery was built with another model")
	ErrInvalidName   = errors.New("invalid name")
	ErrLocked        = errors.New("gallery is in use by another command")
)

const (
	metaFile  = "gallery.json"
	snapFile  = "index.snap"
	lockFile  = ".lock"
	schema    = 1
	maxName   = 128
	searchTop = 64
)

// Photo is one enrolment photo of a person.
type Photo struct {
	ID       string    `json:"id"`
	SHA256   string    `json:"sha256"`
	Template string    `json:"template"`
	Enrolled time.Time `json:"enrolled"`
}

// Person is one enrolled person.
type Person struct {
	Name   string  `json:"name"`
	ID     string  `json:"id"`
	Photos []Photo `json:"photos"`
}

type meta struct {
	Schema int                `json:"schema"`
	Model  string             `json:"model"`
	Dim    int                `json:"dim"`
	People map[string]*Person `json:"people"`
}

// Gallery is an open gallery directory. Close releases its lock.
type Gallery struct {
	dir  string
	lock *os.File
	m    meta
	idx  *embedded.Index
	coll string
}

// Open opens (creating if needed) the gallery in dir for encodings of the
// given model and dimension.
func Open(ctx context.Context, dir, model string, dim int) (*Gallery, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("gallery: create %s: %w", dir, err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("gallery: lock %s: %w", dir, err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		return nil, fmt.Errorf("gallery: %s: %w", dir, ErrLocked)
	}
	g := &Gallery{dir: dir, lock: lf, coll: collectionName(model)}
	fail := func(err error) (*Gallery, error) {
		g.Close()
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, metaFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		g.m = meta{Schema: schema, Model: model, Dim: dim, People: map[string]*Person{}}
	case err != nil:
		return fail(fmt.Errorf("gallery: read %s: %w", metaFile, err))
	default:
		if err := json.Unmarshal(b, &g.m); err != nil {
			return fail(fmt.Errorf("gallery: %s is corrupt: %w", filepath.Join(dir, metaFile), err))
		}
		if g.m.Schema != schema {
			return fail(fmt.Errorf("gallery: %s has schema %d, this facegate reads %d", dir, g.m.Schema, schema))
		}
		if g.m.Model != model || g.m.Dim != dim {
			return fail(fmt.Errorf("gallery: %s holds %s encodings (%d-d), not %s (%d-d): %w; encodings of two models are never compared", dir, g.m.Model, g.m.Dim, model, dim, ErrModelMismatch))
		}
		if g.m.People == nil {
			g.m.People = map[string]*Person{}
		}
	}
	snap := filepath.Join(dir, snapFile)
	if _, err := os.Stat(snap); err == nil {
		idx, _, err := embedded.LoadSnapshot(ctx, snap, embedded.Options{})
		if err != nil {
			return fail(fmt.Errorf("gallery: %w", err))
		}
		g.idx = idx
	} else {
		if g.idx, err = embedded.New(embedded.Options{}); err != nil {
			return fail(err)
		}
	}
	if err := g.idx.CreateCollection(ctx, index.Collection{Name: g.coll, Dim: dim}); err != nil {
		return fail(fmt.Errorf("gallery: %w", err))
	}
	if err := g.check(ctx); err != nil {
		return fail(err)
	}
	return g, nil
}

// collectionName maps a model id to an index collection name.
func collectionName(model string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(model) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		}
	}
	s := b.String()
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		s = "m" + s
	}
	if len(s) > index.MaxNameLen {
		s = s[:index.MaxNameLen]
	}
	return s
}

// check cross-checks the metadata against the index, so a half-written
// directory is reported rather than silently answering wrong.
func (g *Gallery) check(ctx context.Context) error {
	want := 0
	for _, p := range g.m.People {
		want += len(p.Photos)
	}
	n, err := g.idx.Count(ctx, g.coll)
	if err != nil {
		return fmt.Errorf("gallery: %w", err)
	}
	if n != want {
		return fmt.Errorf("gallery: %s is inconsistent: %s lists %d templates, %s holds %d", g.dir, metaFile, want, snapFile, n)
	}
	return nil
}

// Close releases the lock.
func (g *Gallery) Close() error {
	var errs []error
	if g.idx != nil {
		errs = append(errs, g.idx.Close())
	}
	if g.lock != nil {
		errs = append(errs, g.lock.Close())
	}
	return errors.Join(errs...)
}

// Model is the encoder id the gallery holds encodings of.
func (g *Gallery) Model() string { return g.m.Model }

// ValidateName checks a person's display name.
func ValidateName(name string) error {
	if strings.TrimSpace(name) == "" {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(name) > maxName {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidName, maxName)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: %q contains a control character", ErrInvalidName, name)
		}
	}
	return nil
}

// Enrolled reports what Enroll did with one photo.
type Enrolled struct {
	Photo     string `json:"photo"`
	Duplicate bool   `json:"duplicate"` // the same photo bytes were already enrolled for this person
}

// Enroll adds one template for name from a photo's encoding. The same photo
// (by sha256) enrolled twice for a person is a no-op, so re-running an
// enrolment script never duplicates templates.
func (g *Gallery) Enroll(ctx context.Context, name string, photo []byte, enc []float32) (Enrolled, error) {
	sum := sha256.Sum256(photo)
	return g.EnrollKey(ctx, name, hex.EncodeToString(sum[:]), enc)
}

// EnrollKey is Enroll with the photo's identity given by the caller: for a
// group photo, where each face is a different person's template, the key is
// the photo's hash plus the face.
func (g *Gallery) EnrollKey(ctx context.Context, name, key string, enc []float32) (Enrolled, error) {
	if err := ValidateName(name); err != nil {
		return Enrolled{}, fmt.Errorf("gallery: %w", err)
	}
	if len(enc) != g.m.Dim {
		return Enrolled{}, fmt.Errorf("gallery: encoding has %d values, gallery holds %d-d: %w", len(enc), g.m.Dim, index.ErrWrongDimension)
	}
	h := key
	p := g.m.People[name]
	if p != nil {
		for _, ph := range p.Photos {
			if ph.SHA256 == h {
				return Enrolled{Photo: ph.ID, Duplicate: true}, nil
			}
		}
	} else {
		p = &Person{Name: name, ID: "p-" + randomHex(8)}
	}
	ph := Photo{ID: "ph-" + randomHex(8), SHA256: h, Enrolled: time.Now().UTC()}
	ph.Template = p.ID + "/" + ph.ID
	t := index.Template{TemplateInfo: index.TemplateInfo{ID: ph.Template, Person: p.ID, Photo: ph.ID}, Vector: enc}
	if err := g.idx.Upsert(ctx, g.coll, []index.Template{t}); err != nil {
		return Enrolled{}, fmt.Errorf("gallery: %w", err)
	}
	p.Photos = append(p.Photos, ph)
	g.m.People[name] = p
	return Enrolled{Photo: ph.ID}, nil
}

// Match is the outcome of a comparison.
type Match struct {
	Name     string  `json:"name"`
	Distance float64 `json:"distance"`
}

// Verify returns the distance between enc and the nearest of name's templates.
func (g *Gallery) Verify(ctx context.Context, name string, enc []float32) (Match, error) {
	p := g.m.People[name]
	if p == nil {
		return Match{}, fmt.Errorf("gallery: %q: %w", name, ErrUnknownPerson)
	}
	hit, err := g.idx.SearchPerson(ctx, g.coll, p.ID, enc)
	if err != nil {
		return Match{}, fmt.Errorf("gallery: %w", err)
	}
	return Match{Name: name, Distance: float64(hit.Distance)}, nil
}

// Identify returns the nearest person (over all of each person's templates).
func (g *Gallery) Identify(ctx context.Context, enc []float32) (Match, error) {
	if len(g.m.People) == 0 {
		return Match{}, fmt.Errorf("gallery: %w", ErrEmpty)
	}
	res, err := g.idx.Search(ctx, g.coll, enc, index.SearchOptions{K: 1})
	if err != nil {
		return Match{}, fmt.Errorf("gallery: %w", err)
	}
	if len(res.Persons) == 0 {
		return Match{}, fmt.Errorf("gallery: %w", ErrEmpty)
	}
	best := res.Persons[0]
	for name, p := range g.m.People {
		if p.ID == best.Person {
			return Match{Name: name, Distance: float64(best.Distance)}, nil
		}
	}
	return Match{}, fmt.Errorf("gallery: index holds person %s that %s does not list", best.Person, metaFile)
}

// People lists enrolled people by name.
func (g *Gallery) People() []Person {
	out := make([]Person, 0, len(g.m.People))
	for _, p := range g.m.People {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Forget deletes a person: every template from the index and the person from
// the metadata. Save must follow for the deletion to reach the disk, where
// the new snapshot replaces the old file whole.
func (g *Gallery) Forget(ctx context.Context, name string) (int, error) {
	p := g.m.People[name]
	if p == nil {
		return 0, fmt.Errorf("gallery: %q: %w", name, ErrUnknownPerson)
	}
	n, err := g.idx.DeletePerson(ctx, g.coll, p.ID)
	if err != nil {
		return 0, fmt.Errorf("gallery: %w", err)
	}
	delete(g.m.People, name)
	return n, nil
}

// Save writes the snapshot, then the metadata, each atomically.
func (g *Gallery) Save(ctx context.Context) error {
	if err := g.idx.WriteSnapshot(ctx, filepath.Join(g.dir, snapFile), 0); err != nil {
		return fmt.Errorf("gallery: %w", err)
	}
	b, err := json.MarshalIndent(g.m, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(g.dir, metaFile), b, 0o600); err != nil {
		return fmt.Errorf("gallery: %w", err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("gallery: system randomness failed: %v", err))
	}
	return hex.EncodeToString(b)
}

// IdentifyFaces identifies every face of one frame. A person is in a frame at
// most once, so the (face, person) pairs closer than threshold are assigned
// greedily, nearest first, each face and each person used once: two faces
// both nearest to one enrolled person no longer both open the door as them.
// A face left without a person gets Name "" and the distance to its nearest
// person.
func (g *Gallery) IdentifyFaces(ctx context.Context, encs [][]float32, threshold float64) ([]Match, error) {
	if len(g.m.People) == 0 {
		return nil, fmt.Errorf("gallery: %w", ErrEmpty)
	}
	names := make(map[string]string, len(g.m.People))
	for name, p := range g.m.People {
		names[p.ID] = name
	}
	type cand struct {
		face   int
		person string
		dist   float64
	}
	var cands []cand
	out := make([]Match, len(encs))
	for i, enc := range encs {
		res, err := g.idx.Search(ctx, g.coll, enc, index.SearchOptions{K: searchTop})
		if err != nil {
			return nil, fmt.Errorf("gallery: %w", err)
		}
		out[i].Distance = 2
		for j, ph := range res.Persons {
			d := float64(ph.Distance)
			if j == 0 {
				out[i].Distance = d
			}
			if d < threshold {
				cands = append(cands, cand{i, ph.Person, d})
			}
		}
	}
	sort.Slice(cands, func(a, b int) bool { return cands[a].dist < cands[b].dist })
	faceDone, personDone := make([]bool, len(encs)), map[string]bool{}
	for _, c := range cands {
		if faceDone[c.face] || personDone[c.person] {
			continue
		}
		faceDone[c.face], personDone[c.person] = true, true
		out[c.face] = Match{Name: names[c.person], Distance: c.dist}
	}
	return out, nil
}
