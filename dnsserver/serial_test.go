package dnsserver

import (
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/signpost-dev/signpost/config"
)

// servedSerial asks s over UDP for the SOA of zone.
func servedSerial(t *testing.T, s *testServer, zone string) uint32 {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(zone, dns.TypeSOA)
	r := exchange(t, "udp", s.udp, q)
	if len(r.Answer) != 1 {
		t.Fatalf("SOA %s: %v", zone, r)
	}
	return r.Answer[0].(*dns.SOA).Serial
}

// TestSerialNeverRegresses walks a zone through everything that changes
// it (reloads that config gives a lower serial than the one served,
// dynamic changes, a restart with the serials persisted through OnSerials
// and handed back as config.Options.Floor) and requires the served serial
// to go up by RFC 1982 at every change and to stay put otherwise.
func TestSerialNeverRegresses(t *testing.T) {
	clock := func() time.Time { return time.Unix(1000, 0) }
	parse := func(text string, o config.Options) *config.Model {
		t.Helper()
		o.Now = clock
		m, err := config.Parse("test.toml", []byte(text), o)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	text := secondaryTOML(startNotifySink(t, 0).addr)
	changed := strings.Replace(text, "198.51.100.7", "198.51.100.8", 1)

	var mu sync.Mutex
	var persisted map[string]uint32
	var s *testServer
	o := Options{OnSerials: func(serials map[string]uint32) {
		mu.Lock()
		defer mu.Unlock()
		// Persisted before served: the index still has the old serial.
		if old, ok := persisted["chat.example.com."]; ok && old != serials["chat.example.com."] {
			if z := s.ix.Load().zones["chat.example.com."]; z == nil || z.serial != old {
				t.Errorf("OnSerials called with %d when that was already served", serials["chat.example.com."])
			}
		}
		for origin, serial := range persisted {
			if serialAfter(serial, serials[origin]) {
				t.Errorf("OnSerials: %s went from %d back to %d", origin, serial, serials[origin])
			}
		}
		persisted = serials
	}}
	first := parse(text, config.Options{})
	s = startOnePort(t, first, o)
	want := uint32(1000)
	check := func(step string) {
		t.Helper()
		if got := servedSerial(t, s, "chat.example.com."); got != want {
			t.Errorf("%s: serial %d, want %d", step, got, want)
		}
		mu.Lock()
		defer mu.Unlock()
		if !maps.Equal(persisted, s.Serials()) {
			t.Errorf("%s: OnSerials last got %v, Serials() is %v", step, persisted, s.Serials())
		}
	}
	check("start")

	s.SetModel(parse(text, config.Options{Previous: first}))
	check("reload, nothing changed")

	if err := s.AddTXT(acmeName, "one"); err != nil {
		t.Fatal(err)
	}
	want++
	check("ACME TXT added")

	// config gives 1001 (the previous config serial plus one, as its clock
	// stands still); 1001 was served already, so 1002.
	second := parse(changed, config.Options{Previous: first})
	if second.Zones[0].SOA.Serial != 1001 {
		t.Fatalf("config serial %d, want 1001", second.Zones[0].SOA.Serial)
	}
	s.SetModel(second)
	want++
	check("reload with a change")

	// A model parsed without Previous gets the clock's serial, below what
	// was served: the change still moves the serial up.
	s.SetModel(parse(text, config.Options{}))
	want++
	check("reload with a change, config serial behind")

	if err := s.RemoveTXT(acmeName, "one"); err != nil {
		t.Fatal(err)
	}
	want++
	check("ACME TXT removed")

	// Restart: a new process loads the file with the persisted serials as
	// its floor, and serves above them, every zone and the catalog.
	mu.Lock()
	floor := maps.Clone(persisted)
	mu.Unlock()
	restarted := startOnePort(t, parse(text, config.Options{Floor: floor}), Options{})
	for origin, before := range floor {
		after := restarted.Serials()[origin]
		if !serialAfter(after, before) {
			t.Errorf("after restart %s serial %d, not after %d", origin, after, before)
		}
	}
	if got := servedSerial(t, restarted, "chat.example.com."); got != want+1 {
		t.Errorf("after restart: serial %d, want %d", got, want+1)
	}
}

// TestSerialWraps: serials count in RFC 1982 arithmetic, so the served
// serial may wrap past 2^32-1 to 0 and still be after it.
func TestSerialWraps(t *testing.T) {
	m, err := config.Parse("test.toml", []byte(testTOML), config.Options{Now: func() time.Time { return time.Unix(1<<32-1, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, m, Options{})
	if got := servedSerial(t, s, "chat.example.com."); got != 1<<32-1 {
		t.Fatalf("serial %d, want 4294967295", got)
	}
	if err := s.AddTXT(acmeName, "one"); err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, s, "chat.example.com."); got != 0 {
		t.Errorf("after the change: serial %d, want 0 (4294967295 + 1)", got)
	}
	if err := s.RemoveTXT(acmeName, "one"); err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, s, "chat.example.com."); got != 1 {
		t.Errorf("after the next change: serial %d, want 1", got)
	}
	for _, c := range []struct {
		a, b uint32
		want bool
	}{{1, 0, true}, {0, 1<<32 - 1, true}, {1<<32 - 1, 0, false}, {5, 5, false}, {1 << 31, 0, false}, {1<<31 - 1, 0, true}} {
		if got := serialAfter(c.a, c.b); got != c.want {
			t.Errorf("serialAfter(%d, %d) = %v", c.a, c.b, got)
		}
	}
}
