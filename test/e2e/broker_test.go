package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/facegate/facegate/pkg/api"
	"github.com/facegate/facegate/pkg/apiauth"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/bus/natstest"
	"github.com/facegate/facegate/pkg/directory"
	"github.com/facegate/facegate/pkg/directory/directorytest"
	"github.com/facegate/facegate/pkg/embedder"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/gateway"
	"github.com/facegate/facegate/pkg/gateway/source"
	"github.com/facegate/facegate/pkg/matcher"
	"github.com/facegate/facegate/pkg/photostore"
	"github.com/facegate/facegate/pkg/sealed"
	"github.com/facegate/facegate/pkg/testenv"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

// reconnecting connects the way a service does: reconnect forever, quickly.
func reconnecting(t testing.TB, url, name string, extra ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	opts := append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(200 * time.Millisecond),
		nats.RetryOnFailedConnect(true)}, extra...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// background runs f until the test ends and reports an error it returns
// before that.
func background(t testing.TB, name string, f func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(time.Minute):
			t.Errorf("%s did not stop within 1 min", name)
		}
	})
	go func() {
		select {
		case err := <-done:
			if ctx.Err() == nil {
				t.Errorf("%s ended while the test was running: %v", name, err)
			}
			done <- err
		case <-ctx.Done():
		}
	}()
}

// runDirectory starts a directory on js and waits until it has replayed.
func runDirectory(t testing.TB, js jetstream.JetStream, keys sealed.KeyProvider, eng *face.Engine, name string) *directory.Directory {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := directory.New(ctx, directory.Config{JetStream: js, Keys: keys,
		Spaces: []directory.Space{{Name: eng.Space(), Dim: eng.Dim()}}, Log: zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)).Named(name),
		Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	background(t, name, d.Run)
	if err := d.WaitReady(ctx); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return d
}

