package audit

import (
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"time"
)

// Checkpoint is a signed statement "the record with this seq has this chain
// hash". Since every hash covers its predecessor, one valid checkpoint
// vouches for every record up to its seq.
type Checkpoint struct {
	Seq  uint64
	Hash Digest
	Time time.Time
	// Every is the writer's checkpoint interval, signed so that a verifier
	// knows by which seq the next checkpoint was due: stripping checkpoints
	// from a rewritten tail then shows as a missing checkpoint.
	Every     uint64
	KeyID     string
	Signature []byte // ed25519 over signedMessage
}

const checkpointTag = "facegate/audit/checkpoint/v1\x00"

// signedMessage is the exact byte string a checkpoint signs:
//
//	"facegate/audit/checkpoint/v1" 0x00 u64be(seq) hash[32]
//	u32be(len(time)) time u64be(every) u32be(len(key id)) key id
func (c *Checkpoint) signedMessage() []byte {
	b := make([]byte, 0, 128)
	b = append(b, checkpointTag...)
	b = binary.BigEndian.AppendUint64(b, c.Seq)
	b = append(b, c.Hash[:]...)
	b = appendLP(b, []byte(formatTime(c.Time)))
	b = binary.BigEndian.AppendUint64(b, c.Every)
	b = appendLP(b, []byte(c.KeyID))
	return b
}

func newCheckpoint(k *SigningKey, seq uint64, hash Digest, t time.Time, every uint64) Checkpoint {
	c := Checkpoint{Seq: seq, Hash: hash, Time: t.UTC(), Every: every, KeyID: k.ID()}
	c.Signature = k.sign(c.signedMessage())
	return c
}

// VerifySignature checks the checkpoint against one public key.
func (c *Checkpoint) VerifySignature(pub ed25519.PublicKey) bool {
	return len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, c.signedMessage(), c.Signature)
}

func (c *Checkpoint) marshalLine() []byte {
	b := make([]byte, 0, 320)
	b = append(b, `{"type":"checkpoint","seq":`...)
	b = strconv.AppendUint(b, c.Seq, 10)
	b = append(b, `,"hash":"`...)
	b = append(b, c.Hash.String()...)
	b = append(b, `","time":`...)
	b = append(b, jsonString(formatTime(c.Time))...)
	b = append(b, `,"every":`...)
	b = strconv.AppendUint(b, c.Every, 10)
	b = append(b, `,"key_id":`...)
	b = append(b, jsonString(c.KeyID)...)
	b = append(b, `,"sig":"`...)
	b = append(b, hex.EncodeToString(c.Signature)...)
	b = append(b, "\"}\n"...)
	return b
}

// link stands for a record an export leaves out: enough to carry the hash
// chain from the last exported record to the next checkpoint without
// disclosing the record.
type link struct {
	Seq    uint64
	Digest Digest
	Prev   Digest
	Hash   Digest
}

func (l *link) computeHash() Digest { return chainHash(l.Seq, l.Prev, l.Digest) }

func (l *link) marshalLine() []byte {
	b := make([]byte, 0, 260)
	b = append(b, `{"type":"link","seq":`...)
	b = strconv.AppendUint(b, l.Seq, 10)
	b = append(b, `,"digest":"`...)
	b = append(b, l.Digest.String()...)
	b = append(b, `","prev":"`...)
	b = append(b, l.Prev.String()...)
	b = append(b, `","hash":"`...)
	b = append(b, l.Hash.String()...)
	b = append(b, "\"}\n"...)
	return b
}
