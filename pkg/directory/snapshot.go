package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/atomicfile"
	"github.com/facegate/facegate/pkg/index"
	"github.com/facegate/facegate/pkg/policy"
	"github.com/facegate/facegate/pkg/sealed"
)

// snapshotVersion is the version of the JSON inside the sealed blob.
const snapshotVersion = 1

// Snapshot is the decoded content of a snapshot file. It holds plaintext
// templates: only ever handle it in memory.
type Snapshot struct {
	Version int `json:"version"`
	// Sequence is the last stream sequence the snapshot includes.
	Sequence uint64          `json:"sequence"`
	Taken    time.Time       `json:"taken"`
	State    policy.Snapshot `json:"state"`
	Spaces   []SnapshotSpace `json:"spaces"`
}

// SnapshotSpace is one space's templates in a snapshot.
type SnapshotSpace struct {
	Name      string             `json:"name"`
	Dim       int                `json:"dim"`
	Templates []SnapshotTemplate `json:"templates"`
}

// SnapshotTemplate is one template in a snapshot; Vector is EncodeVector's
// bytes.
type SnapshotTemplate struct {
	ID     string `json:"id"`
	Person string `json:"person"`
	Site   string `json:"site,omitempty"`
	Vector []byte `json:"vector"`
}

// ReadSnapshotFile opens and decodes a snapshot file (for tools and tests).
func ReadSnapshotFile(ctx context.Context, kp sealed.KeyProvider, path string) (*Snapshot, error) {
	blob, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("directory: read snapshot: %w", err)
	}
	plain, err := sealed.Open(ctx, kp, blob, SnapshotContext)
	if err != nil {
		return nil, fmt.Errorf("directory: open snapshot %s: %w", path, err)
	}
	snap, err := DecodeSnapshot(plain)
	clear(plain)
	if err != nil {
		return nil, fmt.Errorf("directory: snapshot %s: %w", path, err)
	}
	return snap, nil
}

// DecodeSnapshot decodes an opened snapshot and checks it: version, a state
// that policy.FromSnapshot accepts, and templates with valid ids and
// vectors of their space's dimension.
func DecodeSnapshot(plain []byte) (*Snapshot, error) {
	var snap Snapshot
	if err := json.Unmarshal(plain, &snap); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if snap.Version != snapshotVersion {
		return nil, fmt.Errorf("version %d, want %d", snap.Version, snapshotVersion)
	}
	if _, err := policy.FromSnapshot(snap.State); err != nil {
		return nil, err
	}
	for _, sp := range snap.Spaces {
		if sp.Dim < 1 || sp.Dim > index.MaxDim {
			return nil, fmt.Errorf("space %q: dimension %d", sp.Name, sp.Dim)
		}
		for _, t := range sp.Templates {
			if err := index.ValidateInfo(index.TemplateInfo{ID: t.ID, Person: t.Person, Site: t.Site}); err != nil {
				return nil, fmt.Errorf("space %q: %w", sp.Name, err)
			}
			v, err := DecodeVector(t.Vector, sp.Dim)
			if err != nil {
				return nil, fmt.Errorf("space %q template %q: %w", sp.Name, t.ID, err)
			}
			if _, err := index.CheckVector(sp.Dim, v); err != nil {
				return nil, fmt.Errorf("space %q template %q: %w", sp.Name, t.ID, err)
			}
		}
	}
	return &snap, nil
}

