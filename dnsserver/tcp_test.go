package dnsserver

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func dialTCP(t *testing.T, addr string) *dns.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return &dns.Conn{Conn: c}
}

// TestTCPPipelining sends several queries before reading any reply
// (RFC 7766 §6.2.1.1); each gets its own reply, in order.
func TestTCPPipelining(t *testing.T) {
	s := startServer(t, testModel(t, testTOML), Options{})
	dc := dialTCP(t, s.tcp)
	cases := []tc{lookupCases[0], lookupCases[5], lookupCases[6], lookupCases[10], lookupCases[31]}
	var qs []*dns.Msg
	for i, c := range cases {
		q := query(c)
		q.Id = uint16(100 + i)
		qs = append(qs, q)
		if err := dc.WriteMsg(q); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cases {
		r, err := dc.ReadMsg()
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		checkReply(t, qs[i], r, c)
	}
}

// expectClosed reads from c and requires the server to close it.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	_, err := c.Read(b[:])
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("server kept the connection open")
		}
		var ne *net.OpError
		if !errors.As(err, &ne) { // a reset also closes it
			t.Fatalf("read: %v, want the server to close the connection", err)
		}
	}
}

// TestTCPTimeouts: a connection that sends half a length prefix, or goes
// quiet after a query, is closed by the server.
func TestTCPTimeouts(t *testing.T) {
	s := startServer(t, testModel(t, testTOML), Options{TCPReadTimeout: 100 * time.Millisecond, TCPIdleTimeout: 100 * time.Millisecond})
	t.Run("half length prefix", func(t *testing.T) {
		dc := dialTCP(t, s.tcp)
		if _, err := dc.Conn.Write([]byte{0}); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, dc.Conn)
	})
	t.Run("length prefix but no message", func(t *testing.T) {
		dc := dialTCP(t, s.tcp)
		if _, err := dc.Conn.Write([]byte{0, 40, 1, 2}); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, dc.Conn)
	})
	t.Run("idle after a query", func(t *testing.T) {
		dc := dialTCP(t, s.tcp)
		q := query(lookupCases[0])
		if err := dc.WriteMsg(q); err != nil {
			t.Fatal(err)
		}
		r, err := dc.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		checkReply(t, q, r, lookupCases[0])
		expectClosed(t, dc.Conn)
	})
}

// dialFrom opens a TCP connection to addr from the loopback address local
// ("" for any), closed at the end of the test.
func dialFrom(t testing.TB, addr, local string) net.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// ask sends c's query on conn and checks the reply exactly, within d.
func ask(t testing.TB, conn net.Conn, c tc, d time.Duration) {
	t.Helper()
	_ = conn.SetDeadline(time.Now().Add(d))
	dc := &dns.Conn{Conn: conn}
	q := query(c)
	if err := dc.WriteMsg(q); err != nil {
		t.Fatalf("write: %v", err)
	}
	r, err := dc.ReadMsg()
	if err != nil {
		t.Fatalf("no reply within %v: %v", d, err)
	}
	checkReply(t, q, r, c)
}

// frame appends m to stream with its length prefix (RFC 1035 §4.2.2).
func frame(t testing.TB, stream []byte, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	stream = binary.BigEndian.AppendUint16(stream, uint16(len(b)))
	return append(stream, b...)
}

