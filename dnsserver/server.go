// Package dnsserver is signpost's authoritative DNS server. It answers from
// the zones of a *config.Model snapshot, over UDP and TCP, the way NSD
// answers from the same zone file, and it holds the TXT records that ACME
// DNS-01 challenges put under _acme-challenge.<name>, whether from
// signpost's own ACME client (AddTXT) or from a homeserver's by RFC 2136
// UPDATE signed with TSIG.
//
// It is a hidden primary for secondaries: it serves zone transfers (AXFR,
// and IXFR answered in full) over TCP to the addresses and TSIG keys the
// model allows, sends them NOTIFY whenever a zone's serial changes, and
// keeps every serial strictly increasing across reloads, dynamic changes and
// (through Options.OnSerials and config.Options.Floor) restarts.
//
// Each SetModel (and each TXT change) builds an immutable index, including
// the packed reply to every common question, and swaps it in atomically, so
// a reload never drops or mixes up a query. The UDP hot path reads and
// writes packets in batches and answers most queries by copying a
// precomputed reply; everything else takes the full path through
// github.com/miekg/dns. TCP (tcp.go) answers from the same precomputed
// replies, batches pipelined queries, and keeps any one client from
// locking the others out.
//
// dnsserver imports config and no other signpost package.
package dnsserver

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dev/signpost/config"
)

// Options configure a Server. The zero value of every field is usable.
type Options struct {
	// Logger receives a line, with the stack, for each recovered panic.
	// If nil, logs are discarded.
	Logger *slog.Logger
	// TCPReadTimeout bounds the wait for the first query on a new TCP
	// connection, and for the rest of any message once its first bytes
	// have come; 2s if zero. It is what keeps a client that opens
	// connections and sends nothing, or half a message, from holding them.
	TCPReadTimeout time.Duration
	// TCPIdleTimeout bounds the wait for each further query on a TCP
	// connection (RFC 7766 §6.2.3); 10s if zero. While more than half of
	// MaxTCPConns are open, this wait and TCPReadTimeout's are cut to an
	// eighth (NSD cuts its tcp-timeout to 200 ms when half full), so idle
	// connections give their slots back before the table fills.
	TCPIdleTimeout time.Duration
	// TCPWriteTimeout bounds each write of replies to a TCP connection;
	// 2s if zero. A client that sends queries and does not read the
	// replies loses its connection, and its buffers, when it runs out.
	TCPWriteTimeout time.Duration
	// MaxTCPConns bounds the TCP connections open at once, over all
	// listeners; 1024 if zero. A new connection never waits for a slot:
	// when all are taken it takes the slot of the connection that has
	// waited longest for its next query (or for the rest of one), and is
	// closed at once only if every connection is in use: answering, or
	// waiting for less than a tenth of a second. An idle connection costs
	// about 20 KiB, buffers and goroutine (measured with 600 open), so a
	// full default table takes some 20 MiB of a small VPS; NSD keeps 100,
	// Knot half the file descriptor limit.
	MaxTCPConns int
	// MaxTCPConnsPerSource bounds the TCP connections from one IPv4
	// address or IPv6 /64; 32 if zero, no bound of its own if negative.
	// A source at its bound makes room among its own connections, as
	// above, and never pushes out anyone else's. RFC 7766 §6.2.2 asks a
	// client for one connection to a server; 32 leaves room for many
	// clients behind one NAT, while one host takes at most 1/32 of the
	// default table.
	MaxTCPConnsPerSource int
	// MaxTCPQueries bounds the queries answered on one TCP connection,
	// which is closed after the last; no bound if zero or negative, as in
	// NSD (tcp-query-count 0) and Knot. A bound costs every query a
	// client has in flight when it is reached: dnsperf -m tcp lost them
	// and fell from 377k to 5k qps with a bound of 1000.
	MaxTCPQueries int
	// UDPReaders is the number of goroutines reading each UDP socket given
	// to ServeUDP, and of SO_REUSEPORT sockets ListenAndServe opens;
	// GOMAXPROCS if zero.
	UDPReaders int

	// NotifyTries is how often a NOTIFY is sent to a secondary that does
	// not answer it; 5 if zero.
	NotifyTries int
	// NotifyTimeout is how long each NOTIFY waits for its reply; 2s if
	// zero.
	NotifyTimeout time.Duration
	// NotifyRetryDelay is the pause after the first unanswered NOTIFY,
	// doubled after each further one; 1s if zero.
	NotifyRetryDelay time.Duration
	// OnSerials, if set, is called with the serial of every zone served
	// since New (the catalog zone included) whenever one of them changes:
	// a reload, an ACME TXT change, an UPDATE. It runs before the new
	// serials are served, one call at a time and in order; the map is the
	// callee's to keep. It must not call back into the Server. Persist the
	// map and pass it as config.Options.Floor after a restart, and no
	// secondary ever sees a serial go backwards.
	OnSerials func(serials map[string]uint32)
	// Now is the clock signatures are dated by; time.Now if nil.
	Now func() time.Time
}

