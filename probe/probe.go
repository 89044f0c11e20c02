// Package probe discovers a Matrix server name from the outside, the way a
// remote homeserver (Server-Server API, "Resolving server names") and a
// client (Client-Server API, "Server discovery"; matrix-js-sdk's
// AutoDiscovery) do it, and reports every step: what was asked, what came
// back, which steps were skipped and why, and what to fix.
//
// Every outside dependency is a parameter: the DNS resolver address (queried
// with github.com/miekg/dns, never the system resolver library), the
// certificate roots, the dialer and the clock. That is what lets the tests
// run whole scenarios against DNS and HTTPS fixtures on loopback.
//
// probe imports nothing of signpost's: it must judge a deployment the way an
// outsider does, not through signpost's own model.
package probe

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/miekg/dns"
)

// Options are the probe's dependencies. The zero value probes the real
// internet through the system's configured DNS resolver and CA roots.
type Options struct {
	// Resolver is the host:port of the recursive DNS resolver to ask. Empty
	// means the first nameserver in /etc/resolv.conf.
	Resolver string

	// Roots verifies every certificate. Nil means the system roots.
	Roots *x509.CertPool

	// Dial opens every connection the probe makes: DNS over UDP and TCP
	// (to the resolver and to the zone's nameservers on port 53) and HTTPS
	// (port 443, 8448, or what SRV and m.server say). Tests map those
	// addresses to loopback listeners here. Nil means a plain net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// Timeout bounds each DNS query, TLS handshake and HTTP exchange. Zero
	// means 5 seconds, matrix-js-sdk's well-known timeout.
	Timeout time.Duration

	// Now is the clock used for certificate and key validity. Nil means
	// time.Now.
	Now func() time.Time

	// AllowLocal reports loopback, private and documentation addresses as
	// info instead of warnings. For test setups on one machine.
	AllowLocal bool

	// Logger receives debug logs. Nil discards them.
	Logger *slog.Logger
}

// SystemResolver returns the first nameserver of /etc/resolv.conf as
// host:port, for callers that want to show which resolver Run will use.
func SystemResolver() (string, error) {
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return "", fmt.Errorf("probe: read resolver configuration: %w", err)
	}
	if len(cc.Servers) == 0 {
		return "", fmt.Errorf("probe: /etc/resolv.conf names no nameserver; pass a resolver address")
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port), nil
}

// prober holds one run's state. It is used by one goroutine.
type prober struct {
	o        Options
	rep      *Report
	name     string
	sn       serverName
	resolver string
	timeout  time.Duration
	now      func() time.Time
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	log      *slog.Logger

	cache    map[string]*answer
	seenAddr map[netip.Addr]bool
	http     *httpClient

	// wk is the result of fetching /.well-known/matrix/server, kept for the
	// hygiene checks.
	wk *wellKnownResult
	// srvLive is the SRV name the live resolution path used for the
	// server name itself ("" if none), so the rehearsal does not repeat it.
	srvLive string
}

// Run probes name and returns the report; it never returns nil. It stops
// early only when ctx is done (the remaining checks then fail with the
// context's error) or when name is not a server name at all.
func Run(ctx context.Context, name string, o Options) *Report {
	p := &prober{
		o:        o,
		rep:      &Report{ServerName: name, Targets: []Target{}, Checks: []Check{}},
		name:     name,
		resolver: o.Resolver,
		timeout:  o.Timeout,
		now:      o.Now,
		dial:     o.Dial,
		log:      o.Logger,
		cache:    map[string]*answer{},
		seenAddr: map[netip.Addr]bool{},
	}
	if p.timeout <= 0 {
		p.timeout = 5 * time.Second
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.dial == nil {
		p.dial = defaultDial
	}
	if p.log == nil {
		p.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	p.rep.Time = p.now()
	p.rep.Client.IdentityOutcome = "PROMPT"
	if p.resolver == "" {
		r, err := SystemResolver()
		if err != nil {
			p.rep.add(SectionName, StatusFail, "pass -resolver HOST:PORT", "no DNS resolver: %v", err)
			return p.rep
		}
		p.resolver = r
	}
	p.rep.Resolver = p.resolver
	p.http = newHTTPClient(p)
	defer p.http.close()

	sn, err := parseServerName(name)
	if err != nil {
		p.rep.add(SectionName, StatusFail, "use the part after the colon in your users' IDs, e.g. example.com or example.com:8448",
			"%q is not a server name: %v", name, err)
		return p.rep
	}
	p.sn = sn
	if sn.IP.IsValid() {
		p.rep.add(SectionName, StatusOK, "", "%q is a valid server name: an IP literal%s", name, portPhrase(sn))
	} else if prob := dnsNameProblem(sn.Host); prob != "" {
		p.rep.add(SectionName, StatusFail, "choose a server name that is a valid DNS hostname", "%s", prob)
		return p.rep
	} else {
		p.rep.add(SectionName, StatusOK, "", "%q is a valid server name: a DNS name%s", name, portPhrase(sn))
	}

	p.resolve(ctx)
	for i := range p.rep.Targets {
		p.connectTarget(ctx, SectionConnect, &p.rep.Targets[i], false)
	}
	p.rehearseSRV(ctx)
	p.wellKnownHygiene(ctx)
	p.clientDiscovery(ctx)
	p.supportDocument(ctx)
	p.dnsSanity(ctx)
	return p.rep
}

func portPhrase(sn serverName) string {
	if sn.Port != 0 {
		return " with explicit port " + strconv.Itoa(int(sn.Port))
	}
	return " without a port"
}

// Remap returns an Options.Dial that connects to m[addr] instead of addr.
// Keys are "host:port" for one address or ":port" for that port on every
// address; values are "host:port". Other addresses are dialled as they are.
// It lets a local test setup stand in for ports a test cannot bind, e.g.
// Remap(map[string]string{":443": "127.0.0.1:8443", ":53": "127.0.0.1:5353"}).
func Remap(m map[string]string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if to, ok := m[addr]; ok {
			addr = to
		} else if _, port, err := net.SplitHostPort(addr); err == nil {
			if to, ok := m[":"+port]; ok {
				addr = to
			}
		}
		return defaultDial(ctx, network, addr)
	}
}
