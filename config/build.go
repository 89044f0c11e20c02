package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/mail"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Defaults for keys that may be left out; README.md documents each.
const (
	defaultDNSListen    = "[::]:53"
	defaultTTL          = time.Hour
	defaultHTTPSListen  = "[::]:443"
	defaultPlainListen  = "[::]:80"
	defaultServerMaxAge = 24 * time.Hour
	defaultClientMaxAge = time.Hour
	defaultDirectory    = "https://acme-v02.api.letsencrypt.org/directory"
	defaultStorage      = "/var/lib/signpost"

	// Synapse clamps the cache time of /.well-known/matrix/server to this
	// range, so a max-age outside it only misleads.
	minMaxAge = 5 * time.Minute
	maxMaxAge = 48 * time.Hour

	// Synapse refuses well-known bodies over 50 KiB and clients fetch
	// /client on every login; a document near that size is a mistake.
	maxDocument = 16 << 10

	// SOA timers. The minimum (negative-caching TTL, RFC 2308) is short so
	// that a name or ACME challenge added a moment after a miss is seen soon.
	soaRefresh = 7200
	soaRetry   = 3600
	soaExpire  = 1209600
	soaMinimum = 300
)

func build(ps *problems, f *file, o Options) *Model {
	m := &Model{byServerName: map[string]*Delegation{}, byOrigin: map[string]*Zone{}}
	ttl := buildDNS(ps, f, m)
	buildEDNS(ps, f, m)
	buildHTTP(ps, f, m)
	buildACME(ps, f, m)
	buildMetrics(ps, f, m)
	zones := buildZones(ps, f, m, ttl)
	buildDelegations(ps, f, m)
	m.DNS.Catalog = parseCatalog(ps, f.DNS.Catalog)
	buildKeys(ps, f, m)
	buildSecondaries(ps, f, m)
	buildUpdates(ps, f, m)
	checkDNSOff(ps, f, m)
	// Derive even when there are errors already: the parts that are valid
	// may still conflict, and the user should hear about everything at once.
	if ps.stopped(0) {
		return m
	}
	deriveRecords(ps, m, zones, ttl)
	// With DNS off no record is served, so nothing can hide behind a cut,
	// miss an address or be shadowed by the catalog.
	if len(ps.errs) == 0 && !m.DNSOff() {
		// These read whole zones: a record that failed to parse would
		// show up again here as a missing address.
		checkReach(ps, m, zones)
	}
	if !m.DNSOff() {
		checkCatalogAbove(ps, m, zones)
	}
	if len(ps.errs) > 0 || ps.stopped(0) {
		return m
	}
	// A zone that a reload left as it was is the previous model's *Zone,
	// so the servers can tell it has not changed and keep what they
	// derived from it (dnsserver's precomputed answers), rather than
	// rebuild every zone when one line changed.
	reused := map[*Zone]*Zone{}
	for i, z := range zones {
		if ps.stopped(i) {
			return m
		}
		if prev := z.finish(m, o, m.DNS.Nameservers); prev != nil {
			reused[z.Zone] = prev
			z.Zone = prev
		}
	}
	if len(reused) > 0 {
		for i, z := range m.Zones {
			if prev := reused[z]; prev != nil {
				m.Zones[i] = prev
				m.byOrigin[prev.Origin] = prev
			}
		}
		for _, d := range m.Delegations {
			if prev := reused[d.Zone]; prev != nil {
				d.Zone = prev
			}
		}
	}
	buildCatalog(ps, m, o)
	return m
}

func buildDNS(ps *problems, f *file, m *Model) uint32 {
	d := f.DNS
	m.DNS.Listen = d.Listen
	if d.Listen == nil { // left out; dns.listen = [] turns DNS off
		m.DNS.Listen = []string{defaultDNSListen}
	}
	for i, l := range d.Listen {
		if p := listenProblem(l); p != "" {
			ps.errorf(fmt.Sprintf("dns.listen[%d]", i), "%s", p)
		}
	}
	ttl := defaultTTL
	if d.TTL != "" {
		t, err := time.ParseDuration(d.TTL)
		switch {
		case err != nil:
			ps.errorf("dns.ttl", "%q is not a duration; write e.g. \"1h\", \"30m\" or \"300s\"", d.TTL)
		case t < time.Second || t > 7*24*time.Hour || t%time.Second != 0:
			ps.errorf("dns.ttl", "%s is out of range; use whole seconds from 1s to 168h", d.TTL)
		default:
			ttl = t
		}
	}
	m.DNS.TTL = uint32(ttl / time.Second)
	seen := map[string]bool{}
	for i, ns := range d.Nameservers {
		key := fmt.Sprintf("dns.nameservers[%d]", i)
		name := strings.TrimSuffix(ns, ".")
		if p := hostnameProblem(name); p != "" {
			ps.errorf(key, "%q %s", ns, p)
			continue
		}
		if seen[name] {
			ps.errorf(key, "%q is listed twice; remove one", ns)
			continue
		}
		seen[name] = true
		m.DNS.Nameservers = append(m.DNS.Nameservers, fqdn(name))
	}
	// With DNS off (dns.listen = []) the zones only decide which names get
	// certificates; nothing serves their NS records.
	if len(f.Zone) > 0 && len(d.Nameservers) == 0 && len(m.DNS.Listen) > 0 {
		ps.errorf("dns.nameservers", "missing; list the names the parent zone's NS records point at, e.g. nameservers = [\"ns1.%s\"]", strings.TrimSuffix(f.Zone[0].Origin, "."))
	}
	if d.Hostmaster != "" {
		rname, p := hostmasterName(d.Hostmaster)
		if p != "" {
			ps.errorf("dns.hostmaster", "%q %s", d.Hostmaster, p)
		}
		m.DNS.Hostmaster = rname
	}
	return m.DNS.TTL
}

