// Package index is the matcher's gallery: the enrolled face templates of every
// embedding space, searched by L2 distance.
//
// One interface, two backends: pkg/index/embedded (an in-memory exact index for
// one machine, the default) and pkg/index/milvus (a Milvus deployment, for
// galleries that outgrow one machine). pkg/index/indextest is the contract
// suite both must pass.
//
// # Semantics
//
// A collection holds the templates of one embedding space: one model, one
// dimension. Embeddings of different models are not comparable, so a model
// rollout builds a new collection and switches an alias to it atomically.
//
// Vectors are L2-normalised encodings. The distance is the L2 distance (not
// squared) between two encodings, in [0, 2]; smaller is closer. Callers
// normalise. A vector is accepted when it is finite and its norm is within
// NormTolerance of 1; the index then re-normalises it exactly (in float64), so
// the float32 drift of the caller's normalisation does not reach the
// distances. A vector further from unit length (including the zero vector) is
// rejected with ErrInvalidVector: it is a caller's bug, and silently
// normalising it would hide that.
//
// A template is identified by its ID within a collection. Upserting an ID that
// is present replaces that template, so re-delivery of an enrolment event is
// idempotent. The same ID twice within one Upsert call is ambiguous and is
// rejected with ErrDuplicate; so is an alias whose name is a collection's.
//
// A person has several templates (one per enrolment photo). Identify is the
// nearest person: Result.Persons groups the top-k templates by person, each
// with its minimum distance, so Persons[0] is the nearest person over the
// whole gallery. Verify is SearchPerson: the minimum distance over every
// template of the claimed person.
package index

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
)

// Typed errors. Backends wrap them with what failed; test with errors.Is.
var (
	ErrWrongDimension    = errors.New("wrong vector dimension")
	ErrUnknownCollection = errors.New("unknown collection")
	ErrInvalidVector     = errors.New("invalid vector")
	ErrDuplicate         = errors.New("duplicate id")
	ErrInvalidName       = errors.New("invalid collection or alias name")
	ErrInvalidID         = errors.New("invalid id")
	ErrInvalidArgument   = errors.New("invalid argument")
	ErrNotFound          = errors.New("not found")
	ErrInUse             = errors.New("in use")
	ErrClosed            = errors.New("index closed")
)

// Limits shared by every backend, so that a gallery that works on one works
// on the other.
const (
	// NormTolerance is how far from 1 a vector's norm may be.
	NormTolerance = 1e-3
	// MaxDim bounds a collection's dimension.
	MaxDim = 4096
	// MaxK bounds the number of results of one search.
	MaxK = 1024
	// MaxIDLen bounds template, person, site and photo ids.
	MaxIDLen = 128
	// MaxNameLen bounds collection and alias names.
	MaxNameLen = 63
	// MaxListLimit bounds one page of List.
	MaxListLimit = 10000
	// DefaultListLimit is the page size when ListOptions.Limit is 0.
	DefaultListLimit = 1000
)

// Collection is one embedding space. Name is derived from the model id (for
// example "dlib-resnet34-128"): lower-case letters, digits and '-', starting
// with a letter (see ValidateName).
type Collection struct {
	Name string `json:"name"`
	Dim  int    `json:"dim"`
}

// TemplateInfo is a template without its vector.
type TemplateInfo struct {
	ID     string `json:"id"`
	Person string `json:"person"`
	// Site is where the person was enrolled; "" when the template belongs to
	// no site in particular.
	Site string `json:"site,omitempty"`
	// Photo is the enrolment photo the template was computed from.
	Photo string `json:"photo,omitempty"`
}

// Template is one enrolled encoding.
type Template struct {
	TemplateInfo
	Vector []float32
}

// SearchOptions shape a search.
type SearchOptions struct {
	// K is how many templates to return, 1..MaxK.
	K int
	// Site, when set, restricts the search to templates of that site.
	Site string
	// Person, when set, restricts the search to that person's templates.
	Person string
}

// Hit is one template found by a search.
type Hit struct {
	TemplateInfo
	// Distance is the L2 distance between the query and the template.
	Distance float32 `json:"distance"`
}

// PersonHit is the best template of one person.
type PersonHit struct {
	Person   string  `json:"person"`
	Template string  `json:"template"`
	Distance float32 `json:"distance"`
}

// Result is the answer to one query: the top-k templates, nearest first, and
// the persons among them, nearest first, each with its minimum distance.
type Result struct {
	Hits    []Hit       `json:"hits"`
	Persons []PersonHit `json:"persons"`
}

// ListOptions select and page templates. Pages are in template-id order:
// pass the last ID of one page as After to get the next.
type ListOptions struct {
	Person string
	Site   string
	After  string
	// Limit is the page size, 1..MaxListLimit; 0 means DefaultListLimit.
	Limit int
}

