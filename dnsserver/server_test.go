package dnsserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/signpost-dev/signpost/config"
)

// testModel parses testTOML with a fixed clock, so every SOA serial is 1.
func testModel(t testing.TB, toml string) *config.Model {
	t.Helper()
	m, err := config.Parse("test.toml", []byte(toml), config.Options{Now: func() time.Time { return time.Unix(1, 0) }})
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	return m
}

type testServer struct {
	*Server
	udp, tcp string // addresses
}

// startServer binds UDP and TCP on 127.0.0.1:0, serves m and shuts down at
// the end of the test.
func startServer(t testing.TB, m *config.Model, o Options) *testServer {
	t.Helper()
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	s := New(o)
	s.SetModel(m)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	go func() { errs <- s.ServeUDP(pc) }()
	go func() { errs <- s.ServeTCP(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Errorf("Serve: %v", err)
			}
		}
	})
	return &testServer{Server: s, udp: pc.LocalAddr().String(), tcp: l.Addr().String()}
}

// tc is one query and the exact reply expected, in presentation format.
type tc struct {
	Qname string
	Qtype uint16
	// EDNS: 0 sends no OPT; otherwise the advertised UDP size.
	EDNS uint16
	DO   bool
	RD   bool
	Only string // "udp" or "tcp" when the reply differs by transport

	Rcode  int
	AA, TC bool
	// Answer, Ns and Extra list every record, in order; Extra without OPT.
	Answer, Ns, Extra []string
	// NoOPT says the reply carries no OPT even though the query had one.
	NoOPT bool
	EDE   int // expected Extended DNS Error info code, -1 for none
}

const (
	soaNeg = "chat.example.com. 300 IN SOA ns1.chat.example.com. hostmaster.example.com. 1 7200 3600 1209600 300"
	soa    = "chat.example.com. 3600 IN SOA ns1.chat.example.com. hostmaster.example.com. 1 7200 3600 1209600 300"
	ns1A   = "ns1.chat.example.com. 3600 IN A 203.0.113.10"
	ns1AAA = "ns1.chat.example.com. 3600 IN AAAA 2001:db8::10"
	hsA    = "hs.chat.example.com. 300 IN A 198.51.100.7"
	hsAAAA = "hs.chat.example.com. 300 IN AAAA 2001:db8::7"
)

var apexNS = []string{"chat.example.com. 3600 IN NS ns1.chat.example.com.", "chat.example.com. 3600 IN NS ns2.example.net."}

func bigTXT(which string) string {
	return fmt.Sprintf("big.chat.example.com. 300 IN TXT \"%s %s\"", strings.Repeat("0123456789", 20), which)
}

