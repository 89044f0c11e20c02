package dnsserver

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// FuzzHandle feeds arbitrary packets to both answering paths without the
// recover safety net. Neither may panic; a reply must parse, carry the
// query's ID and be a response; and whenever the fast path answers, its
// bytes must be the full path's. Run with
//
//	go test -run=NONE -fuzz=FuzzHandle -fuzzminimizetime=5s ./dnsserver
func FuzzHandle(f *testing.F) {
	for _, c := range rawCases {
		f.Add(c.pkt)
	}
	for _, q := range benchMix(f) {
		f.Add(q)
	}
	for i, c := range lookupCases {
		q := query(c)
		b, err := q.Pack()
		if err != nil {
			f.Fatal(err)
		}
		binary.BigEndian.PutUint16(b, uint16(i))
		f.Add(b)
		// Class ANY, answered from the IN data on the full path only.
		q.Question[0].Qclass = dns.ClassANY
		if b, err = q.Pack(); err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// The special path: NOTIFY, UPDATE, transfers, signed messages and
	// the catalog zone.
	sign := func(m *dns.Msg, key, alg, secret string) {
		m.SetTsig(key, alg, 300, time.Now().Unix())
		b, _, err := dns.TsigGenerate(m, secret, "", false)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	notify := new(dns.Msg)
	notify.SetNotify("chat.example.com.")
	upd := new(dns.Msg)
	upd.SetUpdate("chat.example.com.")
	upd.RRsetNotUsed([]dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: acmeName, Rrtype: dns.TypeTXT}}})
	upd.Insert([]dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: acmeName, Rrtype: dns.TypeTXT, Ttl: 60}, Txt: []string{"fuzz"}}})
	ixfr := new(dns.Msg)
	ixfr.SetIxfr("chat.example.com.", 1, "ns.", "h.")
	catSOA := new(dns.Msg)
	catSOA.SetQuestion(catalog, dns.TypeSOA)
	for _, m := range []*dns.Msg{notify, upd, ixfr, catSOA} {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		sign(m.Copy(), xfrKey, dns.HmacSHA256, xfrSecret)
	}
	sign(upd.Copy(), hsKey, dns.HmacSHA512, hsSecret)
	sign(query(lookupCases[0]), otherKey, dns.HmacSHA256, otherSecret)
	axfr := new(dns.Msg)
	axfr.SetAxfr("chat.example.com.")
	sign(axfr, xfrKey, dns.HmacSHA256, xfrSecret)
	for _, name := range []string{"_matrix-fed._tcp.old.chat.example.com.", "x.loopa.chat.example.com.", "a.long.chat.example.com."} {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeSRV)
		b, err := q.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}

	// Every key and policy of secondaryTOML, but no secondary: nothing to
	// NOTIFY, so no goroutine outlives the fuzzing. And DNAMEs, whose
	// synthesis the fast path must leave to the full path.
	text := secondaryTOML("127.0.0.1:9")
	text = dnameTOML(text[:strings.Index(text, "[[secondary]]")] + text[strings.Index(text, "[[update]]"):])
	s := New(Options{})
	s.SetModel(testModel(f, text))
	if err := s.AddTXT(acmeName, "token"); err != nil {
		f.Fatal(err)
	}
	ix := s.ix.Load()
	f.Fuzz(func(t *testing.T, pkt []byte) {
		// The full path verifies TSIG in place (miekg/dns lowers ARCOUNT),
		// so each path gets its own copy and the checks see the original.
		var sc scratch
		// A reader warms each packet before answering it (udp_linux.go).
		if h, ok := ix.fast.warm(pkt, &sc); ok {
			ix.fast.warmEntry(h)
		}
		fast := ix.fast.reply(bytes.Clone(pkt), make([]byte, 0, 4096), &sc)
		slow := s.handleRaw(ix, bytes.Clone(pkt), make([]byte, 0, 4096), nil)
		if fast != nil && !bytes.Equal(fast, slow) {
			t.Fatalf("fast path %x, full path %x", fast, slow)
		}
		if slow == nil {
			return
		}
		var m dns.Msg
		if err := m.Unpack(slow); err != nil {
			t.Fatalf("reply %x does not parse: %v", slow, err)
		}
		if !m.Response || !bytes.Equal(slow[:2], pkt[:2]) {
			t.Fatalf("reply %x to %x: not a response with the query's ID", slow, pkt)
		}
		// The TCP path answers the parsed message the same way.
		var req dns.Msg
		if req.Unpack(pkt) == nil {
			_ = ix.respond(&req, true, nil)
		}
	})
}

