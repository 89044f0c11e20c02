package httpserver

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// connLimiter is the connection budget of one kind of listener (HTTPS or
// plain): at most max open connections, at most perSource of them from one
// source (an IPv4 address or an IPv6 /64).
//
// net/http has no such bound, and netutil.LimitListener's answer (stop
// accepting) lets a few hundred clients that connect and then say nothing
// lock everyone else out until they time out. Here a new connection is
// always admitted, and displaces the connection that has gone longest
// without progress: a state change, which is accepting, a request head
// read, or a response written. A slow client, whether stalled in its
// handshake, its headers, its body or in reading its answer, makes no
// progress, so by the time the budget is full it is the oldest; a normal
// request is over in milliseconds and an idle keep-alive connection costs
// its client only a reconnect. When a source is at its cap, the victim is
// that source's own stalest connection, so one address cannot displace
// anybody else's.
type connLimiter struct {
	max, perSource int
	log            *slog.Logger
	// epoch is the zero of progress times; it carries a monotonic clock
	// reading, so progress times do not jump with the wall clock.
	epoch time.Time

	mu         sync.Mutex
	n          int
	head, tail *trackedConn // in order of admission
	sources    map[netip.Addr]*source

	evicted atomic.Uint64 // connections closed to make room
}

// source is the connections of one source address, in order of admission.
type source struct {
	n          int
	head, tail *trackedConn
}

func newConnLimiter(max, perSource int, log *slog.Logger) *connLimiter {
	return &connLimiter{max: max, perSource: min(perSource, max), log: log, epoch: time.Now(), sources: map[netip.Addr]*source{}}
}

// trackedConn is a connection counted by a connLimiter.
type trackedConn struct {
	net.Conn
	lim *connLimiter
	src netip.Addr
	// admitted is when the connection was admitted, in nanoseconds since
	// lim.epoch; set before the connection is listed, then only read.
	admitted int64
	// progress packs the connection's http.ConnState (low three bits) with
	// when it last changed, in nanoseconds since lim.epoch (the rest): one
	// atomic store per change, so the TLS fast path pays no lock for it.
	progress atomic.Int64
	// netHTTP says net/http serves the connection and so closes it on
	// Shutdown; otherwise the TLS fast path does.
	netHTTP atomic.Bool

	prev, next   *trackedConn // all connections; guarded by lim.mu
	sprev, snext *trackedConn // the source's connections; guarded by lim.mu
	listed       bool         // guarded by lim.mu
}

// state is the http.ConnState last reported for c.
func (c *trackedConn) state() http.ConnState {
	return http.ConnState(c.progress.Load() & 7)
}

// setProgress records that c entered state st at now.
func (c *trackedConn) setProgress(st http.ConnState, now time.Time) {
	c.progress.Store(int64(now.Sub(c.lim.epoch))<<3 | int64(st))
}

// Close closes the connection and frees its place.
func (c *trackedConn) Close() error {
	c.lim.mu.Lock()
	c.lim.unlink(c)
	c.lim.mu.Unlock()
	return c.Conn.Close()
}

// CloseWrite shuts the sending side of the connection when the connection
// underneath can (TCP can), and otherwise returns errors.ErrUnsupported.
// The answer to a request with a body uses it so the client sees EOF at
// once, and does not wait out the linger for the unread body: embedding
// net.Conn alone would hide the method from that type assertion.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

type limitListener struct {
	net.Listener
	lim     *connLimiter
	netHTTP bool
}

// listener returns l bounded by the limiter; netHTTP says whether net/http
// serves its connections.
func (l *connLimiter) listener(ln net.Listener, netHTTP bool) net.Listener {
	return &limitListener{ln, l, netHTTP}
}

// Accept returns the next connection, having made room for it.
func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := l.lim.admit(c)
	tc.netHTTP.Store(l.netHTTP)
	return tc, nil
}