// hostmasterName turns an email address into SOA RNAME form (RFC 1035
// §8: the local part becomes the first label, its dots escaped).
func hostmasterName(s string) (string, string) {
	local, domain, ok := strings.Cut(s, "@")
	if !ok || local == "" {
		return "", "is not an email address; write e.g. \"hostmaster@example.com\""
	}
	for _, r := range local {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_' || r == '+') {
			return "", fmt.Sprintf("has %q in its local part, which zone checkers reject in an SOA RNAME; use letters, digits, \"-\", \"_\", \"+\" and \".\"", r)
		}
	}
	if p := hostnameProblem(strings.ToLower(strings.TrimSuffix(domain, "."))); p != "" {
		return "", "has a domain that " + p
	}
	return strings.ReplaceAll(local, ".", `\.`) + "." + fqdn(domain), ""
}

func buildHTTP(ps *problems, f *file, m *Model) {
	h := f.HTTP
	m.HTTP.Listen = cmpOr(h.Listen, defaultHTTPSListen)
	m.HTTP.PlainListen = cmpOr(h.PlainListen, defaultPlainListen)
	if p := listenProblem(m.HTTP.Listen); p != "" {
		ps.errorf("http.listen", "%s", p)
	}
	if p := listenProblem(m.HTTP.PlainListen); p != "" {
		ps.errorf("http.plain_listen", "%s", p)
	} else if m.HTTP.PlainListen == m.HTTP.Listen && !strings.HasSuffix(m.HTTP.Listen, ":0") {
		ps.errorf("http.plain_listen", "%q is also http.listen; HTTPS and plain HTTP need ports of their own", m.HTTP.PlainListen)
	}
	if h.RootRedirect != "" {
		u, err := url.Parse(h.RootRedirect)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			ps.errorf("http.root_redirect", "%q is not an absolute http(s) URL; write e.g. \"https://www.example.com/\"", h.RootRedirect)
		}
		m.HTTP.RootRedirect = h.RootRedirect
	}
	m.HTTP.ServerMaxAge = maxAge(ps, "http.server_max_age", h.ServerMaxAge, defaultServerMaxAge)
	m.HTTP.ClientMaxAge = maxAge(ps, "http.client_max_age", h.ClientMaxAge, defaultClientMaxAge)
}

func maxAge(ps *problems, key, s string, def time.Duration) time.Duration {
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		ps.errorf(key, "%q is not a duration; write e.g. \"24h\" or \"30m\"", s)
		return def
	}
	if d < minMaxAge || d > maxMaxAge || d%time.Second != 0 {
		ps.errorf(key, "%s is out of range; Synapse clamps cache times to 5m..48h, so use whole seconds in that range", s)
		return def
	}
	return d
}

func buildMetrics(ps *problems, f *file, m *Model) {
	l := f.Metrics.Listen
	if l == "" {
		return
	}
	if p := listenProblem(l); p != "" {
		ps.errorf("metrics.listen", "%s", p)
		return
	}
	for _, other := range []struct{ key, addr string }{{"http.listen", m.HTTP.Listen}, {"http.plain_listen", m.HTTP.PlainListen}} {
		if l == other.addr && !strings.HasSuffix(l, ":0") {
			ps.errorf("metrics.listen", "%q is also %s; the metrics listener needs a port of its own, e.g. \"127.0.0.1:9153\"", l, other.key)
		}
	}
	m.Metrics.Listen = l
}