// TestTCPPipelinedExact writes every lookup case with a TCP answer three
// times (plain, with RD, in mixed case), and a query padded to several
// times the connection's read buffer, as one stream before reading
// anything: every reply comes back in order and exact.
func TestTCPPipelinedExact(t *testing.T) {
	s := startServer(t, testModel(t, testTOML), Options{})
	var stream []byte
	var qs []*dns.Msg
	var want []tc
	add := func(q *dns.Msg, c tc) {
		q.Id = uint16(len(qs) + 1)
		stream = frame(t, stream, q)
		qs = append(qs, q)
		want = append(want, c)
	}
	for round := range 3 {
		for _, c := range lookupCases {
			if c.Only == "udp" {
				continue
			}
			c.RD = round == 1
			q := query(c)
			if round == 2 {
				q.Question[0].Name = mixCase(q.Question[0].Name)
			}
			add(q, c)
			if len(qs) == 20 {
				// The padding option is ignored; the query takes the
				// full path and a read buffer of its own.
				big := lookupCases[2]
				q := query(big)
				q.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_PADDING{Padding: make([]byte, 3*tcpReadBuf)}}
				add(q, big)
			}
		}
	}
	conn := dialFrom(t, s.tcp, "")
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	werr := make(chan error, 1)
	go func() { _, err := conn.Write(stream); werr <- err }()
	dc := &dns.Conn{Conn: conn}
	for i := range qs {
		r, err := dc.ReadMsg()
		if err != nil {
			t.Fatalf("reply %d of %d: %v", i, len(qs), err)
		}
		checkReply(t, qs[i], r, want[i])
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
}

// TestTCPFastPathSameBytes: over TCP, a precomputed reply is served only
// where it is the full path's reply byte for byte (nothing cut to a UDP
// limit), for every precomputed question in every variant and for random
// names; the common ones take the fast path.
func TestTCPFastPathSameBytes(t *testing.T) {
	// mx.drop.test's answer fits 512 bytes, its targets' addresses do not:
	// the plain reply leaves them out without TC.
	var drop strings.Builder
	drop.WriteString("\n[[zone]]\norigin = \"drop.test\"\nrecords = [\n")
	for i := range 10 {
		fmt.Fprintf(&drop, "  \"mx 300 IN MX %d host%d\",\n  \"host%d 300 IN A 192.0.2.%d\",\n  \"host%d 300 IN AAAA 2001:db8::%d\",\n", i, i, i, i, i, i)
	}
	drop.WriteString("]\n")
	s := New(Options{})
	// NSID and a fixed cookie secret: the options go into TCP replies too.
	conf := strings.Replace(testTOML, "[dns]", "[dns]\nnsid = \"ns-test\"\ncookie_secret = \"8f3cf0f4c1a2b3d4e5f60718293a4b5c\"", 1)
	s.SetModel(testModel(t, conf+drop.String()))
	if err := s.AddTXT("_acme-challenge.chat.example.com.", "token-one"); err != nil {
		t.Fatal(err)
	}
	ix := s.ix.Load()
	// Queries come from testAddr at testNow, so that cookies compare.
	c := &tcpConn{s: s, peer: netip.AddrPortFrom(testAddr, 5353)}
	sc := scratch{now: time.Unix(int64(testNow), 0)}
	// check compares answerTCP with the full path and says whether the
	// precomputed reply was used.
	check := func(pkt []byte) bool {
		t.Helper()
		got := s.answerTCP(ix, pkt, make([]byte, 0, 4096), &sc, c)
		cl := testSender(s)
		want := s.fullTCP(ix, pkt, make([]byte, 0, 4096), c, &cl)
		if !bytes.Equal(got, want) {
			var gm, wm dns.Msg
			_ = gm.Unpack(got)
			_ = wm.Unpack(want)
			t.Errorf("TCP answer differs from the full path for %x\ngot:\n%v\nfull:\n%v", pkt, &gm, &wm)
		}
		cl = testSender(s)
		fast := ix.fast.replyTo(pkt, make([]byte, 0, 4096), &sc, &cl)
		return fast != nil && ix.fast.completeTCP(pkt, fast, &sc)
	}
	id := uint16(1)
	hits, incomplete := 0, 0
	for key, e := range repliesOf(ix.fast) {
		name, _, err := dns.UnpackDomainName([]byte(key), 0)
		if err != nil {
			t.Fatal(err)
		}
		qtype := binary.BigEndian.Uint16([]byte(key[len(key)-2:]))
		for _, v := range variants {
			id++
			hit := check(rawQueryFor(t, s, id, name, qtype, v))
			complete := e.has(entryPlainComplete)
			if v.edns != 0 {
				complete = e.has(entryEDNSComplete)
			}
			switch {
			case hit:
				hits++
			case !complete:
				incomplete++
			case v.edns == 0 || v.edns >= 1232:
				t.Errorf("%s %s %+v took the full path; its precomputed reply is complete", name, dns.TypeToString[qtype], v)
			}
		}
	}
	if incomplete == 0 {
		t.Errorf("no precomputed reply was incomplete; the test zone should have one (big.chat.example.com TXT)")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	labels := []string{"x", "nope", "ns1", "_tcp", "wild", "b", "c", "child", "hs", "www", "big"}
	suffixes := []string{"chat.example.com.", "matrix.test.", "example.org.", "b.c.chat.example.com.", "_tcp.chat.example.com."}
	qtypes := []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypeTXT, dns.TypeNS, dns.TypeSOA, dns.TypeANY, 65000}
	for range 3000 {
		name := suffixes[rng.IntN(len(suffixes))]
		for range rng.IntN(3) {
			name = labels[rng.IntN(len(labels))] + "." + name
		}
		id++
		if check(rawQueryFor(t, s, id, name, qtypes[rng.IntN(len(qtypes))], variants[rng.IntN(len(variants))])) {
			hits++
		}
	}
	t.Logf("%d fast answers, %d precomputed replies left for the full path as incomplete", hits, incomplete)
}

