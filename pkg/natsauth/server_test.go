package natsauth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/facegate/facegate/pkg/bus"
)

// testUsers is a two-building deployment: north and south each have a
// gateway and a door controller; the shared services serve both, but the
// embedder pool is north's.
func testUsers() []User {
	return []User{
		{Name: "admin", Role: RoleAdmin},
		{Name: "gw-north", Role: RoleGateway, Site: "north"},
		{Name: "gw-south", Role: RoleGateway, Site: "south"},
		{Name: "door-north", Role: RoleDoor, Site: "north"},
		{Name: "door-south", Role: RoleDoor, Site: "south"},
		{Name: "emb-north", Role: RoleEmbedder, Site: "north"},
		{Name: "matcher", Role: RoleMatcher},
		{Name: "audit", Role: RoleAudit},
		{Name: "enrol", Role: RoleEnrolmentAPI},
		{Name: "operator", Role: RoleOperator},
	}
}

type testServer struct {
	url     string
	seedDir string
	users   map[string]User
	tlsCA   string // client root CA when the server requires TLS
}

// startServer generates the configuration of d into a temporary directory,
// starts a real nats-server from that file and returns where to reach it.
func startServer(t *testing.T, d Deployment) *testServer {
	t.Helper()
	dir := t.TempDir()
	seedDir := filepath.Join(dir, "seeds")
	conf, err := Generate(d, seedDir)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	confPath := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(confPath, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(confPath)
	if err != nil {
		t.Fatalf("nats-server refused the generated configuration: %v\n%s", err, conf)
	}
	opts.NoSigs = true
	opts.NoLog = true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready for connections after 10 s")
	}
	users := make(map[string]User, len(d.Users))
	for _, u := range d.Users {
		users[u.Name] = u
	}
	return &testServer{url: ns.ClientURL(), seedDir: seedDir, users: users}
}

type client struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	errs chan error
}

// connect logs in as user with its seed and inbox prefix; asynchronous
// server errors (permission violations) go to errs.
func (s *testServer) connect(t *testing.T, name string, extra ...nats.Option) *client {
	t.Helper()
	u, ok := s.users[name]
	if !ok {
		t.Fatalf("no user %q", name)
	}
	nkeyOpt, err := nats.NkeyOptionFromSeed(SeedFile(s.seedDir, name))
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 64)
	opts := append([]nats.Option{nkeyOpt,
		nats.CustomInboxPrefix(u.InboxPrefix()),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}),
	}, extra...)
	if s.tlsCA != "" {
		opts = append(opts, nats.RootCAs(s.tlsCA))
	}
	nc, err := nats.Connect(s.url, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &client{nc: nc, js: js, errs: errs}
}

// expectViolation waits for the server's permission error naming op
// ("publish" or "subscription") and subject.
func (c *client) expectViolation(t *testing.T, op, subject string) {
	t.Helper()
	want := "permissions violation for " + op + " to \"" + subject + "\""
	deadline := time.After(3 * time.Second)
	for {
		select {
		case err := <-c.errs:
			if strings.Contains(strings.ToLower(err.Error()), strings.ToLower(want)) {
				if !errors.Is(err, nats.ErrPermissionViolation) {
					t.Errorf("error %v does not wrap nats.ErrPermissionViolation", err)
				}
				return
			}
		case <-deadline:
			t.Fatalf("no %q from the server", want)
		}
	}
}

// expectNoViolation fails if the server reported any error so far.
func (c *client) expectNoViolation(t *testing.T) {
	t.Helper()
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.errs:
		t.Fatalf("unexpected server error: %v", err)
	default:
	}
}

