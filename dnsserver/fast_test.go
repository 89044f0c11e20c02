package dnsserver

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// variants are the ways one question can be asked: with or without EDNS,
// buffer sizes around the limits, DO, RD, letter case, and the EDNS
// options resolvers send.
type variant struct {
	edns  uint16
	do    bool
	rd    bool
	mixed bool
	opts  optSet
}

// optSet is a combination of EDNS options in a query.
type optSet uint8

const (
	optCookie     optSet = 1 << iota // a client cookie
	optServer                        // and a valid server cookie, 10 minutes old
	optStale                         // and a valid server cookie, 40 minutes old
	optNSID                          // an NSID request
	optPad                           // 12 bytes of padding (RFC 7830)
	optUnknown                       // an option nobody knows
	optBadVersion                    // a server cookie of another version
)

var optSets = []optSet{0, optCookie, optCookie | optServer | optNSID, optCookie | optStale | optPad | optUnknown,
	optNSID | optPad, optCookie | optBadVersion}

var variants = func() []variant {
	var vs []variant
	for _, edns := range []uint16{0, 100, 512, 700, 1232, 4096} {
		for _, do := range []bool{false, true} {
			if edns == 0 && do {
				continue
			}
			for _, rd := range []bool{false, true} {
				for _, mixed := range []bool{false, true} {
					for _, o := range optSets {
						if edns == 0 && o != 0 {
							continue
						}
						vs = append(vs, variant{edns, do, rd, mixed, o})
					}
				}
			}
		}
	}
	return vs
}()

// testSender is the sender of the queries of fast_test.go, and testNow
// the time they arrive.
var (
	testAddr = netip.MustParseAddr("192.0.2.33")
	testNow  = uint32(1_800_000_000)
)

func testSender(s *Server) sender {
	return sender{addr: testAddr, now: testNow, edns: s.edns.Load()}
}

// testCookie is a client cookie and the server cookie s made for it at
// testNow-age for testAddr.
func testCookie(s *Server, age uint32) []byte {
	var c [24]byte
	s.edns.Load().cookie(&c, []byte("cookie!!"), testAddr, testNow-age)
	return c[:]
}

func rawQuery(t testing.TB, id uint16, name string, qtype uint16, v variant) []byte {
	return rawQueryFor(t, nil, id, name, qtype, v)
}

// rawQueryFor packs a query; s makes the server cookies of v.opts.
func rawQueryFor(t testing.TB, s *Server, id uint16, name string, qtype uint16, v variant) []byte {
	t.Helper()
	m := new(dns.Msg)
	if v.mixed {
		name = mixCase(name)
	}
	m.SetQuestion(name, qtype)
	m.Id = id
	m.RecursionDesired = v.rd
	if v.edns != 0 {
		m.SetEdns0(v.edns, v.do)
		o := m.IsEdns0()
		if v.opts&optNSID != 0 {
			o.Option = append(o.Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID})
		}
		if v.opts&optCookie != 0 {
			c := []byte("cookie!!")
			switch {
			case v.opts&optServer != 0:
				c = testCookie(s, 600)
			case v.opts&optStale != 0:
				c = testCookie(s, 2400)
			case v.opts&optBadVersion != 0:
				c = testCookie(s, 600)
				c[8] = 2
			}
			o.Option = append(o.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: hex.EncodeToString(c)})
		}
		if v.opts&optPad != 0 {
			o.Option = append(o.Option, &dns.EDNS0_PADDING{Padding: make([]byte, 12)})
		}
		if v.opts&optUnknown != 0 {
			o.Option = append(o.Option, &dns.EDNS0_LOCAL{Code: 65001, Data: []byte{1, 2, 3}})
		}
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatalf("pack %s: %v", name, err)
	}
	return b
}