// TestTCPAnswerNoAlloc pins answering a pipelined query on a connection
// (precomputed reply, framed into the write buffer) at zero allocations.
func TestTCPAnswerNoAlloc(t *testing.T) {
	s := New(Options{})
	s.SetModel(testModel(t, testTOML))
	ix := s.ix.Load()
	c := newBenchConn(s)
	for _, q := range benchMix(t) {
		if allocs := testing.AllocsPerRun(100, func() {
			c.wb = c.wb[:0]
			c.answer(ix, q)
		}); allocs != 0 {
			t.Errorf("%d allocations for %x, want 0", int(allocs), q)
		}
		if len(c.wb) < 2+12 || int(binary.BigEndian.Uint16(c.wb)) != len(c.wb)-2 {
			t.Errorf("write buffer %x: want one framed reply", c.wb)
		}
	}
}

// newBenchConn is a connection with its buffers and no socket: enough to
// answer into the write buffer.
func newBenchConn(s *Server) *tcpConn {
	b := &tcpBufs{out: make([]byte, 0, tcpReplyBuf), wb: make([]byte, 0, tcpWriteBuf)}
	c := &tcpConn{s: s, bufs: b, wb: b.wb}
	c.sendMsg = c.send
	return c
}

// TestTCPWriteTimeout: a client that pipelines queries for a large answer
// and never reads is closed once a write has waited TCPWriteTimeout, and
// leaves the connection table.
func TestTCPWriteTimeout(t *testing.T) {
	s := startServer(t, testModel(t, testTOML), Options{TCPWriteTimeout: 200 * time.Millisecond, MaxTCPQueries: -1})
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		// A small receive window, so the server's writes block soon.
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", s.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var chunk []byte
	for range 100 {
		chunk = frame(t, chunk, query(tc{Qname: "big.chat.example.com.", Qtype: dns.TypeTXT}))
	}
	_ = conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	for {
		if _, err = conn.Write(chunk); err != nil {
			break
		}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server still held the connection after 30 s")
	}
	// The server closed with our queries unread: a reset, seen by the
	// write. It leaves the table before it closes.
	if all, _ := s.Server.tcp.count(netip.Addr{}); all != 0 {
		t.Errorf("%d connections in the table, want 0", all)
	}
}

