package dnsserver

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// variants are the ways one question can be asked: with or without EDNS,
// buffer sizes around the limits, DO, RD, and letter case.
type variant struct {
	edns  uint16
	do    bool
	rd    bool
	mixed bool
}

var variants = func() []variant {
	var vs []variant
	for _, edns := range []uint16{0, 100, 512, 700, 1232, 4096} {
		for _, do := range []bool{false, true} {
			if edns == 0 && do {
				continue
			}
			for _, rd := range []bool{false, true} {
				for _, mixed := range []bool{false, true} {
					vs = append(vs, variant{edns, do, rd, mixed})
				}
			}
		}
	}
	return vs
}()

func rawQuery(t testing.TB, id uint16, name string, qtype uint16, v variant) []byte {
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
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatalf("pack %s: %v", name, err)
	}
	return b
}

// checkSame answers pkt on both paths and fails if the fast path answered
// with other bytes than the full path. It reports whether the fast path
// answered.
func checkSame(t *testing.T, s *Server, ix *index, pkt []byte) bool {
	t.Helper()
	var sc scratch
	fast := ix.fast.reply(pkt, make([]byte, 0, 4096), &sc)
	slow := s.handleRaw(ix, pkt, make([]byte, 0, 4096), nil)
	if fast == nil {
		return false
	}
	if !bytes.Equal(fast, slow) {
		var fm, sm dns.Msg
		_ = fm.Unpack(fast)
		_ = sm.Unpack(slow)
		t.Errorf("fast path differs from full path for %x\nfast:\n%v\nfull:\n%v", pkt, &fm, &sm)
	}
	return true
}

// TestFastPathSameBytes proves the fast path byte-identical to the full
// path: for every precomputed question in every variant, and for random
// names that exist, do not exist, or lie outside every zone.
func TestFastPathSameBytes(t *testing.T) {
	s := New(Options{})
	s.SetModel(testModel(t, testTOML))
	if err := s.AddTXT("_acme-challenge.chat.example.com.", "token-one"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddTXT("_acme-challenge.chat.example.com.", "token-two"); err != nil {
		t.Fatal(err)
	}
	ix := s.ix.Load()
	id := uint16(1)
	fastCount, total := 0, 0
	for key := range ix.fast.table {
		name, _, err := dns.UnpackDomainName([]byte(key), 0)
		if err != nil {
			t.Fatal(err)
		}
		qtype := binary.BigEndian.Uint16([]byte(key[len(key)-2:]))
		for _, v := range variants {
			id++
			total++
			pkt := rawQuery(t, id, name, qtype, v)
			if checkSame(t, s, ix, pkt) {
				fastCount++
			} else if v.edns == 0 || v.edns >= 1232 {
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
		if checkSame(t, s, ix, rawQuery(t, id, name, qtypes[rng.IntN(len(qtypes))], v)) {
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
		for _, v := range []variant{{}, {edns: 1232}, {edns: 1232, do: true, rd: true, mixed: true}} {
			id++
			if !checkSame(t, s, ix, rawQuery(t, id, q.name, q.qtype, v)) {
				t.Errorf("%s %s %+v took the full path", q.name, dns.TypeToString[q.qtype], v)
			}
		}
	}
	t.Logf("%d of %d queries answered by the fast path (%d of them from templates)", fastCount, total, negFast)
	if negFast == 0 {
		t.Errorf("no random query took the template path")
	}
}

// TestFastPathNoAlloc pins the fast path at zero allocations per query.
func TestFastPathNoAlloc(t *testing.T) {
	s := New(Options{})
	s.SetModel(testModel(t, testTOML))
	ix := s.ix.Load()
	out := make([]byte, 0, 4096)
	var sc scratch
	from := &fixedPeer{}
	for _, q := range benchMix(t) {
		if allocs := testing.AllocsPerRun(100, func() {
			if ix.fast.reply(q, out, &sc) == nil {
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

// fixedPeer is a sender address behind a pointer, as the Linux reader
// passes it.
type fixedPeer netip.AddrPort

func (p *fixedPeer) addrPort() netip.AddrPort { return netip.AddrPort(*p) }

// benchMix is the query mix of the benchmarks: SRV, A, AAAA, NXDOMAIN,
// NODATA, mixed case, with and without EDNS.
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
		buildIndex(m, nil, nil, nil)
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