// checkSame answers pkt on both paths and fails if the fast path answered
// with other bytes than the full path, or if they disagree on the cookie's
// validity. It reports whether the fast path answered.
func checkSame(t *testing.T, s *Server, ix *index, pkt []byte) bool {
	t.Helper()
	var sc scratch
	fc, sl := testSender(s), testSender(s)
	fast := ix.fast.replyTo(pkt, make([]byte, 0, 4096), &sc, &fc)
	slow := s.handleRawFrom(ix, pkt, make([]byte, 0, 4096), (*fixedPeer)(&netip.AddrPort{}), &sl)
	if fast == nil {
		return false
	}
	if !bytes.Equal(fast, slow) || fc.cookieOK != sl.cookieOK {
		var fm, sm dns.Msg
		_ = fm.Unpack(fast)
		_ = sm.Unpack(slow)
		t.Errorf("fast path differs from full path for %x (cookie valid: fast %v, full %v)\nfast:\n%v\nfull:\n%v",
			pkt, fc.cookieOK, sl.cookieOK, &fm, &sm)
	}
	return true
}

// tableOf returns every entry of f by key, names' included.
func tableOf(f *fastIndex) map[string]fastEntry {
	t := map[string]fastEntry{}
	n := 0
	for _, s := range f.slots {
		if s.data != "" {
			e := fastEntry{data: s.data, stats: f.stats[s.zone]}
			t[e.key()] = e
			n++
		}
	}
	if len(t) != n {
		panic("dnsserver: a key twice in the fast table") // zones do not nest
	}
	return t
}

// repliesOf returns the entries of f with replies by key: not the names'.
func repliesOf(f *fastIndex) map[string]fastEntry {
	t := tableOf(f)
	for k := range t {
		if k[len(k)-2] == typeName>>8 && k[len(k)-1] == typeName&0xFF {
			delete(t, k)
		}
	}
	return t
}

// optionsFit says whether the precomputed EDNS reply e, with the options
// v asks for, fits v's limit whole: then the fast path must answer it.
func optionsFit(s *Server, e fastEntry, v variant) bool {
	extra := 0
	if v.opts&optCookie != 0 {
		extra += cookieOptLen
	}
	if v.opts&optNSID != 0 {
		extra += len(s.edns.Load().nsid)
	}
	reply, complete := e.edns(), e.has(entryEDNSComplete)
	if v.do && e.has(entrySigned) {
		reply, complete = e.dnssec(), e.has(entryDNSSECComplete)
	}
	if extra == 0 {
		return v.edns >= 1232 || len(reply) <= int(v.edns) && complete
	}
	return complete && len(reply)+extra <= min(max(int(v.edns), 512), 1232)
}

// TestFastPathSameBytes proves the fast path byte-identical to the full
// path: for every precomputed question in every variant, and for random
// names that exist, do not exist, or lie outside every zone.
func TestFastPathSameBytes(t *testing.T) {
	t.Run("without nsid", func(t *testing.T) { testFastPathSameBytes(t, testTOML, false) })
	t.Run("with nsid", func(t *testing.T) {
		testFastPathSameBytes(t, strings.Replace(testTOML, "[dns]", "[dns]\nnsid = \"ns1.test signpost\"", 1), false)
	})
	t.Run("signed", func(t *testing.T) {
		testFastPathSameBytes(t, strings.Replace(testTOML, "[dns]", "[dns]\ndnssec = true", 1), true)
	})
}

