// Package apiauth authenticates, authorises and rate-limits callers of
// facegate's enrolment and access API.
//
// Principals come from a tokens file (bearer tokens, stored only as their
// SHA-256) or from TLS client certificates verified against the client CA
// (the certificate's CommonName or a URI SAN names an entry's client_cert).
// Each principal has one role:
//
//   - admin: every route, every site;
//   - operator: people, photos, group memberships, doors, verify and
//     identify, for the sites listed in the entry only;
//   - auditor: read-only people metadata (never biometric data) of its
//     sites.
//
// A "*" in sites means every site (implicit for admins).
//
// Rate limits are token buckets per principal and endpoint class (verify and
// identify are slow on purpose, so that the gallery cannot be enumerated by
// probing it with photos), plus a bucket per client IP for failed
// authentications, so tokens cannot be guessed at speed. The client IP is
// the connection's remote address: X-Forwarded-For is not trusted, because
// any client can set it; behind a proxy the proxy's address is limited.
package apiauth

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/facegate/facegate/pkg/bus"
)

// Role is what a principal may do.
type Role string

// Roles.
const (
	RoleAdmin    Role = "admin"
	RoleOperator Role = "operator"
	RoleAuditor  Role = "auditor"
)

// AllSites in an entry's sites grants every site.
const AllSites = "*"

// Entry is one principal in the tokens file. Exactly one of TokenSHA256 and
// ClientCert is set: a principal authenticates one way, so a leaked token
// cannot stand in for a certificate-only identity.
type Entry struct {
	// Name identifies the principal in audit records and logs.
	Name string `json:"name"`
	// TokenSHA256 is the lower-case hex SHA-256 of the bearer token. The
	// token itself is never stored: the file can be read by more people
	// than should be able to call the API.
	TokenSHA256 string `json:"token_sha256,omitempty"`
	// ClientCert is the CommonName or URI SAN of the principal's client
	// certificate.
	ClientCert string   `json:"client_cert,omitempty"`
	Role       Role     `json:"role"`
	Sites      []string `json:"sites,omitempty"`
}

// File is the tokens file: either a YAML list of entries or an object with
// a "principals" list.
type File struct {
	Principals []Entry `json:"principals"`
}

// Principal is an authenticated caller.
type Principal struct {
	Name  string
	Role  Role
	Sites []string
	// Method is how the principal authenticated: "token" or "mtls".
	Method string
}

// AllSites reports whether the principal may act on every site.
func (p Principal) AllSites() bool {
	return p.Role == RoleAdmin || slices.Contains(p.Sites, AllSites)
}

// HasSite reports whether the principal may act on site. Only admins may
// act on the empty site (people no site manages).
func (p Principal) HasSite(site string) bool {
	if p.Role == RoleAdmin {
		return true
	}
	if site == "" {
		return false
	}
	return p.AllSites() || slices.Contains(p.Sites, site)
}

// Store holds the principals of a tokens file.
type Store struct {
	tokens       [][32]byte // token hashes, parallel to tokenEntries
	tokenEntries []Entry
	certs        map[string]Entry
}

// LoadFile reads and parses a tokens file.
func LoadFile(path string) (*Store, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("apiauth: read tokens file: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("apiauth: tokens file %s: %w", path, err)
	}
	return s, nil
}

