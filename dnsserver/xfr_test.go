package dnsserver

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/signpost-dev/signpost/config"
)

// axfrRecords transfers zone with the xfr key over TCP from local, checks
// every message (ID, flags, question in the first only, the TSIG chain of
// RFC 8945 §5.3.1) and returns the records and the number of messages.
func axfrRecords(t *testing.T, addr, local string, q *dns.Msg) ([]string, int) {
	t.Helper()
	raw, mac := signedQuery(t, q, xfrKey, dns.HmacSHA256, xfrSecret, 0)
	soas := 0
	replies := tcpExchange(t, addr, local, raw, func(i int, m *dns.Msg) bool {
		for _, rr := range m.Answer {
			if rr.Header().Rrtype == dns.TypeSOA {
				soas++
			}
		}
		// A single SOA answers an up-to-date IXFR.
		return soas == 2 || (i == 0 && len(m.Answer) == 1 && soas == 1) || m.Rcode != dns.RcodeSuccess
	})
	var records []string
	for i, b := range replies {
		m := unpack(t, b)
		if m.Id != q.Id || !m.Response || !m.Authoritative || m.Rcode != dns.RcodeSuccess || m.Opcode != dns.OpcodeQuery || m.Truncated {
			t.Fatalf("message %d header %+v: want the query's ID, QR, AA, NOERROR", i, m.MsgHdr)
		}
		wantQ := 0
		if i == 0 {
			wantQ = 1
		}
		if len(m.Question) != wantQ || (wantQ == 1 && m.Question[0] != q.Question[0]) {
			t.Errorf("message %d question %v, want the query's in the first message only", i, m.Question)
		}
		ts := m.IsTsig()
		if ts == nil || len(m.Extra) != 1 || ts.Hdr.Name != xfrKey || ts.Error != 0 {
			t.Fatalf("message %d additional %v, want only a TSIG with %s", i, m.Extra, xfrKey)
		}
		if err := dns.TsigVerify(bytes.Clone(b), xfrSecret, mac, i > 0); err != nil {
			t.Errorf("message %d: TSIG does not verify against the previous MAC: %v", i, err)
		}
		mac = ts.MAC
		records = append(records, rrStrings(m.Answer)...)
	}
	return records, len(replies)
}

func axfrQuery(zone string) *dns.Msg {
	q := new(dns.Msg)
	q.SetAxfr(zone)
	return q
}

