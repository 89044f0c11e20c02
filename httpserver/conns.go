package httpserver

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// connLimiter bounds the open connections of a Server. net/http has no such
// bound, and netutil.LimitListener's answer (stop accepting) lets a few
// hundred clients that connect and then say nothing lock everyone else out
// until they time out. Here a new connection instead displaces the oldest
// connection that is not in the middle of a request: a slow client is old
// by the time the bound is reached, a normal request is over in
// milliseconds.
type connLimiter struct {
	max int
	log *slog.Logger

	mu         sync.Mutex
	n          int
	head, tail *trackedConn // oldest first
}

func newConnLimiter(max int, log *slog.Logger) *connLimiter {
	return &connLimiter{max: max, log: log}
}

// trackedConn is a connection counted by a connLimiter.
type trackedConn struct {
	net.Conn
	lim *connLimiter
	// state is the http.ConnState net/http last reported; the zero value
	// is http.StateNew, which is right until the server reports otherwise.
	state atomic.Int32
	// netHTTP says net/http serves the connection and so closes it on
	// Shutdown; otherwise the TLS fast path does.
	netHTTP atomic.Bool

	prev, next *trackedConn // guarded by lim.mu
	listed     bool         // guarded by lim.mu
}

// Close closes the connection and frees its place.
func (c *trackedConn) Close() error {
	c.lim.mu.Lock()
	c.lim.unlink(c)
	c.lim.mu.Unlock()
	return c.Conn.Close()
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

// Accept returns the next connection that fits within the bound.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc := l.lim.admit(c); tc != nil {
			tc.netHTTP.Store(l.netHTTP)
			return tc, nil
		}
	}
}

// admit counts c in, displacing the oldest connection that is handshaking,
// sending its first request or idle if the bound is reached. It returns nil,
// having closed c, when every connection is busy with a request.
func (l *connLimiter) admit(c net.Conn) *trackedConn {
	tc := &trackedConn{Conn: c, lim: l}
	var victim *trackedConn
	l.mu.Lock()
	if l.n >= l.max {
		for v := l.head; v != nil; v = v.next {
			if st := http.ConnState(v.state.Load()); st == http.StateNew || st == http.StateIdle {
				victim = v
				break
			}
		}
		if victim == nil {
			l.mu.Unlock()
			c.Close()
			l.log.Debug("connection refused: every connection is busy", "remote", c.RemoteAddr().String(), "max_conns", l.max)
			return nil
		}
		l.unlink(victim)
	}
	l.link(tc)
	l.mu.Unlock()
	if victim != nil {
		// Closing the socket under net/http ends the victim's read with an
		// error, and its goroutine with it.
		victim.Conn.Close()
		l.log.Debug("connection closed to make room", "remote", victim.RemoteAddr().String(),
			"state", http.ConnState(victim.state.Load()).String(), "max_conns", l.max)
	}
	return tc
}

// setState is the http.Server ConnState hook.
func (l *connLimiter) setState(c net.Conn, st http.ConnState) {
	if r, ok := c.(*replayConn); ok {
		c = r.Conn
	}
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	if t, ok := c.(*trackedConn); ok {
		t.state.Store(int32(st))
	}
}

// closeQuiet closes the connections the TLS fast path holds that are not in
// the middle of a request.
func (l *connLimiter) closeQuiet() {
	l.mu.Lock()
	var quiet []*trackedConn
	for c := l.head; c != nil; c = c.next {
		if st := http.ConnState(c.state.Load()); !c.netHTTP.Load() && (st == http.StateNew || st == http.StateIdle) {
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

func (l *connLimiter) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
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
}
