// Package keyrotation rotates the key-encryption keys (KEKs) of facegate's
// encryption at rest (package sealed) across every store that holds sealed
// blobs, and tells which KEK each stored object still depends on:
//
//   - face templates: PhotoAdd.sealed_template in the ENROLMENTS stream,
//     whose messages are immutable, so a template is re-wrapped by
//     publishing a copy of its EnrolmentChange (same subject, same PhotoAdd
//     fields, the re-wrapped template, a new change_id) and then securely
//     deleting the original by sequence. The directory applies the copy as
//     an upsert of the same template id, so matching does not change;
//   - retained enrolment photos (pkg/photostore files), re-wrapped in place
//     by atomic replace (pkg/atomicfile);
//   - directory snapshots (pkg/directory's sealed snapshot file), likewise.
//
// Re-wrapping touches only the wrapped data key (sealed.Rewrap): no
// template, photo or snapshot is decrypted.
//
// # Ordering in the stream
//
// A republished PhotoAdd lands after every change already in the stream, so
// republishing a photo that a later PhotoRemove or PersonDelete cancelled
// would bring it back. Rotate therefore replays the stream into a
// policy.State first and republishes only the PhotoAdds that are still in
// effect (the last PhotoAdd of a photo the state still has). PhotoAdds that
// are no longer in effect (superseded, removed, their person deleted) are
// not republished; their old-KEK messages are securely deleted, which
// leaves the replayed state unchanged (the change that cancelled them is
// still there) and removes a template that should not have been kept.
//
// Changes that land while Rotate runs: each republish carries
// Nats-Expected-Last-Subject-Sequence, the last sequence the replay saw on
// that photo subject, so a concurrent PhotoAdd or PhotoRemove of that
// person (same subject) or an erasure's purge makes the publish fail; the
// person's subjects (facegate.enrolments.person.<id> and .<hash>) are
// checked just before publishing. Either way the pass stops treating that
// photo and Rotate replays the stream again (a bounded number of passes).
// A PersonDelete that lands in the microseconds between that check and the
// publish is detected right after it, and the republish is compensated
// (a PhotoRemove after it, then the copy deleted).
//
// # Idempotence and crashes
//
// Every step is re-derived from what is stored: an object is re-wrapped
// when its blob names a KEK other than the active one, and a crash between
// a republish and the delete of the original leaves the original
// superseded, so the next run deletes it. Running Rotate again finishes
// the job; with nothing under an old KEK it changes nothing.
//
// # Running services
//
// A service holding a FileKeyProvider keeps wrapping new data keys with the
// KEK that was active when it loaded the key folder (it opens blobs under
// newer KEKs, which it finds on disk). After a rotation, restart the
// services that seal (API, directory users) and run Rotate again (with
// NoNewKey) to catch objects they sealed in between; GetStatus shows
// what remains under each KEK, and Retire refuses while anything does.
package keyrotation

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/directory"
	"github.com/facegate/facegate/pkg/sealed"
)

// KeyRing is what rotation needs of a key provider; sealed.FileKeyProvider
// implements it.
type KeyRing interface {
	sealed.KeyProvider
	ActiveKeyID() string
	KeyIDs() []string
	Rotate(ctx context.Context) (string, error)
	Remove(ctx context.Context, keyID string) error
}

// Store names, as used in reports.
const (
	StoreStream   = "stream"
	StorePhotos   = "photos"
	StoreSnapshot = "snapshot"
)

// Config says where the keys and the sealed objects are. A store left
// unset is not looked at (and Status says so).
type Config struct {
	// Keys is the key ring. Required.
	Keys KeyRing
	// KeysDir is the key folder, used only to date keys whose id does not
	// carry their creation time. Optional.
	KeysDir string
	// JetStream reaches the ENROLMENTS stream; nil = the stream is not
	// looked at.
	JetStream jetstream.JetStream
	// Stream is the enrolment stream; default bus.StreamEnrolments.
	Stream string
	// PhotoDirs are photo store roots (pkg/photostore layout).
	PhotoDirs []string
	// SnapshotFiles are directory snapshot files (missing files are fine:
	// not every service keeps one).
	SnapshotFiles []string
	// Actor names who republishes templates (EnrolmentChange.actor, a
	// service actor); default "facegate-keys".
	Actor string
	// MaxPasses bounds how often Rotate replays the stream when concurrent
	// changes made republishes fail; default 5.
	MaxPasses int
	// Progress, when set, is told about long work: what is being done,
	// how many of how many.
	Progress func(what string, done, total int)
	Log      *zap.Logger

	// beforePublish, when set, runs between the person check and the
	// republish (tests use it to land a change in that window).
	beforePublish func()
}

