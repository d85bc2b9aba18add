package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/facegate/facegate/models"
	"github.com/facegate/facegate/pkg/auditsink"
	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/embedder"
	"github.com/facegate/facegate/pkg/matcher"
	"github.com/facegate/facegate/pkg/natsconn"
)

// bootstrapResult is `facegate nats bootstrap --json`'s output.
type bootstrapResult struct {
	Streams   []string            `json:"streams"`
	Consumers []bootstrapConsumer `json:"consumers"`
}

type bootstrapConsumer struct {
	Stream  string `json:"stream"`
	Durable string `json:"durable"`
	Filter  string `json:"filter,omitempty"`
	For     string `json:"for"`    // embedder, matcher or audit
	Action  string `json:"action"` // created or updated
}

type bootstrapFlags struct {
	natsURL, creds, inbox  string
	space                  string
	sites                  []string
	embedderDurable        string
	matcherDurable         string
	auditDurable           string
	timeout                time.Duration
	embedderAck, matchAck  time.Duration
	auditAck               time.Duration
	auditBatch, maxDeliver int
}

func natsBootstrapCmd(a *app) *cobra.Command {
	var f bootstrapFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "bootstrap [--nats-url URL] --nats-creds FILE [--space SPACE] [--site SITE]...",
		Short: "Create or update the streams and the durable consumers least-privilege services bind to",
		Long: `Connects as an admin user (pkg/natsauth role admin) and creates or updates every stream
(bus.DefaultConfig) and the durable consumers that the embedder, matcher and audit users may only bind to:

  FRAMES      embedder-<space> (all sites), or embedder-<space>-<site> per --site
  FACES       matcher, or matcher-<site> per --site
  CLAIMS      matcher, or matcher-<site> per --site
  DECISIONS, ENROLMENTS, AUDIT   audit

The consumer settings are the services' own (embedder.ConsumerConfigFor, matcher.ConsumerConfigsFor,
auditsink.ConsumerConfig). A natsauth user reads through its Durable (default: its name), so name the
users after these consumers or pass --embedder-durable, --matcher-durable, --audit-durable. Safe to run
again: existing streams and consumers are updated in place. Embedders then run with --bind and
--ensure-streams=false.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(f.sites) > 1 && (f.embedderDurable != "" || f.matcherDurable != "") {
				return usageErr("--embedder-durable and --matcher-durable name one consumer: give at most one --site with them")
			}
			for _, s := range f.sites {
				if err := bus.ValidateToken("site", s); err != nil {
					return usageErr("--site: %v", err)
				}
			}
			if f.space == "" {
				m, err := models.Load()
				if err != nil {
					return err
				}
				f.space = models.Space(m.DefaultEncoder().ID, true)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			opts, err := natsconn.Options("facegate-bootstrap", f.creds, f.inbox, nil)
			if err != nil {
				return usageErr("%v", err)
			}
			nc, err := nats.Connect(f.natsURL, opts...)
			if err != nil {
				return fmt.Errorf("nats bootstrap: connect to %s: %w", f.natsURL, err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return fmt.Errorf("nats bootstrap: jetstream: %w", err)
			}
			res, err := bootstrap(ctx, js, f)
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(res)
			}
			fmt.Fprintf(a.stdout, "streams: %v\n", res.Streams)
			for _, c := range res.Consumers {
				fmt.Fprintf(a.stdout, "%-8s %-10s %-28s %-8s %s\n", c.Action, c.Stream, c.Durable, c.For, c.Filter)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.natsURL, "nats-url", nats.DefaultURL, "NATS server URL(s)")
	fl.StringVar(&f.creds, "nats-creds", "", "admin credential: an NKEY seed file (facegate nats gen) or a .creds file")
	fl.StringVar(&f.inbox, "nats-inbox-prefix", "", "inbox prefix of the admin user (natsauth: _INBOX.<user name>)")
	fl.StringVar(&f.space, "space", "", "embedding space of the embedder pool (default: the manifest's default encoder, mirrored)")
	fl.StringArrayVar(&f.sites, "site", nil, "create per-site embedder and matcher consumers for this site (repeatable); none: one consumer for every site")
	fl.StringVar(&f.embedderDurable, "embedder-durable", "", "embedder consumer name (default embedder-<space>[-<site>])")
	fl.StringVar(&f.matcherDurable, "matcher-durable", "", "matcher consumer name (default matcher[-<site>])")
	fl.StringVar(&f.auditDurable, "audit-durable", "audit", "audit consumer name")
	fl.DurationVar(&f.embedderAck, "embedder-ack-wait", 30*time.Second, "embedder consumer ack wait (the embedder's --ack-wait)")
	fl.DurationVar(&f.matchAck, "matcher-ack-wait", 30*time.Second, "matcher consumers' ack wait")
	fl.DurationVar(&f.auditAck, "audit-ack-wait", 30*time.Second, "audit consumers' ack wait")
	fl.IntVar(&f.auditBatch, "audit-batch", 64, "the audit service's --batch (bounds its consumers' ack pending)")
	fl.IntVar(&f.maxDeliver, "max-deliver", 5, "deliveries of one message to embedders and matchers")
	fl.DurationVar(&f.timeout, "timeout", 30*time.Second, "bound on the whole run")
	fl.BoolVar(&asJSON, "json", false, "print a JSON summary")
	return cmd
}

// bootstrap does the work of `nats bootstrap` on js.
func bootstrap(ctx context.Context, js jetstream.JetStream, f bootstrapFlags) (*bootstrapResult, error) {
	cfg := bus.DefaultConfig()
	if err := bus.EnsureStreams(ctx, js, cfg); err != nil {
		return nil, fmt.Errorf("nats bootstrap: streams: %w", err)
	}
	res := &bootstrapResult{Streams: []string{bus.StreamFrames, bus.StreamFaces, bus.StreamClaims, bus.StreamDecisions,
		bus.StreamEnrolments, bus.StreamErrors, bus.StreamAudit}}
	ensure := func(stream, owner string, cc jetstream.ConsumerConfig) error {
		action := "updated"
		if _, err := js.Consumer(ctx, stream, cc.Durable); errors.Is(err, jetstream.ErrConsumerNotFound) {
			action = "created"
		} else if err != nil {
			return fmt.Errorf("nats bootstrap: look up consumer %s on %s: %w", cc.Durable, stream, err)
		}
		if _, err := js.CreateOrUpdateConsumer(ctx, stream, cc); err != nil {
			return fmt.Errorf("nats bootstrap: %s consumer %s on %s: %w", owner, cc.Durable, stream, err)
		}
		res.Consumers = append(res.Consumers, bootstrapConsumer{Stream: stream, Durable: cc.Durable, Filter: cc.FilterSubject, For: owner, Action: action})
		return nil
	}
	sites := f.sites
	if len(sites) == 0 {
		sites = []string{""}
	}
	for _, site := range sites {
		durable, filter := f.embedderDurable, ""
		if site != "" {
			var err error
			if filter, err = bus.SiteFilter(bus.KindFrames, site); err != nil {
				return nil, err
			}
			if durable == "" {
				durable = embedder.DefaultDurable(f.space) + "-" + site
			}
		}
		if err := ensure(bus.StreamFrames, embedder.Service, embedder.ConsumerConfigFor(f.space, durable, filter, f.embedderAck, f.maxDeliver)); err != nil {
			return nil, err
		}
		faces, claims, err := matcher.ConsumerConfigsFor(site, f.matcherDurable, f.matcherDurable, f.matchAck, f.maxDeliver)
		if err != nil {
			return nil, err
		}
		if err := ensure(bus.StreamFaces, matcher.Service, faces); err != nil {
			return nil, err
		}
		if err := ensure(bus.StreamClaims, matcher.Service, claims); err != nil {
			return nil, err
		}
	}
	for _, stream := range []string{bus.StreamDecisions, bus.StreamEnrolments, bus.StreamAudit} {
		if err := ensure(stream, "audit", auditsink.ConsumerConfig(f.auditDurable, f.auditAck, f.auditBatch)); err != nil {
			return nil, err
		}
	}
	return res, nil
}