func buildACME(ps *problems, f *file, m *Model) {
	a := f.ACME
	m.ACME = ACME{
		Mode:      cmpOr(a.Mode, ModeACME),
		Email:     a.Email,
		Directory: cmpOr(a.Directory, defaultDirectory),
		CARoot:    a.CARoot,
		Storage:   cmpOr(a.Storage, defaultStorage),
	}
	if m.ACME.Mode != ModeACME && m.ACME.Mode != ModeSelfSigned {
		ps.errorf("acme.mode", "%q is not a mode; use %q (certificates from the CA) or %q (local trials, no CA)", a.Mode, ModeACME, ModeSelfSigned)
	}
	if a.Email != "" {
		if addr, err := mail.ParseAddress(a.Email); err != nil || addr.Address != a.Email {
			ps.errorf("acme.email", "%q is not an email address; write e.g. \"admin@example.com\"", a.Email)
		}
	}
	if u, err := url.Parse(m.ACME.Directory); err != nil || u.Scheme != "https" || u.Host == "" {
		ps.errorf("acme.directory", "%q is not an https URL; ACME directories are https, e.g. %q", m.ACME.Directory, defaultDirectory)
	}
	all := []string{ChallengeTLSALPN01, ChallengeHTTP01, ChallengeDNS01}
	if a.Challenges == nil {
		m.ACME.Challenges = all
	}
	for i, c := range a.Challenges {
		key := fmt.Sprintf("acme.challenges[%d]", i)
		switch {
		case !slices.Contains(all, c):
			ps.errorf(key, "%q is not a challenge type; use %q, %q or %q", c, ChallengeTLSALPN01, ChallengeHTTP01, ChallengeDNS01)
		case slices.Contains(m.ACME.Challenges, c):
			ps.errorf(key, "%q is listed twice; remove one", c)
		default:
			m.ACME.Challenges = append(m.ACME.Challenges, c)
		}
	}
	if a.Challenges != nil && len(a.Challenges) == 0 && m.ACME.Mode == ModeACME {
		ps.errorf("acme.challenges", "is empty, so no certificate can be obtained; list at least one of %q, %q, %q", ChallengeTLSALPN01, ChallengeHTTP01, ChallengeDNS01)
	}
	storageProblems(ps, m.ACME.Storage)
	for i, n := range a.Names {
		if p := hostnameProblem(strings.TrimPrefix(n, "*.")); p != "" {
			ps.errorf(fmt.Sprintf("acme.names[%d]", i), "%q %s", n, p)
			continue
		}
		m.ACME.Names = append(m.ACME.Names, n)
	}
}

// storageProblems checks acme.storage when it is a URL: only PostgreSQL
// is offered. The value is never repeated whole in a message, since it may
// hold a password.
func storageProblems(ps *problems, storage string) {
	scheme, _, isURL := strings.Cut(storage, "://")
	if !isURL {
		return // a directory; whether it can be written is checked on the machine, not here
	}
	if scheme != "postgres" && scheme != "postgresql" {
		ps.errorf("acme.storage", "%q is not a storage signpost knows; write a directory, e.g. %q, or a PostgreSQL URL, postgres://user@host:5432/database", scheme+"://…", defaultStorage)
		return
	}
	u, err := url.Parse(storage)
	if err != nil {
		// Not even the cause: it quotes the part that failed, which may be
		// the password.
		ps.errorf("acme.storage", "is not a valid PostgreSQL URL; write postgres://user@host:5432/database, percent-encoding special characters in the user name and password (%% as %%25, @ as %%40)")
		return
	}
	shown := *u
	shown.RawQuery = "" // may hold password=…
	if u.Hostname() == "" {
		ps.errorf("acme.storage", "%s names no host; write postgres://user@host:5432/database", shown.Redacted())
	}
	if strings.Trim(u.Path, "/") == "" {
		ps.errorf("acme.storage", "%s names no database; write postgres://user@host:5432/database", shown.Redacted())
	}
	if _, ok := u.User.Password(); ok || u.Query().Has("password") {
		ps.warnf("acme.storage", "the URL holds a password, so this file is as secret as the certificates' keys; consider leaving it out and setting PGPASSWORD or a ~/.pgpass file for the user signpost runs as")
	}
}

// zoneBuild is a zone while it is being assembled, with where each of its
// records came from so conflicts can name the line that caused them.
type zoneBuild struct {
	*Zone
	key     string // "zone[0]"
	records []sourced
	texts   []string // each record's rr.String(), made by checkZone for finish
}

type sourced struct {
	rr  dns.RR
	key string // the config key the record comes from
}

