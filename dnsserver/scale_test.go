package dnsserver

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dev/signpost/config"
	"github.com/signpost-dev/signpost/internal/manyzones"
)

var tenant = manyzones.Origin

// providerModel parses a provider's file of n zones whose zone changed
// has one more record, extra, built on top of prev as a reload builds it.
func providerModel(t testing.TB, n, changed int, extra string, prev *config.Model) *config.Model {
	t.Helper()
	var b bytes.Buffer
	if err := manyzones.Write(&b, n, manyzones.Options{NoRRL: true, Extra: extra, Changed: changed}); err != nil {
		t.Fatal(err)
	}
	m, err := config.Parse("provider.toml", b.Bytes(), config.Options{Previous: prev})
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	return m
}

// TestReloadOneZoneOfMany reloads a provider's 300 zones, one of them
// changed each time, while clients query names in every zone over UDP
// and TCP: every query gets a reply, exactly that of one of the two
// models, and each reload rebuilds the changed zone only.
func TestReloadOneZoneOfMany(t *testing.T) {
	const zones, changed = 300, 7
	a0 := providerModel(t, zones, changed, "probe 300 IN A 192.0.2.1", nil)
	b := providerModel(t, zones, changed, "probe 300 IN A 192.0.2.2", a0)
	a := providerModel(t, zones, changed, "probe 300 IN A 192.0.2.1", b)
	s := startServer(t, a, Options{})

	// The answers a client may get: the hs address of every zone, which
	// no reload changes, and one of the two probe addresses.
	hs := map[string]string{}
	for _, z := range a.Zones {
		for _, rr := range z.Records {
			if rr.Header().Name == "hs."+z.Origin && rr.Header().Rrtype == dns.TypeA {
				hs[rr.Header().Name] = rr.String()
			}
		}
	}
	if len(hs) != zones {
		t.Fatalf("%d hs A records in %d zones", len(hs), zones)
	}
	probe := "probe." + tenant(changed) + "."
	wantProbe := map[string]bool{probe + "\t300\tIN\tA\t192.0.2.1": true, probe + "\t300\tIN\tA\t192.0.2.2": true}

	rebuilt := tenant(changed) + "."
	reloadUnderLoad(t, s, a, b, func(netw, addr string, c int) {
		cl := &dns.Client{Net: netw, Timeout: 5 * time.Second}
		for i := range 300 {
			name, want := probe, ""
			if i%3 != 0 {
				name = fmt.Sprintf("hs.%s.", tenant((i*7+c)%zones))
				want = hs[name]
			}
			q := new(dns.Msg)
			q.SetQuestion(name, dns.TypeA)
			r, _, err := cl.Exchange(q, addr)
			switch {
			case err != nil:
				t.Errorf("%s %s: lost query: %v", netw, name, err)
			case r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 1:
				t.Errorf("%s %s: bad reply: %v", netw, name, r)
			case want != "" && r.Answer[0].String() != want:
				t.Errorf("%s %s: got %s, want %s", netw, name, r.Answer[0], want)
			case want == "" && !wantProbe[r.Answer[0].String()]:
				t.Errorf("%s %s: reply from neither model: %s", netw, name, r.Answer[0])
			}
		}
	}, func(before, after *index) {
		for o, z := range after.zones {
			if reused := before.zones[o] == z; reused != (o != rebuilt) {
				t.Errorf("zone %s reused %v; want only the changed zone rebuilt", o, reused)
			}
		}
	})
}

// BenchmarkFastPathManyZones is the UDP packet edge over a provider's
// 10,000 zones, each query in another zone in random order (as
// bench/scale/run.sh queries), so that the precomputed replies do not
// stay in the processor's caches as BenchmarkFastPathPacket's do. It
// reports the live heap of the index per zone.
func BenchmarkFastPathManyZones(b *testing.B) {
	const zones = 10000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := New(Options{})
	s.SetModel(providerModel(b, zones, 0, "", nil))
	runtime.GC()
	runtime.ReadMemStats(&after)
	ix := s.ix.Load()
	rng := rand.New(rand.NewPCG(1, 2))
	var qs [][]byte
	for i, z := range rng.Perm(zones) {
		o := tenant(z)
		q := []struct {
			name  string
			qtype uint16
		}{{"hs." + o, dns.TypeA}, {"_matrix-fed._tcp." + o, dns.TypeSRV}, {o, dns.TypeAAAA}}[i%3]
		qs = append(qs, rawQuery(b, uint16(i), q.name+".", q.qtype, variant{edns: 1232}))
	}
	out := make([]byte, 0, 4096)
	var sc scratch
	from := &fixedPeer{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if s.answerPacket(ix, qs[i%len(qs)], out, &sc, from) == nil {
			b.Fatal("no reply")
		}
		if i%64 == 63 {
			sc.tally.flush(&s.stats, transportUDP)
		}
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/zones, "heapB/zone")
	runtime.KeepAlive(s)
}
