package dnsserver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// The TCP transport (RFC 1035 §4.2.2, RFC 7766). Each connection has one
// goroutine that reads whatever the client has sent, answers every whole
// message in it in order, and writes the replies in one go once no further
// whole message is buffered: pipelined queries cost one read and one write
// per batch, not per query. Plain queries are answered from the same
// precomputed replies as UDP wherever those are complete; everything else
// takes the full path, and signed messages, transfers, UPDATE and NOTIFY
// the special path, as over UDP.
//
// No client can lock others out, the way NSD and Knot see to it:
//   - a table of at most MaxTCPConns connections, of which one source
//     address (an IPv6 /64) holds at most MaxTCPConnsPerSource;
//   - a full table does not make a new connection wait: it takes the place
//     of the connection that has waited longest for its next query (or for
//     the rest of one), and is turned away only when every connection is in
//     use: answering (which TCPWriteTimeout bounds) or waiting for less
//     than evictAfter;
//   - a source at its cap makes room among its own connections the same
//     way, so it never pushes out anyone else's;
//   - every wait has a deadline, cut to an eighth while the table is more
//     than half full (NSD cuts its tcp-timeout to 200 ms then), so idle
//     connections give their slots back before the table fills;
//   - every write has a deadline, so a client that sends queries and never
//     reads the replies loses its connection and its buffers.

const (
	// tcpReadBuf is the read buffer of a connection: room for a hundred
	// pipelined queries. A larger message gets a buffer of its own for
	// as long as it is being read.
	tcpReadBuf = 4 << 10
	// tcpReplyBuf is where one reply is built; larger ones are allocated.
	tcpReplyBuf = 4 << 10
	// tcpWriteBuf holds framed replies until they are written: a batch
	// is written when it is answered or when this is full.
	tcpWriteBuf = 8 << 10
	// busyDivisor cuts every wait while more than half the connection
	// slots are taken.
	busyDivisor = 8
	// evictAfter is how long a connection must have waited before another
	// may take its slot. A shorter wait is a client between two batches
	// of pipelined queries, or a message on its way: evicting it would
	// lose the queries in flight (dnsperf -m tcp -c 40 from one address
	// fell from 396k to 9k qps when a source at its cap evicted its own
	// busiest connections), while a connection held to lock others out
	// is old by the time it matters.
	evictAfter = 100 * time.Millisecond
)

// Connection states. A waiting or partial connection may be evicted; a
// busy one is answering and writing, which TCPWriteTimeout bounds.
const (
	connWaiting int32 = iota // nothing buffered: waiting for the next query
	connPartial              // part of a message read, waiting for the rest
	connBusy                 // answering and writing
	connGone                 // evicted or shut down; its goroutine ends
)

// tcpTable is the set of open TCP connections of a Server, over all its
// listeners.
type tcpTable struct {
	mu     sync.Mutex
	conns  []*tcpConn
	perSrc map[netip.Addr]int
	// closing is set by Shutdown: connections end after their current
	// batch of replies.
	closing atomic.Bool
	done    chan struct{} // closed with closing, for the accept loop's pauses
	open    atomic.Int32  // len(conns), for the busy check without the lock
	bufs    sync.Pool     // *tcpBufs
}

// tcpBufs is the working memory of one connection, pooled.
type tcpBufs struct {
	in  [tcpReadBuf]byte
	out []byte
	wb  []byte
	sc  scratch
}

// tcpConn is one client connection.
type tcpConn struct {
	s     *Server
	nc    net.Conn
	raw   *rawTCP // nil: read and write nc itself
	peer  netip.AddrPort
	src   netip.Addr // what MaxTCPConnsPerSource counts
	state atomic.Int32
	since atomic.Int64 // Unix nanoseconds when the current wait began
	pos   int          // index in tcpTable.conns, under its lock; -1 once removed

	bufs    *tcpBufs
	wb      []byte // framed replies not yet written
	werr    error  // the first failed write: the connection is done
	sendMsg func([]byte) error
}

// ServeTCP answers queries on connections accepted from l until Shutdown,
// then returns nil. Queries on one connection are answered in order
// (RFC 7766 §6.2.1.1 pipelining); see Options for the limits that keep
// clients from locking each other out.
func (s *Server) ServeTCP(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = l.Close()
		return nil
	}
	s.listens = append(s.listens, l)
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("dnsserver: serve tcp %s: %w", l.Addr(), err)
			}
			// Out of file descriptors, or a connection reset before we
			// took it: keep serving the connections we have, and try
			// again a little later, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.logger.Warn("dnsserver: accept failed", "listener", l.Addr().String(), "err", err, "retry_seconds", delay.Seconds())
			select {
			case <-time.After(delay):
			case <-s.tcp.done:
			}
			continue
		}
		delay = 0
		if c := s.tcp.admit(s, nc); c != nil {
			s.wg.Add(1) // this loop holds a count, so Shutdown is still waiting
			go c.serve()
		}
	}
}

