// Package natsconn builds the NATS connection options every facegate
// service uses: a client name, reconnecting forever, logged connection
// events, the credential (a .creds file or an NKEY seed file, told apart by
// content) and the inbox prefix a pkg/natsauth user must use.
package natsconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/bus"
)

// credsMarker starts the JWT section of a decorated .creds file; an NKEY
// seed file (facegate nats gen) holds only the seed.
var credsMarker = []byte("-----BEGIN NATS USER JWT-----")

// Options returns the connection options of a service named name (shown
// in the server's connection list). credsFile, when not empty, is a .creds
// file (JWT and seed) or a file holding an NKEY user seed; it is read now
// so that a missing or malformed credential fails at start-up with its
// path. inboxPrefix, when not empty, is set with nats.CustomInboxPrefix:
// natsauth users may subscribe only under User.InboxPrefix(), so without
// it every JetStream request of such a user times out. log (nil for none)
// receives disconnects and reconnects.
func Options(name, credsFile, inboxPrefix string, log *zap.Logger) ([]nats.Option, error) {
	if log == nil {
		log = zap.NewNop()
	}
	opts := []nats.Option{
		nats.Name(name), nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("NATS disconnected", zap.Error(err)) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", zap.String("url", nc.ConnectedUrlRedacted())) }),
	}
	if inboxPrefix != "" {
		// nats.go rejects bad prefixes only when connecting; check here so
		// the flag is named in the error.
		if err := validInboxPrefix(inboxPrefix); err != nil {
			return nil, err
		}
		opts = append(opts, nats.CustomInboxPrefix(inboxPrefix))
	}
	if credsFile == "" {
		return opts, nil
	}
	o, err := Credential(credsFile)
	if err != nil {
		return nil, err
	}
	return append(opts, o), nil
}

// Credential is the option authenticating with credsFile: a .creds file
// (nats.UserCredentials) or an NKEY seed file (nats.NkeyOptionFromSeed).
func Credential(credsFile string) (nats.Option, error) {
	b, err := os.ReadFile(credsFile)
	if err != nil {
		return nil, fmt.Errorf("natsconn: NATS credential %s: %w", credsFile, err)
	}
	if bytes.Contains(b, credsMarker) {
		return nats.UserCredentials(credsFile), nil
	}
	o, err := nats.NkeyOptionFromSeed(credsFile)
	if err != nil {
		return nil, fmt.Errorf("natsconn: NATS credential %s: neither a .creds file nor an NKEY seed: %w", credsFile, err)
	}
	return o, nil
}

// validInboxPrefix mirrors nats.go's rule: no wildcards, no trailing dot.
func validInboxPrefix(p string) error {
	var opts nats.Options
	if err := nats.CustomInboxPrefix(p)(&opts); err != nil {
		return fmt.Errorf("natsconn: inbox prefix %q: %w", p, err)
	}
	if strings.ContainsAny(p, " \t\r\n") {
		return fmt.Errorf("natsconn: inbox prefix %q: %w", p, errors.New("contains whitespace"))
	}
	return nil
}

// Conn is a service's connection: the core connection and its JetStream
// context.
type Conn struct {
	NC *nats.Conn
	JS jetstream.JetStream
}

// Connect connects to url with opts (from Options), opens JetStream and,
// when ensureStreams is set (development, the all-in-one; never under a
// least-privilege credential), creates or updates facegate's streams.
// Close with Drain so acks and publishes still buffered reach the server.
func Connect(ctx context.Context, url string, opts []nats.Option, ensureStreams bool) (*Conn, error) {
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if ensureStreams {
		if err := bus.EnsureStreams(ctx, js, bus.DefaultConfig()); err != nil {
			nc.Close()
			return nil, err
		}
	}
	return &Conn{NC: nc, JS: js}, nil
}

// Drain flushes what is buffered and closes the connection.
func (c *Conn) Drain() { _ = c.NC.Drain() }