// enrolWithRetry creates a person and adds a photo through the API the way
// a careful client does across a broker outage: a connection error or a
// 5xx is retried with the same person id (and the same photo), and a 409 on
// a retry means the earlier attempt was stored after all.
// storedAfterAll counts the 409s on a retry: an attempt that failed for the
// client but was stored.
func enrolWithRetry(ctx context.Context, c *apiClient, id string, photo []byte) (retries, storedAfterAll int, err error) {
	call := func(what string, f func() reply, done int) error {
		for attempt := 0; ; attempt++ {
			r := f()
			switch {
			case r.err == nil && r.status == done:
				return nil
			case r.err == nil && r.status == http.StatusConflict && attempt > 0:
				storedAfterAll++
				return nil
			case r.err == nil && r.status < 500:
				return fmt.Errorf("%s %s: %s", what, id, r)
			}
			retries++
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s %s: gave up after %d attempts, last %s", what, id, attempt+1, r)
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	if err := call("create", func() reply {
		return c.json(ctx, "POST", "/v1/people", map[string]any{"person_id": id, "display_name": "Person " + id,
			"site": "hq", "badge_ids": []string{"badge-" + id}, "groups": []string{"staff"}})
	}, http.StatusCreated); err != nil {
		return retries, storedAfterAll, err
	}
	err = call("photo", func() reply { return c.photos(ctx, id, photo) }, http.StatusCreated)
	return retries, storedAfterAll, err
}

// TestBrokerRestartDuringEnrolmentAndReplay SIGKILLs the NATS server (an
// out-of-process nats-server 2.9 with JetStream on file storage) twice
// while N people are being enrolled through the API and a looping folder
// camera feeds the pipeline, and restarts it each time on the same store.
// The services (API with its directory, embedder, matcher with its
// directory, gateway) run in this process on their own reconnecting
// connections and are never restarted.
//
// What a SIGKILL of nats-server 2.9 guarantees: a message is written to
// the stream's block file (write(2); no fsync before the ack — 2.9 has no
// sync_interval setting and flushes to disk only in the background) before
// the PubAck is sent, so every acknowledged write is in the OS page cache
// and survives the death of the server process. It does not survive a
// power loss or kernel crash, which this test does not simulate. A write
// whose ack was lost may or may not be stored: hence the client retries
// with the same person id and takes 409 on a retry as done, and the API's
// create is conditional on the subject being empty. The API's connection
// does not buffer while reconnecting, so requests during the outage fail
// (and are retried) rather than wait.
//
// Asserted afterwards: at least one request failed and was retried (the
// kills interrupted something); every person is in ENROLMENTS exactly once
// (one PersonUpsert each) with a photo whose sealed copy is in the photo
// store; a fresh directory replayed from the stream knows all N and nobody
// else, each with a photo and the group the create named; the gateway
// dropped frames during the outages and publishes again after them; and
// decisions are produced on frames captured after the last restart.
func TestBrokerRestartDuringEnrolmentAndReplay(t *testing.T) {
	began := time.Now()
	const n = 30
	root := testenv.Models(t)
	eng := directorytest.Engine(t)
	threshold, err := matcher.ThresholdForSpace(root, eng.Space())
	if err != nil {
		t.Fatal(err)
	}
	crops := passingCrops(t, eng)
	cam := t.TempDir()
	for _, who := range []string{"sheldon5", "howard3", "penny2"} {
		if err := os.WriteFile(filepath.Join(cam, who+".png"), crop(t, who[:len(who)-1], int(who[len(who)-1]-'0')), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	srv := natstest.StartExternal(t)
	_, setup := reconnecting(t, srv.URL(), "setup")
	if err := bus.EnsureStreams(context.Background(), setup, bus.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	keys := directorytest.Keys(t)
	quiet := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))

	// The API and its directory. The API's connection does not buffer
	// while reconnecting, so a write during the outage fails at once (a
	// 5xx the client retries) instead of waiting for the server: the test
	// needs requests to fail, not to be held.
	_, jsAPI := reconnecting(t, srv.URL(), "api", nats.ReconnectBufSize(-1))
	apiDir := runDirectory(t, jsAPI, keys, eng, "api-directory")
	photos, err := photostore.New(filepath.Join(t.TempDir(), "photos"), keys)
	if err != nil {
		t.Fatal(err)
	}
	const token = "admin-token-e2e-broker-0123456789"
	store, err := apiauth.Parse([]byte(fmt.Sprintf("principals:\n- {name: admin, token_sha256: %s, role: admin}\n", apiauth.HashToken(token))))
	if err != nil {
		t.Fatal(err)
	}
	lots := apiauth.Rate{PerSecond: 1000, Burst: 1000}
	apiSrv, err := api.New(api.Config{JetStream: jsAPI, Directory: apiDir, Engine: eng, Threshold: threshold, Keys: keys,
		Photos: photos, Guard: apiauth.NewGuard(store, apiauth.NewLimiter(apiauth.Limits{Match: lots, Write: lots, Read: lots, AuthFailures: lots})),
		ApplyTimeout: 5 * time.Second, Log: quiet.Named("api"), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: apiSrv.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	c := &apiClient{base: "http://" + ln.Addr().String(), token: token, hc: &http.Client{Timeout: 30 * time.Second}}

	// The embedder, the matcher with its own directory, the gateway.
	_, jsEmb := reconnecting(t, srv.URL(), "embedder")
	emb, err := embedder.New(embedder.Config{Engine: eng, JetStream: jsEmb, Concurrency: 1, Batch: 2, AckWait: 5 * time.Second,
		Instance: "e2e", Log: quiet.Named("embedder")})
	if err != nil {
		t.Fatal(err)
	}
	background(t, "embedder", emb.Run)
	_, jsM := reconnecting(t, srv.URL(), "matcher")
	mDir := runDirectory(t, jsM, keys, eng, "matcher-directory")
	mt, err := matcher.New(matcher.Config{JetStream: jsM, Directory: mDir, Threshold: threshold, ModelCacheRoot: root,
		Cooldown: time.Second, Log: quiet, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	background(t, "matcher", mt.Run)

	gwFile := &gateway.FileConfig{Gateway: "hq-gw", Site: "hq", NATS: gateway.NATSConfig{URL: srv.URL()},
		Cameras: []gateway.CameraConfig{{ID: "lobby-cam", Source: "folder:" + cam, FPS: 4, Loop: true}}}
	if err := gwFile.Validate(); err != nil {
		t.Fatal(err)
	}
	gwOpts, err := gwFile.NATSOptions(quiet)
	if err != nil {
		t.Fatal(err)
	}
	_, jsGW := reconnecting(t, srv.URL(), "gateway", append(gwOpts, nats.ReconnectWait(200*time.Millisecond))...)
	cams, err := gwFile.BuildCameras(source.HTTPOptions{}, "")
	if err != nil {
		t.Fatal(err)
	}
	gm, err := gateway.NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Name: "hq-gw", Site: "hq", JetStream: jsGW, Cameras: cams, PublishTimeout: time.Second,
		Log: quiet.Named("gateway"), Metrics: gm})
	if err != nil {
		t.Fatal(err)
	}
	published := func() float64 { return testutil.ToFloat64(gm.Published.WithLabelValues("hq", "lobby-cam")) }
	dropped := func() float64 {
		return testutil.ToFloat64(gm.Dropped.WithLabelValues("hq", "lobby-cam", gateway.DropNATSDown)) +
			testutil.ToFloat64(gm.Dropped.WithLabelValues("hq", "lobby-cam", gateway.DropPublishError))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	must(t, "group", c.json(ctx, "PUT", "/v1/groups/staff", map[string]any{"display_name": "Staff"}), http.StatusOK)
	must(t, "door", c.json(ctx, "PUT", "/v1/sites/hq/doors/main", map[string]any{"mode": "identify", "cameras": []string{"lobby-cam"}}), http.StatusOK)
	background(t, "gateway", gw.Run)
	eventually(t, time.Minute, "first frames published", func() bool { return published() >= 2 })
	t.Logf("services up at %v", time.Since(began).Round(time.Millisecond))

	// Enrol in the background; kill the broker twice on the way.
	var enrolled, retries, conflicts atomic.Int64
	enrolErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			id := fmt.Sprintf("p%02d", i)
			r, k, err := enrolWithRetry(ctx, c, id, readDataset(t, crops[i%len(crops)]))
			retries.Add(int64(r))
			conflicts.Add(int64(k))
			if err != nil {
				enrolErr <- err
				return
			}
			enrolled.Add(1)
		}
		enrolErr <- nil
	})
	var lastRestart time.Time
	for _, at := range []int64{n / 4, n * 2 / 3} {
		eventually(t, 2*time.Minute, fmt.Sprintf("%d people enrolled", at), func() bool { return enrolled.Load() >= at })
		// Kill while a request is in flight: the next enrolment started
		// as soon as the last one finished.
		srv.Stop(syscall.SIGKILL)
		killed := time.Now()
		time.Sleep(time.Second)
		srv.Start()
		lastRestart = time.Now()
		t.Logf("SIGKILLed nats-server after %d people; back after %v", at, lastRestart.Sub(killed).Round(time.Millisecond))
	}
	pubAtRestart := published()
	wg.Wait()
	if err := <-enrolErr; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d people enrolled with %d retried requests (%d answered 409: stored although the client saw a failure) at %v",
		n, retries.Load(), conflicts.Load(), time.Since(began).Round(time.Millisecond))
	if retries.Load() == 0 {
		t.Errorf("no enrolment request failed: the SIGKILLs interrupted nothing, so the retry path was not tested")
	}

	// The gateway saw the outages and publishes again.
	if dropped() == 0 {
		t.Errorf("the gateway dropped no frame while the broker was down")
	}
	eventually(t, time.Minute, "frames published after the restart", func() bool { return published() >= pubAtRestart+4 })
	// Decisions again after the last restart.
	_, jsCheck := reconnecting(t, srv.URL(), "check")
	decisions := followDecisions(t, jsCheck)
	d := decisions.waitFor(t, 90*time.Second, "on a frame captured after the last restart", func(d *fv1.Decision) bool {
		return d.GetFrame().GetCaptureTime().AsTime().After(lastRestart)
	})
	t.Logf("decision after the restart: %s", brief(d))

	// ENROLMENTS: every person exactly once, each with a photo.
	upserts, photoAdds := map[string]int{}, map[string][]*fv1.PhotoAdd{}
	for _, m := range streamMsgs(t, jsCheck, bus.StreamEnrolments) {
		ch := &fv1.EnrolmentChange{}
		if err := bus.DecodeMsg(m.Header, m.Data, ch); err != nil {
			t.Fatalf("ENROLMENTS seq %d: %v", m.Sequence, err)
		}
		switch x := ch.GetChange().(type) {
		case *fv1.EnrolmentChange_PersonUpsert:
			upserts[x.PersonUpsert.GetPersonId()]++
		case *fv1.EnrolmentChange_PhotoAdd:
			photoAdds[x.PhotoAdd.GetPersonId()] = append(photoAdds[x.PhotoAdd.GetPersonId()], x.PhotoAdd)
		}
	}
	if len(upserts) != n {
		t.Errorf("ENROLMENTS names %d people, want %d", len(upserts), n)
	}
	dupPhotos := 0
	for i := range n {
		id := fmt.Sprintf("p%02d", i)
		if upserts[id] != 1 {
			t.Errorf("person %s: %d PersonUpserts in ENROLMENTS, want exactly 1", id, upserts[id])
		}
		if len(photoAdds[id]) == 0 {
			t.Errorf("person %s: no PhotoAdd in ENROLMENTS", id)
		}
		dupPhotos += max(len(photoAdds[id])-1, 0)
		for _, p := range photoAdds[id] {
			if _, err := photos.Get(ctx, id, p.GetPhotoId()); err != nil {
				t.Errorf("person %s: PhotoAdd %s is stored but its photo is not: %v", id, p.GetPhotoId(), err)
			}
		}
	}
	if dupPhotos > 0 {
		t.Logf("%d PhotoAdds of the same content again (a retried upload whose first attempt was stored)", dupPhotos)
	}

	// A fresh directory replayed from the stream knows exactly these people.
	_, jsFresh := reconnecting(t, srv.URL(), "fresh")
	fresh := runDirectory(t, jsFresh, keys, eng, "fresh-directory")
	people := fresh.People("")
	if len(people) != n {
		t.Errorf("replayed directory has %d people, want %d", len(people), n)
	}
	for _, p := range people {
		if len(p.Photos) == 0 {
			t.Errorf("replayed directory: %s has no photo", p.ID)
		}
		// The create named the group: a retry that got 409 must not have
		// lost it (the API publishes the membership after the person).
		if !slices.Contains(p.Groups, "staff") {
			t.Errorf("replayed directory: %s is not in group staff (groups %v)", p.ID, p.Groups)
		}
	}
	t.Logf("TestBrokerRestartDuringEnrolmentAndReplay took %v (frames published %v, dropped %v)",
		time.Since(began).Round(time.Millisecond), published(), dropped())
}
