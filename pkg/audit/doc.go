// Package audit keeps facegate's audit trail: an append-only file of JSON
// lines, one record per line, hash-chained and periodically signed.
//
// # What a record holds
//
// Sequence number (1, 2, 3, ... without gaps), time (UTC), kind, actor, the
// subject as a keyed hash (HMAC-SHA256 under a per-deployment secret, see
// SubjectHash; person ids are never written), a small JSON payload of facts
// (outcome, door, site, distance, threshold, model id), the previous
// record's hash and its own hash. Payloads that look like biometric data
// (keys such as embedding, encoding, vector, image, photo, crop; long
// numeric arrays; long strings) are refused, because a log is kept for years
// and never erased record by record.
//
// # Format
//
// Each line is the one canonical encoding of its content (fixed key order,
// no whitespace, lower-case hex); Verify re-encodes every line and requires
// byte equality, so there are no insignificant bytes: any edited byte is
// either a malformed line or a changed value. Hashes are SHA-256 over a
// length-prefixed binary encoding, not over the JSON (see
// Record.ContentDigest for the exact layout). Every CheckpointEvery records
// and on Close the writer appends a checkpoint line: an ed25519 signature
// over (seq, chain hash, time, interval, key id).
//
// # Threat model
//
// Protects against: anyone who can edit the log file (or a copy, backup or
// export of it) but does not hold the checkpoint signing key. Editing,
// removing, reordering or inserting records, editing or forging
// checkpoints, and rewriting the chain after an edit are all detected by
// Verify, which names the seq and what is wrong. Records after the last
// checkpoint are vouched for by the hash chain only (reported as the
// unsigned tail): whoever can write the file can rewrite that tail
// undetectably, and cutting whole lines off the end is indistinguishable
// from a shorter log unless the verifier holds an anchor (a checkpoint kept
// from earlier, or shipped to an external witness; see Verifier.Anchors).
// The signed interval in each checkpoint limits a silently rewritten tail to
// CheckpointEvery records.
//
// Does not protect against: an attacker who can rewrite the whole file AND
// holds the signing key (keep the key off the host that stores the log if
// that matters, or anchor checkpoints externally); a compromised writer
// process, which can log lies before they are chained; deletion of the
// whole file (detect with anchors or external replication). Subject hashes
// are pseudonyms, not anonymity: whoever holds the subject key and a person
// id can find that person's records, and ids from a small space can be
// guessed by anyone with the key. Destroying the subject key makes every
// subject hash in the log unlinkable at once.
package audit