// sourceKey is what the per-source cap counts: the IPv4 address, or the
// IPv6 /64, which is what one customer of one provider gets.
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// admit adds nc to the table, making room as the package comment says. It
// returns nil if nc was turned away (and closed).
func (t *tcpTable) admit(s *Server, nc net.Conn) *tcpConn {
	peer := addrPort(nc.RemoteAddr())
	c := &tcpConn{s: s, nc: nc, raw: newRawTCP(nc), peer: peer, src: sourceKey(peer.Addr()), pos: -1}
	c.since.Store(time.Now().UnixNano())
	var victims []*tcpConn
	t.mu.Lock()
	ok := !t.closing.Load()
	if ok && t.perSrc[c.src] >= s.opts.MaxTCPConnsPerSource {
		v := t.evict(c.src, true)
		ok = v != nil
		victims = append(victims, v)
	}
	if ok && len(t.conns) >= s.opts.MaxTCPConns {
		v := t.evict(netip.Addr{}, false)
		ok = v != nil
		victims = append(victims, v)
	}
	if ok {
		if t.perSrc == nil {
			t.perSrc = map[netip.Addr]int{}
		}
		c.pos = len(t.conns)
		t.conns = append(t.conns, c)
		t.perSrc[c.src]++
		t.open.Store(int32(len(t.conns)))
	}
	t.mu.Unlock()
	for _, v := range victims {
		if v != nil {
			s.stats.tcpEvicted.Add(1)
			_ = v.nc.Close() // its goroutine sees the error and ends
		}
	}
	if !ok {
		if !t.closing.Load() {
			s.stats.tcpRefused.Add(1)
		}
		if !t.closing.Load() {
			s.logger.Debug("dnsserver: tcp connection turned away: every connection it could replace is in use", "client", peer.String())
		}
		_ = nc.Close()
		return nil
	}
	return c
}

// evict takes the connection (of src only, if bySrc) that has waited
// longest, and at least evictAfter, out of the table and marks it gone;
// the caller closes it. It returns nil if there is none: every candidate
// is answering or in use. t.mu is held.
func (t *tcpTable) evict(src netip.Addr, bySrc bool) *tcpConn {
	oldEnough := time.Now().Add(-evictAfter).UnixNano()
	for range 3 { // a candidate may turn busy under us; look again
		var oldest *tcpConn
		var since int64
		var state int32
		for _, c := range t.conns {
			if bySrc && c.src != src {
				continue
			}
			st := c.state.Load()
			if st != connWaiting && st != connPartial {
				continue
			}
			if ts := c.since.Load(); ts <= oldEnough && (oldest == nil || ts < since) {
				oldest, since, state = c, ts, st
			}
		}
		if oldest == nil {
			return nil
		}
		if oldest.state.CompareAndSwap(state, connGone) {
			t.removeLocked(oldest)
			return oldest
		}
	}
	return nil
}

func (t *tcpTable) removeLocked(c *tcpConn) {
	if c.pos < 0 {
		return
	}
	last := t.conns[len(t.conns)-1]
	t.conns[c.pos] = last
	last.pos = c.pos
	t.conns[len(t.conns)-1] = nil
	t.conns = t.conns[:len(t.conns)-1]
	c.pos = -1
	if t.perSrc[c.src]--; t.perSrc[c.src] <= 0 {
		delete(t.perSrc, c.src)
	}
	t.open.Store(int32(len(t.conns)))
}

func (t *tcpTable) remove(c *tcpConn) {
	t.mu.Lock()
	t.removeLocked(c)
	t.mu.Unlock()
}

// shutdown stops new connections and closes those waiting for a query;
// busy ones end after their current batch. With force it closes every
// connection, busy or not.
func (t *tcpTable) shutdown(force bool) {
	t.mu.Lock()
	if !t.closing.Swap(true) {
		close(t.done)
	}
	var closeNow []net.Conn
	for _, c := range t.conns {
		st := c.state.Load()
		if force || ((st == connWaiting || st == connPartial) && c.state.CompareAndSwap(st, connGone)) {
			closeNow = append(closeNow, c.nc)
		}
	}
	t.mu.Unlock()
	for _, nc := range closeNow {
		_ = nc.Close()
	}
}

