package apiauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
)

// Guard authenticates requests and applies the rate limits.
type Guard struct {
	store   atomic.Pointer[Store]
	limiter *Limiter
}

// NewGuard returns a guard over store's principals.
func NewGuard(store *Store, limiter *Limiter) *Guard {
	g := &Guard{limiter: limiter}
	g.store.Store(store)
	return g
}

// SetStore replaces the principals, e.g. after the tokens file changed.
func (g *Guard) SetStore(s *Store) { g.store.Store(s) }

// Limiter returns the guard's limiter.
func (g *Guard) Limiter() *Limiter { return g.limiter }

// Denial is why a request was refused before reaching its handler.
type Denial struct {
	Status     int // 401 or 429
	Message    string
	RetryAfter int // seconds, for 429
}

// ClientIP is the host part of the connection's remote address.
func ClientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Authenticate finds the request's principal. A request with an
// Authorization header is judged by it alone (a bad token is not rescued by
// a certificate); otherwise the verified client certificate counts. Failed
// attempts are charged to the client IP, and an IP over its limit gets 429
// without its credentials being looked at.
func (g *Guard) Authenticate(r *http.Request) (Principal, *Denial) {
	ip := ClientIP(r)
	if blocked, wait := g.limiter.AuthBlocked(ip); blocked {
		return Principal{}, &Denial{Status: http.StatusTooManyRequests,
			Message: "too many failed authentications from this address", RetryAfter: RetryAfterSeconds(wait)}
	}
	p, err := g.authenticate(r)
	if err == nil {
		return p, nil
	}
	if ok, wait := g.limiter.AuthFailed(ip); !ok {
		return Principal{}, &Denial{Status: http.StatusTooManyRequests,
			Message: "too many failed authentications from this address", RetryAfter: RetryAfterSeconds(wait)}
	}
	msg := "authentication required: send a bearer token or a client certificate"
	if errors.Is(err, ErrBadCredentials) {
		msg = "invalid credentials"
	}
	return Principal{}, &Denial{Status: http.StatusUnauthorized, Message: msg}
}

func (g *Guard) authenticate(r *http.Request) (Principal, error) {
	store := g.store.Load()
	if h, ok := r.Header["Authorization"]; ok {
		if len(h) != 1 {
			return Principal{}, ErrBadCredentials
		}
		scheme, token, found := strings.Cut(h[0], " ")
		if !found || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
			return Principal{}, ErrBadCredentials
		}
		return store.ByToken(strings.TrimSpace(token))
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		return store.ByCertificate(r.TLS.VerifiedChains[0][0])
	}
	return Principal{}, ErrNoCredentials
}

// RateLimit takes a token of class for p.
func (g *Guard) RateLimit(p Principal, class Class) *Denial {
	if ok, wait := g.limiter.Allow(p.Name, class); !ok {
		return &Denial{Status: http.StatusTooManyRequests,
			Message: fmt.Sprintf("rate limit of %s requests exceeded", class), RetryAfter: RetryAfterSeconds(wait)}
	}
	return nil
}

// WriteDenial writes d as a JSON error with the headers its status needs
// (WWW-Authenticate for 401, Retry-After for 429).
func WriteDenial(w http.ResponseWriter, d *Denial) {
	switch d.Status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="facegate"`)
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", strconv.Itoa(d.RetryAfter))
	}
	WriteError(w, d.Status, d.Message)
}

// WriteError writes {"error": msg} with status.
func WriteError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal WithPrincipal stored.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}

// Middleware authenticates, rate-limits by class and calls next with the
// principal in the request's context.
func (g *Guard) Middleware(class Class, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, d := g.Authenticate(r)
		if d == nil {
			d = g.RateLimit(p, class)
		}
		if d != nil {
			WriteDenial(w, d)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
	})
}

// ServerTLSConfig loads the server's certificate and, when clientCAFile is
// set, verifies client certificates against it. Client certificates are
// optional at the TLS layer (bearer-token clients have none); a
// certificate that is presented must verify, and only verified ones
// authenticate.
func ServerTLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("apiauth: load server certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAFile != "" {
		pem, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("apiauth: read client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("apiauth: client CA %s holds no PEM certificate", clientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}
