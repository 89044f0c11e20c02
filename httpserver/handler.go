package httpserver

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// request is what answer needs to know about a request, from net/http or
// from the HTTP/1.1 fast path.
type request struct {
	method string
	host   string // the Host header as sent
	sni    string // TLS server name; empty on the plain listener
	tls    bool
	path   string
	inm    []string // If-None-Match values
}

// answer decides the response to q from ix. It returns a reply with a nil
// response when the plain listener should send the client to https on
// site st; every other answer is precomputed.
func (ix *index) answer(q *request) (resp reply, st *site) {
	wk := 0
	if strings.HasPrefix(q.path, wellKnownPrefix) {
		wk = 1
	}
	host, ok := splitHost(q.host)
	if !ok {
		return notFound[wk], nil
	}
	if q.tls {
		// The certificate was chosen, and checked by the client, for the
		// SNI name; answering for another name would hand one tenant's
		// documents out on another's connection.
		sni := strings.TrimSuffix(q.sni, ".")
		switch {
		case host == "":
			host = sni // HTTP/1.0 without Host
		case sni != "" && !strings.EqualFold(sni, host) && !isIP(sni):
			return misdirected[wk], nil
		}
	}
	st = ix.lookup(host)
	if st == nil {
		return notFound[wk], nil
	}
	if wk == 1 {
		return st.document(q), st
	}
	if q.path == "" || q.path[0] != '/' {
		return notFound[0], st // "*" or worse: nothing to redirect to
	}
	if !q.tls {
		return reply{}, st
	}
	if q.path == "/" && ix.root.response != nil {
		if q.method != http.MethodGet && q.method != http.MethodHead {
			return rootMethodNotAllowed, st
		}
		return ix.root, st
	}
	return notFound[0], st
}

// document answers a request under /.well-known/matrix/ on a known site.
func (st *site) document(q *request) reply {
	if q.method == http.MethodOptions {
		return preflight
	}
	var d *document
	switch q.path[len(wellKnownPrefix):] {
	case "server":
		d = st.docs[docServer]
	case "client":
		d = st.docs[docClient]
	case "support":
		d = st.docs[docSupport]
	}
	if d == nil {
		return notFound[1]
	}
	if q.method != http.MethodGet && q.method != http.MethodHead {
		return wellKnownMethodNotAllowed
	}
	if q.inm != nil && etagMatch(q.inm, d.tag[0]) {
		return reply{&d.answers.notModified, d}
	}
	return reply{&d.answers.ok, d}
}

// tlsHandler answers what net/http serves on the HTTPS listener: HTTP/2,
// and HTTP/1.1 requests the fast path hands over.
type tlsHandler struct{ s *Server }

func (h tlsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.s.serveHTTP(w, r, true)
}

// plainHandler answers on the plain HTTP listener, behind Options.WrapPlain.
type plainHandler struct{ s *Server }

func (h plainHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.s.serveHTTP(w, r, false)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request, secure bool) {
	ix := s.index.Load()
	q := request{method: r.Method, host: r.Host, tls: secure, path: r.URL.Path, inm: r.Header["If-None-Match"]}
	if r.TLS != nil {
		q.sni = r.TLS.ServerName
	}
	resp, st := ix.answer(&q)
	if resp.response == nil {
		// Everything but the documents lives on https. 301 rather than
		// 308: older Synapse does not follow 308.
		s.stats.count(st, q.path, http.StatusMovedPermanently)
		w.Header()["Location"] = []string{"https://" + st.name + ix.httpsPort + r.URL.RequestURI()}
		w.WriteHeader(http.StatusMovedPermanently)
		return
	}
	s.stats.count(st, q.path, resp.status)
	resp.write(w, r.Method == http.MethodHead)
}

// bodyless answers, before anything else sees them, requests that carry a
// body: any method but GET, HEAD and OPTIONS, and on HTTP/1.x any request
// that announces a body. Nothing here takes one, not even ACME HTTP-01,
// which is a GET. The answer is 405, with CORS as on every document, and
// the body is never read.
//
// On HTTP/1.x the answer is written on the hijacked connection, which is
// then closed: net/http would read up to 256 KiB of unread body after the
// handler to keep the connection open, even with "Connection: close" in
// the answer, and a client trickling its body stretches that over the
// whole read timeout while its connection counts as busy. On HTTP/2 the
// stream is reset instead and the connection stays.
type bodyless struct {
	s    *Server
	next http.Handler
}

// bodyLinger is how long a connection answered by bodyless stays open after
// the answer, for the client to read it: closing a socket with unread input
// sends a reset, which can destroy the answer in flight. net/http waits
// 500 ms for the same reason.
const bodyLinger = 500 * time.Millisecond

