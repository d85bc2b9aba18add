package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/facegate/facegate/pkg/allinone"
	"github.com/facegate/facegate/pkg/api"
	"github.com/facegate/facegate/pkg/apiclient"
	"github.com/facegate/facegate/pkg/audit"
	"github.com/facegate/facegate/pkg/face"
	"github.com/facegate/facegate/pkg/gateway"
	"github.com/facegate/facegate/pkg/gateway/source"
	"github.com/facegate/facegate/pkg/imaging"
	"github.com/facegate/facegate/pkg/inference"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// demoDecision is one line of the demo's output: a Decision as the door
// controller receives it, without anything biometric.
type demoDecision struct {
	Door      string   `json:"door"`
	Camera    string   `json:"camera,omitempty"`
	Frame     string   `json:"frame,omitempty"`
	Mode      string   `json:"mode"`
	Outcome   string   `json:"outcome"`
	Person    *string  `json:"person"`
	Claim     string   `json:"claim,omitempty"`
	Distance  *float32 `json:"distance,omitempty"`
	Threshold float32  `json:"threshold"`
	Rule      string   `json:"rule,omitempty"`
	Model     string   `json:"model"`
	// LatencyMS is capture to decision, from the decision's own stages.
	LatencyMS float64 `json:"frame_to_decision_ms"`
}

const (
	demoSite  = "hq"
	demoLobby = "lobby" // identify door
	demoLab   = "lab"   // verify door (badge + face)
	// demoPeople is how many people the demo enrols.
	demoPeople = 4
)

