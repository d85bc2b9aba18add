package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Kind names what a record is about. Callers may use their own kinds; the
// constants are the ones facegate's services write.
type Kind string

// Kinds written by facegate.
const (
	KindDecision  Kind = "decision"
	KindEnrolment Kind = "enrolment"
	KindErasure   Kind = "erasure"
	KindAdmin     Kind = "admin"
	// KindRecovery is reserved for the record the log writes itself after it
	// discarded a torn final line on open; Append refuses it.
	KindRecovery Kind = "recovery"
)

// Limits on what one record may carry. The log is for facts about events,
// not for data: small limits make it hard to smuggle biometric data in.
const (
	MaxPayloadBytes = 4096
	maxFieldBytes   = 256
	// maxNumberArray bounds numeric arrays in payloads: a 128-d encoding is
	// an array of 128 numbers, a box or a pair of scores is not.
	maxNumberArray = 16
)

// ErrForbiddenPayload marks a payload that looks like it carries biometric
// data (an embedding, an image or a crop).
var ErrForbiddenPayload = errors.New("payload may not carry biometric data")

// forbiddenWords are matched against payload keys with case, '_', '-' and
// '.' removed, at any depth. The match is deliberately broad ("encoding"
// also hits "content_encoding"): a false refusal costs a rename, a false
// acceptance puts a biometric template into a log that is never erased.
var forbiddenWords = []string{
	"embedding", "encoding", "vector", "image", "photo", "crop",
	"pixel", "thumbnail", "descriptor", "jpeg", "template_data",
}

// Digest is a SHA-256 value: a record's chain hash, its content digest or
// the previous record's hash.
type Digest [32]byte

// String is lower-case hex, the form used in the log.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// IsZero reports whether d is all zero bytes (the prev of record 1).
func (d Digest) IsZero() bool { return d == Digest{} }

// ParseDigest reads 64 lower-case hex characters. Upper case is refused so
// that each digest has exactly one spelling in the log.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != 64 {
		return d, fmt.Errorf("digest %q: want 64 hex characters, got %d", short(s), len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return d, fmt.Errorf("digest %q: character %d is not lower-case hex", short(s), i)
		}
	}
	_, err := hex.Decode(d[:], []byte(s))
	return d, err
}

// Event is what a caller appends. The log adds the sequence number, time,
// previous hash and hash, and turns SubjectID into a keyed hash.
type Event struct {
	Kind  Kind
	Actor string // who acted: a service ("matcher@site-a") or an operator account
	// SubjectID is the person the event is about, or "". It is never stored:
	// the record holds HMAC-SHA256(subject key, id), so a person's erasure
	// leaves no readable identifier in the log.
	SubjectID string
	// Payload holds the facts: outcome, door, site, distance, threshold,
	// model id. Keys naming biometric data are refused (ErrForbiddenPayload).
	Payload map[string]any
}

// Record is one stored line of the log.
type Record struct {
	Seq     uint64
	Time    time.Time // UTC; stored as RFC 3339 with nanoseconds
	Kind    Kind
	Actor   string
	Subject string          // hex HMAC-SHA256 of the subject id, or ""
	Payload json.RawMessage // compact JSON object, hashed byte for byte
	Prev    Digest
	Hash    Digest
}

// SubjectHash is the keyed hash the log stores instead of a person id:
// hex(HMAC-SHA256(key, "facegate/audit/subject/v1" 0x00 id)); the prefix
// keeps these hashes apart from any other use of the same key. The same id and key
// give the same hash, so an auditor holding the key can still find every
// record about a person (access requests); without the key the hash is
// unlinkable, and destroying the key unlinks the whole log at once.
func SubjectHash(key []byte, id string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("facegate/audit/subject/v1\x00"))
	m.Write([]byte(id))
	return hex.EncodeToString(m.Sum(nil))
}

// Canonical hash encoding (version 1). Every field is length-prefixed so no
// two different records share an encoding, and domain tags keep record,
// chain and checkpoint hashes from ever being confused:
//
//	digest = SHA-256( "facegate/audit/record/v1" 0x00
//	                  u64be(seq)
//	                  u32be(len(time))    time     (RFC 3339, UTC, "Z", nanoseconds trimmed)
//	                  u32be(len(kind))    kind
//	                  u32be(len(actor))   actor
//	                  u32be(len(subject)) subject  (64 hex characters or empty)
//	                  u32be(len(payload)) payload  (the stored JSON bytes exactly) )
//	hash   = SHA-256( "facegate/audit/chain/v1" 0x00 u64be(seq) prev[32] digest[32] )
//
// Splitting content digest from chain hash lets an export replace records
// outside the requested range by their digests ("link" lines): the chain
// still verifies up to a signed checkpoint, and the other records' contents
// are not disclosed.
const (
	recordTag = "facegate/audit/record/v1\x00"
	chainTag  = "facegate/audit/chain/v1\x00"
)

