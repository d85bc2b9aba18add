// Package embedder turns camera frames into face events: it is the work loop
// of the embedder service (services/embedder), one pool per embedding model.
//
// A Worker reads the FRAMES stream through a durable pull consumer shared by
// every replica of the pool, so JetStream spreads frames across replicas and
// remembers progress across restarts. Each frame goes through decode, detect,
// quality gate, align, embed and L2-normalisation (package face), and becomes
// exactly one FaceEvent on facegate.faces.<site>.<camera>, also when no face
// was found, because the matcher closes claim windows on such events. Faces
// that fail the quality gate are reported with their reasons but without an
// embedding. With Config.Crops, each face also carries a 112x112 aligned
// JPEG for the console.
//
// # Delivery
//
// A frame is acknowledged only after its output is stored (JetStream's
// publish acknowledgement), and the acknowledgement itself is confirmed
// (double ack). A worker that dies in between leaves the frame unacked; it is
// redelivered and processed again. The face event's Nats-Msg-Id is derived
// from the frame's identity and the embedding space (FaceEventMsgID), not
// from the event bytes (which differ: processed_time, latencies), so the
// second publish falls into the FACES stream's duplicate window and is not
// stored twice.
//
// Every frame ends in one of these ways, each counted in Stats:
//
//   - a face event (Published), then ack;
//   - an expiry (Expired): its capture time is older than Config.MaxAge, so a
//     decision on it would open a door for someone who has left. An
//     ErrorEvent with code "expired" is published to facegate.errors.embedder
//     and the frame is acked. The record is explicit so that "every frame
//     ends as a face event or an expiry" can be checked from the streams.
//   - a poison frame (Poison): the protobuf, its metadata or the image cannot
//     be decoded. Redelivery cannot fix that, so an ErrorEvent with the reason
//     is published and the message is terminated (Term), which stops
//     JetStream redelivering it.
//   - a transient failure (Retried): inference or a publish failed. The frame
//     is negatively acknowledged with a delay and redelivered. On the
//     consumer's last allowed delivery (MaxDeliver) it is reported with code
//     "retries_exhausted" and terminated (Failed) rather than left for
//     JetStream to drop silently.
//
// # Concurrency and drain
//
// One goroutine fetches batches of Config.Batch messages; Config.Concurrency
// goroutines process them (the face engine is safe for concurrent use).
// Cancelling Run's context stops fetching; messages already fetched are
// still processed, published and acked (bounded by Config.DrainTimeout), so
// a rolling restart loses nothing and leaves nothing waiting for the ack
// timeout. What is left after the drain timeout is nacked at once for
// another replica.
//
// Stats are plain counters; the service exports them. Embeddings and image
// bytes are never logged.
package embedder
