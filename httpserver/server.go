// Package httpserver serves the Matrix discovery documents
// (/.well-known/matrix/server, /client and /support) for every server name
// in a *config.Model, over HTTPS and over plain HTTP for a proxy in front.
//
// It owns the listeners' HTTP side only: certificates arrive as a *tls.Config
// and ACME HTTP-01 as a handler wrapper, both from the caller, so httpserver
// imports config and nothing else of signpost's (never acme, certmagic or
// dnsserver).
package httpserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/signpost-dev/signpost/config"
)

// Defaults for the zero values of Options. They are sized for documents of a
// few hundred bytes: a client that needs more than ReadHeaderTimeout to send
// its headers is slow or hostile, not busy. A whole request, from its first
// byte to the last byte of the answer, takes at most ReadHeaderTimeout plus
// WriteTimeout; no request body is ever read.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 20 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultIdleTimeout       = 90 * time.Second
	DefaultMaxHeaderBytes    = 16 << 10
	DefaultMaxConns          = 2048
	DefaultMaxConnsPerSource = 256
)

// Options configure a Server. Only TLSConfig is needed, and only by ServeTLS.
type Options struct {
	// Logger receives the access log (at debug level) and connection-level
	// errors such as failed TLS handshakes (also debug: on the internet
	// they are constant noise). If nil, logs are discarded.
	Logger *slog.Logger

	// TLSConfig provides the certificates for ServeTLS. It is cloned, not
	// modified: the clone gets TLS 1.2 as the minimum version and offers
	// "h2" and "http/1.1" first, keeping every other protocol the caller
	// lists (such as "acme-tls/1" for TLS-ALPN-01). If nil, ServeTLS fails.
	TLSConfig *tls.Config

	// WrapPlain wraps the plain HTTP handler, so that ACME HTTP-01 challenge
	// requests are answered before anything else. If nil, the plain
	// listener serves the documents and redirects everything else.
	WrapPlain func(http.Handler) http.Handler

	// ReadHeaderTimeout bounds the reading of request headers; the TLS
	// handshake gets the shortest of it, ReadTimeout and WriteTimeout.
	// DefaultReadHeaderTimeout if zero or negative.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request; DefaultReadTimeout if
	// zero or negative.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response; DefaultWriteTimeout if zero
	// or negative. Plain HTTP/1.1 GETs over TLS get between 7/8 of it and
	// all of it, which spares a timer update per request.
	WriteTimeout time.Duration
	// IdleTimeout is how long a keep-alive connection may wait for its next
	// request (for plain HTTP/1.1 over TLS, 7/8 of it to all of it);
	// DefaultIdleTimeout if zero or negative.
	IdleTimeout time.Duration
	// MaxHeaderBytes limits the size of request headers; larger requests get
	// 431. DefaultMaxHeaderBytes if zero or negative. As in net/http, 4 KiB
	// more are read before the limit applies.
	MaxHeaderBytes int
	// MaxConns is the connection budget of the HTTPS listeners, and
	// separately of the plain ones, so that an attack on one cannot lock
	// the other out. When a budget is full, a new connection displaces
	// the one that has gone longest without progress (handshaking,
	// sending its request, in a request or idle), so slow clients cannot
	// lock normal ones out: a normal request is over in milliseconds.
	// DefaultMaxConns if zero or negative.
	MaxConns int
	// MaxConnsPerSource bounds the connections from one source (an IPv4
	// address or an IPv6 /64) within each budget; a new connection from a
	// source at the cap displaces that source's stalest connection, never
	// another source's. DefaultMaxConnsPerSource if zero or negative;
	// never more than MaxConns.
	MaxConnsPerSource int

	noFast bool // tests: send every TLS connection to net/http
}

// Server answers HTTP requests from the current model. It is safe for
// concurrent use; create it with New.
//
// On the TLS listener, Server runs its own accept loop and handshakes and
// answers the common HTTP/1.1 request itself (see tls.go); HTTP/2 and
// everything unusual go to net/http. The plain listener is net/http's.
type Server struct {
	log   *slog.Logger
	index atomic.Pointer[index]
	// tlsConns and plainConns are the connection budgets of the HTTPS and
	// the plain listeners.
	tlsConns, plainConns *connLimiter
	tls                  *tls.Config
	// https serves what the TLS fast path hands over (HTTP/2, unusual
	// HTTP/1.1); plain serves the plain listener.
	https            *http.Server
	plain            *http.Server
	handoff          *handoff
	startHandoff     sync.Once
	handshakeTimeout time.Duration
	bufs             sync.Pool // *[]byte of cap fastBufSize
	date             dateCache
	noFast           bool // tests: send every TLS connection to net/http

	mu        sync.Mutex
	listeners map[net.Listener]bool // TLS listeners, closed by Shutdown
	closing   atomic.Bool
	done      chan struct{} // closed by Shutdown
	accepting sync.WaitGroup
	wg        sync.WaitGroup // TLS connections and the handoff server

	stats httpStats // see stats.go
}