func appendLP(b []byte, s []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// ContentDigest is the digest of a record's content (every field except
// prev and hash).
func (r *Record) ContentDigest() Digest {
	b := make([]byte, 0, 256+len(r.Payload))
	b = append(b, recordTag...)
	b = binary.BigEndian.AppendUint64(b, r.Seq)
	b = appendLP(b, []byte(formatTime(r.Time)))
	b = appendLP(b, []byte(r.Kind))
	b = appendLP(b, []byte(r.Actor))
	b = appendLP(b, []byte(r.Subject))
	b = appendLP(b, r.Payload)
	return sha256.Sum256(b)
}

// ComputeHash is the chain hash the record should carry.
func (r *Record) ComputeHash() Digest {
	return chainHash(r.Seq, r.Prev, r.ContentDigest())
}

func chainHash(seq uint64, prev, digest Digest) Digest {
	b := make([]byte, 0, len(chainTag)+8+64)
	b = append(b, chainTag...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = append(b, prev[:]...)
	b = append(b, digest[:]...)
	return sha256.Sum256(b)
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// jsonString encodes s as a JSON string the way encoding/json does (HTML
// characters escaped), which is deterministic: one string, one spelling.
func jsonString(s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return b
}

// marshalLine is the one canonical text form of a record. Verification
// re-encodes every parsed line and requires byte equality, so the file has
// no insignificant bytes: no optional whitespace, no key order freedom, no
// alternative spelling of a number, string or digest.
func (r *Record) marshalLine() []byte {
	b := make([]byte, 0, 320+len(r.Payload))
	b = append(b, `{"type":"record","seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = append(b, `,"time":`...)
	b = append(b, jsonString(formatTime(r.Time))...)
	b = append(b, `,"kind":`...)
	b = append(b, jsonString(string(r.Kind))...)
	b = append(b, `,"actor":`...)
	b = append(b, jsonString(r.Actor)...)
	b = append(b, `,"subject":`...)
	b = append(b, jsonString(r.Subject)...)
	b = append(b, `,"payload":`...)
	b = append(b, r.Payload...)
	b = append(b, `,"prev":"`...)
	b = append(b, r.Prev.String()...)
	b = append(b, `","hash":"`...)
	b = append(b, r.Hash.String()...)
	b = append(b, "\"}\n"...)
	return b
}

// validateKind accepts short lower-case names so that kinds sort, grep and
// compare without surprises.
func validateKind(k Kind) error {
	if k == "" {
		return errors.New("kind is empty")
	}
	if len(k) > 64 {
		return fmt.Errorf("kind %q is longer than 64 bytes", short(string(k)))
	}
	for _, c := range []byte(k) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("kind %q: only a-z, 0-9, '.', '_' and '-' are allowed", short(string(k)))
		}
	}
	return nil
}

func validateSubject(s string) error {
	if s == "" {
		return nil
	}
	if _, err := ParseDigest(s); err != nil {
		return fmt.Errorf("subject is not a keyed hash: %w", err)
	}
	return nil
}

// encodePayload turns the caller's map into the stored bytes (compact,
// keys sorted by encoding/json) after checking it carries no biometric data.
func encodePayload(p map[string]any) (json.RawMessage, error) {
	if p == nil {
		return json.RawMessage("{}"), nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	if len(b) > MaxPayloadBytes {
		return nil, fmt.Errorf("payload is %d bytes, the limit is %d: the audit log records facts, not data", len(b), MaxPayloadBytes)
	}
	if err := CheckPayload(b); err != nil {
		return nil, err
	}
	return b, nil
}

// CheckPayload refuses payloads that look like they carry biometric data:
// keys naming embeddings or images at any depth, and numeric arrays longer
// than a handful of numbers. Verification applies it too, so a record
// written around the writer is still flagged.
func CheckPayload(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("payload is not JSON: %w", err)
	}
	if dec.More() {
		return errors.New("payload has data after the JSON object")
	}
	if _, ok := v.(map[string]any); !ok {
		return errors.New("payload must be a JSON object")
	}
	return checkValue("payload", v)
}

func checkValue(path string, v any) error {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys) // the first offending key is reported deterministically
		for _, k := range keys {
			if w := forbiddenKey(k); w != "" {
				return fmt.Errorf("%s: key %q names %s data: %w", path, short(k), w, ErrForbiddenPayload)
			}
			if err := checkValue(path+"."+k, x[k]); err != nil {
				return err
			}
		}
	case []any:
		numbers := 0
		for i, e := range x {
			if _, ok := e.(json.Number); ok {
				numbers++
			}
			if err := checkValue(fmt.Sprintf("%s[%d]", path, i), e); err != nil {
				return err
			}
		}
		if numbers > maxNumberArray {
			return fmt.Errorf("%s: array of %d numbers looks like an embedding (limit %d): %w", path, numbers, maxNumberArray, ErrForbiddenPayload)
		}
	case string:
		if len(x) > maxFieldBytes*4 {
			return fmt.Errorf("%s: string of %d bytes (limit %d) could carry encoded image data: %w", path, len(x), maxFieldBytes*4, ErrForbiddenPayload)
		}
	}
	return nil
}

func forbiddenKey(k string) string {
	norm := strings.Map(func(r rune) rune {
		switch r {
		case '-', '.', ' ':
			return -1
		}
		return r
	}, strings.ToLower(k))
	flat := strings.ReplaceAll(norm, "_", "")
	for _, w := range forbiddenWords {
		if strings.Contains(norm, w) || strings.Contains(flat, strings.ReplaceAll(w, "_", "")) {
			return w
		}
	}
	return ""
}

// short keeps error messages readable when the input is garbage.
func short(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
