package dnsserver

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/signpost-dev/signpost/config"
)

// startNSD loads the zones of m, as `signpost zone` prints them, into NSD on
// a loopback port and returns its address, with RRL off: Debian's NSD
// rate-limits by default, which drops the repeated answers a comparison
// needs. It skips the test when nsd is not installed (Debian package nsd).
func startNSD(t testing.TB, m *config.Model) string {
	t.Helper()
	return startNSDWith(t, m, "  rrl-ratelimit: 0\n")
}

// interopQueries are sent to NSD and signpost alike. They include every
// lookup case and then the protocol corner cases.
func interopQueries() []*dns.Msg {
	var qs []*dns.Msg
	for _, c := range lookupCases {
		qs = append(qs, query(c))
		c.Qname = mixCase(c.Qname)
		c.RD = !c.RD
		qs = append(qs, query(c))
	}
	// Class ANY (255), which NSD answers from its class IN data, and the
	// DO bit, which validating resolvers set on every query.
	for _, c := range lookupCases {
		q := query(c)
		q.Question[0].Qclass = dns.ClassANY
		qs = append(qs, q)
		if c.EDNS == 0 {
			c.EDNS = 1232
		}
		c.DO = true
		qs = append(qs, query(c))
	}
	badvers := new(dns.Msg)
	badvers.SetQuestion("hs.chat.example.com.", dns.TypeA)
	badvers.SetEdns0(1232, false)
	badvers.IsEdns0().SetVersion(1)
	smallEDNS := new(dns.Msg)
	smallEDNS.SetQuestion("_matrix-fed._tcp.chat.example.com.", dns.TypeSRV)
	smallEDNS.SetEdns0(100, false) // below 512: treated as 512
	cd := new(dns.Msg)
	cd.SetQuestion("hs.chat.example.com.", dns.TypeAAAA)
	cd.CheckingDisabled, cd.AuthenticatedData = true, true
	chaos := new(dns.Msg)
	chaos.SetQuestion("chat.example.com.", dns.TypeSOA)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	chaos.SetEdns0(1232, false)
	hesiod := chaos.Copy()
	hesiod.Question[0].Qclass = dns.ClassHESIOD
	return append(qs, badvers, smallEDNS, cd, chaos, hesiod)
}

// TestInteropNSD sends the same queries to NSD and to signpost, both serving
// the zones `signpost zone` prints, and requires the same replies byte for
// byte, except for compression around SRV targets (see compareNSD).
func TestInteropNSD(t *testing.T) {
	m := testModel(t, testTOML)
	nsd := startNSD(t, m)
	s := startServer(t, m, Options{UDPReaders: 1}) // in order, for rawExchange
	qs := interopQueries()
	if len(qs) < 40 {
		t.Fatalf("only %d queries; the issue asks for at least 40", len(qs))
	}
	compareNSD(t, s, nsd, qs)
	// Raw packets NSD and we both reject.
	for _, tc := range rawCases {
		if tc.nsdDiffers {
			continue
		}
		want := rawExchange(t, nsd, tc.pkt)
		got := rawExchange(t, s.udp, tc.pkt)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: signpost %x, nsd %x", tc.name, got, want)
		}
	}
}

// compareNSD sends each query to signpost and to NSD over UDP and TCP and
// requires the same bytes back, or the same records where holdsUncompressed
// says compression may differ.
func compareNSD(t *testing.T, s *testServer, nsd string, qs []*dns.Msg) {
	t.Helper()
	compareNSDMasked(t, s, nsd, qs, nil)
}