func buildZones(ps *problems, f *file, m *Model, ttl uint32) []*zoneBuild {
	var zones []*zoneBuild
	// Maps, not a comparison of every pair, find nested zones: a provider
	// has thousands.
	byOrigin := map[string]*zoneBuild{}
	below := map[string]*zoneBuild{} // a proper ancestor of an origin -> the first zone under it
	for i, zt := range f.Zone {
		if ps.stopped(i) {
			return nil
		}
		key := fmt.Sprintf("zone[%d]", i)
		origin := strings.ToLower(strings.TrimSuffix(zt.Origin, "."))
		if p := originProblem(origin); p != "" {
			if zt.Origin == "" {
				ps.errorf(key+".origin", "missing; write the delegated zone, e.g. origin = \"chat.example.com\"")
			} else {
				ps.errorf(key+".origin", "%q %s", zt.Origin, p)
			}
			continue
		}
		z := &zoneBuild{Zone: &Zone{Origin: origin + ".", DNSSEC: f.DNS.DNSSEC}, key: key}
		if zt.DNSSEC != nil {
			z.DNSSEC = *zt.DNSSEC
		}
		bad := false
		if other := byOrigin[z.Origin]; other != nil {
			ps.errorf(key+".origin", "%q is already %s; merge the two tables", zt.Origin, other.key)
			bad = true
		} else {
			var nested []*zoneBuild
			for _, a := range ancestors(z.Origin) {
				if other := byOrigin[a]; other != nil {
					nested = append(nested, other)
				}
			}
			if other := below[z.Origin]; other != nil {
				nested = append(nested, other)
			}
			for _, other := range nested {
				ps.errorf(key+".origin", "%q and %s (%q) nest; serve the inner names from the outer zone's records instead", zt.Origin, other.key, other.Origin)
				bad = true
			}
		}
		for j, a := range zt.Addresses {
			akey := fmt.Sprintf("%s.addresses[%d]", key, j)
			ip, err := netip.ParseAddr(a)
			switch {
			case err != nil || ip.Zone() != "":
				ps.errorf(akey, "%q is not an IP address; write an IPv4 or IPv6 address", a)
			case ip.IsUnspecified() || ip.IsMulticast():
				ps.errorf(akey, "%s cannot be a host's address; write this host's public IP address", a)
			case slices.Contains(z.Addresses, ip.Unmap()):
				ps.errorf(akey, "%s is listed twice; remove one", a)
			default:
				z.Addresses = append(z.Addresses, ip.Unmap())
			}
		}
		for j, text := range zt.Records {
			rkey := fmt.Sprintf("%s.records[%d]", key, j)
			if rr := parseRecord(ps, rkey, text, z.Origin, ttl); rr != nil {
				if z.DNSSEC && dnssecType(rr.Header().Rrtype) {
					ps.errorf(rkey, "%s records are made by signpost in a signed zone; remove this one", dns.TypeToString[rr.Header().Rrtype])
					continue
				}
				z.records = append(z.records, sourced{rr, rkey})
			}
		}
		if !bad {
			zones = append(zones, z)
			byOrigin[z.Origin] = z
			for _, a := range ancestors(z.Origin) {
				if below[a] == nil {
					below[a] = z
				}
			}
		}
	}
	for _, z := range zones {
		m.Zones = append(m.Zones, z.Zone)
		m.byOrigin[z.Origin] = z.Zone
	}
	return zones
}

// dnssecType says whether records of type t belong to the signing of a
// zone, which the DNS server does, with keys config never sees.
func dnssecType(t uint16) bool {
	switch t {
	case dns.TypeDNSKEY, dns.TypeRRSIG, dns.TypeNSEC, dns.TypeNSEC3, dns.TypeNSEC3PARAM, dns.TypeCDS, dns.TypeCDNSKEY:
		return true
	}
	return false
}

// parseRecord parses one master-file line relative to origin and checks
// that it belongs in the zone and is not one signpost derives itself.
func parseRecord(ps *problems, key, text, origin string, ttl uint32) dns.RR {
	zp := dns.NewZoneParser(strings.NewReader(text), origin, "")
	zp.SetDefaultTTL(ttl)
	zp.SetIncludeAllowed(false)
	rr, ok := zp.Next()
	if err := zp.Err(); err != nil {
		msg := err.Error()
		if pe, isPE := err.(*dns.ParseError); isPE {
			msg = strings.TrimPrefix(pe.Error(), "dns: ")
			if i := strings.Index(msg, " at line:"); i >= 0 {
				msg = msg[:i] // the line is the config line, not the record's
			}
		}
		ps.errorf(key, "%q does not parse (%s); write one record as in a zone file, e.g. \"www 300 IN A 203.0.113.5\"", text, msg)
		return nil
	}
	if !ok || rr == nil {
		ps.errorf(key, "is empty; write one record as in a zone file, e.g. \"www 300 IN A 203.0.113.5\"")
		return nil
	}
	if _, more := zp.Next(); more {
		ps.errorf(key, "%q holds more than one record; write one record per string", text)
		return nil
	}
	h := rr.Header()
	h.Name = strings.ToLower(h.Name)
	if !dns.IsSubDomain(origin, h.Name) {
		ps.errorf(key, "owner %q is outside zone %q; use a name under the origin, or a relative name like \"www\"", h.Name, origin)
		return nil
	}
	if h.Class != dns.ClassINET {
		ps.errorf(key, "class %s is not served; signpost serves class IN only", dns.ClassToString[h.Class])
		return nil
	}
	switch h.Rrtype {
	case dns.TypeSOA:
		ps.errorf(key, "SOA records are derived; remove this one and set dns.hostmaster and dns.ttl instead")
		return nil
	case dns.TypeNS:
		if h.Name == origin {
			ps.errorf(key, "NS records at the apex are derived from dns.nameservers; remove this one")
			return nil
		}
	case dns.TypeOPT, dns.TypeTSIG, dns.TypeTKEY, dns.TypeIXFR, dns.TypeAXFR, dns.TypeANY:
		ps.errorf(key, "%s is not a record type a zone can hold", dns.TypeToString[h.Rrtype])
		return nil
	}
	return rr
}