// FuzzUpdate feeds arbitrary UPDATE messages to the TSIG and UPDATE path,
// unsigned or signed afresh with a key that has an [[update]] policy or
// with one that has none (the fuzzer cannot forge a MAC, so it chooses
// the key and the server verifies a real signature). Nothing may panic; a
// reply must parse and carry the query's ID; and the zones must never hold
// a record UPDATE wrote outside the policy or beyond its bounds: TXT only,
// one string of at most 255 bytes, at most maxUpdateRRs a name. Run with
//
//	go test -run=NONE -fuzz=FuzzUpdate -fuzzminimizetime=5s ./dnsserver
func FuzzUpdate(f *testing.F) {
	add := func(name string, values ...string) *dns.Msg {
		m := new(dns.Msg)
		m.SetUpdate("chat.example.com.")
		for _, v := range values {
			m.Insert([]dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Ttl: 60}, Txt: []string{v}}})
		}
		return m
	}
	many := make([]string, maxUpdateRRs+1)
	for i := range many {
		many[i] = fmt.Sprintf("value-%d", i)
	}
	del := new(dns.Msg)
	del.SetUpdate("chat.example.com.")
	del.RemoveRRset([]dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: acmeName, Rrtype: dns.TypeTXT}}})
	delOne := new(dns.Msg)
	delOne.SetUpdate("chat.example.com.")
	delOne.Remove([]dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: acmeName, Rrtype: dns.TypeTXT}, Txt: []string{"tok"}}})
	prereq := add(acmeName, "tok")
	prereq.RRsetNotUsed([]dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: acmeName, Rrtype: dns.TypeTXT}}})
	aRR := new(dns.Msg)
	aRR.SetUpdate("chat.example.com.")
	aRR.Insert([]dns.RR{&dns.A{Hdr: dns.RR_Header{Name: acmeName, Rrtype: dns.TypeA, Ttl: 60}, A: []byte{192, 0, 2, 1}}})
	twoStrings := add(acmeName, "a")
	twoStrings.Ns[0].(*dns.TXT).Txt = []string{"a", "b"}
	for _, m := range []*dns.Msg{
		add(acmeName, "tok"), add(acmeName, "tok", "tok2"), add(acmeName, many...),
		add(acmeName, strings.Repeat("x", 255)), add(acmeName, strings.Repeat(`\000`, 255)),
		add("_acme-challenge.hs.chat.example.com.", "tok"),
		add("_acme-challenge.matrix.test.", "tok"), add("hs.chat.example.com.", "tok"),
		del, delOne, prereq, aRR, twoStrings,
	} {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		for key := range uint8(3) {
			f.Add(b, key)
		}
	}

	text := secondaryTOML("127.0.0.1:9")
	text = text[:strings.Index(text, "[[secondary]]")] + text[strings.Index(text, "[[update]]"):]
	model := testModel(f, text)
	// Every input starts from the configuration and the one TXT record
	// added here, so a failure reproduces from the one input the fuzzer
	// writes. Building a server costs more than most inputs, which are
	// refused and change nothing, so a new one is built only after an
	// input changed what the server serves.
	var s *Server
	fresh := func(t testing.TB) {
		s = New(Options{})
		s.SetModel(model)
		if err := s.AddTXT(acmeName, "ours"); err != nil {
			t.Fatal(err)
		}
	}
	fresh(f)
	keys := []*tsigKeyT{nil, hs, {xfrKey, dns.HmacSHA256, xfrSecret}}
	f.Fuzz(func(t *testing.T, raw []byte, key uint8) {
		if len(raw) < 12 {
			return
		}
		pkt := bytes.Clone(raw)
		pkt[2] = pkt[2]&^0xF8 | dns.OpcodeUpdate<<3 // a query, opcode UPDATE
		if k := keys[int(key)%len(keys)]; k != nil {
			var m dns.Msg
			if m.Unpack(pkt) != nil {
				return
			}
			if ts := m.IsTsig(); ts != nil {
				m.Extra = m.Extra[:len(m.Extra)-1]
			}
			m.SetTsig(k.name, k.alg, 300, time.Now().Unix())
			b, _, err := dns.TsigGenerate(&m, k.secret, "", false)
			if err != nil {
				return // a message miekg/dns cannot pack
			}
			pkt = b
		}
		// Each message is new to the replay cache: the fuzzer may well
		// send the same one twice within a second, and more than
		// maxSeenPerKey in five minutes.
		seen := s.ix.Load().keys.seen
		seen.mu.Lock()
		clear(seen.byKey)
		seen.mu.Unlock()

		ix := s.ix.Load()
		out := s.handleRaw(ix, bytes.Clone(pkt), make([]byte, 0, 4096), nil)
		if out != nil {
			var r dns.Msg
			if err := r.Unpack(out); err != nil {
				t.Fatalf("reply %x does not parse: %v", out, err)
			}
			if !r.Response || !bytes.Equal(out[:2], pkt[:2]) {
				t.Fatalf("reply %x to %x: not a response with the query's ID", out, pkt)
			}
		}
		checkUpdateBounds(t, s)
		if s.ix.Load() != ix {
			fresh(t)
		}
	})
}

