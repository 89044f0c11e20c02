// Package config reads signpost's TOML file and turns it into one immutable,
// fully validated and fully derived *Model: zones with every record, and the
// exact bytes of every Matrix discovery document. Both servers answer from a
// Model and nothing else, so DNS and HTTP cannot disagree.
//
// config does no I/O beyond reading the file it is given: no sockets, no
// goroutines, no logging. It imports nothing of signpost's.
package config

import (
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Model is everything signpost serves, derived once from one configuration
// file. It is never modified after Load or Parse returns it; a reload builds a
// new Model and the servers swap a pointer.
type Model struct {
	// Path is the file the model was read from, as given to Load or Parse.
	Path string

	DNS     DNS
	HTTP    HTTP
	ACME    ACME
	Metrics Metrics

	// Zones holds every zone signpost is authoritative for, sorted by origin
	// in canonical DNS order.
	Zones []*Zone

	// Delegations holds one entry per [[delegation]], in file order.
	Delegations []*Delegation

	// Keys are the TSIG keys ([[key]]), SecondaryServers the servers that
	// copy zones ([[secondary]]), Updates what each key may change by
	// UPDATE ([[update]]).
	Keys             []*TSIGKey
	SecondaryServers []*Secondary
	Updates          []*UpdatePolicy
	// Catalog is the RFC 9432 catalog zone listing every zone, offered to
	// secondaries by transfer only; nil unless dns.catalog is set.
	Catalog *Zone

	// Warnings are problems that do not stop the file from being served
	// (a server name outside every zone, an unnamespaced client_extra key).
	Warnings []*Problem

	byServerName map[string]*Delegation
	byOrigin     map[string]*Zone
	pos          func() *positions // where each key is written, for Problemf
}

// DNS is the [dns] table.
type DNS struct {
	// Listen lists host:port addresses; each is served over UDP and TCP.
	// Empty (dns.listen = []) means no DNS server at all; see DNSOff.
	Listen []string
	// Nameservers are the zones' NS targets: fully qualified, lower case,
	// with a trailing dot.
	Nameservers []string
	// Hostmaster is the SOA RNAME in domain form ("hostmaster.example.com.").
	Hostmaster string
	// TTL is the TTL in seconds of every derived record.
	TTL uint32
	// Catalog is the origin of the catalog zone (fully qualified), or "".
	Catalog string
	// NSID is the name server identifier sent to clients that ask for it
	// (RFC 5001); empty: none is sent.
	NSID string
	// CookieSecret is the 16-byte SipHash key of DNS server cookies
	// (RFC 9018); nil: a random secret chosen at each start.
	CookieSecret []byte
	// CookieSecretPrevious is a second secret whose cookies are accepted
	// but never issued, for rotating CookieSecret; nil: none.
	CookieSecretPrevious []byte
	// RRL is response rate limiting over UDP.
	RRL RRL
	// DNSSEC is dns.dnssec: whether zones are signed unless they say
	// otherwise (Zone.DNSSEC holds each zone's choice).
	DNSSEC bool
}

// RRL is the [dns.rrl] table: response rate limiting over UDP, on by
// default.
type RRL struct {
	// Rate is how many responses per second one source prefix gets of one
	// kind (answer, NXDOMAIN, NODATA, referral, error) for one name; 0
	// turns rate limiting off.
	Rate int
	// Slip is how often a response over the rate is sent truncated
	// instead of dropped: every Slip-th; 0 drops them all.
	Slip int
	// IPv4Prefix and IPv6Prefix are the prefix lengths that group sources
	// into one client.
	IPv4Prefix int
	IPv6Prefix int
	// Exempt lists source prefixes never rate limited; nil: none.
	Exempt []netip.Prefix
}

// HTTP is the [http] table.
type HTTP struct {
	// Listen is the HTTPS listen address.
	Listen string
	// PlainListen is the plain HTTP listen address (ACME HTTP-01, documents
	// for a proxy in front, redirect to https for everything else).
	PlainListen string
	// RootRedirect is where "/" redirects; empty means "/" is 404.
	RootRedirect string
	// ServerMaxAge is the Cache-Control max-age of /.well-known/matrix/server.
	ServerMaxAge time.Duration
	// ClientMaxAge is the Cache-Control max-age of /client and /support.
	ClientMaxAge time.Duration
}

// Metrics is the [metrics] table.
type Metrics struct {
	// Listen is the host:port of the listener for Prometheus (/metrics),
	// health checks (/healthz, /readyz) and signpost status (/status);
	// empty: no such listener.
	Listen string
}

// ACME is the [acme] table.
type ACME struct {
	// Mode is ModeACME or ModeSelfSigned.
	Mode string
	// Email is the ACME account contact.
	Email string
	// Directory is the ACME directory URL.
	Directory string
	// Challenges lists the offered challenge types, from ChallengeHTTP01,
	// ChallengeTLSALPN01 and ChallengeDNS01, in the order written.
	Challenges []string
	// CARoot is the path of an extra PEM root to trust for the ACME server;
	// empty means the system roots only.
	CARoot string
	// Storage is the directory for certificates, keys and the ACME account,
	// or a postgres:// URL of a database that several instances share. A
	// URL may hold a password: print it redacted (url.URL.Redacted).
	Storage string
	// Names are extra certificate names beyond the served server names.
	Names []string
}

// names says whether acme.names gets name a certificate: it lists name,
// or a wildcard for name's parent.
func (a *ACME) names(name string) bool {
	_, parent, _ := strings.Cut(name, ".")
	for _, n := range a.Names {
		if n == name || n == "*."+parent {
			return true
		}
	}
	return false
}

// Values of ACME.Mode and ACME.Challenges.
const (
	ModeACME       = "acme"
	ModeSelfSigned = "self-signed"

	ChallengeHTTP01    = "http-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
	ChallengeDNS01     = "dns-01"
)

// Zone is one zone signpost is authoritative for.
type Zone struct {
	// Origin is the zone apex: lower case, fully qualified, trailing dot.
	Origin string
	// Addresses are this host's public addresses, published at every server
	// name inside the zone and as glue for in-zone nameservers that have no
	// address records of their own.
	Addresses []netip.Addr
	// SOA is the zone's SOA record; it is also Records[0].
	SOA *dns.SOA
	// Records is every record of the zone: the SOA first, then the rest in
	// canonical order (owner name, then type, then rdata). Owner names are
	// lower case and fully qualified.
	Records []dns.RR
	// DNSSEC says the zone is served signed (dns.dnssec, or the zone's own
	// dnssec key). The DNSSEC records are made by the DNS server from keys
	// in the state directory, so Records never holds any.
	DNSSEC bool

	hash [32]byte // content hash without the serial, for serial bumps
}

// Delegation is one [[delegation]]: a Matrix server name and where it is
// served.
type Delegation struct {
	// ServerName is the name in user IDs: lower case, no trailing dot, no port.
	ServerName string
	// Server is the m.server value, host:port.
	Server string
	// Client is m.homeserver.base_url, without a trailing slash.
	Client string
	// IdentityServer is m.identity_server.base_url; empty when not set.
	IdentityServer string
	// SRVFallback says whether _matrix-fed._tcp.<ServerName> is published.
	SRVFallback bool
	// Zone is the zone that holds ServerName, or nil when the name is outside
	// every zone (documents only, scenario S3).
	Zone *Zone

	// ServerDoc, ClientDoc and SupportDoc are the exact bytes served at
	// /.well-known/matrix/server, /client and /support. SupportDoc is nil
	// when no support document is configured: serve 404 then.
	ServerDoc  []byte
	ClientDoc  []byte
	SupportDoc []byte

	srvTarget string // host of Server, for the SRV fallback
	srvPort   uint16
}

// Delegation returns the delegation for a server name, matched
// case-insensitively; a trailing dot is ignored. It returns nil if there is
// none.
func (m *Model) Delegation(serverName string) *Delegation {
	serverName = strings.TrimSuffix(serverName, ".")
	if d, ok := m.byServerName[serverName]; ok {
		return d
	}
	return m.byServerName[strings.ToLower(serverName)]
}

// ZoneFor returns the deepest zone whose origin is name or an ancestor of
// name, or nil if name is outside every zone. name is matched
// case-insensitively and may omit the trailing dot.
func (m *Model) ZoneFor(name string) *Zone {
	z, _ := enclosing(m.byOrigin, name)
	return z
}

// zone returns the zone with origin, or the catalog zone, or nil.
func (m *Model) zone(origin string) *Zone {
	if z := m.byOrigin[origin]; z != nil {
		return z
	}
	if m.Catalog != nil && m.Catalog.Origin == origin {
		return m.Catalog
	}
	return nil
}

// CertificateNames returns the names this host needs certificates for: every
// server name inside a zone that has addresses (so its A/AAAA point here), then
// ACME.Names, without duplicates.
func (m *Model) CertificateNames() []string {
	var names []string
	seen := map[string]bool{}
	for _, d := range m.Delegations {
		if d.Zone != nil && len(d.Zone.Addresses) > 0 && !seen[d.ServerName] {
			seen[d.ServerName] = true
			names = append(names, d.ServerName)
		}
	}
	for _, n := range m.ACME.Names {
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	return names
}
