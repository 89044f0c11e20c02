package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/signpost-dev/signpost/acme"
	"github.com/signpost-dev/signpost/config"
	"github.com/signpost-dev/signpost/dnsserver"
	"github.com/signpost-dev/signpost/httpserver"
	"github.com/signpost-dev/signpost/monitor"
	"github.com/signpost-dev/signpost/pgstore"
	"github.com/signpost-dev/signpost/syncwatch"
)

// bound lists the addresses serve actually listens on, which differ from
// the configured ones when a port is 0 (tests).
type bound struct {
	DNS     []string // each served over UDP and TCP
	HTTPS   string
	Plain   string
	Metrics string // "" without [metrics] listen
}

// shutdownGrace is how long in-flight requests get to finish on SIGTERM.
const shutdownGrace = 5 * time.Second

func (e env) serve(ctx context.Context, args []string) int {
	logFormat := "text"
	path, code := e.configFlags("serve", args, func(fs *flag.FlagSet) {
		fs.StringVar(&logFormat, "log-format", logFormat, "log `format`: text or json (one JSON object per line)")
	})
	if code >= 0 {
		return code
	}
	if logFormat != "text" && logFormat != "json" {
		fmt.Fprintf(e.stderr, "signpost serve: -log-format %q: use text or json\n", logFormat)
		return exitUsage
	}
	// SIGTERM during start-up stops it, with the exit code of a stop once
	// serving (a provider's file takes a while to load and index).
	stopped := func() bool { return ctx.Err() != nil }
	model, ok := e.load(ctx, path, nil)
	if stopped() {
		return exitOK
	}
	if !ok {
		return exitFail
	}
	// Secondaries must never see a zone's serial go backwards, so with
	// secondaries the last serials served are kept in the state directory
	// and the model is built again on top of them.
	if len(model.SecondaryServers) > 0 {
		floor, err := readSerials(model.ACME.Storage)
		switch {
		case err != nil && pgstore.IsURL(model.ACME.Storage):
			// DNS does not wait for the database; the clock's serials are
			// behind the saved ones only where UPDATEs bumped them past it.
			fmt.Fprintf(e.stderr, "signpost: dns serials not read, starting from the clock: %v\n", err)
		case err != nil:
			fmt.Fprintf(e.stderr, "signpost: %v; move it aside to start with serials from the clock\n", err)
			return exitFail
		}
		if model, ok = e.load(ctx, path, floor); stopped() {
			return exitOK
		} else if !ok {
			return exitFail
		}
	}
	level := slog.LevelInfo
	if e.getenv("SIGNPOST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	var handler slog.Handler = slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level})
	if logFormat == "json" {
		handler = slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: level})
	}
	log := slog.New(handler)
	for _, w := range model.Warnings {
		log.Warn("config", "problem", w.String())
	}
	// Not fatal: DNS and the documents over plain HTTP do not need it, and
	// certificates are retried until it is fixed, with no restart.
	if p := storageProblem(model); p != nil {
		log.Error("storage", "problem", p.String())
	}

	// Bind everything first: a port in use fails start-up before anything is
	// served, and acme needs the bound HTTP addresses.
	var closers []func()
	defer func() {
		for _, c := range slices.Backward(closers) {
			c()
		}
	}()
	var b bound
	type dnsListener struct {
		pcs []net.PacketConn
		l   net.Listener
	}
	var dnsLs []dnsListener
	for _, addr := range model.DNS.Listen {
		pcs, l, err := listenDNS(addr)
		if err != nil {
			log.Error("cannot listen", "err", explainInUse("dns.listen", addr, err))
			return exitFail
		}
		closers = append(closers, func() {
			for _, pc := range pcs {
				pc.Close()
			}
			l.Close()
		})
		dnsLs = append(dnsLs, dnsListener{pcs, l})
		b.DNS = append(b.DNS, pcs[0].LocalAddr().String())
	}
	// No TCP keep-alive probes: the idle timeout already closes silent
	// connections, and each probe setting costs syscalls per connection.
	httpLC := net.ListenConfig{KeepAlive: -1}
	tlsL, err := httpLC.Listen(ctx, "tcp", model.HTTP.Listen)
	if err != nil {
		log.Error("cannot listen", "err", fmt.Errorf("https: %w", explainInUse("http.listen", model.HTTP.Listen, err)))
		return exitFail
	}
	closers = append(closers, func() { tlsL.Close() })
	plainL, err := httpLC.Listen(ctx, "tcp", model.HTTP.PlainListen)
	if err != nil {
		log.Error("cannot listen", "err", fmt.Errorf("http: %w", explainInUse("http.plain_listen", model.HTTP.PlainListen, err)))
		return exitFail
	}
	closers = append(closers, func() { plainL.Close() })
	b.HTTPS, b.Plain = tlsL.Addr().String(), plainL.Addr().String()
	var metricsL net.Listener
	if model.Metrics.Listen != "" {
		if metricsL, err = httpLC.Listen(ctx, "tcp", model.Metrics.Listen); err != nil {
			log.Error("cannot listen", "err", fmt.Errorf("metrics: %w", explainInUse("metrics.listen", model.Metrics.Listen, err)))
			return exitFail
		}
		closers = append(closers, func() { metricsL.Close() })
		b.Metrics = metricsL.Addr().String()
	}

	// current is the model being served, for the serials hook, which runs
	// inside dnsserver while the loop below may be swapping models.
	var current atomic.Pointer[config.Model]
	current.Store(model)
	dnsSrv := dnsserver.New(dnsserver.Options{
		Logger: log.With("part", "dns"),
		// Two readers per socket: listenDNS opened one SO_REUSEPORT socket per
		// core, and the kernel spreads queries over them by a hash of the
		// client's address and port, so with few clients one socket can get
		// most of them; a second reader lets both cores serve it. Measured with
		// dnsperf -c 4 against one reader per socket, interleaved: 362-377k
		// queries/s against 346-361k, at the same CPU per query.
		UDPReaders: 2,
		OnSerials: func(serials map[string]uint32) {
			m := current.Load()
			if len(m.SecondaryServers) == 0 {
				return // nobody to see a serial go back
			}
			if err := writeSerials(m.ACME.Storage, serials); err != nil {
				log.Error("dns serials not saved; after a restart a secondary may see a serial go back", "err", err)
			}
		},
	})
	// With dns.listen = [] the DNS server is made but never given a model
	// or a socket: it serves nothing and NOTIFYs nobody. config has left
	// dns-01 out of the challenges then, so acme needs no TXT store.
	dnsOn := len(dnsLs) > 0
	var txtStore acme.TXTStore
	var dnsAddr string
	errc := make(chan error, (runtime.GOMAXPROCS(0)+1)*len(dnsLs)+3)
	running := 0
	start := func(serve func() error) {
		running++
		go func() { errc <- serve() }()
	}
	closers = append(closers, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
		defer cancel()
		dnsSrv.Shutdown(sctx) // a no-op after the orderly shutdown below
	})
	if dnsOn {
		keys, err := loadKeys(model, e.now())
		if err != nil {
			// Unsigned answers from a zone whose parent has its DS
			// would fail validation everywhere: better not to start.
			log.Error("dnssec", "err", err)
			return exitFail
		}
		dnsSrv.SetKeys(keys)
		dnsSrv.SetModel(model) // from here on it may NOTIFY secondaries
		txtStore, dnsAddr = dnsSrv, b.DNS[0]
		// DNS answers while HTTPS is being set up: with a provider's
		// 10,000 names that is a few tenths of a second sooner.
		for _, d := range dnsLs {
			for _, pc := range d.pcs {
				start(func() error { return dnsSrv.ServeUDP(pc) })
			}
			start(func() error { return dnsSrv.ServeTCP(d.l) })
		}
	}
	certs, err := acme.New(acme.Options{
		Logger:    log.With("part", "acme"),
		ACME:      model.ACME,
		Store:     txtStore,
		DNSAddr:   dnsAddr,
		PlainAddr: b.Plain,
		TLSAddr:   b.HTTPS,
	})
	if err != nil {
		log.Error("certificates", "err", err)
		return exitFail
	}
	closers = append(closers, certs.Stop)
	httpSrv := httpserver.New(httpserver.Options{Logger: log.With("part", "http"), TLSConfig: certs.TLSConfig(), WrapPlain: certs.HTTPHandler})
	httpSrv.SetModel(model)
	if err := certs.SetModel(ctx, model); err != nil {
		if stopped() {
			return exitOK
		}
		log.Error("certificates", "err", err)
		return exitFail
	}

	// The secondaries are watched from here, not by dnsserver: it is a
	// client of other servers, and runs only while DNS is served.
	watch := syncwatch.New(syncwatch.Options{Logger: log.With("part", "secondaries"), Serials: dnsSrv.Serials, Every: e.watchEvery})
	watch.SetModel(model)
	if dnsOn {
		wctx, stopWatch := context.WithCancel(ctx)
		watched := make(chan struct{})
		go func() { watch.Run(wctx); close(watched) }()
		closers = append(closers, func() { stopWatch(); <-watched })
	}
	pm := newProcessMetrics(b, b.Metrics, e.now(), dnsSrv.Metrics(), httpSrv.Metrics(), certs.Metrics(), watch.Metrics())
	start(func() error { return httpSrv.ServeTLS(tlsL) })
	start(func() error { return httpSrv.ServePlain(plainL) })
	var mon *monitor.Server
	if metricsL != nil {
		mon = monitor.New(monitor.Options{
			Logger:   log.With("part", "metrics"),
			Gatherer: pm.reg,
			Ready:    func() []string { return notReady(current.Load(), certs, e.now()) },
			Now:      e.now,
		})
		start(func() error { return mon.Serve(metricsL) })
	}

	dnsAt := any(b.DNS)
	if !dnsOn {
		dnsAt = "off"
	}
	metricsAt := b.Metrics
	if metricsAt == "" {
		metricsAt = "off"
	}
	log.Info("serving", "config", path, "dns", dnsAt, "https", b.HTTPS, "http", b.Plain, "metrics", metricsAt,
		"zones", len(model.Zones), "server_names", len(model.Delegations))
	if e.ready != nil {
		e.ready(b)
	}
	e.fitHeap()

	code = exitOK
