// Package directory turns the ENROLMENTS stream into what the matcher and the
// API's verify/identify endpoints need: the access state (pkg/policy) and one
// index collection of face templates per embedding space (pkg/index).
//
// A Directory replays the stream with an ordered consumer, from the start or
// from the sequence after its snapshot, then follows it. Every change is
// applied to the state; PhotoAdd templates are unsealed with the key provider
// (sealed.TemplateContext(space, photo_id)) and upserted into their space's
// collection (template id = photo id); PhotoRemove and person deletions
// (including erasure tombstones, which name the person only by
// events.PersonHash) remove templates. A malformed or invalid change is
// logged without its payload, counted, and skipped: one bad message must not
// stop every door.
//
// # Snapshots
//
// With Config.SnapshotDir set, the directory writes the state and the
// templates (the plaintext vectors, so a restart needs no key round trips
// per template) sealed under SnapshotContext with package sealed, atomically
// (pkg/atomicfile), every SnapshotEvery changes or SnapshotInterval, and
// immediately after any person deletion so an erased person's templates do
// not survive on disk. On start it loads the snapshot and resumes after its
// stream sequence; a snapshot that does not open or decode, was taken for
// other spaces, or is ahead of the stream is logged and ignored, and the
// stream is replayed from the start.
package directory

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/index"
	"github.com/facegate/facegate/pkg/index/embedded"
	"github.com/facegate/facegate/pkg/policy"
	"github.com/facegate/facegate/pkg/sealed"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// Space is an embedding space the directory keeps templates for.
type Space struct {
	Name string // e.g. "dlib-resnet34-128+mirror"
	Dim  int    // e.g. 128
}

// Defaults.
const (
	DefaultSnapshotEvery    = 1000
	DefaultSnapshotInterval = 5 * time.Minute
	// SnapshotContext binds a snapshot's sealed blob: it opens as nothing else.
	SnapshotContext = "facegate/directory-snapshot/v1"
	// SnapshotFile is the snapshot's file name inside SnapshotDir.
	SnapshotFile = "directory.snapshot"
)

// Config configures a Directory.
type Config struct {
	// JetStream reads the ENROLMENTS stream. Required.
	JetStream jetstream.JetStream
	// Keys unseal templates and seal snapshots. Required.
	Keys sealed.KeyProvider
	// Spaces are the embedding spaces to keep templates of; PhotoAdds of
	// other spaces are recorded in the state but their templates skipped.
	Spaces []Space
	// Index holds the collections; default: a new embedded.Index.
	Index index.Index
	// SnapshotDir is where the snapshot is kept; "" = no snapshots.
	SnapshotDir string
	// SnapshotEvery and SnapshotInterval bound how stale a snapshot gets
	// (defaults DefaultSnapshotEvery changes, DefaultSnapshotInterval).
	SnapshotEvery    int
	SnapshotInterval time.Duration
	// Stream is the stream to replay; default bus.StreamEnrolments.
	Stream     string
	Log        *zap.Logger
	Registerer prometheus.Registerer
}

// storedTemplate is a template as the directory keeps it for snapshots and
// for re-siting a person's templates.
type storedTemplate struct {
	person, site string
	vec          []float32
}

// Directory is the replayed ENROLMENTS stream. Create it with New, start it
// with Run.
type Directory struct {
	cfg    Config
	log    *zap.Logger
	idx    index.Index
	spaces map[string]spaceInfo // space name -> collection

	mu        sync.RWMutex
	state     *policy.State
	templates map[string]map[string]storedTemplate // space -> template id -> template
	applied   uint64
	progress  chan struct{} // closed and replaced whenever applied moves or readiness changes
	ready     bool
	runErr    error

	running atomic.Bool

	// snapMu serialises snapshot writes so an older snapshot never lands
	// after a newer one (which could resurrect an erased person).
	snapMu sync.Mutex
	// snapshot bookkeeping, owned by the Run goroutine
	sinceSnapshot int
	lastSnapshot  time.Time
	startSeq      uint64

	m metrics
}

type spaceInfo struct {
	Space
	collection string
}