// denyPublish publishes on subject (a plain publish: the server drops it)
// and expects the violation.
func (c *client) denyPublish(t *testing.T, subject string) {
	t.Helper()
	if err := c.nc.Publish(subject, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c.expectViolation(t, "publish", subject)
}

// denySubscribe subscribes to subject, expects the violation, then has
// publisher send a message there and checks that nothing arrives.
func (c *client) denySubscribe(t *testing.T, subject, concrete string, publisher *client) {
	t.Helper()
	sub, err := c.nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c.expectViolation(t, "subscription", subject)
	if err := publisher.nc.Publish(concrete, []byte("secret")); err != nil {
		t.Fatal(err)
	}
	publisher.expectNoViolation(t)
	if m, err := sub.NextMsg(300 * time.Millisecond); err == nil {
		t.Fatalf("denied subscription to %s received a message on %s", subject, m.Subject)
	}
}

func countOn(t *testing.T, ctx context.Context, admin *client, stream, subject string) uint64 {
	t.Helper()
	s, err := admin.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

func fetchOne(t *testing.T, ctx context.Context, c *client, stream, durable string) jetstream.Msg {
	t.Helper()
	cons, err := c.js.Consumer(ctx, stream, durable)
	if err != nil {
		t.Fatalf("bind to %s/%s: %v", stream, durable, err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(3*time.Second))
	if err != nil {
		t.Fatalf("fetch from %s/%s: %v", stream, durable, err)
	}
	for m := range batch.Messages() {
		return m
	}
	t.Fatalf("fetch from %s/%s: no message (%v)", stream, durable, batch.Error())
	return nil
}

func newDurable(t *testing.T, ctx context.Context, c *client, stream, name, filter string) {
	t.Helper()
	_, err := c.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable: name, FilterSubject: filter, AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatalf("create consumer %s on %s: %v", name, stream, err)
	}
}

// short bounds a request the server is expected to drop: a denied
// request gets no reply, only an asynchronous permission error.
func short(t *testing.T, ctx context.Context) context.Context {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func testDeployment(t *testing.T) Deployment {
	return Deployment{
		ServerName: "natsauth-test",
		Listen:     "127.0.0.1:-1",
		StoreDir:   filepath.Join(t.TempDir(), "js"),
		Users:      testUsers(),
	}
}

// TestRealServerPermissions runs every role's flow against a real server
// started from the generated configuration, and every forbidden step next
// to it, with all users in one account.
func TestRealServerPermissions(t *testing.T) {
	permissionSuite(t, testDeployment(t))
}

// TestRealServerSiteAccounts runs the same with each building's gateways
// and doors in their own account, importing from the central one.
func TestRealServerSiteAccounts(t *testing.T) {
	d := testDeployment(t)
	d.SiteAccounts = true
	permissionSuite(t, d)
}

func permissionSuite(t *testing.T, d Deployment) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	srv := startServer(t, d)

	admin := srv.connect(t, "admin")
	cfg := bus.DefaultConfig()
	if err := bus.EnsureStreams(ctx, admin.js, cfg); err != nil {
		t.Fatalf("admin EnsureStreams: %v", err)
	}
	frameN, frameS := "facegate.frames.north.cam1", "facegate.frames.south.cam1"
	claimN := "facegate.claims.north.door1"
	faceN := "facegate.faces.north.cam1"
	decN, decS := "facegate.decisions.north.door1", "facegate.decisions.south.door1"

	gwN := srv.connect(t, "gw-north")
	gwS := srv.connect(t, "gw-south")
	doorN := srv.connect(t, "door-north")
	doorS := srv.connect(t, "door-south")
	emb := srv.connect(t, "emb-north")
	matcher := srv.connect(t, "matcher")
	audit := srv.connect(t, "audit")
	enrol := srv.connect(t, "enrol")
	op := srv.connect(t, "operator")

	t.Run("operator creates the embedder consumer and reads its lag", func(t *testing.T) {
		newDurable(t, ctx, op, bus.StreamFrames, "emb-north", "facegate.frames.north.*")
		cons, err := op.js.Consumer(ctx, bus.StreamFrames, "emb-north")
		if err != nil {
			t.Fatalf("operator consumer info: %v", err)
		}
		if got := cons.CachedInfo().Config.FilterSubject; got != "facegate.frames.north.*" {
			t.Fatalf("filter %q", got)
		}
		op.expectNoViolation(t)
		// Not on any other stream, and no data.
		if _, err := op.js.CreateConsumer(short(t, ctx), bus.StreamFaces, jetstream.ConsumerConfig{Durable: "spy"}); err == nil {
			t.Fatal("operator created a consumer on FACES")
		}
		op.expectViolation(t, "publish", "$JS.API.CONSUMER.CREATE.FACES.spy")
		op.denyPublish(t, frameN)
	})

	// The admin (a deploy job) creates the shared services' consumers.
	newDurable(t, ctx, admin, bus.StreamFaces, "matcher", "")
	newDurable(t, ctx, admin, bus.StreamClaims, "matcher", "")
	newDurable(t, ctx, admin, bus.StreamDecisions, "audit", "facegate.decisions.north.*")

	// A door controller listens before the decision is made.
	doorSub, err := doorN.nc.SubscribeSync("facegate.decisions.north.>")
	if err != nil {
		t.Fatal(err)
	}
	doorN.expectNoViolation(t)
	doorSouthSub, err := doorS.nc.SubscribeSync("facegate.decisions.south.>")
	if err != nil {
		t.Fatal(err)
	}
	doorS.expectNoViolation(t)

	t.Run("gateway publishes its site's frames and claims", func(t *testing.T) {
		if _, err := gwN.js.Publish(ctx, frameN, []byte("frame")); err != nil {
			t.Fatalf("gateway north publish frame: %v", err)
		}
		if _, err := gwN.js.Publish(ctx, claimN, []byte("claim")); err != nil {
			t.Fatalf("gateway north publish claim: %v", err)
		}
		gwN.expectNoViolation(t)
	})

	t.Run("gateway cannot publish another site's frames", func(t *testing.T) {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		if _, err := gwN.js.Publish(pctx, frameS, []byte("forged")); err == nil {
			t.Fatal("gateway north stored a frame for site south")
		}
		gwN.expectViolation(t, "publish", frameS)
		if n := countOn(t, ctx, admin, bus.StreamFrames, frameS); n != 0 {
			t.Fatalf("%d messages on %s", n, frameS)
		}
		gwS.denyPublish(t, "facegate.claims.north.door1")
	})

	t.Run("gateway publishes nothing else and reads nothing", func(t *testing.T) {
		gwN.denyPublish(t, decN)
		gwN.denyPublish(t, faceN)
		gwN.denyPublish(t, "facegate.enrolments.person.p1")
		gwN.denyPublish(t, "$JS.API.STREAM.INFO.FRAMES")
		gwN.denyPublish(t, "$JS.API.CONSUMER.CREATE.FRAMES.mine")
		gwN.denySubscribe(t, "facegate.frames.>", frameS, admin)
		// Another service's inbox: its JetStream replies are private.
		gwN.denySubscribe(t, "_INBOX.gw-south.>", "_INBOX.gw-south.x", admin)
		gwN.denySubscribe(t, "_INBOX.>", "_INBOX.matcher.x", admin)
	})

	t.Run("embedder consumes frames and publishes faces", func(t *testing.T) {
		m := fetchOne(t, ctx, emb, bus.StreamFrames, "emb-north")
		if m.Subject() != frameN || string(m.Data()) != "frame" {
			t.Fatalf("embedder got %s %q", m.Subject(), m.Data())
		}
		// DoubleAck waits for the server's confirmation, so a refused ack
		// subject would fail here.
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("embedder ack: %v", err)
		}
		if _, err := emb.js.Publish(ctx, faceN, []byte("face")); err != nil {
			t.Fatalf("embedder publish face: %v", err)
		}
		emb.expectNoViolation(t)
		cons, err := admin.js.Consumer(ctx, bus.StreamFrames, "emb-north")
		if err != nil {
			t.Fatal(err)
		}
		if info := cons.CachedInfo(); info.NumAckPending != 0 || info.AckFloor.Stream == 0 {
			t.Fatalf("frame not acknowledged: ack pending %d, ack floor %d", info.NumAckPending, info.AckFloor.Stream)
		}
	})

	t.Run("embedder cannot decide, cross sites or read other consumers", func(t *testing.T) {
		emb.denyPublish(t, decN)
		emb.denyPublish(t, "facegate.faces.south.cam1")
		emb.denyPublish(t, frameN)
		if _, err := emb.js.Consumer(short(t, ctx), bus.StreamFaces, "matcher"); err == nil {
			t.Fatal("embedder bound to the matcher's consumer")
		}
		emb.expectViolation(t, "publish", "$JS.API.CONSUMER.INFO.FACES.matcher")
		if _, err := emb.js.CreateConsumer(short(t, ctx), bus.StreamFrames, jetstream.ConsumerConfig{Durable: "emb-all"}); err == nil {
			t.Fatal("embedder created its own consumer on FRAMES")
		}
		emb.expectViolation(t, "publish", "$JS.API.CONSUMER.CREATE.FRAMES.emb-all")
		// A site without a door listening, so the door tests stay exact.
		emb.denySubscribe(t, "facegate.decisions.>", "facegate.decisions.west.door9", admin)
	})

	t.Run("enrolment API publishes and erases enrolments", func(t *testing.T) {
		if _, err := enrol.js.Publish(ctx, "facegate.enrolments.person.p1", []byte("enrol p1")); err != nil {
			t.Fatalf("enrolment publish: %v", err)
		}
		if _, err := enrol.js.Publish(ctx, "facegate.enrolments.person.p2", []byte("enrol p2")); err != nil {
			t.Fatalf("enrolment publish: %v", err)
		}
		if err := bus.PurgePerson(ctx, enrol.js, "p2", 0); err != nil {
			t.Fatalf("enrolment API erasure: %v", err)
		}
		enrol.expectNoViolation(t)
		if n := countOn(t, ctx, admin, bus.StreamEnrolments, "facegate.enrolments.person.p2"); n != 0 {
			t.Fatalf("p2 not erased: %d messages", n)
		}
		enrol.denyPublish(t, decN)
		enrol.denyPublish(t, "$JS.API.STREAM.PURGE.FACES")
		enrol.denyPublish(t, "$JS.API.STREAM.DELETE.ENROLMENTS")
		enrol.denySubscribe(t, "facegate.faces.>", faceN, admin)
	})

	t.Run("matcher reads faces, claims and the gallery, and decides", func(t *testing.T) {
		face := fetchOne(t, ctx, matcher, bus.StreamFaces, "matcher")
		if face.Subject() != faceN {
			t.Fatalf("matcher got face on %s", face.Subject())
		}
		if err := face.DoubleAck(ctx); err != nil {
			t.Fatalf("matcher ack face: %v", err)
		}
		claim := fetchOne(t, ctx, matcher, bus.StreamClaims, "matcher")
		if claim.Subject() != claimN {
			t.Fatalf("matcher got claim on %s", claim.Subject())
		}
		if err := claim.DoubleAck(ctx); err != nil {
			t.Fatalf("matcher ack claim: %v", err)
		}
		oc, err := matcher.js.OrderedConsumer(ctx, bus.StreamEnrolments, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatalf("matcher ordered consumer on ENROLMENTS: %v", err)
		}
		m, err := oc.Next(jetstream.FetchMaxWait(3 * time.Second))
		if err != nil {
			t.Fatalf("matcher reads the gallery: %v", err)
		}
		if string(m.Data()) != "enrol p1" {
			t.Fatalf("gallery message %q", m.Data())
		}
		if _, err := matcher.js.Publish(ctx, decN, []byte("open")); err != nil {
			t.Fatalf("matcher publish decision: %v", err)
		}
		matcher.expectNoViolation(t)
		matcher.denyPublish(t, "facegate.enrolments.person.p3")
		matcher.denyPublish(t, frameN)
		matcher.denySubscribe(t, "facegate.frames.>", frameN, admin)
	})

	t.Run("each site's door sees only its own decisions", func(t *testing.T) {
		m, err := doorSub.NextMsg(3 * time.Second)
		if err != nil {
			t.Fatalf("door north: %v", err)
		}
		if m.Subject != decN || string(m.Data) != "open" {
			t.Fatalf("door north got %s %q", m.Subject, m.Data)
		}
		if m, err := doorSouthSub.NextMsg(300 * time.Millisecond); err == nil {
			t.Fatalf("door south received %s", m.Subject)
		}
		doorS.denySubscribe(t, "facegate.decisions.north.>", decN, admin)
		doorS.denySubscribe(t, "facegate.decisions.>", decN, admin)
		doorS.denyPublish(t, decS)
		doorN.denyPublish(t, claimN)
	})

	t.Run("audit reads decisions and writes nothing", func(t *testing.T) {
		m := fetchOne(t, ctx, audit, bus.StreamDecisions, "audit")
		if m.Subject() != decN {
			t.Fatalf("audit got %s", m.Subject())
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("audit ack: %v", err)
		}
		audit.expectNoViolation(t)
		audit.denyPublish(t, decN)
		audit.denyPublish(t, "$JS.API.STREAM.PURGE.DECISIONS")
		if _, err := audit.js.Consumer(short(t, ctx), bus.StreamFaces, "matcher"); err == nil {
			t.Fatal("audit bound to the matcher's faces consumer")
		}
		audit.expectViolation(t, "publish", "$JS.API.CONSUMER.INFO.FACES.matcher")
	})
}

// TestUnknownKeyRefused checks that a seed not in the configuration cannot
// log in at all.
func TestUnknownKeyRefused(t *testing.T) {
	srv := startServer(t, testDeployment(t))
	stranger := filepath.Join(t.TempDir(), "stranger")
	if _, err := EnsureSeeds(stranger, []User{{Name: "gw-north"}}); err != nil {
		t.Fatal(err)
	}
	opt, err := nats.NkeyOptionFromSeed(SeedFile(stranger, "gw-north"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.url, opt, nats.MaxReconnects(0))
	if err == nil {
		nc.Close()
		t.Fatal("a key missing from the configuration connected")
	}
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("want an authorization error, got %v", err)
	}
	if nc, err := nats.Connect(srv.url, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("an anonymous client connected")
	}
}
