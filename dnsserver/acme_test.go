package dnsserver

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// txtStore is the interface the acme package declares for DNS-01; the
// server must satisfy it.
type txtStore interface {
	AddTXT(name, value string) error
	RemoveTXT(name, value string) error
}

var _ txtStore = (*Server)(nil)

const acmeName = "_acme-challenge.chat.example.com."

// negSOA is soaNeg with another serial: every TXT change bumps it.
func negSOA(serial uint32) string {
	return strings.Replace(soaNeg, " 1 7200 ", fmt.Sprintf(" %d 7200 ", serial), 1)
}

func TestACMETXT(t *testing.T) {
	s := startServer(t, testModel(t, testTOML), Options{})
	nx := tc{Qname: acmeName, Qtype: dns.TypeTXT, EDNS: 1232, Rcode: dns.RcodeNameError, AA: true, Ns: []string{soaNeg}}
	both := tc{Qname: acmeName, Qtype: dns.TypeTXT, EDNS: 1232, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{acmeName + ` 60 IN TXT "token-one"`, acmeName + ` 60 IN TXT "token-two"`},
		Ns:     apexNS, Extra: []string{ns1A, ns1AAA}}
	two := tc{Qname: acmeName, Qtype: dns.TypeTXT, EDNS: 1232, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{acmeName + ` 60 IN TXT "token-two"`}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}}
	nodataA := tc{Qname: acmeName, Qtype: dns.TypeA, Rcode: dns.RcodeSuccess, AA: true, Ns: []string{negSOA(3)}}
	check := func(cases ...tc) {
		t.Helper()
		for _, c := range cases {
			for _, netw := range []string{"udp", "tcp"} {
				addr := s.udp
				if netw == "tcp" {
					addr = s.tcp
				}
				checkQuery(t, netw, addr, c)
				c.Qname = mixCase(c.Qname)
				checkQuery(t, netw, addr, c)
			}
		}
	}
	check(nx)
	if err := s.AddTXT("_acme-challenge.chat.example.com", "token-one"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddTXT("_ACME-challenge.chat.example.com.", "token-two"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddTXT(acmeName, "token-two"); err != nil { // again: no change
		t.Fatal(err)
	}
	check(both, nodataA)
	// A reload keeps the challenge values.
	s.SetModel(testModel(t, testTOML))
	check(both)
	if err := s.RemoveTXT(acmeName, "token-one"); err != nil {
		t.Fatal(err)
	}
	check(two)
	if err := s.RemoveTXT(acmeName, "token-one"); err != nil { // again: nothing to do
		t.Fatal(err)
	}
	if err := s.RemoveTXT(acmeName, "token-two"); err != nil {
		t.Fatal(err)
	}
	// Two adds and two removes: four changes, four serials on from 1,
	// however many calls changed nothing and whatever the reload did.
	nx.Ns = []string{negSOA(5)}
	check(nx)
	if got := s.Serials(); !reflect.DeepEqual(got, map[string]uint32{"chat.example.com.": 5, "matrix.test.": 1}) {
		t.Errorf("Serials() = %v", got)
	}

	// A name that already has TXT records in the zone: one RRset.
	if err := s.AddTXT("a.b.c.chat.example.com.", "challenge"); err != nil {
		t.Fatal(err)
	}
	check(tc{Qname: "a.b.c.chat.example.com.", Qtype: dns.TypeTXT, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{`a.b.c.chat.example.com. 300 IN TXT "deep"`, `a.b.c.chat.example.com. 60 IN TXT "challenge"`},
		Ns:     apexNS, Extra: []string{ns1A, ns1AAA}})
	if err := s.RemoveTXT("a.b.c.chat.example.com.", "challenge"); err != nil {
		t.Fatal(err)
	}

	for _, bad := range []struct{ name, value, err string }{
		{"_acme-challenge.example.org.", "v", "outside every zone"},
		{"www.chat.example.com.", "v", "CNAME or below a delegation"},
		{"_acme-challenge.child.chat.example.com.", "v", "CNAME or below a delegation"},
		{"bad..name", "v", "not a domain name"},
		{acmeName, strings.Repeat("x", 256), "at most 255"},
	} {
		err := s.AddTXT(bad.name, bad.value)
		if err == nil || !strings.Contains(err.Error(), bad.err) {
			t.Errorf("AddTXT(%q): %v, want an error saying %q", bad.name, err, bad.err)
		}
	}
}

// TestACMEConcurrent adds and removes values from many goroutines while
// queries run (go test -race checks the locking); at the end every value
// is gone and the name is NXDOMAIN again.
func TestACMEConcurrent(t *testing.T) {
	s := startServer(t, testModel(t, testTOML), Options{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("_acme-challenge.n%d.chat.example.com.", i%3)
			for j := range 20 {
				v := fmt.Sprintf("value-%d-%d", i, j)
				if err := s.AddTXT(name, v); err != nil {
					t.Error(err)
					return
				}
				q := new(dns.Msg)
				q.SetQuestion(name, dns.TypeTXT)
				r := exchange(t, "udp", s.udp, q)
				found := false
				for _, rr := range r.Answer {
					found = found || rr.(*dns.TXT).Txt[0] == v
				}
				if !found {
					t.Errorf("%s: value %s added but not served: %v", name, v, r)
				}
				if err := s.RemoveTXT(name, v); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	// 160 adds and 160 removes, each a change of its own.
	for i := range 3 {
		checkQuery(t, "udp", s.udp, tc{Qname: fmt.Sprintf("_acme-challenge.n%d.chat.example.com.", i), Qtype: dns.TypeTXT,
			Rcode: dns.RcodeNameError, AA: true, Ns: []string{negSOA(321)}})
	}
}

// TestIncrementalRebuild: after TXT changes, the index reuses the zones
// that did not change, and answers exactly as an index built from scratch.
func TestIncrementalRebuild(t *testing.T) {
	// A third zone with no CNAME out of it, so it must be reused.
	m := testModel(t, testTOML+"\n[[zone]]\norigin = \"quiet.test\"\naddresses = [\"192.0.2.9\"]\n")
	s := New(Options{})
	s.SetModel(m)
	before := s.ix.Load()
	steps := []func() error{
		func() error { return s.AddTXT("_acme-challenge.matrix.test.", "a") },
		func() error { return s.AddTXT("_acme-challenge.chat.example.com.", "b") },
		func() error { return s.AddTXT("_acme-challenge.matrix.test.", "c") },
		func() error { return s.RemoveTXT("_acme-challenge.matrix.test.", "a") },
		func() error { return s.AddTXT("matrix.test.", "apex") },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
		inc := s.ix.Load()
		full := buildIndex(m, s.dynamic(), s.Serials(), nil, s.signer, nil)
		if len(inc.fast.zones) != len(full.fast.zones) {
			t.Fatalf("step %d: %d zones on the fast path, fresh build has %d", i, len(inc.fast.zones), len(full.fast.zones))
		}
		incTable, fullTable := tableOf(inc.fast), tableOf(full.fast)
		if len(incTable) != len(fullTable) {
			t.Fatalf("step %d: %d precomputed replies, fresh build has %d", i, len(incTable), len(fullTable))
		}
		for k, e := range fullTable {
			if g, ok := incTable[k]; !ok || g.data != e.data {
				t.Errorf("step %d: entry for %x differs from a fresh build", i, k)
			}
		}
		for origin, z := range full.zones {
			if g := inc.zones[origin]; g == nil || !bytes.Equal(g.fast.neg[1].body, z.fast.neg[1].body) {
				t.Errorf("step %d: zone %s differs from a fresh build", i, origin)
			}
		}
	}
	if s.ix.Load().zones["quiet.test."] != before.zones["quiet.test."] {
		t.Errorf("quiet.test was rebuilt although nothing in it changed")
	}
	// The CNAME tomatrix.chat.example.com leads into matrix.test, so its
	// zone is rebuilt when matrix.test changes, and answers stay current.
	r := s.ix.Load().respond(query(tc{Qname: "tomatrix.chat.example.com.", Qtype: dns.TypeTXT}), false, nil)
	var msg dns.Msg
	if err := msg.Unpack(r); err != nil {
		t.Fatal(err)
	}
	if len(msg.Answer) != 2 { // the CNAME and the TXT at matrix.test
		t.Errorf("tomatrix TXT: %v", &msg)
	}
}
