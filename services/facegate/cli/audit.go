package cli

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/facegate/facegate/pkg/audit"
	"github.com/facegate/facegate/pkg/auditsink"
)

// ExitAuditInvalid: `audit verify` found the log altered, truncated,
// re-ordered or badly signed.
const ExitAuditInvalid = 4

// Key file names `audit keygen` writes.
const (
	checkpointKeyFile = "checkpoint.key"
	checkpointPubFile = "checkpoint.pub"
	subjectKeyFile    = "subject.key"
)

func auditCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Verify, export and key the hash-chained audit log"}
	cmd.AddCommand(auditVerifyCmd(a), auditExportCmd(a), auditKeygenCmd(a), auditSubjectCmd(a))
	return cmd
}

// problemWords says what a verification problem means to an operator.
var problemWords = map[audit.ProblemKind]string{
	audit.ProblemAltered:             "altered",
	audit.ProblemMalformed:           "altered (line no longer parses)",
	audit.ProblemMissing:             "removed",
	audit.ProblemOutOfOrder:          "re-ordered",
	audit.ProblemInserted:            "inserted",
	audit.ProblemForeign:             "inserted or altered",
	audit.ProblemDuplicate:           "duplicated",
	audit.ProblemPrevMismatch:        "chain broken (the record before was replaced)",
	audit.ProblemBadSignature:        "bad checkpoint signature",
	audit.ProblemUnknownKey:          "checkpoint signed by an unknown key",
	audit.ProblemCheckpointMismatch:  "rewritten (signed hash differs)",
	audit.ProblemCheckpointMisplaced: "checkpoint misplaced",
	audit.ProblemMissingCheckpoint:   "checkpoint missing (tail may be rewritten)",
	audit.ProblemTruncated:           "truncated",
	audit.ProblemForbiddenPayload:    "payload carries biometric-looking data",
	audit.ProblemAnchor:              "anchored checkpoint missing or changed",
	audit.ProblemUnexpectedLink:      "record elided in a full log",
	audit.ProblemRead:                "unreadable",
}

type problemJSON struct {
	Seq    uint64 `json:"seq"`
	Line   int    `json:"line"`
	Kind   string `json:"kind"`
	What   string `json:"what"`
	Detail string `json:"detail"`
}

type verifyJSON struct {
	OK             bool          `json:"ok"`
	Log            string        `json:"log"`
	Records        int           `json:"records"`
	Checkpoints    int           `json:"checkpoints"`
	Links          int           `json:"links,omitempty"`
	FirstSeq       uint64        `json:"first_seq"`
	LastSeq        uint64        `json:"last_seq"`
	LastHash       string        `json:"last_hash,omitempty"`
	SignedThrough  uint64        `json:"signed_through"`
	LastCheckpoint *anchorJSON   `json:"last_checkpoint,omitempty"`
	UnsignedFrom   uint64        `json:"unsigned_from,omitempty"`
	UnsignedTo     uint64        `json:"unsigned_to,omitempty"`
	Recoveries     []uint64      `json:"recoveries,omitempty"`
	FirstBadSeq    uint64        `json:"first_bad_seq,omitempty"`
	Problems       []problemJSON `json:"problems,omitempty"`
}

type anchorJSON struct {
	Seq   uint64 `json:"seq"`
	Hash  string `json:"hash"`
	KeyID string `json:"key_id"`
}