// testFastPathSameBytes checks the zones of text; signed gives them keys.
func testFastPathSameBytes(t *testing.T, text string, signed bool) {
	s := New(Options{})
	m := testModel(t, text)
	if signed {
		s.SetKeys(testKeys(t, m))
		t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	}
	s.SetModel(m)
	if err := s.AddTXT("_acme-challenge.chat.example.com.", "token-one"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddTXT("_acme-challenge.chat.example.com.", "token-two"); err != nil {
		t.Fatal(err)
	}
	ix := s.ix.Load()
	id := uint16(1)
	fastCount, total := 0, 0
	for key, e := range repliesOf(ix.fast) {
		name, _, err := dns.UnpackDomainName([]byte(key), 0)
		if err != nil {
			t.Fatal(err)
		}
		qtype := binary.BigEndian.Uint16([]byte(key[len(key)-2:]))
		for _, v := range variants {
			id++
			total++
			pkt := rawQueryFor(t, s, id, name, qtype, v)
			if checkSame(t, s, ix, pkt) {
				fastCount++
			} else if v.edns == 0 || optionsFit(s, e, v) {
				t.Errorf("%s %s %+v took the full path; precomputed answers must not", name, dns.TypeToString[qtype], v)
			}
		}
	}
	// Names without a table entry: NODATA, NXDOMAIN and REFUSED are built
	// from templates, and must match too.
	rng := rand.New(rand.NewPCG(1, 2))
	labels := []string{"x", "nope", "ns1", "hostmaster", "_tcp", "wild", "b", "c", "child", "hs", "a", "www", "big"}
	suffixes := []string{"chat.example.com.", "matrix.test.", "example.org.", "com.", "ns1.chat.example.com.", "b.c.chat.example.com.", "_tcp.chat.example.com."}
	qtypes := []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypeTXT, dns.TypeMX, dns.TypeNS, dns.TypeSOA, dns.TypeCAA, dns.TypePTR, dns.TypeHTTPS, 65000, dns.TypeANY, dns.TypeDS}
	negFast := 0
	for range 5000 {
		name := suffixes[rng.IntN(len(suffixes))]
		for range rng.IntN(4) {
			name = labels[rng.IntN(len(labels))] + "." + name
		}
		v := variants[rng.IntN(len(variants))]
		id++
		total++
		if checkSame(t, s, ix, rawQueryFor(t, s, id, name, qtypes[rng.IntN(len(qtypes))], v)) {
			fastCount++
			negFast++
		}
	}
	// The common negative answers must take the fast path.
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"nope.chat.example.com.", dns.TypeA},                 // NXDOMAIN
		{"_matrix._tcp.chat.example.com.", dns.TypeSRV},       // NXDOMAIN under an empty non-terminal
		{"hs.chat.example.com.", dns.TypeTXT},                 // NODATA
		{"_tcp.chat.example.com.", dns.TypeSRV},               // NODATA at an empty non-terminal
		{"x.y.matrix.test.", dns.TypeAAAA},                    // NXDOMAIN, other zone
		{"example.org.", dns.TypeA},                           // REFUSED
		{"_acme-challenge.chat.example.com.", dns.TypeA},      // NODATA at the ACME name
		{"_acme-challenge.hs.chat.example.com.", dns.TypeTXT}, // NXDOMAIN
	} {
		for _, v := range []variant{{}, {edns: 1232}, {edns: 1232, do: true, rd: true, mixed: true},
			{edns: 1232, opts: optCookie}, {edns: 1232, do: true, opts: optCookie | optServer | optNSID | optPad}} {
			id++
			if !checkSame(t, s, ix, rawQueryFor(t, s, id, q.name, q.qtype, v)) {
				t.Errorf("%s %s %+v took the full path", q.name, dns.TypeToString[q.qtype], v)
			}
		}
	}
	t.Logf("%d of %d queries answered by the fast path (%d of them from templates)", fastCount, total, negFast)
	if negFast == 0 {
		t.Errorf("no random query took the template path")
	}
}

