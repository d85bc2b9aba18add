package cli_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/natsauth"
	"github.com/facegate/facegate/pkg/natsauth/natsauthtest"
)

type bootstrapOut struct {
	Streams   []string `json:"streams"`
	Consumers []struct {
		Stream, Durable, Filter, For, Action string
	} `json:"consumers"`
}

// `nats bootstrap` run twice as the admin creates, then updates, every
// stream and consumer; afterwards each least-privilege service user binds
// to its consumer, which has the service's filter and explicit acks.
func TestNatsBootstrapCreatesConsumersServicesBindTo(t *testing.T) {
	const space = "dlib-resnet34-128+mirror"
	emb := natsauth.User{Name: "emb-hq", Role: natsauth.RoleEmbedder, Site: "hq", Durable: "embedder-dlib-resnet34-128-mirror-hq"}
	mat := natsauth.User{Name: "matcher-hq", Role: natsauth.RoleMatcher, Site: "hq"}
	aud := natsauth.User{Name: "audit", Role: natsauth.RoleAudit}
	url, seeds := natsauthtest.Start(t, []natsauth.User{{Name: "admin", Role: natsauth.RoleAdmin}, emb, mat, aud})

	args := []string{"nats", "bootstrap", "--nats-url", url, "--nats-creds", natsauth.SeedFile(seeds, "admin"),
		"--nats-inbox-prefix", "_INBOX.admin", "--space", space, "--site", "hq", "--json"}
	for i, want := range []string{"created", "updated"} {
		r := facegate(t, args...)
		if r.code != 0 {
			t.Fatalf("run %d: exit %d: %s", i+1, r.code, r.stderr)
		}
		var out bootstrapOut
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatalf("run %d: stdout %q: %v", i+1, r.stdout, err)
		}
		if len(out.Streams) != 7 || len(out.Consumers) != 6 {
			t.Fatalf("run %d: summary %+v", i+1, out)
		}
		for _, c := range out.Consumers {
			if c.Action != want {
				t.Errorf("run %d: consumer %s on %s %s, want %s", i+1, c.Durable, c.Stream, c.Action, want)
			}
		}
	}

	type binding struct {
		user           natsauth.User
		stream, filter string
	}
	bindings := []binding{
		{emb, bus.StreamFrames, "facegate.frames.hq.*"},
		{mat, bus.StreamFaces, "facegate.faces.hq.*"},
		{mat, bus.StreamClaims, "facegate.claims.hq.*"},
		{aud, bus.StreamDecisions, ""},
		{aud, bus.StreamEnrolments, ""},
		{aud, bus.StreamAudit, ""},
	}
	ctx := context.Background()
	for _, b := range bindings {
		seed, err := nats.NkeyOptionFromSeed(natsauth.SeedFile(seeds, b.user.Name))
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(url, seed, nats.CustomInboxPrefix(b.user.InboxPrefix()))
		if err != nil {
			t.Fatalf("%s: connect: %v", b.user.Name, err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		durable := b.user.Durable
		if durable == "" {
			durable = b.user.Name
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cons, err := js.Consumer(cctx, b.stream, durable)
		if err != nil {
			t.Errorf("%s cannot bind to %s on %s: %v", b.user.Name, durable, b.stream, err)
		} else {
			// A pull under the user's permissions works (nothing is there yet).
			if _, err := cons.Fetch(1, jetstream.FetchMaxWait(200*time.Millisecond)); err != nil {
				t.Errorf("%s: fetch from %s: %v", b.user.Name, durable, err)
			}
			info := cons.CachedInfo()
			if info.Config.FilterSubject != b.filter || info.Config.AckPolicy != jetstream.AckExplicitPolicy {
				t.Errorf("%s on %s: filter %q, ack %v; want %q, explicit", durable, b.stream, info.Config.FilterSubject, info.Config.AckPolicy, b.filter)
			}
		}
		cancel()
		nc.Close()
	}

	if r := facegate(t, "nats", "bootstrap", "--nats-url", url, "--nats-creds", filepath.Join(seeds, "absent.nk")); r.code != 2 {
		t.Errorf("missing credential: exit %d, want 2: %s", r.code, r.stderr)
	}
	if r := facegate(t, "nats", "bootstrap", "--nats-url", url, "--site", "a.b"); r.code != 2 {
		t.Errorf("bad site: exit %d, want 2: %s", r.code, r.stderr)
	}
}
