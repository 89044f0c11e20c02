// Command signpost serves Matrix server discovery for delegated zones: an
// authoritative DNS server and an HTTPS server for /.well-known/matrix/*,
// both answering from one configuration file. See README.md.
//
// This package is wiring only: it parses flags, loads the model, builds the
// servers with their dependencies, reloads on SIGHUP and stops on
// SIGINT/SIGTERM. It is the only package that imports all the others.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/signpost-dev/signpost/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code) // os.Exit skips defers, so nothing is deferred here
}

// Exit codes, as DESIGN.md fixes them.
const (
	exitOK    = 0
	exitFail  = 1 // invalid config, failed probe, status needing attention
	exitUsage = 2
)

// env is what the program takes from its surroundings; tests replace parts.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time
	// hup delivers reload requests; main connects it to SIGHUP.
	hup <-chan os.Signal
	// ready, if set, is called by serve once every listener is open, and
	// reloaded after each reload with its outcome (nil: swapped in).
	ready    func(bound)
	reloaded func(error)
	// watchEvery is the pause between checks of the secondaries; one
	// minute if zero.
	watchEvery time.Duration
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return env{stdout: stdout, stderr: stderr, getenv: os.Getenv, now: time.Now, hup: hup}.run(ctx, args)
}

const usage = `usage:
  signpost serve    [-config FILE] [-log-format text|json]
                                     run DNS + HTTP(S) until SIGINT/SIGTERM; SIGHUP reloads
  signpost validate [-config FILE]   check the file, print what would be served
  signpost zone     [-config FILE]   print every zone as an RFC 1035 master file
  signpost probe    NAME [-resolver HOST:PORT] [-ca-file PEM] [-json]
                                     discover NAME as a remote homeserver and a client would
  signpost status   [-config FILE] [-addr HOST:PORT] [-json]
                                     ask the running signpost how it is doing (metrics.listen)
  signpost dnssec roll -zone ORIGIN [-finish] [-config FILE]
                                     start (or finish) a DNSSEC key roll
  signpost version

The config file is -config, else $SIGNPOST_CONFIG, else signpost.toml.
Exit codes: 0 ok, 1 invalid config, failed probe or status that needs
attention, 2 usage error.
`

func (e env) run(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return exitUsage
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "serve":
		return e.serve(ctx, args)
	case "validate":
		return e.validate(args)
	case "zone":
		return e.zone(args)
	case "probe":
		return e.probe(ctx, args)
	case "dnssec":
		return e.dnssec(ctx, args)
	case "status":
		return e.status(ctx, args)
	case "version":
		fmt.Fprintf(e.stdout, "signpost %s %s %s/%s\n", version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(e.stdout, usage)
		return exitOK
	}
	fmt.Fprintf(e.stderr, "signpost: unknown command %q\n%s", cmd, usage)
	return exitUsage
}

// configFlags parses the flags of the commands that only take -config.
// more, if given, defines the command's other flags.
func (e env) configFlags(name string, args []string, more ...func(*flag.FlagSet)) (path string, code int) {
	fs := flag.NewFlagSet("signpost "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.StringVar(&path, "config", e.defaultConfig(), "configuration `file`")
	for _, f := range more {
		f(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", exitOK
		}
		return "", exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "signpost %s: unexpected argument %q\n", name, fs.Arg(0))
		return "", exitUsage
	}
	return path, -1
}

func (e env) defaultConfig() string {
	if p := e.getenv("SIGNPOST_CONFIG"); p != "" {
		return p
	}
	return "signpost.toml"
}

// load reads the model and prints every problem when it is invalid. It
// gives up when ctx is done, saying nothing.
func (e env) load(ctx context.Context, path string, floor map[string]uint32) (*config.Model, bool) {
	m, err := config.LoadContext(ctx, path, config.Options{Now: e.now, Floor: floor})
	if ctx.Err() != nil {
		return nil, false
	}
	if err != nil {
		var problems config.Errors
		if errors.As(err, &problems) {
			for _, p := range problems {
				fmt.Fprintln(e.stderr, p)
			}
			fmt.Fprintf(e.stderr, "%s: %d problem(s); nothing from this file is served\n", path, len(problems))
		} else {
			fmt.Fprintf(e.stderr, "signpost: %v\n", err)
		}
		return nil, false
	}
	return m, true
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}
