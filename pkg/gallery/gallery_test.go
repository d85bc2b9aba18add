package gallery_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/facegate/facegate/pkg/gallery"
	"github.com/facegate/facegate/pkg/index"
)

const dim = 8

func unit(r *rand.Rand) []float32 {
	v := make([]float32, dim)
	var s float64
	for i := range v {
		v[i] = float32(r.NormFloat64())
		s += float64(v[i]) * float64(v[i])
	}
	for i := range v {
		v[i] = float32(float64(v[i]) / math.Sqrt(s))
	}
	return v
}

func TestEnrollVerifyIdentifyAcrossReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(1, 2))
	alice1, alice2, bob := unit(r), unit(r), unit(r)
	g, err := gallery.Open(ctx, dir, "m-test", dim)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []struct {
		name  string
		photo string
		v     []float32
	}{{"Alice Ångström", "a1", alice1}, {"Alice Ångström", "a2", alice2}, {"bob", "b1", bob}} {
		if _, err := g.Enroll(ctx, e.name, []byte(e.photo), e.v); err != nil {
			t.Fatal(err)
		}
	}
	if en, err := g.Enroll(ctx, "bob", []byte("b1"), bob); err != nil || !en.Duplicate {
		t.Fatalf("same photo again: %+v %v, want a duplicate no-op", en, err)
	}
	if err := g.Save(ctx); err != nil {
		t.Fatal(err)
	}
	g.Close()

	g, err = gallery.Open(ctx, dir, "m-test", dim)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if p := g.People(); len(p) != 2 || p[0].Name != "Alice Ångström" || len(p[0].Photos) != 2 || len(p[1].Photos) != 1 {
		t.Fatalf("people after reopen: %+v", p)
	}
	// Verify compares against every template of the person: the nearest wins.
	m, err := g.Verify(ctx, "Alice Ångström", alice2)
	if err != nil || m.Distance > 1e-5 {
		t.Fatalf("verify alice with her second photo: %+v %v", m, err)
	}
	m, err = g.Identify(ctx, bob)
	if err != nil || m.Name != "bob" || m.Distance > 1e-5 {
		t.Fatalf("identify bob: %+v %v", m, err)
	}
	want := distance(alice1, bob)
	if m, err := g.Verify(ctx, "bob", alice1); err != nil || math.Abs(m.Distance-want) > 1e-5 {
		t.Fatalf("verify alice as bob: %+v %v, want distance %v", m, err, want)
	}
	if _, err := g.Verify(ctx, "carol", bob); !errors.Is(err, gallery.ErrUnknownPerson) {
		t.Fatalf("unknown person: %v", err)
	}
}

func distance(a, b []float32) float64 {
	var s float64
	for i := range a {
		d := float64(a[i] - b[i])
		s += d * d
	}
	return math.Sqrt(s)
}

func TestForgetRemovesEverything(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(3, 4))
	secret, other := unit(r), unit(r)
	g, err := gallery.Open(ctx, dir, "m-test", dim)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Enroll(ctx, "to-be-forgotten", []byte("photo"), secret); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Enroll(ctx, "stays", []byte("photo2"), other); err != nil {
		t.Fatal(err)
	}
	if err := g.Save(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := g.Forget(ctx, "to-be-forgotten")
	if err != nil || n != 1 {
		t.Fatalf("forget: %d %v", n, err)
	}
	if err := g.Save(ctx); err != nil {
		t.Fatal(err)
	}
	g.Close()
	var raw bytes.Buffer
	binary.Write(&raw, binary.LittleEndian, secret)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("to-be-forgotten")) || bytes.Contains(b, raw.Bytes()[:16]) {
			t.Fatalf("%s still holds the forgotten person's name or encoding bytes", e.Name())
		}
	}
	g, err = gallery.Open(ctx, dir, "m-test", dim)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if m, err := g.Identify(ctx, secret); err != nil || m.Name != "stays" {
		t.Fatalf("after forgetting, identify returns %+v %v", m, err)
	}
}