func auditVerifyCmd(a *app) *cobra.Command {
	var (
		logPath string
		pubs    []string
		partial bool
	)
	cmd := &cobra.Command{
		Use:   "verify --log FILE --pubkey FILE [--pubkey FILE...]",
		Short: "Check the audit log's hash chain and checkpoint signatures",
		Long: `Verify re-reads every line of the log (or of an export, with --partial), checks each record's hash,
the chain from record to record, and every checkpoint's ed25519 signature against the given public keys
(give each key used since the log began, e.g. after a rotation).

It prints a JSON summary on stdout. Exit 0: intact (records after the last checkpoint are reported as the
unsigned tail, which is not an error). Exit 4: the log was altered, records removed, re-ordered or
inserted, or a checkpoint is badly signed; stderr names the first bad seq and what is wrong.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keys, err := loadPublicKeys(pubs)
			if err != nil {
				return err
			}
			f, err := os.Open(logPath)
			if err != nil {
				return usageErr("--log: %v", err)
			}
			defer f.Close()
			v := audit.Verifier{Keys: keys, Partial: partial}
			var rep audit.Report
			if strings.HasSuffix(strings.ToLower(logPath), ".csv") {
				rep = v.VerifyCSV(f)
			} else {
				rep = v.Verify(f)
			}
			out := verifySummary(logPath, &rep)
			if err := a.printJSON(out); err != nil {
				return err
			}
			if rep.OK() {
				fmt.Fprintf(a.stderr, "audit log intact: %d records (seq %d..%d), signed through %d", rep.Records, rep.FirstSeq, rep.LastSeq, rep.SignedThrough)
				if rep.UnsignedTo > 0 {
					fmt.Fprintf(a.stderr, "; %d..%d unsigned (only the hash chain vouches for them)", rep.UnsignedFrom, rep.UnsignedTo)
				}
				fmt.Fprintln(a.stderr)
				return nil
			}
			first := firstProblem(rep.Problems)
			more := ""
			if n := len(rep.Problems) - 1; n > 0 {
				more = fmt.Sprintf(" (and %d more problem(s), see the JSON summary)", n)
			}
			return &exitError{code: ExitAuditInvalid, err: fmt.Errorf("audit log %s does not verify: seq %d %s: %s%s",
				logPath, first.Seq, words(first.Kind), first.Detail, more)}
		},
	}
	cmd.Flags().StringVar(&logPath, "log", "", "audit log file, or an export (a .csv file is read as CSV) (required)")
	cmd.Flags().StringArrayVar(&pubs, "pubkey", nil, "checkpoint public key, PEM (audit keygen's checkpoint.pub); repeat for rotated keys (required)")
	cmd.Flags().BoolVar(&partial, "partial", false, "the file is an export: it may start after seq 1 and carry link lines")
	_ = cmd.MarkFlagRequired("log")
	_ = cmd.MarkFlagRequired("pubkey")
	return cmd
}

func loadPublicKeys(paths []string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil, usageErr("--pubkey: %v", err)
		}
		k, err := audit.ParsePublicKey(raw)
		if err != nil {
			return nil, usageErr("--pubkey %s: %v", p, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func words(k audit.ProblemKind) string {
	if w, ok := problemWords[k]; ok {
		return w
	}
	return string(k)
}

// firstProblem is the problem about the lowest seq: the first record an
// auditor can no longer trust (ties: the earliest line).
func firstProblem(ps []audit.Problem) audit.Problem {
	best := ps[0]
	for _, p := range ps[1:] {
		if p.Seq < best.Seq || p.Seq == best.Seq && p.Line != 0 && (best.Line == 0 || p.Line < best.Line) {
			best = p
		}
	}
	return best
}

func verifySummary(path string, r *audit.Report) verifyJSON {
	out := verifyJSON{
		OK: r.OK(), Log: path, Records: r.Records, Checkpoints: r.Checkpoints, Links: r.Links,
		FirstSeq: r.FirstSeq, LastSeq: r.LastSeq, SignedThrough: r.SignedThrough,
		UnsignedFrom: r.UnsignedFrom, UnsignedTo: r.UnsignedTo, Recoveries: r.Recoveries,
	}
	if r.Records+r.Links > 0 {
		out.LastHash = r.LastHash.String()
	}
	if c := r.LastCheckpoint; c != nil {
		out.LastCheckpoint = &anchorJSON{Seq: c.Seq, Hash: c.Hash.String(), KeyID: c.KeyID}
	}
	if !r.OK() {
		out.FirstBadSeq = firstProblem(r.Problems).Seq
		for _, p := range r.Problems {
			out.Problems = append(out.Problems, problemJSON{Seq: p.Seq, Line: p.Line, Kind: string(p.Kind), What: words(p.Kind), Detail: p.Detail})
		}
	}
	return out
}

func auditExportCmd(a *app) *cobra.Command {
	var (
		logPath, format, since, until, outPath string
		kinds                                  []string
	)
	cmd := &cobra.Command{
		Use:   "export --log FILE --format jsonl|csv [--since TIME] [--until TIME] [--kind KIND...] [--out FILE]",
		Short: "Export a verifiable part of the audit log",
		Long: `Export copies the records appended in [--since, --until) (RFC 3339 times or YYYY-MM-DD dates, UTC),
optionally only those of the given kinds (decision, enrolment, erasure, admin, malformed, ...), to stdout or --out.
Records left out inside the range, and those after it up to the next checkpoint, become "link" lines (seq
and digests, no content), so the export verifies on its own against the checkpoint signatures:
facegate audit verify --partial --log EXPORT --pubkey KEY. Export does not verify the log: run verify first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := audit.ParseFormat(format)
			if err != nil {
				return usageErr("--format: %v", err)
			}
			var from, to time.Time
			if from, err = parseWhen(since); err != nil {
				return usageErr("--since: %v", err)
			}
			if to, err = parseWhen(until); err != nil {
				return usageErr("--until: %v", err)
			}
			if !from.IsZero() && !to.IsZero() && !from.Before(to) {
				return usageErr("--since %s is not before --until %s", since, until)
			}
			for _, k := range kinds {
				if k == "" || strings.ToLower(k) != k {
					return usageErr("--kind %q: kinds are lower-case (decision, enrolment, erasure, ...)", k)
				}
			}
			in, err := os.Open(logPath)
			if err != nil {
				return usageErr("--log: %v", err)
			}
			defer in.Close()
			first, last, err := seqRange(in, from, to)
			if err != nil {
				return err
			}
			if _, err := in.Seek(0, io.SeekStart); err != nil {
				return err
			}
			var w io.Writer = a.stdout
			var file *os.File
			if outPath != "" {
				if file, err = os.OpenFile(outPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
					return usageErr("--out: %v", err)
				}
				defer file.Close()
				w = file
			}
			st := exportStats{}
			bw := bufio.NewWriter(w)
			err = streamExport(bw, in, f, kinds, first, last, &st)
			if err == nil {
				err = bw.Flush()
			}
			if err == nil && file != nil {
				err = file.Sync()
			}
			if err != nil {
				return fmt.Errorf("audit export: %w", err)
			}
			fmt.Fprintf(a.stderr, "exported %d record(s) (seq %d..%d), %d elided as links\n", st.Records, st.FirstSeq, st.LastSeq, st.Links)
			if a.jsonOut && outPath != "" {
				return a.printJSON(map[string]any{"out": outPath, "format": format, "records": st.Records, "links": st.Links, "first_seq": st.FirstSeq, "last_seq": st.LastSeq})
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&logPath, "log", "", "audit log file (required)")
	cmd.Flags().StringVar(&format, "format", "jsonl", "jsonl or csv")
	cmd.Flags().StringVar(&since, "since", "", "first record time to include (RFC 3339 or YYYY-MM-DD, UTC)")
	cmd.Flags().StringVar(&until, "until", "", "records at or after this time are left out (RFC 3339 or YYYY-MM-DD, UTC)")
	cmd.Flags().StringArrayVar(&kinds, "kind", nil, "only records of this kind (repeatable); others become links")
	cmd.Flags().StringVar(&outPath, "out", "", "write to this new file (0600) instead of stdout")
	_ = cmd.MarkFlagRequired("log")
	return cmd
}

// parseWhen reads an RFC 3339 time or a YYYY-MM-DD date (UTC midnight);
// "" is the zero time (no bound).
func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a YYYY-MM-DD date", s)
	}
	return t, nil
}

