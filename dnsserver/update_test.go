package dnsserver

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func txtRR(t testing.TB, name string, ttl uint32, value string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(fmt.Sprintf("%s %d IN TXT %q", name, ttl, value))
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

type tsigKeyT struct{ name, alg, secret string }

var hs = &tsigKeyT{hsKey, dns.HmacSHA512, hsSecret}

// sendUpdate sends m over netw signed with k (unsigned if nil) and returns
// the reply, after checking its header and, when it should be signed, its
// signature.
func sendUpdate(t *testing.T, s *testServer, netw string, m *dns.Msg, k *tsigKeyT) *dns.Msg {
	t.Helper()
	var raw []byte
	var mac string
	if k != nil {
		// A new ID, as any client gives each message: the same signed
		// bytes twice within the time window are a replay, refused.
		m.Id = dns.Id()
		raw, mac = signedQuery(t, m, k.name, k.alg, k.secret, 0)
	} else {
		raw, _ = m.Pack()
	}
	var b []byte
	if netw == "udp" {
		b = udpExchange(t, s.udp, raw)
	} else {
		b = tcpExchange(t, s.tcp, "", raw, func(int, *dns.Msg) bool { return true })[0]
	}
	r := unpack(t, b)
	if r.Id != m.Id || !r.Response || r.Opcode != dns.OpcodeUpdate || len(r.Answer)+len(r.Ns) != 0 {
		t.Errorf("reply header %+v, want the update's ID, QR, opcode UPDATE, no records", r.MsgHdr)
	}
	if ts := r.IsTsig(); k != nil && ts != nil && ts.Error == 0 {
		// miekg/dns takes any NOTAUTH reply for a TSIG failure and will not
		// verify it; a signed NOTAUTH ("not a zone of ours") at least
		// carries a MAC of the right size.
		if r.Rcode == dns.RcodeNotAuth {
			if int(ts.MACSize) != map[string]int{dns.HmacSHA256: 32, dns.HmacSHA512: 64}[k.alg] {
				t.Errorf("NOTAUTH reply MAC size %d", ts.MACSize)
			}
		} else if err := dns.TsigVerify(bytes.Clone(b), k.secret, mac, false); err != nil {
			t.Errorf("reply signature: %v", err)
		}
	}
	return r
}

func newUpdate(zone string) *dns.Msg {
	m := new(dns.Msg)
	m.SetUpdate(zone)
	return m
}

// expectUpdate sends m and requires rcode; the TSIG of the reply must have
// tsigErr, or be absent when m goes unsigned.
func expectUpdate(t *testing.T, s *testServer, netw string, m *dns.Msg, k *tsigKeyT, rcode int, tsigErr uint16) {
	t.Helper()
	r := sendUpdate(t, s, netw, m, k)
	if r.Rcode != rcode {
		t.Errorf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[rcode])
	}
	ts := r.IsTsig()
	switch {
	case k == nil && ts != nil:
		t.Errorf("TSIG %v in reply to an unsigned update", ts)
	case k != nil && (ts == nil || ts.Error != tsigErr || ts.Hdr.Name != k.name):
		t.Errorf("TSIG %v, want key %s, error %d", ts, k.name, tsigErr)
	}
	if rcode != dns.RcodeFormatError && (len(r.Question) != 1 || r.Question[0] != m.Question[0]) {
		t.Errorf("zone section %v, want the update's", r.Question)
	}
}

// waitNotify reads NOTIFYs until one for zone with serial; an older serial
// may come first (the initial ones, or one overtaken), a newer one may not.
func (ns *notifySink) waitNotify(t *testing.T, zone string, serial uint32) {
	t.Helper()
	for {
		n := ns.next(t)
		soa, ok := n.msg.Answer[0].(*dns.SOA)
		if !ok || n.msg.Question[0].Name != zone {
			continue
		}
		if soa.Serial == serial {
			checkNotify(t, n, zone, serial)
			return
		}
		if serialAfter(soa.Serial, serial) {
			t.Fatalf("NOTIFY for %s with serial %d, want %d", zone, soa.Serial, serial)
		}
	}
}

