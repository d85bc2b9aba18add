package sealed

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
)

// Errors, matched with errors.Is.
var (
	// ErrFormat: not a sealed blob, an unknown version, or truncated.
	ErrFormat = errors.New("malformed sealed blob")
	// ErrUnknownKey: the blob's key-encryption key is not available (never
	// was, or was removed, which is how a key's blobs are shredded).
	ErrUnknownKey = errors.New("unknown key-encryption key")
	// ErrTampered: authentication failed. Open returns it together with
	// ErrWrongContext when the data does not authenticate, because AES-GCM
	// cannot tell a modified blob from one opened under another context.
	// A wrapped data key that fails to authenticate is ErrTampered alone.
	ErrTampered = errors.New("sealed blob failed authentication")
	// ErrWrongContext: see ErrTampered.
	ErrWrongContext = errors.New("sealed blob belongs to another context")
	// ErrNoActiveKey: the key provider has no key to wrap with.
	ErrNoActiveKey = errors.New("no active key-encryption key")
)

// KeyProvider wraps and unwraps data keys with key-encryption keys (KEKs)
// it keeps. FileKeyProvider keeps them in files; a KMS provider keeps them
// in the KMS and never hands them out.
type KeyProvider interface {
	// WrapKey encrypts dek under the active KEK and names that KEK.
	WrapKey(ctx context.Context, dek []byte) (wrapped []byte, keyID string, err error)
	// UnwrapKey decrypts a wrapped data key. It returns an error wrapping
	// ErrUnknownKey when keyID is not available and ErrTampered when
	// wrapped does not authenticate under it.
	UnwrapKey(ctx context.Context, keyID string, wrapped []byte) (dek []byte, err error)
}

// Blob format, version 1 (all integers big-endian):
//
//	offset  size  field
//	0       4     magic "FGSB"
//	4       1     version (1)
//	5       1     n: key id length (1..255)
//	6       n     key id
//	6+n     2     m: wrapped data key length (1..65535)
//	8+n     m     wrapped data key (opaque to this package; the provider's)
//	8+n+m   12    nonce
//	20+n+m  ...   AES-256-GCM ciphertext and 16-byte tag
//
// The data is encrypted under a fresh random 256-bit data key with
// associated data
//
//	"facegate/sealed/v1" 0x00 magic version u32(len(context)) context
//
// so a blob opens only under the context it was sealed for, and the key id
// and wrapped key are not part of it: Rewrap replaces them without touching
// the ciphertext. Their integrity comes from the provider's wrapping (an
// edited wrapped key fails to unwrap, an edited key id names a key that
// does not exist or does not unwrap it).
const (
	magic      = "FGSB"
	version1   = 1
	nonceSize  = 12
	tagSize    = 16
	dekSize    = 32
	aadTag     = "facegate/sealed/v1\x00"
	maxContext = 4096
)

// TemplateContext is the context for a face template (encoding) of a
// collection (model), e.g. "facegate/template/dlib-resnet34-128/t-81f2".
// Parts are path-escaped so no two (collection, id) pairs collide.
func TemplateContext(collection, templateID string) string {
	return "facegate/template/" + url.PathEscape(collection) + "/" + url.PathEscape(templateID)
}

// PhotoContext is the context for a retained enrolment photo.
func PhotoContext(personID, photoID string) string {
	return "facegate/photo/" + url.PathEscape(personID) + "/" + url.PathEscape(photoID)
}

type header struct {
	keyID   string
	wrapped []byte
	nonce   []byte
	body    []byte // ciphertext and tag
}

func parse(blob []byte) (header, error) {
	var h header
	if len(blob) < 6 || string(blob[:4]) != magic {
		return h, fmt.Errorf("sealed: %w: no %q magic", ErrFormat, magic)
	}
	if blob[4] != version1 {
		return h, fmt.Errorf("sealed: %w: version %d, this build reads version %d", ErrFormat, blob[4], version1)
	}
	n := int(blob[5])
	p := 6
	if n == 0 || len(blob) < p+n+2 {
		return h, fmt.Errorf("sealed: %w: truncated key id", ErrFormat)
	}
	h.keyID = string(blob[p : p+n])
	p += n
	m := int(binary.BigEndian.Uint16(blob[p:]))
	p += 2
	if m == 0 || len(blob) < p+m+nonceSize+tagSize {
		return h, fmt.Errorf("sealed: %w: truncated (%d bytes)", ErrFormat, len(blob))
	}
	h.wrapped = blob[p : p+m]
	p += m
	h.nonce = blob[p : p+nonceSize]
	h.body = blob[p+nonceSize:]
	return h, nil
}

func (h *header) marshal() []byte {
	b := make([]byte, 0, 8+len(h.keyID)+len(h.wrapped)+nonceSize+len(h.body))
	b = append(b, magic...)
	b = append(b, version1, byte(len(h.keyID)))
	b = append(b, h.keyID...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.wrapped)))
	b = append(b, h.wrapped...)
	b = append(b, h.nonce...)
	return append(b, h.body...)
}

func checkWrapped(keyID string, wrapped []byte) error {
	if len(keyID) == 0 || len(keyID) > 255 {
		return fmt.Errorf("key id of %d bytes (want 1..255)", len(keyID))
	}
	if len(wrapped) == 0 || len(wrapped) > 0xffff {
		return fmt.Errorf("wrapped key of %d bytes (want 1..65535)", len(wrapped))
	}
	return nil
}

