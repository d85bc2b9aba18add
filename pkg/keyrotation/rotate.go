package keyrotation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/atomicfile"
	"github.com/facegate/facegate/pkg/sealed"
)

// FileResult is what rotation did to a set of sealed files.
type FileResult struct {
	Rewrapped int `json:"rewrapped"`
	// Current: already under the active key.
	Current int `json:"current"`
	// Failed: could not be re-wrapped (not a sealed blob, key gone, or the
	// file kept changing); they stay as they are.
	Failed int `json:"failed"`
}

// Summary is what Rotate did.
type Summary struct {
	// Active is the key everything is now wrapped under; Created says
	// whether Rotate made it, Resumed that it finished an earlier
	// rotation instead (objects were still under older keys).
	Active    string       `json:"active"`
	Created   bool         `json:"created"`
	Resumed   bool         `json:"resumed"`
	Stream    StreamResult `json:"stream"`
	Photos    FileResult   `json:"photos"`
	Snapshots FileResult   `json:"snapshots"`
	// After is the status once done.
	After *Status `json:"after"`
}

// RotateOptions choose whether a new key is made.
type RotateOptions struct {
	// NoNewKey only re-wraps objects under older keys with the active key
	// (finishing a rotation, or catching objects sealed by services that
	// had not reloaded the keys yet).
	NoNewKey bool
}

// Rotate makes a new active KEK and re-wraps every object of the configured
// stores that is under another key. When objects are still under an older
// key that is present (an unfinished rotation), it finishes that rotation
// instead of making yet another key (Summary.Resumed), so re-running after
// a crash converges. Objects that cannot be re-wrapped are counted, logged
// and make Rotate return an error after everything else was done.
func Rotate(ctx context.Context, cfg Config, opts RotateOptions) (*Summary, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	sum := &Summary{}
	if !opts.NoNewKey {
		newKey := cfg.Keys.ActiveKeyID() == ""
		if !newKey {
			st, err := GetStatus(ctx, cfg)
			if err != nil {
				return nil, err
			}
			pending := false
			for _, k := range st.Keys {
				pending = pending || (!k.Active && k.Present && k.Total() > 0)
			}
			newKey = !pending
			sum.Resumed = pending
		}
		if newKey {
			id, err := cfg.Keys.Rotate(ctx)
			if err != nil {
				return nil, fmt.Errorf("keyrotation: %w", err)
			}
			sum.Created = true
			cfg.Log.Info("new active key", zap.String("key", id))
		}
	}
	active := cfg.Keys.ActiveKeyID()
	if active == "" {
		return nil, fmt.Errorf("keyrotation: %w", sealed.ErrNoActiveKey)
	}
	sum.Active = active
	var errs []error
	// Photos first: they are the largest objects and need no coordination.
	for _, dir := range cfg.PhotoDirs {
		files, err := listPhotos(dir)
		if err != nil {
			return sum, err
		}
		for i, f := range files {
			if err := ctx.Err(); err != nil {
				return sum, fmt.Errorf("keyrotation: %w", err)
			}
			rewrapCounted(ctx, cfg, f, active, &sum.Photos)
			cfg.Progress("re-wrapping photos", i+1, len(files))
		}
	}
	if cfg.JetStream != nil {
		res, err := rotateStream(ctx, cfg, active)
		sum.Stream = res
		if err != nil {
			return sum, err
		}
	}
	for _, f := range cfg.SnapshotFiles {
		rewrapCounted(ctx, cfg, f, active, &sum.Snapshots)
	}
	if n := sum.Photos.Failed + sum.Snapshots.Failed + sum.Stream.Failed; n > 0 {
		errs = append(errs, fmt.Errorf("keyrotation: %d objects could not be re-wrapped (see the log)", n))
	}
	st, err := GetStatus(ctx, cfg)
	if err != nil {
		errs = append(errs, err)
	}
	sum.After = st
	return sum, errors.Join(errs...)
}

func rewrapCounted(ctx context.Context, cfg Config, path, active string, r *FileResult) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return // no snapshot here, or a photo deleted meanwhile
	}
	changed, err := rewrapFile(ctx, cfg.Keys, path, active)
	switch {
	case err != nil:
		r.Failed++
		cfg.Log.Error("file not re-wrapped", zap.String("path", path), zap.Error(err))
	case changed:
		r.Rewrapped++
	default:
		r.Current++
	}
}

// errChanged: the file changed while it was being re-wrapped.
var errChanged = errors.New("file changed while re-wrapping")

// rewrapFile re-wraps one sealed file in place by atomic replace. A file
// that disappears meanwhile is left gone (a deleted photo must not come
// back); one that changes meanwhile is read again (a few times).
func rewrapFile(ctx context.Context, kp sealed.KeyProvider, path, active string) (bool, error) {
	for try := 0; try < 3; try++ {
		changed, err := rewrapOnce(ctx, kp, path, active)
		if errors.Is(err, errChanged) {
			continue
		}
		return changed, err
	}
	return false, fmt.Errorf("keyrotation: %s: %w", path, errChanged)
}

func rewrapOnce(ctx context.Context, kp sealed.KeyProvider, path, active string) (bool, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("keyrotation: %w", err)
	}
	blob, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("keyrotation: %w", err)
	}
	id, err := sealed.BlobKeyID(blob)
	if err != nil {
		return false, fmt.Errorf("keyrotation: %s: %w", path, err)
	}
	if id == active {
		return false, nil
	}
	nb, err := sealed.Rewrap(ctx, kp, blob)
	if err != nil {
		return false, fmt.Errorf("keyrotation: %s: %w", path, err)
	}
	// Replace only the file that was read: a photo deleted or a snapshot
	// rewritten meanwhile must stay as its writer left it. (A change in
	// the instant between this check and the rename is not caught.)
	fi2, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("keyrotation: %w", err)
	}
	if !os.SameFile(fi, fi2) || fi2.Size() != fi.Size() || !fi2.ModTime().Equal(fi.ModTime()) {
		return false, errChanged
	}
	again, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(again, blob) {
		return false, errChanged
	}
	if err := atomicfile.Write(path, nb, fi.Mode().Perm()); err != nil {
		return false, fmt.Errorf("keyrotation: %w", err)
	}
	return true, nil
}

// listPhotos lists the photo files of a photo store (<dir>/<person hash>/
// <photo id>), skipping atomicfile's temporaries. A missing store is
// empty.
func listPhotos(dir string) ([]string, error) {
	persons, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keyrotation: photo store %s: %w", dir, err)
	}
	var out []string
	for _, p := range persons {
		if !p.IsDir() || strings.HasPrefix(p.Name(), ".") {
			continue
		}
		pdir := filepath.Join(dir, p.Name())
		photos, err := os.ReadDir(pdir)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("keyrotation: photo store %s: %w", dir, err)
		}
		for _, f := range photos {
			if f.Type().IsRegular() && !strings.HasPrefix(f.Name(), ".") {
				out = append(out, filepath.Join(pdir, f.Name()))
			}
		}
	}
	sort.Strings(out)
	return out, nil
}
