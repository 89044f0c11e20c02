package httpserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The HTTPS listener runs its own accept loop and TLS handshakes, then
// serves the common HTTP/1.1 request (GET, HEAD or OPTIONS, no body, plain
// framing) itself: read the head, look the answer up, write precomputed
// bytes. net/http's general machinery (a request object and header map per
// request, a background read goroutine, sorting headers on every response)
// cost about a third of the keep-alive throughput, and the bar is nginx.
// Everything else, HTTP/2 and any HTTP/1.1 request outside that narrow
// form, goes to net/http with the bytes already read, so net/http keeps the
// last word on every unusual request.

// fastBufSize is the most request head the fast path reads; a longer head
// goes to net/http, which applies MaxHeaderBytes.
const fastBufSize = 4096

// handoff is the net.Listener through which net/http receives the
// connections the TLS accept loop gives it.
type handoff struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newHandoff() *handoff {
	return &handoff{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (h *handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.ch:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoff) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

func (h *handoff) Addr() net.Addr { return handoffAddr{} }

// give hands c to net/http, or closes it if net/http has shut down.
func (h *handoff) give(c net.Conn) {
	select {
	case h.ch <- c:
	case <-h.done:
		c.Close()
	}
}

type handoffAddr struct{}

func (handoffAddr) Network() string { return "handoff" }
func (handoffAddr) String() string  { return "handoff" }

// replayConn is a TLS connection whose first bytes were already read by the
// fast path; net/http reads them again from pending. Embedding *tls.Conn
// gives it ConnectionState, which net/http uses to fill in Request.TLS.
type replayConn struct {
	*tls.Conn
	pending []byte
}

func (r *replayConn) Read(p []byte) (int, error) {
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	return r.Conn.Read(p)
}

// ServeTLS accepts connections on l, a plain TCP listener, and serves HTTPS
// (HTTP/1.1 and HTTP/2) on them. It blocks until Shutdown, then returns nil;
// any other return is an error from l.
//
// l is best made by net.ListenConfig{KeepAlive: -1}: IdleTimeout already
// closes silent connections, and without TCP keep-alive each new
// connection costs a few setsockopt calls less, which shows in handshakes
// per second.
func (s *Server) ServeTLS(l net.Listener) error {
	if s.tls == nil {
		return fmt.Errorf("httpserver: serve tls %s: no TLS configuration", l.Addr())
	}
	if !s.addListener(l) {
		l.Close()
		return nil
	}
	defer s.accepting.Done()
	s.startHandoff.Do(func() {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.https.Serve(s.handoff) // returns when Shutdown closes the handoff
		}()
	})
	ll := s.tlsConns.listener(l, false)
	var delay time.Duration
	for {
		c, err := ll.Accept()
		if err != nil {
			if s.closing.Load() {
				return nil
			}
			// As net/http does: out of file descriptors and the like pass.
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Debug("accept failed; retrying", "err", err, "delay", delay.Seconds())
				select {
				case <-time.After(delay):
				case <-s.done:
				}
				continue
			}
			return fmt.Errorf("httpserver: serve tls %s: %w", l.Addr(), err)
		}
		delay = 0
		s.wg.Add(1)
		go s.serveTLSConn(c.(*trackedConn))
	}
}

func (s *Server) serveTLSConn(tc *trackedConn) {
	defer s.wg.Done()
	c := tls.Server(tc, s.tls)
	c.SetDeadline(time.Now().Add(s.handshakeTimeout))
	if err := c.HandshakeContext(context.Background()); err != nil {
		var re tls.RecordHeaderError
		if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
			io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		}
		s.stats.handshakeFailures.Add(1) // before the close, which a client may wait for
		c.Close()
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("tls handshake failed", "remote", tc.RemoteAddr().String(), "err", err)
		}
		return
	}
	s.stats.handshakes.Add(1)
	state := c.ConnectionState()
	switch state.NegotiatedProtocol {
	case "h2":
		tc.netHTTP.Store(true)
		c.SetDeadline(time.Time{})
		s.handoff.give(c)
		return
	case "acme-tls/1":
		// The connection exists for its handshake; the validator sends
		// nothing on it.
		c.Close()
		return
	}
	if s.noFast {
		s.handOver(tc, c, nil)
		return
	}
	s.serveFast(tc, c, state.ServerName)
}

