// Package syncwatch checks that the secondaries of signpost's zones keep
// up: it asks each configured secondary for the SOA of every zone it
// copies, on a schedule, compares the serial with the one signpost serves,
// and exports both, with how long a secondary has been behind, for
// Prometheus. A secondary behind for longer than Options.WarnAfter is
// logged at WARN level, once, and again at INFO when it has caught up.
//
// NOTIFY tells a secondary that a zone changed, but nothing tells signpost
// whether the secondary then followed: a secondary whose transfers fail
// keeps answering the old zone until its SOA expire timer runs out. This
// package is how the operator learns of it before users do.
//
// syncwatch imports config and nothing else of signpost's; the serials it
// compares with come from a function (dnsserver's Serials, in main).
package syncwatch

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/signpost-dev/signpost/config"
)

// Options configure a Watch. Serials is required.
type Options struct {
	// Logger receives the WARN line for a secondary left behind and the
	// INFO line when it catches up. If nil, logs are discarded.
	Logger *slog.Logger
	// Serials returns the serial signpost serves for each zone, by origin.
	Serials func() map[string]uint32
	// Every is the pause between two rounds of checks; one minute if zero.
	Every time.Duration
	// Timeout bounds each SOA query; 5 seconds if zero. A secondary that
	// does not answer in time counts as behind.
	Timeout time.Duration
	// WarnAfter is how long a secondary may stay behind before it is
	// logged; 5 minutes if zero. A change takes a secondary a second or
	// two to follow, so a short lag is normal and not logged.
	WarnAfter time.Duration
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// Watch checks the secondaries of the current model. Its methods are safe
// for concurrent use.
type Watch struct {
	o     Options
	log   *slog.Logger
	model chan *config.Model // the newest model, for Run to pick up

	mu     sync.Mutex
	cur    *config.Model
	states map[key]*state
}

type key struct {
	zone      string
	secondary string // host:port as configured
}

type state struct {
	checked     bool
	answered    bool   // the last query got an authoritative SOA
	serial      uint32 // what the secondary served, when answered
	want        uint32 // what signpost served at the time
	behind      bool
	behindSince time.Time
	warned      bool
}

// New returns a Watch that checks nothing until SetModel.
func New(o Options) *Watch {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Every <= 0 {
		o.Every = time.Minute
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.WarnAfter <= 0 {
		o.WarnAfter = 5 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Watch{o: o, log: o.Logger, model: make(chan *config.Model, 1), states: map[key]*state{}}
}

// SetModel makes the Watch check the secondaries of m from the next round
// on, which starts at once. Pairs m no longer lists are forgotten.
func (w *Watch) SetModel(m *config.Model) {
	w.mu.Lock()
	w.cur = m
	live := map[key]bool{}
	for _, k := range pairs(m) {
		live[k] = true
	}
	maps.DeleteFunc(w.states, func(k key, _ *state) bool { return !live[k] })
	w.mu.Unlock()
	select {
	case <-w.model:
	default:
	}
	w.model <- m
}

// pairs lists every zone and secondary that copies it, in a stable order.
func pairs(m *config.Model) []key {
	if m == nil {
		return nil
	}
	var out []key
	zones := make([]string, 0, len(m.Zones)+1)
	for _, z := range m.Zones {
		zones = append(zones, z.Origin)
	}
	if m.Catalog != nil {
		zones = append(zones, m.Catalog.Origin)
	}
	for _, z := range zones {
		for _, s := range m.Secondaries(z) {
			out = append(out, key{z, s.Notify.String()})
		}
	}
	return out
}

// Run checks every secondary at once and then every Options.Every, and
// after each SetModel, until ctx is done.
func (w *Watch) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.model:
		case <-t.C:
		}
		w.Check(ctx)
		t.Reset(w.o.Every)
	}
}

