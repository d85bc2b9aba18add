// Package natsauth gives every facegate service its own NATS credential with
// least-privilege permissions, and generates the nats-server configuration
// for a deployment: one NKEY user per service instance kind, seeds in 0600
// files, only public keys in the configuration.
//
// # Permission matrix
//
// Every list is an allow-list; everything else is denied. <site> is the
// user's site, or '*' for an embedder or matcher that serves every site;
// <d> is the user's durable consumer (User.Durable, default its name);
// <name> is the user's name. Every user except the admin may subscribe only
// to its own inbox, _INBOX.<name>.>, and must connect with
// nats.CustomInboxPrefix(User.InboxPrefix()): JetStream publish acks, API
// responses and pulled messages arrive there, and no user can subscribe to
// another's replies (a shared _INBOX.> would let any gateway read every
// service's pulled frames and faces).
//
//	role           publish                                          subscribe
//	gateway(site)  facegate.frames.<site>.>                         own inbox
//	               facegate.claims.<site>.>
//	door(site)     nothing                                          facegate.decisions.<site>.>, own inbox
//	embedder       $JS.API.STREAM.INFO.FRAMES                       own inbox
//	               $JS.API.CONSUMER.INFO.FRAMES.<d>
//	               $JS.API.CONSUMER.MSG.NEXT.FRAMES.<d>
//	               $JS.ACK.FRAMES.<d>.>
//	               facegate.faces.<site>.>, facegate.errors.embedder
//	matcher        the same four for FACES.<d> and CLAIMS.<d>;      own inbox
//	               ordered consumer on ENROLMENTS:
//	               $JS.API.STREAM.INFO.ENROLMENTS,
//	               $JS.API.CONSUMER.{CREATE.ENROLMENTS.>,
//	               INFO/MSG.NEXT/DELETE.ENROLMENTS.*}
//	               facegate.decisions.<site>.>, facegate.errors.matcher
//	audit          the same four for DECISIONS.<d>, ENROLMENTS.<d>,  own inbox
//	               ERRORS.<d>, AUDIT.<d>; nothing else
//	retention      ordered consumers and $JS.API.STREAM.PURGE on     own inbox
//	               FRAMES, FACES, DECISIONS (per-site retention)
//	enrolment-api  facegate.enrolments.>                            own inbox
//	               $JS.API.STREAM.INFO.ENROLMENTS
//	               $JS.API.STREAM.PURGE.ENROLMENTS (erasure)
//	               $JS.API.STREAM.MSG.DELETE.{DECISIONS,FRAMES,FACES}
//	               (erasure); ordered consumers on ENROLMENTS,
//	               DECISIONS, FRAMES and FACES
//	               facegate.audit.api, facegate.errors.enrolment-api
//	reembed        ordered consumer on ENROLMENTS (as the matcher)  own inbox
//	               $JS.API.DIRECT.GET.ENROLMENTS.facegate.enrolments.person.*
//	               (the last change on a person's subjects)
//	               facegate.enrolments.photo.* (PhotoAdd, PhotoRemove)
//	operator       $JS.API.CONSUMER.INFO.FRAMES.*                   own inbox
//	               $JS.API.CONSUMER.CREATE.FRAMES.>
//	admin          unrestricted (creates streams and the shared
//	               services' consumers; a deploy job, not a service)
//
// Readers (embedder, matcher, audit) bind to a durable consumer that the
// operator or an admin created; they cannot create, change or delete
// consumers, so the consumer's filter (which site's frames a pool reads)
// is set by whoever created it, not by the reader. Creating streams and
// the shared services' consumers is the admin's job: no service calls
// bus.EnsureStreams under these permissions.
//
// # Accounts
//
// By default all users share one account (DefaultAccount) that holds the
// streams, and permissions alone separate them. With
// Deployment.SiteAccounts each building's gateways and doors get an account
// of their own (SiteAccount(site)). The central account exports to it, for
// that building only, facegate.frames.<site>.> and facegate.claims.<site>.>
// as services and facegate.decisions.<site>.> as a stream; the building
// account imports exactly those. A building account therefore cannot even
// name another building's subjects, whatever its users' permissions say.
//
// Frames and claims are service imports on purpose. A JetStream publish is a
// request whose reply is the stream's ack; with the building exporting its
// subjects as a stream (the layout of deploy/nats/campus.conf) the message
// is stored but the ack goes to the central account's inbox and never
// reaches the gateway, so its publish times out (measured against
// nats-server 2.15) and the gateway would retry a frame that was stored.
//
// # What is not here
//
// Decentralised JWT auth (operator/account JWTs signed with nkeys, resolver,
// revocation without restarting the server) is not generated; this package
// writes a static configuration, so rotating a key means regenerating and
// reloading it. Leaf-node building servers are not configured. TLS is a
// server certificate (and optionally verified client certificates) from
// files the deployment names.
package natsauth
