package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseFlagsOverrideEnvironment(t *testing.T) {
	s, err := parse([]string{"--batch", "3", "--max-age=2s"}, env(map[string]string{
		"FACEGATE_BATCH":            "16", // a flag wins
		"FACEGATE_CONCURRENCY":      "5",
		"FACEGATE_NATS_URL":         "nats://bus:4222",
		"FACEGATE_SITE":             "hq",
		"FACEGATE_ENSURE_STREAMS":   "false",
		"FACEGATE_INTRA_OP_THREADS": "2",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s.batch != 3 || s.maxAge != 2*time.Second || s.concurrency != 5 || s.natsURL != "nats://bus:4222" ||
		s.site != "hq" || s.ensureStreams || s.threads != 2 {
		t.Errorf("parsed %+v", s)
	}
}

func TestParseRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--batch", "0"}, nil, "batch 0"},
		{nil, map[string]string{"FACEGATE_CONCURRENCY": "many"}, "FACEGATE_CONCURRENCY"},
		{[]string{"--site", "hq.north"}, nil, "site"},
		{[]string{"--max-age", "-1s"}, nil, "max-age"},
		{[]string{"stray"}, nil, "unexpected arguments"},
	} {
		_, err := parse(tc.args, env(tc.env), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse(%q, %v) = %v, want an error mentioning %q", tc.args, tc.env, err, tc.want)
		}
	}
}
