// Package cli holds the facegate commands (cobra). Output for scripts goes to
// stdout as JSON; messages for people go to stderr.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/facegate/facegate/pkg/modelcache"
)

// Exit codes are part of the command-line contract.
const (
	ExitOK     = 0
	ExitError  = 1 // the command could not do its work (I/O, runtime, ...)
	ExitUsage  = 2 // bad flags, arguments or input
	ExitNoFace = 3 // an image had no face
)

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, a ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, a...)}
}

// app is what every command shares.
type app struct {
	stdout, stderr io.Writer
	cacheDir       string
	logLevel       string
	jsonOut        bool
	log            *zap.Logger
}

func (a *app) cache() (*modelcache.Cache, error) {
	return modelcache.New(a.cacheDir, a.log)
}

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Execute runs the command line and returns the process exit code.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "facegate",
		Short:         "Face verification and recognition for building access control",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			lvl, err := zapcore.ParseLevel(a.logLevel)
			if err != nil {
				return usageErr("--log-level: %v", err)
			}
			cfg := zap.NewProductionConfig()
			cfg.Level = zap.NewAtomicLevelAt(lvl)
			cfg.Encoding = "console"
			cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
			cfg.OutputPaths = []string{"stderr"}
			cfg.ErrorOutputPaths = []string{"stderr"}
			cfg.DisableStacktrace = true
			if a.log, err = cfg.Build(); err != nil {
				return err
			}
			return nil
		},
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: ExitUsage, err: err} })
	root.PersistentFlags().StringVar(&a.cacheDir, "cache", "", "model cache folder (default $FACEGATE_CACHE or ~/.cache/facegate)")
	root.PersistentFlags().StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().BoolVar(&a.jsonOut, "json", false, "print machine-readable JSON on stdout")
	root.AddCommand(modelsCmd(a), benchCmd(a), enrollCmd(a), verifyCmd(a), identifyCmd(a), peopleCmd(a), forgetCmd(a), evalCmd(a), calibrateCmd(a), demoCmd(a), natsCmd(a), auditCmd(a), upCmd(a), keysCmd(a), galleryCmd(a))

	err := root.ExecuteContext(ctx)
	if a.log != nil {
		_ = a.log.Sync()
	}
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(stderr, "facegate:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if isUsage(err) {
		return ExitUsage
	}
	return ExitError
}

// isUsage recognises cobra's own argument errors, which carry no type.
func isUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires at least", "requires at most", "flag needs an argument", "invalid argument", "required flag"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// printJSONLine prints one compact JSON object: the scripting contract of
// verify and identify.
func (a *app) printJSONLine(v any) error {
	return json.NewEncoder(a.stdout).Encode(v)
}