// TestFastPathCookieLengths sends COOKIE options of every length from 0 to
// 44 bytes: lengths 8 and 16 to 40 are answered with a cookie, the others
// are FORMERR, header only, as RFC 7873 §5.2.2 says and NSD does, and both
// paths give the same bytes.
func TestFastPathCookieLengths(t *testing.T) {
	s := New(Options{})
	s.SetModel(testModel(t, testTOML))
	ix := s.ix.Load()
	for n := 0; n <= 44; n++ {
		m := new(dns.Msg)
		m.SetQuestion("Chat.Example.com.", dns.TypeA)
		m.Id, m.RecursionDesired = uint16(1000+n), true
		m.SetEdns0(1232, true)
		m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: hex.EncodeToString(bytes.Repeat([]byte{7}, n))}}
		pkt, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if !checkSame(t, s, ix, pkt) {
			t.Errorf("cookie of %d bytes took the full path", n)
			continue
		}
		cl := testSender(s)
		var sc scratch
		var r dns.Msg
		if err := r.Unpack(ix.fast.replyTo(pkt, nil, &sc, &cl)); err != nil {
			t.Fatal(err)
		}
		if n == 8 || n >= 16 && n <= 40 {
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || len(r.IsEdns0().Option) != 1 {
				t.Errorf("cookie of %d bytes: got\n%v\nwant an answer with a cookie", n, &r)
			}
			continue
		}
		want := dns.Msg{MsgHdr: dns.MsgHdr{Id: m.Id, Response: true, RecursionDesired: true, Rcode: dns.RcodeFormatError}}
		if r.String() != want.String() || len(r.Question)+len(r.Extra) != 0 {
			t.Errorf("cookie of %d bytes: got\n%v\nwant\n%v", n, &r, &want)
		}
	}
}

// TestFastPathNoAlloc pins the fast path at zero allocations per query.
func TestFastPathNoAlloc(t *testing.T) {
	t.Run("unsigned", func(t *testing.T) {
		testFastPathNoAlloc(t, strings.Replace(testTOML, "[dns]", "[dns]\nnsid = \"ns1\"", 1), false)
	})
	// Signed zones answer DO queries, positive and negative, from their
	// own precomputed replies.
	t.Run("signed", func(t *testing.T) {
		testFastPathNoAlloc(t, strings.Replace(signedTOML, "[dns]", "[dns]\nnsid = \"ns1\"", 1), true)
	})
}

func testFastPathNoAlloc(t *testing.T, text string, signed bool) {
	s := New(Options{})
	m := testModel(t, text)
	if signed {
		s.SetKeys(testKeys(t, m))
		t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	}
	s.SetModel(m)
	ix := s.ix.Load()
	out := make([]byte, 0, 4096)
	var sc scratch
	from := &fixedPeer{}
	qs := benchMix(t)
	for _, o := range []optSet{optCookie, optCookie | optServer, optCookie | optStale | optNSID | optPad} {
		qs = append(qs, rawQueryFor(t, s, 7, "hs.chat.example.com.", dns.TypeA, variant{edns: 1232, do: true, opts: o}))
		qs = append(qs, rawQueryFor(t, s, 7, "nope.chat.example.com.", dns.TypeA, variant{edns: 1232, do: true, opts: o}))
	}
	if signed {
		for i, q := range benchMix(t) {
			if i%2 == 1 { // the EDNS ones, again with DO
				qs = append(qs, withDO(t, q))
			}
		}
	}
	for _, q := range qs {
		if allocs := testing.AllocsPerRun(100, func() {
			cl := testSender(s)
			if ix.fast.replyTo(q, out, &sc, &cl) == nil {
				t.Fatalf("query %x took the full path", q)
			}
		}); allocs != 0 {
			t.Errorf("%d allocations for %x, want 0", int(allocs), q)
		}
		// The packet edge, which also carries the sender for the full
		// path, adds none.
		if allocs := testing.AllocsPerRun(100, func() {
			s.answerPacket(ix, q, out, &sc, from)
		}); allocs != 0 {
			t.Errorf("answerPacket: %d allocations for %x, want 0", int(allocs), q)
		}
	}
}

