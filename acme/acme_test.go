package acme_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dev/signpost/acme"
	"github.com/signpost-dev/signpost/config"
	"github.com/signpost-dev/signpost/internal/promtest"
)

// TestObtain is the end-to-end proof per challenge type: signpost starts
// with an empty storage directory and offers only one challenge type; the
// certificate comes from Pebble, whose validator resolves names through
// signpost's DNS server and connects to signpost's listeners; a client that
// trusts only Pebble's root fetches the well-known document over HTTP/2.
func TestObtain(t *testing.T) {
	for _, challenge := range []string{config.ChallengeHTTP01, config.ChallengeTLSALPN01, config.ChallengeDNS01} {
		t.Run(challenge, func(t *testing.T) {
			e := newEnv(t, pebbleOptions{})
			const name = "chat.example.test"
			mod := e.model(site{serverNames: []string{name}, challenges: []string{challenge}})
			mark := e.logs.mark()
			in := e.start(mod)
			got := e.obtained(mark, name)
			managing := e.logs.wait(t, mark, "managing certificate", name)
			t.Logf("%s: issuance took %.3fs", challenge, got.Time.Sub(managing.Time).Seconds())
			if got.Level != slog.LevelInfo || got.Attrs["issuer"] == "" {
				t.Errorf("obtained record %+v, want info with issuer", got)
			}
			leaf := e.fetch(mod, name, e.roots())

			// One obtain, one challenge of the offered type, and the
			// expiry of the certificate served.
			vs := promtest.Values(t, in.mgr.Metrics())
			want := map[string]float64{
				`signpost_certificate_attempts_total{action="obtain"}`:                     1,
				`signpost_certificate_attempts_total{action="renew"}`:                      0,
				`signpost_certificate_failures_total{action="obtain"}`:                     0,
				`signpost_certificate_failures_total{action="renew"}`:                      0,
				`signpost_certificate_last_failure_timestamp_seconds{name="` + name + `"}`: 0,
				`signpost_certificate_not_after_seconds{name="` + name + `"}`:              float64(leaf.NotAfter.Unix()),
				`signpost_acme_challenges_total{challenge="` + challenge + `"}`:            1,
				`signpost_acme_challenge_failures_total{challenge="` + challenge + `"}`:    0,
				`signpost_acme_orders_waiting`:                                             0,
				`signpost_acme_orders_in_flight`:                                           0,
			}
			for _, other := range []string{config.ChallengeHTTP01, config.ChallengeTLSALPN01, config.ChallengeDNS01} {
				if other != challenge {
					want[`signpost_acme_challenges_total{challenge="`+other+`"}`] = 0
					want[`signpost_acme_challenge_failures_total{challenge="`+other+`"}`] = 0
				}
			}
			if !maps.Equal(vs, want) {
				t.Errorf("metrics:\ngot  %v\nwant %v", vs, want)
			}

			// Exactly one challenge of the offered type was answered.
			if n := len(e.logs.find(mark, "served key authentication")) + len(e.logs.find(mark, "served key authentication certificate")); (challenge == config.ChallengeDNS01) != (n == 0) {
				t.Errorf("%d HTTP-01/TLS-ALPN-01 answers logged for %s", n, challenge)
			}
			if n := e.pebble.orders.Load(); n != 1 {
				t.Errorf("orders = %d, want 1", n)
			}
			if n := e.pebble.accounts.Load(); n != 1 {
				t.Errorf("accounts = %d, want 1", n)
			}
			// ARI is on by default in certmagic 0.25: the renewal window was
			// fetched with the certificate and stored with it.
			if n := e.pebble.ari.Load(); n < 1 {
				t.Errorf("renewal info requests = %d, want at least 1", n)
			}
			checkStorage(t, e, name)
		})
	}
}