func (b bodyless) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		if r.ContentLength == 0 || r.ProtoMajor != 1 {
			b.next.ServeHTTP(w, r)
			return
		}
	}
	now := time.Now()
	resp := bodyNotAllowed
	var st *site
	if host, ok := splitHost(r.Host); ok {
		st = b.s.index.Load().lookup(host)
	}
	b.s.stats.count(st, r.URL.Path, resp.status)
	if b.s.log.Enabled(r.Context(), slog.LevelDebug) {
		logRequest(b.s.log, r.RemoteAddr, r.Proto, r.Method, r.Host, r.URL.Path, resp.status, len(resp.content()), now)
	}
	if r.ProtoMajor == 1 {
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			out := resp.appendH1(nil)
			out = append(out, "Date: "...)
			out = b.s.date.append(out, now)
			out = append(out, "\r\nConnection: close\r\n\r\n"...)
			out = append(out, resp.content()...)
			c.SetDeadline(now.Add(bodyLinger))
			if _, err := c.Write(out); err == nil {
				if cw, ok := c.(interface{ CloseWrite() error }); ok {
					cw.CloseWrite()
				}
				// Until the client closes or the linger is over; what
				// arrives meanwhile is dropped unread.
				io.Copy(io.Discard, c)
			}
			c.Close()
			return
		}
	}
	resp.write(w, false)
}

// write sends the reply through net/http, without its body for HEAD.
func (resp reply) write(w http.ResponseWriter, head bool) {
	h := w.Header()
	for i := range resp.header {
		f := &resp.header[i]
		h[f.key] = resp.value(f)
	}
	w.WriteHeader(resp.status)
	if body := resp.content(); body != nil && !head {
		w.Write(body) // an error means the client left; nothing to do
	}
}

// accessLog logs every request net/http serves at debug level, and costs
// one Enabled call when debug is off.
type accessLog struct {
	log  *slog.Logger
	next http.Handler
}

func (a accessLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if !a.log.Enabled(ctx, slog.LevelDebug) {
		a.next.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w}
	a.next.ServeHTTP(rec, r)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	logRequest(a.log, r.RemoteAddr, r.Proto, r.Method, r.Host, r.URL.Path, rec.status, rec.bytes, start)
}

func logRequest(log *slog.Logger, remote, proto, method, host, path string, status, bytes int, start time.Time) {
	log.LogAttrs(context.Background(), slog.LevelDebug, "http request",
		slog.String("remote", remote),
		slog.String("proto", proto),
		slog.String("method", method),
		slog.String("host", host),
		slog.String("path", path),
		slog.Int("status", status),
		slog.Int("bytes", bytes),
		slog.Float64("duration", time.Since(start).Seconds()))
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// splitHost returns the host of a Host header without port and trailing
// dot, and false when the header is malformed. Any port is dropped, not just
// the default one: the port names the listener the client reached (8443 in
// a local trial, whatever a proxy forwards to), never a different tenant.
func splitHost(h string) (string, bool) {
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", false
		}
		if rest := h[end+1:]; rest != "" && (rest[0] != ':' || !allDigits(rest[1:])) {
			return "", false
		}
		return h[:end+1], true
	}
	if i := strings.IndexByte(h, ':'); i >= 0 {
		if !allDigits(h[i+1:]) {
			return "", false
		}
		h = h[:i]
	}
	return strings.TrimSuffix(h, "."), true
}

// isIP reports whether an SNI name is an IP address. RFC 6066 forbids
// them, but some clients (wrk, for one) send whatever host they were given;
// such an SNI names no host, so it is treated as absent. A host name has
// no colon and does not consist of digits and dots alone.
func isIP(s string) bool {
	if s == "" || strings.IndexByte(s, ':') >= 0 {
		return s != ""
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '.' && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// etagMatch reports whether any If-None-Match header value lists etag or
// "*", with the weak comparison RFC 9110 section 13.1.2 prescribes for
// If-None-Match (a W/ prefix is ignored).
func etagMatch(values []string, etag string) bool {
	for _, list := range values {
		for {
			list = strings.TrimLeft(list, " \t,")
			if list == "" {
				break
			}
			if list[0] == '*' {
				return true
			}
			list = strings.TrimPrefix(list, "W/")
			if list == "" || list[0] != '"' {
				break // malformed: ignore the rest of this value
			}
			end := strings.IndexByte(list[1:], '"')
			if end < 0 {
				break
			}
			if list[:end+2] == etag {
				return true
			}
			list = list[end+2:]
		}
	}
	return false
}