// TestUpdate adds and removes TXT records by RFC 2136 UPDATE over UDP and
// TCP: each change is served at once, bumps the serial and NOTIFYs the
// secondary; a change that changes nothing does neither.
func TestUpdate(t *testing.T) {
	sink := startNotifySink(t, 0)
	s := startOnePort(t, testModel(t, secondaryTOML(sink.addr)), Options{})
	txt := func(serial uint32, values ...string) {
		t.Helper()
		c := tc{Qname: acmeName, Qtype: dns.TypeTXT, Rcode: dns.RcodeNameError, AA: true, Ns: []string{negSOA(serial)}}
		if len(values) > 0 {
			c.Rcode, c.Ns, c.Extra = dns.RcodeSuccess, apexNS, []string{ns1A, ns1AAA}
			c.Answer = values
		}
		checkQuery(t, "udp", s.udp, c)
		checkQuery(t, "tcp", s.tcp, c)
		if got := s.Serials()["chat.example.com."]; got != serial {
			t.Errorf("serial %d, want %d", got, serial)
		}
	}
	sink.waitNotify(t, "chat.example.com.", 1)

	m := newUpdate("chat.example.com.")
	m.Insert([]dns.RR{txtRR(t, acmeName, 120, "tok-1")})
	expectUpdate(t, s, "udp", m, hs, dns.RcodeSuccess, 0)
	txt(2, acmeName+` 120 IN TXT "tok-1"`)
	sink.waitNotify(t, "chat.example.com.", 2)

	// One RRset, one TTL: the last add's.
	m = newUpdate("chat.example.com.")
	m.Insert([]dns.RR{txtRR(t, acmeName, 60, "tok-2")})
	expectUpdate(t, s, "tcp", m, hs, dns.RcodeSuccess, 0)
	txt(3, acmeName+` 60 IN TXT "tok-1"`, acmeName+` 60 IN TXT "tok-2"`)
	sink.waitNotify(t, "chat.example.com.", 3)

	m = newUpdate("chat.example.com.")
	m.Remove([]dns.RR{txtRR(t, acmeName, 60, "tok-1")})
	expectUpdate(t, s, "udp", m, hs, dns.RcodeSuccess, 0)
	txt(4, acmeName+` 60 IN TXT "tok-2"`)

	m = newUpdate("chat.example.com.")
	m.RemoveRRset([]dns.RR{txtRR(t, acmeName, 60, "")})
	expectUpdate(t, s, "tcp", m, hs, dns.RcodeSuccess, 0)
	txt(5)
	sink.waitNotify(t, "chat.example.com.", 5)

	// Deleting what is not there changes nothing: no new serial.
	expectUpdate(t, s, "udp", m, hs, dns.RcodeSuccess, 0)
	txt(5)

	// The other zone of the policy.
	m = newUpdate("matrix.test.")
	m.Insert([]dns.RR{txtRR(t, "_acme-challenge.matrix.test.", 60, "tok-3")})
	expectUpdate(t, s, "udp", m, hs, dns.RcodeSuccess, 0)
	checkQuery(t, "udp", s.udp, tc{Qname: "_acme-challenge.matrix.test.", Qtype: dns.TypeTXT, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{`_acme-challenge.matrix.test. 60 IN TXT "tok-3"`},
		Ns:     []string{"matrix.test. 3600 IN NS ns1.chat.example.com.", "matrix.test. 3600 IN NS ns2.example.net."}})
	sink.waitNotify(t, "matrix.test.", 2)
}