// checkStorage checks the certificate, its key and its metadata (with the
// ARI window) are in storage, and that private keys are 0600.
func checkStorage(t *testing.T, e *env, name string) {
	t.Helper()
	fs := files(t, e.storage)
	var crt, key, meta, acct int
	for p, f := range fs {
		switch {
		case strings.HasSuffix(p, "/"+name+"/"+name+".crt"):
			crt++
		case strings.HasSuffix(p, "/"+name+"/"+name+".key"):
			key++
		case strings.HasSuffix(p, "/"+name+"/"+name+".json"):
			meta++
			var m struct {
				IssuerData struct {
					RenewalInfo struct {
						SuggestedWindow struct{ Start, End time.Time } `json:"suggestedWindow"`
					} `json:"renewal_info"`
				} `json:"issuer_data"`
			}
			if err := json.Unmarshal([]byte(f.data), &m); err != nil {
				t.Errorf("%s: %v", p, err)
			}
			if w := m.IssuerData.RenewalInfo.SuggestedWindow; w.Start.IsZero() || !w.End.After(w.Start) {
				t.Errorf("%s: no ARI window stored: %s", p, f.data)
			}
		case strings.HasPrefix(p, "acme/") && strings.HasSuffix(p, ".key"):
			acct++
		}
		if strings.HasSuffix(p, ".key") && f.mode != 0o600 {
			t.Errorf("%s has mode %v, want 0600", p, f.mode)
		}
	}
	if crt != 1 || key != 1 || meta != 1 || acct != 1 {
		t.Errorf("storage has %d certificates, %d keys, %d metadata files, %d account keys for %s, want 1 each; files: %q",
			crt, key, meta, acct, name, slices.Sorted(mapsKeys(fs)))
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestRestart: the second start serves the stored certificate, reuses the
// stored account and asks the CA for nothing new.
func TestRestart(t *testing.T) {
	e := newEnv(t, pebbleOptions{})
	const name = "chat.example.test"
	mod := e.model(site{serverNames: []string{name}, challenges: []string{config.ChallengeHTTP01}})
	mark := e.logs.mark()
	first := e.start(mod)
	e.obtained(mark, name)
	before := e.fetch(mod, name, e.roots())
	first.stop()
	orders, accounts := e.pebble.orders.Load(), e.pebble.accounts.Load()
	stored := files(t, e.storage)

	mark = e.logs.mark()
	second := e.start(mod)
	e.logs.wait(t, mark, "serving certificate", name)
	after := e.fetch(mod, name, e.roots())
	second.stop()

	if !after.Equal(before) {
		t.Errorf("second start serves serial %s, want the stored %s", after.SerialNumber, before.SerialNumber)
	}
	if got := e.pebble.orders.Load(); got != orders {
		t.Errorf("orders went from %d to %d across the restart", orders, got)
	}
	if got := e.pebble.accounts.Load(); got != accounts {
		t.Errorf("accounts went from %d to %d across the restart", accounts, got)
	}
	for _, msg := range []string{"obtaining certificate", "certificate obtained", "certificate renewed"} {
		if r := e.logs.find(mark, msg); len(r) > 0 {
			t.Errorf("second start logged %q: %+v", msg, r)
		}
	}
	if got := files(t, e.storage); !mapsEqual(got, stored) {
		t.Errorf("storage changed across the restart:\nbefore %q\nafter  %q", slices.Sorted(mapsKeys(stored)), slices.Sorted(mapsKeys(got)))
	}
}

func mapsEqual(a, b map[string]fileInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestCAOutage: with the CA gone, signpost still starts and serves the
// stored certificate; the renewal it needs fails, is logged with the name
// and the reason, and nothing in storage is deleted or changed.
func TestCAOutage(t *testing.T) {
	// Certificates live 40 minutes: under certmagic's emergency threshold
	// (5 renewal-check intervals of 10 minutes), so the stored one is due for
	// renewal as soon as the second start loads it.
	e := newEnv(t, pebbleOptions{validity: 40 * 60})
	const name = "chat.example.test"
	mod := e.model(site{serverNames: []string{name}, challenges: []string{config.ChallengeDNS01, config.ChallengeHTTP01}})
	mark := e.logs.mark()
	first := e.start(mod)
	e.obtained(mark, name)
	before := e.fetch(mod, name, e.roots())
	first.stop()
	stored := files(t, e.storage)

	e.pebble.srv.Close()
	mark = e.logs.mark()
	second := e.start(mod)
	e.logs.wait(t, mark, "serving certificate", name)
	failed := e.logs.wait(t, mark, "certificate renewal failed", name)
	if failed.Level != slog.LevelError || !strings.Contains(failed.Attrs["error"], "connection refused") || failed.Attrs["issuer"] == "" {
		t.Errorf("renewal failure logged as %+v; want error level, the issuer, and the reason (connection refused)", failed)
	}
	after := e.fetch(mod, name, e.roots())
	vs := promtest.Values(t, second.mgr.Metrics())
	second.stop()
	if n := vs[`signpost_certificate_failures_total{action="renew"}`]; n < 1 {
		t.Errorf("renewal failures counted: %v, want at least 1", n)
	}
	if ts, ok := vs[`signpost_certificate_last_failure_timestamp_seconds{name="`+name+`"}`]; !ok || ts < float64(failed.Time.Unix()-1) {
		t.Errorf("last failure time %v (present %v), want about %v", ts, ok, failed.Time.Unix())
	}
	if got := vs[`signpost_certificate_not_after_seconds{name="`+name+`"}`]; got != float64(before.NotAfter.Unix()) {
		t.Errorf("not_after during the outage: %v, want the stored certificate's %v", got, before.NotAfter.Unix())
	}
	if !after.Equal(before) {
		t.Errorf("serves serial %s during the outage, want the stored %s", after.SerialNumber, before.SerialNumber)
	}
	got := files(t, e.storage)
	for p, f := range stored {
		if g, ok := got[p]; !ok {
			t.Errorf("%s was deleted during the outage", p)
		} else if g != f {
			t.Errorf("%s changed during the outage", p)
		}
	}
}

// TestReload: a server name added by a reload gets its certificate without
// a restart; a name removed is no longer managed or served.
func TestReload(t *testing.T) {
	e := newEnv(t, pebbleOptions{})
	const a, b = "chat.example.test", "team.example.test"
	ch := []string{config.ChallengeTLSALPN01}
	mod1 := e.model(site{serverNames: []string{a}, challenges: ch})
	mark := e.logs.mark()
	in := e.start(mod1)
	e.obtained(mark, a)

	mod2 := e.model(site{serverNames: []string{a, b}, challenges: ch})
	mark = e.logs.mark()
	in.setModel(mod2)
	e.obtained(mark, b)
	e.fetch(mod2, a, e.roots())
	e.fetch(mod2, b, e.roots())
	if n := e.pebble.orders.Load(); n != 2 {
		t.Errorf("orders = %d, want 2 (a is not obtained again)", n)
	}

	// A client without SNI gets the first name of the model.
	if leaf, err := e.handshake("", nil); err != nil || !slices.Equal(leaf.DNSNames, []string{a}) {
		t.Errorf("handshake without SNI: %v, %v; want the certificate of %s", leafNames(leaf), err, a)
	}

	mod3 := e.model(site{serverNames: []string{b}, challenges: ch})
	mark = e.logs.mark()
	in.setModel(mod3)
	e.logs.wait(t, mark, "certificate no longer managed", a)
	if _, err := e.handshake(a, e.roots()); err == nil {
		t.Errorf("handshake for removed name %s succeeded, want no certificate", a)
	}
	e.fetch(mod3, b, e.roots())
	if leaf, err := e.handshake("", nil); err != nil || !slices.Equal(leaf.DNSNames, []string{b}) {
		t.Errorf("handshake without SNI: %v, %v; want the certificate of %s", leafNames(leaf), err, b)
	}
	// Its files stay: a name that comes back is served again at once.
	checkStorage(t, e, a)
	in.stop()
}

// txtBarrier is a TXTStore in front of the real DNS server that holds each
// AddTXT until a name carries two values at once, and then records what the
// DNS server answers for it. It makes two challenges under one name overlap
// for certain instead of by luck.
type txtBarrier struct {
	acme.TXTStore
	e      *env
	mu     sync.Mutex
	values map[string][]string
	both   chan struct{}
	answer *dns.Msg // the DNS answer for the name once it held both values
}

func (b *txtBarrier) AddTXT(name, value string) error {
	if err := b.TXTStore.AddTXT(name, value); err != nil {
		return err
	}
	b.mu.Lock()
	b.values[name] = append(b.values[name], value)
	if len(b.values[name]) == 2 {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeTXT)
		r, _, err := (&dns.Client{Net: "udp"}).Exchange(q, b.e.dnsAddr)
		if err != nil {
			b.e.t.Errorf("query %s TXT: %v", name, err)
		}
		b.answer = r
		close(b.both)
	}
	b.mu.Unlock()
	select {
	case <-b.both:
	case <-time.After(waitLimit):
		b.e.t.Errorf("AddTXT %s: no second value under the name within %s", name, waitLimit)
	}
	return nil
}

func (b *txtBarrier) RemoveTXT(name, value string) error {
	b.mu.Lock()
	b.values[name] = slices.DeleteFunc(b.values[name], func(v string) bool { return v == value })
	b.mu.Unlock()
	return b.TXTStore.RemoveTXT(name, value)
}

// TestDNS01TwoValues: chat.example.test and *.chat.example.test are
// validated through two TXT values under one name at the same time.
func TestDNS01TwoValues(t *testing.T) {
	e := newEnv(t, pebbleOptions{})
	barrier := &txtBarrier{TXTStore: e.store, e: e, values: map[string][]string{}, both: make(chan struct{})}
	e.store = barrier
	const name, wildcard = "chat.example.test", "*.chat.example.test"
	mod := e.model(site{serverNames: []string{name}, extraNames: []string{wildcard}, challenges: []string{config.ChallengeDNS01}})
	mark := e.logs.mark()
	e.start(mod)
	e.obtained(mark, name)
	e.obtained(mark, wildcard)

	r := barrier.answer
	if r == nil {
		t.Fatal("the two values were never published together")
	}
	const owner = "_acme-challenge.chat.example.test."
	if r.Rcode != dns.RcodeSuccess || !r.Authoritative || r.Truncated || len(r.Answer) != 2 {
		t.Fatalf("answer with both values: %v", r)
	}
	var got []string
	for _, rr := range r.Answer {
		txt, ok := rr.(*dns.TXT)
		if !ok || txt.Hdr.Name != owner || txt.Hdr.Class != dns.ClassINET || len(txt.Txt) != 1 {
			t.Fatalf("answer record %v, want one TXT string at %s", rr, owner)
		}
		got = append(got, txt.Txt[0])
	}
	if slices.Sort(got); got[0] == got[1] || len(got[0]) != 43 || len(got[1]) != 43 {
		t.Errorf("TXT values %q, want two distinct SHA-256 digests in base64url", got)
	}

	e.fetch(mod, name, e.roots())
	leaf, err := e.handshake("anything.chat.example.test", e.roots())
	if err != nil {
		t.Fatalf("handshake under the wildcard: %v", err)
	}
	if !slices.Equal(leaf.DNSNames, []string{wildcard}) {
		t.Errorf("wildcard certificate names %q, want [%q]", leaf.DNSNames, wildcard)
	}
	// The challenge records are gone once both are validated.
	waitNoTXT(t, e, owner)
}

// waitNoTXT waits until the DNS server has no TXT record at name; CleanUp
// runs just after the certificate is issued.
func waitNoTXT(t *testing.T, e *env, name string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeTXT)
		r, _, err := (&dns.Client{Net: "tcp"}).Exchange(q, e.dnsAddr)
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode == dns.RcodeNameError && len(r.Answer) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("TXT at %s still served: %v", name, r)
		}
		time.Sleep(10 * time.Millisecond) // polling the DNS server: nothing signals the removal
	}
}