// exportLine is what export reads of a log line.
type exportLine struct {
	Type    string          `json:"type"`
	Seq     uint64          `json:"seq"`
	Time    string          `json:"time"`
	Kind    string          `json:"kind"`
	Actor   string          `json:"actor"`
	Subject string          `json:"subject"`
	Payload json.RawMessage `json:"payload"`
	Prev    string          `json:"prev"`
	Hash    string          `json:"hash"`
}

// seqRange finds the first and last seq of records with since <= time <
// until (zero bounds are open), reading the log once. first is 0 when no
// record matches.
func seqRange(r io.Reader, since, until time.Time) (first, last uint64, err error) {
	if since.IsZero() && until.IsZero() {
		return 1, math.MaxUint64, nil
	}
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, rerr := br.ReadBytes('\n')
		if bytes.HasPrefix(line, []byte(`{"type":"record"`)) {
			var l exportLine
			if err := json.Unmarshal(line, &l); err != nil {
				return 0, 0, fmt.Errorf("audit export: line %d: %v: verify the log", n, err)
			}
			t, err := time.Parse(time.RFC3339Nano, l.Time)
			if err != nil {
				return 0, 0, fmt.Errorf("audit export: line %d: time: %v: verify the log", n, err)
			}
			if (since.IsZero() || !t.Before(since)) && (until.IsZero() || t.Before(until)) {
				if first == 0 {
					first = l.Seq
				}
				last = l.Seq
			}
		}
		if errors.Is(rerr, io.EOF) {
			return first, last, nil
		}
		if rerr != nil {
			return 0, 0, fmt.Errorf("audit export: read: %w", rerr)
		}
	}
}

