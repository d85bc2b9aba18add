package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/facegate/facegate/pkg/allinone"
	"github.com/facegate/facegate/pkg/api"
	"github.com/facegate/facegate/pkg/audit"
	"github.com/facegate/facegate/pkg/directory/directorytest"
	"github.com/facegate/facegate/pkg/gateway"
	"github.com/facegate/facegate/pkg/testenv"
	fv1 "github.com/facegate/facegate/proto/facegate/v1"
)

// stack is one allinone.Run in the background.
type stack struct {
	info   allinone.Info
	cancel context.CancelFunc
	done   chan error
}

func startStack(t *testing.T, cfg allinone.Config) *stack {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &stack{cancel: cancel, done: make(chan error, 1)}
	ready := make(chan allinone.Info, 1)
	go func() { s.done <- allinone.Run(ctx, cfg, func(i allinone.Info) { ready <- i }) }()
	select {
	case s.info = <-ready:
	case err := <-s.done:
		cancel()
		t.Fatalf("allinone.Run ended before it was ready: %v", err)
	case <-time.After(3 * time.Minute):
		cancel()
		t.Fatal("allinone.Run not ready within 3 min")
	}
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop cancels the run and fails the test if it did not end cleanly.
func (s *stack) stop(t *testing.T) {
	t.Helper()
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("allinone.Run returned %v", err)
		}
	case <-time.After(time.Minute):
		t.Error("allinone.Run did not return within 1 min of its context ending")
	}
}

