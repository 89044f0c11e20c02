package acme

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dev/signpost/internal/testenv"
)

// The queue's decisions are checked by calling grant with chosen instants:
// no clock runs and nothing sleeps.

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// testQueue returns a queue whose clock reads t0 (for failed) and that
// never dispatches on its own: the test calls grant.
func testQueue(lim Limits) *queue {
	q := newQueue(lim, func() time.Time { return t0 }, slog.New(slog.DiscardHandler))
	q.closed = true
	return q
}

// leQueue returns a test queue with Let's Encrypt's limits, and room
// for any number of orders in flight, holding the names given.
func leQueue(format string, n int) *queue {
	lim := LetsEncryptLimits()
	lim.InFlight = 1000
	q := testQueue(lim)
	for i := range n {
		q.enqueue(fmt.Sprintf(format, i), false)
	}
	return q
}

// grantNames calls grant at now and returns the names let through, in order.
func grantNames(q *queue, now time.Time) ([]string, time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	ts, next := q.grant(now)
	var names []string
	for _, t := range ts {
		names = append(names, t.name)
	}
	return names, next
}

func TestRegisteredDomain(t *testing.T) {
	for name, want := range map[string]string{
		"chat.example.com":    "example.com",
		"example.com":         "example.com",
		"a.b.example.co.uk":   "example.co.uk",
		"*.example.org":       "example.org",
		"Matrix.Example.NET.": "example.net",
		"chat.example.test":   "example.test", // not in the list: the default rule, one label
		"co.uk":               "co.uk",        // a public suffix is its own domain
		"alice.github.io":     "alice.github.io",
	} {
		if got := registeredDomain(name); got != want {
			t.Errorf("registeredDomain(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestLimitsFor(t *testing.T) {
	le := LetsEncryptLimits()
	for dir, want := range map[string]Limits{
		"https://acme-v02.api.letsencrypt.org/directory":         le,
		"https://acme-staging-v02.api.letsencrypt.org/directory": le,
		"https://localhost:14000/dir":                            {},
		"https://acme.zerossl.com/v2/DV90":                       {},
		"https://letsencrypt.org.evil.example/directory":         {},
	} {
		if got := limitsFor(dir); got != want {
			t.Errorf("limitsFor(%q) = %+v, want %+v", dir, got, want)
		}
	}
}

// TestQueueTakesDomainsInTurn: one customer's thousand names in one
// registered domain do not hold back two others' single names; the lines
// take turns, and names within a line keep their order.
func TestQueueTakesDomainsInTurn(t *testing.T) {
	q := testQueue(Limits{InFlight: 1})
	for i := range 1000 {
		q.enqueue(fmt.Sprintf("n%d.big.example.com", i), false)
	}
	q.enqueue("chat.small.example.org", false)
	q.enqueue("b.example.co.uk", false)
	q.enqueue("a.example.co.uk", false)

	var order []string
	for range 7 {
		got, next := grantNames(q, t0)
		if len(got) != 1 || !next.IsZero() {
			t.Fatalf("grant = %q, next %v; want one name and no timer (only the in-flight slot is awaited)", got, next)
		}
		order = append(order, got[0])
		if again, _ := grantNames(q, t0); len(again) != 0 {
			t.Fatalf("granted %q while %q holds the only in-flight slot", again, got[0])
		}
		q.done(got[0])
	}
	want := []string{
		"n0.big.example.com", "chat.small.example.org", "b.example.co.uk",
		"n1.big.example.com", "a.example.co.uk",
		"n2.big.example.com", "n3.big.example.com",
	}
	if !slices.Equal(order, want) {
		t.Errorf("order %q\nwant  %q", order, want)
	}
	if waiting, inFlight := q.counts(); waiting != 1000-4 || inFlight != 0 {
		t.Errorf("counts = %d waiting, %d in flight; want %d and 0", waiting, inFlight, 1000-4)
	}
}

// TestQueueAccountOrders: Let's Encrypt's 300 new orders per 3 hours allow
// a burst of 300, then one every 36 seconds, never two.
func TestQueueAccountOrders(t *testing.T) {
	q := leQueue("chat.d%d.example", 400)
	got, next := grantNames(q, t0)
	if len(got) != 300 {
		t.Fatalf("first grant let %d through, want 300", len(got))
	}
	if want := t0.Add(36 * time.Second); !next.Equal(want) {
		t.Errorf("next = %v, want %v", next, want)
	}
	for _, n := range got {
		q.done(n) // finished orders do not give the tokens back
	}
	if got, _ := grantNames(q, t0.Add(35*time.Second)); len(got) != 0 {
		t.Errorf("at 35 s: granted %d, want 0", len(got))
	}
	if got, next := grantNames(q, t0.Add(36*time.Second)); len(got) != 1 || !next.Equal(t0.Add(72*time.Second)) {
		t.Errorf("at 36 s: granted %d, next %v; want 1 and %v", len(got), next, t0.Add(72*time.Second))
	}
	if got, _ := grantNames(q, t0.Add(71*time.Second)); len(got) != 0 {
		t.Errorf("at 71 s: granted %d, want 0", len(got))
	}
	// An idle hour refills 100 tokens: 99 waiting names all go.
	if got, _ := grantNames(q, t0.Add(72*time.Second+time.Hour)); len(got) != 99 {
		t.Errorf("an hour later: granted %d, want the 99 still waiting", len(got))
	}
}

// TestQueueRegisteredDomain: 50 new certificates per registered domain
// per week, then one every 201.6 minutes; other domains are not held up,
// and renewals in the exhausted domain are exempt.
func TestQueueRegisteredDomain(t *testing.T) {
	q := leQueue("s%d.example.co.uk", 60)
	got, next := grantNames(q, t0)
	if len(got) != 50 {
		t.Fatalf("granted %d in example.co.uk, want 50", len(got))
	}
	refill := 7 * 24 * time.Hour / 50 // 201 min 36 s
	if want := t0.Add(refill); !next.Equal(want) {
		t.Errorf("next = %v, want %v", next, want)
	}
	q.enqueue("chat.other.example", false)
	q.enqueue("s3.example.co.uk", true) // its renewal
	got, _ = grantNames(q, t0.Add(time.Minute))
	// example.co.uk's line was first in turn; of its waiting names only
	// the renewal may go.
	if want := []string{"s3.example.co.uk", "chat.other.example"}; !slices.Equal(got, want) {
		t.Errorf("granted %q, want %q", got, want)
	}
	// The renewal went through but counted: the next new name waits two
	// refills, not one.
	if got, _ := grantNames(q, t0.Add(2*refill-time.Second)); len(got) != 0 {
		t.Errorf("before the refill: granted %q", got)
	}
	if got, _ := grantNames(q, t0.Add(2*refill)); !slices.Equal(got, []string{"s50.example.co.uk"}) {
		t.Errorf("at the refill: granted %q, want [s50.example.co.uk]", got)
	}
}

// TestQueueRenewalFirst: a renewal goes ahead of its domain's new names,
// behind earlier renewals.
func TestQueueRenewalFirst(t *testing.T) {
	q := testQueue(Limits{InFlight: 1})
	for _, n := range []string{"new1.example.com", "new2.example.com"} {
		q.enqueue(n, false)
	}
	q.enqueue("old1.example.com", true)
	q.enqueue("old2.example.com", true)
	var order []string
	for range 4 {
		got, _ := grantNames(q, t0)
		if len(got) != 1 {
			t.Fatalf("granted %q, want one name", got)
		}
		order = append(order, got[0])
		q.done(got[0])
	}
	if want := []string{"old1.example.com", "old2.example.com", "new1.example.com", "new2.example.com"}; !slices.Equal(order, want) {
		t.Errorf("order %q, want %q", order, want)
	}
}

// TestQueueFailures: five failed authorizations of one name in an hour,
// then one every 12 minutes; the name's next order waits, others do not.
func TestQueueFailures(t *testing.T) {
	lim := LetsEncryptLimits()
	lim.InFlight = 10
	q := testQueue(lim)
	for range 5 {
		q.enqueue("bad.example.com", false)
		if got, _ := grantNames(q, t0); !slices.Equal(got, []string{"bad.example.com"}) {
			t.Fatalf("granted %q, want bad.example.com", got)
		}
		q.failed("bad.example.com", 1)
	}
	q.enqueue("bad.example.com", false)
	q.enqueue("good.example.com", false)
	got, next := grantNames(q, t0)
	if !slices.Equal(got, []string{"good.example.com"}) {
		t.Errorf("granted %q, want only good.example.com", got)
	}
	if want := t0.Add(12 * time.Minute); !next.Equal(want) {
		t.Errorf("next = %v, want %v", next, want)
	}
	if got, _ := grantNames(q, t0.Add(12*time.Minute)); !slices.Equal(got, []string{"bad.example.com"}) {
		t.Errorf("after 12 min: granted %q, want bad.example.com", got)
	}
	// Two issuers tried, two failures: the name now waits 24 minutes, and
	// the account was charged for the second order.
	q.now = func() time.Time { return t0.Add(12 * time.Minute) }
	ordersBefore := q.orders.full
	q.failed("bad.example.com", 2)
	if d := q.orders.full.Sub(ordersBefore); d != 36*time.Second {
		t.Errorf("second issuer charged the account %v, want one order (36 s)", d)
	}
	q.enqueue("bad.example.com", false)
	if got, next := grantNames(q, t0.Add(12*time.Minute)); len(got) != 0 || !next.Equal(t0.Add(36*time.Minute)) {
		t.Errorf("granted %q, next %v; want none until %v", got, next, t0.Add(36*time.Minute))
	}
}

// TestQueueInFlight: no more than InFlight orders at once; a done slot
// goes to the next name, and done is idempotent.
func TestQueueInFlight(t *testing.T) {
	q := testQueue(Limits{InFlight: 2})
	for _, n := range []string{"a.one.example", "b.two.example", "c.three.example"} {
		q.enqueue(n, false)
	}
	if got, _ := grantNames(q, t0); !slices.Equal(got, []string{"a.one.example", "b.two.example"}) {
		t.Fatalf("granted %q", got)
	}
	q.done("a.one.example")
	q.done("a.one.example")
	if got, _ := grantNames(q, t0); !slices.Equal(got, []string{"c.three.example"}) {
		t.Errorf("granted %q, want c.three.example", got)
	}
	if got, _ := grantNames(q, t0); len(got) != 0 {
		t.Errorf("granted %q with both slots taken", got)
	}
}

// TestQueueChargesStoredCertificates: certificates found in storage count
// against the limits from when they were issued, so a restart does not
// bring a fresh burst.
func TestQueueChargesStoredCertificates(t *testing.T) {
	q := leQueue("", 0)
	for i := range 300 {
		q.issued(fmt.Sprintf("chat.d%d.example", i), t0.Add(-time.Hour))
	}
	for i := range 50 {
		q.issued(fmt.Sprintf("s%d.example.co.uk", i), t0.Add(-24*time.Hour))
	}
	q.issued("old.example.net", t0.Add(-8*24*time.Hour)) // outside every window: not charged
	for i := range 400 {
		q.enqueue(fmt.Sprintf("new%d.e%d.example", i, i), false)
	}
	// The 300 orders an hour ago leave an hour's refill; the 50 a day ago
	// are outside the account's 3-hour window.
	if got, _ := grantNames(q, t0); len(got) != 100 {
		t.Fatalf("granted %d, want 100: an hour's refill of the account's orders", len(got))
	}
	if _, ok := q.lines["example.net"]; ok {
		t.Error("a certificate older than every window was charged")
	}

	// A day refills 24h / 201.6 min = 7.1 certificates in example.co.uk.
	q = testQueue(Limits{Certificates: 50, CertificatesWindow: 7 * 24 * time.Hour, InFlight: 1000})
	for i := range 50 {
		q.issued(fmt.Sprintf("s%d.example.co.uk", i), t0.Add(-24*time.Hour))
	}
	for i := range 10 {
		q.enqueue(fmt.Sprintf("new%d.example.co.uk", i), false)
	}
	if got, _ := grantNames(q, t0); len(got) != 7 {
		t.Errorf("granted %d in example.co.uk, want 7: a day's refill", len(got))
	}
}

// TestQueueWaitWakesOnRefill runs the blocking front on the real clock
// with a limit of one order per 20 ms: the second name is let through by
// the timer, not by another call, and the spell of waiting is logged once
// when it starts and once when it ends. A wait whose context ends leaves
// the queue.
func TestQueueWaitWakesOnRefill(t *testing.T) {
	var logs testenv.SyncBuffer
	q := newQueue(Limits{Orders: 1, OrdersWindow: 20 * time.Millisecond}, time.Now,
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{ReplaceAttr: dropTime})))
	defer q.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range []string{"a.example.com", "b.example.org"} {
		if err := q.wait(ctx, name, false); err != nil {
			t.Fatalf("wait %s: %v", name, err)
		}
		q.done(name)
	}
	if got := logs.String(); strings.Count(got, "held back to stay within") != 1 || strings.Count(got, "no longer held back") != 1 ||
		!strings.Contains(got, "waiting=1 ") {
		t.Errorf("logs:\n%s\nwant one line each for the start (waiting=1) and the end of the wait", got)
	}

	ended, stop := context.WithCancel(context.Background())
	stop()
	q.mu.Lock()
	q.orders.full = time.Now().Add(time.Hour) // no token for an hour
	q.mu.Unlock()
	if err := q.wait(ended, "c.example.net", false); !errors.Is(err, context.Canceled) {
		t.Errorf("wait with an ended context = %v, want context.Canceled", err)
	}
	if waiting, inFlight := q.counts(); waiting != 0 || inFlight != 0 {
		t.Errorf("counts = %d waiting, %d in flight after the wait ended; want 0, 0", waiting, inFlight)
	}
}

func dropTime(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// BenchmarkQueue10000 queues 10,000 names, half in one customer's
// registered domain and the rest in 5,000 others, and lets them all
// through one at a time, as a provider's first start does.
func BenchmarkQueue10000(b *testing.B) {
	for b.Loop() {
		q := testQueue(Limits{InFlight: 8})
		for i := range 5000 {
			q.enqueue(fmt.Sprintf("n%d.big.example", i), false)
			q.enqueue(fmt.Sprintf("chat.c%d.example", i), false)
		}
		for n := 0; n < 10000; {
			got, _ := grantNames(q, t0)
			for _, name := range got {
				q.done(name)
			}
			n += len(got)
		}
	}
}
