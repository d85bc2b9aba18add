// Package sealed encrypts facegate's biometric data at rest (face encodings,
// retained enrolment photos) with envelope encryption: each object gets a
// fresh AES-256-GCM data key, and the data key is stored wrapped by a
// key-encryption key (KEK) that a KeyProvider keeps. FileKeyProvider keeps
// KEKs in a directory; a KMS-backed provider can implement the same
// two-method interface later.
//
// Each blob is bound to a context naming the record it belongs to
// (TemplateContext, PhotoContext): a blob copied to another record, person
// or collection fails to open. KEKs rotate without re-encrypting data:
// Rotate makes a new active KEK, Rewrap re-wraps each blob's data key, and
// the old KEK can then be removed.
//
// # Threat model
//
// Protects against: theft or exposure of the stored data without the KEKs
// (a database dump, a backup, a disk, a Milvus or object-store bucket);
// tampering with stored blobs, including swapping blobs between records,
// which fails authentication instead of yielding another person's template;
// and, by deleting a KEK, destroying every blob still wrapped under it
// (crypto-shredding, e.g. for old backups after a rotation).
//
// Does not protect against: an attacker who has both the data and the KEK
// directory (or any process that can call the provider): they decrypt
// everything, which is why the KEK directory belongs on another volume or,
// better, in a KMS; a compromised facegate process, which sees plaintext
// while it works; rollback of a record to an older blob sealed for the
// same context (the context binds a blob to a record, not to a version:
// put a version into the context if that matters); traffic analysis of
// blob sizes. Keys in memory are zeroed where Go allows, which is not
// everywhere (see Seal).
package sealed
