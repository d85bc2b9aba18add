// Command natsauth generates a nats-server configuration with one NKEY user
// per facegate service from a deployment description (JSON, see
// natsauth.Deployment). Seeds go to -seeds (0600 files, one per user); the
// configuration, which holds only public keys, goes to -out or stdout.
//
//	natsauth -deployment deploy.json -seeds /secure/nats-seeds -out nats.conf
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/facegate/facegate/pkg/natsauth"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "natsauth:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("natsauth", flag.ContinueOnError)
	depPath := fs.String("deployment", "", "deployment description (JSON)")
	seeds := fs.String("seeds", "", "directory for the users' NKEY seeds (created 0700; keep it out of the repository)")
	out := fs.String("out", "", "configuration file to write (default stdout)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *depPath == "" || *seeds == "" {
		return fmt.Errorf("-deployment and -seeds are required")
	}
	raw, err := os.ReadFile(*depPath)
	if err != nil {
		return err
	}
	var d natsauth.Deployment
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return fmt.Errorf("deployment %s: %w", *depPath, err)
	}
	conf, err := natsauth.Generate(d, *seeds)
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = os.Stdout.Write(conf)
		return err
	}
	return os.WriteFile(*out, conf, 0o644)
}
