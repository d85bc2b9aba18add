// Package bus is facegate's NATS JetStream layer: the one place that defines
// subjects, streams and headers, plus the publish and decode helpers every
// service uses. Payloads are the protobuf messages of proto/facegate/v1;
// package events holds their version and validation rules.
//
// # Subjects
//
//	facegate.frames.<site>.<camera>       Frame            gateway -> embedders
//	facegate.faces.<site>.<camera>        FaceEvent        embedders -> matcher
//	facegate.claims.<site>.<door>         Claim            badge readers -> matcher
//	facegate.decisions.<site>.<door>      Decision         matcher -> doors, audit, console
//	facegate.enrolments.<kind>.<key>      EnrolmentChange  enrolment API -> gallery, audit
//	facegate.errors.<service>             ErrorEvent       any service
//
// Build subjects only with the builders here (FramesSubject, ...). Every token
// is validated (ValidateToken): 1 to 64 ASCII letters, digits, '-' or '_'.
// That refuses what NATS interprets ('.', '*', '>', whitespace) and keeps ids
// usable as metric labels and file names.
//
// Enrolment subjects carry a key after the kind: the person id for person,
// photo and membership changes (see events.EnrolmentRoute). That is what
// makes erasure possible: everything about one person is matched by
// facegate.enrolments.*.<person id> and removed with one purge by subject
// (PurgePerson), without rewriting the stream.
//
// # Streams
//
// One stream per kind, each capturing facegate.<kind>.>. All use the limits
// retention policy, because several independent consumers read each stream
// (an embedder pool per model, a shadow pool during a model rollout, the
// matcher, the audit log): a work-queue stream would hand each frame to only
// one of them. Consumers are durable pull consumers that acknowledge only
// after their own output is acknowledged. Defaults (DefaultConfig):
//
//   - FRAMES: max age 10 s, 1 GiB, discard old, file storage (memory is
//     allowed). A frame not embedded within seconds is useless for opening a
//     door, and frames must never pile up behind a slow pool: dropping the
//     oldest keeps latency bounded. Duplicate window 10 s (it cannot exceed
//     the max age), which covers gateway retries.
//   - FACES: max age 5 min, 1 GiB, discard old. Face events carry embeddings
//     and crops, which are biometric data: keep them only as long as matcher
//     lag can plausibly reach.
//   - CLAIMS: max age 1 h, 64 KiB messages. Claims matter for seconds; an
//     hour leaves room to investigate.
//   - DECISIONS: max age 90 days, unlimited size, 64 KiB messages. Door
//     controllers and the console read recent history; the audit log keeps
//     the permanent record. No biometric data, so long retention is fine.
//   - ENROLMENTS: no max age, no size limit, file storage only, discard new.
//     The stream is the gallery's source of truth: replaying it rebuilds
//     people, photos (by reference), groups, doors and policies, and a model
//     rollout re-embeds the photos it names. Should anyone set a limit, a
//     refused publish is better than silently dropping the oldest history,
//     hence discard new. Purge and delete are deliberately allowed (DenyPurge
//     and DenyDelete false): erasure of a person must remove their earlier
//     changes, and that is a purge by subject. The audit log, not this
//     stream, is the tamper-evident record, and it holds only hashes.
//   - ERRORS: max age 7 days, 256 MiB, discard old.
//
// Every stream has a duplicate window (2 min unless its age is shorter) and
// allows direct get. EnsureStreams creates or updates all of them
// idempotently; services call it at start-up. Storage type and retention
// cannot change on an existing stream: the server refuses and the error
// names the stream.
//
// # Headers
//
// Header names are constants here (HeaderMsgID, HeaderSite, HeaderCamera,
// HeaderDoor, HeaderCaptureTime, HeaderSeq, HeaderSchema, HeaderTraceParent,
// HeaderTraceState). NATS headers are case-sensitive: use the constants.
// Frame identity (site, camera, sequence, capture time) is repeated in
// headers (FrameHeaders) so consumers can filter and measure latency without
// decoding. Trace context rides in W3C traceparent/tracestate;
// HeaderCarrier lets an OpenTelemetry propagator read and write them.
//
// # Publishing and de-duplication
//
// Publish encodes, sets HeaderSchema ("facegate.v1.Decision;v=1") and
// Nats-Msg-Id, publishes with the expected stream asserted, and waits for
// the acknowledgement. The default Nats-Msg-Id is a hash of the subject and
// the encoded bytes, so resending identical bytes is de-duplicated within
// the stream's window. Producers whose retries can produce different bytes
// for the same event set the id from the event's identity: the gateway uses
// FrameMsgID (site, camera, sequence, capture time), so a re-encoded retry
// of a frame is still one frame. A message over the server's max_payload or
// the stream's MaxMsgSize fails with ErrTooLarge, naming the limit.
//
// # Decoding
//
// Decode, DecodeMsg, DecodeFaceEvent and DecodeDecision return a *DecodeError
// for payloads that cannot be trusted, with a reason: ErrMalformed (bad
// protobuf, missing schema_version, or failing validation), ErrUnsupportedSchema
// (a newer schema_version) or ErrWrongType (the facegate-schema header names
// another type). A consumer terminates such a message rather than letting it
// be redelivered forever, and reports it on facegate.errors.<service>.
// Unknown fields are kept and re-encoded, so services pass on fields from
// newer producers.
//
// Package bus/embedded runs a NATS server in process (the all-in-one and
// tests); bus/natstest wraps it for tests.
package bus
