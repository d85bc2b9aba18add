package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/natsauth"
	"github.com/facegate/facegate/pkg/natsauth/natsauthtest"
	"github.com/facegate/facegate/pkg/testenv"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

func TestParseNATSCredentialFlags(t *testing.T) {
	s, err := parse(nil, env(map[string]string{
		"FACEGATE_NATS_CREDS":        "/etc/facegate/nats/emb.nk",
		"FACEGATE_NATS_INBOX_PREFIX": "_INBOX.emb-hq",
		"FACEGATE_BIND":              "true",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.natsCreds != "/etc/facegate/nats/emb.nk" || s.inboxPrefix != "_INBOX.emb-hq" || !s.bind {
		t.Errorf("parsed %+v", s)
	}
	if s, err = parse(nil, env(nil), io.Discard); err != nil || s.natsCreds != "" || s.inboxPrefix != "" || s.bind {
		t.Errorf("defaults %+v, %v", s, err)
	}
}

// The embedder connects as a least-privilege natsauth embedder user (NKEY
// seed, its inbox prefix), binds to the durable consumer an admin created
// and turns every frame of its site into a face event. Without the inbox
// prefix or without --bind the same user cannot start.
func TestEmbedderConsumesAsLeastPrivilegeNKEYUser(t *testing.T) {
	testenv.Models(t)
	files, err := filepath.Glob(filepath.Join(testenv.Datasets(t), "face-api.js", "examples", "images", "*", "*.png"))
	if err != nil || len(files) < 4 {
		t.Fatalf("want the face-api.js crops, found %d (%v)", len(files), err)
	}
	emb := natsauth.User{Name: "emb-hq", Role: natsauth.RoleEmbedder, Site: "hq", Durable: "embedder-hq"}
	url, seeds := natsauthtest.Start(t, []natsauth.User{{Name: "admin", Role: natsauth.RoleAdmin}, emb})

	ctx := context.Background()
	adminOpt, err := nats.NkeyOptionFromSeed(natsauth.SeedFile(seeds, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	anc, err := nats.Connect(url, adminOpt, nats.CustomInboxPrefix("_INBOX.admin"))
	if err != nil {
		t.Fatal(err)
	}
	defer anc.Close()
	js, err := jetstream.New(anc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := bus.DefaultConfig()
	// Frames must outlive two model loads.
	cfg.Frames.MaxAge = 10 * time.Minute
	if err := bus.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	filter, _ := bus.SiteFilter(bus.KindFrames, "hq")
	if _, err := js.CreateConsumer(ctx, bus.StreamFrames, jetstream.ConsumerConfig{Durable: emb.Durable,
		AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: filter, AckWait: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	const n = 4
	subject, _ := bus.FramesSubject("hq", "lobby-1")
	now := time.Now()
	for i := range n {
		img, err := os.ReadFile(files[i])
		if err != nil {
			t.Fatal(err)
		}
		seq := uint64(i + 1)
		f := &facegatev1.Frame{SchemaVersion: events.SchemaVersion, Image: img,
			Meta: &facegatev1.FrameMeta{SchemaVersion: events.SchemaVersion, Site: "hq", Camera: "lobby-1", Sequence: seq,
				CaptureTime: timestamppb.New(now), Encoding: facegatev1.ImageEncoding_IMAGE_ENCODING_PNG}}
		hdr := nats.Header{}
		bus.FrameHeaders{Site: "hq", Camera: "lobby-1", Seq: seq, CaptureTime: now}.Apply(hdr)
		hdr.Set(bus.HeaderMsgID, bus.FrameMsgID("hq", "lobby-1", seq, now))
		if _, err := bus.Publish(ctx, js, subject, f, hdr); err != nil {
			t.Fatal(err)
		}
	}

	base := func(t *testing.T) settings {
		s, err := parse([]string{"--nats-url", url, "--nats-creds", natsauth.SeedFile(seeds, emb.Name),
			"--nats-inbox-prefix", emb.InboxPrefix(), "--bind", "--ensure-streams=false", "--durable", emb.Durable,
			"--site", "hq", "--max-age=5m", "--concurrency=2", "--stats-interval=0", "--instance=nats-test"}, env(nil), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	t.Run("refused", func(t *testing.T) {
		// The user may not create consumers: without --bind the embedder
		// fails at start instead of consuming.
		s := base(t)
		s.bind = false
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		err := run(rctx, s, zaptest.NewLogger(t))
		if err == nil || !strings.Contains(err.Error(), "consumer "+emb.Durable) {
			t.Fatalf("run without --bind = %v, want the consumer creation refused", err)
		}
	})

	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(rctx, base(t), zaptest.NewLogger(t)) }()
	faces, err := js.Stream(ctx, bus.StreamFaces)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(2 * time.Minute)
	for {
		info, err := faces.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == n {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("embedder stopped early: %v", err)
		case <-deadline:
			ci, err := js.Consumer(ctx, bus.StreamFrames, emb.Durable)
			if err == nil {
				cinfo, _ := ci.Info(ctx)
				t.Logf("consumer: %+v", cinfo)
			}
			t.Fatalf("%d of %d face events after 2 min", info.State.Msgs, n)
		case <-time.After(50 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("drain: %v", err)
	}
	cons, err := js.Consumer(ctx, bus.StreamFrames, emb.Durable)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Stream != n || info.NumAckPending != 0 || info.Config.FilterSubject != filter {
		t.Errorf("consumer after the run: ack floor %d, ack pending %d, filter %q; want %d, 0, %q (the embedder must not change it)",
			info.AckFloor.Stream, info.NumAckPending, info.Config.FilterSubject, n, filter)
	}
}