// TestUpdateRefused: everything a key may not do is refused with the rcode
// RFC 2136 and RFC 8945 give, and changes nothing, including the allowed
// part of an update that also asks for more.
func TestUpdateRefused(t *testing.T) {
	s := startOnePort(t, testModel(t, secondaryTOML(startNotifySink(t, 0).addr)), Options{})
	add := func(zone string, rrs ...dns.RR) *dns.Msg {
		m := newUpdate(zone)
		m.Insert(rrs)
		return m
	}
	// miekg/dns's update helpers set the class and TTL of the records they
	// are given, so each message gets records of its own.
	ok := func() dns.RR { return txtRR(t, acmeName, 60, "tok") }
	aRR := func() dns.RR {
		rr, _ := dns.NewRR(acmeName + " 60 IN A 192.0.2.1")
		return rr
	}
	badDelete := newUpdate("chat.example.com.")
	badDelete.Remove([]dns.RR{ok()})
	badDelete.Ns[0].Header().Ttl = 60 // a deletion carries TTL 0
	notSOA := add("chat.example.com.", ok())
	notSOA.Question[0].Qtype = dns.TypeA
	cases := []struct {
		name    string
		m       *dns.Msg
		k       *tsigKeyT
		rcode   int
		tsigErr uint16
	}{
		{"name outside the policy", add("chat.example.com.", txtRR(t, "_acme-challenge.hs.chat.example.com.", 60, "tok")), hs, dns.RcodeRefused, 0},
		{"not a challenge name", add("chat.example.com.", txtRR(t, "chat.example.com.", 60, "tok")), hs, dns.RcodeRefused, 0},
		{"type other than TXT", add("chat.example.com.", aRR()), hs, dns.RcodeRefused, 0},
		{"allowed and refused together", add("chat.example.com.", ok(), aRR()), hs, dns.RcodeRefused, 0},
		{"key with no update policy", add("chat.example.com.", ok()), &tsigKeyT{xfrKey, dns.HmacSHA256, xfrSecret}, dns.RcodeRefused, 0},
		{"unknown key", add("chat.example.com.", ok()), &tsigKeyT{"nokey.example.com.", dns.HmacSHA512, hsSecret}, dns.RcodeNotAuth, dns.RcodeBadKey},
		{"wrong secret", add("chat.example.com.", ok()), &tsigKeyT{hsKey, dns.HmacSHA512, xfrSecret}, dns.RcodeNotAuth, dns.RcodeBadSig},
		{"unsigned", add("chat.example.com.", ok()), nil, dns.RcodeNotAuth, 0},
		{"record outside the zone", add("chat.example.com.", txtRR(t, "_acme-challenge.matrix.test.", 60, "tok")), hs, dns.RcodeNotZone, 0},
		{"zone not served", add("example.org.", txtRR(t, "_acme-challenge.example.org.", 60, "tok")), hs, dns.RcodeNotAuth, 0},
		{"zone section not an apex", add("hs.chat.example.com.", ok()), hs, dns.RcodeNotAuth, 0},
		{"catalog zone", add(catalog, txtRR(t, "_acme-challenge."+catalog, 60, "tok")), hs, dns.RcodeNotAuth, 0},
		{"zone section not SOA", notSOA, hs, dns.RcodeFormatError, 0},
		{"deletion with a TTL", badDelete, hs, dns.RcodeFormatError, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, netw := range []string{"udp", "tcp"} {
				expectUpdate(t, s, netw, c.m.Copy(), c.k, c.rcode, c.tsigErr)
			}
			checkQuery(t, "udp", s.udp, tc{Qname: acmeName, Qtype: dns.TypeTXT, Rcode: dns.RcodeNameError, AA: true, Ns: []string{soaNeg}})
			if got := s.Serials()["chat.example.com."]; got != 1 {
				t.Errorf("serial %d after a refused update, want 1", got)
			}
		})
	}
}