func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// serveFast serves HTTP/1.1 requests on c until the client or Shutdown ends
// the connection, or a request needs net/http.
//
// Deadlines are moved only when they have drifted by more than an eighth of
// their timeout, so most requests cost no timer update: an idle connection
// is closed after 7/8 to 8/8 of IdleTimeout, a response gets 7/8 to 8/8 of
// WriteTimeout.
func (s *Server) serveFast(tc *trackedConn, c *tls.Conn, sni string) {
	bp := s.bufs.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() { *bp = buf[:0]; s.bufs.Put(bp) }()
	var out []byte
	readTimeout, idleTimeout, writeTimeout := s.https.ReadHeaderTimeout, s.https.IdleTimeout, s.https.WriteTimeout
	now := time.Now()
	readDeadline := now.Add(readTimeout)
	c.SetReadDeadline(readDeadline)
	var writeDeadline time.Time
	first := true
	for {
		if s.closing.Load() {
			c.Close()
			return
		}
		// Read until buf holds a whole request head.
		if len(buf) == 0 && !first {
			if want := now.Add(idleTimeout); want.Sub(readDeadline) > idleTimeout/8 {
				readDeadline = want
				c.SetReadDeadline(readDeadline)
			}
		}
		end := 0
		for {
			var ok bool
			if end, ok = scanHead(buf); !ok || end > 0 {
				if !ok {
					s.handOver(tc, c, buf)
					return
				}
				break
			}
			if len(buf) == cap(buf) {
				s.handOver(tc, c, buf)
				return
			}
			n, err := c.Read(buf[len(buf):cap(buf)])
			if err != nil {
				// The client left or stalled: a close_notify would cost
				// a record and a write that nobody reads.
				tc.Close()
				return
			}
			idleOver := len(buf) == 0 && !first
			buf = buf[:len(buf)+n]
			if idleOver {
				// The rest of the head gets what the first request got.
				if e, ok := scanHead(buf); ok && e == 0 {
					readDeadline = time.Now().Add(readTimeout)
					c.SetReadDeadline(readDeadline)
				}
			}
		}
		now = time.Now()
		tc.setProgress(http.StateActive, now)

		var q fastRequest
		var resp reply
		var ok bool
		if out, resp, ok = s.fastAnswer(out[:0], &q, string(buf[:end]), sni, now); !ok {
			s.handOver(tc, c, buf)
			return
		}
		body := 0
		if q.method != http.MethodHead {
			body = len(resp.content())
		}
		if want := now.Add(writeTimeout); want.Sub(writeDeadline) > writeTimeout/8 {
			writeDeadline = want
			c.SetWriteDeadline(writeDeadline)
		}
		// Logged before the write, as net/http's handler is done before
		// net/http flushes: a client that has its answer finds it logged.
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			logRequest(s.log, tc.RemoteAddr().String(), "HTTP/1.1", q.method, q.host, q.path, resp.status, body, now)
		}
		if _, err := c.Write(out); err != nil {
			tc.Close()
			return
		}
		buf = buf[:copy(buf, buf[end:])]
		first = false
		if q.close {
			c.CloseWrite()
			c.Close()
			return
		}
		tc.setProgress(http.StateIdle, now)
	}
}

// fastAnswer parses a request head into q and appends the whole answer to
// out. It returns false, having appended nothing, if the request is not one
// for the fast path.
func (s *Server) fastAnswer(out []byte, q *fastRequest, head, sni string, now time.Time) ([]byte, reply, bool) {
	if !parseHead(head, q) {
		return out, reply{}, false
	}
	req := request{method: q.method, host: q.host, sni: sni, tls: true, path: q.path}
	if q.ninm > 0 {
		req.inm = q.inm[:q.ninm]
	}
	resp, st := s.index.Load().answer(&req)
	s.stats.count(st, req.path, resp.status)
	out = resp.appendH1(out)
	out = append(out, "Date: "...)
	out = s.date.append(out, now)
	if q.close {
		out = append(out, "\r\nConnection: close\r\n\r\n"...)
	} else {
		out = append(out, "\r\n\r\n"...)
	}
	if q.method != http.MethodHead {
		out = append(out, resp.content()...)
	}
	return out, resp, true
}

