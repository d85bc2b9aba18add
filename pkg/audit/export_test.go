package audit

import (
	"bytes"
	"context"
	"encoding/csv"
	"os"
	"testing"
)

func TestExportWholeLogIsTheLog(t *testing.T) {
	fx := newFixture(t)
	data := fx.writeLog(t, 23, 10)
	var out bytes.Buffer
	if err := Export(&out, bytes.NewReader(data), 0, 0, FormatJSONL); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), data) {
		t.Fatal("a full JSONL export differs from the log")
	}
}

func TestExportRangeVerifiesOnItsOwn(t *testing.T) {
	fx := newFixture(t)
	data := fx.writeLog(t, 30, 10)
	ls := lines(data)
	var out bytes.Buffer
	if err := Export(&out, bytes.NewReader(data), 12, 17, FormatJSONL); err != nil {
		t.Fatal(err)
	}
	el := lines(out.Bytes())
	// Records 12..17, links 18..20, checkpoint 20.
	if len(el) != 10 {
		t.Fatalf("export has %d lines:\n%s", len(el), out.Bytes())
	}
	for i := 0; i < 6; i++ {
		if !bytes.Equal(el[i], ls[lineOf(t, ls, uint64(12+i), false)]) {
			t.Fatalf("export line %d is not record %d", i, 12+i)
		}
	}
	for i, seq := range []uint64{18, 19, 20} {
		e, err := parseLine(bytes.TrimSuffix(el[6+i], []byte{'\n'}))
		if err != nil || e.typ != entLink || e.link.Seq != seq {
			t.Fatalf("export line %d: %v %+v, want link %d", 6+i, err, e, seq)
		}
		// A link discloses neither subject nor payload of the record.
		rec := parseRecordLine(t, ls[lineOf(t, ls, seq, false)])
		if bytes.Contains(el[6+i], []byte(rec.Subject)) || bytes.Contains(el[6+i], []byte("door-")) {
			t.Fatalf("link %d discloses record content", seq)
		}
	}
	if !bytes.Equal(el[9], ls[lineOf(t, ls, 20, true)]) {
		t.Fatal("export does not end with checkpoint 20")
	}

	v := Verifier{Keys: fx.pub, Partial: true}
	r := v.Verify(bytes.NewReader(out.Bytes()))
	if !r.OK() || r.FirstSeq != 12 || r.LastSeq != 20 || r.Records != 6 || r.Links != 3 || r.SignedThrough != 20 {
		t.Fatalf("export report %+v:%s", r, describe(r))
	}
	// Without Partial the export is not a whole log.
	requireProblem(t, Verify(bytes.NewReader(out.Bytes()), fx.pub), ProblemMissing, 1)

	// Tampering with the export is detected like tampering with the log.
	for _, tc := range []struct {
		name string
		seq  uint64
		edit func([][]byte) [][]byte
	}{
		{"edited record", 14, func(l [][]byte) [][]byte {
			l[2] = bytes.Replace(l[2], []byte(`"site":"site-a"`), []byte(`"site":"site-b"`), 1)
			return l
		}},
		{"dropped record", 15, func(l [][]byte) [][]byte { return append(l[:3], l[4:]...) }},
		{"edited link", 19, func(l [][]byte) [][]byte { l[7][len(`{"type":"link","seq":19,"digest":"`)] ^= 1; return l }},
		{"edited first prev", 12, func(l [][]byte) [][]byte {
			i := bytes.Index(l[0], []byte(`"prev":"`)) + len(`"prev":"`)
			l[0][i] ^= 1
			return l
		}},
	} {
		r := v.Verify(bytes.NewReader(join(tc.edit(cloneLines(el)))))
		if r.OK() {
			t.Fatalf("%s: export still verifies", tc.name)
		}
		found := false
		for _, p := range r.Problems {
			found = found || p.Seq == tc.seq
		}
		if !found {
			t.Fatalf("%s: no problem about seq %d:%s", tc.name, tc.seq, describe(r))
		}
	}
}

func TestExportCSV(t *testing.T) {
	fx := newFixture(t)
	data := fx.writeLog(t, 30, 10)
	var out bytes.Buffer
	if err := Export(&out, bytes.NewReader(data), 5, 22, FormatCSV); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(out.Bytes())).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	// Header, records 5..22, checkpoints 10 and 20, links 23..30, checkpoint 30.
	if len(rows) != 1+18+2+8+1 {
		t.Fatalf("%d CSV rows", len(rows))
	}
	v := Verifier{Keys: fx.pub, Partial: true}
	r := v.VerifyCSV(bytes.NewReader(out.Bytes()))
	if !r.OK() || r.FirstSeq != 5 || r.LastSeq != 30 || r.Records != 18 || r.SignedThrough != 30 {
		t.Fatalf("CSV export report %+v:%s", r, describe(r))
	}
	// Edit a value in a spreadsheet and save: detected at that seq.
	edited := false
	for _, row := range rows {
		if row[0] == "record" && row[1] == "13" {
			row[4] = "matcher@site-z"
			edited = true
		}
	}
	if !edited {
		t.Fatal("no CSV row for record 13")
	}
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.WriteAll(rows)
	r = v.VerifyCSV(&buf)
	requireProblem(t, r, ProblemAltered, 13)
	requireOnlySeqs(t, r, 13)
}