func buildDelegations(ps *problems, f *file, m *Model) {
	for i, dt := range f.Delegation {
		if ps.stopped(i) {
			return
		}
		key := fmt.Sprintf("delegation[%d]", i)
		d := &Delegation{ServerName: dt.ServerName, SRVFallback: dt.SRVFallback == nil || *dt.SRVFallback}
		ok := true
		if dt.ServerName == "" {
			ps.errorf(key+".server_name", "missing; write the name that appears in user IDs, e.g. server_name = \"example.com\"")
			ok = false
		} else if p := serverNameProblem(dt.ServerName); p != "" {
			ps.errorf(key+".server_name", "%q %s", dt.ServerName, p)
			ok = false
		} else if other, dup := m.byServerName[dt.ServerName]; dup {
			ps.errorf(key+".server_name", "%q is already delegation[%d]; merge the two", dt.ServerName, slices.Index(m.Delegations, other))
			ok = false
		}
		var host string
		var port uint16
		if dt.Server == "" {
			ps.errorf(key+".server", "missing; write where the homeserver's federation listener is, with its port, e.g. server = \"matrix.%s:443\"", cmpOr(dt.ServerName, "example.com"))
			ok = false
		} else {
			var p string
			host, port, p = serverProblem(dt.Server)
			if p != "" {
				ps.errorf(key+".server", "%q %s", dt.Server, p)
				ok = false
			}
			d.Server = dt.Server
		}
		if d.SRVFallback && host != "" {
			if _, err := netip.ParseAddr(host); err == nil {
				ps.errorf(key+".server", "server %q names an IP address, and SRV targets must be host names (RFC 2782); set srv_fallback = false or use a host name", dt.Server)
				ok = false
			}
		}
		if dt.Client == "" {
			ps.errorf(key+".client", "missing; write the homeserver's client URL, e.g. client = \"https://matrix.%s\"", cmpOr(dt.ServerName, "example.com"))
			ok = false
		} else if u, p := baseURL(dt.Client); p != "" {
			ps.errorf(key+".client", "%q %s", dt.Client, p)
			ok = false
		} else {
			d.Client = u
		}
		if dt.IdentityServer != "" {
			if u, p := baseURL(dt.IdentityServer); p != "" {
				ps.errorf(key+".identity_server", "%q %s", dt.IdentityServer, p)
				ok = false
			} else {
				d.IdentityServer = u
			}
		}
		for _, k := range slices.Sorted(maps.Keys(dt.ClientExtra)) {
			switch {
			case k == "m.homeserver" || k == "m.identity_server":
				ps.errorf(key+".client_extra", "sets %q, which signpost writes from %q; remove it here", k, map[string]string{"m.homeserver": "client", "m.identity_server": "identity_server"}[k])
				ok = false
			case !strings.Contains(k, "."):
				ps.warnf(key+".client_extra", "key %q is not namespaced; the spec reserves un-namespaced keys, so use a Java-style name such as \"org.example.%s\"", k, k)
			}
		}
		support, supportOK := buildSupport(ps, key+".support", dt.Support)
		if !ok || !supportOK {
			continue
		}
		d.ServerDoc = document(ps, key+".server", map[string]any{"m.server": d.Server})
		client := map[string]any{}
		for k, v := range dt.ClientExtra {
			client[k] = v
		}
		client["m.homeserver"] = map[string]any{"base_url": d.Client}
		if d.IdentityServer != "" {
			client["m.identity_server"] = map[string]any{"base_url": d.IdentityServer}
		}
		d.ClientDoc = document(ps, key+".client_extra", client)
		if support != nil {
			d.SupportDoc = document(ps, key+".support", support)
		}
		d.srvTarget, d.srvPort = host, port
		m.Delegations = append(m.Delegations, d)
		m.byServerName[d.ServerName] = d
	}
}

// baseURL checks a base_url for the client document and returns it without
// a trailing slash, as clients append paths to it.
func baseURL(s string) (string, string) {
	u, err := url.Parse(s)
	switch {
	case err != nil || !u.IsAbs() || u.Host == "":
		return "", "is not an absolute URL; write e.g. \"https://matrix.example.com\""
	case u.Scheme != "https":
		return "", fmt.Sprintf("uses %s; clients on https pages refuse other schemes, so write https://%s", u.Scheme, u.Host+u.Path)
	case u.RawQuery != "" || u.ForceQuery:
		return "", "has a query; clients append API paths to the base URL, so remove it"
	case u.Fragment != "" || strings.Contains(s, "#"):
		return "", "has a fragment; clients append API paths to the base URL, so remove it"
	case u.User != nil:
		return "", "has user information; remove it"
	}
	return strings.TrimRight(s, "/"), ""
}