// TestNonceRejection: with Pebble rejecting a third of all good nonces,
// every certificate is still obtained in its first attempt, because the
// ACME client retries with the fresh nonce the error carries.
func TestNonceRejection(t *testing.T) {
	e := newEnv(t, pebbleOptions{nonceReject: 35})
	names := []string{"a.example.test", "b.example.test", "c.example.test"}
	mod := e.model(site{serverNames: names, challenges: []string{config.ChallengeHTTP01, config.ChallengeTLSALPN01, config.ChallengeDNS01}})
	mark := e.logs.mark()
	e.start(mod)
	for _, n := range names {
		e.obtained(mark, n)
		e.fetch(mod, n, e.roots())
	}
	if n := e.pebble.nonces.Load(); n == 0 {
		t.Errorf("Pebble rejected no nonce; the test proves nothing")
	}
	if r := e.logs.find(mark, "certificate obtain failed"); len(r) > 0 {
		t.Errorf("obtain failed: %+v", r)
	}
	t.Logf("%d nonces rejected and retried", e.pebble.nonces.Load())
}

// TestSelfSigned: mode "self-signed" serves a fresh ECDSA P-256
// certificate per name by SNI, made at the first handshake for it, the
// first name without SNI, nothing for other names; it never creates the
// storage directory.
func TestSelfSigned(t *testing.T) {
	checkLeaks(t)
	e := &env{t: t, logs: newLogs(), storage: path.Join(t.TempDir(), "storage")}
	e.log = slog.New(e.logs.handler(t, slog.LevelDebug))
	names := []string{"chat.example.test", "team.example.test"}
	mod := e.model(site{serverNames: names, extraNames: []string{"*.chat.example.test"}, mode: config.ModeSelfSigned})
	mgr, err := acme.New(acme.Options{Logger: e.log, ACME: mod.ACME})
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Stop()
	mark := e.logs.mark()
	if err := mgr.SetModel(context.Background(), mod); err != nil {
		t.Fatal(err)
	}
	if r := e.logs.find(mark, "self-signed certificate created; clients will not trust it"); len(r) != 0 {
		t.Errorf("certificates created before any handshake: %+v", r)
	}
	cfg := mgr.TLSConfig()
	if !slices.Equal(cfg.NextProtos, []string{"h2", "http/1.1"}) {
		t.Errorf("NextProtos %q, want [h2 http/1.1]", cfg.NextProtos)
	}
	tests := []struct{ sni, want string }{
		{"chat.example.test", "chat.example.test"},
		{"TEAM.example.test.", "team.example.test"},
		{"", "chat.example.test"},
		{"127.0.0.1", "chat.example.test"},
		{"2001:db8::1", "chat.example.test"},
		{"x.chat.example.test", "*.chat.example.test"},
	}
	for _, tt := range tests {
		c, err := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: tt.sni})
		if err != nil {
			t.Fatalf("SNI %q: %v", tt.sni, err)
		}
		if c.Leaf != nil {
			t.Errorf("SNI %q: the certificate keeps its parsed Leaf", tt.sni)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(leaf.DNSNames, []string{tt.want}) {
			t.Errorf("SNI %q: names %q, want [%q]", tt.sni, leaf.DNSNames, tt.want)
		}
		pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			t.Errorf("SNI %q: key %T, want ECDSA P-256", tt.sni, leaf.PublicKey)
		}
		pool := x509.NewCertPool()
		pool.AddCert(leaf)
		// A client that sent no name, or an address, checks the name it
		// means: the default one.
		name := strings.TrimSuffix(strings.ToLower(tt.sni), ".")
		if _, err := netip.ParseAddr(tt.sni); tt.sni == "" || err == nil {
			name = tt.want
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name}); err != nil {
			t.Errorf("SNI %q: a client pinning the certificate rejects it: %v", tt.sni, err)
		}
	}
	for _, n := range append(names, "*.chat.example.test") {
		e.logs.wait(t, mark, "self-signed certificate created; clients will not trust it", n)
	}
	if r := e.logs.find(mark, "self-signed certificate created; clients will not trust it"); len(r) != 3 {
		t.Errorf("%d certificates created for 3 names: %+v", len(r), r)
	}
	if _, err := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: "other.example.test"}); err == nil {
		t.Error("SNI other.example.test: got a certificate, want none")
	}

	// A reload keeps the certificates of names that stay.
	keep, _ := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: "team.example.test"})
	mod2 := e.model(site{serverNames: names[1:], mode: config.ModeSelfSigned})
	mark = e.logs.mark()
	if err := mgr.SetModel(context.Background(), mod2); err != nil {
		t.Fatal(err)
	}
	e.logs.wait(t, mark, "certificate no longer managed", "chat.example.test")
	if c, _ := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: "team.example.test"}); c != keep {
		t.Error("reload replaced the certificate of a name that stayed")
	}
	if _, err := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: "chat.example.test"}); err == nil {
		t.Error("removed name chat.example.test still has a certificate")
	}
	if r := e.logs.find(mark, "self-signed certificate created; clients will not trust it"); len(r) != 0 {
		t.Errorf("reload created certificates: %+v", r)
	}
	if _, err := os.Stat(e.storage); !os.IsNotExist(err) {
		t.Errorf("storage directory %s: %v; want it never created", e.storage, err)
	}
}

