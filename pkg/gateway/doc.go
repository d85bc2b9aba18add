// Package gateway is the edge of facegate's event pipeline at a site: it
// reads the site's cameras (package source), samples them to a target
// rate, numbers and publishes their frames to facegate.frames.<site>.<camera>,
// and takes badge claims from door readers over HTTP (POST /v1/claims) to
// facegate.claims.<site>.<door>.
//
// A door camera's frame is worth something for a second or two. The gateway
// therefore never queues frames: each camera has a one-frame mailbox between
// the source and the publisher, a newer frame replaces one that is still
// waiting, and while NATS is unreachable frames are dropped and counted
// instead of buffered (the connection is made with reconnect buffering off).
// Publishing resumes by itself when the connection comes back.
package gateway