func (c *Config) defaults() error {
	if c.Keys == nil {
		return errors.New("keyrotation: config: Keys is nil")
	}
	if c.Stream == "" {
		c.Stream = bus.StreamEnrolments
	}
	if c.Actor == "" {
		c.Actor = "facegate-keys"
	}
	if c.MaxPasses <= 0 {
		c.MaxPasses = 5
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	if c.Progress == nil {
		c.Progress = func(string, int, int) {}
	}
	return nil
}

// DataLayout returns the photo store and snapshot file of an all-in-one
// data folder (pkg/allinone: <data>/photos, <data>/directory/directory.snapshot).
func DataLayout(dataDir string) (photoDir, snapshotFile string) {
	return filepath.Join(dataDir, "photos"), filepath.Join(dataDir, "directory", directory.SnapshotFile)
}

// KeyUse is one KEK and how many stored objects are wrapped under it.
type KeyUse struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created,omitzero"`
	Active  bool      `json:"active"`
	// Present is false for a KEK that objects name but that is not in the
	// key folder: those objects cannot be opened (shredded or lost).
	Present bool `json:"present"`
	// Stream counts PhotoAdd messages (in effect or not) whose template is
	// wrapped under the key; Photos photo files; Snapshots snapshot files.
	Stream    int `json:"stream_templates"`
	Photos    int `json:"photo_files"`
	Snapshots int `json:"snapshots"`
}

// Total is the number of objects wrapped under the key.
func (k KeyUse) Total() int { return k.Stream + k.Photos + k.Snapshots }

// Uses says in words what still uses the key ("3 stream templates, 1
// photo file"), "" when nothing does.
func (k KeyUse) Uses() string {
	var parts []string
	add := func(n int, one, many string) {
		switch {
		case n == 1:
			parts = append(parts, "1 "+one)
		case n > 1:
			parts = append(parts, fmt.Sprintf("%d %s", n, many))
		}
	}
	add(k.Stream, "stream template", "stream templates")
	add(k.Photos, "photo file", "photo files")
	add(k.Snapshots, "snapshot", "snapshots")
	return strings.Join(parts, ", ")
}

// Status is what Status found.
type Status struct {
	Active string   `json:"active"`
	Keys   []KeyUse `json:"keys"`
	// Checked lists the stores looked at (StoreStream, StorePhotos,
	// StoreSnapshot).
	Checked []string `json:"checked"`
	// Unreadable counts objects that are not sealed blobs at all (a
	// PhotoAdd without a template counts nowhere).
	Unreadable int `json:"unreadable"`
	// StreamLastSeq is the stream's last sequence when it was read.
	StreamLastSeq uint64 `json:"stream_last_seq,omitempty"`
}

// Key returns the entry of a key id.
func (s *Status) Key(id string) (KeyUse, bool) {
	for _, k := range s.Keys {
		if k.ID == id {
			return k, true
		}
	}
	return KeyUse{}, false
}

// keyCreated reads the creation time from a FileKeyProvider key id
// ("kek-20261127T124617Z-1a2b3c4d"), else the key file's modification time.
func keyCreated(keysDir, id string) time.Time {
	if rest, ok := strings.CutPrefix(id, "kek-"); ok && len(rest) >= 16 {
		if t, err := time.Parse("20060102T150405Z", rest[:16]); err == nil {
			return t
		}
	}
	if keysDir != "" {
		if fi, err := os.Stat(filepath.Join(keysDir, id+".kek")); err == nil {
			return fi.ModTime().UTC()
		}
	}
	return time.Time{}
}

// GetStatus lists the KEKs and counts, per store, the objects wrapped under
// each.
func GetStatus(ctx context.Context, cfg Config) (*Status, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	st := &Status{Active: cfg.Keys.ActiveKeyID()}
	uses := map[string]*KeyUse{}
	use := func(id string) *KeyUse {
		u := uses[id]
		if u == nil {
			u = &KeyUse{ID: id}
			uses[id] = u
		}
		return u
	}
	for _, id := range cfg.Keys.KeyIDs() {
		u := use(id)
		u.Present = true
	}
	if cfg.JetStream != nil {
		sc, err := scanStream(ctx, cfg)
		if err != nil {
			return nil, err
		}
		st.Checked = append(st.Checked, StoreStream)
		st.StreamLastSeq = sc.lastSeq
		for _, e := range sc.adds {
			if e.keyID == "" {
				if len(e.change.GetPhotoAdd().GetSealedTemplate()) > 0 {
					st.Unreadable++
				}
				continue
			}
			use(e.keyID).Stream++
		}
	}
	if len(cfg.PhotoDirs) > 0 {
		st.Checked = append(st.Checked, StorePhotos)
		for _, dir := range cfg.PhotoDirs {
			files, err := listPhotos(dir)
			if err != nil {
				return nil, err
			}
			for _, f := range files {
				id, err := fileKeyID(f)
				if err != nil {
					if errors.Is(err, os.ErrNotExist) {
						continue // deleted meanwhile
					}
					if errors.Is(err, sealed.ErrFormat) {
						st.Unreadable++
						continue
					}
					return nil, err
				}
				use(id).Photos++
			}
		}
	}
	if len(cfg.SnapshotFiles) > 0 {
		st.Checked = append(st.Checked, StoreSnapshot)
		for _, f := range cfg.SnapshotFiles {
			id, err := fileKeyID(f)
			switch {
			case errors.Is(err, os.ErrNotExist):
				continue
			case errors.Is(err, sealed.ErrFormat):
				st.Unreadable++
				continue
			case err != nil:
				return nil, err
			}
			use(id).Snapshots++
		}
	}
	for id, u := range uses {
		u.Active = id == st.Active
		if u.Present {
			u.Created = keyCreated(cfg.KeysDir, id)
		}
		st.Keys = append(st.Keys, *u)
	}
	sort.Slice(st.Keys, func(i, j int) bool { return st.Keys[i].ID < st.Keys[j].ID })
	return st, nil
}