// TestAXFR: with the secondary's key and from its address, AXFR gives the
// zone exactly as `signpost zone` prints it, with the served serial and the
// dynamic TXT records, SOA first and last (RFC 5936 §2.2), in signed
// messages; a large zone spans several messages whose signatures chain.
func TestAXFR(t *testing.T) {
	var big strings.Builder
	big.WriteString("\n[[zone]]\norigin = \"big.test\"\nrecords = [\n")
	for i := range 400 {
		fmt.Fprintf(&big, "  \"r%03d 300 IN TXT \\\"%s\\\"\",\n", i, strings.Repeat("x", 100))
	}
	big.WriteString("]\n")
	sink := startNotifySink(t, 0)
	m := testModel(t, secondaryTOML(sink.addr)+big.String())
	s := startOnePort(t, m, Options{})
	if err := s.AddTXT(acmeName, "challenge"); err != nil {
		t.Fatal(err)
	}
	got, msgs := axfrRecords(t, s.tcp, "", axfrQuery("chat.example.com."))
	want := zoneText(t, m.Zones[0], 2)
	want = append(want, acmeName+"\t60\tIN\tTXT\t\"challenge\"", want[0])
	if !slices.Equal(got, want) {
		t.Errorf("AXFR chat.example.com:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if msgs != 1 {
		t.Errorf("%d messages for a small zone, want 1", msgs)
	}

	bigZone := m.Zones[slices.IndexFunc(m.Zones, func(z *config.Zone) bool { return z.Origin == "big.test." })]
	got, msgs = axfrRecords(t, s.tcp, "", axfrQuery("BIG.test."))
	want = zoneText(t, bigZone, 1)
	want = append(want, want[0])
	if !slices.Equal(got, want) {
		t.Errorf("AXFR big.test: %d records, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	if msgs < 3 {
		t.Errorf("big.test came in %d messages, want at least 3 of at most %d bytes of records", msgs, xfrChunk)
	}

	// The catalog zone transfers too.
	got, _ = axfrRecords(t, s.tcp, "", axfrQuery(catalog))
	want = zoneText(t, m.Catalog, m.Catalog.SOA.Serial)
	want = append(want, want[0])
	if !slices.Equal(got, want) {
		t.Errorf("AXFR of the catalog:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestIXFR: IXFR is answered with the whole zone when the client is behind
// (RFC 1995 §4), with the single SOA when it is current, and over UDP with
// the single SOA whatever its serial (RFC 1995 §2).
func TestIXFR(t *testing.T) {
	m := testModel(t, secondaryTOML(startNotifySink(t, 0).addr))
	s := startOnePort(t, m, Options{})
	if err := s.AddTXT(acmeName, "challenge"); err != nil { // serial 2
		t.Fatal(err)
	}
	ixfr := func(serial uint32) *dns.Msg {
		q := new(dns.Msg)
		q.SetIxfr("chat.example.com.", serial, "ns.", "h.")
		return q
	}
	soa := zoneText(t, m.Zones[0], 2)[0]
	got, _ := axfrRecords(t, s.tcp, "", ixfr(2))
	if !slices.Equal(got, []string{soa}) {
		t.Errorf("IXFR from the current serial: %q, want the SOA alone", got)
	}
	got, _ = axfrRecords(t, s.tcp, "", ixfr(3)) // ahead of us: nothing newer to give
	if !slices.Equal(got, []string{soa}) {
		t.Errorf("IXFR from a later serial: %q, want the SOA alone", got)
	}
	got, _ = axfrRecords(t, s.tcp, "", ixfr(1))
	want := append(zoneText(t, m.Zones[0], 2), acmeName+"\t60\tIN\tTXT\t\"challenge\"", soa)
	if !slices.Equal(got, want) {
		t.Errorf("IXFR from serial 1:\n%s\nwant the zone in AXFR form:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	q := ixfr(1)
	raw, mac := signedQuery(t, q, xfrKey, dns.HmacSHA256, xfrSecret, 0)
	b := udpExchange(t, s.udp, raw)
	r := unpack(t, b)
	if r.Rcode != dns.RcodeSuccess || !r.Authoritative || !slices.Equal(rrStrings(r.Answer), []string{soa}) {
		t.Errorf("IXFR over UDP: %v, want the SOA alone", r)
	}
	if err := dns.TsigVerify(b, xfrSecret, mac, false); err != nil {
		t.Errorf("IXFR over UDP: reply signature: %v", err)
	}

	bad := ixfr(1)
	bad.Ns = nil
	raw, _ = signedQuery(t, bad, xfrKey, dns.HmacSHA256, xfrSecret, 0)
	r = unpack(t, tcpExchange(t, s.tcp, "", raw, func(int, *dns.Msg) bool { return true })[0])
	if r.Rcode != dns.RcodeFormatError {
		t.Errorf("IXFR without the client's SOA: %v, want FORMERR", r)
	}
}

// TestTransferRefused: every way of asking without the right to: no key,
// another known key, an unknown key, a bad signature, the wrong algorithm,
// a stale signature, the wrong address, UDP, a zone not served. A request
// with a valid signature gets a signed refusal; one whose signature fails
// gets NOTAUTH with the TSIG error (RFC 8945 §5.2), unsigned but for
// BADTIME.
func TestTransferRefused(t *testing.T) {
	m := testModel(t, secondaryTOML(startNotifySink(t, 0).addr))
	s := startOnePort(t, m, Options{})
	type signer struct{ key, alg, secret string }
	xfr := signer{xfrKey, dns.HmacSHA256, xfrSecret}
	cases := []struct {
		name    string
		zone    string
		sign    *signer
		skew    int64
		local   string
		udp     bool
		rcode   int
		tsigErr uint16
		signed  bool // the reply carries a MAC that verifies
	}{
		{name: "no key", zone: "chat.example.com.", rcode: dns.RcodeRefused},
		{name: "another known key", zone: "chat.example.com.", sign: &signer{otherKey, dns.HmacSHA256, otherSecret}, rcode: dns.RcodeRefused, signed: true},
		{name: "unknown key", zone: "chat.example.com.", sign: &signer{"nokey.example.com.", dns.HmacSHA256, xfrSecret}, rcode: dns.RcodeNotAuth, tsigErr: dns.RcodeBadKey},
		{name: "wrong secret", zone: "chat.example.com.", sign: &signer{xfrKey, dns.HmacSHA256, otherSecret}, rcode: dns.RcodeNotAuth, tsigErr: dns.RcodeBadSig},
		{name: "wrong algorithm", zone: "chat.example.com.", sign: &signer{xfrKey, dns.HmacSHA512, xfrSecret}, rcode: dns.RcodeNotAuth, tsigErr: dns.RcodeBadKey},
		{name: "stale signature", zone: "chat.example.com.", sign: &xfr, skew: -1000, rcode: dns.RcodeNotAuth, tsigErr: dns.RcodeBadTime},
		{name: "other address", zone: "chat.example.com.", sign: &xfr, local: "127.0.0.2", rcode: dns.RcodeRefused, signed: true},
		{name: "zone not served", zone: "example.org.", sign: &xfr, rcode: dns.RcodeRefused, signed: true},
		{name: "inside a zone, not its apex", zone: "hs.chat.example.com.", sign: &xfr, rcode: dns.RcodeRefused, signed: true},
		{name: "UDP", zone: "chat.example.com.", sign: &xfr, udp: true, rcode: dns.RcodeNotImplemented, signed: true},
		{name: "UDP unsigned", zone: "chat.example.com.", udp: true, rcode: dns.RcodeNotImplemented},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q := axfrQuery(c.zone)
			var raw []byte
			var mac string
			if c.sign != nil {
				ts := int64(0)
				if c.skew != 0 {
					ts = time.Now().Unix() + c.skew
				}
				raw, mac = signedQuery(t, q, c.sign.key, c.sign.alg, c.sign.secret, ts)
			} else {
				raw, _ = q.Pack()
			}
			var b []byte
			if c.udp {
				b = udpExchange(t, s.udp, raw)
			} else {
				b = tcpExchange(t, s.tcp, c.local, raw, func(int, *dns.Msg) bool { return true })[0]
			}
			r := unpack(t, b)
			if r.Id != q.Id || !r.Response || r.Authoritative || r.Rcode != c.rcode || len(r.Answer)+len(r.Ns) != 0 {
				t.Errorf("reply %v: want %s, no AA, no records", r, dns.RcodeToString[c.rcode])
			}
			if len(r.Question) != 1 || r.Question[0] != q.Question[0] {
				t.Errorf("question %v, want the query's", r.Question)
			}
			ts := r.IsTsig()
			switch {
			case c.sign == nil:
				if len(r.Extra) != 0 {
					t.Errorf("additional %v, want nothing in reply to an unsigned query", r.Extra)
				}
				return
			case ts == nil:
				t.Fatalf("reply has no TSIG")
			case ts.Hdr.Name != c.sign.key || ts.Algorithm != c.sign.alg || ts.Error != c.tsigErr || ts.OrigId != q.Id:
				t.Errorf("TSIG %v: want key %s, algorithm %s, error %d", ts, c.sign.key, c.sign.alg, c.tsigErr)
			}
			switch c.tsigErr {
			case dns.RcodeBadKey, dns.RcodeBadSig:
				if ts.MACSize != 0 || ts.MAC != "" {
					t.Errorf("MAC %q on a %s reply, want none (RFC 8945 §5.3.2)", ts.MAC, dns.RcodeToString[int(c.tsigErr)])
				}
			case dns.RcodeBadTime:
				if ts.MACSize != 32 || ts.OtherLen != 6 || ts.TimeSigned != uint64(time.Now().Unix()+c.skew) && ts.TimeSigned != uint64(time.Now().Unix()+c.skew-1) {
					t.Errorf("BADTIME TSIG %v: want signed, the request's time, our time in other data", ts)
				}
			}
			if c.signed {
				if err := dns.TsigVerify(bytes.Clone(b), c.sign.secret, mac, false); err != nil {
					t.Errorf("reply signature: %v", err)
				}
			}
		})
	}
}

// TestCatalogQueries: the catalog zone answers the secondaries allowed to
// transfer it (they ask for its SOA before transferring), and nobody else,
// on the fast path or the slow one.
func TestCatalogQueries(t *testing.T) {
	m := testModel(t, secondaryTOML(startNotifySink(t, 0).addr))
	s := startOnePort(t, m, Options{UDPReaders: 1})
	catSOA := zoneText(t, m.Catalog, m.Catalog.SOA.Serial)[0]
	soaQ := func() *dns.Msg {
		q := new(dns.Msg)
		q.SetQuestion("Catalog.Signpost.Invalid.", dns.TypeSOA)
		q.SetEdns0(1232, false)
		return q
	}
	for _, netw := range []string{"udp", "tcp"} {
		q := soaQ()
		raw, mac := signedQuery(t, q, xfrKey, dns.HmacSHA256, xfrSecret, 0)
		var b []byte
		if netw == "udp" {
			b = udpExchange(t, s.udp, raw)
		} else {
			b = tcpExchange(t, s.tcp, "", raw, func(int, *dns.Msg) bool { return true })[0]
		}
		r := unpack(t, b)
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative || r.Question[0].Name != "Catalog.Signpost.Invalid." {
			t.Errorf("%s: signed SOA query for the catalog: %v", netw, r)
		}
		compareSection(t, "answer", r.Answer, []string{catSOA})
		compareSection(t, "authority", r.Ns, []string{catalog + " 0 IN NS invalid."})
		if err := dns.TsigVerify(bytes.Clone(b), xfrSecret, mac, false); err != nil {
			t.Errorf("%s: reply signature: %v", netw, err)
		}
		// Unsigned, or signed from another address: like any name we do
		// not serve.
		checkQuery(t, netw, s.udp, tc{Qname: catalog, Qtype: dns.TypeSOA, EDNS: 1232, Rcode: dns.RcodeRefused, EDE: edeNotAuthoritative})
		checkQuery(t, netw, s.udp, tc{Qname: "version." + catalog, Qtype: dns.TypeTXT, Rcode: dns.RcodeRefused})
	}
	q := soaQ()
	raw, _ := signedQuery(t, q, xfrKey, dns.HmacSHA256, xfrSecret, 0)
	r := unpack(t, tcpExchange(t, s.tcp, "127.0.0.2", raw, func(int, *dns.Msg) bool { return true })[0])
	if r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
		t.Errorf("signed catalog query from another address: %v, want REFUSED", r)
	}
}

// TestSignedQuery: an ordinary query signed with any known key is answered
// as usual and signed; a signed answer that no longer fits the client's
// UDP limit is truncated, still signed.
func TestSignedQuery(t *testing.T) {
	m := testModel(t, secondaryTOML(startNotifySink(t, 0).addr))
	s := startOnePort(t, m, Options{})
	for _, netw := range []string{"udp", "tcp"} {
		q := query(tc{Qname: "_matrix-fed._tcp.chat.example.com.", Qtype: dns.TypeSRV, EDNS: 1232})
		raw, mac := signedQuery(t, q, otherKey, dns.HmacSHA256, otherSecret, 0)
		var b []byte
		if netw == "udp" {
			b = udpExchange(t, s.udp, raw)
		} else {
			b = tcpExchange(t, s.tcp, "", raw, func(int, *dns.Msg) bool { return true })[0]
		}
		if err := dns.TsigVerify(bytes.Clone(b), otherSecret, mac, false); err != nil {
			t.Errorf("%s: reply signature: %v", netw, err)
		}
		r := unpack(t, b)
		r.Extra = r.Extra[:len(r.Extra)-1] // the TSIG, checked
		q.Extra = q.Extra[:1]
		checkReply(t, q, r, tc{Qname: q.Question[0].Name, Qtype: dns.TypeSRV, EDNS: 1232, Rcode: dns.RcodeSuccess, AA: true,
			Answer: []string{"_matrix-fed._tcp.chat.example.com. 3600 IN SRV 10 0 8448 hs.chat.example.com."},
			Ns:     apexNS, Extra: []string{hsA, ns1A, hsAAAA, ns1AAA}})
	}

	// The three big TXT records fit an EDNS limit just above their size,
	// but not with a signature too.
	plain := query(tc{Qname: "big.chat.example.com.", Qtype: dns.TypeTXT, EDNS: 1232})
	size := len(s.ix.Load().respond(plain, false, nil))
	q := query(tc{Qname: "big.chat.example.com.", Qtype: dns.TypeTXT, EDNS: uint16(size + 10)})
	raw, mac := signedQuery(t, q, otherKey, dns.HmacSHA256, otherSecret, 0)
	b := udpExchange(t, s.udp, raw)
	r := unpack(t, b)
	if !r.Truncated || len(r.Answer)+len(r.Ns) != 0 || len(b) > size+10 {
		t.Errorf("signed reply over the limit: %d bytes, %v; want TC and no records", len(b), r)
	}
	if err := dns.TsigVerify(bytes.Clone(b), otherSecret, mac, false); err != nil {
		t.Errorf("truncated reply signature: %v", err)
	}
}