// Index is a gallery backend. Every method is safe for concurrent use.
//
// Wherever a collection is named, an alias may be given instead; it is
// resolved when the call is made.
type Index interface {
	// CreateCollection creates an embedding space. Creating one that exists
	// with the same dimension is a no-op; with another dimension it fails
	// with ErrWrongDimension.
	CreateCollection(ctx context.Context, c Collection) error
	// DropCollection removes a collection and every template in it. It fails
	// with ErrInUse while an alias points at it.
	DropCollection(ctx context.Context, name string) error
	// Collections lists the collections, by name.
	Collections(ctx context.Context) ([]Collection, error)

	// SwitchAlias points alias at collection, creating the alias if needed.
	// The switch is atomic: a search names either the old or the new
	// collection, never a mixture.
	SwitchAlias(ctx context.Context, alias, collection string) error
	// ResolveAlias returns the collection alias points at, or ErrNotFound.
	ResolveAlias(ctx context.Context, alias string) (string, error)
	// DropAlias removes an alias (not its collection).
	DropAlias(ctx context.Context, alias string) error

	// Upsert adds templates, replacing any with the same ID. Either every
	// template is valid and the call applies them all, or it fails and
	// applies none.
	Upsert(ctx context.Context, collection string, templates []Template) error
	// DeleteTemplates removes templates by ID, returning how many existed.
	DeleteTemplates(ctx context.Context, collection string, ids []string) (int, error)
	// DeletePerson removes every template of a person from one collection,
	// returning how many there were.
	DeletePerson(ctx context.Context, collection, person string) (int, error)
	// ErasePerson removes every template of a person from every collection:
	// the erasure a deletion request requires.
	ErasePerson(ctx context.Context, person string) (int, error)

	// Search finds the nearest templates to one query vector.
	Search(ctx context.Context, collection string, query []float32, opts SearchOptions) (Result, error)
	// SearchBatch runs several queries at once; results are in query order.
	SearchBatch(ctx context.Context, collection string, queries [][]float32, opts SearchOptions) ([]Result, error)
	// SearchPerson is verify: the nearest template of one person, or
	// ErrNotFound when the person has no template in the collection.
	SearchPerson(ctx context.Context, collection, person string, query []float32) (PersonHit, error)

	// Count is the number of templates in a collection.
	Count(ctx context.Context, collection string) (int, error)
	// List pages through templates without their vectors.
	List(ctx context.Context, collection string, opts ListOptions) ([]TemplateInfo, error)

	// Close releases the backend. Later calls fail with ErrClosed.
	Close() error
}

// ValidateName checks a collection or alias name: 1..MaxNameLen characters,
// lower-case ASCII letters, digits and '-', starting with a letter. The
// alphabet is small on purpose: it maps one-to-one onto Milvus's collection
// names ('-' becomes '_') and can never need quoting.
func ValidateName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("%w: %q: length must be 1..%d", ErrInvalidName, name, MaxNameLen)
	}
	if name[0] < 'a' || name[0] > 'z' {
		return fmt.Errorf("%w: %q: must start with a lower-case letter", ErrInvalidName, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%w: %q: only a-z, 0-9 and '-' are allowed", ErrInvalidName, name)
		}
	}
	return nil
}

// ValidateID checks a template, person, site or photo id: 1..MaxIDLen
// characters from A-Z a-z 0-9 and . _ : @ = + / -. Ids end up inside Milvus
// filter expressions; an alphabet without quotes, backslashes or spaces
// rules out injection without any escaping.
func ValidateID(kind, id string) error {
	if id == "" || len(id) > MaxIDLen {
		return fmt.Errorf("%w: %s %q: length must be 1..%d", ErrInvalidID, kind, id, MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == ':' || c == '@' || c == '=' || c == '+' || c == '/' || c == '-') {
			return fmt.Errorf("%w: %s %q: character %q is not allowed", ErrInvalidID, kind, id, c)
		}
	}
	return nil
}

// ValidateCollection checks a collection's name and dimension.
func ValidateCollection(c Collection) error {
	if err := ValidateName(c.Name); err != nil {
		return err
	}
	if c.Dim < 1 || c.Dim > MaxDim {
		return fmt.Errorf("%w: collection %q: dimension %d outside 1..%d", ErrWrongDimension, c.Name, c.Dim, MaxDim)
	}
	return nil
}

// ValidateInfo checks a template's ids. Site and Photo may be empty.
func ValidateInfo(t TemplateInfo) error {
	if err := ValidateID("template", t.ID); err != nil {
		return err
	}
	if err := ValidateID("person", t.Person); err != nil {
		return err
	}
	if t.Site != "" {
		if err := ValidateID("site", t.Site); err != nil {
			return err
		}
	}
	if t.Photo != "" {
		if err := ValidateID("photo", t.Photo); err != nil {
			return err
		}
	}
	return nil
}