loop:
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping", "reason", context.Cause(ctx))
			break loop
		case <-e.hup:
			e.buildingHeap()
			next, err := config.LoadContext(ctx, path, config.Options{Now: e.now, Previous: model})
			if stopped() {
				continue // to the stop above
			}
			if err == nil && (!slices.Equal(next.DNS.Listen, model.DNS.Listen) || next.HTTP.Listen != model.HTTP.Listen || next.HTTP.PlainListen != model.HTTP.PlainListen || next.Metrics.Listen != model.Metrics.Listen) {
				// The sockets stay what they are until a restart; serving a
				// model that names other ones would send clients there.
				err = errors.New("listen addresses changed (dns.listen, http.listen, http.plain_listen or metrics.listen); restart signpost to apply them")
			}
			if err != nil {
				logRejected(log, path, err)
			} else {
				current.Store(next)
				if dnsOn {
					// Failing keys keep the ones in use: zones that
					// newly ask for DNSSEC are served unsigned until a
					// reload finds them.
					if keys, err := loadKeys(next, e.now()); err != nil {
						log.Error("dnssec keys not loaded; keeping the keys in use", "err", err)
					} else {
						dnsSrv.SetKeys(keys)
					}
					dnsSrv.SetModel(next)
				}
				httpSrv.SetModel(next)
				if err := certs.SetModel(ctx, next); err != nil {
					log.Error("certificates", "err", err)
				}
				watch.SetModel(next)
				model = next
				for _, w := range model.Warnings {
					log.Warn("config", "problem", w.String())
				}
				log.Info("reloaded", "config", path, "zones", len(model.Zones), "server_names", len(model.Delegations))
			}
			pm.reloaded(err, e.now())
			e.fitHeap()
			if e.reloaded != nil {
				e.reloaded(err)
			}
		case err := <-errc:
			running--
			log.Error("listener failed", "err", err)
			code = exitFail
			break loop
		}
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := httpSrv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	if err := dnsSrv.Shutdown(sctx); err != nil {
		log.Warn("dns shutdown", "err", err)
	}
	if mon != nil {
		if err := mon.Shutdown(sctx); err != nil {
			log.Warn("metrics shutdown", "err", err)
		}
	}
	// Whoever starts a goroutine sees it stop.
	for ; running > 0; running-- {
		if err := <-errc; err != nil {
			log.Warn("listener stopped", "err", err)
		}
	}
	return code
}