// Parse parses a tokens file's content. Unknown fields, unknown roles,
// malformed hashes, invalid sites and duplicate names, hashes or
// certificate names are errors: a typo in an access file must not silently
// grant or drop access.
func Parse(data []byte) (*Store, error) {
	var entries []Entry
	trimmed := strings.TrimSpace(string(data))
	if strings.HasPrefix(trimmed, "-") || strings.HasPrefix(trimmed, "[") {
		if err := yaml.UnmarshalStrict(data, &entries); err != nil {
			return nil, fmt.Errorf("apiauth: parse principals list: %w", err)
		}
	} else {
		var f File
		if err := yaml.UnmarshalStrict(data, &f); err != nil {
			return nil, fmt.Errorf("apiauth: parse principals: %w", err)
		}
		entries = f.Principals
	}
	s := &Store{certs: map[string]Entry{}}
	names := map[string]bool{}
	hashes := map[[32]byte]bool{}
	for i, e := range entries {
		where := fmt.Sprintf("principal %d (%q)", i, e.Name)
		if e.Name == "" {
			return nil, fmt.Errorf("apiauth: principal %d: name is empty", i)
		}
		if names[e.Name] {
			return nil, fmt.Errorf("apiauth: %s: name appears twice", where)
		}
		names[e.Name] = true
		switch e.Role {
		case RoleAdmin, RoleOperator, RoleAuditor:
		default:
			return nil, fmt.Errorf("apiauth: %s: role %q is not admin, operator or auditor", where, e.Role)
		}
		for _, site := range e.Sites {
			if site == AllSites {
				continue
			}
			if err := bus.ValidateToken("site", site); err != nil {
				return nil, fmt.Errorf("apiauth: %s: %w", where, err)
			}
		}
		if e.Role == RoleOperator && len(e.Sites) == 0 {
			return nil, fmt.Errorf("apiauth: %s: an operator needs at least one site", where)
		}
		switch {
		case e.TokenSHA256 != "" && e.ClientCert != "":
			return nil, fmt.Errorf("apiauth: %s: set token_sha256 or client_cert, not both", where)
		case e.TokenSHA256 != "":
			raw, err := hex.DecodeString(e.TokenSHA256)
			if err != nil || len(raw) != sha256.Size || strings.ToLower(e.TokenSHA256) != e.TokenSHA256 {
				return nil, fmt.Errorf("apiauth: %s: token_sha256 must be 64 lower-case hex digits", where)
			}
			var h [32]byte
			copy(h[:], raw)
			if hashes[h] {
				return nil, fmt.Errorf("apiauth: %s: token_sha256 appears twice", where)
			}
			hashes[h] = true
			s.tokens = append(s.tokens, h)
			s.tokenEntries = append(s.tokenEntries, e)
		case e.ClientCert != "":
			if _, dup := s.certs[e.ClientCert]; dup {
				return nil, fmt.Errorf("apiauth: %s: client_cert %q appears twice", where, e.ClientCert)
			}
			s.certs[e.ClientCert] = e
		default:
			return nil, fmt.Errorf("apiauth: %s: needs token_sha256 or client_cert", where)
		}
	}
	return s, nil
}

// HashToken is the token_sha256 of a token, for writing tokens files.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// Authentication errors.
var (
	// ErrNoCredentials: neither a bearer token nor a verified client
	// certificate.
	ErrNoCredentials = errors.New("no credentials")
	// ErrBadCredentials: a token or certificate that names no principal.
	ErrBadCredentials = errors.New("invalid credentials")
	// ErrForbidden: authenticated, but the role or site does not allow it.
	ErrForbidden = errors.New("forbidden")
)

func principalOf(e Entry, method string) Principal {
	return Principal{Name: e.Name, Role: e.Role, Sites: slices.Clone(e.Sites), Method: method}
}

// ByToken returns the principal whose token hash matches token. Every entry
// is compared, in constant time, whatever matches: neither the timing of a
// comparison nor the number of comparisons says which prefix or entry was
// close.
func (s *Store) ByToken(token string) (Principal, error) {
	if token == "" {
		return Principal{}, ErrNoCredentials
	}
	h := sha256.Sum256([]byte(token))
	found := -1
	for i := range s.tokens {
		if subtle.ConstantTimeCompare(h[:], s.tokens[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Principal{}, ErrBadCredentials
	}
	return principalOf(s.tokenEntries[found], "token"), nil
}

// ByCertificate returns the principal named by a verified client
// certificate: its CommonName, else the first of its URI SANs that names an
// entry. The caller must pass a certificate from a verified chain
// (tls.ConnectionState.VerifiedChains), never an unverified peer
// certificate.
func (s *Store) ByCertificate(cert *x509.Certificate) (Principal, error) {
	if cert == nil {
		return Principal{}, ErrNoCredentials
	}
	if cn := cert.Subject.CommonName; cn != "" {
		if e, ok := s.certs[cn]; ok {
			return principalOf(e, "mtls"), nil
		}
	}
	for _, u := range cert.URIs {
		if e, ok := s.certs[u.String()]; ok {
			return principalOf(e, "mtls"), nil
		}
	}
	return Principal{}, ErrBadCredentials
}