// buildSupport returns the support document, nil when none is configured,
// and false when the table has errors.
func buildSupport(ps *problems, key string, st *supportTable) (map[string]any, bool) {
	if st == nil {
		return nil, true
	}
	n := len(ps.errs)
	doc := map[string]any{}
	if st.Page == "" && len(st.Contacts) == 0 {
		ps.errorf(key, "has neither page nor contacts; the spec requires at least one: add page = \"https://example.com/help\" or a contact")
	}
	if st.Page != "" {
		if u, err := url.Parse(st.Page); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			ps.errorf(key+".page", "%q is not an absolute http(s) URL; write e.g. \"https://example.com/help\"", st.Page)
		}
		doc["support_page"] = st.Page
	}
	var contacts []any
	for i, c := range st.Contacts {
		ckey := fmt.Sprintf("%s.contacts[%d]", key, i)
		contact := map[string]any{"role": c.Role}
		switch {
		case c.Role == "":
			ps.errorf(ckey+".role", "missing; use \"m.role.admin\" or \"m.role.security\"")
		case strings.HasPrefix(c.Role, "m.") && !slices.Contains([]string{"m.role.admin", "m.role.security", "m.role.moderator"}, c.Role):
			ps.errorf(ckey+".role", "%q is not a role the spec defines; use \"m.role.admin\", \"m.role.security\", \"m.role.moderator\" or a namespaced role such as \"org.example.role.billing\"", c.Role)
		case !strings.HasPrefix(c.Role, "m.") && !strings.Contains(c.Role, "."):
			ps.errorf(ckey+".role", "%q is neither a spec role nor namespaced; use \"m.role.admin\", \"m.role.security\" or e.g. \"org.example.role.%s\"", c.Role, c.Role)
		}
		if c.MatrixID == "" && c.Email == "" {
			ps.errorf(ckey, "has neither matrix_id nor email; the spec requires at least one of them")
		}
		if c.MatrixID != "" {
			local, server, found := strings.Cut(strings.TrimPrefix(c.MatrixID, "@"), ":")
			if !strings.HasPrefix(c.MatrixID, "@") || !found || local == "" || server == "" {
				ps.errorf(ckey+".matrix_id", "%q is not a Matrix user ID; write it as \"@user:example.com\"", c.MatrixID)
			}
			contact["matrix_id"] = c.MatrixID
		}
		if c.Email != "" {
			if a, err := mail.ParseAddress(c.Email); err != nil || a.Address != c.Email {
				ps.errorf(ckey+".email", "%q is not an email address; write e.g. \"admin@example.com\"", c.Email)
			}
			contact["email_address"] = c.Email
		}
		contacts = append(contacts, contact)
	}
	if contacts != nil {
		doc["contacts"] = contacts
	}
	return doc, len(ps.errs) == n
}

// document encodes a JSON document once, exactly as it will be served.
func document(ps *problems, key string, v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // the documents are JSON, not HTML
	if err := enc.Encode(v); err != nil {
		ps.errorf(key, "cannot be written as JSON: %v", err)
		return nil
	}
	doc := bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	if len(doc) > maxDocument {
		ps.errorf(key, "makes a document of %d bytes; keep it under %d (Synapse rejects over 50 KiB, and clients fetch it on every login)", len(doc), maxDocument)
	}
	return doc
}

// deriveRecords adds the records signpost derives to each zone and checks
// the whole zone for conflicts, then sorts it.
func deriveRecords(ps *problems, m *Model, zones []*zoneBuild, ttl uint32) {
	zoneOf := zoneIndex(zones)
	hdr := func(name string, t uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
	}
	addrRRs := func(name string, addrs []netip.Addr) []dns.RR {
		var rrs []dns.RR
		for _, a := range addrs {
			if a.Is4() {
				rrs = append(rrs, &dns.A{Hdr: hdr(name, dns.TypeA), A: a.AsSlice()})
			} else {
				rrs = append(rrs, &dns.AAAA{Hdr: hdr(name, dns.TypeAAAA), AAAA: a.AsSlice()})
			}
		}
		return rrs
	}
	for _, z := range zones {
		for _, ns := range m.DNS.Nameservers {
			z.records = append(z.records, sourced{&dns.NS{Hdr: hdr(z.Origin, dns.TypeNS), Ns: ns}, "dns.nameservers"})
		}
	}
	for i, ns := range m.DNS.Nameservers {
		z := zoneOf(ns)
		if z == nil || hasAddress(z.records, ns) {
			continue
		}
		if len(z.Addresses) == 0 {
			ps.errorf(fmt.Sprintf("dns.nameservers[%d]", i), "%q is inside zone %q but has no address; add addresses to %s or an A/AAAA record for it to its records", strings.TrimSuffix(ns, "."), z.Origin, z.key)
			continue
		}
		for _, rr := range addrRRs(ns, z.Addresses) {
			z.records = append(z.records, sourced{rr, z.key + ".addresses"})
		}
	}
	for i, d := range m.Delegations {
		key := fmt.Sprintf("delegation[%d]", i)
		name := d.ServerName + "."
		if z := zoneOf(name); z != nil {
			d.Zone = z.Zone
			if len(z.Addresses) > 0 {
				derived := false // already there as glue for a nameserver of the same name
				for _, s := range z.records {
					if s.rr.Header().Name != name || (s.rr.Header().Rrtype != dns.TypeA && s.rr.Header().Rrtype != dns.TypeAAAA) {
						continue
					}
					if s.key == z.key+".addresses" {
						derived = true
						continue
					}
					ps.errorf(s.key, "%q is a server name whose A/AAAA records come from %s.addresses (this host serves its .well-known); remove this record", d.ServerName, z.key)
				}
				if !derived {
					for _, rr := range addrRRs(name, z.Addresses) {
						z.records = append(z.records, sourced{rr, z.key + ".addresses"})
					}
				}
			}
		} else {
			cert := ""
			if !m.ACME.names(d.ServerName) {
				cert = fmt.Sprintf("; it gets no certificate, as the web server in front terminates TLS; if the name's address is this host instead, add %q to acme.names", d.ServerName)
			}
			ps.warnf(key+".server_name", "%q is outside every zone: signpost serves its documents only (scenario S3), and its A/AAAA records live elsewhere%s", d.ServerName, cert)
		}
		if !d.SRVFallback {
			continue
		}
		owner := "_matrix-fed._tcp." + name
		z := zoneOf(owner)
		if z == nil {
			ps.warnf(key+".srv_fallback", "%q is outside every zone, so the SRV fallback is not published; delegate a zone that holds it or set srv_fallback = false", owner)
			continue
		}
		written := false
		for _, s := range z.records {
			if s.rr.Header().Name == owner && s.rr.Header().Rrtype == dns.TypeSRV {
				ps.errorf(s.key, "%q is derived from %s.server; remove this record or set srv_fallback = false", owner, key)
				written = true
			}
		}
		if written {
			continue
		}
		srv := &dns.SRV{Hdr: hdr(owner, dns.TypeSRV), Priority: 10, Weight: 0, Port: d.srvPort, Target: fqdn(d.srvTarget)}
		z.records = append(z.records, sourced{srv, key + ".server"})
	}
	for i, z := range zones {
		if ps.stopped(i) {
			return
		}
		checkZone(ps, z)
	}
}

