package dnsserver

import (
	"slices"
	"testing"

	"github.com/miekg/dns"
	"github.com/signpost-dev/signpost/internal/promtest"
)

// TestStats sends known queries over UDP and TCP, through the fast path and
// the full path, inside and outside the zones, and checks every counter.
func TestStats(t *testing.T) {
	s := startServer(t, testModel(t, testTOML), Options{})
	ask := func(net, name string, qtype uint16, edns bool) {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		if edns {
			m.SetEdns0(1232, false)
		}
		addr := s.udp
		if net == "tcp" {
			addr = s.tcp
		}
		if _, _, err := (&dns.Client{Net: net}).Exchange(m, addr); err != nil {
			t.Fatalf("%s %s %s: %v", net, name, dns.TypeToString[qtype], err)
		}
	}
	ask("udp", "chat.example.com.", dns.TypeA, false)                   // fast, NOERROR
	ask("udp", "chat.example.com.", dns.TypeA, true)                    // fast, NOERROR
	ask("udp", "nope.chat.example.com.", dns.TypeAAAA, false)           // fast, NXDOMAIN
	ask("udp", "hs.chat.example.com.", dns.TypeNAPTR, false)            // fast NODATA, type "other"
	ask("udp", "example.org.", dns.TypeA, false)                        // fast, REFUSED, no zone
	ask("udp", "_matrix-fed._tcp.chat.example.com.", dns.TypeSRV, true) // fast
	ask("tcp", "chat.example.com.", dns.TypeSOA, false)                 // fast
	ask("tcp", "chat.example.com.", dns.TypeSOA, false)
	ask("tcp", "chat.example.com.", dns.TypeANY, false) // RFC 8482 answer
	ask("tcp", "example.org.", dns.TypeTXT, false)

	// The full path: a class the fast path leaves alone.
	m := new(dns.Msg)
	m.SetQuestion("chat.example.com.", dns.TypeTXT)
	m.Question[0].Qclass = dns.ClassCHAOS
	if _, _, err := new(dns.Client).Exchange(m, s.udp); err != nil {
		t.Fatal(err)
	}

	vs := promtest.Values(t, s.Metrics())
	want := []string{
		`signpost_dns_queries_total{qtype="A",transport="udp",zone="chat.example.com."} 2`,
		`signpost_dns_queries_total{qtype="A",transport="udp",zone="none"} 1`,
		`signpost_dns_queries_total{qtype="AAAA",transport="udp",zone="chat.example.com."} 1`,
		`signpost_dns_queries_total{qtype="ANY",transport="tcp",zone="chat.example.com."} 1`,
		`signpost_dns_queries_total{qtype="SOA",transport="tcp",zone="chat.example.com."} 2`,
		`signpost_dns_queries_total{qtype="SRV",transport="udp",zone="chat.example.com."} 1`,
		`signpost_dns_queries_total{qtype="TXT",transport="tcp",zone="none"} 1`,
		`signpost_dns_queries_total{qtype="TXT",transport="udp",zone="chat.example.com."} 1`,
		`signpost_dns_queries_total{qtype="other",transport="udp",zone="chat.example.com."} 1`,
	}
	if got := promtest.Pick(vs, "signpost_dns_queries_total"); !slices.Equal(got, want) {
		t.Errorf("queries:\ngot  %q\nwant %q", got, want)
	}
	want = []string{
		`signpost_dns_responses_total{rcode="NOERROR",transport="tcp",zone="chat.example.com."} 3`,
		`signpost_dns_responses_total{rcode="NOERROR",transport="udp",zone="chat.example.com."} 4`,
		`signpost_dns_responses_total{rcode="NXDOMAIN",transport="udp",zone="chat.example.com."} 1`,
		`signpost_dns_responses_total{rcode="REFUSED",transport="tcp",zone="none"} 1`,
		`signpost_dns_responses_total{rcode="REFUSED",transport="udp",zone="chat.example.com."} 1`,
		`signpost_dns_responses_total{rcode="REFUSED",transport="udp",zone="none"} 1`,
	}
	if got := promtest.Pick(vs, "signpost_dns_responses_total"); !slices.Equal(got, want) {
		t.Errorf("responses:\ngot  %q\nwant %q", got, want)
	}
	for series, v := range map[string]float64{
		`signpost_dns_response_size_bytes_count{transport="udp"}`: 7,
		`signpost_dns_response_size_bytes_count{transport="tcp"}`: 4,
		`signpost_dns_rate_limited_total{action="dropped"}`:       0,
		`signpost_dns_tcp_connections_evicted_total`:              0,
		`signpost_dns_zone_serial{zone="chat.example.com."}`:      float64(s.Serials()["chat.example.com."]),
	} {
		if got, ok := vs[series]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, v)
		}
	}
}

// TestTallyManyZones counts replies that switch zone more often than the
// queue of adds holds before a flush, as a TCP batch may: every count
// reaches its zone's counters, and nothing is counted twice.
func TestTallyManyZones(t *testing.T) {
	var st dnsStats
	zones := make([]zoneStats, 3*maxAdds)
	var ta tally
	want := make([]uint64, len(zones))
	z := 0
	for i := range 5 * maxAdds {
		if i%3 != 0 { // else the zone before again: no switch
			z = (i * 7) % len(zones)
		}
		ta.count(transportTCP, &zones[z], dns.TypeA, dns.RcodeNameError, 100)
		want[z]++
	}
	ta.flush(&st, transportTCP)
	for z := range zones {
		q := zones[z].n[transportTCP][qtypeIndex(dns.TypeA)].Load()
		r := zones[z].n[transportTCP][nQtypes+dns.RcodeNameError].Load()
		if q != want[z] || r != want[z] {
			t.Errorf("zone %d: %d queries, %d NXDOMAIN; want %d", z, q, r, want[z])
		}
		if u := zones[z].n[transportUDP][qtypeIndex(dns.TypeA)].Load(); u != 0 {
			t.Errorf("zone %d: %d UDP queries counted; want 0", z, u)
		}
	}
	if n := st.sizes[transportTCP].count.Load(); n != 5*maxAdds {
		t.Errorf("%d sizes counted; want %d", n, 5*maxAdds)
	}
}