// lookupCases are the behaviours of issue 3, each as an exact reply.
var lookupCases = []tc{
	// Apex: SOA, A, AAAA, NS with glue; every positive answer carries the
	// apex NS and their addresses, as NSD does by default.
	{Qname: "chat.example.com.", Qtype: dns.TypeSOA, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{soa}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}},
	{Qname: "chat.example.com.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{"chat.example.com. 3600 IN A 203.0.113.10"}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}},
	{Qname: "chat.example.com.", Qtype: dns.TypeAAAA, EDNS: 1232, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{"chat.example.com. 3600 IN AAAA 2001:db8::10"}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}},
	{Qname: "chat.example.com.", Qtype: dns.TypeNS, Rcode: dns.RcodeSuccess, AA: true,
		Answer: apexNS, Extra: []string{ns1A, ns1AAA}},
	{Qname: "ns1.chat.example.com.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{ns1A}, Ns: apexNS, Extra: []string{ns1AAA}},
	// The SRV fallback, with its in-zone target's addresses.
	{Qname: "_matrix-fed._tcp.chat.example.com.", Qtype: dns.TypeSRV, EDNS: 1232, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{"_matrix-fed._tcp.chat.example.com. 3600 IN SRV 10 0 8448 hs.chat.example.com."},
		Ns:     apexNS, Extra: []string{hsA, ns1A, hsAAAA, ns1AAA}},
	// _matrix._tcp: a clean NXDOMAIN (its parent _tcp is an empty
	// non-terminal), never SERVFAIL.
	{Qname: "_matrix._tcp.chat.example.com.", Qtype: dns.TypeSRV, Rcode: dns.RcodeNameError, AA: true, Ns: []string{soaNeg}},
	// Empty non-terminals exist: NODATA (RFC 8020).
	{Qname: "_tcp.chat.example.com.", Qtype: dns.TypeSRV, Rcode: dns.RcodeSuccess, AA: true, Ns: []string{soaNeg}},
	{Qname: "b.c.chat.example.com.", Qtype: dns.TypeTXT, Rcode: dns.RcodeSuccess, AA: true, Ns: []string{soaNeg}},
	{Qname: "a.b.c.chat.example.com.", Qtype: dns.TypeTXT, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{`a.b.c.chat.example.com. 300 IN TXT "deep"`}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}},
	// NXDOMAIN and NODATA, SOA TTL min(3600, 300).
	{Qname: "nope.chat.example.com.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, AA: true, Ns: []string{soaNeg}},
	{Qname: "x.y.z.nope.chat.example.com.", Qtype: dns.TypeAAAA, EDNS: 1232, Rcode: dns.RcodeNameError, AA: true, Ns: []string{soaNeg}},
	{Qname: "hs.chat.example.com.", Qtype: dns.TypeTXT, Rcode: dns.RcodeSuccess, AA: true, Ns: []string{soaNeg}},
	{Qname: "foo.ns1.chat.example.com.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, AA: true, Ns: []string{soaNeg}},
	{Qname: "ns1.chat.example.com.", Qtype: dns.TypeTXT, Rcode: dns.RcodeSuccess, AA: true, Ns: []string{soaNeg}},
	{Qname: "chat.example.com.", Qtype: dns.TypeDS, Rcode: dns.RcodeSuccess, AA: true, Ns: []string{soaNeg}},
	// Outside every zone: REFUSED, no AA, no referral to the root.
	{Qname: "example.org.", Qtype: dns.TypeA, Rcode: dns.RcodeRefused},
	{Qname: "example.com.", Qtype: dns.TypeNS, EDNS: 1232, Rcode: dns.RcodeRefused, EDE: 20},
	// CNAMEs: followed inside our zones, not outside; NXDOMAIN when the
	// target is missing (RFC 6604); loops end when a set repeats.
	{Qname: "www.chat.example.com.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{"www.chat.example.com. 300 IN CNAME hs.chat.example.com.", hsA}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}},
	{Qname: "www.chat.example.com.", Qtype: dns.TypeCNAME, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{"www.chat.example.com. 300 IN CNAME hs.chat.example.com."}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}},
	{Qname: "www.chat.example.com.", Qtype: dns.TypeTXT, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{"www.chat.example.com. 300 IN CNAME hs.chat.example.com."}, Ns: []string{soaNeg}},
	{Qname: "ext.chat.example.com.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{"ext.chat.example.com. 300 IN CNAME hs.other.org."}},
	{Qname: "dang.chat.example.com.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, AA: true,
		Answer: []string{"dang.chat.example.com. 300 IN CNAME nope.chat.example.com."}, Ns: []string{soaNeg}},
	{Qname: "loop1.chat.example.com.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{"loop1.chat.example.com. 300 IN CNAME loop2.chat.example.com.", "loop2.chat.example.com. 300 IN CNAME loop1.chat.example.com."}},
	{Qname: "tomatrix.chat.example.com.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{"tomatrix.chat.example.com. 300 IN CNAME matrix.test.", "matrix.test. 3600 IN A 192.0.2.80"},
		Ns:     []string{"matrix.test. 3600 IN NS ns1.chat.example.com.", "matrix.test. 3600 IN NS ns2.example.net."}},
	// Wildcards (RFC 4592): synthesized under the query name; the wildcard's
	// parent is an empty non-terminal that blocks nothing above it.
	{Qname: "x.wild.chat.example.com.", Qtype: dns.TypeTXT, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{`x.wild.chat.example.com. 300 IN TXT "wild"`}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}},
	{Qname: "a.b.wild.chat.example.com.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{"a.b.wild.chat.example.com. 300 IN A 192.0.2.99"}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}},
	{Qname: "x.wild.chat.example.com.", Qtype: dns.TypeAAAA, Rcode: dns.RcodeSuccess, AA: true, Ns: []string{soaNeg}},
	{Qname: "wild.chat.example.com.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess, AA: true, Ns: []string{soaNeg}},
	{Qname: "*.wild.chat.example.com.", Qtype: dns.TypeTXT, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{`*.wild.chat.example.com. 300 IN TXT "wild"`}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}},
	// MX additional processing, including a target that exists only
	// through the wildcard.
	{Qname: "mail.chat.example.com.", Qtype: dns.TypeMX, EDNS: 1232, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{"mail.chat.example.com. 300 IN MX 10 hs.chat.example.com.", "mail.chat.example.com. 300 IN MX 20 mx.wild.chat.example.com."},
		Ns:     apexNS, Extra: []string{hsA, "mx.wild.chat.example.com. 300 IN A 192.0.2.99", ns1A, hsAAAA, ns1AAA}},
	// Delegation: referral without AA, NS in authority, glue in
	// additional; DS at the cut comes from the parent side.
	{Qname: "child.chat.example.com.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
		Ns:    []string{"child.chat.example.com. 300 IN NS ns.child.chat.example.com.", "child.chat.example.com. 300 IN NS ns.elsewhere.org."},
		Extra: []string{"ns.child.chat.example.com. 300 IN A 192.0.2.53"}},
	{Qname: "deep.below.child.chat.example.com.", Qtype: dns.TypeTXT, EDNS: 1232, Rcode: dns.RcodeSuccess,
		Ns:    []string{"child.chat.example.com. 300 IN NS ns.child.chat.example.com.", "child.chat.example.com. 300 IN NS ns.elsewhere.org."},
		Extra: []string{"ns.child.chat.example.com. 300 IN A 192.0.2.53"}},
	{Qname: "ns.child.chat.example.com.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess,
		Ns:    []string{"child.chat.example.com. 300 IN NS ns.child.chat.example.com.", "child.chat.example.com. 300 IN NS ns.elsewhere.org."},
		Extra: []string{"ns.child.chat.example.com. 300 IN A 192.0.2.53"}},
	{Qname: "child.chat.example.com.", Qtype: dns.TypeDS, Rcode: dns.RcodeSuccess, AA: true, Ns: []string{soaNeg}},
	// ANY (RFC 8482): one RRset, chosen as NSD does.
	{Qname: "chat.example.com.", Qtype: dns.TypeANY, Rcode: dns.RcodeSuccess, AA: true, Answer: []string{soa}},
	{Qname: "big.chat.example.com.", Qtype: dns.TypeANY, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{"big.chat.example.com. 300 IN A 192.0.2.1"}},
	{Qname: "www.chat.example.com.", Qtype: dns.TypeANY, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{"www.chat.example.com. 300 IN CNAME hs.chat.example.com."}},
	{Qname: "_tcp.chat.example.com.", Qtype: dns.TypeANY, Rcode: dns.RcodeSuccess, AA: true, Ns: []string{soaNeg}},
	{Qname: "nope.chat.example.com.", Qtype: dns.TypeANY, Rcode: dns.RcodeNameError, AA: true, Ns: []string{soaNeg}},
	// Truncation at an RRset boundary: the TXT set does not fit 512
	// bytes, so TC and an empty answer; TCP and a 1232-byte EDNS buffer
	// get all of it.
	{Qname: "big.chat.example.com.", Qtype: dns.TypeTXT, Only: "udp", Rcode: dns.RcodeSuccess, AA: true, TC: true},
	{Qname: "big.chat.example.com.", Qtype: dns.TypeTXT, EDNS: 512, Only: "udp", Rcode: dns.RcodeSuccess, AA: true, TC: true},
	{Qname: "big.chat.example.com.", Qtype: dns.TypeTXT, EDNS: 700, Only: "udp", Rcode: dns.RcodeSuccess, AA: true, TC: true},
	{Qname: "big.chat.example.com.", Qtype: dns.TypeTXT, Only: "tcp", Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{bigTXT("one"), bigTXT("three"), bigTXT("two")}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}},
	{Qname: "big.chat.example.com.", Qtype: dns.TypeTXT, EDNS: 4096, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{bigTXT("one"), bigTXT("three"), bigTXT("two")}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}},
	// EDNS: DO echoed, RD copied, RA never set.
	{Qname: "hs.chat.example.com.", Qtype: dns.TypeA, EDNS: 1232, DO: true, RD: true, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{hsA}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}},
	{Qname: "nope.chat.example.com.", Qtype: dns.TypeA, EDNS: 1232, DO: true, RD: true, Rcode: dns.RcodeNameError, AA: true, Ns: []string{soaNeg}},
	{Qname: "nope.example.org.", Qtype: dns.TypeA, EDNS: 1232, DO: true, Rcode: dns.RcodeRefused, EDE: 20},
	// A second zone.
	{Qname: "_matrix-fed._tcp.matrix.test.", Qtype: dns.TypeSRV, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{"_matrix-fed._tcp.matrix.test. 3600 IN SRV 10 0 443 matrix.test."},
		Ns:     []string{"matrix.test. 3600 IN NS ns1.chat.example.com.", "matrix.test. 3600 IN NS ns2.example.net."},
		Extra:  []string{"matrix.test. 3600 IN A 192.0.2.80"}},
	{Qname: "nothing.matrix.test.", Qtype: dns.TypeSRV, Rcode: dns.RcodeNameError, AA: true,
		Ns: []string{"matrix.test. 300 IN SOA ns1.chat.example.com. hostmaster.example.com. 1 7200 3600 1209600 300"}},
	// AXFR is TCP only: over UDP NOTIMP, as from NSD and Knot. Over TCP,
	// with no secondary configured, REFUSED.
	{Qname: "chat.example.com.", Qtype: dns.TypeAXFR, Only: "udp", Rcode: dns.RcodeNotImplemented},
	{Qname: "chat.example.com.", Qtype: dns.TypeAXFR, Only: "tcp", Rcode: dns.RcodeRefused},
	{Qname: "chat.example.com.", Qtype: dns.TypeAXFR, EDNS: 1232, Only: "tcp", Rcode: dns.RcodeRefused, EDE: edeProhibited},
}