// compareNSDMasked is compareNSD with every reply first passed through
// mask (if not nil), which sets aside what may rightly differ.
func compareNSDMasked(t *testing.T, s *testServer, nsd string, qs []*dns.Msg, mask func(who string, raw []byte) []byte) {
	t.Helper()
	for _, netw := range []string{"udp", "tcp"} {
		for _, q := range qs {
			raw, err := q.Pack()
			if err != nil {
				t.Fatal(err)
			}
			var got, want []byte
			if netw == "udp" {
				got, want = udpExchange(t, s.udp, raw), udpExchange(t, nsd, raw)
			} else {
				one := func(int, *dns.Msg) bool { return true }
				got, want = tcpExchange(t, s.tcp, "", raw, one)[0], tcpExchange(t, nsd, "", raw, one)[0]
			}
			if mask != nil {
				got, want = mask("signpost", got), mask("nsd", want)
			}
			if bytes.Equal(got, want) {
				continue
			}
			qq := q.Question[0]
			what := fmt.Sprintf("%s %s %s %s", netw, qq.Name, dns.ClassToString[qq.Qclass], dns.TypeToString[qq.Qtype])
			r := unpack(t, got)
			if g, w := normalize(r), normalize(unpack(t, want)); g != w {
				t.Errorf("%s: replies differ\nsignpost:\n%s\nnsd:\n%s", what, g, w)
			} else if !holdsUncompressed(r) {
				t.Errorf("%s: same records, other bytes\nsignpost %x\nnsd      %x", what, got, want)
			}
		}
	}
}

// holdsUncompressed says whether m has an SRV, DNAME, NSEC or RRSIG
// record. Their target, next or signer names are never compressed (RFC
// 2782, RFC 6672 §2.5, RFC 4034 §4.1.1, §3.1.7), and NSD then points no
// later name into them; miekg/dns does, so the same records come out a few
// bytes shorter.
func holdsUncompressed(m *dns.Msg) bool {
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			switch rr.Header().Rrtype {
			case dns.TypeSRV, dns.TypeDNAME, dns.TypeNSEC, dns.TypeRRSIG:
				return true
			}
		}
	}
	return false
}

// normalize prints a reply with the records of each section sorted and
// names in lower case (both servers compress against the question, whose
// case the client chose), keeping the question exactly as it came back.
func normalize(r *dns.Msg) string {
	var b strings.Builder
	h := r.MsgHdr
	rcode := h.Rcode
	h.Rcode = 0
	fmt.Fprintf(&b, "%s rcode=%s\n", h.String(), dns.RcodeToString[rcode])
	for _, q := range r.Question {
		fmt.Fprintf(&b, "question %s %s %s\n", q.Name, dns.ClassToString[q.Qclass], dns.TypeToString[q.Qtype])
	}
	for i, sec := range [][]dns.RR{r.Answer, r.Ns, r.Extra} {
		var lines []string
		for _, rr := range sec {
			lines = append(lines, strings.ToLower(rr.String()))
		}
		slices.Sort(lines)
		for _, l := range lines {
			fmt.Fprintf(&b, "%d %s\n", i, l)
		}
	}
	return b.String()
}

// dnameTOML is base (testTOML, or a text built on it) with DNAMEs of every
// kind: into another zone served here, out of every zone, into its own zone
// (to a name that exists and to one behind a CNAME), two that loop, and one
// whose target is long enough for a synthesised name to pass 255 octets.
func dnameTOML(base string) string {
	long := strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + ".example.org."
	return strings.Replace(base, "records = [\n", `records = [
  "old 300 IN DNAME matrix.test.",
  "away 600 IN DNAME example.org.",
  "self 300 IN DNAME hs.chat.example.com.",
  "tocname 300 IN DNAME www.chat.example.com.",
  "loopa 300 IN DNAME loopb.chat.example.com.",
  "loopb 300 IN DNAME loopa.chat.example.com.",
  "old 300 IN TXT \"beside the DNAME\"",
  "long 300 IN DNAME `+long+`",
`, 1)
}

