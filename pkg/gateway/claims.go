package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/telemetry"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// ClaimsPath is where badge readers post claims.
const ClaimsPath = "/v1/claims"

// MaxClaimBody bounds a claim request's body.
const MaxClaimBody = 16 << 10

// MaxClaimWindow bounds window_seconds: a claim that stays open longer
// would let a face verify a badge swiped long before.
const MaxClaimWindow = 10 * time.Minute

// IdempotencyKeyHeader lets a reader retry a claim without creating a
// second one: the key becomes the claim id and its Nats-Msg-Id.
const IdempotencyKeyHeader = "Idempotency-Key"

// ClaimsConfig configures the claims endpoint.
type ClaimsConfig struct {
	// Site is the one site this gateway accepts claims for.
	Site string
	// TokenHashes are SHA-256 digests of the accepted bearer tokens; the
	// tokens themselves are never stored.
	TokenHashes [][sha256.Size]byte
	JetStream   jetstream.JetStream
	// PublishTimeout bounds the publish; default 5 s.
	PublishTimeout time.Duration
	Tracer         trace.Tracer
	Log            *zap.Logger
	Metrics        *Metrics
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// ClaimRequest is the JSON body of POST /v1/claims.
type ClaimRequest struct {
	Site          string   `json:"site"`
	Door          string   `json:"door"`
	BadgeID       string   `json:"badge_id"`
	Reader        string   `json:"reader,omitempty"`
	WindowSeconds *float64 `json:"window_seconds,omitempty"`
}

// ClaimResponse is the 202 answer.
type ClaimResponse struct {
	ClaimID string `json:"claim_id"`
	// Duplicate is true when the idempotency key was seen before and the
	// claim was not stored again.
	Duplicate bool `json:"duplicate,omitempty"`
}

type claims struct {
	cfg ClaimsConfig
}

// HashToken is the configured form of a bearer token.
func HashToken(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

// NewClaimsHandler serves POST /v1/claims.
func NewClaimsHandler(cfg ClaimsConfig) (http.Handler, error) {
	if cfg.JetStream == nil || cfg.Metrics == nil {
		return nil, errors.New("gateway: claims: JetStream and Metrics are required")
	}
	if err := bus.ValidateToken("site", cfg.Site); err != nil {
		return nil, fmt.Errorf("gateway: claims: %w", err)
	}
	if len(cfg.TokenHashes) == 0 {
		return nil, errors.New("gateway: claims: no token hashes configured; every request would be refused")
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 5 * time.Second
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	mux := http.NewServeMux()
	mux.Handle(ClaimsPath, &claims{cfg: cfg})
	return mux, nil
}

func (c *claims) count(result string) { c.cfg.Metrics.Claims.WithLabelValues(c.cfg.Site, result).Inc() }

func (c *claims) fail(w http.ResponseWriter, status int, result, msg string) {
	c.count(result)
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// authorized checks the bearer token against every configured hash, in
// constant time per hash and without stopping at a match, so the answer's
// timing says nothing about which token or how much of it matched.
func (c *claims) authorized(r *http.Request) (ok, present bool) {
	auth := r.Header.Get("Authorization")
	scheme, tok, found := strings.Cut(auth, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return false, auth != ""
	}
	h := HashToken(strings.TrimSpace(tok))
	match := 0
	for _, want := range c.cfg.TokenHashes {
		match |= subtle.ConstantTimeCompare(h[:], want[:])
	}
	return match == 1, true
}

func (c *claims) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		c.fail(w, http.StatusMethodNotAllowed, ClaimMethodNotAllowed, "method "+r.Method+" not allowed; use POST")
		return
	}
	if ok, present := c.authorized(r); !ok {
		challenge := `Bearer realm="facegate-gateway"`
		if present {
			challenge += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		c.fail(w, http.StatusUnauthorized, ClaimUnauthorized, "a valid bearer token is required")
		return
	}
	req, status, msg := decodeClaim(w, r)
	if status != 0 {
		result := ClaimInvalid
		if status == http.StatusRequestEntityTooLarge {
			result = ClaimTooLarge
		}
		c.fail(w, status, result, msg)
		return
	}
	if req.Site != c.cfg.Site {
		c.fail(w, http.StatusForbidden, ClaimForbidden, fmt.Sprintf("site %q is not served by this gateway", req.Site))
		return
	}
	claimID := r.Header.Get(IdempotencyKeyHeader)
	if claimID != "" {
		if err := bus.ValidateToken(IdempotencyKeyHeader, claimID); err != nil {
			c.fail(w, http.StatusBadRequest, ClaimInvalid, "header "+err.Error())
			return
		}
	} else {
		claimID = newClaimID()
	}
	claim := &facegatev1.Claim{
		SchemaVersion: events.SchemaVersion,
		ClaimId:       claimID,
		Site:          req.Site,
		Door:          req.Door,
		BadgeId:       req.BadgeID,
		Time:          timestamppb.New(c.cfg.Now()),
		Reader:        req.Reader,
	}
	if req.WindowSeconds != nil {
		claim.Window = durationpb.New(time.Duration(*req.WindowSeconds * float64(time.Second)))
	}
	ack, err := c.publish(r.Context(), claim)
	if err != nil {
		c.cfg.Log.Warn("claim not published", zap.String("door", req.Door), zap.Error(err))
		c.fail(w, http.StatusServiceUnavailable, ClaimUnavailable, "the claim could not be stored; retry with the same Idempotency-Key")
		return
	}
	if ack.Duplicate {
		c.count(ClaimDuplicate)
	} else {
		c.count(ClaimAccepted)
	}
	writeJSON(w, http.StatusAccepted, ClaimResponse{ClaimID: claimID, Duplicate: ack.Duplicate})
}

func (c *claims) publish(ctx context.Context, claim *facegatev1.Claim) (*jetstream.PubAck, error) {
	subject, err := bus.ClaimsSubject(claim.GetSite(), claim.GetDoor())
	if err != nil {
		return nil, err
	}
	ctx, span := c.cfg.Tracer.Start(ctx, "gateway.claim", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("facegate.site", claim.GetSite()), attribute.String("facegate.door", claim.GetDoor()),
			attribute.String("facegate.claim_id", claim.GetClaimId())))
	defer span.End()
	h := nats.Header{}
	h.Set(bus.HeaderMsgID, claim.GetClaimId())
	h.Set(bus.HeaderSite, claim.GetSite())
	h.Set(bus.HeaderDoor, claim.GetDoor())
	telemetry.Inject(ctx, h)
	ctx, cancel := context.WithTimeout(ctx, c.cfg.PublishTimeout)
	defer cancel()
	ack, err := bus.Publish(ctx, c.cfg.JetStream, subject, claim, h)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "publish failed")
		return nil, err
	}
	return ack, nil
}