// New returns a Server that serves nothing (404 everywhere) until SetModel.
func New(o Options) *Server {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		log:        logger,
		tlsConns:   newConnLimiter(orDefault(o.MaxConns, DefaultMaxConns), orDefault(o.MaxConnsPerSource, DefaultMaxConnsPerSource), logger.With("listener", "https")),
		plainConns: newConnLimiter(orDefault(o.MaxConns, DefaultMaxConns), orDefault(o.MaxConnsPerSource, DefaultMaxConnsPerSource), logger.With("listener", "http")),
		handoff:    newHandoff(),
		listeners:  map[net.Listener]bool{},
		done:       make(chan struct{}),
		noFast:     o.noFast,
	}
	s.bufs.New = func() any { b := make([]byte, 0, fastBufSize); return &b }
	if o.TLSConfig != nil {
		s.tls = tlsConfig(o.TLSConfig)
	}
	s.index.Store(newIndex(nil, nil))

	var plain http.Handler = plainHandler{s}
	if o.WrapPlain != nil {
		plain = o.WrapPlain(plain)
	}
	s.https = s.httpServer(o, tlsHandler{s}, true)
	s.plain = s.httpServer(o, plain, false)
	// As net/http does: the handshake gets the shortest of the timeouts.
	s.handshakeTimeout = min(s.https.ReadHeaderTimeout, s.https.ReadTimeout, s.https.WriteTimeout)
	return s
}

func (s *Server) httpServer(o Options, h http.Handler, h2 bool) *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(h2)
	return &http.Server{
		Handler:           bodyless{s, accessLog{s.log, h}},
		Protocols:         &protos,
		ReadHeaderTimeout: orDefault(o.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		ReadTimeout:       orDefault(o.ReadTimeout, DefaultReadTimeout),
		WriteTimeout:      orDefault(o.WriteTimeout, DefaultWriteTimeout),
		IdleTimeout:       orDefault(o.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    orDefault(o.MaxHeaderBytes, DefaultMaxHeaderBytes),
		ConnState:         setState,
		// Handshake failures and broken connections are routine on a public
		// port; keep them out of the default log level.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// tlsConfig returns the configuration ServeTLS uses: the caller's, cloned,
// with TLS 1.2 as a floor and HTTP/2 and HTTP/1.1 offered first.
func tlsConfig(in *tls.Config) *tls.Config {
	c := in.Clone()
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	protos := []string{"h2", "http/1.1"}
	for _, p := range in.NextProtos {
		if !slices.Contains(protos, p) {
			protos = append(protos, p)
		}
	}
	c.NextProtos = protos
	return c
}

// SetModel makes m the model every later request is answered from. It
// precomputes every response header, so requests only look them up. A nil m
// serves nothing. Requests already being answered finish with the old model;
// connections are kept.
func (s *Server) SetModel(m *config.Model) {
	s.index.Store(newIndex(m, s.index.Load()))
}

// ServePlain accepts connections on l and serves plain HTTP: ACME HTTP-01
// through Options.WrapPlain, the documents (for a proxy in front), and a 301
// to https for every other GET or HEAD; a request that carries a body gets
// 405 unread, as on HTTPS. It blocks until Shutdown, then returns nil.
func (s *Server) ServePlain(l net.Listener) error {
	err := s.plain.Serve(s.plainConns.listener(l, true))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("httpserver: serve plain %s: %w", l.Addr(), err)
}

// addListener registers a TLS listener for Shutdown to close, and returns
// false if Shutdown has begun.
func (s *Server) addListener(l net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.listeners[l] = true
	s.accepting.Add(1)
	return true
}

// Shutdown stops the listeners, closes idle connections (HTTP/2 ones get a
// GOAWAY) and waits for requests in flight until ctx ends. If ctx ends
// first, it closes the remaining connections and returns ctx's error.
// Serve methods return nil once Shutdown has begun.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing.Swap(true) {
		close(s.done)
	}
	ls := s.listeners
	s.listeners = map[net.Listener]bool{}
	s.mu.Unlock()
	for l := range ls {
		l.Close()
	}
	// Once the accept loops are gone no connection can appear, so one
	// sweep closes every connection the fast path holds idle; busy ones
	// close themselves after their response.
	s.accepting.Wait()
	s.tlsConns.closeQuiet()

	errc := make(chan error, 2)
	go func() { errc <- s.plain.Shutdown(ctx) }()
	go func() { errc <- s.https.Shutdown(ctx) }()
	fast := make(chan struct{})
	go func() { s.wg.Wait(); close(fast) }()
	var err error
	for range 2 {
		if e := <-errc; err == nil {
			err = e
		}
	}
	if err == nil {
		select {
		case <-fast:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil {
		s.https.Close()
		s.plain.Close()
		s.tlsConns.closeAll()
		s.plainConns.closeAll()
		<-fast
		return fmt.Errorf("httpserver: shutdown: %w", err)
	}
	return nil
}
