package auditsink

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/facegate/facegate/pkg/audit"
	"github.com/facegate/facegate/pkg/events"
)

// SubjectKeySize is the size of a generated subject key.
const SubjectKeySize = 32

// GenerateSubjectKey writes a new random subject key (the secret of
// audit.SubjectHash) to path as hex, in a new 0600 file. It refuses to
// overwrite: a new key makes every earlier subject hash unlinkable to later
// ones.
func GenerateSubjectKey(path string) error {
	key := make([]byte, SubjectKeySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("auditsink: generate subject key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("auditsink: create subject key file: %w", err)
	}
	if _, err := f.WriteString(hex.EncodeToString(key) + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("auditsink: write subject key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("auditsink: sync subject key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("auditsink: close subject key %s: %w", path, err)
	}
	return nil
}

// LoadSubjectKey reads a key written by GenerateSubjectKey: hex, at least
// 32 bytes, in a file only its owner can access (audit.ErrKeyPermissions
// otherwise; whoever reads it can link subject hashes to person ids).
func LoadSubjectKey(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("auditsink: subject key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("auditsink: subject key %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("auditsink: subject key %s has mode %04o, want 0600 or stricter: %w", path, perm, audit.ErrKeyPermissions)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auditsink: subject key: %w", err)
	}
	return ParseSubjectKey(raw)
}

// ParseSubjectKey decodes the hex content of a subject key file.
func ParseSubjectKey(raw []byte) ([]byte, error) {
	key, err := hex.DecodeString(string(bytes.TrimSpace(raw)))
	if err != nil {
		return nil, fmt.Errorf("auditsink: subject key is not hex: %w", err)
	}
	if len(key) < SubjectKeySize {
		return nil, fmt.Errorf("auditsink: subject key has %d bytes, want at least %d", len(key), SubjectKeySize)
	}
	return key, nil
}

// PersonSubject is the subject the log stores for a person: the keyed hash
// (audit.SubjectHash) of events.PersonHash(person id). An auditor holding
// the subject key computes it to find every record about one person (an
// access request); from a person hash alone (an erasure tombstone) use
// audit.SubjectHash(key, hash) directly.
func PersonSubject(key []byte, personID string) string {
	return audit.SubjectHash(key, events.PersonHash(personID))
}