// checkUpdateBounds requires what UPDATE wrote, and what the served zones
// hold beyond the configuration, to be within the policy and the bounds.
func checkUpdateBounds(t *testing.T, s *Server) {
	t.Helper()
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	for name, set := range s.upd {
		if len(set.rrs) == 0 || len(set.rrs) > maxUpdateRRs {
			t.Fatalf("%d records written at %s", len(set.rrs), name)
		}
		for _, r := range set.rrs {
			if !mayUpdate(s.model, r.key, name) || len(r.txt) != 1 || txtWireLen(t, r.txt[0]) > 255 {
				t.Fatalf("record %q by key %q at %s: outside the policy or the bounds", r.txt, r.key, name)
			}
		}
	}
	for _, z := range s.ix.Load().zones {
		perName := map[string]int{}
		for _, rr := range z.records[len(z.src.Records):] {
			h := rr.Header()
			txt, ok := rr.(*dns.TXT)
			if !ok || len(txt.Txt) != 1 || txtWireLen(t, txt.Txt[0]) > 255 || !mayUpdate(s.model, hsKey, lower(h.Name)) {
				t.Fatalf("zone %s serves %v, outside the policy or the bounds", z.origin, rr)
			}
			if perName[h.Name]++; perName[h.Name] > maxUpdateRRs+len(s.txt[h.Name]) {
				t.Fatalf("zone %s serves %d TXT records at %s", z.origin, perName[h.Name], h.Name)
			}
		}
	}
}

// txtWireLen is the length on the wire of a TXT string that miekg/dns
// holds in presentation form, where a byte may be written as \DDD.
func txtWireLen(t *testing.T, v string) int {
	t.Helper()
	rr := &dns.TXT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{v}}
	buf := make([]byte, dns.Len(rr))
	off, err := dns.PackRR(rr, buf, 0, nil, false)
	if err != nil {
		t.Fatalf("TXT string %q does not pack: %v", v, err)
	}
	return off - 11 - 1 // the root name and the fixed header; the string's length byte
}

// TestMain adds a goroutine leak check: after the tests, no goroutine of
// this package or of miekg/dns may be left (servers shut down, readers and
// connection handlers gone).
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := checkLeaks(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func checkLeaks() error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "checkLeaks") {
				continue
			}
			if strings.Contains(g, "signpost/dnsserver.") || strings.Contains(g, "miekg/dns.") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leaked goroutines:\n%s", strings.Join(leaked, "\n\n"))
		}
		// Goroutines of the last test's Shutdown may still be on their way
		// out; give them a moment.
		time.Sleep(10 * time.Millisecond)
	}
}