// streamExport writes the export of log records first..last (none when
// first is 0) in format, with records of other kinds elided, without
// holding the log in memory: audit.Export's JSONL output is filtered line
// by line through a pipe (and, for CSV, converted by a second
// audit.Export over another pipe).
func streamExport(w io.Writer, log io.Reader, format audit.Format, kinds []string, first, last uint64, st *exportStats) error {
	jr, jw := io.Pipe()
	go func() {
		if first == 0 {
			jw.Close()
			return
		}
		jw.CloseWithError(audit.Export(jw, log, first, last, audit.FormatJSONL))
	}()
	defer jr.Close() // unblocks the exporter if the filter stops early
	if format != audit.FormatCSV {
		return elideKinds(w, jr, kinds, first, last, st)
	}
	fr, fw := io.Pipe()
	go func() { fw.CloseWithError(elideKinds(fw, jr, kinds, first, last, st)) }()
	// An empty export still gets its header row.
	err := audit.Export(w, fr, 0, 0, audit.FormatCSV)
	fr.CloseWithError(errors.New("audit export: CSV writer stopped"))
	return err
}

type exportStats struct {
	Records, Links    int
	FirstSeq, LastSeq uint64 // of the records exported
}

// parseExportLine reads one line of a JSONL export.
func parseExportLine(line []byte) (exportLine, error) {
	var l exportLine
	err := json.Unmarshal(line, &l)
	return l, err
}

