package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/signpost-dev/signpost/probe"
)

// mapFlag collects -map FROM=TO pairs for probe.Remap.
type mapFlag map[string]string

func (m mapFlag) String() string { return fmt.Sprint(map[string]string(m)) }

func (m mapFlag) Set(s string) error {
	from, to, ok := strings.Cut(s, "=")
	if !ok {
		return errors.New(`want FROM=TO, e.g. ":443=127.0.0.1:8443"`)
	}
	if _, _, err := net.SplitHostPort(from); err != nil {
		return fmt.Errorf("FROM %q is not [host]:port", from)
	}
	if _, _, err := net.SplitHostPort(to); err != nil {
		return fmt.Errorf("TO %q is not host:port", to)
	}
	m[from] = to
	return nil
}

func (e env) probe(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("signpost probe", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: signpost probe NAME [-resolver HOST:PORT] [-ca-file PEM] [-json] [-map FROM=TO ...]")
		fs.PrintDefaults()
	}
	resolver := fs.String("resolver", "", "DNS resolver `HOST:PORT` to ask (default: the first nameserver in /etc/resolv.conf)")
	caFile := fs.String("ca-file", "", "trust only the roots in this `PEM` file (default: the system roots)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	remap := mapFlag{}
	fs.Var(remap, "map", "connect to TO whenever the probe would connect to FROM, e.g. \":443=127.0.0.1:8443\" (repeatable; for test setups on one machine)")
	// The name may come before or after the flags.
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if name == "" && fs.NArg() > 0 {
		name = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK
			}
			return exitUsage
		}
	}
	if name == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}

	o := probe.Options{Resolver: *resolver}
	if o.Resolver == "" {
		r, err := probe.SystemResolver()
		if err != nil {
			fmt.Fprintf(e.stderr, "signpost probe: %v\n", err)
			return exitFail
		}
		o.Resolver = r
	}
	// A resolver on this machine means a test setup, where loopback
	// addresses are expected rather than a mistake.
	if ap, err := netip.ParseAddrPort(o.Resolver); err == nil && ap.Addr().IsLoopback() {
		o.AllowLocal = true
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintf(e.stderr, "signpost probe: %v\n", err)
			return exitFail
		}
		o.Roots = x509.NewCertPool()
		if !o.Roots.AppendCertsFromPEM(pem) {
			fmt.Fprintf(e.stderr, "signpost probe: %s holds no PEM certificate\n", *caFile)
			return exitFail
		}
	}
	if len(remap) > 0 {
		o.Dial = probe.Remap(remap)
	}
	r := probe.Run(ctx, name, o)
	var err error
	if *asJSON {
		err = r.WriteJSON(e.stdout)
	} else {
		err = r.WriteText(e.stdout)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "signpost probe: %v\n", err)
		return exitFail
	}
	if r.Failed() {
		return exitFail
	}
	return exitOK
}