// sourceOf is the key of the per-source cap: the address, or its /64 for
// IPv6, where one subscriber usually holds a whole /64. Connections that
// are not TCP share the zero key.
func sourceOf(a net.Addr) netip.Addr {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	ip := ta.AddrPort().Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// admit counts c in. If c's source is at its cap, it displaces the source's
// stalest connection; else, if the budget is full, the stalest of all.
func (l *connLimiter) admit(c net.Conn) *trackedConn {
	tc := &trackedConn{Conn: c, lim: l, src: sourceOf(c.RemoteAddr())}
	tc.admitted = int64(time.Since(l.epoch))
	tc.progress.Store(tc.admitted<<3 | int64(http.StateNew))
	var victim *trackedConn
	l.mu.Lock()
	src := l.sources[tc.src]
	switch {
	case src != nil && src.n >= l.perSource:
		victim = stalest(src.head, func(c *trackedConn) *trackedConn { return c.snext })
	case l.n >= l.max:
		victim = stalest(l.head, func(c *trackedConn) *trackedConn { return c.next })
	}
	if victim != nil {
		l.unlink(victim)
	}
	l.link(tc)
	l.mu.Unlock()
	if victim != nil {
		l.evicted.Add(1)
		// Closing the socket ends a read or write under way with an
		// error, and the goroutine serving it with it.
		victim.Conn.Close()
		if l.log.Enabled(context.Background(), slog.LevelDebug) {
			l.log.Debug("connection closed to make room", "remote", victim.RemoteAddr().String(),
				"state", victim.state().String(), "stalled", time.Duration(int64(time.Since(l.epoch))-victim.progress.Load()>>3).Seconds(),
				"max_conns", l.max, "max_conns_per_source", l.perSource)
		}
	}
	return tc
}

// stalest returns the connection, of the list from head in order of
// admission, whose last progress is the oldest. A connection's progress is
// never older than its admission, so the walk stops at the first
// connection admitted after the best progress found: under attack, the
// stalled connections are at the head and the walk is short.
func stalest(head *trackedConn, next func(*trackedConn) *trackedConn) *trackedConn {
	var best *trackedConn
	var bestAt int64
	for c := head; c != nil; c = next(c) {
		if best != nil && c.admitted >= bestAt {
			break
		}
		if at := c.progress.Load() >> 3; best == nil || at < bestAt {
			best, bestAt = c, at
		}
	}
	return best
}

// setState is the http.Server ConnState hook.
func setState(c net.Conn, st http.ConnState) {
	if r, ok := c.(*replayConn); ok {
		c = r.Conn
	}
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	if t, ok := c.(*trackedConn); ok {
		t.setProgress(st, time.Now())
	}
}

// closeQuiet closes the connections the TLS fast path holds that are not in
// the middle of a request.
func (l *connLimiter) closeQuiet() {
	l.mu.Lock()
	var quiet []*trackedConn
	for c := l.head; c != nil; c = c.next {
		if st := c.state(); !c.netHTTP.Load() && (st == http.StateNew || st == http.StateIdle) {
			quiet = append(quiet, c)
		}
	}
	l.mu.Unlock()
	for _, c := range quiet {
		c.Conn.Close()
	}
}

// closeAll closes every connection.
func (l *connLimiter) closeAll() {
	l.mu.Lock()
	var all []*trackedConn
	for c := l.head; c != nil; c = c.next {
		all = append(all, c)
	}
	l.mu.Unlock()
	for _, c := range all {
		c.Conn.Close()
	}
}

// count returns the number of open connections.
func (l *connLimiter) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// sourceCount returns the number of open connections from ip's source.
func (l *connLimiter) sourceCount(ip net.IP) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if src := l.sources[sourceOf(&net.TCPAddr{IP: ip})]; src != nil {
		return src.n
	}
	return 0
}

func (l *connLimiter) link(c *trackedConn) {
	c.listed = true
	c.prev = l.tail
	if l.tail != nil {
		l.tail.next = c
	} else {
		l.head = c
	}
	l.tail = c
	l.n++

	src := l.sources[c.src]
	if src == nil {
		src = &source{}
		l.sources[c.src] = src
	}
	c.sprev = src.tail
	if src.tail != nil {
		src.tail.snext = c
	} else {
		src.head = c
	}
	src.tail = c
	src.n++
}

func (l *connLimiter) unlink(c *trackedConn) {
	if !c.listed {
		return
	}
	c.listed = false
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		l.tail = c.prev
	}
	c.prev, c.next = nil, nil
	l.n--

	src := l.sources[c.src]
	if c.sprev != nil {
		c.sprev.snext = c.snext
	} else {
		src.head = c.snext
	}
	if c.snext != nil {
		c.snext.sprev = c.sprev
	} else {
		src.tail = c.sprev
	}
	c.sprev, c.snext = nil, nil
	if src.n--; src.n == 0 {
		delete(l.sources, c.src)
	}
}
