package dnsserver

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dev/signpost/internal/manyzones"
)

type notifyDone struct {
	zone     string
	target   string
	serial   uint32
	answered bool
	tries    int
}

// hookNotify returns a channel that hears of every NOTIFY job's end.
func hookNotify(events chan notifyDone) func(*Server) {
	return func(s *Server) {
		s.notify.onDone = func(k notifyKey, serial uint32, answered bool, tries int) {
			events <- notifyDone{k.zone, k.target.String(), serial, answered, tries}
		}
	}
}

func nextDone(t *testing.T, events chan notifyDone) notifyDone {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no NOTIFY job ended")
		return notifyDone{}
	}
}

// TestNotify: NOTIFY goes to each secondary of a zone when the zone starts
// being served, after a reload that changes it and after each ACME TXT
// change, signed with the secondary's key when it has one; a reload that
// changes nothing sends none.
func TestNotify(t *testing.T) {
	sink, plain := startNotifySink(t, 0), startNotifySink(t, 0)
	text := secondaryTOML(sink.addr) + fmt.Sprintf("\n[[secondary]]\naddress = %q\nzones = [\"matrix.test\"]\n", plain.addr)
	events := make(chan notifyDone, 100)
	s := startOnePort(t, testModel(t, text), Options{}, hookNotify(events))

	seen := map[string]bool{}
	for range 3 {
		n := sink.next(t)
		zone := n.msg.Question[0].Name
		checkNotify(t, n, zone, 1)
		seen[zone] = true
	}
	if !seen["chat.example.com."] || !seen["matrix.test."] || !seen[catalog] {
		t.Errorf("NOTIFY on start for %v, want both zones and the catalog", seen)
	}
	n := plain.next(t)
	if n.msg.IsTsig() != nil || n.msg.Question[0].Name != "matrix.test." || n.msg.Answer[0].(*dns.SOA).Serial != 1 {
		t.Errorf("NOTIFY to the secondary without a key: %v, want matrix.test serial 1, unsigned", n.msg)
	}
	for range 4 {
		if e := nextDone(t, events); !e.answered || e.tries != 1 {
			t.Errorf("NOTIFY %+v: want answered at the first try", e)
		}
	}

	// Nothing changed: no NOTIFY. SetModel starts any NOTIFY before it
	// returns, so none pending now means none at all.
	s.SetModel(testModel(t, text))
	if p := s.notify.pending(); p != 0 {
		t.Errorf("%d NOTIFYs after a reload that changed nothing", p)
	}

	s.SetModel(testModel(t, strings.Replace(text, "198.51.100.7", "198.51.100.8", 1)))
	checkNotify(t, sink.next(t), "chat.example.com.", 2)
	nextDone(t, events)
	if err := s.AddTXT(acmeName, "challenge"); err != nil {
		t.Fatal(err)
	}
	checkNotify(t, sink.next(t), "chat.example.com.", 3)
	nextDone(t, events)
	if err := s.RemoveTXT(acmeName, "challenge"); err != nil {
		t.Fatal(err)
	}
	checkNotify(t, sink.next(t), "chat.example.com.", 4)
	nextDone(t, events)
	if err := s.AddTXT("_acme-challenge.matrix.test.", "challenge"); err != nil {
		t.Fatal(err)
	}
	checkNotify(t, sink.next(t), "matrix.test.", 2)
	if n := plain.next(t); n.msg.Answer[0].(*dns.SOA).Serial != 2 {
		t.Errorf("NOTIFY to the second secondary: %v, want serial 2", n.msg)
	}
	nextDone(t, events)
	nextDone(t, events)
	sink.none(t)
	plain.none(t)
}

// oneZone limits the secondary of secondaryTOML to chat.example.com.
func oneZone(text string) string {
	return strings.Replace(text, "key = \"xfr.example.com\"\n\n[[update]]", "key = \"xfr.example.com\"\nzones = [\"chat.example.com\"]\n\n[[update]]", 1)
}