// TestInteropNSDDNAME: DNAME synthesis (RFC 6672) as NSD does it, byte
// for byte: the DNAME, a CNAME with its TTL, the chase into our zones with
// its negative answers and additional records, no chase for CNAME queries,
// loops, YXDOMAIN with NSD's EDE when the name grows too long, and plain
// answers at the DNAME's own name; over UDP and TCP, with and without
// EDNS, DO and class ANY.
func TestInteropNSDDNAME(t *testing.T) {
	m := testModel(t, dnameTOML(testTOML))
	nsd := startNSD(t, m)
	s := startServer(t, m, Options{UDPReaders: 1})
	tooLong := strings.Repeat("d", 60) + "." + strings.Repeat("e", 60) + ".long.chat.example.com."
	var qs []*dns.Msg
	for _, c := range []struct {
		name  string
		types []uint16
	}{
		{"_matrix-fed._tcp.old.chat.example.com.", []uint16{dns.TypeSRV, dns.TypeCNAME, dns.TypeANY, dns.TypeA, dns.TypeDNAME}},
		{"x.old.chat.example.com.", []uint16{dns.TypeA, dns.TypeDS, dns.TypeTXT}},
		{"old.chat.example.com.", []uint16{dns.TypeA, dns.TypeDNAME, dns.TypeTXT, dns.TypeANY}},
		{"x.away.chat.example.com.", []uint16{dns.TypeA, dns.TypeCNAME}},
		{"y.x.self.chat.example.com.", []uint16{dns.TypeA}},
		{"x.tocname.chat.example.com.", []uint16{dns.TypeA}},
		{"x.loopa.chat.example.com.", []uint16{dns.TypeA, dns.TypeCNAME}},
		{"a.long.chat.example.com.", []uint16{dns.TypeA}},
		{tooLong, []uint16{dns.TypeA}},
	} {
		for _, typ := range c.types {
			for i, v := range []struct {
				edns      uint16
				do        bool
				classANY  bool
				mixedCase bool
			}{{}, {edns: 1232}, {edns: 1232, do: true, mixedCase: true}, {edns: 1232, classANY: true}} {
				name := c.name
				if v.mixedCase {
					name = mixCase(name)
				}
				q := query(tc{Qname: name, Qtype: typ, EDNS: v.edns, DO: v.do, RD: i%2 == 0})
				if v.classANY {
					q.Question[0].Qclass = dns.ClassANY
				}
				qs = append(qs, q)
			}
		}
	}
	compareNSD(t, s, nsd, qs)
}

// TestInteropNSDCookies sends every lookup case with a DNS cookie (a
// client cookie alone, and with a stale server cookie) to NSD with
// answer-cookie on and to signpost, both keyed with one cookie secret. RFC
// 9018 server cookies are interoperable, so each server's cookie must
// verify under that secret at the timestamp it carries; with the 16 bytes
// of timestamp and hash set aside, the replies must be the same bytes.
func TestInteropNSDCookies(t *testing.T) {
	const secret = "8f3cf0f4c1a2b3d4e5f60718293a4b5c"
	m := testModel(t, strings.Replace(testTOML, "[dns]", "[dns]\ncookie_secret = \""+secret+"\"", 1))
	nsd := startNSDWith(t, m, "  rrl-ratelimit: 0\n  answer-cookie: yes\n  cookie-secret: \""+secret+"\"\n")
	s := startServer(t, m, Options{UDPReaders: 1})
	client := []byte("\x01\x02\x03\x04\x05\x06\x07\x08")
	stale := append(slices.Clone(client), "\x01\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09"...)
	var qs []*dns.Msg
	for _, in := range [][]byte{client, stale} {
		for _, c := range lookupCases {
			if c.EDNS == 0 {
				c.EDNS = 1232
			}
			q := query(c)
			q.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: fmt.Sprintf("%x", in)}}
			qs = append(qs, q)
		}
	}
	loopback := netip.MustParseAddr("127.0.0.1")
	// mask checks the server cookie in reply r (raw) and zeroes its
	// timestamp and hash.
	mask := func(who string, raw []byte) []byte {
		t.Helper()
		i := bytes.Index(raw, append(slices.Clone(client), 1, 0, 0, 0))
		if i < 0 || i+24 > len(raw) {
			t.Errorf("%s: no server cookie in reply %x", who, raw)
			return raw
		}
		got := raw[i : i+24]
		var fresh [24]byte
		ts := binary.BigEndian.Uint32(got[12:])
		if !s.Server.edns.Load().cookie(&fresh, got, loopback, ts) {
			t.Errorf("%s: server cookie %x does not verify under the shared secret", who, got)
		}
		out := slices.Clone(raw)
		clear(out[i+12 : i+24])
		return out
	}
	compareNSDMasked(t, s, nsd, qs, mask)
}