// fileKeyID reads the KEK id a sealed file names.
func fileKeyID(path string) (string, error) {
	b, err := readHeader(path)
	if err != nil {
		return "", err
	}
	id, err := sealed.BlobKeyID(b)
	if err != nil {
		return "", fmt.Errorf("keyrotation: %s: %w", path, err)
	}
	return id, nil
}

// readHeader reads enough of a sealed file to name its key (the header is
// at most 6+255+2+65535 bytes; FileKeyProvider's is about 100).
func readHeader(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 6+255+2+0xffff+12+16)
	n, err := f.Read(buf)
	if n == 0 && err != nil {
		return nil, fmt.Errorf("keyrotation: read %s: %w", path, err)
	}
	return buf[:n], nil
}

// ErrInUse: Retire found objects still wrapped under the key.
var ErrInUse = errors.New("key still wraps stored objects")

// ErrNotChecked: Retire was not given every store that must be checked.
var ErrNotChecked = errors.New("store not checked")

// RetireResult is what Retire did.
type RetireResult struct {
	Key     string `json:"key"`
	Removed bool   `json:"removed"`
	Forced  bool   `json:"forced"`
	// Shredded is what was still wrapped under the key when it was removed
	// with force: unreadable from now on.
	Shredded KeyUse   `json:"shredded"`
	Checked  []string `json:"checked"`
	// Unchecked lists the stores not looked at (possible only with
	// force): whatever they hold under the key is shredded too, uncounted.
	Unchecked []string `json:"unchecked,omitempty"`
}

// Retire removes a KEK that is not active once Status finds nothing
// wrapped under it. It needs the stream and the photo store to be
// configured (the snapshot is an optimisation: one that no longer opens is
// replaced by a full replay). With force it removes the key whatever
// still uses it: every such object becomes unreadable for good
// (crypto-shredding); the result says what was shredded.
func Retire(ctx context.Context, cfg Config, keyID string, force bool) (*RetireResult, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if keyID == cfg.Keys.ActiveKeyID() {
		return nil, fmt.Errorf("keyrotation: retire %q: it is the active key; rotate first", keyID)
	}
	present := false
	for _, id := range cfg.Keys.KeyIDs() {
		present = present || id == keyID
	}
	if !present {
		return nil, fmt.Errorf("keyrotation: retire %q: %w", keyID, sealed.ErrUnknownKey)
	}
	res := &RetireResult{Key: keyID, Forced: force}
	if !force {
		if cfg.JetStream == nil {
			return nil, fmt.Errorf("keyrotation: retire %q: the enrolment stream must be checked (give NATS): %w", keyID, ErrNotChecked)
		}
		if len(cfg.PhotoDirs) == 0 {
			return nil, fmt.Errorf("keyrotation: retire %q: the photo store must be checked (give its folder): %w", keyID, ErrNotChecked)
		}
	}
	st, err := GetStatus(ctx, cfg)
	if err != nil {
		return nil, err
	}
	res.Checked = st.Checked
	for _, store := range []string{StoreStream, StorePhotos, StoreSnapshot} {
		if !slices.Contains(st.Checked, store) {
			res.Unchecked = append(res.Unchecked, store)
		}
	}
	u, _ := st.Key(keyID)
	if u.Total() > 0 {
		if !force {
			return res, fmt.Errorf("keyrotation: retire %q: still used by %s (run rotate first): %w", keyID, u.Uses(), ErrInUse)
		}
		res.Shredded = u
		cfg.Log.Warn("removing a key that still wraps stored objects: they become unreadable",
			zap.String("key", keyID), zap.String("shredded", u.Uses()))
	}
	if err := cfg.Keys.Remove(ctx, keyID); err != nil {
		return res, fmt.Errorf("keyrotation: retire: %w", err)
	}
	res.Removed = true
	return res, nil
}
