package dnsserver

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dev/signpost/config"
	"github.com/signpost-dev/signpost/internal/testenv"
)

// TestReloadUnderLoad swaps between two models while clients query over
// UDP and TCP without pause: every query gets a reply, and every reply is
// exactly one model's answer.
func TestReloadUnderLoad(t *testing.T) {
	// Two clients asking one name without pause from one address are
	// what rate limiting is for; this test is about reloads.
	text := testTOML + "\n[dns.rrl]\nrate = 0\n"
	a := testModel(t, text)
	b := testModel(t, strings.Replace(text, "hs 300 IN A 198.51.100.7", "hs 300 IN A 198.51.100.8", 1))
	s := startServer(t, a, Options{})
	want := map[string]bool{"198.51.100.7": true, "198.51.100.8": true}

	reloadUnderLoad(t, s, a, b, func(netw, addr string, _ int) {
		cl := &dns.Client{Net: netw, Timeout: 5 * time.Second}
		for range 400 {
			q := new(dns.Msg)
			q.SetQuestion("hs.chat.example.com.", dns.TypeA)
			r, _, err := cl.Exchange(q, addr)
			switch {
			case err != nil:
				t.Error(netw + ": lost query: " + err.Error())
			case r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1:
				t.Error(netw + ": bad reply: " + r.String())
			case !want[r.Answer[0].(*dns.A).A.String()]:
				t.Error(netw + ": reply from neither model: " + r.String())
			}
		}
	}, nil)
	// After the last swap, the last model answers.
	s.SetModel(b)
	for _, netw := range []string{"udp", "tcp"} {
		addr := s.udp
		if netw == "tcp" {
			addr = s.tcp
		}
		q := new(dns.Msg)
		q.SetQuestion("hs.chat.example.com.", dns.TypeA)
		r := exchange(t, netw, addr, q)
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "198.51.100.8" {
			t.Errorf("%s after reload: %v", netw, r)
		}
	}
}

// reloadUnderLoad runs client from four goroutines, two over UDP and two
// over TCP (each told its network, the server's address for it and its
// number), and swaps s between models a and b until they are all done,
// calling swapped, if not nil, after each swap with the indexes before and
// after it. It fails t unless there were at least two swaps. Clients
// report their problems with t.Error.
func reloadUnderLoad(t *testing.T, s *testServer, a, b *config.Model, client func(netw, addr string, c int), swapped func(before, after *index)) {
	t.Helper()
	var wg sync.WaitGroup
	for c := range 4 {
		netw, addr := "udp", s.udp
		if c%2 == 1 {
			netw, addr = "tcp", s.tcp
		}
		wg.Go(func() { client(netw, addr, c) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	swaps := 0
	for m := a; ; swaps++ {
		select {
		case <-done:
		default:
			if m == a {
				m = b
			} else {
				m = a
			}
			before := s.ix.Load()
			s.SetModel(m)
			if swapped != nil {
				swapped(before, s.ix.Load())
			}
			continue
		}
		break
	}
	t.Logf("%d reloads during the load", swaps)
	if swaps < 2 {
		t.Errorf("only %d reloads happened during the load", swaps)
	}
}

// TestRecoverServfail breaks an index on purpose: the panic becomes
// SERVFAIL and a log line, on UDP and TCP, and the server keeps serving.
func TestRecoverServfail(t *testing.T) {
	var logs testenv.SyncBuffer
	s := startServer(t, testModel(t, testTOML), Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ix := s.ix.Load()
	// A CNAME RRset with no records cannot come out of config; chasing it
	// indexes past the end.
	ix.zones["chat.example.com."].nodes["www.chat.example.com."].get(dns.TypeCNAME).rrs = nil
	s.ix.Store(ix) // publish the change to the serving goroutines
	for _, netw := range []string{"udp", "tcp"} {
		addr := s.udp
		if netw == "tcp" {
			addr = s.tcp
		}
		q := new(dns.Msg)
		q.SetQuestion("www.chat.example.com.", 65000) // no precomputed answer
		q.RecursionDesired = true
		r := exchange(t, netw, addr, q)
		if r.Rcode != dns.RcodeServerFailure || r.Id != q.Id || !r.RecursionDesired || len(r.Answer)+len(r.Ns)+len(r.Extra) != 0 {
			t.Errorf("%s: %v, want a bare SERVFAIL", netw, r)
		}
		checkQuery(t, netw, addr, lookupCases[0]) // still serving
	}
	if n := strings.Count(logs.String(), "recovered panic"); n != 2 {
		t.Errorf("%d panic log lines, want 2:\n%s", n, logs.String())
	}
}

// TestListenAndServe opens its own SO_REUSEPORT sockets and serves UDP and
// TCP on one port; Shutdown makes it return nil.
func TestListenAndServe(t *testing.T) {
	s := New(Options{UDPReaders: 2})
	s.SetModel(testModel(t, testTOML))
	// A port free for UDP and TCP, as ListenAndServe uses the same port
	// for both and does not say which one it got for :0.
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	errc := make(chan error, 1)
	go func() { errc <- s.ListenAndServe(addr) }()
	cl := &dns.Client{Net: "udp", Timeout: 200 * time.Millisecond}
	q := query(lookupCases[0])
	deadline := time.Now().Add(5 * time.Second)
	for {
		if r, _, err := cl.Exchange(q, addr); err == nil {
			checkReply(t, q, r, lookupCases[0])
			break
		}
		select {
		case err := <-errc:
			t.Fatalf("ListenAndServe: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("ListenAndServe never answered")
		}
	}
	for _, netw := range []string{"udp", "tcp"} {
		for _, c := range lookupCases[:8] {
			checkQuery(t, netw, addr, c)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("ListenAndServe after Shutdown: %v", err)
	}
}

// TestWildcardSocket binds the unspecified address: replies must come from
// the address each query went to (IP_PKTINFO / IPV6_PKTINFO).
func TestWildcardSocket(t *testing.T) {
	for _, bind := range []string{"0.0.0.0:0", "[::]:0"} {
		t.Run(bind, func(t *testing.T) {
			pc, err := net.ListenPacket("udp", bind)
			if err != nil {
				t.Skip(err)
			}
			s := New(Options{})
			s.SetModel(testModel(t, testTOML))
			errc := make(chan error, 1)
			go func() { errc <- s.ServeUDP(pc) }()
			port := pc.LocalAddr().(*net.UDPAddr).Port
			hosts := []string{"127.0.0.1", "127.0.0.2"}
			if bind == "[::]:0" {
				hosts = append(hosts, "::1")
			}
			for _, host := range hosts {
				addr := net.JoinHostPort(host, strconv.Itoa(port))
				// A connected client socket only accepts replies from the
				// address it sent to.
				cl := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
				q := query(lookupCases[0])
				r, _, err := cl.Exchange(q, addr)
				if err != nil {
					t.Errorf("%s: %v", addr, err)
					continue
				}
				checkReply(t, q, r, lookupCases[0])
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}