// withDO returns a copy of the EDNS query q with the DO bit set.
func withDO(t testing.TB, q []byte) []byte {
	t.Helper()
	var m dns.Msg
	if err := m.Unpack(q); err != nil {
		t.Fatal(err)
	}
	m.IsEdns0().SetDo()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixedPeer is a sender address behind a pointer, as the Linux reader
// passes it.
type fixedPeer netip.AddrPort

func (p *fixedPeer) addrPort() netip.AddrPort { return netip.AddrPort(*p) }

func benchMix(t testing.TB) [][]byte {
	var qs [][]byte
	for i, q := range []struct {
		name  string
		qtype uint16
	}{
		{"_matrix-fed._tcp.chat.example.com.", dns.TypeSRV},
		{"chat.example.com.", dns.TypeA},
		{"chat.example.com.", dns.TypeAAAA},
		{"hs.chat.example.com.", dns.TypeA},
		{"_matrix._tcp.chat.example.com.", dns.TypeSRV},
		{"nope.chat.example.com.", dns.TypeA},
		{"hs.chat.example.com.", dns.TypeTXT},
		{"_matrix-fed._tcp.matrix.test.", dns.TypeSRV},
	} {
		qs = append(qs, rawQuery(t, uint16(i), q.name, q.qtype, variant{}))
		qs = append(qs, rawQuery(t, uint16(i), q.name, q.qtype, variant{edns: 1232, mixed: true}))
	}
	return qs
}

func BenchmarkFastPath(b *testing.B) {
	s := New(Options{})
	s.SetModel(testModel(b, testTOML))
	ix := s.ix.Load()
	qs := benchMix(b)
	out := make([]byte, 0, 4096)
	var sc scratch
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if ix.fast.reply(qs[i%len(qs)], out, &sc) == nil {
			b.Fatal("full path")
		}
	}
}

// BenchmarkFastPathOptions is the fast path for what resolvers send: the
// DO bit, a client cookie, a client cookie with a valid server cookie.
func BenchmarkFastPathOptions(b *testing.B) {
	for _, c := range []struct {
		name string
		v    variant
	}{
		{"DO", variant{edns: 1232, do: true}},
		{"ClientCookie", variant{edns: 1232, do: true, opts: optCookie}},
		{"ServerCookie", variant{edns: 1232, do: true, opts: optCookie | optServer}},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := New(Options{})
			s.SetModel(testModel(b, testTOML))
			ix := s.ix.Load()
			var qs [][]byte
			for _, q := range []struct {
				name  string
				qtype uint16
			}{
				{"_matrix-fed._tcp.chat.example.com.", dns.TypeSRV},
				{"chat.example.com.", dns.TypeA},
				{"nope.chat.example.com.", dns.TypeA},
				{"hs.chat.example.com.", dns.TypeTXT},
			} {
				qs = append(qs, rawQueryFor(b, s, 1, q.name, q.qtype, c.v))
			}
			out := make([]byte, 0, 4096)
			var sc scratch
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				cl := testSender(s)
				if ix.fast.replyTo(qs[i%len(qs)], out, &sc, &cl) == nil {
					b.Fatal("full path")
				}
			}
		})
	}
}

// BenchmarkFullPath is the same mix through miekg/dns parsing, resolution
// and packing: what every query would cost without precomputed answers.
func BenchmarkFullPath(b *testing.B) {
	s := New(Options{})
	s.SetModel(testModel(b, testTOML))
	ix := s.ix.Load()
	qs := benchMix(b)
	out := make([]byte, 0, 4096)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if s.handleRaw(ix, qs[i%len(qs)], out, nil) == nil {
			b.Fatal("no reply")
		}
	}
}

// BenchmarkBuildIndex measures building the index of the test model from
// scratch, precomputed answers included: the cost of a reload.
func BenchmarkBuildIndex(b *testing.B) {
	m := testModel(b, testTOML)
	b.ReportAllocs()
	for b.Loop() {
		buildIndex(m, nil, nil, nil, nil, nil)
	}
}

