// Package photostore keeps retained enrolment photos on disk, each sealed
// with package sealed for its person and photo (sealed.PhotoContext), so a
// new model can re-embed the gallery without asking people to come back.
//
// Layout: <dir>/<events.PersonHash(person)>/<photo id>, directories 0700 and
// files 0600. The directory is named by the hash of the person id so that a
// listing of the store does not list who is enrolled.
//
// # Deletion
//
// Delete and DeletePerson unlink files; they do not overwrite them first.
// Overwriting before unlinking is not meaningful on journaling or
// copy-on-write filesystems and on SSDs (the write lands in new blocks and
// the old ones stay until the device reuses them), so it would only suggest
// a guarantee that does not exist. What makes a deleted photo unreadable is
// that it is sealed: the plaintext never touches the disk, and removing the
// key-encryption key its data key was wrapped under (after rotating and
// re-wrapping the live photos, see sealed.FileKeyProvider) shreds every
// copy still lying in free blocks or backups.
package photostore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/facegate/facegate/pkg/atomicfile"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/sealed"
)

// ErrNotFound: no such photo.
var ErrNotFound = errors.New("photo not found")

// MaxPhotoSize bounds a stored (sealed) photo file read back by Get.
const MaxPhotoSize = 64 << 20

// Store is a photo store rooted at a directory. It is safe for concurrent
// use; concurrent writers of the same photo id are the caller's problem
// (photo ids are random).
type Store struct {
	dir  string
	keys sealed.KeyProvider
}

// New opens (creating if needed) the store at dir, sealing with keys.
func New(dir string, keys sealed.KeyProvider) (*Store, error) {
	if dir == "" {
		return nil, errors.New("photostore: directory is empty")
	}
	if keys == nil {
		return nil, errors.New("photostore: no key provider")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("photostore: create %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("photostore: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("photostore: %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("photostore: %s is accessible by group or others (mode %v); want 0700", dir, fi.Mode().Perm())
	}
	return &Store{dir: dir, keys: keys}, nil
}

// Dir is the store's root directory.
func (s *Store) Dir() string { return s.dir }

func check(person, photo string) error {
	if err := bus.ValidateToken("person id", person); err != nil {
		return fmt.Errorf("photostore: %w", err)
	}
	if err := bus.ValidateToken("photo id", photo); err != nil {
		return fmt.Errorf("photostore: %w", err)
	}
	return nil
}

// PersonDir is the directory of a person's photos.
func (s *Store) PersonDir(person string) string {
	return filepath.Join(s.dir, events.PersonHash(person))
}

// Ref is the storage reference of a photo (its path relative to the
// store), what PhotoAdd.storage_ref carries.
func Ref(person, photo string) string {
	return events.PersonHash(person) + "/" + photo
}

// Put seals data for (person, photo) and stores it, replacing any photo
// with that id. It returns the storage reference.
func (s *Store) Put(ctx context.Context, person, photo string, data []byte) (string, error) {
	if err := check(person, photo); err != nil {
		return "", err
	}
	blob, err := sealed.Seal(ctx, s.keys, data, sealed.PhotoContext(person, photo))
	if err != nil {
		return "", fmt.Errorf("photostore: seal photo %s: %w", photo, err)
	}
	dir := s.PersonDir(person)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("photostore: create person directory: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, photo), blob, 0o600); err != nil {
		return "", fmt.Errorf("photostore: write photo %s: %w", photo, err)
	}
	return Ref(person, photo), nil
}

// Get reads and opens a photo. A file that was modified, or copied from
// another person or photo, fails to open (sealed.ErrTampered).
func (s *Store) Get(ctx context.Context, person, photo string) ([]byte, error) {
	if err := check(person, photo); err != nil {
		return nil, err
	}
	p := filepath.Join(s.PersonDir(person), photo)
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("photostore: photo %s: %w", photo, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("photostore: photo %s: %w", photo, err)
	}
	if fi.Size() > MaxPhotoSize {
		return nil, fmt.Errorf("photostore: photo %s: %d bytes, more than %d", photo, fi.Size(), MaxPhotoSize)
	}
	blob, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("photostore: read photo %s: %w", photo, err)
	}
	data, err := sealed.Open(ctx, s.keys, blob, sealed.PhotoContext(person, photo))
	if err != nil {
		return nil, fmt.Errorf("photostore: open photo %s: %w", photo, err)
	}
	return data, nil
}

// Delete removes one photo. Removing a photo that is not there is not an
// error (deletes are retried).
func (s *Store) Delete(ctx context.Context, person, photo string) error {
	if err := check(person, photo); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := os.Remove(filepath.Join(s.PersonDir(person), photo))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("photostore: delete photo %s: %w", photo, err)
	}
	return nil
}

// DeletePerson removes the person's directory with every photo in it (see
// the package documentation for what deletion does and does not
// guarantee). A person without photos is not an error.
func (s *Store) DeletePerson(ctx context.Context, person string) error {
	if err := bus.ValidateToken("person id", person); err != nil {
		return fmt.Errorf("photostore: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.RemoveAll(s.PersonDir(person)); err != nil {
		return fmt.Errorf("photostore: delete person's photos: %w", err)
	}
	return nil
}
