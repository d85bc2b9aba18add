package loadbench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/embedded"
	"github.com/facegate/facegate/pkg/directory"
	"github.com/facegate/facegate/pkg/embedder"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/matcher"
	"github.com/facegate/facegate/pkg/sealed"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

// Person is the one enrolled person every camera sees.
const Person = "bench-person"

// StackConfig describes the all-in-one pipeline Start runs.
type StackConfig struct {
	// Engine analyses the frames (the embedder's) and the enrolment photo.
	// Required; the caller closes it after the stack.
	Engine *face.Engine
	// Frame is the enrolment photo: its one face passing quality is
	// enrolled, so every frame of the same picture is a GRANT.
	Frame []byte
	// Site and Cameras: one IDENTIFY door per camera (door-i for cam-i).
	Site    string
	Cameras int
	// Concurrency of each embedder replica (frames analysed at once).
	// Default: the embedder's (runtime.NumCPU()).
	Concurrency int
	// Embedders is the number of embedder replicas sharing the pool's
	// consumer, each on its own connection as separate pods would be
	// (they share the engine). Default 1.
	Embedders int
	// Batch is each replica's fetch batch; default the embedder's (8).
	Batch int
	// ModelCacheRoot is where the matcher finds the threshold calibration;
	// default modelcache.DefaultRoot().
	ModelCacheRoot string
	// DataDir holds JetStream's files and the key folder; "" = a fresh
	// temporary folder removed by Close.
	DataDir string
	Log     *zap.Logger
}

// Stack is a running pipeline: embedded NATS, the streams, an embedder
// worker, a directory and a matcher, each on its own connection as separate
// services would be.
type Stack struct {
	// NC and JS are the load generator's connection (the "gateway").
	NC        *nats.Conn
	JS        jetstream.JetStream
	Embedders []*embedder.Worker
	Matcher   *matcher.Matcher

	srv     *embedded.Server
	conns   []*nats.Conn
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	runErrs []error
	tmp     string
	keys    *sealed.FileKeyProvider
}