// Heap headroom: what the process holds after start-up or a reload, plus
// an eighth of its live heap, and at least this much, is the soft memory
// limit while serving (see fitHeap).
const minHeapHeadroom = 32 << 20

// fitHeap tunes the garbage collector for serving, after start-up and
// each reload, unless GOGC and GOMEMLIMIT say otherwise. Full TLS
// handshakes allocate heavily; collecting less often (GOGC 400) measured
// 1.42x Caddy's handshakes/s against 1.18x at the default, for about 13 MB
// more at peak (httpserver/bench/run.sh). But a heap may grow to five
// times its live size under GOGC 400, and a provider's 10,000 names live
// in some 130 MB: that measured 640 MB resident. So a soft memory limit
// caps it: the memory the runtime holds once the building's garbage is
// gone (the limit counts that, not the live heap: a limit of the live
// heap plus a quarter was below it for 10,000 names, and the collector
// ran whenever anything allocated), plus an eighth of the live heap and
// at least minHeapHeadroom for the handshakes' garbage.
func (e env) fitHeap() {
	if e.getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if e.getenv("GOMEMLIMIT") != "" {
		return
	}
	// A collection that also gives the memory it frees back at once: the
	// background scavenger took minutes to return the building's peak.
	debug.FreeOSMemory()
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	held := int64(s[0].Value.Uint64() - s[1].Value.Uint64())
	live := int64(s[2].Value.Uint64())
	debug.SetMemoryLimit(held + max(live/8, minHeapHeadroom))
}