type metrics struct {
	applied    *prometheus.CounterVec
	malformed  prometheus.Counter
	rejected   prometheus.Counter
	skipped    *prometheus.CounterVec
	templates  *prometheus.GaugeVec
	appliedSeq prometheus.Gauge
	snapshots  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "facegate_directory_changes_applied_total",
			Help: "Enrolment changes applied, by kind."}, []string{"kind"}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{Name: "facegate_directory_malformed_total",
			Help: "Enrolment messages that did not decode and were skipped."}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{Name: "facegate_directory_changes_rejected_total",
			Help: "Enrolment changes that decoded but were invalid and were skipped."}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "facegate_directory_templates_skipped_total",
			Help: "PhotoAdd templates not indexed, by reason (unknown_space, unseal, dimension, index)."}, []string{"reason"}),
		templates: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "facegate_directory_templates",
			Help: "Templates held, by embedding space."}, []string{"space"}),
		appliedSeq: prometheus.NewGauge(prometheus.GaugeOpts{Name: "facegate_directory_applied_sequence",
			Help: "Last ENROLMENTS stream sequence applied."}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "facegate_directory_snapshots_total",
			Help: "Snapshot writes and loads, by result (written, write_error, loaded, load_error)."}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.applied, m.malformed, m.rejected, m.skipped, m.templates, m.appliedSeq, m.snapshots} {
		if err := reg.Register(c); err != nil {
			return metrics{}, fmt.Errorf("directory: register metrics: %w", err)
		}
	}
	return m, nil
}

// CollectionName derives an index collection name from an embedding space
// name: lower case, every character outside [a-z0-9-] becomes '-' (so
// "dlib-resnet34-128+mirror" is "dlib-resnet34-128-mirror").
func CollectionName(space string) (string, error) {
	var b strings.Builder
	for _, r := range strings.ToLower(space) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	name := b.String()
	if err := index.ValidateName(name); err != nil {
		return "", fmt.Errorf("directory: space %q: %w", space, err)
	}
	return name, nil
}

// New checks the configuration, creates the collections and loads the
// snapshot when there is one. It reads no stream yet: Run does.
func New(ctx context.Context, cfg Config) (*Directory, error) {
	if cfg.JetStream == nil {
		return nil, errors.New("directory: config: JetStream is nil")
	}
	if cfg.Keys == nil {
		return nil, errors.New("directory: config: Keys is nil")
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.Stream == "" {
		cfg.Stream = bus.StreamEnrolments
	}
	if cfg.SnapshotEvery <= 0 {
		cfg.SnapshotEvery = DefaultSnapshotEvery
	}
	if cfg.SnapshotInterval <= 0 {
		cfg.SnapshotInterval = DefaultSnapshotInterval
	}
	d := &Directory{cfg: cfg, log: cfg.Log.Named("directory"), spaces: map[string]spaceInfo{},
		state: policy.NewState(), templates: map[string]map[string]storedTemplate{}, progress: make(chan struct{})}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	d.m = m
	byCollection := map[string]string{}
	for _, sp := range cfg.Spaces {
		if sp.Name == "" || sp.Dim < 1 || sp.Dim > index.MaxDim {
			return nil, fmt.Errorf("directory: config: space %q with dimension %d", sp.Name, sp.Dim)
		}
		if _, dup := d.spaces[sp.Name]; dup {
			return nil, fmt.Errorf("directory: config: space %q listed twice", sp.Name)
		}
		coll, err := CollectionName(sp.Name)
		if err != nil {
			return nil, err
		}
		if other, ok := byCollection[coll]; ok {
			return nil, fmt.Errorf("directory: config: spaces %q and %q map to one collection %q", other, sp.Name, coll)
		}
		byCollection[coll] = sp.Name
		d.spaces[sp.Name] = spaceInfo{Space: sp, collection: coll}
		d.templates[sp.Name] = map[string]storedTemplate{}
	}
	if cfg.Index == nil {
		x, err := embedded.New(embedded.Options{})
		if err != nil {
			return nil, fmt.Errorf("directory: create index: %w", err)
		}
		cfg.Index = x
		d.cfg.Index = x
	}
	d.idx = cfg.Index
	for _, sp := range d.spaces {
		if err := d.idx.CreateCollection(ctx, index.Collection{Name: sp.collection, Dim: sp.Dim}); err != nil {
			return nil, fmt.Errorf("directory: create collection %q: %w", sp.collection, err)
		}
		d.m.templates.WithLabelValues(sp.Name).Set(0)
	}
	d.startSeq = 1
	if cfg.SnapshotDir != "" {
		if err := d.loadSnapshot(ctx); err != nil {
			// A snapshot is an optimisation: the stream is the truth.
			d.m.snapshots.WithLabelValues("load_error").Inc()
			d.log.Error("snapshot unusable; replaying the whole stream", zap.String("path", d.snapshotPath()), zap.Error(err))
			if err := d.reset(ctx); err != nil {
				return nil, err
			}
		}
	}
	return d, nil
}

// reset empties the state and the collections (after a failed snapshot load
// half-filled them).
func (d *Directory) reset(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.state = policy.NewState()
	for name, sp := range d.spaces {
		ids := make([]string, 0, len(d.templates[name]))
		for id := range d.templates[name] {
			ids = append(ids, id)
		}
		if len(ids) > 0 {
			if _, err := d.idx.DeleteTemplates(ctx, sp.collection, ids); err != nil {
				return fmt.Errorf("directory: reset collection %q: %w", sp.collection, err)
			}
		}
		d.templates[name] = map[string]storedTemplate{}
		d.m.templates.WithLabelValues(name).Set(0)
	}
	d.applied = 0
	d.startSeq = 1
	return nil
}

// Index returns the index holding the collections.
func (d *Directory) Index() index.Index { return d.idx }

// Collection returns the index collection of an embedding space.
func (d *Directory) Collection(space string) (string, error) {
	sp, ok := d.spaces[space]
	if !ok {
		return "", fmt.Errorf("directory: embedding space %q is not configured: %w", space, index.ErrUnknownCollection)
	}
	return sp.collection, nil
}

// Spaces returns the configured spaces.
func (d *Directory) Spaces() []Space {
	return append([]Space(nil), d.cfg.Spaces...)
}

// View runs fn under the read lock; fn must not keep s or call back into d.
func (d *Directory) View(fn func(s *policy.State)) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	fn(d.state)
}

