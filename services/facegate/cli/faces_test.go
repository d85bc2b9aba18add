package cli_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"image"
	"image/draw"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/facegate/facegate/pkg/testenv"
	"github.com/facegate/facegate/services/facegate/cli"
)

type run struct {
	code           int
	stdout, stderr string
}

func facegate(t *testing.T, args ...string) run {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Execute(context.Background(), args, &out, &errb)
	return run{code, out.String(), errb.String()}
}

func crop(t *testing.T, who string, n int) string {
	t.Helper()
	return testenv.Dataset(t, filepath.Join("face-api.js", "examples", "images", who, who+string(rune('0'+n))+".png"))
}

func decodeJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("stdout is not one JSON object: %q: %v", s, err)
	}
	return m
}

func TestEnrollVerifyIdentifyForget(t *testing.T) {
	testenv.Models(t)
	db := t.TempDir()
	for _, who := range []string{"amy", "howard", "leonard"} {
		r := facegate(t, "enroll", "--db", db, "--name", who, crop(t, who, 1), crop(t, who, 2))
		if r.code != 0 {
			t.Fatalf("enroll %s: exit %d: %s", who, r.code, r.stderr)
		}
	}
	// Re-enrolling the same photo is a no-op, not a second template.
	if r := facegate(t, "enroll", "--db", db, "--name", "amy", crop(t, "amy", 1)); r.code != 0 || !strings.Contains(r.stdout, `"duplicate": true`) {
		t.Fatalf("re-enrol: %d %s %s", r.code, r.stdout, r.stderr)
	}
	r := facegate(t, "people", "--db", db, "--json")
	var people []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &people); err != nil || len(people) != 3 || people[0]["name"] != "amy" || people[0]["photos"].(float64) != 2 {
		t.Fatalf("people: %s %v", r.stdout, err)
	}

	r = facegate(t, "verify", "--db", db, "--as", "amy", crop(t, "amy", 3))
	v := decodeJSON(t, r.stdout)
	if r.code != 0 || v["match"] != true || v["identity"] != "amy" || v["model"] != "dlib-resnet34-128" || !strings.Contains(r.stderr, "It's amy, welcome in!") {
		t.Fatalf("verify amy as amy: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if d, th := v["distance"].(float64), v["threshold"].(float64); !(d < th) {
		t.Fatalf("match with distance %v >= threshold %v", d, th)
	}
	r = facegate(t, "verify", "--db", db, "--as", "amy", crop(t, "howard", 3))
	v = decodeJSON(t, r.stdout)
	if r.code != 0 || v["match"] != false || !strings.Contains(r.stderr, "It's not amy, please go away") {
		t.Fatalf("verify howard as amy: %d %s %s", r.code, r.stdout, r.stderr)
	}

	r = facegate(t, "identify", "--db", db, crop(t, "leonard", 4))
	v = decodeJSON(t, r.stdout)
	if r.code != 0 || v["identity"] != "leonard" || v["faces"].(float64) != 1 || !strings.Contains(r.stderr, "it's leonard, the distance is") {
		t.Fatalf("identify leonard: %d %s %s", r.code, r.stdout, r.stderr)
	}
	r = facegate(t, "identify", "--db", db, crop(t, "penny", 1))
	v = decodeJSON(t, r.stdout)
	if r.code != 0 || v["identity"] != nil || !strings.Contains(r.stderr, "Not in the database.") {
		t.Fatalf("identify a stranger: %d %s %s", r.code, r.stdout, r.stderr)
	}

	if r := facegate(t, "forget", "--db", db, "--name", "amy"); r.code != 0 {
		t.Fatalf("forget: %d %s", r.code, r.stderr)
	}
	if r := facegate(t, "verify", "--db", db, "--as", "amy", crop(t, "amy", 3)); r.code != cli.ExitUsage || !strings.Contains(r.stderr, "not enrolled") {
		t.Fatalf("verify a forgotten person: %d %s", r.code, r.stderr)
	}
	r = facegate(t, "identify", "--db", db, crop(t, "amy", 1))
	if v := decodeJSON(t, r.stdout); v["identity"] == "amy" {
		t.Fatalf("a forgotten person was identified: %s", r.stdout)
	}
	for _, f := range []string{"gallery.json", "index.snap"} {
		b, err := os.ReadFile(filepath.Join(db, f))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(`"amy"`)) {
			t.Fatalf("%s still names the forgotten person", f)
		}
	}
}