func TestExportUnsignedTail(t *testing.T) {
	fx := newFixture(t)
	data := fx.writeLog(t, 13, 10)
	ls := lines(data)
	crashed := join(ls[:len(ls)-1]) // no Close checkpoint
	var out bytes.Buffer
	if err := Export(&out, bytes.NewReader(crashed), 11, 0, FormatJSONL); err != nil {
		t.Fatal(err)
	}
	r := Verifier{Keys: fx.pub, Partial: true}.Verify(&out)
	if !r.OK() || r.UnsignedFrom != 11 || r.UnsignedTo != 13 {
		t.Fatalf("unsigned export: %d..%d:%s", r.UnsignedFrom, r.UnsignedTo, describe(r))
	}
}

func TestLogExportWhileOpen(t *testing.T) {
	fx := newFixture(t)
	l := fx.open(t, 10)
	for i := 0; i < 14; i++ {
		l.Append(context.Background(), decisionEvent(i))
	}
	var out bytes.Buffer
	if err := l.Export(context.Background(), &out, 1, 0, FormatJSONL); err != nil {
		t.Fatal(err)
	}
	l.Close()
	r := Verifier{Keys: fx.pub}.Verify(&out)
	if !r.OK() || r.LastSeq != 14 || r.SignedThrough != 10 {
		t.Fatalf("export of an open log: last %d signed %d:%s", r.LastSeq, r.SignedThrough, describe(r))
	}
}

func TestExportErrors(t *testing.T) {
	fx := newFixture(t)
	data := fx.writeLog(t, 5, 10)
	if err := Export(&bytes.Buffer{}, bytes.NewReader(data), 4, 2, FormatJSONL); err == nil {
		t.Error("empty range accepted")
	}
	if err := Export(&bytes.Buffer{}, bytes.NewReader(data), 1, 0, Format(9)); err == nil {
		t.Error("unknown format accepted")
	}
	bad := append(bytes.Clone(data[:20]), '\n')
	if err := Export(&bytes.Buffer{}, bytes.NewReader(bad), 1, 0, FormatJSONL); err == nil {
		t.Error("malformed log exported")
	}
	if _, err := ParseFormat("xml"); err == nil {
		t.Error("ParseFormat(xml) accepted")
	}
	var out bytes.Buffer
	if err := Export(&out, bytes.NewReader(data), 50, 60, FormatJSONL); err != nil || out.Len() != 0 {
		t.Errorf("range beyond the log: %v, %d bytes", err, out.Len())
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	path := dir + "/audit.key"
	if err := k.WriteKeyFile(path); err != nil {
		t.Fatal(err)
	}
	if err := k.WriteKeyFile(path); err == nil {
		t.Fatal("WriteKeyFile overwrote an existing key")
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %04o", st.Mode().Perm())
	}
	k2, err := LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if k2.ID() != k.ID() || !k2.PublicKey().Equal(k.PublicKey()) {
		t.Fatal("loaded key differs")
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		os.Chmod(path, mode)
		if _, err := LoadKeyFile(path); err == nil {
			t.Fatalf("key file with mode %04o accepted", mode)
		}
	}
	os.Chmod(path, 0o400)
	if _, err := LoadKeyFile(path); err != nil {
		t.Fatalf("0400 key refused: %v", err)
	}
	pemPub, err := MarshalPublicKey(k.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(pemPub)
	if err != nil || !pub.Equal(k.PublicKey()) || KeyID(pub) != k.ID() {
		t.Fatalf("public key round trip: %v", err)
	}
	if _, err := ParsePublicKey([]byte("not pem")); err == nil {
		t.Fatal("garbage public key accepted")
	}
	os.WriteFile(dir+"/junk.key", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
	if _, err := LoadKeyFile(dir + "/junk.key"); err == nil {
		t.Fatal("junk key accepted")
	}
}

// BenchmarkAppendSync100 is the production-like policy: fsync every 100
// records, a signed checkpoint (also synced) every 1000.
func BenchmarkAppendSync100(b *testing.B) { benchAppend(b, SyncPolicy{EveryRecords: 100}) }

// BenchmarkAppendSyncEach shows what fsync per record costs on this disk.
func BenchmarkAppendSyncEach(b *testing.B) { benchAppend(b, SyncPolicy{EveryRecords: 1}) }

func benchAppend(b *testing.B, sync SyncPolicy) {
	fx := newFixture(b)
	fx.sync = sync
	l := fx.open(b, 1000)
	defer l.Close()
	ev := decisionEvent(7)
	ctx := context.Background()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := l.Append(ctx, ev); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}