// Person returns a person.
func (d *Directory) Person(id string) (policy.Person, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.state.Person(id)
}

// People returns the people of a site ("" = all), sorted by id.
func (d *Directory) People(site string) []policy.Person {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.state.People(site)
}

// Applied is the last stream sequence applied.
func (d *Directory) Applied() uint64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.applied
}

// TemplateCount is the number of templates held for a space.
func (d *Directory) TemplateCount(space string) int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.templates[space])
}

// WaitReady waits until the directory has applied the stream as it was when
// Run started. It returns Run's error if Run ended first.
func (d *Directory) WaitReady(ctx context.Context) error {
	return d.wait(ctx, func() bool { return d.ready })
}

// WaitApplied waits until stream sequence seq has been applied (read your
// writes: the API passes its PubAck's sequence).
func (d *Directory) WaitApplied(ctx context.Context, seq uint64) error {
	return d.wait(ctx, func() bool { return d.applied >= seq })
}

func (d *Directory) wait(ctx context.Context, done func() bool) error {
	for {
		d.mu.RLock()
		ok, runErr, ch := done(), d.runErr, d.progress
		d.mu.RUnlock()
		if ok {
			return nil
		}
		if runErr != nil {
			return fmt.Errorf("directory: stopped: %w", runErr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("directory: wait: %w", ctx.Err())
		case <-ch:
		}
	}
}

// notifyLocked wakes waiters; d.mu must be held for writing.
func (d *Directory) notifyLocked() {
	close(d.progress)
	d.progress = make(chan struct{})
}

// Run replays the stream and follows it until ctx ends (then it returns
// nil) or the stream cannot be read.
func (d *Directory) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("directory: Run called twice")
	}
	err := d.run(ctx)
	if ctx.Err() != nil {
		err = nil
	}
	d.mu.Lock()
	if err != nil {
		d.runErr = err
	} else {
		d.runErr = errors.New("directory: Run ended")
	}
	d.notifyLocked()
	d.mu.Unlock()
	if d.cfg.SnapshotDir != "" && d.sinceSnapshot > 0 {
		// Leave a fresh snapshot behind for the next start.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		d.writeSnapshot(wctx, d.Applied())
		cancel()
	}
	return err
}

