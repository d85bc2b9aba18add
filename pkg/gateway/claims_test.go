package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"github.com/facegate/facegate/pkg/bus"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

const readerToken = "reader-secret-1"

func startClaims(t *testing.T) (*httptest.Server, jetstream.JetStream, *Metrics) {
	t.Helper()
	_, js := startBus(t)
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewClaimsHandler(ClaimsConfig{
		Site: site, TokenHashes: [][32]byte{HashToken("other-token"), HashToken(readerToken)},
		JetStream: js, Metrics: m, Log: zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, js, m
}

type claimCall struct {
	method, token, body, key string
}

func (c claimCall) do(t *testing.T, srv *httptest.Server) (*http.Response, map[string]any) {
	t.Helper()
	method := c.method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequest(method, srv.URL+ClaimsPath, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.key != "" {
		req.Header.Set(IdempotencyKeyHeader, c.key)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("%s answer is not JSON: %q", resp.Status, raw)
	}
	return resp, body
}

// storedClaims reads every claim in CLAIMS.
func storedClaims(t *testing.T, js jetstream.JetStream) []*facegatev1.Claim {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, bus.StreamClaims)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*facegatev1.Claim
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		raw, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var c facegatev1.Claim
		if err := bus.DecodeMsg(raw.Header, raw.Data, &c); err != nil {
			t.Fatal(err)
		}
		want, _ := bus.ClaimsSubject(c.GetSite(), c.GetDoor())
		if raw.Subject != want || raw.Header.Get(bus.HeaderMsgID) != c.GetClaimId() {
			t.Fatalf("claim %s on %s with Nats-Msg-Id %q", c.GetClaimId(), raw.Subject, raw.Header.Get(bus.HeaderMsgID))
		}
		out = append(out, &c)
	}
	return out
}

func TestClaimAccepted(t *testing.T) {
	srv, js, m := startClaims(t)
	resp, body := claimCall{token: readerToken, body: `{"site":"hq","door":"front","badge_id":"B-1234","reader":"rdr-1","window_seconds":7.5}`}.do(t, srv)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %s (%v), want 202", resp.Status, body)
	}
	id, _ := body["claim_id"].(string)
	if len(id) != 36 {
		t.Fatalf("claim_id %q is not a UUID", id)
	}
	claims := storedClaims(t, js)
	if len(claims) != 1 {
		t.Fatalf("%d claims stored, want 1", len(claims))
	}
	c := claims[0]
	if c.GetClaimId() != id || c.GetSite() != "hq" || c.GetDoor() != "front" || c.GetBadgeId() != "B-1234" ||
		c.GetReader() != "rdr-1" || c.GetWindow().AsDuration() != 7500*time.Millisecond || c.GetTime() == nil {
		t.Fatalf("stored claim %v does not match the request", c)
	}
	if got := testutil.ToFloat64(m.Claims.WithLabelValues(site, ClaimAccepted)); got != 1 {
		t.Errorf("accepted counter %v, want 1", got)
	}
}

func TestClaimIdempotencyKey(t *testing.T) {
	srv, js, m := startClaims(t)
	call := claimCall{token: readerToken, key: "swipe-77-a", body: `{"site":"hq","door":"front","badge_id":"B-1"}`}
	for i := range 3 {
		resp, body := call.do(t, srv)
		if resp.StatusCode != http.StatusAccepted || body["claim_id"] != "swipe-77-a" {
			t.Fatalf("attempt %d: %s %v", i, resp.Status, body)
		}
		if dup, _ := body["duplicate"].(bool); dup != (i > 0) {
			t.Fatalf("attempt %d: duplicate=%v", i, dup)
		}
	}
	if n := len(storedClaims(t, js)); n != 1 {
		t.Fatalf("%d claims stored for one idempotency key, want 1", n)
	}
	if got := testutil.ToFloat64(m.Claims.WithLabelValues(site, ClaimDuplicate)); got != 2 {
		t.Errorf("duplicate counter %v, want 2", got)
	}
	resp, body := claimCall{token: readerToken, key: "bad key!", body: `{"site":"hq","door":"front","badge_id":"B-1"}`}.do(t, srv)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body["error"].(string), IdempotencyKeyHeader) {
		t.Fatalf("invalid idempotency key: %s %v", resp.Status, body)
	}
}

