package acme

import (
	"context"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/publicsuffix"
)

// Limits are a CA's issuance limits, which the Manager stays within. A
// zero count means no limit of that kind. Like Let's Encrypt's own, each
// limit is a token bucket: Count tokens, one refilled every Window/Count,
// so a full bucket allows a burst of Count and then one per Window/Count.
type Limits struct {
	// Orders is how many new orders the account may create per
	// OrdersWindow, first issuances and renewals alike.
	Orders       int
	OrdersWindow time.Duration

	// Certificates is how many new certificates may be issued per
	// registered domain (the public suffix plus one label, "example.co.uk"
	// for "chat.example.co.uk") per CertificatesWindow. Renewals are not
	// held back by it, as at Let's Encrypt, but count toward it.
	Certificates       int
	CertificatesWindow time.Duration

	// Failures is how many failed authorizations one name may have per
	// FailuresWindow; a name that reaches it waits before its next order.
	Failures       int
	FailuresWindow time.Duration

	// InFlight bounds the orders under way at once, so thousands of new
	// names hold neither thousands of storage locks nor thousands of
	// connections to the CA; 8 if zero.
	InFlight int
}

// LetsEncryptLimits returns Let's Encrypt's published limits, from
// https://letsencrypt.org/docs/rate-limits/ (last updated June 12, 2025):
//   - New Orders per Account: 300 per 3 hours, one more every 36 seconds;
//   - New Certificates per Registered Domain: 50 per 7 days, one more every
//     202 minutes; renewals (the same set of names) are not held back;
//   - Authorization Failures per Identifier per Account: 5 per hour, one
//     more every 12 minutes.
//
// Duplicate Certificates (5 per 7 days for the same set of names) needs no
// bucket of its own: a name is ordered again only when its certificate is
// missing from storage or due for renewal.
func LetsEncryptLimits() Limits {
	return Limits{
		Orders: 300, OrdersWindow: 3 * time.Hour,
		Certificates: 50, CertificatesWindow: 7 * 24 * time.Hour,
		Failures: 5, FailuresWindow: time.Hour,
	}
}

// limitsFor returns the limits to keep for an ACME directory URL: Let's
// Encrypt's for its production and staging directories (staging allows
// more, so production's figures are safe there too), and only the
// in-flight bound for any other CA, whose limits signpost does not know;
// the CA's own refusals are then the authority, and certmagic backs off.
func limitsFor(directory string) Limits {
	u, err := url.Parse(directory)
	if err == nil && (u.Hostname() == "letsencrypt.org" || strings.HasSuffix(u.Hostname(), ".letsencrypt.org")) {
		return LetsEncryptLimits()
	}
	return Limits{}
}

// registeredDomain returns the registered domain of a certificate name,
// the unit of Let's Encrypt's per-domain limit. A name that is itself a
// public suffix, or that the list cannot place, counts as its own domain.
func registeredDomain(name string) string {
	name = strings.TrimPrefix(strings.TrimSuffix(strings.ToLower(name), "."), "*.")
	d, err := publicsuffix.EffectiveTLDPlusOne(name)
	if err != nil {
		return name
	}
	return d
}

// bucket is a token bucket kept as the one instant at which it is full
// again (the generic cell rate algorithm): with n tokens refilled one per
// window/n, a token is available at now when full - now <= window -
// window/n. Its zero value is a full bucket.
type bucket struct{ full time.Time }

// wait returns how long from now until a token is available; 0 if one
// is, or if n is 0 (no limit).
func (b bucket) wait(now time.Time, n int, window time.Duration) time.Duration {
	if n <= 0 || !b.full.After(now) {
		return 0 // full; also keeps Sub from saturating on the zero time
	}
	d := b.full.Sub(now) - (window - window/time.Duration(n))
	return max(d, 0)
}

// take spends one token at now; it may leave the bucket in debt, which
// later waits pay off.
func (b *bucket) take(now time.Time, n int, window time.Duration) {
	if n <= 0 {
		return
	}
	if b.full.Before(now) {
		b.full = now
	}
	b.full = b.full.Add(window / time.Duration(n))
}

// queue decides when each name may start an ACME order. Names wait in
// one line per registered domain, and the lines take turns, so a customer
// with ten thousand names under one domain delays another customer's one
// name by at most one order. A name is let through only when the account,
// its registered domain (unless it is a renewal, which goes ahead of its
// domain's new names) and the name itself (its recent failures) all have
// a token, and fewer than InFlight orders are
// under way. It holds one entry per waiting name and per order in flight,
// so its size is bounded by the number of names managed.
//
// The decisions are made by grant, which takes the time as an argument
// and starts nothing, so tests drive it with any clock; wait is the
// blocking front that real callers use.
type queue struct {
	lim Limits
	now func() time.Time
	log *slog.Logger

	mu       sync.Mutex
	orders   bucket
	lines    map[string]*line // by registered domain; kept while the domain has a bucket in debt or waiters
	ring     []*line          // lines with waiters, in turn order
	failures map[string]*bucket
	inFlight map[string]*ticket // by name: the order each name has under way
	timer    *time.Timer        // wakes grant when the next token is due; nil when none is awaited
	closed   bool
	stop     chan struct{} // closed by close: every wait ends
	held     bool          // names are waiting for a token; logged when it starts
}

