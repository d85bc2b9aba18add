// Command indexbench runs pkg/index/indexbench and prints its report: a
// table, or JSON with -json.
//
//	go run ./pkg/index/indexbench/cmd/indexbench -sizes 10000,100000,1000000
//	GOEXPERIMENT=simd go run ./pkg/index/indexbench/cmd/indexbench   # vector kernels
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"github.com/facegate/facegate/pkg/index/indexbench"
)

func main() {
	sizes := flag.String("sizes", "10000,100000,1000000", "gallery sizes, comma-separated")
	dim := flag.Int("dim", 128, "vector dimension")
	single := flag.Int("single", 200, "single queries timed per case")
	recall := flag.Int("recall", 1000, "queries for recall@1")
	batch := flag.Int("batch", 256, "queries per batch")
	batches := flag.Int("batches", 4, "batches timed per case")
	jsonOut := flag.String("json", "", "also write the report as JSON to this file")
	quiet := flag.Bool("q", false, "no progress on stderr")
	flag.Parse()

	cfg := indexbench.Config{Dim: *dim, SingleQueries: *single, RecallQueries: *recall, BatchSize: *batch, Batches: *batches}
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "indexbench: bad size %q\n", s)
			os.Exit(2)
		}
		cfg.Sizes = append(cfg.Sizes, n)
	}
	if !*quiet {
		cfg.Progress = func(s string) { fmt.Fprintln(os.Stderr, s) }
		cfg.OnCase = func(c indexbench.Case) {
			b, _ := json.Marshal(c)
			fmt.Fprintf(os.Stderr, "case %s\n", b)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := indexbench.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Print(rep.Table())
	if *jsonOut != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(*jsonOut, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
