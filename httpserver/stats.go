package httpserver

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Counting requests for Prometheus: one atomic add per request, into the
// counters of the site that answered, by document and status. Labels come
// from the configuration (server names) and fixed tables, never from the
// request.

var docNames = [...]string{"server", "client", "support", "other"}

// statusCodes are the statuses counted by code; any other counts as
// "other". They are every status the server sends.
var statusCodes = [...]int{200, 204, 301, 302, 304, 400, 404, 405, 421, 431}

const (
	docOther = len(docNames) - 1
	nStatus  = len(statusCodes) + 1
)

// siteStats are the request counters of one server name, or of none.
type siteStats struct {
	n [len(docNames)][nStatus]atomic.Uint64
}

type httpStats struct {
	none                          siteStats // requests for no configured name
	handshakes, handshakeFailures atomic.Uint64

	mu    sync.Mutex
	sites map[string]*siteStats // by name; only grows, so counts survive a reload
}

func (st *httpStats) site(name string) *siteStats {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sites == nil {
		st.sites = map[string]*siteStats{}
	}
	s := st.sites[name]
	if s == nil {
		s = new(siteStats)
		st.sites[name] = s
	}
	return s
}

// count notes one answer of status to a request for path on site (nil:
// none).
func (st *httpStats) count(site *site, path string, status int) {
	ss := &st.none
	if site != nil {
		if ss = site.stats.Load(); ss == nil {
			// The first request for the name since the site was built.
			// Requests racing here get the same counters from st.sites,
			// which also gives a site rebuilt by a reload the counts of
			// the one before it.
			ss = st.site(site.name)
			site.stats.Store(ss)
		}
	}
	doc := docOther
	if rest, ok := strings.CutPrefix(path, wellKnownPrefix); ok {
		switch rest {
		case "server":
			doc = docServer
		case "client":
			doc = docClient
		case "support":
			doc = docSupport
		}
	}
	i := len(statusCodes)
	for j, c := range statusCodes {
		if c == status {
			i = j
			break
		}
	}
	ss.n[doc][i].Add(1)
}

// Metrics returns the collector of the server's counters, for a
// prometheus.Registry.
func (s *Server) Metrics() prometheus.Collector { return (*httpCollector)(s) }

type httpCollector Server

var (
	descRequests = prometheus.NewDesc("signpost_http_requests_total",
		"HTTP requests answered, by server name (none: no configured name), document and status.",
		[]string{"server_name", "document", "status"}, nil)
	descHandshakes = prometheus.NewDesc("signpost_http_tls_handshakes_total",
		"TLS handshakes completed on the HTTPS listener.", nil, nil)
	descHandshakeErrors = prometheus.NewDesc("signpost_http_tls_handshake_errors_total",
		"TLS handshakes that failed on the HTTPS listener.", nil, nil)
	descConns = prometheus.NewDesc("signpost_http_connections",
		"HTTP connections open, by listener (https or http).", []string{"listener"}, nil)
	descEvicted = prometheus.NewDesc("signpost_http_connections_evicted_total",
		"HTTP connections closed to make room for a new one, by listener.", []string{"listener"}, nil)
)

func (c *httpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descHandshakes, descHandshakeErrors, descConns, descEvicted} {
		ch <- d
	}
}

func (c *httpCollector) Collect(ch chan<- prometheus.Metric) {
	s := (*Server)(c)
	emit := func(name string, ss *siteStats) {
		for d, doc := range docNames {
			for i := range nStatus {
				if v := ss.n[d][i].Load(); v != 0 {
					status := "other"
					if i < len(statusCodes) {
						status = strconv.Itoa(statusCodes[i])
					}
					ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(v), name, doc, status)
				}
			}
		}
	}
	emit("none", &s.stats.none)
	ix := s.index.Load()
	// Counters of the names the model serves: st.sites also keeps those of
	// names a reload removed, and a site may not have found its own yet.
	s.stats.mu.Lock()
	counted := make(map[string]*siteStats, len(s.stats.sites))
	for name, ss := range s.stats.sites {
		if ix.sites[name] != nil {
			counted[name] = ss
		}
	}
	s.stats.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(counted)) {
		emit(name, counted[name])
	}
	ch <- prometheus.MustNewConstMetric(descHandshakes, prometheus.CounterValue, float64(s.stats.handshakes.Load()))
	ch <- prometheus.MustNewConstMetric(descHandshakeErrors, prometheus.CounterValue, float64(s.stats.handshakeFailures.Load()))
	for _, l := range []struct {
		name string
		lim  *connLimiter
	}{{"https", s.tlsConns}, {"http", s.plainConns}} {
		ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(l.lim.count()), l.name)
		ch <- prometheus.MustNewConstMetric(descEvicted, prometheus.CounterValue, float64(l.lim.evicted.Load()), l.name)
	}
}
