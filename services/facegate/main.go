// Command facegate is the command line of the face access-control system:
// model setup and benchmarks now; enrolment, verification, identification
// and the all-in-one server as the pipeline lands (see README).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/facegate/facegate/services/facegate/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
