// Command bench serves a signpost configuration with package dnsserver
// only, for side-by-side load tests against NSD and Knot (see run.sh). It
// stands in for `signpost serve` so the DNS server can be measured alone.
//
//	bench -config FILE -listen 127.0.0.1:5300   serve until SIGINT/SIGTERM
//	bench -config FILE -zones DIR               write each zone to DIR/<origin>zone
//	bench ... -cpuprofile FILE                   profile the serving
//	bench ... -single                            one UDP socket through ServeUDP (UDP only)
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/signpost-dev/signpost/config"
	"github.com/signpost-dev/signpost/dnsserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	confPath := fs.String("config", "", "signpost configuration `file`")
	listen := fs.String("listen", "127.0.0.1:5300", "UDP and TCP `address` to serve")
	zones := fs.String("zones", "", "write the zones as master files into `dir` and exit")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the serving to `file`")
	single := fs.Bool("single", false, "serve one UDP socket with ServeUDP instead of SO_REUSEPORT sockets")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	m, err := config.Load(*confPath, config.Options{})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *zones != "" {
		for _, z := range m.Zones {
			f, err := os.Create(filepath.Join(*zones, z.Origin+"zone"))
			if err == nil {
				err = z.WriteMasterFile(f)
				err = cmpErr(err, f.Close())
			}
			if err != nil {
				fmt.Fprintln(stderr, err)
				return 1
			}
		}
		return 0
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	s := dnsserver.New(dnsserver.Options{Logger: logger})
	s.SetModel(m)
	errc := make(chan error, 1)
	if *single {
		pc, err := net.ListenPacket("udp", *listen)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		go func() { errc <- s.ServeUDP(pc) }()
	} else {
		go func() { errc <- s.ListenAndServe(*listen) }()
	}
	select {
	case err := <-errc:
		fmt.Fprintln(stderr, err)
		return 1
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := <-errc; err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
