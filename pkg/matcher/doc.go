// Package matcher turns face events and badge claims into access decisions.
//
// It consumes FACES (durable pull consumer, optionally one site) and CLAIMS
// (durable), looks up the door of each face event's camera in a
// *directory.Directory, and publishes facegate.v1.Decisions on
// facegate.decisions.<site>.<door>.
//
// # Identify doors (MODE_IDENTIFY)
//
// The faces of a frame that passed the quality gate are searched in the
// embedding space's collection. A person appears at most once per frame:
// (face, person) pairs closer than the threshold are assigned nearest first,
// each face and person used once (the idea of gallery.IdentifyFaces). A
// matched face gets the policy's verdict (policy.State.Decide at the frame's
// capture time): GRANT or DENY, naming the policy rule; an unmatched face is
// UNKNOWN.
//
// # Verify doors (MODE_VERIFY)
//
// A claim (badge swipe) opens a window at its door from the claim's time for
// Claim.window (default 10 s). The badge resolves to a person (Claim.person_id,
// else the directory's badge map); a badge that resolves to nobody gets one
// UNKNOWN_BADGE decision. Faces of the door's cameras captured within the
// window, or up to PreClaim (2 s) before the claim (a short per-door buffer
// keeps them), are verified against the claimed person only (index
// SearchPerson). A face closer than the threshold decides: GRANT when the
// policy allows, DENY otherwise; a spoofed face decides SPOOF. Either closes
// the window. When a window expires undecided the claim gets exactly one
// decision: MISMATCH (faces were compared, none matched; the best distance is
// reported), LOW_QUALITY (faces were seen but none passed the gate) or NO_FACE.
// A claim message is acknowledged only after its decision is stored, so a
// matcher crash re-opens the window on the next replica.
//
// # Flood control and exactly-once decisions
//
// Within Cooldown (5 s, measured on capture times) a door gets at most one
// decision per (person, outcome), and at most one UNKNOWN, one LOW_QUALITY and
// one SPOOF: a person walking up to a camera is one GRANT, not one per frame.
// A LOW_QUALITY decision is made only for frames where no face passed the
// gate. Decision ids are deterministic — bus.FrameMsgID of the frame, the
// face index and the embedding space for face decisions, the claim id for
// verify decisions — and are the decisions' Nats-Msg-Id, so a redelivered
// face event or claim never stores a second decision. A face event is
// acknowledged only after every decision it caused is acknowledged by
// JetStream; a failed publish naks it for redelivery.
//
// # Latency
//
// Decision.latencies lists the face event's own stages as the embedder
// reported them (its "queue", the frame's wait in FRAMES, is renamed
// "embedder_queue"), then "queue" (capture to matcher receive), "match"
// (search and policy) and "frame_to_decision" (capture to the decision's
// publication). The histograms facegate_matcher_match_seconds and
// facegate_matcher_frame_to_decision_seconds observe the same.
//
// # Deployment
//
// Window and cooldown state is per process: run one matcher per site (Site
// filter) rather than several replicas sharing a site's consumers.
package matcher
