package dnsserver

import (
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// TestDNAME: the answers of TestInteropNSDDNAME, written out, for machines
// without NSD; and the fast path, which precomputes negative answers, never
// answers a name below a DNAME itself.
func TestDNAME(t *testing.T) {
	m := testModel(t, dnameTOML(testTOML))
	s := startServer(t, m, Options{})
	dnameOld := "old.chat.example.com. 300 IN DNAME matrix.test."
	matrixNS := []string{"matrix.test. 3600 IN NS ns1.chat.example.com.", "matrix.test. 3600 IN NS ns2.example.net."}
	matrixSOA := "matrix.test. 300 IN SOA ns1.chat.example.com. hostmaster.example.com. 1 7200 3600 1209600 300"
	tooLong := strings.Repeat("d", 60) + "." + strings.Repeat("e", 60) + ".long.chat.example.com."
	cases := []tc{
		// Chased into another zone of ours, with its authority and
		// additional records.
		{Qname: "_Matrix-Fed._tcp.old.chat.example.com.", Qtype: dns.TypeSRV, Rcode: dns.RcodeSuccess, AA: true,
			Answer: []string{dnameOld,
				"_matrix-fed._tcp.old.chat.example.com. 300 IN CNAME _matrix-fed._tcp.matrix.test.",
				"_matrix-fed._tcp.matrix.test. 3600 IN SRV 10 0 443 matrix.test."},
			Ns: matrixNS, Extra: []string{"matrix.test. 3600 IN A 192.0.2.80"}},
		// A CNAME query stops at the synthesised CNAME.
		{Qname: "_matrix-fed._tcp.old.chat.example.com.", Qtype: dns.TypeCNAME, Rcode: dns.RcodeSuccess, AA: true,
			Answer: []string{dnameOld, "_matrix-fed._tcp.old.chat.example.com. 300 IN CNAME _matrix-fed._tcp.matrix.test."}},
		{Qname: "x.old.chat.example.com.", Qtype: dns.TypeA, EDNS: 1232, DO: true, Rcode: dns.RcodeNameError, AA: true,
			Answer: []string{dnameOld, "x.old.chat.example.com. 300 IN CNAME x.matrix.test."}, Ns: []string{matrixSOA}},
		// Out of every zone: the CNAME's TTL is the DNAME's.
		{Qname: "x.away.chat.example.com.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess, AA: true,
			Answer: []string{"away.chat.example.com. 600 IN DNAME example.org.", "x.away.chat.example.com. 600 IN CNAME x.example.org."}},
		{Qname: "x.loopa.chat.example.com.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess, AA: true,
			Answer: []string{"loopa.chat.example.com. 300 IN DNAME loopb.chat.example.com.",
				"x.loopa.chat.example.com. 300 IN CNAME x.loopb.chat.example.com.",
				"loopb.chat.example.com. 300 IN DNAME loopa.chat.example.com.",
				"x.loopb.chat.example.com. 300 IN CNAME x.loopa.chat.example.com."}},
		{Qname: tooLong, Qtype: dns.TypeA, Rcode: dns.RcodeYXDomain, AA: true,
			Answer: []string{"long.chat.example.com. 300 IN DNAME " + strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + ".example.org."}},
		// At the DNAME's own name, data as usual.
		{Qname: "old.chat.example.com.", Qtype: dns.TypeTXT, Rcode: dns.RcodeSuccess, AA: true,
			Answer: []string{`old.chat.example.com. 300 IN TXT "beside the DNAME"`}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}},
		{Qname: "old.chat.example.com.", Qtype: dns.TypeA, Rcode: dns.RcodeSuccess, AA: true, Ns: []string{soaNeg}},
	}
	for _, netw := range []string{"udp", "tcp"} {
		addr := s.udp
		if netw == "tcp" {
			addr = s.tcp
		}
		for _, c := range cases {
			t.Run(netw+" "+c.Qname+" "+dns.TypeToString[c.Qtype], func(t *testing.T) { checkQuery(t, netw, addr, c) })
		}
	}

	// With EDNS, YXDOMAIN says why, as NSD does (checkReply cannot ask
	// for EDE 0).
	q := new(dns.Msg)
	q.SetQuestion(tooLong, dns.TypeA)
	q.SetEdns0(1232, false)
	r := exchange(t, "udp", s.udp, q)
	if o := r.IsEdns0(); r.Rcode != dns.RcodeYXDomain || o == nil || len(o.Option) != 1 ||
		o.Option[0].String() != (&dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeOther, ExtraText: "DNAME expansion became too large"}).String() {
		t.Errorf("YXDOMAIN with EDNS: %v; want EDE 0 (Other) \"DNAME expansion became too large\"", r)
	}

	ix := s.ix.Load()
	for _, name := range []string{"x.old.chat.example.com.", "a.b.old.chat.example.com.", "x.away.chat.example.com.", "x.self.chat.example.com.", tooLong} {
		for _, typ := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeTXT, dns.TypeSRV} {
			for _, v := range variants {
				if checkSame(t, s.Server, ix, rawQueryFor(t, s.Server, 1, name, typ, v)) {
					t.Errorf("fast path answered %s %s, below a DNAME", name, dns.TypeToString[typ])
				}
			}
		}
	}
}

// TestDNAMENoTXTBelow: a name below a DNAME exists only by synthesis, so
// neither signpost's ACME client nor UPDATE may put a TXT record there.
func TestDNAMENoTXTBelow(t *testing.T) {
	text := dnameTOML(testTOML) + fmt.Sprintf(`
[[key]]
name = "hs.example.com"
algorithm = "hmac-sha512"
secret = %q

[[update]]
key = "hs.example.com"
names = ["x.old.chat.example.com"]
`, hsSecret)
	s := startOnePort(t, testModel(t, text), Options{})
	const name = "_acme-challenge.x.old.chat.example.com."
	if err := s.AddTXT(name, "tok"); err == nil {
		t.Errorf("AddTXT below a DNAME succeeded")
	}
	m := newUpdate("chat.example.com.")
	m.Insert([]dns.RR{txtRR(t, name, 60, "tok")})
	expectUpdate(t, s, "udp", m, hs, dns.RcodeRefused, 0)
	if got := s.Serials()["chat.example.com."]; got != 1 {
		t.Errorf("serial %d after refused changes, want 1", got)
	}
}
