package gateway

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/natsconn"
)

// NATSOptions are the connection options a gateway needs: reconnect
// forever (a site's gateway outlives any NATS outage), no reconnect buffer
// (a publish during an outage fails at once and the frame is dropped,
// instead of queueing stale frames), credentials from the file, and
// connection events logged.
func (c *FileConfig) NATSOptions(log *zap.Logger) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name("facegate-gateway " + c.Gateway),
		nats.MaxReconnects(-1),
		nats.ReconnectBufSize(-1),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("NATS disconnected; frames are dropped until it is back", zap.Error(err))
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", zap.String("url", nc.ConnectedUrlRedacted()))
		}),
	}
	if c.NATS.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(c.NATS.InboxPrefix))
	}
	// Creds and NKeySeed are exclusive (Validate); natsconn tells the two
	// file kinds apart by content.
	cred := c.NATS.Creds
	if cred == "" {
		cred = c.NATS.NKeySeed
	}
	if cred != "" {
		o, err := natsconn.Credential(cred)
		if err != nil {
			return nil, fmt.Errorf("gateway: nats credential: %w", err)
		}
		opts = append(opts, o)
	}
	return opts, nil
}