type line struct {
	domain  string
	certs   bucket
	waiting []*ticket
}

// ticket is one name's place in the queue.
type ticket struct {
	name    string
	domain  string
	renewal bool
	granted chan struct{} // closed when the order may start
}

func newQueue(lim Limits, now func() time.Time, log *slog.Logger) *queue {
	if lim.InFlight <= 0 {
		lim.InFlight = 8
	}
	return &queue{
		lim:      lim,
		now:      now,
		log:      log,
		lines:    map[string]*line{},
		failures: map[string]*bucket{},
		inFlight: map[string]*ticket{},
		stop:     make(chan struct{}),
	}
}

// wait blocks until name may start an order, or ctx ends (then it
// returns ctx's error and name leaves the queue), or the queue is closed. A renewal is exempt
// from the registered-domain limit. Every successful wait must be
// followed by done(name), at the latest when the order has ended.
func (q *queue) wait(ctx context.Context, name string, renewal bool) error {
	t := q.enqueue(name, renewal)
	q.dispatch()
	select {
	case <-t.granted:
		return nil
	case <-q.stop:
		return errStopped
	case <-ctx.Done():
		q.mu.Lock()
		select {
		case <-t.granted: // granted meanwhile: give the slot back
			if q.inFlight[name] == t {
				delete(q.inFlight, name)
			}
		default:
			q.remove(t)
		}
		q.mu.Unlock()
		q.dispatch()
		return ctx.Err()
	}
}

func (q *queue) enqueue(name string, renewal bool) *ticket {
	q.mu.Lock()
	defer q.mu.Unlock()
	// One order per name at a time (certmagic holds a lock per name), so
	// a slot still held by name is left over from an order that ended
	// without an event; free it.
	delete(q.inFlight, name)
	t := &ticket{name: name, domain: registeredDomain(name), renewal: renewal, granted: make(chan struct{})}
	l := q.lines[t.domain]
	if l == nil {
		l = &line{domain: t.domain}
		q.lines[t.domain] = l
	}
	if len(l.waiting) == 0 {
		q.ring = append(q.ring, l)
	}
	// Renewals go ahead of the domain's new names: a renewal keeps a name
	// that is served working, a new name is not served yet anyway.
	i := len(l.waiting)
	if renewal {
		i = slices.IndexFunc(l.waiting, func(w *ticket) bool { return !w.renewal })
		if i < 0 {
			i = len(l.waiting)
		}
	}
	l.waiting = slices.Insert(l.waiting, i, t)
	return t
}

// remove takes a waiting ticket out of its line. q.mu is held.
func (q *queue) remove(t *ticket) {
	l := q.lines[t.domain]
	if l == nil {
		return
	}
	for i, w := range l.waiting {
		if w == t {
			l.waiting = append(l.waiting[:i], l.waiting[i+1:]...)
			break
		}
	}
	if len(l.waiting) == 0 {
		q.dropFromRing(l)
	}
}

func (q *queue) dropFromRing(l *line) {
	for i, r := range q.ring {
		if r == l {
			q.ring = append(q.ring[:i], q.ring[i+1:]...)
			return
		}
	}
}

// done ends name's order, freeing its in-flight slot; it is a no-op when
// name has none, so it may be called once from each place an order can end.
func (q *queue) done(name string) {
	q.mu.Lock()
	_, ok := q.inFlight[name]
	delete(q.inFlight, name)
	q.mu.Unlock()
	if ok {
		q.dispatch()
	}
}

// failed records that name's order attempt failed with n issuers tried
// (n orders, each with a failed authorization), and ends it.
func (q *queue) failed(name string, n int) {
	q.mu.Lock()
	now := q.now()
	b := q.failures[name]
	if b == nil {
		b = &bucket{}
		q.failures[name] = b
	}
	for i := range n {
		b.take(now, q.lim.Failures, q.lim.FailuresWindow)
		if i > 0 { // each issuer tried made an order; the grant counted one
			q.orders.take(now, q.lim.Orders, q.lim.OrdersWindow)
		}
	}
	delete(q.inFlight, name)
	q.mu.Unlock()
	q.dispatch()
}

// issued charges the limits for a certificate of name that was issued
// at the given past instant, found in storage at start-up: the buckets
// start full in every process, and without this a process restarted in a
// loop would spend a fresh burst of orders each time. The certificate may
// have been a renewal, exempt from the per-domain limit; it is charged
// there too, erring on the side of the CA's limits.
func (q *queue) issued(name string, at time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	if at.After(now.Add(-q.lim.OrdersWindow)) {
		q.orders.take(at, q.lim.Orders, q.lim.OrdersWindow)
	}
	if !at.After(now.Add(-q.lim.CertificatesWindow)) {
		return // refilled long since (or no limit at all)
	}
	d := registeredDomain(name)
	l := q.lines[d]
	if l == nil {
		l = &line{domain: d}
		q.lines[d] = l
	}
	l.certs.take(at, q.lim.Certificates, q.lim.CertificatesWindow)
}

