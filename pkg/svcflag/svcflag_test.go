package svcflag

import (
	"context"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestParseFlagsWinOverEnvironment(t *testing.T) {
	env := map[string]string{"FACEGATE_NATS_URL": "nats://env:4222", "FACEGATE_MAX_AGE": "7s", "FACEGATE_BATCH": "3"}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	url := fs.String("nats-url", "nats://default", "")
	age := fs.Duration("max-age", time.Second, "")
	batch := fs.Int("batch", 8, "")
	other := fs.String("other", "default", "")
	if err := Parse(fs, []string{"--batch", "5"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if *url != "nats://env:4222" || *age != 7*time.Second || *batch != 5 || *other != "default" {
		t.Fatalf("got url %q age %v batch %d other %q", *url, *age, *batch, *other)
	}
}

func TestParseErrors(t *testing.T) {
	newFS := func() *flag.FlagSet {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.Int("batch", 8, "")
		return fs
	}
	if err := Parse(newFS(), nil, func(k string) string { return map[string]string{"FACEGATE_BATCH": "many"}[k] }); err == nil || !strings.Contains(err.Error(), "FACEGATE_BATCH") {
		t.Fatalf("bad env value: %v", err)
	}
	if err := Parse(newFS(), []string{"extra"}, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "unexpected arguments") {
		t.Fatalf("positional argument: %v", err)
	}
	if err := Parse(newFS(), []string{"--nope"}, func(string) string { return "" }); err == nil {
		t.Fatal("unknown flag accepted")
	}
}

type testSettings struct{ level, value string }

func testParse(args []string, getenv func(string) string, stderr io.Writer) (testSettings, error) {
	var s testSettings
	fs := flag.NewFlagSet("svc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&s.level, "log-level", "info", "")
	fs.StringVar(&s.value, "value", "", "")
	return s, Parse(fs, args, getenv)
}

func TestMainExitCodes(t *testing.T) {
	level := func(s testSettings) string { return s.level }
	var ran testSettings
	ok := func(_ context.Context, s testSettings, _ *zap.Logger) error { ran = s; return nil }
	fail := func(context.Context, testSettings, *zap.Logger) error { return errors.New("broken") }
	env := func(k string) string { return map[string]string{"FACEGATE_VALUE": "from-env"}[k] }
	var stderr strings.Builder
	if code := main("svc", nil, env, &stderr, testParse, level, ok); code != 0 || ran.value != "from-env" {
		t.Fatalf("clean run: exit %d, settings %+v", code, ran)
	}
	if code := main("svc", []string{"-h"}, env, io.Discard, testParse, level, ok); code != 0 {
		t.Fatalf("-h: exit %d, want 0", code)
	}
	stderr.Reset()
	if code := main("svc", []string{"--nope"}, env, &stderr, testParse, level, ok); code != 2 || !strings.Contains(stderr.String(), "svc: ") {
		t.Fatalf("bad flag: exit %d, stderr %q", code, stderr.String())
	}
	stderr.Reset()
	if code := main("svc", []string{"--log-level", "loud"}, env, &stderr, testParse, level, ok); code != 2 || !strings.Contains(stderr.String(), "loud") {
		t.Fatalf("bad log level: exit %d, stderr %q", code, stderr.String())
	}
	if code := main("svc", nil, env, io.Discard, testParse, level, fail); code != 1 {
		t.Fatalf("failing run: exit %d, want 1", code)
	}
}