// decodeClaim reads and checks the body. status 0 means ok; otherwise msg
// says what is wrong, naming the field.
func decodeClaim(w http.ResponseWriter, r *http.Request) (ClaimRequest, int, string) {
	var req ClaimRequest
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return req, http.StatusBadRequest, fmt.Sprintf("content type %q: want application/json", ct)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxClaimBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return req, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is larger than %d bytes", MaxClaimBody)
		}
		return req, http.StatusBadRequest, "reading body: " + err.Error()
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te):
			return req, http.StatusBadRequest, fmt.Sprintf("field %q: %s is not a %s", te.Field, te.Value, te.Type)
		case errors.As(err, &se):
			return req, http.StatusBadRequest, fmt.Sprintf("body is not JSON: %v at byte %d", se, se.Offset)
		case errors.Is(err, io.EOF):
			return req, http.StatusBadRequest, "body is empty; want a JSON object with site, door and badge_id"
		case errors.Is(err, io.ErrUnexpectedEOF):
			return req, http.StatusBadRequest, "body is not JSON: it ends inside the object"
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return req, http.StatusBadRequest, "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
		}
		return req, http.StatusBadRequest, "body: " + err.Error()
	}
	if dec.More() {
		return req, http.StatusBadRequest, "body has data after the JSON object"
	}
	for _, f := range []struct{ name, v string }{{"site", req.Site}, {"door", req.Door}, {"badge_id", req.BadgeID}} {
		if f.v == "" {
			return req, http.StatusBadRequest, fmt.Sprintf("field %q is required", f.name)
		}
		if err := bus.ValidateToken(f.name, f.v); err != nil {
			return req, http.StatusBadRequest, fmt.Sprintf("field %q: %v", f.name, err)
		}
	}
	if req.Reader != "" {
		if err := bus.ValidateToken("reader", req.Reader); err != nil {
			return req, http.StatusBadRequest, fmt.Sprintf("field %q: %v", "reader", err)
		}
	}
	if ws := req.WindowSeconds; ws != nil && (*ws <= 0 || *ws > MaxClaimWindow.Seconds()) {
		return req, http.StatusBadRequest, fmt.Sprintf("field %q: %v is outside (0, %v]", "window_seconds", *ws, MaxClaimWindow.Seconds())
	}
	return req, 0, ""
}

// newClaimID returns a random version-4 UUID.
func newClaimID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