// window returns the longest limit window: certificates issued longer
// ago than that count against nothing.
func (lim Limits) window() time.Duration {
	return max(lim.OrdersWindow, lim.CertificatesWindow)
}

// forget drops what the queue remembers of name's failures, once name
// is no longer managed.
func (q *queue) forget(name string) {
	q.mu.Lock()
	delete(q.failures, name)
	q.mu.Unlock()
}

// close stops the wake-up timer; waits still blocked end with their ctx.
func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.closed = true
	close(q.stop)
	if q.timer != nil {
		q.timer.Stop()
		q.timer = nil
	}
}

// dispatch grants what can be granted now and, if a token is awaited,
// arms the timer to come back when it is due.
func (q *queue) dispatch() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	now := q.now()
	granted, next := q.grant(now)
	for _, t := range granted {
		close(t.granted)
	}
	if q.timer != nil {
		q.timer.Stop()
		q.timer = nil
	}
	if !next.IsZero() {
		q.timer = time.AfterFunc(next.Sub(now), q.dispatch)
	}
	// Once per spell, not per name: with 10,000 new names the spell
	// lasts days and the gauge signpost_acme_orders_waiting tells more.
	if held := !next.IsZero(); held != q.held {
		q.held = held
		if held {
			waiting := 0
			for _, l := range q.ring {
				waiting += len(l.waiting)
			}
			q.log.Info("certificate orders held back to stay within the CA's rate limits", "waiting", waiting, "next_in", next.Sub(now).Seconds())
		} else {
			q.log.Info("certificate orders no longer held back by rate limits")
		}
	}
}

// grant lets through every waiting name that may start an order at now,
// taking the lines in turn, and returns them with the instant at which
// the next waiting name could go (zero if none is waiting on a token: the
// queue is empty, or only in-flight slots are awaited, and done wakes it).
// q.mu is held.
func (q *queue) grant(now time.Time) (granted []*ticket, next time.Time) {
	lim := q.lim
	later := func(d time.Duration) {
		if at := now.Add(d); next.IsZero() || at.Before(next) {
			next = at
		}
	}
	for len(q.ring) > 0 && len(q.inFlight) < lim.InFlight {
		if d := q.orders.wait(now, lim.Orders, lim.OrdersWindow); d > 0 {
			later(d)
			break
		}
		var pick *ticket
		for _, l := range q.ring {
			if pick = q.eligible(l, now, later); pick != nil {
				break
			}
		}
		if pick == nil {
			break
		}
		l := q.lines[pick.domain]
		q.orders.take(now, lim.Orders, lim.OrdersWindow)
		// A renewal is not held back by its domain's limit but counts
		// toward it, as Let's Encrypt's did ("not blocked by the limit,
		// but they do contribute to it"); whether it still counts there
		// or not, counting it keeps new names within the limit.
		l.certs.take(now, lim.Certificates, lim.CertificatesWindow)
		q.remove(pick)
		if len(l.waiting) > 0 { // its turn is over: to the back of the ring
			q.dropFromRing(l)
			q.ring = append(q.ring, l)
		}
		q.inFlight[pick.name] = pick
		granted = append(granted, pick)
	}
	q.tidy(now)
	return granted, next
}

// eligible returns the first ticket in l that may go at now, or nil,
// reporting through later when a token it lacks will be due.
func (q *queue) eligible(l *line, now time.Time, later func(time.Duration)) *ticket {
	lim := q.lim
	domainWait := l.certs.wait(now, lim.Certificates, lim.CertificatesWindow)
	for _, t := range l.waiting {
		if _, busy := q.inFlight[t.name]; busy {
			continue
		}
		if !t.renewal && domainWait > 0 {
			later(domainWait)
			break // renewals are ahead of new names: none is left behind t
		}
		if b := q.failures[t.name]; b != nil {
			if d := b.wait(now, lim.Failures, lim.FailuresWindow); d > 0 {
				later(d)
				continue
			}
		}
		return t
	}
	return nil
}

// tidy forgets lines with no waiters whose bucket is full again, so the
// map does not keep every domain ever seen. q.mu is held.
func (q *queue) tidy(now time.Time) {
	if len(q.lines) <= 2*len(q.ring)+64 {
		return
	}
	for d, l := range q.lines {
		if len(l.waiting) == 0 && !l.certs.full.After(now) {
			delete(q.lines, d)
		}
	}
}

// counts returns the number of names waiting and of orders in flight.
func (q *queue) counts() (waiting, inFlight int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, l := range q.ring {
		waiting += len(l.waiting)
	}
	return waiting, len(q.inFlight)
}