func leafNames(c *x509.Certificate) []string {
	if c == nil {
		return nil
	}
	return c.DNSNames
}

// dropTXT accepts TXT records and publishes none of them.
type dropTXT struct{}

func (dropTXT) AddTXT(name, value string) error    { return nil }
func (dropTXT) RemoveTXT(name, value string) error { return nil }

// TestDNS01WaitsUntilServed: the CA is not asked to validate a DNS-01
// challenge before signpost's own DNS server serves the TXT value; when it
// never does, the attempt fails with a reason that says so.
func TestDNS01WaitsUntilServed(t *testing.T) {
	e := newEnv(t, pebbleOptions{})
	e.store = dropTXT{}
	e.dnsWait = 300 * time.Millisecond
	const name = "chat.example.test"
	mark := e.logs.mark()
	e.start(e.model(site{serverNames: []string{name}, challenges: []string{config.ChallengeDNS01}}))
	failed := e.logs.wait(t, mark, "certificate obtain failed", name)
	want := "did not serve TXT _acme-challenge.chat.example.test."
	if failed.Level != slog.LevelError || !strings.Contains(failed.Attrs["error"], want) {
		t.Errorf("failure logged as %+v; want error level and %q", failed, want)
	}
	if n := e.pebble.challenges.Load(); n != 0 {
		t.Errorf("the CA was asked to validate %d challenges, want 0", n)
	}
}