func (d *Directory) run(ctx context.Context) error {
	js := d.cfg.JetStream
	stream, err := js.Stream(ctx, d.cfg.Stream)
	if err != nil {
		return fmt.Errorf("directory: open stream %s: %w", d.cfg.Stream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("directory: stream %s info: %w", d.cfg.Stream, err)
	}
	start := d.startSeq
	if start > 1 && info.State.LastSeq+1 < start {
		// The stream is behind the snapshot: it was recreated. The snapshot
		// describes a history that no longer exists.
		d.log.Error("snapshot is ahead of the stream; replaying the whole stream",
			zap.Uint64("snapshot_next", start), zap.Uint64("stream_last", info.State.LastSeq))
		if err := d.reset(ctx); err != nil {
			return err
		}
		start = 1
	}
	d.lastSnapshot = time.Now()
	if info.State.Msgs == 0 || info.State.LastSeq < start {
		d.setReady()
	}
	cons, err := js.OrderedConsumer(ctx, d.cfg.Stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   start,
	})
	if err != nil {
		return fmt.Errorf("directory: ordered consumer on %s from %d: %w", d.cfg.Stream, start, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("directory: consume %s: %w", d.cfg.Stream, err)
	}
	defer it.Stop()
	ticker := time.NewTicker(d.cfg.SnapshotInterval)
	defer ticker.Stop()
	for {
		// Wake at least every second to take interval snapshots on a quiet
		// stream.
		nctx, cancel := context.WithTimeout(ctx, time.Second)
		msg, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
				// Caught up although the last messages were purged (an
				// erasure) and so never delivered?
				if !d.isReady() {
					if ci, err := cons.Info(ctx); err == nil && ci.NumPending == 0 {
						d.setReady()
					}
				}
				d.maybeSnapshot(ctx)
				continue
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return fmt.Errorf("directory: consume %s: iterator closed", d.cfg.Stream)
			}
			d.log.Warn("reading the stream", zap.Error(err))
			continue
		}
		md, err := msg.Metadata()
		if err != nil {
			d.log.Warn("message without metadata skipped", zap.String("subject", msg.Subject()), zap.Error(err))
			continue
		}
		d.handle(ctx, msg.Subject(), md.Sequence.Stream, msg.Data())
		if md.NumPending == 0 || md.Sequence.Stream >= info.State.LastSeq {
			d.setReady()
		}
		d.maybeSnapshot(ctx)
	}
}

func (d *Directory) isReady() bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.ready
}

func (d *Directory) setReady() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.ready {
		d.ready = true
		d.notifyLocked()
		d.log.Info("directory caught up", zap.Uint64("applied", d.applied))
	}
}

func (d *Directory) maybeSnapshot(ctx context.Context) {
	if d.cfg.SnapshotDir == "" || d.sinceSnapshot == 0 {
		return
	}
	if d.sinceSnapshot >= d.cfg.SnapshotEvery || time.Since(d.lastSnapshot) >= d.cfg.SnapshotInterval {
		d.writeSnapshot(ctx, d.Applied())
	}
}

// changeKind names a change for metrics and logs.
func changeKind(ch *facegatev1.EnrolmentChange) string {
	switch ch.GetChange().(type) {
	case *facegatev1.EnrolmentChange_PersonUpsert:
		return "person_upsert"
	case *facegatev1.EnrolmentChange_PersonDelete:
		return "person_delete"
	case *facegatev1.EnrolmentChange_PhotoAdd:
		return "photo_add"
	case *facegatev1.EnrolmentChange_PhotoRemove:
		return "photo_remove"
	case *facegatev1.EnrolmentChange_GroupMembership:
		return "group_membership"
	case *facegatev1.EnrolmentChange_GroupUpsert:
		return "group_upsert"
	case *facegatev1.EnrolmentChange_GroupDelete:
		return "group_delete"
	case *facegatev1.EnrolmentChange_DoorUpsert:
		return "door_upsert"
	case *facegatev1.EnrolmentChange_DoorDelete:
		return "door_delete"
	case *facegatev1.EnrolmentChange_PolicyUpsert:
		return "policy_upsert"
	case *facegatev1.EnrolmentChange_PolicyDelete:
		return "policy_delete"
	}
	return "unknown"
}