// TestNotifyRetries: a secondary that does not answer gets the NOTIFY
// again, with growing pauses, until it answers or the tries run out.
func TestNotifyRetries(t *testing.T) {
	o := Options{NotifyTries: 4, NotifyTimeout: 100 * time.Millisecond, NotifyRetryDelay: 10 * time.Millisecond}
	t.Run("answered at the third try", func(t *testing.T) {
		sink := startNotifySink(t, 2)
		events := make(chan notifyDone, 10)
		startOnePort(t, testModel(t, oneZone(secondaryTOML(sink.addr))), o, hookNotify(events))
		for range 3 {
			checkNotify(t, sink.next(t), "chat.example.com.", 1)
		}
		if e := nextDone(t, events); e != (notifyDone{"chat.example.com.", sink.addr, 1, true, 3}) {
			t.Errorf("NOTIFY ended %+v, want answered at the third try", e)
		}
		sink.none(t)
	})
	t.Run("never answered", func(t *testing.T) {
		sink := startNotifySink(t, 100)
		events := make(chan notifyDone, 10)
		startOnePort(t, testModel(t, oneZone(secondaryTOML(sink.addr))), o, hookNotify(events))
		for range 4 {
			checkNotify(t, sink.next(t), "chat.example.com.", 1)
		}
		if e := nextDone(t, events); e != (notifyDone{"chat.example.com.", sink.addr, 1, false, 4}) {
			t.Errorf("NOTIFY ended %+v, want given up after 4 tries", e)
		}
		sink.none(t)
	})
	t.Run("newer serial while retrying", func(t *testing.T) {
		sink := startNotifySink(t, 1)
		events := make(chan notifyDone, 10)
		s := startOnePort(t, testModel(t, oneZone(secondaryTOML(sink.addr))), o, hookNotify(events))
		checkNotify(t, sink.next(t), "chat.example.com.", 1) // ignored
		if err := s.AddTXT(acmeName, "challenge"); err != nil {
			t.Fatal(err)
		}
		// Whether the retry of serial 1 went out before the change or not,
		// the job ends with serial 2 answered, and only once.
		for {
			n := sink.next(t)
			if n.msg.Answer[0].(*dns.SOA).Serial == 2 {
				checkNotify(t, n, "chat.example.com.", 2)
				break
			}
		}
		if e := nextDone(t, events); e.serial != 2 || !e.answered {
			t.Errorf("NOTIFY ended %+v, want serial 2 answered", e)
		}
	})
	t.Run("shutdown abandons retries", func(t *testing.T) {
		sink := startNotifySink(t, 100)
		events := make(chan notifyDone, 10)
		s := New(Options{NotifyTries: 5, NotifyTimeout: 100 * time.Millisecond, NotifyRetryDelay: time.Hour})
		hookNotify(events)(s)
		s.SetModel(testModel(t, oneZone(secondaryTOML(sink.addr))))
		sink.next(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown with a NOTIFY waiting an hour to retry: %v", err)
		}
		if e := nextDone(t, events); e.answered || e.tries != 1 {
			t.Errorf("NOTIFY ended %+v, want abandoned after one try", e)
		}
	})
}

// TestNotifyBounded: with many zones, at most max NOTIFYs are outstanding at
// once; the others wait their turn and every zone's goes out once the
// secondary answers.
func TestNotifyBounded(t *testing.T) {
	const zones, max = 20, 4
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	// The secondary holds its answers until released, then answers all.
	type held struct {
		to  net.Addr
		msg *dns.Msg
	}
	got := make(chan held, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			m := new(dns.Msg)
			if m.Unpack(buf[:n]) == nil {
				got <- held{from, m}
			}
		}
	}()
	answer := func(h held) {
		r := new(dns.Msg)
		r.SetReply(h.msg)
		r.Extra = nil // unsigned: the job ends answered, whatever the signature
		b, _ := r.Pack()
		pc.WriteTo(b, h.to)
	}

	events := make(chan notifyDone, zones)
	var b bytes.Buffer
	if err := manyzones.Write(&b, zones, manyzones.Options{Secondary: pc.LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	m := testModel(t, b.String())
	startOnePort(t, m, Options{NotifyTimeout: 10 * time.Second}, hookNotify(events), func(s *Server) { s.notify.max = max })

	var first []held
	for range max {
		select {
		case h := <-got:
			first = append(first, h)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d NOTIFYs arrived, want %d", len(first), max)
		}
	}
	// A NOTIFY beyond the bound would come at once, not after a while.
	select {
	case h := <-got:
		t.Fatalf("NOTIFY for %s while %d were unanswered, want at most %d at once", h.msg.Question[0].Name, max, max)
	case <-time.After(200 * time.Millisecond):
	}
	for _, h := range first {
		answer(h)
	}
	seen := map[string]int{}
	for _, h := range first {
		seen[h.msg.Question[0].Name]++
	}
	for len(seen) < zones {
		select {
		case h := <-got:
			seen[h.msg.Question[0].Name]++
			answer(h)
		case <-time.After(10 * time.Second):
			t.Fatalf("NOTIFY for %d of %d zones", len(seen), zones)
		}
	}
	for range zones {
		if e := nextDone(t, events); !e.answered || e.tries != 1 {
			t.Errorf("NOTIFY %+v: want answered at the first try", e)
		}
	}
	for z, c := range seen {
		if c != 1 {
			t.Errorf("%s: %d NOTIFYs, want 1", z, c)
		}
	}
}