func aad(binding string) []byte {
	b := make([]byte, 0, len(aadTag)+5+4+len(binding))
	b = append(b, aadTag...)
	b = append(b, magic...)
	b = append(b, version1)
	b = binary.BigEndian.AppendUint32(b, uint32(len(binding)))
	return append(b, binding...)
}

func checkContext(c string) error {
	if c == "" {
		return errors.New("empty context: every blob must be bound to the record it belongs to")
	}
	if len(c) > maxContext {
		return fmt.Errorf("context of %d bytes (limit %d)", len(c), maxContext)
	}
	return nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal encrypts plaintext for the binding context (TemplateContext,
// PhotoContext: which record the blob belongs to) under a fresh data key,
// wrapped by kp's active KEK.
//
// The data key is zeroed before Seal returns. What Go cannot promise: the
// AES key schedule inside crypto/aes is not reachable to be zeroed and lives
// until the garbage collector reuses its memory; the runtime may have copied
// the key while growing a stack; nothing is locked out of swap or core
// dumps. Zeroing shortens the key's life in memory, it does not make memory
// disclosure harmless.
func Seal(ctx context.Context, kp KeyProvider, plaintext []byte, binding string) ([]byte, error) {
	if err := checkContext(binding); err != nil {
		return nil, fmt.Errorf("sealed: seal: %w", err)
	}
	dek := make([]byte, dekSize)
	defer clear(dek)
	rand.Read(dek) // crypto/rand.Read never fails (it crashes the program instead)
	wrapped, keyID, err := kp.WrapKey(ctx, dek)
	if err != nil {
		return nil, fmt.Errorf("sealed: seal: wrap data key: %w", err)
	}
	if err := checkWrapped(keyID, wrapped); err != nil {
		return nil, fmt.Errorf("sealed: seal: key provider returned a %w", err)
	}
	aead, err := newGCM(dek)
	if err != nil {
		return nil, fmt.Errorf("sealed: seal: %w", err)
	}
	h := header{keyID: keyID, wrapped: wrapped, nonce: make([]byte, nonceSize)}
	rand.Read(h.nonce)
	h.body = aead.Seal(nil, h.nonce, plaintext, aad(binding))
	return h.marshal(), nil
}

// Open decrypts a blob sealed for the binding context. Errors wrap ErrFormat,
// ErrUnknownKey, or ErrTampered (with ErrWrongContext when the data itself
// fails to authenticate).
func Open(ctx context.Context, kp KeyProvider, blob []byte, binding string) ([]byte, error) {
	if err := checkContext(binding); err != nil {
		return nil, fmt.Errorf("sealed: open: %w", err)
	}
	h, err := parse(blob)
	if err != nil {
		return nil, err
	}
	dek, err := kp.UnwrapKey(ctx, h.keyID, h.wrapped)
	if err != nil {
		return nil, fmt.Errorf("sealed: open: unwrap data key (key %q): %w", h.keyID, err)
	}
	defer clear(dek)
	if len(dek) != dekSize {
		return nil, fmt.Errorf("sealed: open: %w: unwrapped data key has %d bytes, want %d", ErrTampered, len(dek), dekSize)
	}
	aead, err := newGCM(dek)
	if err != nil {
		return nil, fmt.Errorf("sealed: open: %w", err)
	}
	pt, err := aead.Open(nil, h.nonce, h.body, aad(binding))
	if err != nil {
		return nil, fmt.Errorf("sealed: open: data does not authenticate: %w, or %w", ErrWrongContext, ErrTampered)
	}
	return pt, nil
}

// Rewrap re-wraps a blob's data key under kp's active KEK and returns the new
// blob; nonce and ciphertext are copied unchanged. This is how KEKs rotate
// without decrypting or re-encrypting any data: rotate, rewrap every blob
// whose BlobKeyID is not the active key, then remove the old KEK.
//
// Rewrap authenticates the wrapped data key but not the ciphertext (it does
// not know the context); Open still does.
func Rewrap(ctx context.Context, kp KeyProvider, blob []byte) ([]byte, error) {
	h, err := parse(blob)
	if err != nil {
		return nil, err
	}
	dek, err := kp.UnwrapKey(ctx, h.keyID, h.wrapped)
	if err != nil {
		return nil, fmt.Errorf("sealed: rewrap: unwrap data key (key %q): %w", h.keyID, err)
	}
	defer clear(dek)
	if len(dek) != dekSize {
		return nil, fmt.Errorf("sealed: rewrap: %w: unwrapped data key has %d bytes, want %d", ErrTampered, len(dek), dekSize)
	}
	wrapped, keyID, err := kp.WrapKey(ctx, dek)
	if err != nil {
		return nil, fmt.Errorf("sealed: rewrap: wrap data key: %w", err)
	}
	if err := checkWrapped(keyID, wrapped); err != nil {
		return nil, fmt.Errorf("sealed: rewrap: key provider returned a %w", err)
	}
	h.keyID, h.wrapped = keyID, wrapped
	return h.marshal(), nil
}

// BlobKeyID names the KEK a blob's data key is wrapped under, without
// unwrapping anything: what a rotation job needs to find blobs to rewrap.
func BlobKeyID(blob []byte) (string, error) {
	h, err := parse(blob)
	if err != nil {
		return "", err
	}
	return h.keyID, nil
}