func TestLookup(t *testing.T) {
	s := startServer(t, testModel(t, testTOML), Options{})
	for _, c := range lookupCases {
		for _, netw := range []string{"udp", "tcp"} {
			if c.Only != "" && c.Only != netw {
				continue
			}
			name := fmt.Sprintf("%s/%s/%s/edns=%d", netw, c.Qname, dns.TypeToString[c.Qtype], c.EDNS)
			t.Run(name, func(t *testing.T) {
				addr := s.udp
				if netw == "tcp" {
					addr = s.tcp
				}
				checkQuery(t, netw, addr, c)
				// The same query in mixed case gets the same answer, with
				// the question echoed as sent (0x20).
				mixed := c
				mixed.Qname = mixCase(c.Qname)
				checkQuery(t, netw, addr, mixed)
			})
		}
	}
}

// mixCase upper-cases every other letter.
func mixCase(s string) string {
	b := []byte(s)
	for i := range b {
		if i%2 == 0 && 'a' <= b[i] && b[i] <= 'z' {
			b[i] -= 'a' - 'A'
		}
	}
	return string(b)
}

func query(c tc) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(c.Qname, c.Qtype)
	m.RecursionDesired = c.RD
	if c.EDNS != 0 {
		m.SetEdns0(c.EDNS, c.DO)
	}
	return m
}