// Check makes one round of SOA queries, all at once, and returns when
// every one is answered or has timed out.
func (w *Watch) Check(ctx context.Context) {
	w.mu.Lock()
	ks := pairs(w.cur)
	w.mu.Unlock()
	if len(ks) == 0 {
		return
	}
	serials := w.o.Serials()
	type result struct {
		k        key
		serial   uint32
		answered bool
	}
	// 16 queries at a time, from 16 goroutines: a provider's 10,000 zones
	// would otherwise be 10,000 goroutines each round.
	const workers = 16
	todo := make(chan key)
	results := make(chan result, len(ks))
	for range min(workers, len(ks)) {
		go func() {
			for k := range todo {
				serial, ok := w.query(ctx, k)
				results <- result{k, serial, ok}
			}
		}()
	}
	for _, k := range ks {
		todo <- k
	}
	close(todo)
	now := w.o.Now()
	got := make([]result, 0, len(ks))
	for range ks {
		got = append(got, <-results)
	}
	if ctx.Err() != nil {
		return // the answers are cut short, not the secondaries' fault
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	// Once per round, not per answer: with 10,000 zones, per answer held
	// the lock (and so a reload's SetModel) for seconds.
	live := map[key]bool{}
	for _, k := range pairs(w.cur) {
		live[k] = true
	}
	for _, r := range got {
		st := w.states[r.k]
		if st == nil {
			if !live[r.k] {
				continue // a reload took it away meanwhile
			}
			st = &state{}
			w.states[r.k] = st
		}
		want, served := serials[r.k.zone]
		st.checked, st.answered, st.serial, st.want = true, r.answered, r.serial, want
		behind := !r.answered || (served && serialAfter(want, r.serial))
		switch {
		case behind && !st.behind:
			st.behind, st.behindSince = true, now
		case !behind && st.behind:
			st.behind = false
			if st.warned {
				w.log.Info("secondary caught up", "zone", r.k.zone, "secondary", r.k.secondary, "serial", r.serial)
			}
			st.warned = false
		}
		if st.behind && !st.warned && now.Sub(st.behindSince) >= w.o.WarnAfter {
			st.warned = true
			attrs := []any{"zone", r.k.zone, "secondary", r.k.secondary, "serial_served", want,
				"behind_seconds", now.Sub(st.behindSince).Seconds()}
			if r.answered {
				attrs = append(attrs, "secondary_serial", r.serial)
			} else {
				attrs = append(attrs, "problem", "no authoritative SOA answer")
			}
			w.log.Warn("secondary behind", attrs...)
		}
	}
}

// query asks the secondary for the zone's SOA; ok is false unless it
// answers it with authority.
func (w *Watch) query(ctx context.Context, k key) (serial uint32, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, w.o.Timeout)
	defer cancel()
	m := new(dns.Msg)
	m.SetQuestion(k.zone, dns.TypeSOA)
	m.RecursionDesired = false
	c := &dns.Client{Net: "udp", Timeout: w.o.Timeout}
	r, _, err := c.ExchangeContext(ctx, m, k.secondary)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, m, k.secondary)
	}
	if err != nil || r.Rcode != dns.RcodeSuccess || !r.Authoritative {
		return 0, false
	}
	for _, rr := range r.Answer {
		if soa, isSOA := rr.(*dns.SOA); isSOA && dns.CanonicalName(soa.Hdr.Name) == k.zone {
			return soa.Serial, true
		}
	}
	return 0, false
}

// serialAfter reports whether a comes after b in RFC 1982 arithmetic.
func serialAfter(a, b uint32) bool {
	return a != b && int32(a-b) > 0
}

// Metrics returns the collector of the secondaries' state, for a
// prometheus.Registry.
func (w *Watch) Metrics() prometheus.Collector { return (*collector)(w) }

type collector Watch

var (
	descSerial = prometheus.NewDesc("signpost_secondary_serial",
		"SOA serial a secondary served at the last check, by zone and secondary; absent while it does not answer.",
		[]string{"zone", "secondary"}, nil)
	descUp = prometheus.NewDesc("signpost_secondary_up",
		"Whether a secondary answered the zone's SOA with authority at the last check.",
		[]string{"zone", "secondary"}, nil)
	descBehind = prometheus.NewDesc("signpost_secondary_behind",
		"Whether a secondary served an older serial than signpost, or none, at the last check.",
		[]string{"zone", "secondary"}, nil)
	descBehindSeconds = prometheus.NewDesc("signpost_secondary_behind_seconds",
		"How long a secondary has been behind: since the first check that found it behind; 0 when the last check found it in sync.",
		[]string{"zone", "secondary"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSerial
	ch <- descUp
	ch <- descBehind
	ch <- descBehindSeconds
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	w := (*Watch)(c)
	now := w.o.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, st := range w.states {
		if !st.checked {
			continue
		}
		if st.answered {
			ch <- prometheus.MustNewConstMetric(descSerial, prometheus.GaugeValue, float64(st.serial), k.zone, k.secondary)
		}
		up, behind, secs := 0.0, 0.0, 0.0
		if st.answered {
			up = 1
		}
		if st.behind {
			behind, secs = 1, now.Sub(st.behindSince).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up, k.zone, k.secondary)
		ch <- prometheus.MustNewConstMetric(descBehind, prometheus.GaugeValue, behind, k.zone, k.secondary)
		ch <- prometheus.MustNewConstMetric(descBehindSeconds, prometheus.GaugeValue, secs, k.zone, k.secondary)
	}
}
