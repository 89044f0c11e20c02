// Command wkserve runs httpserver alone, with a certificate from PEM files
// instead of ACME, so that bench/run.sh can measure it beside nginx and
// Caddy. It stands in for `signpost serve` until that exists and is not
// installed.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/signpost-dev/signpost/config"
	"github.com/signpost-dev/signpost/httpserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("wkserve", flag.ContinueOnError)
	cfgPath := fs.String("config", "signpost.toml", "signpost configuration (the [[delegation]] tables and [http] are used)")
	certFile := fs.String("cert", "", "PEM certificate chain")
	keyFile := fs.String("key", "", "PEM private key")
	listen := fs.String("listen", "127.0.0.1:8443", "HTTPS address")
	plain := fs.String("plain", "", "plain HTTP address; none if empty")
	debug := fs.Bool("debug", false, "log every request")
	keepAlive := fs.Duration("tcp-keepalive", -1, "TCP keep-alive period of accepted connections; negative for none (IdleTimeout reaps idle peers)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "wkserve:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "wkserve:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	m, err := config.Load(*cfgPath, config.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wkserve:", err)
		return 1
	}
	s := httpserver.New(httpserver.Options{Logger: logger, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}})
	s.SetModel(m)
	errc := make(chan error, 2)
	serving := 0
	for _, l := range []struct {
		addr  string
		serve func(net.Listener) error
	}{{*listen, s.ServeTLS}, {*plain, s.ServePlain}} {
		if l.addr == "" {
			continue
		}
		lc := net.ListenConfig{KeepAlive: *keepAlive}
		ln, err := lc.Listen(ctx, "tcp", l.addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "wkserve:", err)
			return 1
		}
		serving++
		go func() { errc <- l.serve(ln) }()
	}
	logger.Info("serving", "https", *listen, "plain", *plain)
	select {
	case <-ctx.Done():
	case err := <-errc:
		serving--
		logger.Error("serve failed", "err", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil {
		logger.Error("shutdown", "err", err)
	}
	for range serving {
		<-errc
	}
	return 0
}