// TestStartWithoutCA: with the CA unreachable and nothing in storage,
// start-up does not wait; the failure is logged with the name and the
// reason, and the plain listener serves the documents meanwhile.
func TestStartWithoutCA(t *testing.T) {
	e := newEnv(t, pebbleOptions{})
	e.pebble.srv.Close()
	const name = "chat.example.test"
	mod := e.model(site{serverNames: []string{name}, challenges: []string{config.ChallengeHTTP01}})
	mark := e.logs.mark()
	e.start(mod)
	failed := e.logs.wait(t, mark, "certificate obtain failed", name)
	if !strings.Contains(failed.Attrs["error"], "connection refused") {
		t.Errorf("failure logged as %+v; want the reason (connection refused)", failed)
	}
	if _, err := e.handshake(name, nil); err == nil {
		t.Errorf("handshake for %s succeeded without a certificate", name)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+e.plainAddr+"/.well-known/matrix/server", nil)
	req.Host = name
	resp, err := http.DefaultTransport.(*http.Transport).Clone().RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != string(mod.Delegation(name).ServerDoc) {
		t.Errorf("plain GET: %d %q, want 200 %q", resp.StatusCode, body, mod.Delegation(name).ServerDoc)
	}
}

// BenchmarkIssuance measures one issuance per challenge type against
// in-process Pebble: from SetModel adding a name to its certificate being
// served. The account is registered before the timer starts. Keep to 8
// iterations: certmagic lets an account place 10 orders per 10 seconds
// per CA, and beyond that the figure is its throttle, not issuance.
//
//	go test -run '^$' -bench Issuance -benchtime 8x ./acme/
func BenchmarkIssuance(b *testing.B) {
	for _, challenge := range []string{config.ChallengeHTTP01, config.ChallengeTLSALPN01, config.ChallengeDNS01} {
		b.Run(challenge, func(b *testing.B) {
			e := newEnv(b, pebbleOptions{})
			names := []string{"warm.example.test"}
			mark := e.logs.mark()
			in := e.start(e.model(site{serverNames: names, challenges: []string{challenge}}))
			e.obtained(mark, names[0])
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				names = append(names, fmt.Sprintf("n%d.example.test", i))
				mark := e.logs.mark()
				in.setModel(e.model(site{serverNames: names, challenges: []string{challenge}}))
				e.obtained(mark, names[len(names)-1])
			}
		})
	}
}