func (s *stack) connect(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.info.NATSURL, nats.Name(t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func (s *stack) admin(t *testing.T) *apiClient {
	t.Helper()
	tok, err := os.ReadFile(s.info.AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	return &apiClient{base: s.info.APIURL, token: strings.TrimSpace(string(tok)), hc: &http.Client{Timeout: time.Minute}}
}

// claim posts a badge swipe to the gateway's claims endpoint with an
// idempotency key, which becomes the claim id.
func claim(t *testing.T, url, token, key, door, badge string) gateway.ClaimResponse {
	t.Helper()
	body, _ := json.Marshal(gateway.ClaimRequest{Site: "hq", Door: door, BadgeID: badge, Reader: "reader-" + door})
	hc := &http.Client{Timeout: 30 * time.Second}
	hr, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Authorization", "Bearer "+token)
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set(gateway.IdempotencyKeyHeader, key)
	resp, err := hc.Do(hr)
	if err != nil {
		t.Fatalf("claim %s: %v", key, err)
	}
	defer resp.Body.Close()
	var out gateway.ClaimResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("claim %s: status %d, decode %v", key, resp.StatusCode, err)
	}
	if out.ClaimID != key {
		t.Fatalf("claim %s: the gateway answered claim id %q", key, out.ClaimID)
	}
	return out
}

// checkLatencies fails unless a face decision lists the embedder's stages
// and the matcher's, each non-negative.
func checkLatencies(t *testing.T, d *fv1.Decision) {
	t.Helper()
	st := stages(d)
	for _, want := range []string{"embedder_queue", "queue", "match", "frame_to_decision"} {
		if !slices.Contains(st, want) {
			t.Errorf("decision %s: latency stages %v lack %q", brief(d), st, want)
		}
	}
	if len(st) < 5 {
		t.Errorf("decision %s: latency stages %v: want the embedder's own stages too", brief(d), st)
	}
	for _, l := range d.GetLatencies() {
		if l.GetDuration().AsDuration() < 0 {
			t.Errorf("decision %s: stage %s is negative", brief(d), l.GetStage())
		}
	}
}

// TestEndToEnd runs the all-in-one stack (`facegate up`) on a fresh data
// directory and drives it from the outside only: the enrolment API over
// HTTP, two folder cameras of a gateway and the gateway's claims endpoint.
// It asserts the decisions stored on facegate.decisions.hq.>:
//
//   - identify door "main": an enrolled person in an allowed group is GRANTed
//     by name, an enrolled person in no allowed group is DENYed, a stranger
//     is UNKNOWN, and both people in one frame get their own decisions —
//     and every decision on a frame captured while a scene was shown is one
//     that scene calls for (no stranger let in, nobody mistaken, nobody
//     named twice in a frame); no decision id is stored twice;
//   - verify door "lab": a badge swipe with the badge holder's face is a
//     GRANT (a repeated swipe with the same idempotency key is a duplicate),
//     a swipe of A's badge with B's face is a MISMATCH;
//   - face decisions carry the embedder's and the matcher's latency stages.
//
// Then the stack is stopped and started again on the same data directory:
// the people are still there (GET), a new frame of the enrolled person is
// GRANTed again, and the audit log, written by both runs, verifies against
// the checkpoint key and holds no record the consumer had to mark malformed.
func TestEndToEnd(t *testing.T) {
	began := time.Now()
	root := testenv.Models(t)
	// Keep ONNX Runtime's process-wide environment alive across the two
	// runs: each run opens and closes its own runtime.
	directorytest.Engine(t)

	sheldon := [][]byte{crop(t, "sheldon", 1), crop(t, "sheldon", 2), crop(t, "sheldon", 4)}
	howard := [][]byte{crop(t, "howard", 1), crop(t, "howard", 2)}
	sheldonProbe, howardProbe, stranger := crop(t, "sheldon", 5), crop(t, "howard", 3), crop(t, "penny", 2)
	blank := blankJPEG(t)

	lobby, lab := newScene(t, blank), newScene(t, blank)
	const readerToken = "reader-token-e2e-0123456789"
	tokHash := gateway.HashToken(readerToken)
	gw := &gateway.FileConfig{Gateway: "hq-gw", Site: "hq", NATS: gateway.NATSConfig{URL: "nats://ignored-by-allinone:4222"},
		Cameras: []gateway.CameraConfig{
			{ID: "lobby-cam", Source: lobby.source(), FPS: 4, Loop: true},
			{ID: "lab-cam", Source: lab.source(), FPS: 4, Loop: true},
		},
		Claims: &gateway.ClaimsFile{Listen: "127.0.0.1:0", TokenSHA256: []string{hex.EncodeToString(tokHash[:])}},
	}
	if err := gw.Validate(); err != nil {
		t.Fatal(err)
	}
	const claimWindow = 3 * time.Second
	// A 1 ns cooldown decides every frame (the default 5 s would make the
	// two faces of the last scene lapse out of step), so every frame's
	// decisions can be checked against what it showed.
	cfg := allinone.Config{DataDir: t.TempDir(), APIAddr: "127.0.0.1:0", Gateways: []*gateway.FileConfig{gw},
		CacheDir: root, Concurrency: 2, Cooldown: time.Nanosecond, ClaimWindow: claimWindow, Log: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))}

	s := startStack(t, cfg)
	t.Logf("stack up in %v: api %s, nats %s, space %s, threshold %.4f", time.Since(began).Round(time.Millisecond),
		s.info.APIURL, s.info.NATSURL, s.info.Space, s.info.Threshold)
	js := s.connect(t)
	decisions := followDecisions(t, js)
	c := s.admin(t)
	ctx := context.Background()

	// Enrolment through the API.
	must(t, "group staff", c.json(ctx, "PUT", "/v1/groups/staff", map[string]any{"display_name": "Staff"}), http.StatusOK)
	must(t, "group visitors", c.json(ctx, "PUT", "/v1/groups/visitors", map[string]any{"display_name": "Visitors"}), http.StatusOK)
	must(t, "door main", c.json(ctx, "PUT", "/v1/sites/hq/doors/main",
		map[string]any{"display_name": "Main entrance", "mode": "identify", "cameras": []string{"lobby-cam"}}), http.StatusOK)
	must(t, "door lab", c.json(ctx, "PUT", "/v1/sites/hq/doors/lab",
		map[string]any{"display_name": "Lab", "mode": "verify", "cameras": []string{"lab-cam"}}), http.StatusOK)
	must(t, "policy", c.json(ctx, "PUT", "/v1/policies/staff-doors", map[string]any{"groups": []string{"staff"},
		"doors": []map[string]string{{"site": "hq", "door": "main"}, {"site": "hq", "door": "lab"}}, "effect": "allow"}), http.StatusOK)
	for _, p := range []struct {
		id, group string
		photos    [][]byte
	}{{"sheldon", "staff", sheldon}, {"howard", "visitors", howard}} {
		must(t, "create "+p.id, c.json(ctx, "POST", "/v1/people", map[string]any{"person_id": p.id,
			"display_name": p.id, "site": "hq", "badge_ids": []string{"badge-" + p.id}, "groups": []string{p.group}}), http.StatusCreated)
		r := must(t, "photos of "+p.id, c.photos(ctx, p.id, p.photos...), http.StatusCreated)
		var added api.PhotosResponse
		if err := json.Unmarshal(r.body, &added); err != nil || len(added.Photos) != len(p.photos) {
			t.Fatalf("photos of %s: %s (%v)", p.id, r, err)
		}
	}
	checkPerson(t, c, "sheldon", "staff", 3)
	t.Logf("enrolled 2 people at %v", time.Since(began).Round(time.Millisecond))

	// The identify door: four scenes, each shown until one frame captured
	// after the switch has every decision the scene calls for. The last
	// puts two people in one frame (the crops side by side): each face is
	// decided on its own.
	const wait = 90 * time.Second
	type verdict struct {
		person  string
		outcome fv1.Outcome
	}
	type shown struct {
		from time.Time
		want []verdict
	}
	grantSheldon, denyHoward := verdict{"sheldon", fv1.Outcome_OUTCOME_GRANT}, verdict{"howard", fv1.Outcome_OUTCOME_DENY}
	var scenes []shown
	for _, sc := range []struct {
		img  []byte
		want []verdict
	}{
		{sheldonProbe, []verdict{grantSheldon}},
		{howardProbe, []verdict{denyHoward}},
		{stranger, []verdict{{"", fv1.Outcome_OUTCOME_UNKNOWN}}},
		{sideBySide(t, sheldonProbe, howardProbe), []verdict{grantSheldon, denyHoward}},
	} {
		from := lobby.show(t, sc.img)
		scenes = append(scenes, shown{from, sc.want})
		frame := decisions.waitFrame(t, wait, fmt.Sprintf("%v at main", sc.want), func(ds []*fv1.Decision) bool {
			if ds[0].GetDoor() != "main" || !ds[0].GetFrame().GetCaptureTime().AsTime().After(from) {
				return false
			}
			for _, v := range sc.want {
				if !slices.ContainsFunc(ds, func(d *fv1.Decision) bool { return d.GetOutcome() == v.outcome && d.GetPersonId() == v.person }) {
					return false
				}
			}
			return true
		})
		for _, d := range frame {
			checkLatencies(t, d)
			if d.GetMode() != fv1.Mode_MODE_IDENTIFY || d.GetCamera() != "lobby-cam" || d.GetSite() != "hq" {
				t.Errorf("decision %s: mode %s camera %s", brief(d), d.GetMode(), d.GetCamera())
			}
			if d.GetOutcome() == fv1.Outcome_OUTCOME_GRANT && d.GetPolicyRule() == "" {
				t.Errorf("GRANT %s names no policy rule", brief(d))
			}
			t.Logf("at main: %s (%v after the scene changed)", brief(d), d.GetDecidedTime().AsTime().Sub(from).Round(time.Millisecond))
		}
		// A few more frames of the scene for the per-frame check below.
		time.Sleep(time.Second)
	}
	scenes = append(scenes, shown{from: lobby.show(t, blank)})

	// The verify door: a swipe with the right face, then with the wrong one.
	lab.show(t, sheldonProbe)
	grantID := claim(t, s.info.ClaimsURLs["hq-gw"], readerToken, "claim-e2e-grant", "lab", "badge-sheldon").ClaimID
	d := decisions.waitFor(t, wait, "for claim "+grantID, func(d *fv1.Decision) bool { return d.GetClaimId() == grantID })
	if d.GetOutcome() != fv1.Outcome_OUTCOME_GRANT || d.GetPersonId() != "sheldon" || d.GetMode() != fv1.Mode_MODE_VERIFY {
		t.Errorf("swipe of sheldon's badge with sheldon's face: %s, want GRANT of sheldon", brief(d))
	} else {
		checkLatencies(t, d)
	}
	t.Logf("verify GRANT: %s", brief(d))
	// The reader retries the swipe (same key): stored once, decided once.
	if again := claim(t, s.info.ClaimsURLs["hq-gw"], readerToken, grantID, "lab", "badge-sheldon"); !again.Duplicate {
		t.Errorf("a repeated claim %s was not recognised as a duplicate", grantID)
	}

	// Faces captured up to PreClaim (2 s) before a swipe count for it: show
	// howard long enough that every frame in that span is his.
	switched := lab.show(t, howardProbe)
	time.Sleep(time.Until(switched.Add(matcherPreClaim + time.Second)))
	mismatchID := claim(t, s.info.ClaimsURLs["hq-gw"], readerToken, "claim-e2e-mismatch", "lab", "badge-sheldon").ClaimID
	d = decisions.waitFor(t, wait, "for claim "+mismatchID, func(d *fv1.Decision) bool { return d.GetClaimId() == mismatchID })
	if d.GetOutcome() != fv1.Outcome_OUTCOME_MISMATCH || d.GetPersonId() != "sheldon" || float64(d.GetDistance()) < s.info.Threshold {
		t.Errorf("swipe of sheldon's badge with howard's face: %s, want MISMATCH of sheldon beyond %.4f", brief(d), s.info.Threshold)
	}
	if len(d.GetLatencies()) == 0 {
		// The matcher's expiry decisions carry no stages (see the report).
		t.Logf("MISMATCH decision %s carries no latency stages", brief(d))
	}
	t.Logf("verify MISMATCH: %s", brief(d))
	lab.show(t, blank)

	// A wrong reader token is refused and stores nothing.
	bad := &apiClient{base: s.info.ClaimsURLs["hq-gw"], token: "not-the-reader", hc: http.DefaultClient}
	body, _ := json.Marshal(gateway.ClaimRequest{Site: "hq", Door: "lab", BadgeID: "badge-sheldon"})
	must(t, "claim with a wrong token", bad.do(ctx, "POST", "", "application/json", body), http.StatusUnauthorized)

	// Every identify decision on a frame captured while a scene was shown
	// is one the scene calls for, and a frame names a person at most once.
	// 100 ms after a switch skips the frame that may have been read just
	// before the rename and stamped just after.
	main := 0
	ids := map[string]bool{}
	type face struct {
		frame  uint64
		person string
	}
	seen := map[face]bool{}
	for _, d := range decisions.snapshot() {
		if ids[d.GetDecisionId()] {
			t.Errorf("decision %s stored twice", brief(d))
		}
		ids[d.GetDecisionId()] = true
		if d.GetDoor() != "main" {
			continue
		}
		main++
		if p := d.GetPersonId(); p != "" {
			k := face{d.GetFrame().GetSequence(), p}
			if seen[k] {
				t.Errorf("frame %d names %s twice", k.frame, p)
			}
			seen[k] = true
		}
		capt := d.GetFrame().GetCaptureTime().AsTime()
		for i, sc := range scenes[:len(scenes)-1] {
			if capt.Before(sc.from.Add(100*time.Millisecond)) || !capt.Before(scenes[i+1].from) {
				continue
			}
			if !slices.Contains(sc.want, verdict{d.GetPersonId(), d.GetOutcome()}) {
				t.Errorf("decision %s on a frame showing %v", brief(d), sc.want)
			}
		}
		if capt.Before(scenes[0].from) {
			t.Errorf("decision %s on a blank frame", brief(d))
		}
	}
	t.Logf("%d decisions at main in the first run; first run took %v", main, time.Since(began).Round(time.Millisecond))

	// Restart on the same data directory.
	s.stop(t)
	lobby.show(t, sheldonProbe)
	restarted := time.Now()
	s = startStack(t, cfg)
	t.Logf("restarted in %v", time.Since(restarted).Round(time.Millisecond))
	js = s.connect(t)
	decisions = followDecisions(t, js)
	c = s.admin(t)
	checkPerson(t, c, "sheldon", "staff", 3)
	checkPerson(t, c, "howard", "visitors", 2)
	d = decisions.waitFor(t, wait, "GRANT of sheldon after the restart", func(d *fv1.Decision) bool {
		return d.GetDoor() == "main" && d.GetFrame().GetCaptureTime().AsTime().After(restarted) &&
			d.GetOutcome() == fv1.Outcome_OUTCOME_GRANT && d.GetPersonId() == "sheldon"
	})
	checkLatencies(t, d)
	t.Logf("after the restart: %s", brief(d))
	// The first run's decisions are still stored.
	if n := len(streamMsgs(t, js, "DECISIONS")); n < main+2 {
		t.Errorf("DECISIONS holds %d messages after the restart, want at least the first run's %d", n, main+2)
	}
	s.stop(t)

	// The audit log, written by both runs, verifies.
	pubRaw, err := os.ReadFile(s.info.AuditPublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := audit.ParsePublicKey(pubRaw)
	if err != nil {
		t.Fatalf("audit public key %s: %v", s.info.AuditPublicKey, err)
	}
	f, err := os.Open(s.info.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep := audit.Verify(f, []ed25519.PublicKey{pub})
	if err := rep.Err(); err != nil {
		t.Errorf("audit log: %v", err)
	}
	// At least the API calls above (5 setup + 2x2 enrolment + 3 reads) and
	// the decisions.
	if rep.Records < 12+main {
		t.Errorf("audit log has %d records, want at least %d", rep.Records, 12+main)
	}
	if rep.SignedThrough == 0 {
		t.Errorf("audit log has no valid checkpoint (records %d, checkpoints %d)", rep.Records, rep.Checkpoints)
	}
	// Every input was chained as what it is: an API call, an enrolment
	// change, a decision (API calls are enrolment records) — none as "malformed" (a record the consumer
	// could not convert, e.g. a payload key the log refuses).
	kinds := auditKinds(t, s.info.AuditLog)
	if kinds["malformed"] > 0 {
		t.Errorf("audit log holds %d malformed records (kinds %v)", kinds["malformed"], kinds)
	}
	for _, k := range []string{string(audit.KindDecision), string(audit.KindEnrolment)} {
		if kinds[k] == 0 {
			t.Errorf("audit log holds no %q record (kinds %v)", k, kinds)
		}
	}
	t.Logf("audit log: %d records %v, %d checkpoints, signed through %d; TestEndToEnd took %v",
		rep.Records, kinds, rep.Checkpoints, rep.SignedThrough, time.Since(began).Round(time.Millisecond))
}

// matcherPreClaim is matcher.DefaultPreClaim, the span before a swipe whose
// faces count for it.
const matcherPreClaim = 2 * time.Second

func checkPerson(t *testing.T, c *apiClient, id, group string, photos int) {
	t.Helper()
	r := must(t, "get "+id, c.json(context.Background(), "GET", "/v1/people/"+id, nil), http.StatusOK)
	var p api.PersonResponse
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	if p.PersonID != id || !slices.Contains(p.Groups, group) || len(p.Photos) != photos || !slices.Contains(p.BadgeIDs, "badge-"+id) {
		t.Fatalf("get %s: %s; want group %s, %d photos, badge-%s", id, r, group, photos, id)
	}
}

// auditKinds counts the audit log's records by kind.
func auditKinds(t *testing.T, path string) map[string]int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var rec struct {
			Type string `json:"type"`
			Kind string `json:"kind"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("audit log line %q: %v", line, err)
		}
		if rec.Kind != "" {
			kinds[rec.Kind]++
		}
	}
	return kinds
}
