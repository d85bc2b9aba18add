package svcflag

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/facegate/facegate/pkg/telemetry"
)

// ParseFunc reads a service's settings from its arguments and environment.
type ParseFunc[S any] func(args []string, getenv func(string) string, stderr io.Writer) (S, error)

// RunFunc runs a service until ctx ends (SIGTERM or SIGINT), then drains.
type RunFunc[S any] func(ctx context.Context, s S, log *zap.Logger) error

// Main is the main function every service shares, so that they all
// behave alike for the operator and the chart: exit 0 for -h, exit 2 with
// "<name>: <message>" on stderr for a bad flag, environment value or log
// level, JSON logs on stderr at level(s), SIGTERM and SIGINT cancel run's
// context, and exit 1 (after logging why) when run fails.
func Main[S any](name string, parse ParseFunc[S], level func(S) string, run RunFunc[S]) {
	os.Exit(main(name, os.Args[1:], os.Getenv, os.Stderr, parse, level, run))
}

func main[S any](name string, args []string, getenv func(string) string, stderr io.Writer, parse ParseFunc[S], level func(S) string, run RunFunc[S]) int {
	s, err := parse(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	log, err := telemetry.NewLogger(level(s), false)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	defer log.Sync() //nolint:errcheck // nothing useful to do when stderr is gone
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, s, log); err != nil {
		log.Error(name+" stopped", zap.Error(err))
		return 1
	}
	return 0
}