func TestClaimRefusals(t *testing.T) {
	srv, js, m := startClaims(t)
	good := `{"site":"hq","door":"front","badge_id":"B-1"}`
	cases := []struct {
		name   string
		call   claimCall
		status int
		field  string // the error message must name it
		result string
	}{
		{"no token", claimCall{body: good}, 401, "", ClaimUnauthorized},
		{"wrong token", claimCall{token: "reader-secret-2", body: good}, 401, "", ClaimUnauthorized},
		{"other site", claimCall{token: readerToken, body: `{"site":"branch","door":"front","badge_id":"B-1"}`}, 403, "branch", ClaimForbidden},
		{"not json", claimCall{token: readerToken, body: `{"site":`}, 400, "JSON", ClaimInvalid},
		{"empty body", claimCall{token: readerToken, body: ``}, 400, "empty", ClaimInvalid},
		{"unknown field", claimCall{token: readerToken, body: `{"site":"hq","door":"front","badge_id":"B-1","pin":"1234"}`}, 400, "pin", ClaimInvalid},
		{"missing door", claimCall{token: readerToken, body: `{"site":"hq","badge_id":"B-1"}`}, 400, "door", ClaimInvalid},
		{"missing badge", claimCall{token: readerToken, body: `{"site":"hq","door":"front"}`}, 400, "badge_id", ClaimInvalid},
		{"bad door token", claimCall{token: readerToken, body: `{"site":"hq","door":"front.*","badge_id":"B-1"}`}, 400, "door", ClaimInvalid},
		{"bad badge token", claimCall{token: readerToken, body: `{"site":"hq","door":"front","badge_id":"B 1"}`}, 400, "badge_id", ClaimInvalid},
		{"bad reader token", claimCall{token: readerToken, body: `{"site":"hq","door":"front","badge_id":"B1","reader":"a>b"}`}, 400, "reader", ClaimInvalid},
		{"wrong type", claimCall{token: readerToken, body: `{"site":"hq","door":"front","badge_id":"B1","window_seconds":"5"}`}, 400, "window_seconds", ClaimInvalid},
		{"negative window", claimCall{token: readerToken, body: `{"site":"hq","door":"front","badge_id":"B1","window_seconds":-1}`}, 400, "window_seconds", ClaimInvalid},
		{"trailing data", claimCall{token: readerToken, body: good + `{"x":1}`}, 400, "after", ClaimInvalid},
		{"too large", claimCall{token: readerToken, body: `{"site":"hq","door":"front","badge_id":"` + strings.Repeat("A", MaxClaimBody) + `"}`}, 413, "bytes", ClaimTooLarge},
		{"GET", claimCall{method: http.MethodGet, token: readerToken}, 405, "GET", ClaimMethodNotAllowed},
	}
	counts := map[string]float64{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := tc.call.do(t, srv)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %s (%v), want %d", resp.Status, body, tc.status)
			}
			msg, _ := body["error"].(string)
			if msg == "" || !strings.Contains(msg, tc.field) {
				t.Fatalf("error %q does not name %q", msg, tc.field)
			}
			if tc.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("401 without a Bearer WWW-Authenticate challenge: %q", resp.Header.Get("WWW-Authenticate"))
			}
			if tc.status == 405 && resp.Header.Get("Allow") != http.MethodPost {
				t.Fatalf("405 with Allow %q", resp.Header.Get("Allow"))
			}
		})
		counts[tc.result]++
	}
	for result, n := range counts {
		if got := testutil.ToFloat64(m.Claims.WithLabelValues(site, result)); got != n {
			t.Errorf("claims_total{result=%q} = %v, want %v", result, got, n)
		}
	}
	if n := len(storedClaims(t, js)); n != 0 {
		t.Fatalf("%d claims stored from refused requests, want 0", n)
	}
}

func TestHashTokenMatchesSha256sum(t *testing.T) {
	// `printf %s test | sha256sum`
	const want = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	h := HashToken("test")
	c, err := ParseConfig([]byte("gateway: g\nsite: hq\nnats: {url: nats://x}\nclaims: {listen: ':0', token_sha256: [" + want + "]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.TokenHashes()[0] != h {
		t.Fatal("a configured sha256sum digest does not match HashToken of the same token")
	}
}
