// Package e2e holds facegate's end-to-end and fault tests of the event
// pipeline: the all-in-one stack driven through its HTTP API, a gateway's
// cameras and its claims endpoint (TestEndToEnd), a broker SIGKILLed under
// enrolment and camera traffic (TestBrokerRestartDuringEnrolmentAndReplay),
// and an embedder process SIGKILLed in the middle of a replay
// (TestEmbedderKilledMidReplayNoDuplicateDecisions).
//
// The tests use the real models and the shared datasets (package testenv):
// they skip on a machine without them and fail under CI. Dataset images are
// read in place or copied into t.TempDir(), never into the repository.
//
//	go test -count=1 -v ./test/e2e/
//
// FACEGATE_E2E_FRAMES sets the number of frames of the embedder fault test
// (default 1000).
package e2e