// buildingHeap lifts fitHeap's memory limit for a reload, when the old and
// new models are both live: under a limit fitted to one, the collector ran
// back to back and a reload of 10,000 names took three times as long. It
// collects at the default pace meanwhile, not GOGC 400's.
func (e env) buildingHeap() {
	if e.getenv("GOGC") == "" {
		debug.SetGCPercent(100)
	}
	if e.getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(math.MaxInt64)
	}
}

// minUDPSockets is the fewest UDP sockets listenDNS opens. The kernel
// hashes each client address and port to one of them (SO_REUSEPORT), so a
// few busy clients, a resolver's handful of source ports, land unevenly
// on as few as two: one reader is busy while the other waits. With four
// on 2 cores dnsperf -c 4 measured 344-381k queries/s against 341-355k.
const minUDPSockets = 4

// udpSockets is how many UDP sockets listenDNS opens on procs cores: one
// per core, at least minUDPSockets, but one on one core. There the one
// reader takes turns on all the sockets anyway, and four split each
// batch it could read with one recvmmsg into four smaller ones. Pinned to
// one core, with dnsperf -c 4 on the other, one socket answered 457-478k
// queries/s against 436-487k with four (NSD 460-464k; 5 rounds each).
func udpSockets(procs int) int {
	if procs == 1 {
		return 1
	}
	return max(procs, minUDPSockets)
}

// listenDNS opens udpSockets UDP sockets (SO_REUSEPORT, each with its
// reader; measured at about 1.2x the queries/s of one shared socket), and
// TCP on the same address; with port 0 TCP takes the port the UDP sockets
// got.
func listenDNS(addr string) ([]net.PacketConn, net.Listener, error) {
	_, port, _ := net.SplitHostPort(addr)
	for try := 0; ; try++ {
		pcs, err := dnsserver.ListenUDP(addr, udpSockets(runtime.GOMAXPROCS(0)))
		if err != nil {
			return nil, nil, fmt.Errorf("dns: %w", err) // err names udp and addr
		}
		l, err := net.Listen("tcp", pcs[0].LocalAddr().String())
		if err == nil {
			return pcs, l, nil
		}
		for _, pc := range pcs {
			pc.Close()
		}
		// With port 0 the kernel picked a UDP port whose TCP twin may be
		// taken; pick again rather than fail.
		if port != "0" || try == 10 || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, fmt.Errorf("dns: %w", err)
		}
	}
}

// logRejected explains a reload that keeps the running model.
func logRejected(log *slog.Logger, path string, err error) {
	var problems config.Errors
	if errors.As(err, &problems) {
		for _, p := range problems {
			log.Error("reload rejected", "problem", p.String())
		}
	} else {
		log.Error("reload rejected", "err", err)
	}
	log.Error("reload rejected; still serving the previous configuration", "config", path)
}