// ValidateTemplates checks a batch for Upsert: ids, vectors, and no ID twice.
// It returns the vectors normalised (new slices; the caller's are untouched).
func ValidateTemplates(dim int, ts []Template) ([][]float32, error) {
	seen := make(map[string]struct{}, len(ts))
	out := make([][]float32, len(ts))
	for i, t := range ts {
		if err := ValidateInfo(t.TemplateInfo); err != nil {
			return nil, fmt.Errorf("template %d: %w", i, err)
		}
		if _, dup := seen[t.ID]; dup {
			return nil, fmt.Errorf("template %d: %w: template %q appears twice in one upsert", i, ErrDuplicate, t.ID)
		}
		seen[t.ID] = struct{}{}
		v, err := Normalize(dim, t.Vector)
		if err != nil {
			return nil, fmt.Errorf("template %q: %w", t.ID, err)
		}
		out[i] = v
	}
	return out, nil
}

// ValidateSearch checks search options. Empty Site and Person mean no filter.
func ValidateSearch(o SearchOptions) error {
	if o.K < 1 || o.K > MaxK {
		return fmt.Errorf("%w: k=%d outside 1..%d", ErrInvalidArgument, o.K, MaxK)
	}
	if o.Site != "" {
		if err := ValidateID("site", o.Site); err != nil {
			return err
		}
	}
	if o.Person != "" {
		if err := ValidateID("person", o.Person); err != nil {
			return err
		}
	}
	return nil
}

// ValidateList checks list options and returns the effective page size.
func ValidateList(o ListOptions) (int, error) {
	limit := o.Limit
	if limit == 0 {
		limit = DefaultListLimit
	}
	if limit < 1 || limit > MaxListLimit {
		return 0, fmt.Errorf("%w: list limit %d outside 1..%d", ErrInvalidArgument, o.Limit, MaxListLimit)
	}
	for _, f := range []struct{ kind, v string }{{"person", o.Person}, {"site", o.Site}, {"template", o.After}} {
		if f.v != "" {
			if err := ValidateID(f.kind, f.v); err != nil {
				return 0, err
			}
		}
	}
	return limit, nil
}

// CheckVector checks a vector: its dimension, finite values and a norm
// within NormTolerance of 1. It returns the norm.
func CheckVector(dim int, v []float32) (float64, error) {
	if len(v) != dim {
		return 0, fmt.Errorf("%w: got %d values, collection has %d", ErrWrongDimension, len(v), dim)
	}
	var ss float64
	for i, x := range v {
		f := float64(x)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, fmt.Errorf("%w: value %d is %v", ErrInvalidVector, i, x)
		}
		ss += f * f
	}
	norm := math.Sqrt(ss)
	if math.Abs(norm-1) > NormTolerance {
		return 0, fmt.Errorf("%w: norm %.6g is not 1 (callers L2-normalise encodings)", ErrInvalidVector, norm)
	}
	return norm, nil
}

// Normalize checks a vector (see CheckVector) and returns a unit-length copy.
func Normalize(dim int, v []float32) ([]float32, error) {
	norm, err := CheckVector(dim, v)
	if err != nil {
		return nil, err
	}
	out := make([]float32, dim)
	for i, x := range v {
		out[i] = float32(float64(x) / norm)
	}
	return out, nil
}

// L2 is the L2 distance between two vectors of equal length, summed in
// float64 over the differences. Unlike sqrt(2-2a.b), it keeps its precision
// for near-identical vectors, where the match decision is made.
func L2(a, b []float32) float32 {
	b = b[:len(a)]
	var s float64
	for i, x := range a {
		d := float64(x) - float64(b[i])
		s += d * d
	}
	return float32(math.Sqrt(s))
}

// DistanceFromDot converts an inner product of two unit vectors into their
// L2 distance. Only for backends that return inner products: near a match it
// loses precision (cancellation in 2-2dot), which L2 does not.
func DistanceFromDot(dot float32) float32 {
	return float32(math.Sqrt(math.Max(0, 2-2*float64(dot))))
}

// SortHits orders hits nearest first, ties by template id, so that results
// are deterministic.
func SortHits(hits []Hit) {
	sort.Slice(hits, func(i, j int) bool {
		if hits[i].Distance != hits[j].Distance {
			return hits[i].Distance < hits[j].Distance
		}
		return hits[i].ID < hits[j].ID
	})
}

// GroupByPerson turns hits sorted nearest first into the persons among them,
// nearest first, each with its best template.
func GroupByPerson(hits []Hit) []PersonHit {
	out := make([]PersonHit, 0, len(hits))
	seen := make(map[string]struct{}, len(hits))
	for _, h := range hits {
		if _, ok := seen[h.Person]; ok {
			continue
		}
		seen[h.Person] = struct{}{}
		out = append(out, PersonHit{Person: h.Person, Template: h.ID, Distance: h.Distance})
	}
	return out
}