func hasAddress(records []sourced, name string) bool {
	for _, s := range records {
		if h := s.rr.Header(); h.Name == name && (h.Rrtype == dns.TypeA || h.Rrtype == dns.TypeAAAA) {
			return true
		}
	}
	return false
}

// checkZone enforces what DNS itself requires of a zone's content: CNAMEs
// alone at their name and never at the apex (RFC 1034 §3.6.2, RFC 2181
// §10.1), at most one DNAME a name, with nothing below it and no
// delegation beside it (RFC 6672 §2.4), SRV targets that are not aliases
// (RFC 2782), no duplicates.
func checkZone(ps *problems, z *zoneBuild) {
	byName := map[string][]sourced{}
	for _, s := range z.records {
		byName[s.rr.Header().Name] = append(byName[s.rr.Header().Name], s)
	}
	type rrsetKey struct {
		name string
		typ  uint16
	}
	type rrKey struct {
		rrsetKey
		rdata string
	}
	seen := map[rrKey]string{}
	ttls := map[rrsetKey]sourced{} // owner and type -> first record of the RRset
	dnames := map[string]string{}  // owner -> key of its DNAME
	z.texts = make([]string, len(z.records))
	for i, s := range z.records {
		z.texts[i] = s.rr.String()
		h := s.rr.Header()
		if h.Rrtype == dns.TypeDNAME {
			for _, other := range z.records {
				if o := other.rr.Header().Name; o != h.Name && dns.IsSubDomain(h.Name, o) {
					ps.errorf(other.key, "%q is below the DNAME at %q (%s), where it can never be reached (RFC 6672 §2.4); remove one of them", o, h.Name, s.key)
				}
			}
		}
		set := rrsetKey{h.Name, h.Rrtype}
		text := rrKey{set, strings.TrimPrefix(z.texts[i], h.String())}
		if prev, dup := seen[text]; dup {
			ps.errorf(s.key, "repeats the record from %s; remove one", prev)
			continue
		}
		seen[text] = s.key
		if first, ok := ttls[set]; ok && first.rr.Header().Ttl != h.Ttl {
			ps.errorf(s.key, "TTL %d differs from %d in %s for the same name and type; an RRset has one TTL (RFC 2181 §5.2), so write the same TTL", h.Ttl, first.rr.Header().Ttl, first.key)
		} else if !ok {
			ttls[set] = s
		}
		switch h.Rrtype {
		case dns.TypeCNAME:
			if h.Name == z.Origin {
				ps.errorf(s.key, "a CNAME at the zone apex %q is not allowed: the apex holds SOA and NS; use A/AAAA records", z.Origin)
				continue
			}
			for _, other := range byName[h.Name] {
				if other.rr != s.rr && other.rr.Header().Rrtype != dns.TypeRRSIG && other.rr.Header().Rrtype != dns.TypeNSEC {
					ps.errorf(s.key, "%q has a CNAME and other data (%s from %s); a CNAME must be the only record at its name (RFC 1034 §3.6.2)", h.Name, dns.TypeToString[other.rr.Header().Rrtype], other.key)
					break
				}
			}
		case dns.TypeDNAME:
			// One DNAME a name (RFC 6672 §2.4), and not where a
			// delegation hides it.
			if prev, dup := dnames[h.Name]; dup {
				ps.errorf(s.key, "%q already has a DNAME (%s); a name has at most one (RFC 6672 §2.4), so remove one", h.Name, prev)
				continue
			}
			dnames[h.Name] = s.key
			for _, other := range byName[h.Name] {
				if other.rr.Header().Rrtype == dns.TypeNS && h.Name != z.Origin {
					ps.errorf(s.key, "%q is a delegation (NS from %s), which hides a DNAME at the same name; remove one of them", h.Name, other.key)
					break
				}
			}
		case dns.TypeSRV:
			target := strings.ToLower(s.rr.(*dns.SRV).Target)
			for _, other := range byName[target] {
				if other.rr.Header().Rrtype == dns.TypeCNAME {
					ps.errorf(s.key, "SRV target %q is a CNAME (%s); SRV targets must have A/AAAA records of their own (RFC 2782)", target, other.key)
					break
				}
			}
		}
	}
}