func exchange(t testing.TB, netw, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	cl := &dns.Client{Net: netw, Timeout: 5 * time.Second, UDPSize: 65535}
	r, _, err := cl.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", netw, m.Question[0].Name, dns.TypeToString[m.Question[0].Qtype], err)
	}
	return r
}

func checkQuery(t *testing.T, netw, addr string, c tc) {
	t.Helper()
	q := query(c)
	r := exchange(t, netw, addr, q)
	checkReply(t, q, r, c)
}

// checkReply compares everything in r with c: header bits, question (case
// included), every record in every section, and the OPT record.
func checkReply(t testing.TB, q, r *dns.Msg, c tc) {
	t.Helper()
	if r.Id != q.Id {
		t.Errorf("id %d, want %d", r.Id, q.Id)
	}
	if !r.Response || r.Opcode != dns.OpcodeQuery || r.RecursionAvailable || r.Zero || r.AuthenticatedData || r.CheckingDisabled {
		t.Errorf("header %+v: want QR, opcode QUERY, no RA/Z/AD/CD", r.MsgHdr)
	}
	if r.Rcode != c.Rcode {
		t.Errorf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[c.Rcode])
	}
	if r.Authoritative != c.AA {
		t.Errorf("AA %v, want %v", r.Authoritative, c.AA)
	}
	if r.Truncated != c.TC {
		t.Errorf("TC %v, want %v", r.Truncated, c.TC)
	}
	if r.RecursionDesired != c.RD {
		t.Errorf("RD %v, want %v (copied from the query)", r.RecursionDesired, c.RD)
	}
	wantQ := q.Question
	if qc := q.Question[0].Qclass; c.Rcode == dns.RcodeRefused && qc != dns.ClassINET && qc != dns.ClassCHAOS && qc != dns.ClassANY {
		wantQ = nil
	}
	if fmt.Sprint(r.Question) != fmt.Sprint(wantQ) {
		t.Errorf("question %v, want %v exactly as sent", r.Question, wantQ)
	}
	compareSection(t, "answer", r.Answer, c.Answer)
	compareSection(t, "authority", r.Ns, c.Ns)
	var extra []dns.RR
	var opt *dns.OPT
	for _, rr := range r.Extra {
		if o, ok := rr.(*dns.OPT); ok {
			if opt != nil {
				t.Errorf("two OPT records")
			}
			opt = o
			continue
		}
		extra = append(extra, rr)
	}
	compareSection(t, "additional", extra, c.Extra)
	if len(r.Extra) > 0 && r.Extra[len(r.Extra)-1] != dns.RR(opt) && opt != nil {
		t.Errorf("OPT is not the last record")
	}
	switch {
	case c.EDNS == 0 || c.NoOPT:
		if opt != nil {
			t.Errorf("reply has OPT %v, want none", opt)
		}
	case opt == nil:
		t.Errorf("reply has no OPT, want one")
	default:
		if opt.UDPSize() != 1232 || opt.Version() != 0 || opt.Do() != c.DO || opt.Hdr.Name != "." {
			t.Errorf("OPT %v: want udp 1232, version 0, DO %v", opt, c.DO)
		}
		ede := -1
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok && ede == -1 {
				ede = int(e.InfoCode)
				continue
			}
			t.Errorf("unexpected EDNS option %v", o)
		}
		want := c.EDE
		if want == 0 {
			want = -1
		}
		if ede != want {
			t.Errorf("EDE %d, want %d", ede, want)
		}
	}
}

// compareSection compares records by their presentation, names in any case:
// names compressed against the question read back in the client's case.
func compareSection(t testing.TB, name string, got []dns.RR, want []string) {
	t.Helper()
	var g, w []string
	for _, rr := range got {
		g = append(g, strings.ToLower(rr.String()))
	}
	for _, s := range want {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("bad expectation %q: %v", s, err)
		}
		w = append(w, strings.ToLower(rr.String()))
	}
	if strings.Join(g, "\n") != strings.Join(w, "\n") {
		t.Errorf("%s section:\n got: %s\nwant: %s", name, strings.Join(g, "\n      "), strings.Join(w, "\n      "))
	}
}