func demoCmd(a *app) *cobra.Command {
	var (
		dataDir  string
		model    string
		noMirror bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run facegate up, enrol the people of a sample photo through the API, replay camera frames, print decisions",
		Long: `The demo runs the main job on the all-in-one (facegate up: embedded NATS JetStream, embedder, matcher,
enrolment API, audit log) with the group photos that ship in @vladmandic/face-api (fetched by
'facegate models fetch'):
  1. every face of demo/sample1.jpg is cut out and enrolled through the HTTP API as visitor-1, visitor-2, ...
     with a badge each; all but the last join the group "staff", which a policy lets through both doors;
  2. a gateway replays camera frames at the lobby (an identify door): sample1 mirrored (the same people in a
     new image), then sample2..6 — grant for staff, deny for the enrolled visitor outside the group,
     unknown for everyone else (one unknown per door per cooldown);
  3. at the lab (a verify door), badge swipes go through the gateway's claims endpoint: visitor-1's badge
     with visitor-1 in front of the camera is granted; visitor-2's badge with only strangers is a mismatch;
  4. visitor-2 is erased through the API, and the audit log is verified.
Decisions are printed as JSON lines on stdout as the matcher publishes them, and as sentences on stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			if dataDir == "" {
				d, err := os.MkdirTemp("", "facegate-demo-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(d)
				dataDir = d
			}
			return runDemo(ctx, a, dataDir, model, noMirror)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data", "", "keep the demo's data (streams, photos, audit log) in this folder (default: a temporary folder, removed afterwards)")
	cmd.Flags().StringVar(&model, "model", "", "encoder model id (default: the manifest's default encoder)")
	cmd.Flags().BoolVar(&noMirror, "no-mirror", false, "encode without mirror averaging")
	return cmd
}

func runDemo(ctx context.Context, a *app, dataDir, model string, noMirror bool) error {
	c, err := a.cache()
	if err != nil {
		return err
	}
	sample := func(i int) ([]byte, *imaging.RGB, error) {
		p, err := c.File("@vladmandic/face-api", fmt.Sprintf("demo/sample%d.jpg", i))
		if err != nil {
			return nil, nil, err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: run `facegate models fetch`", err)
		}
		img, _, err := imaging.Decode(b, imaging.Limits{})
		return b, img, err
	}

	// The stack, as `facegate up` runs it.
	infoc := make(chan allinone.Info, 1)
	upErr := make(chan error, 1)
	upCtx, stopUp := context.WithCancel(context.WithoutCancel(ctx))
	defer stopUp()
	go func() {
		upErr <- allinone.Run(upCtx, allinone.Config{DataDir: dataDir, APIAddr: "127.0.0.1:0", NATSPort: 0, Model: model,
			NoMirror: noMirror, CacheDir: a.cacheDir, Log: a.log, ClaimWindow: 4 * time.Second},
			func(i allinone.Info) { infoc <- i })
	}()
	var info allinone.Info
	select {
	case info = <-infoc:
	case err := <-upErr:
		return fmt.Errorf("demo: facegate up: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() {
		stopUp()
		<-upErr
	}()
	fmt.Fprintf(a.stderr, "facegate is up: API %s, NATS %s, data in %s\n", info.APIURL, info.NATSURL, dataDir)
	token, err := os.ReadFile(info.AdminTokenFile)
	if err != nil {
		return err
	}
	cl := apiclient.New(info.APIURL, string(token), nil)

	// Decisions, printed as the matcher publishes them.
	nc, err := nats.Connect(info.NATSURL, nats.Name("facegate-demo"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var (
		mu     sync.Mutex
		frames = map[string]string{} // camera/seq -> frame name
		seen   int
	)
	sub, err := nc.Subscribe("facegate.decisions."+demoSite+".>", func(m *nats.Msg) {
		var d facegatev1.Decision
		if proto.Unmarshal(m.Data, &d) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		seen++
		_ = emitDemoDecision(a, &d, frames[fmt.Sprintf("%s/%d", d.GetFrame().GetCamera(), d.GetFrame().GetSequence())])
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe() //nolint:errcheck
	waitQuiet := func(quiet, most time.Duration) {
		deadline := time.Now().Add(most)
		last, lastN := time.Now(), -1
		for time.Now().Before(deadline) {
			mu.Lock()
			n := seen
			mu.Unlock()
			if n != lastN {
				last, lastN = time.Now(), n
			}
			if time.Since(last) > quiet {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// 1. Enrolment through the API: one photo per face, from the sample
	// photos in order, until demoPeople are enrolled. A face the API refuses
	// (the enrolment quality gate: turned or tilted head, too small) is
	// reported and skipped, as an operator would see it.
	rt, err := inference.Open(inference.Options{LibraryPath: c.LibraryPath(), IntraOpThreads: 1})
	if err != nil {
		return err
	}
	defer rt.Close()
	eng, err := face.Open(ctx, rt, c, face.Options{Encoder: model, NoMirror: noMirror})
	if err != nil {
		return err
	}
	defer eng.Close()
	if err := cl.PutGroup(ctx, "staff", "Staff"); err != nil {
		return err
	}
	var enrolled []string
	fromSample := map[string]int{}
	imgs := map[int]*imaging.RGB{}
	for i := 1; i <= 6 && len(enrolled) < demoPeople; i++ {
		_, img, err := sample(i)
		if err != nil {
			return err
		}
		imgs[i] = img
		res, err := eng.AnalyzeImage(ctx, img)
		if err != nil {
			return err
		}
		for j, fc := range res.Faces {
			if len(enrolled) == demoPeople {
				break
			}
			who := fmt.Sprintf("visitor-%d", len(enrolled)+1)
			crop, err := cropJPEG(img, fc.Box.X, fc.Box.Y, fc.Box.W, fc.Box.H)
			if err != nil {
				return err
			}
			if _, err := cl.CreatePerson(ctx, apiclient.Person{PersonID: who, DisplayName: "Visitor " + fmt.Sprint(len(enrolled)+1),
				Site: demoSite, BadgeIDs: []string{fmt.Sprintf("badge-%d", len(enrolled)+1)}}); err != nil {
				return err
			}
			if _, err := cl.AddPhotos(ctx, who, apiclient.Photo{Name: who + ".jpg", Data: crop}); err != nil {
				var ae *apiclient.Error
				if errors.As(err, &ae) && ae.Status == http.StatusUnprocessableEntity {
					fmt.Fprintf(a.stderr, "sample%d.jpg face %d not enrolled, the API refused the photo: %s\n", i, j+1, ae.Message)
					if err := cl.DeletePerson(ctx, who); err != nil {
						return err
					}
					continue
				}
				return err
			}
			fmt.Fprintf(a.stderr, "enrolled %s (badge-%d) from sample%d.jpg face %d through the API\n", who, len(enrolled)+1, i, j+1)
			enrolled = append(enrolled, who)
			fromSample[who] = i
		}
	}
	if len(enrolled) < 2 {
		return fmt.Errorf("demo: only %d people could be enrolled from sample1", len(enrolled))
	}
	for _, who := range enrolled[:len(enrolled)-1] {
		if err := cl.JoinGroup(ctx, who, "staff"); err != nil {
			return err
		}
	}
	fmt.Fprintf(a.stderr, "enrolled %s through the API; all but %s are staff\n", strings.Join(enrolled, ", "), enrolled[len(enrolled)-1])
	if err := cl.PutDoor(ctx, demoSite, demoLobby, apiclient.Door{DisplayName: "Lobby", Mode: "identify", Cameras: []string{"cam-lobby"}}); err != nil {
		return err
	}
	if err := cl.PutDoor(ctx, demoSite, demoLab, apiclient.Door{DisplayName: "Lab", Mode: "verify", Cameras: []string{"cam-lab"}}); err != nil {
		return err
	}
	if err := cl.PutPolicy(ctx, "staff-in", apiclient.Policy{DisplayName: "Staff may enter", Groups: []string{"staff"},
		Doors: []api.DoorRef{{Site: demoSite, Door: demoLobby}, {Site: demoSite, Door: demoLab}}, Effect: "allow"}); err != nil {
		return err
	}

	// 2. A gateway replays the lobby camera: every sample photo mirrored,
	// the same people in a new image.
	frameDir, err := os.MkdirTemp("", "facegate-demo-frames-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(frameDir)
	mirrored := map[int][]byte{}
	for i := 1; i <= 6; i++ {
		img := imgs[i]
		if img == nil {
			if _, img, err = sample(i); err != nil {
				return err
			}
			imgs[i] = img
		}
		if mirrored[i], err = encodeJPEG(imaging.Orient(img, 2)); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(frameDir, fmt.Sprintf("%02d.jpg", i)), mirrored[i], 0o600); err != nil {
			return err
		}
		mu.Lock()
		frames[fmt.Sprintf("cam-lobby/%d", i)] = fmt.Sprintf("sample%d.jpg (mirrored)", i)
		mu.Unlock()
	}
	gwCfg, err := gateway.ParseConfig([]byte(fmt.Sprintf(`gateway: demo-gateway
site: %s
nats:
  url: %q
cameras:
  - id: cam-lobby
    source: "folder:%s"
    fps: 2
claims:
  listen: 127.0.0.1:0
  token_sha256: [%q]
`, demoSite, info.NATSURL, frameDir, fmt.Sprintf("%x", gateway.HashToken("demo-badge-reader")))))
	if err != nil {
		return err
	}
	cams, err := gwCfg.BuildCameras(source.HTTPOptions{}, "ffmpeg")
	if err != nil {
		return err
	}
	metrics, err := gateway.NewMetrics(nil)
	if err != nil {
		return err
	}
	gw, err := gateway.New(gateway.Config{Name: gwCfg.Gateway, Site: demoSite, JetStream: js, Cameras: cams, Metrics: metrics, Log: a.log})
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stderr, "lobby camera: the gateway replays 6 frames at 2 frames/s")
	if err := gw.Run(ctx); err != nil {
		return err
	}
	waitQuiet(2*time.Second, 30*time.Second)

	// 3. Badge swipes at the lab through the gateway's claims endpoint.
	claims, err := gateway.NewClaimsHandler(gateway.ClaimsConfig{Site: demoSite, TokenHashes: gwCfg.TokenHashes(), JetStream: js, Metrics: metrics, Log: a.log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: claims, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	swipe := func(badge string) error {
		body := fmt.Sprintf(`{"site":%q,"door":%q,"badge_id":%q}`, demoSite, demoLab, badge)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+ln.Addr().String()+"/v1/claims", strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer demo-badge-reader")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("demo: claim for %s: HTTP %d", badge, resp.StatusCode)
		}
		return nil
	}
	labFrame := func(seq uint64, name string, i int) error {
		mu.Lock()
		frames[fmt.Sprintf("cam-lab/%d", seq)] = name
		mu.Unlock()
		_, err := gw.Publisher().Publish(ctx, "cam-lab", seq, source.Frame{Data: mirrored[i], Encoding: facegatev1.ImageEncoding_IMAGE_ENCODING_JPEG,
			Width: imgs[i].W, Height: imgs[i].H, Captured: time.Now()})
		return err
	}
	first, second := enrolled[0], enrolled[1]
	fmt.Fprintf(a.stderr, "lab: %s swipes badge-1 and looks at the camera\n", first)
	if err := swipe("badge-1"); err != nil {
		return err
	}
	if err := labFrame(1, fmt.Sprintf("sample%d.jpg (mirrored)", fromSample[first]), fromSample[first]); err != nil {
		return err
	}
	waitQuiet(time.Second, 10*time.Second)
	// Past the matcher's pre-claim buffer (faces seen up to 2 s before a
	// swipe count for it), so the second swipe sees only the next frame.
	time.Sleep(2500 * time.Millisecond)
	other := 1
	for other == fromSample[second] {
		other++
	}
	fmt.Fprintf(a.stderr, "lab: badge-2 (%s) is swiped, but in front of the camera are the people of sample%d.jpg\n", second, other)
	if err := swipe("badge-2"); err != nil {
		return err
	}
	if err := labFrame(2, fmt.Sprintf("sample%d.jpg (mirrored)", other), other); err != nil {
		return err
	}
	waitQuiet(6*time.Second, 15*time.Second)

	// 4. Erasure and the audit log.
	if err := cl.DeletePerson(ctx, second); err != nil {
		return err
	}
	_, gerr := cl.GetPerson(ctx, second)
	var ae *apiclient.Error
	if !errors.As(gerr, &ae) || ae.Status != http.StatusNotFound {
		return fmt.Errorf("demo: %s still readable after erasure: %v", second, gerr)
	}
	fmt.Fprintf(a.stderr, "erased %s: templates, photos, enrolment records and decisions naming them are gone (GET now 404)\n", second)
	// Stop the stack: the audit consumer appends what is left and signs a
	// final checkpoint. Then verify the log as an auditor would.
	time.Sleep(time.Second)
	stopUp()
	if err := <-upErr; err != nil {
		return fmt.Errorf("demo: facegate up: %w", err)
	}
	upErr <- nil
	pub, err := os.ReadFile(info.AuditPublicKey)
	if err != nil {
		return err
	}
	key, err := audit.ParsePublicKey(pub)
	if err != nil {
		return err
	}
	f, err := os.Open(info.AuditLog)
	if err != nil {
		return err
	}
	defer f.Close()
	rep := audit.Verify(f, []ed25519.PublicKey{key})
	if err := rep.Err(); err != nil {
		return fmt.Errorf("demo: the audit log does not verify: %w", err)
	}
	fmt.Fprintf(a.stderr, "audit log %s: records %d..%d, hash chain intact, signed through record %d (facegate audit verify --log %s --pubkey %s)\n",
		info.AuditLog, rep.FirstSeq, rep.LastSeq, rep.SignedThrough, info.AuditLog, info.AuditPublicKey)
	return nil
}

func emitDemoDecision(a *app, d *facegatev1.Decision, frame string) error {
	out := demoDecision{Door: d.GetDoor(), Camera: d.GetCamera(), Frame: frame, Mode: strings.ToLower(strings.TrimPrefix(d.GetMode().String(), "MODE_")),
		Outcome: strings.ToLower(strings.TrimPrefix(d.GetOutcome().String(), "OUTCOME_")), Claim: d.GetClaimId(),
		Threshold: d.GetThreshold(), Rule: d.GetPolicyRule(), Model: d.GetModelId()}
	if d.PersonId != nil {
		p := d.GetPersonId()
		out.Person = &p
	}
	if d.Distance != nil {
		v := d.GetDistance()
		out.Distance = &v
	}
	for _, s := range d.GetLatencies() {
		if s.GetStage() == "frame_to_decision" {
			out.LatencyMS = float64(s.GetDuration().AsDuration().Microseconds()) / 1e3
		}
	}
	who := "unknown person"
	if out.Person != nil {
		who = *out.Person
	}
	dist := ""
	if out.Distance != nil {
		dist = fmt.Sprintf("distance %.3f (threshold %.3f)", *out.Distance, out.Threshold)
	}
	fmt.Fprintf(a.stderr, "%-6s %-9s %-10s %-14s %-24s %s %6.1f ms\n", out.Door, out.Mode, strings.ToUpper(out.Outcome), who, frame, dist, out.LatencyMS)
	return a.printJSONLine(out)
}

// cropJPEG cuts a face with a generous margin (the API's detector needs
// context around the face) and encodes it as JPEG.
func cropJPEG(img *imaging.RGB, x, y, w, h float64) ([]byte, error) {
	m := 0.6 * max(w, h)
	r := image.Rect(int(x-m), int(y-m), int(x+w+m), int(y+h+m)).Intersect(image.Rect(0, 0, img.W, img.H))
	out := imaging.NewRGB(r.Dx(), r.Dy())
	for yy := 0; yy < r.Dy(); yy++ {
		copy(out.Pix[3*yy*out.W:3*(yy+1)*out.W], img.Pix[3*((r.Min.Y+yy)*img.W+r.Min.X):3*((r.Min.Y+yy)*img.W+r.Max.X)])
	}
	return encodeJPEG(out)
}

func encodeJPEG(img *imaging.RGB) ([]byte, error) {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 92}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