// elideKinds copies a JSONL export from r to w, replacing records of other
// kinds (and records outside first..last) by link lines, which keeps the
// chain checkable up to the export's checkpoints without disclosing them.
// With no kinds it only counts.
func elideKinds(w io.Writer, r io.Reader, kinds []string, first, last uint64, st *exportStats) error {
	keep := map[string]bool{}
	for _, k := range kinds {
		keep[k] = true
	}
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, rerr := br.ReadBytes('\n')
		if len(line) > 0 {
			out, err := elideLine(line, keep, first, last, st)
			if err != nil {
				return err
			}
			if _, err := w.Write(out); err != nil {
				return err
			}
		}
		if errors.Is(rerr, io.EOF) {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

func elideLine(line []byte, keep map[string]bool, first, last uint64, st *exportStats) ([]byte, error) {
	l, err := parseExportLine(bytes.TrimSuffix(line, []byte{'\n'}))
	if err != nil {
		return nil, fmt.Errorf("audit export: %v: verify the log", err)
	}
	if l.Type != "record" {
		if l.Type == "link" {
			st.Links++
		}
		return line, nil
	}
	if (len(keep) == 0 || keep[l.Kind]) && l.Seq >= first && l.Seq <= last {
		st.Records++
		if st.FirstSeq == 0 {
			st.FirstSeq = l.Seq
		}
		st.LastSeq = l.Seq
		return line, nil
	}
	link, err := linkLine(l)
	if err != nil {
		return nil, fmt.Errorf("audit export: record %d: %v: verify the log", l.Seq, err)
	}
	st.Links++
	return link, nil
}

// linkLine is a record reduced to what carries the chain: seq, content
// digest, prev and hash, in pkg/audit's canonical link form.
func linkLine(l exportLine) ([]byte, error) {
	t, err := time.Parse(time.RFC3339Nano, l.Time)
	if err != nil {
		return nil, err
	}
	prev, err := audit.ParseDigest(l.Prev)
	if err != nil {
		return nil, err
	}
	hash, err := audit.ParseDigest(l.Hash)
	if err != nil {
		return nil, err
	}
	r := audit.Record{Seq: l.Seq, Time: t, Kind: audit.Kind(l.Kind), Actor: l.Actor, Subject: l.Subject, Payload: l.Payload, Prev: prev, Hash: hash}
	return fmt.Appendf(nil, `{"type":"link","seq":%d,"digest":"%s","prev":"%s","hash":"%s"}`+"\n", l.Seq, r.ContentDigest(), prev, hash), nil
}

func auditKeygenCmd(a *app) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "keygen --out DIR",
		Short: "Create the audit log's checkpoint signing key and subject key",
		Long: `Keygen writes into DIR (created 0700 if missing):
  checkpoint.key  ed25519 private key, PKCS #8 PEM, mode 0600: signs checkpoints (the audit service's --checkpoint-key)
  checkpoint.pub  its public key, PEM: what auditors pass to 'facegate audit verify --pubkey'
  subject.key     32 random bytes, hex, mode 0600: keys the subject hashes (the audit service's --subject-key)
Existing files are never overwritten: a lost checkpoint key makes new checkpoints unverifiable with the old
public key, and a new subject key unlinks new records from old ones.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return usageErr("--out: %v", err)
			}
			paths := map[string]string{}
			for _, n := range []string{checkpointKeyFile, checkpointPubFile, subjectKeyFile} {
				p := filepath.Join(dir, n)
				if _, err := os.Lstat(p); err == nil {
					return usageErr("--out: %s already exists; refusing to replace a key", p)
				} else if !errors.Is(err, os.ErrNotExist) {
					return err
				}
				paths[n] = p
			}
			k, err := audit.GenerateKey()
			if err != nil {
				return err
			}
			pub, err := audit.MarshalPublicKey(k.PublicKey())
			if err != nil {
				return err
			}
			if err := k.WriteKeyFile(paths[checkpointKeyFile]); err != nil {
				return err
			}
			if err := os.WriteFile(paths[checkpointPubFile], pub, 0o644); err != nil {
				return err
			}
			if err := auditsink.GenerateSubjectKey(paths[subjectKeyFile]); err != nil {
				return err
			}
			fmt.Fprintf(a.stderr, "wrote %s (key id %s), %s and %s\n", paths[checkpointKeyFile], k.ID(), paths[checkpointPubFile], paths[subjectKeyFile])
			out := map[string]string{"key_id": k.ID(), "checkpoint_key": paths[checkpointKeyFile],
				"checkpoint_pub": paths[checkpointPubFile], "subject_key": paths[subjectKeyFile]}
			if a.jsonOut {
				return a.printJSON(out)
			}
			keys := make([]string, 0, len(out))
			for k := range out {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(a.stdout, "%s\t%s\n", k, out[k])
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "out", "", "folder for the key files (required)")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

func auditSubjectCmd(a *app) *cobra.Command {
	var keyPath, person, personHash string
	cmd := &cobra.Command{
		Use:   "subject --subject-key FILE (--person ID | --person-hash SHA256)",
		Short: "Print the subject hash the audit log stores for a person (to find their records)",
		Long: `The log names a person only by HMAC-SHA256(subject key, SHA-256 of the person id). With the subject
key, this prints that value for one person, to search the log or an export for every record about them
(a subject access request). --person-hash takes the SHA-256 hex an erasure tombstone carries.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (person == "") == (personHash == "") {
				return usageErr("give exactly one of --person and --person-hash")
			}
			key, err := auditsink.LoadSubjectKey(keyPath)
			if err != nil {
				return usageErr("--subject-key: %v", err)
			}
			var subject string
			if person != "" {
				subject = auditsink.PersonSubject(key, person)
			} else {
				h := strings.ToLower(personHash)
				if _, err := audit.ParseDigest(h); err != nil {
					return usageErr("--person-hash: %v", err)
				}
				subject = audit.SubjectHash(key, h)
			}
			if a.jsonOut {
				return a.printJSON(map[string]string{"subject": subject})
			}
			_, err = fmt.Fprintln(a.stdout, subject)
			return err
		},
	}
	cmd.Flags().StringVar(&keyPath, "subject-key", "", "the audit service's subject key (audit keygen's subject.key) (required)")
	cmd.Flags().StringVar(&person, "person", "", "person id")
	cmd.Flags().StringVar(&personHash, "person-hash", "", "SHA-256 hex of the person id")
	_ = cmd.MarkFlagRequired("subject-key")
	return cmd
}