// handle applies one stream message and reports whether it erased anyone.
// Whatever happens, seq counts as applied: a change that cannot be applied
// now will not apply better later, and the stream must keep moving.
func (d *Directory) handle(ctx context.Context, subject string, seq uint64, data []byte) (erased bool) {
	defer func() {
		d.sinceSnapshot++
		if erased && d.cfg.SnapshotDir != "" {
			// Rewrite the snapshot before anyone can see the erasure as
			// applied: once WaitApplied returns, no snapshot on disk holds
			// the person's templates.
			if !d.writeSnapshot(ctx, seq) {
				// The old snapshot holds the erased person; better none.
				if err := os.Remove(d.snapshotPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
					d.log.Error("cannot remove the snapshot that predates an erasure", zap.Error(err))
				}
			}
		}
		d.mu.Lock()
		if seq > d.applied {
			d.applied = seq
		}
		d.notifyLocked()
		d.mu.Unlock()
		d.m.appliedSeq.Set(float64(seq))
	}()
	ch := &facegatev1.EnrolmentChange{}
	if err := bus.Decode(data, ch); err != nil {
		d.m.malformed.Inc()
		d.log.Warn("malformed enrolment message skipped", zap.String("subject", subject), zap.Uint64("seq", seq), zap.Error(err))
		return false
	}
	kind := changeKind(ch)
	if err := d.apply(ctx, ch); err != nil {
		d.m.rejected.Inc()
		d.log.Warn("enrolment change rejected", zap.String("subject", subject), zap.Uint64("seq", seq),
			zap.String("change_id", ch.GetChangeId()), zap.String("kind", kind), zap.Error(err))
		return false
	}
	d.m.applied.WithLabelValues(kind).Inc()
	_, isDelete := ch.GetChange().(*facegatev1.EnrolmentChange_PersonDelete)
	return isDelete
}