// count returns the number of open connections, and of those from src.
func (t *tcpTable) count(src netip.Addr) (all, fromSrc int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns), t.perSrc[sourceKey(src)]
}

// tcpWait is how long a connection may wait for something it owes: d, cut
// to an eighth while more than half the slots are taken.
func (s *Server) tcpWait(d time.Duration) time.Duration {
	if int(s.tcp.open.Load()) > s.opts.MaxTCPConns/2 {
		return d / busyDivisor
	}
	return d
}

// setWait records that c now waits (for a query, or for the rest of one,
// by state) for at most d, and has since the Unix nanoseconds since, and
// sets the read deadline. It returns false if c was evicted meanwhile or
// the server is shutting down.
func (c *tcpConn) setWait(state int32, d time.Duration, since int64) bool {
	c.since.Store(since)
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	if !c.state.CompareAndSwap(connBusy, state) {
		return false
	}
	// Shutdown sets closing before it looks at the states: either it saw
	// this one waiting and closes it, or we see closing here.
	return !c.s.tcp.closing.Load()
}

// serve reads, answers and writes until the client goes, a deadline
// passes, MaxTCPQueries are answered, the connection is evicted or the
// server shuts down.
func (c *tcpConn) serve() {
	s := c.s
	defer s.wg.Done()
	b, _ := s.tcp.bufs.Get().(*tcpBufs)
	if b == nil {
		b = &tcpBufs{out: make([]byte, 0, tcpReplyBuf), wb: make([]byte, 0, tcpWriteBuf)}
	}
	c.bufs, c.wb = b, b.wb[:0]
	c.sendMsg = c.send
	defer func() {
		b.sc.tally.flush(&s.stats, transportTCP) // the batch cut short by MaxTCPQueries or an error
		s.tcp.remove(c)
		_ = c.nc.Close()
		c.bufs = nil
		s.tcp.bufs.Put(b)
	}()

	// admit left the connection waiting for its first query.
	_ = c.nc.SetReadDeadline(time.Now().Add(s.tcpWait(s.opts.TCPReadTimeout)))
	rb := b.in[:]
	r, w := 0, 0
	queries, limit := 0, s.opts.MaxTCPQueries
	for {
		if w == len(rb) || (r > 0 && w-r >= 2 && r+2+int(binary.BigEndian.Uint16(rb[r:])) > len(rb)) {
			// The message being read does not fit where it is: move it
			// to the front, or into a buffer of its own.
			need := tcpReadBuf
			if w-r >= 2 {
				need = max(need, 2+int(binary.BigEndian.Uint16(rb[r:])))
			}
			dst := rb
			if need > len(rb) {
				dst = make([]byte, need)
			}
			w = copy(dst, rb[r:w])
			r, rb = 0, dst
		}
		n, err := c.read(rb[w:])
		if n > 0 {
			was := c.state.Load()
			if was == connGone || !c.state.CompareAndSwap(was, connBusy) {
				return // evicted
			}
			w += n
			ix := s.ix.Load()
			b.sc.now = time.Now() // one clock reading for the cookies of the batch
			answered := 0
			for w-r >= 2 {
				l := int(binary.BigEndian.Uint16(rb[r:]))
				if w-r-2 < l {
					break
				}
				msg := rb[r+2 : r+2+l]
				r += 2 + l
				answered++
				queries++
				c.answer(ix, msg)
				if c.werr != nil || (limit > 0 && queries >= limit) {
					c.flush()
					return
				}
			}
			if r == w {
				r, w = 0, 0
				if len(rb) > tcpReadBuf {
					rb = b.in[:] // a large message is done; back to the small buffer
				}
			}
			// The wait begins before the replies go out, so a client
			// that has its answers sees its connection idle since
			// before it could open another: eviction goes by the order
			// clients see.
			since := time.Now().UnixNano()
			// No further whole message is buffered: send the batch,
			// counted first, so a client that has its replies finds
			// them counted.
			b.sc.tally.flush(&s.stats, transportTCP)
			if c.flush(); c.werr != nil {
				return
			}
			var ok bool
			switch {
			case r == w:
				ok = c.setWait(connWaiting, s.tcpWait(s.opts.TCPIdleTimeout), since)
			case answered > 0 || was == connWaiting:
				// A new message has begun: it has TCPReadTimeout to
				// arrive whole.
				ok = c.setWait(connPartial, s.tcpWait(s.opts.TCPReadTimeout), since)
			default:
				// More of the same message: its deadline stands, so
				// trickling a byte at a time buys nothing.
				ok = c.state.CompareAndSwap(connBusy, connPartial) && !s.tcp.closing.Load()
			}
			if !ok {
				return
			}
		}
		if err != nil {
			return // gone, timed out, evicted or shut down
		}
	}
}

