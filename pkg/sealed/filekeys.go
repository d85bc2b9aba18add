package sealed

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// FileKeyProvider keeps KEKs in a directory: one file per key,
// "<key id>.kek", holding 32 random bytes with mode 0600, and a file
// "active" naming the key new data keys are wrapped with. Old keys stay
// until removed, so blobs wrapped under them still open.
//
// Wrapping is AES-256-GCM under the KEK with a random nonce, the key id as
// associated data: wrapped = nonce(12) || ciphertext(32) || tag(16).
type FileKeyProvider struct {
	dir      string
	rotateMu sync.Mutex // one rotation at a time: they share active.tmp

	mu     sync.RWMutex
	keys   map[string][]byte
	active string
	closed bool
}

// ErrClosed: the provider was closed.
var ErrClosed = errors.New("key provider is closed")

const (
	kekExt     = ".kek"
	activeFile = "active"
	kekSize    = 32
	wrapTag    = "facegate/sealed/kek/v1\x00"
)

// ErrKeyPermissions marks a key file or directory others may access.
var ErrKeyPermissions = errors.New("key file permissions too open")

// OpenFileKeyProvider loads every KEK in dir. The directory must exist and
// not be writable by group or others (whoever can add a file there can plant
// a key); every key file must be a regular file of exactly 32 bytes that
// group and others cannot access at all (mode 0600 or 0400). An empty
// directory is fine: Rotate creates the first key.
func OpenFileKeyProvider(dir string) (*FileKeyProvider, error) {
	p := &FileKeyProvider{dir: dir}
	if err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// Reload re-reads the directory, e.g. after another process rotated.
func (p *FileKeyProvider) Reload() error {
	st, err := os.Stat(p.dir)
	if err != nil {
		return fmt.Errorf("sealed: key directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("sealed: key directory %s is not a directory", p.dir)
	}
	if perm := st.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("sealed: key directory %s has mode %04o: group or others may write to it (chmod 700): %w", p.dir, perm, ErrKeyPermissions)
	}
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return fmt.Errorf("sealed: key directory: %w", err)
	}
	keys := map[string][]byte{}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), kekExt)
		if !ok {
			continue
		}
		k, err := p.readKey(id)
		if err != nil {
			clearAll(keys)
			return err
		}
		keys[id] = k
	}
	active := ""
	b, err := os.ReadFile(filepath.Join(p.dir, activeFile))
	switch {
	case err == nil:
		active = strings.TrimSpace(string(b))
		if keys[active] == nil {
			clearAll(keys)
			return fmt.Errorf("sealed: %s names key %q, which is not in %s: %w", activeFile, active, p.dir, ErrUnknownKey)
		}
	case errors.Is(err, fs.ErrNotExist):
		if len(keys) > 0 {
			clearAll(keys)
			return fmt.Errorf("sealed: %s has keys but no %q file naming the active one", p.dir, activeFile)
		}
	default:
		clearAll(keys)
		return fmt.Errorf("sealed: read active key id: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		clearAll(keys)
		return fmt.Errorf("sealed: reload: %w", ErrClosed)
	}
	clearAll(p.keys)
	p.keys, p.active = keys, active
	return nil
}

func validKeyID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range []byte(id) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func (p *FileKeyProvider) readKey(id string) ([]byte, error) {
	if !validKeyID(id) {
		return nil, fmt.Errorf("sealed: key id %q: only letters, digits, '-', '_', '.' (1..64)", id)
	}
	path := filepath.Join(p.dir, id+kekExt)
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("sealed: key %q: %w", id, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("sealed: key file %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("sealed: key file %s has mode %04o, want 0600 or 0400 (chmod 600): %w", path, perm, ErrKeyPermissions)
	}
	k, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sealed: key %q: %w", id, err)
	}
	if len(k) != kekSize {
		clear(k)
		return nil, fmt.Errorf("sealed: key file %s has %d bytes, want %d", path, len(k), kekSize)
	}
	return k, nil
}

func clearAll(keys map[string][]byte) {
	for _, k := range keys {
		clear(k)
	}
}

// ActiveKeyID is the key new data keys are wrapped with ("" before the
// first Rotate).
func (p *FileKeyProvider) ActiveKeyID() string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.active
}

// KeyIDs lists the loaded keys, oldest first (ids start with their creation
// time).
func (p *FileKeyProvider) KeyIDs() []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	ids := make([]string, 0, len(p.keys))
	for id := range p.keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Rotate creates a new KEK and makes it active. Older keys stay for
