// Package svcflag gives every facegate service the same configuration
// surface: command-line flags, each with an environment fallback named
// FACEGATE_<FLAG_NAME> (dashes become underscores), which is how the
// operator's pods and the Helm chart configure the services. A flag given on
// the command line wins over the environment.
package svcflag

import (
	"errors"
	"flag"
	"fmt"
)

// EnvName is the environment variable of a flag: "nats-url" ->
// "FACEGATE_NATS_URL".
func EnvName(flagName string) string {
	b := []byte(flagName)
	for i, c := range b {
		switch {
		case c == '-':
			b[i] = '_'
		case 'a' <= c && c <= 'z':
			b[i] = c - 'a' + 'A'
		}
	}
	return "FACEGATE_" + string(b)
}

// Parse parses args into fs, then sets every flag not given on the command
// line from its environment variable when that is non-empty. Positional
// arguments are an error: the services take none.
func Parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		env := EnvName(f.Name)
		if v := getenv(env); v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
			}
		}
	})
	return errors.Join(errs...)
}