// TestUpdatePrerequisites: each kind of prerequisite of RFC 2136 §3.2, met
// and not met; an unmet one leaves the zone as it was.
func TestUpdatePrerequisites(t *testing.T) {
	s := startOnePort(t, testModel(t, secondaryTOML(startNotifySink(t, 0).addr)), Options{})
	tok := func() dns.RR { return txtRR(t, acmeName, 60, "tok") }
	step := func(name string, rcode int, prereq func(m *dns.Msg), update func(m *dns.Msg)) {
		t.Helper()
		m := newUpdate("chat.example.com.")
		prereq(m)
		if update != nil {
			update(m)
		}
		before := s.Serials()["chat.example.com."]
		r := sendUpdate(t, s, "udp", m, hs)
		if r.Rcode != rcode {
			t.Errorf("%s: rcode %s, want %s", name, dns.RcodeToString[r.Rcode], dns.RcodeToString[rcode])
		}
		if after := s.Serials()["chat.example.com."]; rcode != dns.RcodeSuccess && after != before {
			t.Errorf("%s: serial moved from %d to %d on a failed update", name, before, after)
		}
	}
	insert := func(m *dns.Msg) { m.Insert([]dns.RR{tok()}) }
	step("RRset does not exist, and it does not", dns.RcodeSuccess, func(m *dns.Msg) { m.RRsetNotUsed([]dns.RR{tok()}) }, insert)
	step("RRset does not exist, but it does", dns.RcodeYXRrset, func(m *dns.Msg) { m.RRsetNotUsed([]dns.RR{tok()}) }, insert)
	step("RRset exists", dns.RcodeSuccess, func(m *dns.Msg) { m.RRsetUsed([]dns.RR{tok()}) }, nil)
	step("RRset exists, but it does not", dns.RcodeNXRrset, func(m *dns.Msg) { m.RRsetUsed([]dns.RR{txtRR(t, "hs.chat.example.com.", 0, "x")}) }, nil)
	step("RRset with these values, and it has them", dns.RcodeSuccess, func(m *dns.Msg) { m.Used([]dns.RR{tok()}) },
		func(m *dns.Msg) { m.Remove([]dns.RR{tok()}) })
	step("RRset with these values, but it has none", dns.RcodeNXRrset, func(m *dns.Msg) { m.Used([]dns.RR{tok()}) }, nil)
	step("name in use", dns.RcodeSuccess, func(m *dns.Msg) { m.NameUsed([]dns.RR{txtRR(t, "hs.chat.example.com.", 0, "")}) }, nil)
	step("name in use, but it is not", dns.RcodeNameError, func(m *dns.Msg) { m.NameUsed([]dns.RR{tok()}) }, nil)
	step("empty non-terminal is not in use", dns.RcodeNameError, func(m *dns.Msg) { m.NameUsed([]dns.RR{txtRR(t, "_tcp.chat.example.com.", 0, "")}) }, nil)
	step("name not in use, but it is", dns.RcodeYXDomain, func(m *dns.Msg) { m.NameNotUsed([]dns.RR{txtRR(t, "hs.chat.example.com.", 0, "")}) }, nil)
	step("prerequisite outside the zone", dns.RcodeNotZone, func(m *dns.Msg) { m.NameNotUsed([]dns.RR{txtRR(t, "example.org.", 0, "")}) }, nil)
	step("prerequisite with a TTL", dns.RcodeFormatError, func(m *dns.Msg) { m.Used([]dns.RR{txtRR(t, acmeName, 60, "tok")}); m.Answer[0].Header().Ttl = 60 }, nil)
	if got := s.Serials()["chat.example.com."]; got != 3 {
		t.Errorf("serial %d after one add and one delete, want 3", got)
	}
}

// TestUpdateAndACME: UPDATE and signpost's own ACME client share a name
// without stepping on each other: one RRset is served, and deleting the
// RRset by UPDATE removes only what UPDATE wrote.
func TestUpdateAndACME(t *testing.T) {
	s := startOnePort(t, testModel(t, secondaryTOML(startNotifySink(t, 0).addr)), Options{})
	if err := s.AddTXT(acmeName, "ours"); err != nil {
		t.Fatal(err)
	}
	m := newUpdate("chat.example.com.")
	m.Insert([]dns.RR{txtRR(t, acmeName, 60, "theirs"), txtRR(t, acmeName, 60, "ours")})
	expectUpdate(t, s, "udp", m, hs, dns.RcodeSuccess, 0)
	both := tc{Qname: acmeName, Qtype: dns.TypeTXT, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{acmeName + ` 60 IN TXT "ours"`, acmeName + ` 60 IN TXT "theirs"`}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}}
	checkQuery(t, "udp", s.udp, both)
	m = newUpdate("chat.example.com.")
	m.RemoveRRset([]dns.RR{txtRR(t, acmeName, 60, "")})
	expectUpdate(t, s, "udp", m, hs, dns.RcodeSuccess, 0)
	both.Answer = both.Answer[:1]
	checkQuery(t, "udp", s.udp, both)
}

// TestUpdateSurvivesReload: what UPDATE wrote stays across a reload while
// the policy still allows it, without a new serial when nothing else
// changed, and goes when the policy no longer does.
func TestUpdateSurvivesReload(t *testing.T) {
	sink := startNotifySink(t, 0)
	text := secondaryTOML(sink.addr)
	s := startOnePort(t, testModel(t, text), Options{})
	m := newUpdate("chat.example.com.")
	m.Insert([]dns.RR{txtRR(t, acmeName, 60, "tok")})
	expectUpdate(t, s, "udp", m, hs, dns.RcodeSuccess, 0)
	served := tc{Qname: acmeName, Qtype: dns.TypeTXT, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{acmeName + ` 60 IN TXT "tok"`}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}}
	checkQuery(t, "udp", s.udp, served)

	s.SetModel(testModel(t, text))
	checkQuery(t, "udp", s.udp, served)
	if got := s.Serials()["chat.example.com."]; got != 2 {
		t.Errorf("serial %d after a reload that changed nothing, want 2", got)
	}

	s.SetModel(testModel(t, strings.Replace(text, `"chat.example.com", "*.chat.example.com", "matrix.test"`, `"matrix.test"`, 1)))
	checkQuery(t, "udp", s.udp, tc{Qname: acmeName, Qtype: dns.TypeTXT, Rcode: dns.RcodeNameError, AA: true, Ns: []string{negSOA(3)}})
	sink.waitNotify(t, "chat.example.com.", 3)
	// And it does not come back when the policy does.
	s.SetModel(testModel(t, text))
	checkQuery(t, "udp", s.udp, tc{Qname: acmeName, Qtype: dns.TypeTXT, Rcode: dns.RcodeNameError, AA: true, Ns: []string{negSOA(3)}})
}

