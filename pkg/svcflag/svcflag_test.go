package svcflag

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
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