// Start runs the pipeline and enrols the frame's person at every door.
// It returns once the directory has applied the enrolment and the
// consumers exist, so the first frame published gets a decision.
func Start(ctx context.Context, cfg StackConfig) (_ *Stack, err error) {
	if cfg.Engine == nil || len(cfg.Frame) == 0 || cfg.Cameras < 1 {
		return nil, fmt.Errorf("loadbench: stack needs an engine, a frame and cameras >= 1 (got %d)", cfg.Cameras)
	}
	if err := bus.ValidateToken("site", cfg.Site); err != nil {
		return nil, fmt.Errorf("loadbench: %w", err)
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	s := &Stack{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	dir := cfg.DataDir
	if dir == "" {
		if s.tmp, err = os.MkdirTemp("", "facegate-loadbench-"); err != nil {
			return nil, fmt.Errorf("loadbench: data dir: %w", err)
		}
		dir = s.tmp
	}
	if s.srv, err = embedded.Start(ctx, embedded.Options{DataDir: filepath.Join(dir, "nats")}); err != nil {
		return nil, fmt.Errorf("loadbench: %w", err)
	}
	connect := func(name string) (*nats.Conn, jetstream.JetStream, error) {
		nc, err := nats.Connect(s.srv.URL(), nats.Name("facegate-loadbench "+name))
		if err != nil {
			return nil, nil, fmt.Errorf("loadbench: connect %s: %w", name, err)
		}
		s.conns = append(s.conns, nc)
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, nil, fmt.Errorf("loadbench: jetstream %s: %w", name, err)
		}
		return nc, js, nil
	}
	if s.NC, s.JS, err = connect("gateway"); err != nil {
		return nil, err
	}
	if err := bus.EnsureStreams(ctx, s.JS, bus.DefaultConfig()); err != nil {
		return nil, fmt.Errorf("loadbench: %w", err)
	}
	_, mjs, err := connect("matcher")
	if err != nil {
		return nil, err
	}

	keyDir := filepath.Join(dir, "keys")
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		return nil, fmt.Errorf("loadbench: key dir: %w", err)
	}
	if s.keys, err = sealed.OpenFileKeyProvider(keyDir); err != nil {
		return nil, fmt.Errorf("loadbench: %w", err)
	}
	if _, err := s.keys.Rotate(ctx); err != nil {
		return nil, fmt.Errorf("loadbench: key: %w", err)
	}
	changes, err := enrolment(ctx, cfg, s.keys)
	if err != nil {
		return nil, err
	}
	var last uint64
	for i, ch := range changes {
		if last, err = publishChange(ctx, s.JS, ch, uint64(i+1)); err != nil {
			return nil, err
		}
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	space := cfg.Engine.Space()
	d, err := directory.New(ctx, directory.Config{JetStream: mjs, Keys: s.keys,
		Spaces: []directory.Space{{Name: space, Dim: cfg.Engine.Dim()}}, Log: cfg.Log.Named("directory"),
		Registerer: prometheus.NewRegistry()})
	if err != nil {
		return nil, fmt.Errorf("loadbench: %w", err)
	}
	s.goRun("directory", func() error { return d.Run(runCtx) })
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := d.WaitApplied(wctx, last); err != nil {
		return nil, fmt.Errorf("loadbench: directory: enrolment not applied: %w", err)
	}

	s.Matcher, err = matcher.New(matcher.Config{JetStream: mjs, Directory: d, Site: cfg.Site, Space: space,
		ModelCacheRoot: cfg.ModelCacheRoot,
		// Every frame must become a decision: a cooldown <= 0 means the
		// default 5 s, so the smallest positive one.
		Cooldown: time.Nanosecond, Log: cfg.Log.Named("matcher"), Registerer: prometheus.NewRegistry()})
	if err != nil {
		return nil, fmt.Errorf("loadbench: %w", err)
	}
	s.goRun("matcher", func() error { return s.Matcher.Run(runCtx) })
	filter, err := bus.SiteFilter(bus.KindFrames, cfg.Site)
	if err != nil {
		return nil, fmt.Errorf("loadbench: %w", err)
	}
	for i := range max(cfg.Embedders, 1) {
		name := fmt.Sprintf("embedder-%d", i)
		_, ejs, err := connect(name)
		if err != nil {
			return nil, err
		}
		w, err := embedder.New(embedder.Config{Engine: cfg.Engine, JetStream: ejs, FilterSubject: filter,
			Concurrency: cfg.Concurrency, Batch: cfg.Batch, Instance: name, Log: cfg.Log.Named(name)})
		if err != nil {
			return nil, fmt.Errorf("loadbench: %w", err)
		}
		s.Embedders = append(s.Embedders, w)
		s.goRun(name, func() error { return w.Run(runCtx) })
	}

	// Frames published before the consumers exist would be missed by the
	// matcher (it delivers new faces only).
	fc, cc, err := s.Matcher.ConsumerConfigs()
	if err != nil {
		return nil, fmt.Errorf("loadbench: %w", err)
	}
	for {
		_, e1 := s.JS.Consumer(wctx, bus.StreamFaces, fc.Durable)
		_, e2 := s.JS.Consumer(wctx, bus.StreamClaims, cc.Durable)
		_, e3 := s.JS.Consumer(wctx, bus.StreamFrames, s.Embedders[0].Durable())
		if e1 == nil && e2 == nil && e3 == nil {
			break
		}
		if err := s.runErr(); err != nil {
			return nil, err
		}
		select {
		case <-wctx.Done():
			return nil, fmt.Errorf("loadbench: consumers not created: %w", errors.Join(wctx.Err(), e1, e2, e3))
		case <-time.After(20 * time.Millisecond):
		}
	}
	return s, nil
}

func (s *Stack) goRun(name string, fn func() error) {
	s.wg.Go(func() {
		if err := fn(); err != nil {
			s.mu.Lock()
			s.runErrs = append(s.runErrs, fmt.Errorf("loadbench: %s stopped: %w", name, err))
			s.mu.Unlock()
		}
	})
}

func (s *Stack) runErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.runErrs...)
}

// Err reports a service of the stack that stopped with an error.
func (s *Stack) Err() error { return s.runErr() }