func TestBadInputs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	g, err := gallery.Open(ctx, dir, "m-test", dim)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Identify(ctx, make([]float32, dim)); !errors.Is(err, gallery.ErrEmpty) {
		t.Fatalf("identify on an empty gallery: %v", err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	for name, bad := range map[string]string{"empty": "", "blank": "   ", "control": "a\x00b", "long": string(make([]byte, 200))} {
		if _, err := g.Enroll(ctx, bad, []byte("p"), unit(r)); !errors.Is(err, gallery.ErrInvalidName) {
			t.Errorf("name %s: %v", name, err)
		}
	}
	if _, err := g.Enroll(ctx, "x", []byte("p"), make([]float32, dim+1)); !errors.Is(err, index.ErrWrongDimension) {
		t.Errorf("wrong dimension: %v", err)
	}
	nan := unit(r)
	nan[0] = float32(math.NaN())
	if _, err := g.Enroll(ctx, "x", []byte("p"), nan); !errors.Is(err, index.ErrInvalidVector) {
		t.Errorf("NaN encoding: %v", err)
	}
	if p := g.People(); len(p) != 0 {
		t.Fatalf("failed enrolments left people behind: %+v", p)
	}
	// A second command on the same directory is refused while the first holds it.
	if _, err := gallery.Open(ctx, dir, "m-test", dim); !errors.Is(err, gallery.ErrLocked) {
		t.Fatalf("concurrent open: %v", err)
	}
	if _, err := g.Enroll(ctx, "x", []byte("p"), unit(r)); err != nil {
		t.Fatal(err)
	}
	if err := g.Save(ctx); err != nil {
		t.Fatal(err)
	}
	g.Close()
	// Another model's encodings are never compared with these.
	if _, err := gallery.Open(ctx, dir, "other-model", dim); !errors.Is(err, gallery.ErrModelMismatch) {
		t.Fatalf("open with another model: %v", err)
	}
	// A corrupt metadata file is reported, not overwritten.
	if err := os.WriteFile(filepath.Join(dir, "gallery.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := gallery.Open(ctx, dir, "m-test", dim); err == nil {
		t.Fatal("corrupt gallery.json accepted")
	}
}

func TestIdentifyFacesUsesEachPersonOnce(t *testing.T) {
	ctx := context.Background()
	g, err := gallery.Open(ctx, t.TempDir(), "m-test", dim)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	e := func(i int) []float32 { v := make([]float32, dim); v[i] = 1; return v }
	mix := func(a, b []float32, wa float64) []float32 {
		v := make([]float32, dim)
		for i := range v {
			v[i] = float32(wa*float64(a[i]) + (1-wa)*float64(b[i]))
		}
		var s float64
		for _, x := range v {
			s += float64(x) * float64(x)
		}
		for i := range v {
			v[i] = float32(float64(v[i]) / math.Sqrt(s))
		}
		return v
	}
	if _, err := g.Enroll(ctx, "alice", []byte("a"), e(0)); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Enroll(ctx, "bob", []byte("b"), e(1)); err != nil {
		t.Fatal(err)
	}
	// Two faces both nearest to alice; the second is also within reach of bob.
	faces := [][]float32{mix(e(0), e(2), 0.95), mix(e(0), e(1), 0.6), e(3)}
	ms, err := g.IdentifyFaces(ctx, faces, 1.0)
	if err != nil {
		t.Fatal(err)
	}
	if ms[0].Name != "alice" || ms[1].Name != "bob" || ms[2].Name != "" {
		t.Fatalf("assignment %+v, want alice, bob, unknown", ms)
	}
	if math.Abs(ms[2].Distance-math.Sqrt2) > 1e-5 {
		t.Fatalf("unknown face distance %v, want its nearest person's %v", ms[2].Distance, math.Sqrt2)
	}
	// With a tight threshold the second face matches nobody rather than alice twice.
	ms, _ = g.IdentifyFaces(ctx, faces, 0.5)
	if ms[0].Name != "alice" || ms[1].Name != "" {
		t.Fatalf("tight threshold: %+v", ms)
	}
}