// TestUpdateBounds: UPDATE keeps what ACME needs and no more: one string
// of up to 255 bytes per value, up to maxUpdateRRs values per name. An
// update beyond either is REFUSED whole and the zone stays as it was.
func TestUpdateBounds(t *testing.T) {
	s := startOnePort(t, testModel(t, secondaryTOML(startNotifySink(t, 0).addr)), Options{})
	served := func(want []string) {
		t.Helper()
		c := tc{Qname: acmeName, Qtype: dns.TypeTXT, Rcode: dns.RcodeSuccess, AA: true, Answer: want, Ns: apexNS, Extra: []string{ns1A, ns1AAA}}
		checkQuery(t, "tcp", s.tcp, c)
	}
	value := func(i int) string { return fmt.Sprintf("tok-%02d-", i) + strings.Repeat("x", 36) }
	add := func(from, to int) *dns.Msg {
		m := newUpdate("chat.example.com.")
		for i := from; i < to; i++ {
			m.Insert([]dns.RR{txtRR(t, acmeName, 60, value(i))})
		}
		return m
	}
	var want []string
	for i := range maxUpdateRRs {
		want = append(want, fmt.Sprintf("%s 60 IN TXT %q", acmeName, value(i)))
	}

	long := strings.Repeat("v", 255)
	twoStrings := &dns.TXT{Hdr: dns.RR_Header{Name: acmeName, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{"a", "b"}}
	for _, c := range []struct {
		name string
		m    func() *dns.Msg
	}{
		{"two strings in one value", func() *dns.Msg {
			m := newUpdate("chat.example.com.")
			m.Insert([]dns.RR{dns.Copy(twoStrings)})
			return m
		}},
		{"one value of 255 bytes and one of two strings", func() *dns.Msg {
			m := newUpdate("chat.example.com.")
			m.Insert([]dns.RR{txtRR(t, acmeName, 60, long), dns.Copy(twoStrings)})
			return m
		}},
		{fmt.Sprintf("%d values at once", maxUpdateRRs+1), func() *dns.Msg { return add(0, maxUpdateRRs+1) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			expectUpdate(t, s, "tcp", c.m(), hs, dns.RcodeRefused, 0)
			checkQuery(t, "tcp", s.tcp, tc{Qname: acmeName, Qtype: dns.TypeTXT, Rcode: dns.RcodeNameError, AA: true, Ns: []string{soaNeg}})
		})
	}

	// Up to the bound, in two steps; then one more is refused.
	expectUpdate(t, s, "tcp", add(0, 2), hs, dns.RcodeSuccess, 0)
	expectUpdate(t, s, "tcp", add(2, maxUpdateRRs), hs, dns.RcodeSuccess, 0)
	served(want)
	expectUpdate(t, s, "tcp", add(maxUpdateRRs, maxUpdateRRs+1), hs, dns.RcodeRefused, 0)
	// A value already there is no new record.
	expectUpdate(t, s, "udp", add(0, 1), hs, dns.RcodeSuccess, 0)
	served(want)
	if got := s.Serials()["chat.example.com."]; got != 3 {
		t.Errorf("serial %d after two accepted updates, want 3", got)
	}

	// Delete one, and a 255-byte value fits again.
	m := newUpdate("chat.example.com.")
	m.Remove([]dns.RR{txtRR(t, acmeName, 60, value(0))})
	m.Insert([]dns.RR{txtRR(t, acmeName, 60, long)})
	expectUpdate(t, s, "tcp", m, hs, dns.RcodeSuccess, 0)
	served(append(want[1:], fmt.Sprintf("%s 60 IN TXT %q", acmeName, long)))
}