// Drain waits until the embedder and the matcher have consumed and
// acknowledged every frame and face event (the backlog of an overloaded
// step must not load the next one), or ctx ends.
func (s *Stack) Drain(ctx context.Context) error {
	fc, _, err := s.Matcher.ConsumerConfigs()
	if err != nil {
		return fmt.Errorf("loadbench: %w", err)
	}
	idle := func(stream, durable string) (bool, error) {
		c, err := s.JS.Consumer(ctx, stream, durable)
		if err != nil {
			return false, err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return false, err
		}
		return info.NumPending == 0 && info.NumAckPending == 0, nil
	}
	for {
		e, err1 := idle(bus.StreamFrames, s.Embedders[0].Durable())
		m, err2 := idle(bus.StreamFaces, fc.Durable)
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("loadbench: drain: %w", err)
		}
		if e && m {
			return nil
		}
		if err := s.runErr(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("loadbench: drain: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Close stops the services, the server, and removes a temporary data dir.
func (s *Stack) Close() error {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	for _, nc := range s.conns {
		nc.Close()
	}
	if s.keys != nil {
		s.keys.Close()
	}
	if s.srv != nil {
		s.srv.Shutdown()
	}
	var err error
	if s.tmp != "" {
		err = os.RemoveAll(s.tmp)
	}
	return errors.Join(s.runErr(), err)
}

// enrolment is the person of the frame (one face passing quality, as the
// enrolment API requires), one IDENTIFY door per camera and a policy
// allowing the person's group at every door.
func enrolment(ctx context.Context, cfg StackConfig, kp sealed.KeyProvider) ([]*fv1.EnrolmentChange, error) {
	res, err := cfg.Engine.Analyze(ctx, cfg.Frame)
	if err != nil {
		return nil, fmt.Errorf("loadbench: analyse the enrolment frame: %w", err)
	}
	var vec []float32
	n := 0
	for _, f := range res.Faces {
		if f.Quality.OK {
			vec, n = f.Encoding, n+1
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("loadbench: the frame has %d faces passing quality (of %d), want exactly 1", n, len(res.Faces))
	}
	space := cfg.Engine.Space()
	const photo = "bench-photo"
	// Sealed as the enrolment API seals templates.
	plain := make([]byte, 4*len(vec))
	for i, x := range vec {
		binary.LittleEndian.PutUint32(plain[4*i:], math.Float32bits(x))
	}
	blob, err := sealed.Seal(ctx, kp, plain, sealed.TemplateContext(space, photo))
	if err != nil {
		return nil, fmt.Errorf("loadbench: seal template: %w", err)
	}
	chs := []*fv1.EnrolmentChange{
		{Change: &fv1.EnrolmentChange_PersonUpsert{PersonUpsert: &fv1.PersonUpsert{
			PersonId: Person, DisplayName: "Load bench", Site: cfg.Site}}},
		{Change: &fv1.EnrolmentChange_PhotoAdd{PhotoAdd: &fv1.PhotoAdd{
			PersonId: Person, PhotoId: photo, ContentSha256: fmt.Sprintf("%064x", 1), MediaType: "image/jpeg",
			StorageRef: "photos/" + photo, SealedTemplate: blob, EmbeddingSpace: space, EmbeddingDimension: uint32(len(vec))}}},
		{Change: &fv1.EnrolmentChange_GroupMembership{GroupMembership: &fv1.GroupMembership{
			PersonId: Person, GroupId: "bench", Member: true}}},
	}
	var doors []*fv1.DoorRef
	for i := range cfg.Cameras {
		door := DoorName(i)
		chs = append(chs, &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_DoorUpsert{DoorUpsert: &fv1.DoorUpsert{
			Site: cfg.Site, Door: door, DisplayName: door, Mode: fv1.Mode_MODE_IDENTIFY, Cameras: []string{CameraName(i)}}}})
		doors = append(doors, &fv1.DoorRef{Site: cfg.Site, Door: door})
	}
	chs = append(chs, &fv1.EnrolmentChange{Change: &fv1.EnrolmentChange_PolicyUpsert{PolicyUpsert: &fv1.PolicyUpsert{
		PolicyId: "bench-all-doors", GroupIds: []string{"bench"}, Doors: doors, Effect: fv1.Effect_EFFECT_ALLOW}}})
	return chs, nil
}

// DoorName is the door of camera i.
func DoorName(i int) string { return fmt.Sprintf("door-%d", i) }

// publishChange publishes a change as the enrolment API does (change id as
// Nats-Msg-Id, routed subject) and returns its stream sequence.
func publishChange(ctx context.Context, js jetstream.JetStream, ch *fv1.EnrolmentChange, n uint64) (uint64, error) {
	ch.SchemaVersion = events.SchemaVersion
	ch.ChangeId = fmt.Sprintf("loadbench-%d-%d", time.Now().UnixNano(), n)
	ch.Sequence = n
	ch.Time = timestamppb.Now()
	ch.Actor = &fv1.Actor{Kind: fv1.ActorKind_ACTOR_KIND_SERVICE, Id: "loadbench"}
	kind, key, err := events.EnrolmentRoute(ch)
	if err != nil {
		return 0, fmt.Errorf("loadbench: route change: %w", err)
	}
	subj, err := bus.EnrolmentsSubject(kind, key)
	if err != nil {
		return 0, fmt.Errorf("loadbench: %w", err)
	}
	hdr := nats.Header{}
	hdr.Set(bus.HeaderMsgID, ch.ChangeId)
	ack, err := bus.Publish(ctx, js, subj, ch, hdr)
	if err != nil {
		return 0, fmt.Errorf("loadbench: publish %s: %w", subj, err)
	}
	return ack.Sequence, nil
}
