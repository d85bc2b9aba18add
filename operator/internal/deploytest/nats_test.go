package deploytest

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/facegate/facegate/operator/internal/lag"
	"github.com/facegate/facegate/pkg/bus"
)

var campusPasswords = map[string]string{
	"SYS_PASSWORD": "sys-pw", "OPERATOR_PASSWORD": "op-pw", "FACEGATE_PASSWORD": "fg-pw",
	"NORTH_PASSWORD": "north-pw", "SOUTH_PASSWORD": "south-pw", "LAB_PASSWORD": "lab-pw",
	"SERVER_NAME": "nats-test", "GATEWAY_PASSWORD": "gw-pw",
}

// startCampus runs deploy/nats/campus.conf in a real server, on local
// random ports and without the cluster routes.
func startCampus(t *testing.T) string {
	t.Helper()
	for k, v := range campusPasswords {
		t.Setenv(k, v)
	}
	opts, err := server.ProcessConfigFile(filepath.Join(shared.root, "deploy", "nats", "campus.conf"))
	if err != nil {
		t.Fatalf("campus.conf: %v", err)
	}
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.HTTPPort = 0
	opts.Cluster = server.ClusterOpts{}
	opts.Routes = nil
	opts.LeafNode.Host, opts.LeafNode.Port = "127.0.0.1", server.RANDOM_PORT
	opts.StoreDir = t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("campus.conf server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("campus server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL()
}

type asyncErrs struct {
	mu   sync.Mutex
	errs []error
}

func (a *asyncErrs) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.errs = append(a.errs, err)
}

func (a *asyncErrs) String() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var s []string
	for _, e := range a.errs {
		s = append(s, e.Error())
	}
	return strings.Join(s, "; ")
}

func connect(t *testing.T, url, user string, errs *asyncErrs) *nats.Conn {
	t.Helper()
	opts := []nats.Option{nats.UserInfo(user, campusPasswords[strings.ToUpper(user)+"_PASSWORD"])}
	if errs != nil {
		opts = append(opts, nats.ErrorHandler(errs.handler))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestCampusAccountsIsolateBuildings loads the campus NATS configuration into
// a real server and checks the account design: buildings publish only their
// own frames, which reach the shared FRAMES stream; decisions go back only to
// their building; the operator's restricted user can create consumers and
// read lag and nothing more.
func TestCampusAccountsIsolateBuildings(t *testing.T) {
	url := startCampus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	fg := connect(t, url, "facegate", nil)
	js, err := jetstream.New(fg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := bus.DefaultConfig()
	cfg.Frames.MaxAge = time.Hour
	if err := bus.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatalf("streams in the FACEGATE account: %v", err)
	}

	// The operator's user: creates the north pool's consumer, reads its lag.
	reader := lag.NewJetStream(url, nats.UserInfo("operator", campusPasswords["OPERATOR_PASSWORD"]))
	defer reader.Close()
	filter, _ := bus.SiteFilter(bus.KindFrames, "north")
	cons := lag.Consumer{Stream: bus.StreamFrames, Durable: "campus-north-dlib", FilterSubject: filter}
	if created, err := reader.EnsureConsumer(ctx, cons); err != nil || !created {
		t.Fatalf("operator user creating a consumer: created=%v err=%v", created, err)
	}

	northErrs, southErrs := &asyncErrs{}, &asyncErrs{}
	north := connect(t, url, "north", northErrs)
	south := connect(t, url, "south", southErrs)
	northFrame, _ := bus.FramesSubject("north", "entrance")
	southFrame, _ := bus.FramesSubject("south", "entrance")
	// Gateways publish with JetStream and wait for the stream's ack, which
	// must come back across the account boundary.
	northJS, err := jetstream.New(north)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		ack, err := northJS.Publish(ctx, northFrame, []byte("jpeg"))
		if err != nil {
			t.Fatalf("north's JetStream publish got no ack through its account's import: %v", err)
		}
		if ack.Stream != bus.StreamFrames {
			t.Fatalf("north's frame stored in %q", ack.Stream)
		}
	}
	// North may not publish south's frames.
	if err := north.Publish(southFrame, []byte("forged")); err != nil {
		t.Fatal(err)
	}
	if err := south.Publish(southFrame, []byte("jpeg")); err != nil {
		t.Fatal(err)
	}
	_ = north.Flush()
	_ = south.Flush()

	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := reader.Lag(ctx, cons)
		if err == nil && l.Pending == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("north consumer lag %+v (err %v), want the 3 north frames", l, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, err := js.Stream(ctx, bus.StreamFrames)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 4 {
		t.Errorf("FRAMES holds %d messages, want 3 from north and 1 from south (not the forged one)", info.State.Msgs)
	}
	if !strings.Contains(northErrs.String(), "Permissions Violation") || !strings.Contains(northErrs.String(), southFrame) {
		t.Errorf("north publishing south's frames was not refused: %q", northErrs.String())
	}

	// Decisions reach only their building: north receives its own; south
	// may not even subscribe to north's.
	got := make(chan string, 4)
	if _, err := north.Subscribe("facegate.decisions.north.>", func(m *nats.Msg) { got <- m.Subject }); err != nil {
		t.Fatal(err)
	}
	if _, err := south.Subscribe("facegate.decisions.north.>", func(m *nats.Msg) { got <- "south saw " + m.Subject }); err != nil {
		t.Fatal(err)
	}
	_ = north.Flush()
	_ = south.Flush()
	time.Sleep(200 * time.Millisecond)
	decision, _ := bus.DecisionsSubject("north", "entrance")
	if err := fg.Publish(decision, []byte("open")); err != nil {
		t.Fatal(err)
	}
	_ = fg.Flush()
	select {
	case g := <-got:
		if g != decision {
			t.Errorf("decision delivered as %q", g)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("north did not receive its decision")
	}
	select {
	case g := <-got:
		t.Errorf("a second delivery: %q", g)
	case <-time.After(300 * time.Millisecond):
	}
	if !strings.Contains(southErrs.String(), "Permissions Violation for Subscription to \"facegate.decisions.north.>\"") {
		t.Errorf("south subscribing to north's decisions was not refused: %q", southErrs.String())
	}

	// The operator's user cannot administer streams.
	opNC := connect(t, url, "operator", nil)
	opJS, err := jetstream.New(opNC)
	if err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	defer dcancel()
	if err := opJS.DeleteStream(dctx, bus.StreamFrames); err == nil {
		t.Error("the operator's user deleted a stream")
	} else if !errors.Is(err, nats.ErrPermissionViolation) && !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "ermission") {
		t.Errorf("unexpected error deleting a stream as operator: %v", err)
	}
}

// TestLeafNodeConfigParses loads the building leaf node configuration.
func TestLeafNodeConfigParses(t *testing.T) {
	for k, v := range campusPasswords {
		t.Setenv(k, v)
	}
	opts, err := server.ProcessConfigFile(filepath.Join(shared.root, "deploy", "nats", "leaf-bldg.conf"))
	if err != nil {
		t.Fatalf("leaf-bldg.conf: %v", err)
	}
	if len(opts.LeafNode.Remotes) != 1 || opts.LeafNode.Remotes[0].LocalAccount != "NORTH" || opts.JetStreamDomain != "north" {
		t.Fatalf("leaf remote %+v, domain %q", opts.LeafNode.Remotes, opts.JetStreamDomain)
	}
}
