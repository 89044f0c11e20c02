package acme_test

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/signpost-dev/signpost/config"
	"github.com/signpost-dev/signpost/internal/promtest"
)

// TestManyCertificates obtains 500 certificates from Pebble for 500
// names in 10 registered domains, restarting signpost when about half are
// done. The first instance is stopped mid-issuance; the second, on the
// same storage, must serve every certificate the first finished without
// ordering it again, and order each other name once (twice only for a
// name whose order was under way at the stop: at most the in-flight bound).
func TestManyCertificates(t *testing.T) {
	const domains, perDomain = 10, 50
	const total = domains * perDomain
	if testing.Short() {
		t.Skip("obtains 500 certificates from Pebble; skipped with -short")
	}
	// certmagic throttles each CA account to 10 orders per 10 seconds,
	// process-wide, which alone would make 500 orders take 8 minutes.
	// signpost's queue is what keeps a public CA's limits (Let's
	// Encrypt's 1 order per 36 s sustained binds long before certmagic's
	// 1 per second); here it runs with Pebble's "no known limits", so the
	// throttle is lifted for this CA to measure signpost and Pebble. The
	// limiter is made per directory URL on first use, and Pebble's URL is
	// new in every test, so no other test sees these values.
	events, window := certmagic.RateLimitEvents, certmagic.RateLimitEventsWindow
	certmagic.RateLimitEvents, certmagic.RateLimitEventsWindow = 1000, time.Second
	t.Cleanup(func() { certmagic.RateLimitEvents, certmagic.RateLimitEventsWindow = events, window })

	e := newEnv(t, pebbleOptions{})
	e.log = slog.New(e.logs.handler(t, slog.LevelWarn)) // 500 names' debug lines would drown a failure

	var names []string
	var extra strings.Builder
	for d := range domains {
		fmt.Fprintf(&extra, "[[zone]]\norigin = \"d%d.test\"\naddresses = [\"127.0.0.1\"]\n", d)
		for i := range perDomain {
			name := fmt.Sprintf("s%02d.d%d.test", i, d)
			names = append(names, name)
			fmt.Fprintf(&extra, "[[delegation]]\nserver_name = %q\nserver = \"hs.example.test:443\"\nclient = \"https://hs.example.test\"\n", name)
		}
	}
	mod := e.model(site{challenges: []string{config.ChallengeHTTP01}, extra: extra.String()})
	if got := mod.CertificateNames(); len(got) != total {
		t.Fatalf("model has %d certificate names, want %d", len(got), total)
	}

	start := time.Now()
	mark := e.logs.mark()
	first := e.start(mod)
	e.waitServing(mark, total/2)
	first.stop()
	stopped := time.Since(start)
	storedFirst := storedCerts(t, e.storage)
	if len(storedFirst) < total/2 || len(storedFirst) == total {
		t.Fatalf("first instance stored %d certificates, want between %d and %d: the restart must fall mid-issuance", len(storedFirst), total/2, total-1)
	}

	restart := time.Now()
	mark = e.logs.mark()
	second := e.start(mod)
	e.waitServing(mark, total)
	elapsed := time.Since(start)
	t.Logf("500 certificates: %d before the restart in %.1fs, the other %d after it in %.1fs; %.1fs in all, %.1f certificates/s",
		len(storedFirst), stopped.Seconds(), total-len(storedFirst), time.Since(restart).Seconds(), elapsed.Seconds(), total/elapsed.Seconds())

	// Every name is served a certificate Pebble issued; every one the
	// first instance finished is served unchanged.
	roots := e.roots()
	for _, name := range names {
		leaf, err := e.handshake(name, roots)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !slices.Equal(leaf.DNSNames, []string{name}) {
			t.Errorf("%s: served a certificate for %q", name, leaf.DNSNames)
		}
		if stored, ok := storedFirst[name]; ok && !leaf.Equal(stored) {
			t.Errorf("%s: serves serial %s, want %s, which the first instance stored", name, leaf.SerialNumber, stored.SerialNumber)
		}
	}
	e.fetch(mod, names[0], roots)
	vs := promtest.Values(t, second.mgr.Metrics())
	for _, m := range []string{"signpost_acme_orders_waiting", "signpost_acme_orders_in_flight"} {
		if v, ok := vs[m]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0 once every name is served", m, v, ok)
		}
	}
	second.stop()

	// Orders: one per name, plus one per failed order (a validation can
	// fail under load; none did in our runs), plus one for a name whose
	// order was under way when the first instance stopped; nothing more
	// for a name the first instance had finished.
	failed := map[string]int{}
	for _, r := range e.logs.find(0, "certificate obtain failed") {
		failed[r.Attrs["name"]]++
	}
	byName, seq := e.pebble.ordersByName()
	again, failures := 0, 0
	for _, name := range names {
		n := byName[name] - failed[name]
		failures += failed[name]
		_, finished := storedFirst[name]
		switch {
		case finished && n != 1:
			t.Errorf("%s: %d orders and %d failures, want 1 order more than failures: the first instance finished it", name, byName[name], failed[name])
		case !finished && (n < 1 || n > 2):
			t.Errorf("%s: %d orders and %d failures, want 1 order more than failures, or 2 if under way at the stop", name, byName[name], failed[name])
		case n == 2:
			again++
		}
	}
	if got, want := e.pebble.orders.Load(), int64(total+failures+again); got != want {
		t.Errorf("orders = %d, want %d (%d names, %d failed orders, %d ordered again after the stop)", got, want, total, failures, again)
	}
	// Fairness: the names were configured domain after domain, 50 each,
	// yet the first 100 orders reach every domain: the domains take
	// turns. (In configuration order they would reach only two.)
	perDomain100 := map[string]int{}
	for _, n := range seq[:100] {
		perDomain100[n[strings.IndexByte(n, '.')+1:]]++
	}
	if len(perDomain100) != domains {
		t.Errorf("the first 100 orders reach %d registered domains, want all %d: %v", len(perDomain100), domains, perDomain100)
	}
	if again > 8 {
		t.Errorf("%d names ordered again after the stop, want at most 8, the in-flight bound", again)
	}
	if n := e.pebble.accounts.Load(); n != 1 {
		t.Errorf("accounts = %d, want 1", n)
	}
	if got := storedCerts(t, e.storage); len(got) != total {
		t.Errorf("storage holds %d certificates, want %d", len(got), total)
	}
	t.Logf("orders: %d for %d names; %d failed and were retried; %d names were under way at the stop and ordered again; first 100 orders by domain: %v",
		e.pebble.orders.Load(), total, failures, again, perDomain100)
}

// waitServing waits until n distinct names have been reported served
// since mark.
func (e *env) waitServing(mark, n int) {
	e.t.Helper()
	deadline := time.NewTimer(5 * time.Minute)
	defer deadline.Stop()
	for {
		l := e.logs
		l.mu.Lock()
		seen := map[string]bool{}
		for _, r := range l.records[mark:] {
			if r.Msg == "serving certificate" {
				seen[r.Attrs["name"]] = true
			}
		}
		changed := l.changed
		l.mu.Unlock()
		if len(seen) >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			e.t.Fatalf("%d names served within 5 minutes, want %d", len(seen), n)
		}
	}
}

// storedCerts returns the leaf of every certificate in the storage
// directory, by name.
func storedCerts(t *testing.T, dir string) map[string]*x509.Certificate {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "certificates", "*", "*", "*.crt"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*x509.Certificate{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(data)
		if block == nil {
			t.Fatalf("%s: no PEM block", p)
		}
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out[strings.TrimSuffix(filepath.Base(p), ".crt")] = leaf
	}
	return out
}
