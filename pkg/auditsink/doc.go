// Package auditsink is facegate's audit consumer: it chains three JetStream
// streams into one pkg/audit log.
//
//   - DECISIONS: every access decision becomes a "decision" record with its
//     outcome, mode, site, door, camera, decision id, policy rule, distance
//     and threshold, model id and version.
//   - ENROLMENTS: every enrolment change becomes an "enrolment" record (what
//     changed, by whom) or, for a PersonDelete, an "erasure" record. Display
//     names, badge ids, templates and photo bytes are never copied.
//   - AUDIT (facegate.audit.<service>): AuditRecords that services publish for
//     administrative calls are appended with their kind, actor and summary.
//
// # Who a record is about
//
// A person is named only by events.PersonHash(person id) (the plain SHA-256
// that erasure tombstones and services' AuditRecords already carry); the log
// stores it as its keyed subject hash (audit.SubjectHash under the
// deployment's subject key). Decisions, enrolments, a tombstone that knows
// only the hash, and an API's erasure record therefore all get the same
// subject, and no record holds the id itself.
//
// # Delivery
//
// One durable pull consumer per stream. A fetched batch is appended, the log
// is fsynced once (group commit), and only then is each message acked, so
// an acked message is on stable storage. Redeliveries (a lost ack, a crash
// between fsync and ack) must not append twice: every record carries its
// source ("DECISIONS/1234") and the sink skips sources it has appended.
//
// The set of appended sources is not a per-stream high-water mark: when a
// sink dies holding unacked messages, its successor is handed newer messages
// first and the old ones only after AckWait, so "skip everything at or below
// the last appended sequence" would drop them. Instead the sink remembers the
// exact sources appended within the dedup horizon (2 x AckWait + 1 min by
// default), and on start reads them back from the log's tail: an appended
// but unacked message is redelivered within AckWait while its sink lives, so
// only records within AckWait of the log's last record can still be
// redelivered after a restart.
//
// A message that cannot be decoded or validated is recorded as a
// "malformed" record (stream, sequence, size and reason; never its bytes,
// never its subject, which may carry a person id) and terminated.
//
// Checkpoints are signed every CheckpointEvery records by pkg/audit, and in
// addition every CheckpointInterval while records are unsigned.
package auditsink
