package dnsserver

import (
	"maps"
	"math/bits"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Counting what the server answers, for Prometheus.
//
// The packet edges (answerPacket, answerTCP) count every reply into the
// tally of the reader or connection that built it: plain increments in
// memory only that goroutine touches, no atomics, no locks, no maps. A
// tally goes to the shared counters, atomically, once per batch of
// packets (one recvmmsg, one TCP read): one add per zone switch and cell
// touched, so under load queries for one zone share a handful of adds.
// Everything shared is summed at scrape time by the collector. Labels
// come from fixed tables and from the zones of the configuration, never
// from the query.

// Transports, the first index of zoneStats.n.
const (
	transportUDP = iota
	transportTCP
)

var transportNames = [2]string{"udp", "tcp"}

// qtypeNames are the query types counted by name; any other is "other".
var qtypeNames = [...]string{"A", "AAAA", "CNAME", "MX", "NS", "SOA", "SRV", "TXT", "CAA",
	"HTTPS", "SVCB", "DS", "DNSKEY", "PTR", "ANY", "AXFR", "IXFR", "other"}

const (
	nQtypes = len(qtypeNames)
	nRcodes = 16 // the rcode in the header; extended rcodes count as their low bits
	nCells  = nQtypes + nRcodes
)

// qtypeIndex returns t's index in qtypeNames: a table lookup, since a
// switch costs a mispredicted branch or two per query of mixed types.
func qtypeIndex(t uint16) int {
	if t < 256 {
		return int(qtypeTable[t])
	}
	if t == dns.TypeCAA {
		return qtypeCAA
	}
	return nQtypes - 1
}

var qtypeTable = func() (tab [256]uint8) {
	for i := range tab {
		tab[i] = uint8(nQtypes - 1)
	}
	for i, name := range qtypeNames[:nQtypes-1] {
		if t := dns.StringToType[name]; t < 256 {
			tab[t] = uint8(i)
		}
	}
	return tab
}()

const qtypeCAA = 8 // qtypeNames[8]

// Response sizes are counted in buckets of powers of two, 32 to 65536
// bytes: a bucket is one bit-length away, no search.
const (
	sizeMinShift = 5
	nSizes       = 17 - sizeMinShift // le 32 .. le 65536
)

func sizeIndex(n int) int {
	return min(max(bits.Len(uint(n-1)), sizeMinShift), 16) - sizeMinShift
}

// zoneStats are the shared counters of one zone (or of no zone: queries
// outside every zone), by transport: per query type, then per rcode.
type zoneStats struct {
	n [2][nCells]atomic.Uint64
}

// tally is what one reader or connection has counted and not yet added
// to the shared counters. Only its owner touches it.
type tally struct {
	zone    *zoneStats // whose cells are pending; nil: none pending
	dirty   uint64     // bit i: cells[i] is pending
	cells   [nCells]uint64
	sizes   [nSizes]uint64
	sizeSum uint64
	dropped uint64 // replies rate limiting dropped
	slipped uint64 // replies rate limiting cut to TC=1

	// Adds of zones left behind, waiting for the end of the batch. With
	// many zones nearly every reply is for another zone than the one
	// before, whose counters are not in the CPU's cache; an atomic add
	// waits for its line and holds back every load after it. Touching all
	// the lines first lets their misses overlap (measured with the fast
	// path's warming: see warm in fast.go).
	adds  [maxAdds]pendingAdd
	nadds int
	touch uint64 // what the touches read, so they are not dropped
}

type pendingAdd struct {
	c *atomic.Uint64
	n uint64
}

// maxAdds holds two cells for each query of a full UDP batch (batchSize
// on Linux).
const maxAdds = 128

// count notes one reply of size bytes with rcode, to a query of qtype in
// zone z.
func (t *tally) count(tr int, z *zoneStats, qtype uint16, rcode byte, size int) {
	if z != t.zone {
		t.switchZone(tr, z)
	}
	q, r := qtypeIndex(qtype), nQtypes+int(rcode&0x0F)
	t.cells[q]++
	t.cells[r]++
	t.dirty |= 1<<q | 1<<r
	t.sizes[sizeIndex(size)]++
	t.sizeSum += uint64(size)
}

// switchZone queues the cells pending for the previous zone.
//
//go:noinline
func (t *tally) switchZone(tr int, z *zoneStats) {
	t.queueZone(tr)
	t.zone = z
}

func (t *tally) queueZone(tr int) {
	for m := t.dirty; m != 0; m &= m - 1 {
		if t.nadds == maxAdds {
			t.applyAdds()
		}
		i := bits.TrailingZeros64(m)
		t.adds[t.nadds] = pendingAdd{&t.zone.n[tr][i], t.cells[i]}
		t.nadds++
		t.cells[i] = 0
	}
	t.dirty = 0
}

// applyAdds makes the queued adds: first a load of each counter, which the
// CPU runs side by side, then the adds, which find their lines in cache.
func (t *tally) applyAdds() {
	adds := t.adds[:t.nadds]
	for i := range adds {
		t.touch += adds[i].c.Load()
	}
	for i := range adds {
		adds[i].c.Add(adds[i].n)
	}
	t.nadds = 0
}

// flush adds everything pending to st.
func (t *tally) flush(st *dnsStats, tr int) {
	if t.dirty != 0 {
		t.queueZone(tr)
	}
	if t.nadds != 0 {
		t.applyAdds()
	}
	if t.sizeSum == 0 && t.dropped == 0 && t.slipped == 0 {
		return // no reply is empty: nothing was counted
	}
	h := &st.sizes[tr]
	var n uint64
	for i, v := range t.sizes {
		if v != 0 {
			h.buckets[i].Add(v)
			t.sizes[i] = 0
			n += v
		}
	}
	h.sum.Add(t.sizeSum)
	h.count.Add(n)
	if t.dropped|t.slipped != 0 {
		st.dropped.Add(t.dropped)
		st.slipped.Add(t.slipped)
	}
	t.sizeSum, t.dropped, t.slipped = 0, 0, 0
}

// dnsStats are a Server's shared counters.
type dnsStats struct {
	none  zoneStats // queries outside every zone
	sizes [2]struct {
		buckets    [nSizes]atomic.Uint64
		sum, count atomic.Uint64
	}
	dropped, slipped atomic.Uint64

	tcpEvicted, tcpRefused atomic.Uint64
	updates                [2]atomic.Uint64 // accepted, refused

	mu        sync.Mutex
	zones     map[string]*zoneStats // by origin; only grows, so counts survive a zone's rebuild
	transfers map[string]uint64     // by origin
	notify    map[notifyStatKey]*[2]uint64
}

type notifyStatKey struct {
	zone, secondary string
}

// zoneStats returns the counters of origin, made on first use.
func (st *dnsStats) zone(origin string) *zoneStats {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.zones == nil {
		st.zones = map[string]*zoneStats{}
	}
	z := st.zones[origin]
	if z == nil {
		z = new(zoneStats)
		st.zones[origin] = z
	}
	return z
}

func (st *dnsStats) transferred(origin string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.transfers == nil {
		st.transfers = map[string]uint64{}
	}
	st.transfers[origin]++
}

// notified counts one NOTIFY sent for zone to secondary, and whether it
// was answered.
func (st *dnsStats) notified(zone, secondary string, answered bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.notify == nil {
		st.notify = map[notifyStatKey]*[2]uint64{}
	}
	k := notifyStatKey{zone, secondary}
	c := st.notify[k]
	if c == nil {
		c = new([2]uint64)
		st.notify[k] = c
	}
	c[0]++
	if answered {
		c[1]++
	}
}

// statsZone is the zone a reply from the full path is counted in, and the
// query's type; zero values when the question does not parse.
func (ix *index) statsZone(st *dnsStats, pkt []byte) (*zoneStats, uint16) {
	if len(pkt) < 12 || pkt[4] != 0 || pkt[5] != 1 {
		return &st.none, 0
	}
	name, off, err := dns.UnpackDomainName(pkt, 12)
	if err != nil || off+2 > len(pkt) {
		return &st.none, 0
	}
	qtype := uint16(pkt[off])<<8 | uint16(pkt[off+1])
	name = lower(name)
	z := ix.zoneFor(name)
	if z == nil && ix.catalog != nil {
		z = ix.catalog.zoneFor(name)
	}
	if z == nil || z.fast == nil || z.fast.stats == nil {
		return &st.none, qtype
	}
	return z.fast.stats, qtype
}

// edgeZone returns the counters of the zone the fast path answered from.
func (st *dnsStats) edgeZone(z *zoneStats) *zoneStats {
	if z == nil {
		return &st.none
	}
	return z
}

// Metrics returns the collector of the server's counters, for a
// prometheus.Registry.
func (s *Server) Metrics() prometheus.Collector { return (*dnsCollector)(s) }

type dnsCollector Server

var (
	descQueries = prometheus.NewDesc("signpost_dns_queries_total",
		"DNS queries answered, by zone (none: outside every zone), transport and query type.",
		[]string{"zone", "transport", "qtype"}, nil)
	descResponses = prometheus.NewDesc("signpost_dns_responses_total",
		"DNS replies built, by zone, transport and rcode (before rate limiting).",
		[]string{"zone", "transport", "rcode"}, nil)
	descSizes = prometheus.NewDesc("signpost_dns_response_size_bytes",
		"Size of DNS replies built, by transport.", []string{"transport"}, nil)
	descRateLimited = prometheus.NewDesc("signpost_dns_rate_limited_total",
		"UDP replies rate limiting dropped, or slipped (sent truncated, TC=1).", []string{"action"}, nil)
	descTCPOpen = prometheus.NewDesc("signpost_dns_tcp_connections",
		"DNS TCP connections open.", nil, nil)
	descTCPEvicted = prometheus.NewDesc("signpost_dns_tcp_connections_evicted_total",
		"DNS TCP connections closed to make room for a new one.", nil, nil)
	descTCPRefused = prometheus.NewDesc("signpost_dns_tcp_connections_refused_total",
		"DNS TCP connections turned away: every one they could replace was in use.", nil, nil)
	descUpdates = prometheus.NewDesc("signpost_dns_updates_total",
		"RFC 2136 UPDATE messages, by result (accepted or refused).", []string{"result"}, nil)
	descTransfers = prometheus.NewDesc("signpost_dns_transfers_total",
		"Zone transfers (AXFR, IXFR answered in full) served, by zone.", []string{"zone"}, nil)
	descNotifySent = prometheus.NewDesc("signpost_dns_notify_sent_total",
		"NOTIFY messages sent, by zone and secondary (notify address).", []string{"zone", "secondary"}, nil)
	descNotifyAnswered = prometheus.NewDesc("signpost_dns_notify_answered_total",
		"NOTIFY messages a secondary answered, by zone and secondary.", []string{"zone", "secondary"}, nil)
	descSerial = prometheus.NewDesc("signpost_dns_zone_serial",
		"SOA serial served, by zone.", []string{"zone"}, nil)
)

func (c *dnsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueries, descResponses, descSizes, descRateLimited,
		descTCPOpen, descTCPEvicted, descTCPRefused, descUpdates, descTransfers,
		descNotifySent, descNotifyAnswered, descSerial} {
		ch <- d
	}
}