// BenchmarkAddRemoveTXT measures an ACME challenge's two index changes,
// which rebuild only the zone holding the name (and zones with CNAMEs
// leading out of them).
func BenchmarkAddRemoveTXT(b *testing.B) {
	s := New(Options{})
	s.SetModel(testModel(b, testTOML))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.AddTXT("_acme-challenge.matrix.test.", "token"); err != nil {
			b.Fatal(err)
		}
		if err := s.RemoveTXT("_acme-challenge.matrix.test.", "token"); err != nil {
			b.Fatal(err)
		}
	}
}

func ExampleServer_AddTXT() {
	m, err := parseExample()
	if err != nil {
		fmt.Println(err)
		return
	}
	s := New(Options{})
	s.SetModel(m)
	fmt.Println(s.AddTXT("_acme-challenge.chat.example.com", "first"))
	fmt.Println(s.AddTXT("_acme-challenge.chat.example.com", "second"))
	fmt.Println(s.AddTXT("_acme-challenge.example.org", "elsewhere"))
	// Output:
	// <nil>
	// <nil>
	// dnsserver: add TXT _acme-challenge.example.org.: outside every zone served
}

// TestOptionsSizeLimit asks every precomputed question with a cookie and
// NSID at small UDP sizes: whichever path answers, the reply fits the
// client's size and still carries both options, truncated (TC) or with
// additional records left out as NSD would.
func TestOptionsSizeLimit(t *testing.T) {
	s := New(Options{})
	s.SetModel(testModel(t, strings.Replace(testTOML, "[dns]", "[dns]\nnsid = \""+strings.Repeat("n", 100)+"\"", 1)))
	ix := s.ix.Load()
	full, truncated := 0, 0
	for key := range repliesOf(ix.fast) {
		name, _, err := dns.UnpackDomainName([]byte(key), 0)
		if err != nil {
			t.Fatal(err)
		}
		qtype := binary.BigEndian.Uint16([]byte(key[len(key)-2:]))
		for _, size := range []uint16{512, 600, 700, 800, 1232} {
			pkt := rawQueryFor(t, s, 9, name, qtype, variant{edns: size, opts: optCookie | optServer | optNSID})
			cl := testSender(s)
			var sc scratch
			out := ix.fast.replyTo(pkt, nil, &sc, &cl)
			if out == nil {
				full++
				out = s.handleRawFrom(ix, pkt, nil, (*fixedPeer)(&netip.AddrPort{}), &cl)
			}
			var m dns.Msg
			if err := m.Unpack(out); err != nil {
				t.Fatalf("%s %s at %d: %v", name, dns.TypeToString[qtype], size, err)
			}
			if m.Truncated {
				truncated++
			}
			if len(out) > max(int(size), 512) {
				t.Errorf("%s %s at %d: reply of %d bytes", name, dns.TypeToString[qtype], size, len(out))
			}
			if o := m.IsEdns0(); o == nil || len(o.Option) != 2 || !cl.cookieOK {
				t.Errorf("%s %s at %d: want NSID and a valid cookie in\n%v", name, dns.TypeToString[qtype], size, &m)
			}
		}
	}
	t.Logf("%d replies from the full path, %d truncated", full, truncated)
	if truncated == 0 {
		t.Errorf("no reply needed truncating: the test zone has no large answer")
	}
}

// BenchmarkFastPathPacket is the UDP packet edge on the fast path: sender,
// precomputed reply, counting, rate limiting off; the counts go to the
// shared counters once per 64 queries, as after one recvmmsg batch.
func BenchmarkFastPathPacket(b *testing.B) {
	s := New(Options{})
	s.SetModel(testModel(b, testTOML))
	ix := s.ix.Load()
	qs := benchMix(b)
	out := make([]byte, 0, 4096)
	var sc scratch
	from := &fixedPeer{}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if s.answerPacket(ix, qs[i%len(qs)], out, &sc, from) == nil {
			b.Fatal("no reply")
		}
		if i%64 == 63 {
			sc.tally.flush(&s.stats, transportUDP)
		}
	}
}