// loadSnapshot loads the snapshot if there is one. A missing file is not an
// error. On error the state and index may be partly filled: the caller
// resets them.
func (d *Directory) loadSnapshot(ctx context.Context) error {
	path := d.snapshotPath()
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		d.log.Info("no snapshot; replaying the whole stream", zap.String("path", path))
		return nil
	}
	snap, err := ReadSnapshotFile(ctx, d.cfg.Keys, path)
	if err != nil {
		return err
	}
	// Spaces added since the snapshot have templates only a full replay
	// can recover (their PhotoAdds were skipped), so the snapshot must be
	// for exactly the configured spaces.
	if len(snap.Spaces) != len(d.spaces) {
		return fmt.Errorf("directory: snapshot has %d spaces, %d configured", len(snap.Spaces), len(d.spaces))
	}
	st, err := policy.FromSnapshot(snap.State)
	if err != nil {
		return err
	}
	templates := map[string]map[string]storedTemplate{}
	for _, ss := range snap.Spaces {
		sp, ok := d.spaces[ss.Name]
		if !ok || sp.Dim != ss.Dim {
			return fmt.Errorf("directory: snapshot space %q (dim %d) is not configured", ss.Name, ss.Dim)
		}
		m := map[string]storedTemplate{}
		batch := make([]index.Template, 0, len(ss.Templates))
		for _, t := range ss.Templates {
			vec, err := DecodeVector(t.Vector, sp.Dim)
			if err != nil {
				return fmt.Errorf("directory: snapshot template %q: %w", t.ID, err)
			}
			m[t.ID] = storedTemplate{person: t.Person, site: t.Site, vec: vec}
			batch = append(batch, index.Template{TemplateInfo: index.TemplateInfo{ID: t.ID, Person: t.Person, Site: t.Site, Photo: t.ID}, Vector: vec})
		}
		if err := d.idx.Upsert(ctx, sp.collection, batch); err != nil {
			return fmt.Errorf("directory: snapshot space %q: index templates: %w", ss.Name, err)
		}
		templates[ss.Name] = m
	}
	d.mu.Lock()
	d.state = st
	d.templates = templates
	d.applied = snap.Sequence
	d.mu.Unlock()
	for name, m := range templates {
		d.m.templates.WithLabelValues(name).Set(float64(len(m)))
	}
	d.m.appliedSeq.Set(float64(snap.Sequence))
	d.startSeq = snap.Sequence + 1
	d.m.snapshots.WithLabelValues("loaded").Inc()
	d.log.Info("snapshot loaded", zap.String("path", path), zap.Uint64("sequence", snap.Sequence), zap.Time("taken", snap.Taken))
	return nil
}

// buildSnapshot copies the state under the read lock.
// seq is the last sequence the state includes (the one being applied when
// an erasure forces a snapshot).
func (d *Directory) buildSnapshot(seq uint64) *Snapshot {
	d.mu.RLock()
	defer d.mu.RUnlock()
	snap := &Snapshot{Version: snapshotVersion, Sequence: seq, Taken: time.Now().UTC(), State: d.state.Export()}
	for _, sp := range d.cfg.Spaces {
		ss := SnapshotSpace{Name: sp.Name, Dim: sp.Dim, Templates: make([]SnapshotTemplate, 0, len(d.templates[sp.Name]))}
		for id, t := range d.templates[sp.Name] {
			ss.Templates = append(ss.Templates, SnapshotTemplate{ID: id, Person: t.person, Site: t.site, Vector: EncodeVector(t.vec)})
		}
		sort.Slice(ss.Templates, func(i, j int) bool { return ss.Templates[i].ID < ss.Templates[j].ID })
		snap.Spaces = append(snap.Spaces, ss)
	}
	return snap
}

// writeSnapshot writes the snapshot; a failure is logged and counted (the
// stream still holds everything) and retried at the next trigger.
func (d *Directory) writeSnapshot(ctx context.Context, seq uint64) bool {
	if err := d.writeSnapshotAt(ctx, seq); err != nil {
		d.m.snapshots.WithLabelValues("write_error").Inc()
		d.log.Error("snapshot write failed", zap.String("path", d.snapshotPath()), zap.Error(err))
		return false
	}
	d.m.snapshots.WithLabelValues("written").Inc()
	d.sinceSnapshot = 0
	d.lastSnapshot = time.Now()
	return true
}

// WriteSnapshot writes the snapshot now. Run writes snapshots on its own
// schedule; this is for a snapshot on demand (e.g. before a planned
// restart). Safe to call while Run runs.
func (d *Directory) WriteSnapshot(ctx context.Context) error {
	return d.writeSnapshotAt(ctx, d.Applied())
}

func (d *Directory) writeSnapshotAt(ctx context.Context, seq uint64) error {
	if d.cfg.SnapshotDir == "" {
		return errors.New("directory: no snapshot directory configured")
	}
	d.snapMu.Lock()
	defer d.snapMu.Unlock()
	snap := d.buildSnapshot(seq)
	plain, err := json.Marshal(snap)
	if err != nil {
		return fmt.Errorf("directory: encode snapshot: %w", err)
	}
	blob, err := sealed.Seal(ctx, d.cfg.Keys, plain, SnapshotContext)
	clear(plain)
	if err != nil {
		return fmt.Errorf("directory: seal snapshot: %w", err)
	}
	if err := os.MkdirAll(d.cfg.SnapshotDir, 0o700); err != nil {
		return fmt.Errorf("directory: snapshot dir: %w", err)
	}
	if err := atomicfile.Write(d.snapshotPath(), blob, 0o600); err != nil {
		return fmt.Errorf("directory: write snapshot: %w", err)
	}
	d.log.Debug("snapshot written", zap.Uint64("sequence", snap.Sequence))
	return nil
}
