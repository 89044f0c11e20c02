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
		b, err := query(c).Pack()
		if err != nil {
			f.Fatal(err)
		}
		binary.BigEndian.PutUint16(b, uint16(i))
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

	// Every key and policy of secondaryTOML, but no secondary: nothing to
	// NOTIFY, so no goroutine outlives the fuzzing.
	text := secondaryTOML("127.0.0.1:9")
	text = text[:strings.Index(text, "[[secondary]]")] + text[strings.Index(text, "[[update]]"):]
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
