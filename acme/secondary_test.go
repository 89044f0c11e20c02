package acme_test

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dev/signpost/config"
	"github.com/signpost-dev/signpost/internal/testenv"
)

const (
	xfrKey    = "xfr.example.test."
	xfrSecret = "eGZyLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVmZ2hpaiE="
)

// secondaryTOML makes the server at addr a secondary of every zone, with a
// TSIG key for its transfers and our NOTIFYs.
func secondaryTOML(addr string) string {
	return fmt.Sprintf("[[key]]\nname = %q\nsecret = %q\n[[secondary]]\naddress = %q\nkey = %q\n", xfrKey, xfrSecret, addr, xfrKey)
}

// miniSecondary is the smallest real secondary: on a NOTIFY it copies the
// zone from the primary by AXFR with TSIG, then answers TXT queries from
// its copy. One that does not follow ignores NOTIFY and so never has the
// challenge record.
type miniSecondary struct {
	t       testing.TB
	addr    string
	primary string
	follow  bool
	// served is called (once) when a query first gets a TXT record.
	served func()

	mu      sync.Mutex
	records []dns.RR
	once    sync.Once
	wg      sync.WaitGroup // transfers in flight
}

func startMiniSecondary(t testing.TB, primary string, follow bool) *miniSecondary {
	t.Helper()
	pc, l := testenv.ListenDNS(t)
	ms := &miniSecondary{t: t, addr: pc.LocalAddr().String(), primary: primary, follow: follow}
	for _, srv := range []*dns.Server{
		{PacketConn: pc, TsigSecret: map[string]string{xfrKey: xfrSecret}, Handler: ms},
		{Listener: l, TsigSecret: map[string]string{xfrKey: xfrSecret}, Handler: ms},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan error, 1)
		go func() { done <- srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() {
			_ = srv.Shutdown()
			<-done
			ms.wg.Wait()
		})
	}
	return ms
}

func (ms *miniSecondary) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	if r.Opcode == dns.OpcodeNotify {
		if w.TsigStatus() != nil {
			m.Rcode = dns.RcodeNotAuth
		} else if t := r.IsTsig(); t != nil {
			m.SetTsig(t.Hdr.Name, t.Algorithm, 300, time.Now().Unix())
		}
		_ = w.WriteMsg(m)
		if ms.follow && w.TsigStatus() == nil && r.IsTsig() != nil {
			ms.wg.Add(1)
			go ms.transfer(r.Question[0].Name)
		}
		return
	}
	m.Authoritative = true
	m.Rcode = dns.RcodeNameError
	ms.mu.Lock()
	for _, rr := range ms.records {
		if strings.EqualFold(rr.Header().Name, r.Question[0].Name) {
			m.Rcode = dns.RcodeSuccess
			if rr.Header().Rrtype == r.Question[0].Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
	}
	ms.mu.Unlock()
	if len(m.Answer) > 0 && r.Question[0].Qtype == dns.TypeTXT && ms.served != nil {
		ms.once.Do(ms.served)
	}
	_ = w.WriteMsg(m)
}

// transfer copies zone from the primary, replacing what it had.
func (ms *miniSecondary) transfer(zone string) {
	defer ms.wg.Done()
	q := new(dns.Msg)
	q.SetAxfr(zone)
	q.SetTsig(xfrKey, dns.HmacSHA256, 300, time.Now().Unix())
	tr := &dns.Transfer{TsigSecret: map[string]string{xfrKey: xfrSecret}}
	ch, err := tr.In(q, ms.primary)
	if err != nil {
		ms.t.Errorf("secondary: AXFR %s: %v", zone, err)
		return
	}
	var copied []dns.RR
	for env := range ch {
		if env.Error != nil {
			ms.t.Errorf("secondary: AXFR %s: %v", zone, env.Error)
			return
		}
		copied = append(copied, env.RR...)
	}
	ms.mu.Lock()
	ms.records = copied
	ms.mu.Unlock()
}

// TestDNS01WaitsForSecondaries: with a [[secondary]] configured, the CA is
// asked to validate only once the secondary too serves the TXT record (the
// CA may ask any nameserver of the zone); a secondary that never gets it
// makes the attempt fail, naming the secondary.
func TestDNS01WaitsForSecondaries(t *testing.T) {
	const name = "chat.example.test"
	t.Run("secondary follows the NOTIFY", func(t *testing.T) {
		e := newEnv(t, pebbleOptions{})
		sec := startMiniSecondary(t, e.dnsAddr, true)
		validations := make(chan int64, 1)
		sec.served = func() { validations <- e.pebble.challenges.Load() }
		mark := e.logs.mark()
		e.start(e.model(site{serverNames: []string{name}, challenges: []string{config.ChallengeDNS01}, extra: secondaryTOML(sec.addr)}))
		e.obtained(mark, name)
		select {
		case n := <-validations:
			if n != 0 {
				t.Errorf("the secondary first served the TXT record after %d validation requests, want before any", n)
			}
		default:
			t.Error("the secondary never served the TXT record, yet the certificate was issued")
		}
	})
	t.Run("secondary never copies", func(t *testing.T) {
		e := newEnv(t, pebbleOptions{})
		e.dnsWait = 500 * time.Millisecond
		sec := startMiniSecondary(t, e.dnsAddr, false)
		mark := e.logs.mark()
		e.start(e.model(site{serverNames: []string{name}, challenges: []string{config.ChallengeDNS01}, extra: secondaryTOML(sec.addr)}))
		failed := e.logs.wait(t, mark, "certificate obtain failed", name)
		want := sec.addr + " did not serve TXT _acme-challenge.chat.example.test."
		if failed.Level != slog.LevelError || !strings.Contains(failed.Attrs["error"], want) {
			t.Errorf("failure logged as %+v; want error level and %q", failed, want)
		}
		if n := e.pebble.challenges.Load(); n != 0 {
			t.Errorf("the CA was asked to validate %d challenges, want 0", n)
		}
	})
}
