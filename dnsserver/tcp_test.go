package dnsserver

import (
	"errors"
	"io"
	"net"
	"os"
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

// TestTCPConnectionLimit: with MaxTCPConns busy connections the next one
// waits, and is served as soon as one closes.
func TestTCPConnectionLimit(t *testing.T) {
	s := startServer(t, testModel(t, testTOML), Options{MaxTCPConns: 2})
	c := lookupCases[0]
	ask := func(dc *dns.Conn) {
		t.Helper()
		q := query(c)
		if err := dc.WriteMsg(q); err != nil {
			t.Fatal(err)
		}
		r, err := dc.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		checkReply(t, q, r, c)
	}
	first, second := dialTCP(t, s.tcp), dialTCP(t, s.tcp)
	ask(first)
	ask(second)
	third := dialTCP(t, s.tcp) // the kernel completes the handshake
	q := query(c)
	if err := third.WriteMsg(q); err != nil {
		t.Fatal(err)
	}
	// Not served while two connections are open. (A slow server can only
	// make this pass, never fail.)
	_ = third.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if r, err := third.ReadMsg(); err == nil {
		t.Fatalf("third connection served while two were open: %v", r)
	}
	_ = first.Close()
	_ = third.SetReadDeadline(time.Now().Add(5 * time.Second))
	r, err := third.ReadMsg()
	if err != nil {
		t.Fatalf("third connection after one closed: %v", err)
	}
	checkReply(t, q, r, c)
}