// apply applies a decoded change to the state and the index.
func (d *Directory) apply(ctx context.Context, ch *facegatev1.EnrolmentChange) error {
	switch c := ch.GetChange().(type) {
	case *facegatev1.EnrolmentChange_PhotoAdd:
		return d.photoAdd(ctx, ch, c.PhotoAdd)
	case *facegatev1.EnrolmentChange_PhotoRemove:
		d.mu.Lock()
		defer d.mu.Unlock()
		if err := d.state.Apply(ch); err != nil {
			return err
		}
		id := c.PhotoRemove.GetPhotoId()
		for name, sp := range d.spaces {
			if t, ok := d.templates[name][id]; ok && t.person == c.PhotoRemove.GetPersonId() {
				if _, err := d.idx.DeleteTemplates(ctx, sp.collection, []string{id}); err != nil {
					return fmt.Errorf("directory: remove template %q from %q: %w", id, sp.collection, err)
				}
				delete(d.templates[name], id)
				d.m.templates.WithLabelValues(name).Set(float64(len(d.templates[name])))
			}
		}
		return nil
	case *facegatev1.EnrolmentChange_PersonDelete:
		d.mu.Lock()
		defer d.mu.Unlock()
		var ids []string
		if id := c.PersonDelete.GetPersonId(); id != "" {
			ids = []string{id}
		} else {
			ids = d.state.PersonIDsByHash(c.PersonDelete.GetPersonIdSha256())
			// Templates of a person the state never saw (a PhotoAdd whose
			// person is otherwise unknown cannot happen, but the index is
			// the thing an erasure must clean).
			for _, m := range d.templates {
				for _, t := range m {
					if events.PersonHash(t.person) == c.PersonDelete.GetPersonIdSha256() && !contains(ids, t.person) {
						ids = append(ids, t.person)
					}
				}
			}
		}
		if err := d.state.Apply(ch); err != nil {
			return err
		}
		for _, id := range ids {
			if err := index.ValidateID("person", id); err != nil {
				continue
			}
			if _, err := d.idx.ErasePerson(ctx, id); err != nil {
				return fmt.Errorf("directory: erase person templates: %w", err)
			}
			for name, m := range d.templates {
				for tid, t := range m {
					if t.person == id {
						delete(m, tid)
					}
				}
				d.m.templates.WithLabelValues(name).Set(float64(len(m)))
			}
		}
		return nil
	case *facegatev1.EnrolmentChange_PersonUpsert:
		d.mu.Lock()
		defer d.mu.Unlock()
		if err := d.state.Apply(ch); err != nil {
			return err
		}
		return d.resiteLocked(ctx, c.PersonUpsert.GetPersonId(), c.PersonUpsert.GetSite())
	default:
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.state.Apply(ch)
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// resiteLocked moves a person's templates to their (new) site, so site
// filtered searches follow the person's managing site.
func (d *Directory) resiteLocked(ctx context.Context, person, site string) error {
	for name, m := range d.templates {
		var batch []index.Template
		for tid, t := range m {
			if t.person == person && t.site != site {
				t.site = site
				m[tid] = t
				batch = append(batch, index.Template{TemplateInfo: index.TemplateInfo{ID: tid, Person: person, Site: site, Photo: tid}, Vector: t.vec})
			}
		}
		if len(batch) > 0 {
			if err := d.idx.Upsert(ctx, d.spaces[name].collection, batch); err != nil {
				return fmt.Errorf("directory: move templates of a person to site %q: %w", site, err)
			}
		}
	}
	return nil
}

func (d *Directory) photoAdd(ctx context.Context, ch *facegatev1.EnrolmentChange, a *facegatev1.PhotoAdd) error {
	// The state records the photo even when its template cannot be indexed
	// here (another model's space, a missing key): the console lists it and
	// a re-embed can fix it.
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.state.Apply(ch); err != nil {
		return err
	}
	sp, ok := d.spaces[a.GetEmbeddingSpace()]
	if !ok {
		d.m.skipped.WithLabelValues("unknown_space").Inc()
		d.log.Debug("template of an unconfigured space skipped", zap.String("space", a.GetEmbeddingSpace()), zap.String("photo", a.GetPhotoId()))
		return nil
	}
	vec, err := d.unseal(ctx, sp, a)
	if err != nil {
		return err
	}
	site := ""
	if p, ok := d.state.Person(a.GetPersonId()); ok {
		site = p.Site
	}
	t := index.Template{TemplateInfo: index.TemplateInfo{ID: a.GetPhotoId(), Person: a.GetPersonId(), Site: site, Photo: a.GetPhotoId()}, Vector: vec}
	if err := d.idx.Upsert(ctx, sp.collection, []index.Template{t}); err != nil {
		d.m.skipped.WithLabelValues("index").Inc()
		return fmt.Errorf("directory: photo %q: index template: %w", a.GetPhotoId(), err)
	}
	// A photo id moving to another person (it should not) must not leave
	// the old owner's template behind: the upsert replaced it in the index.
	d.templates[sp.Name][a.GetPhotoId()] = storedTemplate{person: a.GetPersonId(), site: site, vec: vec}
	d.m.templates.WithLabelValues(sp.Name).Set(float64(len(d.templates[sp.Name])))
	return nil
}

func (d *Directory) unseal(ctx context.Context, sp spaceInfo, a *facegatev1.PhotoAdd) ([]float32, error) {
	if int(a.GetEmbeddingDimension()) != sp.Dim {
		d.m.skipped.WithLabelValues("dimension").Inc()
		return nil, fmt.Errorf("directory: photo %q: embedding_dimension %d, space %q has %d", a.GetPhotoId(), a.GetEmbeddingDimension(), sp.Name, sp.Dim)
	}
	plain, err := sealed.Open(ctx, d.cfg.Keys, a.GetSealedTemplate(), sealed.TemplateContext(sp.Name, a.GetPhotoId()))
	if err != nil {
		d.m.skipped.WithLabelValues("unseal").Inc()
		return nil, fmt.Errorf("directory: photo %q: unseal template: %w", a.GetPhotoId(), err)
	}
	vec, err := DecodeVector(plain, sp.Dim)
	clear(plain)
	if err != nil {
		d.m.skipped.WithLabelValues("dimension").Inc()
		return nil, fmt.Errorf("directory: photo %q: %w", a.GetPhotoId(), err)
	}
	if _, err := index.CheckVector(sp.Dim, vec); err != nil {
		d.m.skipped.WithLabelValues("dimension").Inc()
		return nil, fmt.Errorf("directory: photo %q: template: %w", a.GetPhotoId(), err)
	}
	return vec, nil
}

// EncodeVector is the template encoding sealed into PhotoAdd: float32
// little-endian.
func EncodeVector(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// DecodeVector decodes EncodeVector's bytes, checking the dimension.
func DecodeVector(b []byte, dim int) ([]float32, error) {
	if len(b) != 4*dim {
		return nil, fmt.Errorf("template of %d bytes, want %d (dimension %d, float32)", len(b), 4*dim, dim)
	}
	v := make([]float32, dim)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v, nil
}

func (d *Directory) snapshotPath() string {
	return filepath.Join(d.cfg.SnapshotDir, SnapshotFile)
}
