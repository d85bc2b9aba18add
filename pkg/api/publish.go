package api

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/facegate/facegate/pkg/bus"
	"github.com/facegate/facegate/pkg/events"
	"github.com/facegate/facegate/pkg/telemetry"
	facegatev1 "github.com/facegate/facegate/proto/facegate/v1"
)

// nextSequence is the change counter of EnrolmentChange.sequence: strictly
// increasing within the process and, being based on the clock, across
// restarts as long as the clock does not go back.
func (s *Server) nextSequence() uint64 {
	s.seqMu.Lock()
	defer s.seqMu.Unlock()
	n := uint64(time.Now().UnixNano())
	if n <= s.lastSeq {
		n = s.lastSeq + 1
	}
	s.lastSeq = n
	return n
}

// errExists is returned by publish when the change was a create
// (createOnly) and its subject already has a message.
var errExists = errors.New("already exists")

// publish stamps a change (id, sequence, time, actor), publishes it on its
// enrolment subject with Nats-Msg-Id = change_id and returns its stream
// sequence. createOnly makes the publish conditional on the subject having
// no message yet (JetStream's expected-last-subject-sequence 0), which
// makes "create" atomic across concurrent requests and API replicas.
func (s *Server) publish(c *call, ch *facegatev1.EnrolmentChange, createOnly bool) (uint64, error) {
	ch.SchemaVersion = events.SchemaVersion
	ch.ChangeId = uuid.NewString()
	ch.Sequence = s.nextSequence()
	ch.Time = timestamppb.Now()
	ch.Actor = &facegatev1.Actor{Kind: facegatev1.ActorKind_ACTOR_KIND_USER, Id: c.principal.Name}
	kind, key, err := events.EnrolmentRoute(ch)
	if err != nil {
		return 0, fmt.Errorf("api: route change: %w", err)
	}
	subject, err := bus.EnrolmentsSubject(kind, key)
	if err != nil {
		return 0, errorf(http.StatusBadRequest, "%v", err)
	}
	hdr := nats.Header{}
	hdr.Set(bus.HeaderMsgID, ch.ChangeId)
	if createOnly {
		hdr.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
	}
	telemetry.Inject(c.ctx, hdr)
	ack, err := bus.Publish(c.ctx, s.cfg.JetStream, subject, ch, hdr)
	if err != nil {
		var apiErr *jetstream.APIError
		if createOnly && errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return 0, errExists
		}
		return 0, fmt.Errorf("api: publish %s: %w", kind, err)
	}
	c.source = bus.StreamEnrolments + "/" + strconv.FormatUint(ack.Sequence, 10)
	return ack.Sequence, nil
}

// waitApplied waits until the directory has applied seq, so the caller's
// next read sees the write.
func (s *Server) waitApplied(c *call, seq uint64) error {
	ctx, cancel := context.WithTimeout(c.ctx, s.cfg.ApplyTimeout)
	defer cancel()
	if err := s.cfg.Directory.WaitApplied(ctx, seq); err != nil {
		if c.ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return errorf(http.StatusGatewayTimeout,
				"the change is stored (ENROLMENTS sequence %d) but the directory has not applied it within %v; it will",
				seq, s.cfg.ApplyTimeout)
		}
		return fmt.Errorf("api: wait for the directory to apply sequence %d: %w", seq, err)
	}
	return nil
}

// publishAll publishes changes in order and waits for the last.
func (s *Server) publishAll(c *call, changes ...*facegatev1.EnrolmentChange) error {
	var last uint64
	for _, ch := range changes {
		seq, err := s.publish(c, ch, false)
		if err != nil {
			return err
		}
		last = seq
	}
	if last == 0 {
		return nil
	}
	return s.waitApplied(c, last)
}

// subjectHash is the audit record's subject_hash of a person: the SHA-256
// of the id (events.PersonHash, as bytes).
func subjectHash(personID string) []byte {
	sum := sha256.Sum256([]byte(personID))
	return sum[:]
}

func outcome(status int) string {
	switch {
	case status < 400:
		return "ok"
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return "denied"
	case status < 500:
		return "rejected"
	}
	return "error"
}

// audit publishes the call's audit record. It carries the route pattern,
// never the concrete path, and a person only as their hash.
func (s *Server) audit(c *call, kind facegatev1.AuditKind, status int) error {
	rec := &facegatev1.AuditRecord{
		SchemaVersion: events.SchemaVersion,
		Time:          timestamppb.Now(),
		Kind:          kind,
		Actor:         &facegatev1.Actor{Kind: facegatev1.ActorKind_ACTOR_KIND_USER, Id: c.principal.Name},
		Source:        c.source,
	}
	if c.subject != "" {
		rec.SubjectHash = subjectHash(c.subject)
	}
	rec.Summary = append([]*facegatev1.AuditAttribute{
		{Key: "method", Value: c.r.Method},
		{Key: "route", Value: c.route},
		{Key: "site", Value: c.site},
		{Key: "outcome", Value: outcome(status)},
		{Key: "status", Value: strconv.Itoa(status)},
		{Key: "request_id", Value: c.requestID},
	}, c.attrs...)
	subject, err := bus.AuditSubject(s.cfg.Service)
	if err != nil {
		return err
	}
	hdr := nats.Header{}
	telemetry.Inject(c.ctx, hdr)
	// A fresh context: the record must go out even when the caller has
	// gone away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 5*time.Second)
	defer cancel()
	_, err = bus.Publish(ctx, s.cfg.JetStream, subject, rec, hdr)
	return err
}
