package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// ErrKeyPermissions marks a private key file that group or others can
// access. A checkpoint key that others can read lets them forge the log.
var ErrKeyPermissions = errors.New("key file is accessible to group or others")

// SigningKey signs checkpoints. Its key id travels in every checkpoint so an
// auditor can tell which public key to use, and keys can be rotated.
type SigningKey struct {
	priv ed25519.PrivateKey
	id   string
}

// GenerateKey makes a new ed25519 checkpoint key.
func GenerateKey() (*SigningKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("audit: generate signing key: %w", err)
	}
	return NewSigningKey(priv)
}

// NewSigningKey wraps an existing ed25519 private key.
func NewSigningKey(priv ed25519.PrivateKey) (*SigningKey, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("audit: signing key has %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	return &SigningKey{priv: priv, id: KeyID(priv.Public().(ed25519.PublicKey))}, nil
}

// ID is the key id written into checkpoints: KeyID of the public key.
func (k *SigningKey) ID() string { return k.id }

// PublicKey is what auditors need to verify checkpoints.
func (k *SigningKey) PublicKey() ed25519.PublicKey {
	return k.priv.Public().(ed25519.PublicKey)
}

func (k *SigningKey) sign(msg []byte) []byte { return ed25519.Sign(k.priv, msg) }

// KeyID names a public key: the first 8 bytes of its SHA-256, hex. It is a
// label for choosing the key, not a security property: the signature is
// always checked against the full key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// WriteKeyFile stores the private key as PKCS #8 PEM, readable by openssl,
// in a new file with mode 0600. It refuses to overwrite an existing file:
// replacing a checkpoint key by accident makes older checkpoints
// unverifiable unless the old public key was kept.
func (k *SigningKey) WriteKeyFile(path string) error {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return fmt.Errorf("audit: encode signing key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("audit: create key file: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("audit: write key file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("audit: sync key file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("audit: close key file %s: %w", path, err)
	}
	return nil
}

// LoadKeyFile reads a private key written by WriteKeyFile (or `openssl
// genpkey -algorithm ed25519`). It refuses a file that group or others may
// read or write (ErrKeyPermissions). In a Kubernetes secret volume set
// defaultMode to 0400: the default 0644 is refused.
func LoadKeyFile(path string) (*SigningKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("audit: signing key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("audit: signing key %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("audit: signing key %s has mode %04o, want 0600 or stricter (chmod 600): %w", path, perm, ErrKeyPermissions)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit: signing key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("audit: signing key %s: no PEM \"PRIVATE KEY\" block", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("audit: signing key %s: %w", path, err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("audit: signing key %s is a %T, want ed25519", path, key)
	}
	return NewSigningKey(priv)
}

// MarshalPublicKey encodes a public key as PKIX PEM for auditors.
func MarshalPublicKey(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("audit: encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePublicKey reads a PKIX PEM public key (MarshalPublicKey's output).
// A public key is not secret, so its file mode is not checked.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("audit: public key: no PEM \"PUBLIC KEY\" block")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("audit: public key: %w", err)
	}
	pub, ok := key.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("audit: public key is a %T, want ed25519", key)
	}
	return pub, nil
}