// Server answers DNS queries from the current model. Its methods are safe
// for concurrent use.
type Server struct {
	opts   Options
	logger *slog.Logger
	ix     atomic.Pointer[index]

	buildMu sync.Mutex // serialises index builds, so the newest always wins
	model   *config.Model
	txt     map[string][]string  // ACME DNS-01 values by owner name
	upd     map[string]*updSet   // records written by UPDATE, by owner name
	zstate  map[string]zoneState // by origin: every zone served since New
	signer  *signer
	// resignStop ends the loop that refreshes signatures, which closes
	// resignDone; nil until SetKeys first has keys.
	resignStop, resignDone chan struct{}
	notify                 *notifier

	// EDNS options and rate limiting (cookie.go, rrl.go): the current
	// model's settings, and state that outlives reloads.
	edns         atomic.Pointer[ednsConf]
	randomSecret [16]byte // the cookie secret when the model sets none
	rrl          *rrl

	stats dnsStats // see stats.go

	mu      sync.Mutex
	closed  bool
	conns   []net.PacketConn
	listens []net.Listener // TCP
	tcp     tcpTable
	wg      sync.WaitGroup
}

// New returns a Server with no zones: until SetModel it refuses every
// query.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.TCPReadTimeout <= 0 {
		o.TCPReadTimeout = 2 * time.Second
	}
	if o.TCPIdleTimeout <= 0 {
		o.TCPIdleTimeout = 10 * time.Second
	}
	if o.TCPWriteTimeout <= 0 {
		o.TCPWriteTimeout = 2 * time.Second
	}
	if o.MaxTCPConns <= 0 {
		o.MaxTCPConns = 1024
	}
	switch {
	case o.MaxTCPConnsPerSource == 0:
		o.MaxTCPConnsPerSource = 32
	case o.MaxTCPConnsPerSource < 0:
		o.MaxTCPConnsPerSource = o.MaxTCPConns
	}
	if o.UDPReaders <= 0 {
		o.UDPReaders = runtime.GOMAXPROCS(0)
	}
	if o.NotifyTries <= 0 {
		o.NotifyTries = 5
	}
	if o.NotifyTimeout <= 0 {
		o.NotifyTimeout = 2 * time.Second
	}
	if o.NotifyRetryDelay <= 0 {
		o.NotifyRetryDelay = time.Second
	}
	s := &Server{opts: o, logger: o.Logger, txt: map[string][]string{}, upd: map[string]*updSet{}, zstate: map[string]zoneState{}}
	s.tcp.done = make(chan struct{})
	s.signer = newSigner(o.Now)
	s.notify = newNotifier(o, o.Logger)
	s.notify.stats = &s.stats
	s.ix.Store(buildIndex(nil, nil, nil, nil, nil, &s.stats))
	_, _ = rand.Read(s.randomSecret[:]) // never fails (crypto/rand)
	s.edns.Store(newEDNSConf(&config.DNS{}, s.randomSecret))
	s.rrl = newRRL()
	return s
}