// TestFastPathLongNameAndANY: a name too long for a fastEntry key, and
// ANY anywhere, have no precomputed reply; the fast path must leave them
// to the full path, not answer NODATA from the zone's names.
func TestFastPathLongNameAndANY(t *testing.T) {
	// Labels of 63, 63, 63 and 48 bytes and matrix.test.: a wire name of
	// 254 bytes, a key of 256.
	long := strings.Repeat(strings.Repeat("l", 63)+".", 3) + strings.Repeat("l", 48) + "."
	s := New(Options{})
	s.SetModel(testModel(t, strings.Replace(testTOML, `origin = "matrix.test"`,
		"origin = \"matrix.test\"\nrecords = [\""+long+"matrix.test. 300 IN A 192.0.2.99\"]", 1)))
	ix := s.ix.Load()
	for _, q := range []struct {
		name   string
		qtype  uint16
		answer int
	}{
		{long + "matrix.test.", dns.TypeA, 1},
		{long + "matrix.test.", dns.TypeANY, 1},
		{long + "matrix.test.", dns.TypeTXT, 0},
		{"matrix.test.", dns.TypeANY, 1},
		{"hs.chat.example.com.", dns.TypeANY, 1},
		{"www.chat.example.com.", dns.TypeMX, 1}, // the CNAME, then NODATA at hs
	} {
		for _, v := range []variant{{}, {edns: 1232}} {
			pkt := rawQueryFor(t, s, 7, q.name, q.qtype, v)
			var sc scratch
			cl := testSender(s)
			if out := ix.fast.replyTo(pkt, make([]byte, 0, 4096), &sc, &cl); out != nil {
				t.Errorf("%s %s %+v: the fast path answered", q.name, dns.TypeToString[q.qtype], v)
			}
			cl = testSender(s)
			var m dns.Msg
			if err := m.Unpack(s.handleRawFrom(ix, pkt, nil, (*fixedPeer)(&netip.AddrPort{}), &cl)); err != nil {
				t.Fatal(err)
			}
			if m.Rcode != dns.RcodeSuccess || !m.Authoritative || len(m.Answer) != q.answer {
				t.Errorf("%s %s %+v: %v", q.name, dns.TypeToString[q.qtype], v, &m)
			}
		}
	}
}

// TestWarm: warming a query with an entry, in any letter case, loads the
// slot and the entry that answering then finds; a query the fast path
// cannot read is not warmed.
func TestWarm(t *testing.T) {
	s := New(Options{})
	s.SetModel(testModel(t, testTOML))
	f := s.ix.Load().fast
	var sc scratch
	n := 0
	for key := range repliesOf(f) {
		name, _, err := dns.UnpackDomainName([]byte(key[:len(key)-2]), 0)
		if err != nil {
			t.Fatal(err)
		}
		qtype := uint16(key[len(key)-2])<<8 | uint16(key[len(key)-1])
		for _, v := range []variant{{}, {edns: 1232, mixed: true}} {
			h, ok := f.warm(rawQuery(t, 1, name, qtype, v), &sc)
			if !ok {
				t.Fatalf("%s %s: not warmed", name, dns.TypeToString[qtype])
			}
			if got, want := f.warmEntry(h), f.slot([]byte(key)); got != want {
				t.Errorf("%s %s %+v: warmed slot %p, answering reads %p", name, dns.TypeToString[qtype], v, got, want)
			}
			n++
		}
	}
	if n < 20 {
		t.Fatalf("only %d queries warmed", n)
	}
	bad := rawQuery(t, 1, "we ird.chat.example.com.", dns.TypeA, variant{})
	if _, ok := f.warm(bad, &sc); ok {
		t.Error("a name with a space was warmed")
	}
	if _, ok := f.warm(bad[:14], &sc); ok {
		t.Error("a cut packet was warmed")
	}
}