// handOver gives c to net/http with the bytes read so far.
func (s *Server) handOver(tc *trackedConn, c *tls.Conn, buf []byte) {
	tc.netHTTP.Store(true)
	c.SetDeadline(time.Time{})
	s.handoff.give(&replayConn{Conn: c, pending: append([]byte(nil), buf...)})
}

// scanHead finds the end of the request head at the start of b. It returns
// the length of the head including the empty line that ends it, 0 if b
// does not hold a whole head yet, and false if b has a line not ended by
// CRLF, which only net/http accepts.
func scanHead(b []byte) (int, bool) {
	start := 0
	for {
		i := indexByte(b[start:], '\n')
		if i < 0 {
			return 0, true
		}
		j := start + i
		if j == 0 || b[j-1] != '\r' {
			return 0, false
		}
		if j-1 == start {
			if start == 0 {
				return 0, false // empty request line
			}
			return j + 1, true
		}
		start = j + 1
	}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// fastRequest is what the fast path takes from a request head.
type fastRequest struct {
	method string
	path   string
	host   string
	inm    [4]string
	ninm   int
	close  bool
}

// parseHead parses a request head that scanHead found, and returns false
// unless the request is one the fast path answers exactly as net/http
// would: GET, HEAD or OPTIONS of an origin-form target without percent
// escapes, HTTP/1.1, exactly one valid Host, no body, no Expect, no Upgrade.
func parseHead(head string, q *fastRequest) bool {
	i := strings.Index(head, "\r\n")
	line, rest := head[:i], head[i+2:]
	sp := strings.IndexByte(line, ' ')
	if sp < 0 {
		return false
	}
	q.method = line[:sp]
	switch q.method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		return false
	}
	line = line[sp+1:]
	sp = strings.IndexByte(line, ' ')
	if sp <= 0 || line[sp+1:] != "HTTP/1.1" {
		return false
	}
	target := line[:sp]
	if target[0] != '/' {
		return false
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c >= 0x7f || c == '%' || c == '#' {
			return false
		}
	}
	q.path = target
	if i := strings.IndexByte(target, '?'); i >= 0 {
		q.path = target[:i]
	}
	hosts := 0
	for {
		i := strings.Index(rest, "\r\n")
		line, rest = rest[:i], rest[i+2:]
		if line == "" {
			break
		}
		colon := strings.IndexByte(line, ':')
		if colon <= 0 {
			return false
		}
		name, value := line[:colon], strings.Trim(line[colon+1:], " \t")
		for i := 0; i < len(name); i++ {
			if !isTokenChar(name[i]) {
				return false
			}
		}
		for i := 0; i < len(value); i++ {
			if c := value[i]; (c < ' ' && c != '\t') || c == 0x7f {
				return false
			}
		}
		switch {
		case strings.EqualFold(name, "Host"):
			hosts++
			q.host = value
		case strings.EqualFold(name, "If-None-Match"):
			if q.ninm == len(q.inm) {
				return false
			}
			q.inm[q.ninm] = value
			q.ninm++
		case strings.EqualFold(name, "Connection"):
			for tok := range strings.SplitSeq(value, ",") {
				tok = strings.Trim(tok, " \t")
				if strings.EqualFold(tok, "close") {
					q.close = true
				} else if strings.EqualFold(tok, "upgrade") {
					return false
				}
			}
		case strings.EqualFold(name, "Content-Length"):
			if value != "0" {
				return false
			}
		case strings.EqualFold(name, "Transfer-Encoding"), strings.EqualFold(name, "Expect"), strings.EqualFold(name, "Upgrade"):
			return false
		}
	}
	if hosts != 1 || q.host == "" {
		return false
	}
	for i := 0; i < len(q.host); i++ {
		c := q.host[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_') {
			return false
		}
	}
	return true
}

func isTokenChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// dateCache formats the Date header once a second instead of per response.
type dateCache struct {
	v atomic.Pointer[dateEntry]
}

type dateEntry struct {
	sec int64
	b   []byte
}

func (d *dateCache) append(dst []byte, now time.Time) []byte {
	sec := now.Unix()
	e := d.v.Load()
	if e == nil || e.sec != sec {
		e = &dateEntry{sec: sec, b: now.UTC().AppendFormat(nil, http.TimeFormat)}
		d.v.Store(e)
	}
	return append(dst, e.b...)
}
