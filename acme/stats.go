package acme

import (
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/signpost-dev/signpost/config"
)

// certStats counts certificate work for Prometheus: obtain and renewal
// attempts and failures from certmagic's events, ACME challenges by type
// from acmez's log lines, and when each name last failed. Names come from
// the configuration; challenge types from acmez, which tries only the
// types signpost has solvers for.
type certStats struct {
	mu         sync.Mutex
	attempts   [2]uint64 // obtain, renew
	failures   [2]uint64
	challenges map[string]*[2]uint64 // by type: tried, failed
	lastFail   map[string]time.Time  // by name
}

var actions = [2]string{"obtain", "renew"}

func (st *certStats) event(event string, data map[string]any, now time.Time) {
	a := 0
	if renewal, _ := data["renewal"].(bool); renewal {
		a = 1
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	switch event {
	case "cert_obtaining":
		st.attempts[a]++
	case "cert_failed":
		st.failures[a]++
		if name, ok := data["identifier"].(string); ok {
			if st.lastFail == nil {
				st.lastFail = map[string]time.Time{}
			}
			st.lastFail[name] = now
		}
	}
}

func (st *certStats) challenge(typ string, failed bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.challenges == nil {
		st.challenges = map[string]*[2]uint64{}
	}
	c := st.challenges[typ]
	if c == nil {
		c = new([2]uint64)
		st.challenges[typ] = c
	}
	if failed {
		c[1]++
	} else {
		c[0]++
	}
}

// NotAfter returns, for every name the Manager keeps a certificate for,
// when the certificate served for it expires; a name with none yet is
// missing from the map.
func (m *Manager) NotAfter() map[string]time.Time {
	mod := m.model.Load()
	if mod == nil {
		return nil
	}
	out := map[string]time.Time{}
	for _, name := range mod.CertificateNames() {
		if m.mode == config.ModeSelfSigned {
			// Made at a name's first handshake; made here if not yet,
			// so that a name is never reported without one when the
			// handshake would have it (this costs once per name).
			if c, err := m.self.Load().certs.get(name); err == nil {
				out[name] = c.notAfter
			}
			continue
		}
		var best *certmagic.Certificate
		for _, c := range m.cache.AllMatchingCertificates(name) {
			if slices.Contains(c.Names, name) && c.Leaf != nil && (best == nil || c.Leaf.NotAfter.After(best.Leaf.NotAfter)) {
				best = &c
			}
		}
		if best != nil {
			out[name] = best.Leaf.NotAfter
		}
	}
	return out
}

// Metrics returns the collector of certificate expiry times and ACME
// counters, for a prometheus.Registry.
func (m *Manager) Metrics() prometheus.Collector { return (*certCollector)(m) }

type certCollector Manager

var (
	descNotAfter = prometheus.NewDesc("signpost_certificate_not_after_seconds",
		"When the certificate served for a name expires, in Unix seconds; 0 while it has none.", []string{"name"}, nil)
	descLastFailure = prometheus.NewDesc("signpost_certificate_last_failure_timestamp_seconds",
		"When obtaining or renewing a name's certificate last failed, in Unix seconds; 0 if never.", []string{"name"}, nil)
	descAttempts = prometheus.NewDesc("signpost_certificate_attempts_total",
		"Certificate obtains and renewals begun, by action (obtain or renew).", []string{"action"}, nil)
	descFailures = prometheus.NewDesc("signpost_certificate_failures_total",
		"Certificate obtains and renewals that failed (every issuer and challenge tried), by action.", []string{"action"}, nil)
	descChallenges = prometheus.NewDesc("signpost_acme_challenges_total",
		"ACME challenges tried, by type.", []string{"challenge"}, nil)
	descChallengeFailures = prometheus.NewDesc("signpost_acme_challenge_failures_total",
		"ACME challenges the CA failed, by type.", []string{"challenge"}, nil)
	descOrdersWaiting = prometheus.NewDesc("signpost_acme_orders_waiting",
		"Names waiting for their turn to order a certificate within the CA's limits.", nil, nil)
	descOrdersInFlight = prometheus.NewDesc("signpost_acme_orders_in_flight",
		"ACME orders under way.", nil, nil)
)

func (c *certCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNotAfter, descLastFailure, descAttempts, descFailures, descChallenges, descChallengeFailures, descOrdersWaiting, descOrdersInFlight} {
		ch <- d
	}
}

func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	m := (*Manager)(c)
	notAfter := m.NotAfter()
	wanted := map[string]bool{}
	if mod := m.model.Load(); mod != nil {
		for _, n := range mod.CertificateNames() {
			wanted[n] = true
			v := 0.0 // none yet: as urgent as an expired one
			if t, ok := notAfter[n]; ok {
				v = float64(t.Unix())
			}
			ch <- prometheus.MustNewConstMetric(descNotAfter, prometheus.GaugeValue, v, n)
		}
	}
	var waiting, inFlight int // 0 in mode "self-signed", which has no queue
	if m.queue != nil {
		waiting, inFlight = m.queue.counts()
	}
	ch <- prometheus.MustNewConstMetric(descOrdersWaiting, prometheus.GaugeValue, float64(waiting))
	ch <- prometheus.MustNewConstMetric(descOrdersInFlight, prometheus.GaugeValue, float64(inFlight))
	st := &m.stats
	st.mu.Lock()
	defer st.mu.Unlock()
	for name := range wanted {
		v := 0.0 // never
		if t, ok := st.lastFail[name]; ok {
			v = float64(t.Unix())
		}
		ch <- prometheus.MustNewConstMetric(descLastFailure, prometheus.GaugeValue, v, name)
	}
	for a, action := range actions {
		ch <- prometheus.MustNewConstMetric(descAttempts, prometheus.CounterValue, float64(st.attempts[a]), action)
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(st.failures[a]), action)
	}
	for _, typ := range []string{config.ChallengeDNS01, config.ChallengeHTTP01, config.ChallengeTLSALPN01} {
		n := st.challenges[typ]
		if n == nil {
			n = new([2]uint64)
		}
		ch <- prometheus.MustNewConstMetric(descChallenges, prometheus.CounterValue, float64(n[0]), typ)
		ch <- prometheus.MustNewConstMetric(descChallengeFailures, prometheus.CounterValue, float64(n[1]), typ)
	}
}