// finish sorts the zone, builds its SOA and picks its serial. It returns
// the zone of o.Previous with the same origin when that one is the same in
// every way (records, serial, addresses), for the caller to use instead.
func (z *zoneBuild) finish(m *Model, o Options, nameservers []string) *Zone {
	// Each record's text once, for sorting and hashing, rather than once
	// per comparison: it was most of the garbage of loading 10,000 zones.
	texts := make([]textRR, len(z.records))
	for i, s := range z.records {
		if i < len(z.texts) {
			texts[i] = textRR{s.rr, z.texts[i]}
		} else {
			texts[i] = textRR{s.rr, s.rr.String()}
		}
	}
	slices.SortStableFunc(texts, compareRR)
	mbox := m.DNS.Hostmaster
	if mbox == "" {
		mbox = "hostmaster." + z.Origin
	}
	soa := &dns.SOA{
		Hdr:     dns.RR_Header{Name: z.Origin, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: m.DNS.TTL},
		Ns:      z.Origin, // only with DNS off, when no nameservers are required
		Mbox:    mbox,
		Refresh: soaRefresh,
		Retry:   soaRetry,
		Expire:  soaExpire,
		Minttl:  soaMinimum,
	}
	if len(nameservers) > 0 {
		soa.Ns = nameservers[0]
	}
	h := sha256.New()
	fmt.Fprintln(h, soa.String())
	if z.DNSSEC {
		fmt.Fprintln(h, "dnssec") // signing a zone changes what it serves
	}
	rrs := make([]dns.RR, len(texts))
	for i, t := range texts {
		io.WriteString(h, t.text)
		io.WriteString(h, "\n")
		rrs[i] = t.rr
	}
	h.Sum(z.hash[:0])
	soa.Serial = uint32(o.Now().Unix())
	var prev *Zone
	if o.Previous != nil {
		prev = o.Previous.zone(z.Origin)
	}
	if prev != nil {
		if prev.hash == z.hash {
			soa.Serial = prev.SOA.Serial
		} else if int32(soa.Serial-prev.SOA.Serial) <= 0 { // RFC 1982 comparison
			soa.Serial = prev.SOA.Serial + 1
		}
	}
	if floor, ok := o.Floor[z.Origin]; ok && int32(soa.Serial-floor) <= 0 {
		soa.Serial = floor + 1
	}
	if prev != nil && prev.hash == z.hash && prev.SOA.Serial == soa.Serial && slices.Equal(prev.Addresses, z.Addresses) {
		return prev
	}
	z.SOA = soa
	z.Records = append([]dns.RR{soa}, rrs...)
	return nil
}

// compareRR orders records canonically (RFC 4034 §6.1 for names), then by
// type, then by presentation of the data, so zone output is stable.
func compareRR(a, b textRR) int {
	if c := compareNames(a.rr.Header().Name, b.rr.Header().Name); c != 0 {
		return c
	}
	if c := int(a.rr.Header().Rrtype) - int(b.rr.Header().Rrtype); c != 0 {
		return c
	}
	return strings.Compare(a.text, b.text)
}

// textRR is a record with its presentation text.
type textRR struct {
	rr   dns.RR
	text string
}

// compareNames compares names label by label from the root, without case,
// and allocates nothing: it runs a few times for every record loaded.
func compareNames(a, b string) int {
	var sa, sb [128]int
	la, lb := labelStarts(a, sa[:0]), labelStarts(b, sb[:0])
	for i, j := len(la)-1, len(lb)-1; i >= 0 && j >= 0; i, j = i-1, j-1 {
		if c := compareFold(label(a, la, i), label(b, lb, j)); c != 0 {
			return c
		}
	}
	return len(la) - len(lb)
}

// labelStarts appends the offset of each label of name to starts.
func labelStarts(name string, starts []int) []int {
	if name == "." || name == "" {
		return starts
	}
	for off, end := 0, false; !end; off, end = dns.NextLabel(name, off) {
		starts = append(starts, off)
	}
	return starts
}

// label returns label i of name, without its trailing dot.
func label(name string, starts []int, i int) string {
	end := len(name)
	if i+1 < len(starts) {
		end = starts[i+1]
	}
	return strings.TrimSuffix(name[starts[i]:end], ".")
}

// compareFold is strings.Compare of the two strings in ASCII lower case.
func compareFold(a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return int(ca) - int(cb)
		}
	}
	return len(a) - len(b)
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