func TestBadInputs(t *testing.T) {
	testenv.Models(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "db")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	real, err := os.ReadFile(testenv.Dataset(t, "lfw_pairs_aligned/data/Aaron_Peirsol/Aaron_Peirsol_0001.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		file string
		code int
		want string
	}{
		{"empty file", write("empty.jpg", nil), cli.ExitUsage, "empty"},
		{"truncated JPEG", write("trunc.jpg", real[:len(real)/2]), cli.ExitUsage, "corrupt"},
		{"text named .jpg", write("text.jpg", []byte("hello, this is not an image\n")), cli.ExitUsage, "unsupported"},
		{"50000x50000 header", write("bomb.png", pngHeader(50000, 50000)), cli.ExitUsage, "too large"},
		{"missing file", filepath.Join(dir, "absent.jpg"), cli.ExitUsage, "absent.jpg"},
		{"no face", testenv.Dataset(t, "detector/nonface/skimage_brick.png"), cli.ExitNoFace, "no face"},
	}
	// Empty gallery first: identify on a real face says so.
	if r := facegate(t, "identify", "--db", db, crop(t, "amy", 1)); r.code != cli.ExitUsage || !strings.Contains(r.stderr, "nobody enrolled") {
		t.Fatalf("identify on an empty gallery: %d %s", r.code, r.stderr)
	}
	if r := facegate(t, "enroll", "--db", db, "--name", "amy", crop(t, "amy", 1)); r.code != 0 {
		t.Fatalf("enroll: %s", r.stderr)
	}
	for _, c := range cases {
		for _, args := range [][]string{
			{"identify", "--db", db, c.file},
			{"verify", "--db", db, "--as", "amy", c.file},
			{"enroll", "--db", db, "--name", "bob", c.file},
		} {
			r := facegate(t, args...)
			if r.code != c.code || !strings.Contains(strings.ToLower(r.stderr), c.want) {
				t.Errorf("%s: %s: exit %d, stderr %q; want exit %d mentioning %q", c.name, args[0], r.code, r.stderr, c.code, c.want)
			}
			if r.stdout != "" {
				t.Errorf("%s: %s printed %q on stdout for a failure", c.name, args[0], r.stdout)
			}
		}
	}
	if r := facegate(t, "verify", "--db", db, "--as", "nobody", crop(t, "amy", 2)); r.code != cli.ExitUsage || !strings.Contains(r.stderr, `"nobody" is not enrolled`) {
		t.Errorf("unknown name in verify: %d %s", r.code, r.stderr)
	}
	if r := facegate(t, "verify", "--as", "amy", crop(t, "amy", 2)); r.code != cli.ExitUsage || !strings.Contains(r.stderr, "db") {
		t.Errorf("missing --db: %d %s", r.code, r.stderr)
	}
	if r := facegate(t, "people", "--db", db); r.code != 0 || strings.Contains(r.stdout, "bob") {
		t.Errorf("a failed enrolment left a person behind: %s", r.stdout)
	}
}

func TestManyFaces(t *testing.T) {
	testenv.Models(t)
	dir := t.TempDir()
	db := filepath.Join(dir, "db")
	// 30 real faces in one picture: six face-api.js people, five photos each, on a grid.
	var tiles []image.Image
	for _, who := range []string{"amy", "bernadette", "howard", "leonard", "penny", "raj"} {
		for n := 1; n <= 5; n++ {
			f, err := os.Open(crop(t, who, n))
			if err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			tiles = append(tiles, img)
		}
	}
	const side = 150
	canvas := image.NewRGBA(image.Rect(0, 0, 6*side, 5*side))
	for i, tile := range tiles {
		x, y := (i%6)*side, (i/6)*side
		draw.Draw(canvas, image.Rect(x, y, x+side, y+side), tile, tile.Bounds().Min, draw.Src)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, canvas); err != nil {
		t.Fatal(err)
	}
	group := filepath.Join(dir, "thirty.png")
	if err := os.WriteFile(group, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	r := facegate(t, "enroll", "--db", db, "--name", "crowd", group)
	if r.code != cli.ExitUsage || !strings.Contains(r.stderr, "faces found") {
		t.Fatalf("enrolling a crowd photo: %d %s", r.code, r.stderr)
	}
	if r := facegate(t, "enroll", "--db", db, "--name", "amy", crop(t, "amy", 1)); r.code != 0 {
		t.Fatal(r.stderr)
	}
	r = facegate(t, "identify", "--db", db, group)
	if r.code != 0 {
		t.Fatalf("identify in a crowd: %d %s", r.code, r.stderr)
	}
	v := decodeJSON(t, r.stdout)
	if n := v["faces"].(float64); n < 15 || n > 20 {
		t.Fatalf("faces = %v: want most of the 30 found and at most the detector's bound of 20", n)
	}
}

// pngHeader is a PNG signature and IHDR chunk announcing w x h, with no pixels:
// a decoder that trusted it would allocate w*h*4 bytes.
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.Write([]byte("\x89PNG\r\n\x1a\n"))
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6 // 8-bit RGBA
	chunk := append([]byte("IHDR"), ihdr...)
	binary.Write(&b, binary.BigEndian, uint32(13))
	b.Write(chunk)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}