// holder is one of the connections a client holds open against the
// server: fresh (connected, nothing sent), idle (one query answered, then
// nothing) or stalled (one query answered, then half a message).
func holder(t testing.TB, addr, local string, kind int) (net.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", addr)
	if err != nil || kind == 0 {
		return c, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	dc := &dns.Conn{Conn: c}
	if err := dc.WriteMsg(query(lookupCases[0])); err != nil {
		return c, err
	}
	if _, err := dc.ReadMsg(); err != nil {
		return c, err
	}
	if kind == 2 {
		_, err = c.Write([]byte{0, 40, 0x12, 0x34, 0x01, 0x00})
	}
	return c, err
}

// TestTCPNoLockout is issue 10's bar: with 600 connections held open from
// 20 source addresses (fresh, idle and stalled ones), a new client's query
// is answered within 1 s, a secondary's AXFR succeeds, and 1000 UDP
// queries are all answered; both with room in the table and with the table
// full (every new connection then evicts the one idle longest).
func TestTCPNoLockout(t *testing.T) {
	for _, tt := range []struct {
		name      string
		max, held int
	}{
		{"under the cap", 0, 600},
		{"over the cap", 300, 300},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sink := startNotifySink(t, 0)
			// The UDP client below asks 1000 questions at once from
			// 127.0.0.1, as no resolver would: exempt it from rate
			// limiting, which stays on.
			m := testModel(t, secondaryTOML(sink.addr)+"\n[dns.rrl]\nexempt = [\"127.0.0.1/32\"]\n")
			// Long waits, so the held connections stay held while we
			// look (the busy cut makes them 7.5 s).
			s := startOnePort(t, m, Options{MaxTCPConns: tt.max, TCPReadTimeout: time.Minute, TCPIdleTimeout: time.Minute})
			var mu sync.Mutex
			var held []net.Conn
			t.Cleanup(func() {
				for _, c := range held {
					_ = c.Close()
				}
			})
			var wg sync.WaitGroup
			errs := make(chan error, 600)
			for src := range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					local := fmt.Sprintf("127.0.0.%d", src+2)
					for i := range 30 {
						c, err := holder(t, s.tcp, local, i%3)
						if c != nil {
							mu.Lock()
							held = append(held, c)
							mu.Unlock()
						}
						if err != nil && tt.max == 0 {
							// Over the cap, holders are turned away
							// while the others are in use: that is the
							// point. Under it, none may be.
							errs <- fmt.Errorf("holder %s #%d: %w", local, i, err)
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			// Fresh connections are admitted when the server accepts
			// them, a moment after the client's dial returns.
			deadline := time.Now().Add(10 * time.Second)
			for {
				all, _ := s.Server.tcp.count(netip.Addr{})
				if all == tt.held {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("server holds %d connections, want %d", all, tt.held)
				}
				time.Sleep(5 * time.Millisecond)
			}
			// Held connections are old by the time anyone needs their
			// slots; the table never evicts one just used.
			time.Sleep(evictAfter)

			for range 5 {
				start := time.Now()
				c := dialFrom(t, s.tcp, "")
				ask(t, c, lookupCases[0], time.Second-time.Since(start))
				_ = c.Close()
			}
			got, _ := axfrRecords(t, s.tcp, "", axfrQuery("chat.example.com."))
			want := zoneText(t, m.Zones[0], 1)
			want = append(want, want[0])
			if !slices.Equal(got, want) {
				t.Errorf("AXFR under load:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			udpAll(t, s.udp, 1000)
			if all, _ := s.Server.tcp.count(netip.Addr{}); all > s.opts.MaxTCPConns {
				t.Errorf("%d connections open, over the cap of %d", all, s.opts.MaxTCPConns)
			}
		})
	}
}

// udpAll sends n queries over UDP, 100 at a time, and requires every one
// answered exactly.
func udpAll(t testing.TB, addr string, n int) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := lookupCases[0]
	buf := make([]byte, 4096)
	for base := 0; base < n; base += 100 {
		qs := map[uint16]*dns.Msg{}
		for i := base; i < min(base+100, n); i++ {
			q := query(want)
			q.Id = uint16(i)
			b, err := q.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(b); err != nil {
				t.Fatal(err)
			}
			qs[q.Id] = q
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for len(qs) > 0 {
			k, err := c.Read(buf)
			if err != nil {
				t.Fatalf("UDP: %d of %d queries unanswered: %v", len(qs), n, err)
			}
			var r dns.Msg
			if err := r.Unpack(buf[:k]); err != nil {
				t.Fatal(err)
			}
			q := qs[r.Id]
			if q == nil {
				t.Fatalf("UDP reply with ID %d twice or unasked", r.Id)
			}
			delete(qs, r.Id)
			checkReply(t, q, &r, want)
		}
	}
}

// settle waits until no connection of s is busy answering: a client has
// its reply a moment before the server marks the connection waiting, and
// only waiting connections are evicted.
func settle(t testing.TB, s *Server) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		busy := 0
		s.tcp.mu.Lock()
		for _, c := range s.tcp.conns {
			if c.state.Load() == connBusy {
				busy++
			}
		}
		s.tcp.mu.Unlock()
		if busy == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still busy after 5 s", busy)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestTCPPerSourceCap: one source never holds more than
// MaxTCPConnsPerSource connections; its newest connection takes the place
// of its own connection idle longest, and another source's is untouched.
func TestTCPPerSourceCap(t *testing.T) {
	s := startServer(t, testModel(t, testTOML), Options{MaxTCPConnsPerSource: 3})
	c := lookupCases[0]
	other := dialFrom(t, s.tcp, "127.0.0.3")
	ask(t, other, c, 5*time.Second)
	settle(t, s.Server)
	time.Sleep(evictAfter)
	var conns []net.Conn
	for i := range 10 {
		conn := dialFrom(t, s.tcp, "127.0.0.2")
		ask(t, conn, c, 5*time.Second) // answered, so admitted
		settle(t, s.Server)
		time.Sleep(evictAfter) // so it may be evicted: idle, not between queries
		conns = append(conns, conn)
		all, fromSrc := s.Server.tcp.count(netip.MustParseAddr("127.0.0.2"))
		if want := min(i+1, 3); fromSrc != want || all != want+1 {
			t.Errorf("after %d connections from 127.0.0.2: %d open from it, %d in all; want %d and %d", i+1, fromSrc, all, want, want+1)
		}
	}
	for _, conn := range conns[:7] {
		expectClosed(t, conn)
	}
	for _, conn := range conns[7:] {
		ask(t, conn, c, 5*time.Second)
	}
	ask(t, other, c, 5*time.Second)
}

// TestTCPEvictsLongestIdle: with MaxTCPConns open, a new connection is
// served at once, in the place of the connection idle longest.
func TestTCPEvictsLongestIdle(t *testing.T) {
	s := startServer(t, testModel(t, testTOML), Options{MaxTCPConns: 2})
	c := lookupCases[0]
	first, second := dialFrom(t, s.tcp, ""), dialFrom(t, s.tcp, "")
	ask(t, first, c, 5*time.Second)
	settle(t, s.Server)
	ask(t, second, c, 5*time.Second)
	settle(t, s.Server)
	time.Sleep(evictAfter) // idle now, not between two queries
	third := dialFrom(t, s.tcp, "")
	ask(t, third, c, 5*time.Second)
	expectClosed(t, first)
	ask(t, second, c, 5*time.Second)
	ask(t, third, c, 5*time.Second)
}

// TestTCPEvictChoice: eviction takes the connection that has waited
// longest, of the source if asked, waiting or stalled mid-message; never
// one answering, nor one that has waited less than evictAfter (a client
// between two batches of queries).
func TestTCPEvictChoice(t *testing.T) {
	now := time.Now()
	a2, a3 := netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	var tab tcpTable
	add := func(src netip.Addr, state int32, waited time.Duration) *tcpConn {
		c := &tcpConn{src: src, pos: len(tab.conns)}
		c.state.Store(state)
		c.since.Store(now.Add(-waited).UnixNano())
		tab.conns = append(tab.conns, c)
		if tab.perSrc == nil {
			tab.perSrc = map[netip.Addr]int{}
		}
		tab.perSrc[src]++
		return c
	}
	busy := add(a2, connBusy, time.Hour)
	recent := add(a2, connWaiting, evictAfter/10)
	stalled := add(a2, connPartial, 2*time.Second)
	idle := add(a2, connWaiting, time.Second)
	other := add(a3, connWaiting, time.Minute)
	for _, step := range []struct {
		src  netip.Addr
		all  bool
		want *tcpConn
	}{
		{a2, false, stalled},
		{netip.Addr{}, true, other},
		{a2, false, idle},
		{a2, false, nil}, // only busy and recent ones left
		{netip.Addr{}, true, nil},
	} {
		got := tab.evict(step.src, !step.all)
		if got != step.want {
			t.Fatalf("evict(%v, all %v) took %p, want %p", step.src, step.all, got, step.want)
		}
		if got != nil && (got.state.Load() != connGone || got.pos != -1) {
			t.Errorf("evicted connection: state %d, pos %d; want gone and out of the table", got.state.Load(), got.pos)
		}
	}
	if len(tab.conns) != 2 || tab.perSrc[a2] != 2 || tab.perSrc[a3] != 0 {
		t.Errorf("table left with %d connections, %d from %v, %d from %v; want busy and recent only", len(tab.conns), tab.perSrc[a2], a2, tab.perSrc[a3], a3)
	}
	_, _ = busy, recent
}

// TestTCPBusyWait: waits are cut to an eighth once more than half the
// slots are taken.
func TestTCPBusyWait(t *testing.T) {
	s := New(Options{MaxTCPConns: 10})
	for _, c := range []struct {
		open int32
		want time.Duration
	}{{0, 8 * time.Second}, {5, 8 * time.Second}, {6, time.Second}, {10, time.Second}} {
		s.tcp.open.Store(c.open)
		if got := s.tcpWait(8 * time.Second); got != c.want {
			t.Errorf("with %d of 10 open: wait %v, want %v", c.open, got, c.want)
		}
	}
}

// BenchmarkTCPAnswer measures the server's work per pipelined query on a
// connection, socket aside: answer and frame into the write buffer.
func BenchmarkTCPAnswer(b *testing.B) {
	s := New(Options{})
	s.SetModel(testModel(b, testTOML))
	ix := s.ix.Load()
	c := newBenchConn(s)
	qs := benchMix(b)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if len(c.wb) > tcpWriteBuf/2 {
			c.wb = c.wb[:0]
		}
		c.answer(ix, qs[i%len(qs)])
	}
}

// BenchmarkTCPPipelined sends the benchmark mix over one loopback
// connection, 64 queries written before their replies are read. allocs/op
// counts the whole process, server included, per query.
func BenchmarkTCPPipelined(b *testing.B) {
	s := startServer(b, testModel(b, testTOML), Options{MaxTCPQueries: -1})
	conn := dialFrom(b, s.tcp, "")
	const n = 64
	qs := benchMix(b)
	var batchBytes []byte
	for i := range n {
		q := qs[i%len(qs)]
		batchBytes = binary.BigEndian.AppendUint16(batchBytes, uint16(len(q)))
		batchBytes = append(batchBytes, q...)
	}
	rbuf := make([]byte, 1<<16)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += n {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(batchBytes); err != nil {
			b.Fatal(err)
		}
		// Read until n whole replies have come.
		got, have, off := 0, 0, 0
		for got < n {
			k, err := conn.Read(rbuf[have:])
			if err != nil {
				b.Fatal(err)
			}
			have += k
			for have-off >= 2 {
				l := int(binary.BigEndian.Uint16(rbuf[off:]))
				if have-off-2 < l {
					break
				}
				off += 2 + l
				got++
			}
			if off == have {
				off, have = 0, 0
			} else if have > len(rbuf)/2 {
				have = copy(rbuf, rbuf[off:have])
				off = 0
			}
		}
	}
}

// TestTCPMaxQueries: with MaxTCPQueries 3, three pipelined queries of five
// are answered, exactly and in order, and the connection is closed.
func TestTCPMaxQueries(t *testing.T) {
	s := startServer(t, testModel(t, testTOML), Options{MaxTCPQueries: 3})
	var stream []byte
	var qs []*dns.Msg
	for i := range 5 {
		q := query(lookupCases[i])
		q.Id = uint16(i + 1)
		stream = frame(t, stream, q)
		qs = append(qs, q)
	}
	conn := dialFrom(t, s.tcp, "")
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(stream); err != nil {
		t.Fatal(err)
	}
	dc := &dns.Conn{Conn: conn}
	for i := range 3 {
		r, err := dc.ReadMsg()
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		checkReply(t, qs[i], r, lookupCases[i])
	}
	expectClosed(t, conn)
}

// TestTCPShutdownFinishesTransfer: Shutdown stops accepting at once, lets
// an AXFR that is being written finish, closes idle connections, and
// returns when the transfer is done.
func TestTCPShutdownFinishesTransfer(t *testing.T) {
	var big strings.Builder
	big.WriteString("\n[[zone]]\norigin = \"big.test\"\nrecords = [\n")
	for i := range 3000 {
		fmt.Fprintf(&big, "  \"r%04d 300 IN TXT \\\"%s\\\"\",\n", i, strings.Repeat("x", 200))
	}
	big.WriteString("]\n")
	m := testModel(t, secondaryTOML(startNotifySink(t, 0).addr)+big.String())
	s := New(Options{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	s.SetModel(m)
	// Small socket buffers on both ends (accepted sockets inherit the
	// listener's) keep the server writing the transfer until we read it.
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096) })
	}}
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.ServeTCP(l) }()
	addr := l.Addr().String()

	idle := dialFrom(t, addr, "")
	ask(t, idle, lookupCases[0], 5*time.Second)
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	raw, _ := signedQuery(t, axfrQuery("big.test."), xfrKey, dns.HmacSHA256, xfrSecret, 0)
	dc := &dns.Conn{Conn: conn}
	if _, err := dc.Write(raw); err != nil {
		t.Fatal(err)
	}
	first, err := readRaw(dc)
	if err != nil {
		t.Fatal(err)
	}
	if first.Rcode != dns.RcodeSuccess || len(first.Answer) == 0 {
		t.Fatalf("first transfer message: %v", first)
	}

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	expectClosed(t, idle)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("a new connection was accepted after Shutdown began")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) before the transfer was read", err)
	default:
	}
	// The rest of the transfer arrives, SOA last.
	records := len(first.Answer)
	for {
		r, err := readRaw(dc)
		if err != nil {
			t.Fatalf("after %d records: %v", records, err)
		}
		records += len(r.Answer)
		if r.Answer[len(r.Answer)-1].Header().Rrtype == dns.TypeSOA {
			break
		}
	}
	if want := 3000 + 4; records != want { // SOA, NS ×2, the records, SOA
		t.Errorf("%d records transferred, want %d", records, want)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("ServeTCP: %v", err)
	}
}

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":            "192.0.2.7",
		"::ffff:192.0.2.7":     "192.0.2.7",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::",
		"2001:db8:1:2:ffff::1": "2001:db8:1:2::",
		"2001:db8:1:3::1":      "2001:db8:1:3::",
		"fe80::1%eth0":         "fe80::",
	} {
		if got := sourceKey(netip.MustParseAddr(in)); got != netip.MustParseAddr(want) {
			t.Errorf("sourceKey(%s) = %s, want %s", in, got, want)
		}
	}
}

// readRaw reads one message without checking its TSIG.
func readRaw(dc *dns.Conn) (*dns.Msg, error) {
	buf := make([]byte, dns.MaxMsgSize)
	n, err := dc.Read(buf)
	if err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	return m, m.Unpack(buf[:n])
}