// SetModel makes the server answer from m. Queries in flight finish with the
// model they started with; the next ones see m. Records written by UPDATE
// stay where m's [[update]] policies still allow them; zones whose content
// changed get a serial above the one served before, and their secondaries a
// NOTIFY.
func (s *Server) SetModel(m *config.Model) {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	s.model = m
	s.edns.Store(newEDNSConf(&m.DNS, s.randomSecret))
	s.rrl.configure(m.DNS.RRL)
	s.keepAllowedUpdates()
	s.rebuild()
}

// SetKeys gives the server the DNSSEC keys of the zones it signs, by
// origin (lower case, fully qualified), replacing those given before; they
// are used from the next SetModel on, so a reload that brings new keys
// builds the zones once. A zone whose configuration asks for DNSSEC is
// served unsigned until it has keys. Zones whose keys changed are signed
// again, with a new serial and a NOTIFY to their secondaries.
//
// From the first call with keys, the server looks every hour for
// signatures that have less than 7 days to run, and signs those zones
// again, until Shutdown.
func (s *Server) SetKeys(keys map[string][]ZoneKey) {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	s.signer.setKeys(keys)
	if len(keys) > 0 && s.resignStop == nil {
		s.resignStop = make(chan struct{})
		s.resignDone = make(chan struct{})
		go s.resignLoop(s.resignStop, s.resignDone)
	}
}

func (s *Server) resignLoop(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(resignPeriod)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.resign()
		}
	}
}

// resign signs again every signed zone with signatures due for refresh,
// which serves it with a new serial and NOTIFYs its secondaries.
func (s *Server) resign() {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	due := false
	for _, z := range s.ix.Load().zones {
		if z.signed && s.signer.due(z) {
			s.signer.bump(z.origin)
			due = true
		}
	}
	if due {
		s.rebuild()
	}
}

// AddTXT publishes a TXT record with value at name, next to any values
// already there (a certificate for example.com and *.example.com needs two
// under one name). name must be inside a zone of the current model, not at a
// CNAME and not below a delegation. Adding a value that is already there
// does nothing.
func (s *Server) AddTXT(name, value string) error {
	name, err := txtName(name, value)
	if err != nil {
		return err
	}
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	var z *zone
	if s.model != nil {
		if mz := s.model.ZoneFor(name); mz != nil {
			z = s.ix.Load().zones[mz.Origin]
		}
	}
	if z == nil {
		return fmt.Errorf("dnsserver: add TXT %s: outside every zone served", name)
	}
	if !z.txtAllowed(name) {
		return fmt.Errorf("dnsserver: add TXT %s: the name is a CNAME or below a delegation in zone %s, so a TXT record there would not be served", name, z.origin)
	}
	if slices.Contains(s.txt[name], value) {
		return nil
	}
	s.txt[name] = append(slices.Clip(s.txt[name]), value)
	s.rebuild()
	return nil
}

// RemoveTXT withdraws one value added with AddTXT; other values at the name
// stay. Removing a value that is not there does nothing.
func (s *Server) RemoveTXT(name, value string) error {
	name, err := txtName(name, value)
	if err != nil {
		return err
	}
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	i := slices.Index(s.txt[name], value)
	if i < 0 {
		return nil
	}
	s.txt[name] = slices.Delete(slices.Clone(s.txt[name]), i, i+1)
	if len(s.txt[name]) == 0 {
		delete(s.txt, name)
	}
	s.rebuild()
	return nil
}

func txtName(name, value string) (string, error) {
	if _, ok := dns.IsDomainName(name); !ok || name == "" {
		return "", fmt.Errorf("dnsserver: TXT owner %q is not a domain name", name)
	}
	if len(value) > 255 {
		return "", fmt.Errorf("dnsserver: TXT value for %s is %d bytes; one string holds at most 255", name, len(value))
	}
	return lower(dns.Fqdn(name)), nil
}