// answer answers one message and queues the reply.
func (c *tcpConn) answer(ix *index, pkt []byte) {
	if len(pkt) == 0 {
		return // nothing to answer, as miekg/dns did
	}
	out := c.s.answerTCP(ix, pkt, c.bufs.out[:0], &c.bufs.sc, c)
	if out != nil {
		_ = c.send(out)
	}
}

// send queues one message for the client, framed, writing what is queued
// first when it would not fit. It returns an error once a write failed.
func (c *tcpConn) send(m []byte) error {
	if c.werr != nil {
		return c.werr
	}
	if len(m) > maxMsgSize {
		return errors.New("dnsserver: tcp message over 65535 bytes") // not framable; never built
	}
	if len(c.wb)+2+len(m) > cap(c.wb) {
		if c.flush(); c.werr != nil {
			return c.werr
		}
		if 2+len(m) > cap(c.wb) {
			// Too large to queue: write it as it is, after its length.
			bufs := net.Buffers{binary.BigEndian.AppendUint16(nil, uint16(len(m))), m}
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.opts.TCPWriteTimeout))
			if _, err := bufs.WriteTo(c.nc); err != nil {
				c.werr = err
			}
			return c.werr
		}
	}
	c.wb = binary.BigEndian.AppendUint16(c.wb, uint16(len(m)))
	c.wb = append(c.wb, m...)
	return nil
}

// flush writes the queued replies.
func (c *tcpConn) flush() {
	if len(c.wb) == 0 || c.werr != nil {
		c.wb = c.wb[:0]
		return
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.opts.TCPWriteTimeout))
	if err := c.write(c.wb); err != nil {
		c.werr = err
	}
	c.wb = c.wb[:0]
}

// answerTCP is the packet edge for one message on a TCP connection: the
// precomputed reply where it is complete (on TCP nothing is cut to a UDP
// size), else the full path, and a recover that turns a bug into SERVFAIL.
// It returns the reply, appended to buf[:0], or nil when there is none or
// the special path has sent its replies through c.
func (s *Server) answerTCP(ix *index, pkt, buf []byte, sc *scratch, c *tcpConn) (out []byte) {
	defer func() {
		if v := recover(); v != nil {
			out = s.recovered(v, pkt, buf[:0])
		}
	}()
	now := sc.clock()
	// Cookies and NSID as over UDP; TCP proves the address, so no rate
	// limiting.
	cl := newSender(c.peer, now, s.edns.Load())
	if out = ix.fast.replyTo(pkt, buf[:0], sc, &cl); out != nil && ix.fast.completeTCP(pkt, out, sc) {
		sc.tally.count(transportTCP, s.stats.edgeZone(sc.zone), sc.qtype, out[3], len(out))
		return out
	}
	if out = s.fullTCP(ix, pkt, buf[:0], c, &cl); out != nil {
		z, qtype := ix.statsZone(&s.stats, pkt)
		sc.tally.count(transportTCP, z, qtype, out[3], len(out))
	}
	return out
}

// fullTCP answers one TCP message on the full path: parse with miekg/dns,
// resolve, pack; drops and FORMERR as handleRaw does over UDP.
func (s *Server) fullTCP(ix *index, pkt, buf []byte, c *tcpConn, cl *sender) []byte {
	if len(pkt) < 12 || pkt[2]&0x80 != 0 {
		return nil // too short to answer, or a response: drop
	}
	if pkt[2]>>3&0xF == dns.OpcodeQuery && !questionComplete(pkt) {
		return formerr(pkt, buf)
	}
	req := new(dns.Msg)
	if err := req.Unpack(pkt); err != nil {
		return formerr(pkt, buf)
	}
	if ix.plain(req) {
		return ix.respondTo(req, true, buf, cl)
	}
	x := &request{ix: ix, req: req, peer: c.peer, tcp: true, send: c.sendMsg, cl: escapes(cl)}
	if req.IsTsig() != nil {
		// Verification rewrites the header in place; the recover above
		// still needs the query's ID.
		x.tsigStatus = dns.TsigVerifyWithProvider(bytes.Clone(pkt), ix.keys, "", false)
	}
	s.special(x)
	return nil
}