func (c *dnsCollector) Collect(ch chan<- prometheus.Metric) {
	s := (*Server)(c)
	st := &s.stats
	ix := s.ix.Load()
	emit := func(name string, z *zoneStats) {
		for tr := range 2 {
			for i, q := range qtypeNames {
				if v := z.n[tr][i].Load(); v != 0 {
					ch <- prometheus.MustNewConstMetric(descQueries, prometheus.CounterValue, float64(v), name, transportNames[tr], q)
				}
			}
			for r := range nRcodes {
				if v := z.n[tr][nQtypes+r].Load(); v != 0 {
					ch <- prometheus.MustNewConstMetric(descResponses, prometheus.CounterValue, float64(v), name, transportNames[tr], rcodeName(r))
				}
			}
		}
	}
	emit("none", &st.none)
	zones := slices.Collect(maps.Values(ix.zones))
	if ix.catalog != nil {
		zones = slices.AppendSeq(zones, maps.Values(ix.catalog.zones))
	}
	for _, z := range zones {
		if z.fast != nil && z.fast.stats != nil {
			emit(z.origin, z.fast.stats)
		}
		ch <- prometheus.MustNewConstMetric(descSerial, prometheus.GaugeValue, float64(z.serial), z.origin)
	}
	for tr := range 2 {
		h := &st.sizes[tr]
		buckets := make(map[float64]uint64, nSizes)
		var cum uint64
		for i := range nSizes {
			cum += h.buckets[i].Load()
			buckets[float64(uint64(1)<<(i+sizeMinShift))] = cum
		}
		// count is added after the buckets; read it last and never below
		// them, so the histogram stays consistent.
		ch <- prometheus.MustNewConstHistogram(descSizes, max(cum, h.count.Load()), float64(h.sum.Load()), buckets, transportNames[tr])
	}
	ch <- prometheus.MustNewConstMetric(descRateLimited, prometheus.CounterValue, float64(st.dropped.Load()), "dropped")
	ch <- prometheus.MustNewConstMetric(descRateLimited, prometheus.CounterValue, float64(st.slipped.Load()), "slipped")
	ch <- prometheus.MustNewConstMetric(descTCPOpen, prometheus.GaugeValue, float64(s.tcp.open.Load()))
	ch <- prometheus.MustNewConstMetric(descTCPEvicted, prometheus.CounterValue, float64(st.tcpEvicted.Load()))
	ch <- prometheus.MustNewConstMetric(descTCPRefused, prometheus.CounterValue, float64(st.tcpRefused.Load()))
	ch <- prometheus.MustNewConstMetric(descUpdates, prometheus.CounterValue, float64(st.updates[0].Load()), "accepted")
	ch <- prometheus.MustNewConstMetric(descUpdates, prometheus.CounterValue, float64(st.updates[1].Load()), "refused")
	st.mu.Lock()
	defer st.mu.Unlock()
	for origin, n := range st.transfers {
		ch <- prometheus.MustNewConstMetric(descTransfers, prometheus.CounterValue, float64(n), origin)
	}
	for k, n := range st.notify {
		ch <- prometheus.MustNewConstMetric(descNotifySent, prometheus.CounterValue, float64(n[0]), k.zone, k.secondary)
		ch <- prometheus.MustNewConstMetric(descNotifyAnswered, prometheus.CounterValue, float64(n[1]), k.zone, k.secondary)
	}
}

func rcodeName(r int) string {
	if n, ok := dns.RcodeToString[r]; ok {
		return n
	}
	return strconv.Itoa(r)
}