// handleRaw answers one UDP packet on the full path: parse with miekg/dns,
// resolve, pack. from says who sent it (nil if unknown: no COOKIE or NSID
// in the reply). It returns nil to drop the packet.
func (s *Server) handleRaw(ix *index, pkt, buf []byte, from peer) []byte {
	if from == nil {
		return s.handleRawFrom(ix, pkt, buf, nil, nil)
	}
	cl := newSender(from.addrPort(), time.Now(), s.edns.Load())
	return s.handleRawFrom(ix, pkt, buf, from, &cl)
}

// handleRawFrom is handleRaw with the sender described for cookies; cl is
// nil when from is.
func (s *Server) handleRawFrom(ix *index, pkt, buf []byte, from peer, cl *sender) []byte {
	if len(pkt) < 12 || pkt[2]&0x80 != 0 {
		return nil // too short to answer, or a response: drop
	}
	if pkt[2]>>3&0xF == dns.OpcodeQuery && !questionComplete(pkt) {
		return formerr(pkt, buf) // miekg/dns would read a cut-off question as type 0 class 0
	}
	req := new(dns.Msg)
	if err := req.Unpack(pkt); err != nil {
		return formerr(pkt, buf)
	}
	if ix.plain(req) {
		return ix.respondTo(req, false, buf, cl)
	}
	return s.handleSpecialUDP(ix, *req, pkt, buf, from, cl)
}

// handleSpecialUDP takes the message by value so that the common path of
// handleRaw keeps its dns.Msg on the stack.
func (s *Server) handleSpecialUDP(ix *index, req dns.Msg, pkt, buf []byte, from peer, cl *sender) []byte {
	x := &request{ix: ix, req: &req, cl: escapes(cl)}
	if from != nil {
		x.peer = from.addrPort()
	}
	if req.IsTsig() != nil {
		// Verification rewrites the header in place; req is parsed already.
		x.tsigStatus = dns.TsigVerifyWithProvider(pkt, ix.keys, "", false)
	}
	var out []byte
	x.send = func(b []byte) error { out = append(buf[:0], b...); return nil }
	s.special(x)
	return out
}

// peer is the sender of a UDP packet, read only when the full path needs it.
type peer interface{ addrPort() netip.AddrPort }