// unwrapping. The key file is synced before the active marker is switched
// (by rename) to it, so a crash never leaves "active" naming a missing key.
func (p *FileKeyProvider) Rotate(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("sealed: rotate: %w", err)
	}
	p.rotateMu.Lock()
	defer p.rotateMu.Unlock()
	p.mu.RLock()
	closed := p.closed
	p.mu.RUnlock()
	if closed {
		return "", fmt.Errorf("sealed: rotate: %w", ErrClosed)
	}
	var suffix [4]byte
	rand.Read(suffix[:])
	id := "kek-" + time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(suffix[:])
	key := make([]byte, kekSize)
	rand.Read(key)
	path := filepath.Join(p.dir, id+kekExt)
	if err := writeFileSync(path, key, os.O_EXCL); err != nil {
		clear(key)
		return "", fmt.Errorf("sealed: rotate: %w", err)
	}
	tmp := filepath.Join(p.dir, activeFile+".tmp")
	if err := writeFileSync(tmp, []byte(id+"\n"), os.O_TRUNC); err != nil {
		clear(key)
		return "", fmt.Errorf("sealed: rotate: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(p.dir, activeFile)); err != nil {
		clear(key)
		return "", fmt.Errorf("sealed: rotate: switch active key: %w", err)
	}
	if err := syncDir(p.dir); err != nil {
		clear(key)
		return "", fmt.Errorf("sealed: rotate: %w", err)
	}
	p.mu.Lock()
	if p.keys == nil {
		p.keys = map[string][]byte{}
	}
	p.keys[id] = key
	p.active = id
	p.mu.Unlock()
	return id, nil
}

// Remove deletes a KEK that is no longer active. Blobs still wrapped under
// it become unreadable for good (ErrUnknownKey): rewrap them first, or
// remove the key on purpose to shred them.
func (p *FileKeyProvider) Remove(ctx context.Context, keyID string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sealed: remove key: %w", err)
	}
	if !validKeyID(keyID) {
		return fmt.Errorf("sealed: remove key %q: invalid key id", keyID)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if keyID == p.active {
		return fmt.Errorf("sealed: remove key %q: it is the active key; rotate first", keyID)
	}
	if err := os.Remove(filepath.Join(p.dir, keyID+kekExt)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sealed: remove key %q: %w", keyID, ErrUnknownKey)
		}
		return fmt.Errorf("sealed: remove key: %w", err)
	}
	if err := syncDir(p.dir); err != nil {
		return fmt.Errorf("sealed: remove key: %w", err)
	}
	clear(p.keys[keyID])
	delete(p.keys, keyID)
	return nil
}

// WrapKey encrypts dek under the active KEK.
func (p *FileKeyProvider) WrapKey(ctx context.Context, dek []byte) ([]byte, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	if len(dek) < 16 || len(dek) > 64 {
		return nil, "", fmt.Errorf("data key of %d bytes (want 16..64)", len(dek))
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, "", ErrClosed
	}
	if p.active == "" {
		return nil, "", fmt.Errorf("%s: %w (run Rotate to create one)", p.dir, ErrNoActiveKey)
	}
	aead, err := newGCM(p.keys[p.active])
	if err != nil {
		return nil, "", err
	}
	nonce := make([]byte, nonceSize, nonceSize+len(dek)+tagSize)
	rand.Read(nonce)
	return aead.Seal(nonce, nonce, dek, []byte(wrapTag+p.active)), p.active, nil
}

// UnwrapKey decrypts a data key wrapped under keyID. A key not loaded yet is
// looked for on disk once (another process may have rotated).
func (p *FileKeyProvider) UnwrapKey(ctx context.Context, keyID string, wrapped []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	aead, err := p.kekAEAD(keyID)
	if err != nil {
		return nil, err
	}
	if len(wrapped) != nonceSize+dekSize+tagSize {
		return nil, fmt.Errorf("wrapped key of %d bytes, want %d: %w", len(wrapped), nonceSize+dekSize+tagSize, ErrTampered)
	}
	dek, err := aead.Open(nil, wrapped[:nonceSize], wrapped[nonceSize:], []byte(wrapTag+keyID))
	if err != nil {
		return nil, fmt.Errorf("wrapped data key does not authenticate under key %q: %w", keyID, ErrTampered)
	}
	return dek, nil
}

// kekAEAD builds the cipher for a KEK under the lock, so Remove or Close
// cannot zero the key half-way (the cipher keeps its own key schedule).
func (p *FileKeyProvider) kekAEAD(keyID string) (cipher.AEAD, error) {
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		return nil, ErrClosed
	}
	if kek := p.keys[keyID]; kek != nil {
		defer p.mu.RUnlock()
		return newGCM(kek)
	}
	p.mu.RUnlock()
	if !validKeyID(keyID) {
		return nil, fmt.Errorf("key id %q is not a file key id: %w", keyID, ErrUnknownKey)
	}
	k, err := p.readKey(keyID)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("key %q is not in %s: %w", keyID, p.dir, ErrUnknownKey)
		}
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		clear(k)
		return nil, ErrClosed
	}
	if old := p.keys[keyID]; old != nil {
		clear(k)
		k = old
	} else {
		if p.keys == nil {
			p.keys = map[string][]byte{}
		}
		p.keys[keyID] = k
	}
	return newGCM(k)
}

// Close zeroes the KEKs held in memory (with the limits described at
// Seal). The provider is unusable afterwards.
func (p *FileKeyProvider) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	clearAll(p.keys)
	p.keys, p.active, p.closed = nil, "", true
	return nil
}

func writeFileSync(path string, data []byte, flag int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|flag, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