// addrPort returns a's address with IPv4-mapped IPv6 addresses unmapped.
func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// recovered logs a panic caught while answering pkt and returns SERVFAIL.
func (s *Server) recovered(v any, pkt, buf []byte) []byte {
	s.logger.Error("dnsserver: recovered panic answering query", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	if len(pkt) < 12 {
		return nil
	}
	return servfail(uint16(pkt[0])<<8|uint16(pkt[1]), int(pkt[2]>>3&0xF), pkt[2]&1 != 0, buf)
}

// questionComplete says whether the question section of a query with one
// question holds a whole name, type and class.
func questionComplete(pkt []byte) bool {
	if pkt[4] != 0 || pkt[5] != 1 {
		return true // respond rejects it
	}
	off := 12
	for off < len(pkt) {
		switch l := int(pkt[off]); {
		case l == 0:
			return off+1+4 <= len(pkt)
		case l&0xC0 == 0xC0:
			return off+2+4 <= len(pkt)
		default:
			off += 1 + l
		}
	}
	return false
}

// formerr is the reply to a query that does not parse: the header only,
// with the ID, opcode and RD of the query, as NSD sends; RD too is dropped
// when there is more than one question.
func formerr(pkt, buf []byte) []byte {
	out := append(buf[:0], make([]byte, 12)...)
	copy(out, pkt[:2])
	out[2] = 0x80 | pkt[2]&0x79 // QR, opcode, RD
	if pkt[4] != 0 || pkt[5] > 1 {
		out[2] &^= 0x01
	}
	out[3] = dns.RcodeFormatError
	if op := pkt[2] >> 3 & 0xF; op != dns.OpcodeQuery && op != dns.OpcodeUpdate {
		out[3] = dns.RcodeNotImplemented
	}
	return out
}

// ServeUDP answers queries arriving on pc until Shutdown, then returns nil.
func (s *Server) ServeUDP(pc net.PacketConn) error {
	if !s.track(pc) {
		_ = pc.Close()
		return nil
	}
	defer s.wg.Done()
	return s.serveUDP(pc, s.opts.UDPReaders)
}

func (s *Server) serveUDP(pc net.PacketConn, readers int) error {
	errs := make(chan error, readers)
	for range readers {
		go func() { errs <- s.udpReader(pc) }()
	}
	var first error
	for range readers {
		if err := <-errs; err != nil && first == nil && !s.isClosed() {
			first = err
			_ = pc.Close() // the other readers stop too
		}
	}
	if first != nil {
		return fmt.Errorf("dnsserver: serve udp %s: %w", pc.LocalAddr(), first)
	}
	return nil
}

// ListenAndServe opens addr (host:port) for UDP and TCP and serves it until
// Shutdown, then returns nil; it returns an error if it cannot listen, or
// when a socket fails. On Linux it opens one SO_REUSEPORT UDP socket per
// reader (Options.UDPReaders) so the kernel spreads queries over the cores.
func (s *Server) ListenAndServe(addr string) error {
	pcs, l, err := listenBoth(addr, s.opts.UDPReaders)
	if err != nil {
		return err
	}
	errs := make(chan error, len(pcs)+1)
	for _, pc := range pcs {
		go func() {
			if !s.track(pc) {
				_ = pc.Close()
				errs <- nil
				return
			}
			defer s.wg.Done()
			errs <- s.serveUDP(pc, 1)
		}()
	}
	go func() { errs <- s.ServeTCP(l) }()
	var first error
	for range len(pcs) + 1 {
		if err := <-errs; err != nil && first == nil {
			// One socket failing stops this address, so the caller hears
			// of it now, not at Shutdown.
			first = err
			for _, pc := range pcs {
				_ = pc.Close()
			}
			_ = l.Close()
		}
	}
	return first
}

// listenBoth opens n UDP sockets and a TCP listener on one port. When addr
// asks for any port (:0), the port the kernel gives UDP may be taken for
// TCP; then it tries again.
func listenBoth(addr string, n int) ([]net.PacketConn, net.Listener, error) {
	_, port, _ := net.SplitHostPort(addr)
	for attempt := 0; ; attempt++ {
		pcs, err := ListenUDP(addr, n)
		if err != nil {
			return nil, nil, fmt.Errorf("dnsserver: listen udp %s: %w", addr, err)
		}
		l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", pcs[0].LocalAddr().String())
		if err == nil {
			return pcs, l, nil
		}
		for _, pc := range pcs {
			_ = pc.Close()
		}
		if port != "0" || attempt == 10 {
			return nil, nil, fmt.Errorf("dnsserver: listen tcp %s: %w", addr, err)
		}
	}
}

// track registers pc for Shutdown; false means the server is already shut
// down.
func (s *Server) track(pc net.PacketConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns = append(s.conns, pc)
	s.wg.Add(1)
	return true
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Shutdown stops every Serve call: UDP sockets close at once, TCP listeners
// stop accepting and open connections get until ctx is done to finish their
// current query (a zone transfer included). NOTIFYs still being retried are
// abandoned. It returns ctx's error if that came first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns, listens := s.conns, s.listens
	s.mu.Unlock()
	var errs []error
	s.buildMu.Lock()
	resignStop, resignDone := s.resignStop, s.resignDone
	s.buildMu.Unlock()
	if resignStop != nil {
		close(resignStop)
		<-resignDone
	}
	s.notify.stop()
	for _, pc := range conns {
		_ = pc.Close()
	}
	for _, l := range listens {
		_ = l.Close()
	}
	s.tcp.shutdown(false)
	done := make(chan struct{})
	go func() { s.wg.Wait(); s.notify.wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
		s.tcp.shutdown(true) // the goroutines end; the caller need not wait
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dnsserver: shutdown: %w", err)
	}
	return nil
}

// escapes returns a copy of cl (nil if nil) for a request, which outlives
// the call: cl itself then stays on the caller's stack, and the fast and
// plain paths do not allocate.
func escapes(cl *sender) *sender {
	if cl == nil {
		return nil
	}
	c := *cl
	return &c
}
