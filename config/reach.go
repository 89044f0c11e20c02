package config

import (
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// checkReach finds setups that are valid DNS but cannot do what a
// delegation is for: a server name or its SRV record hidden behind a zone
// cut, an SRV target with no address, a server name whose address is
// written by hand so that signpost never gets it a certificate. It runs on
// the zones with every derived record added.
func checkReach(ps *problems, m *Model, zones []*zoneBuild) {
	zoneOf := zoneIndex(zones)
	for i, d := range m.Delegations {
		if ps.stopped(i) {
			return
		}
		key := fmt.Sprintf("delegation[%d]", i)
		name := d.ServerName + "."
		if z := zoneOf(name); z != nil {
			if cut := cutAbove(z, name); cut != nil {
				ps.errorf(cut.key, "delegates %q to other servers, and server name %q (%s) is at or below it: its A/AAAA and _matrix-fed._tcp SRV records sit behind the cut, so resolvers get a referral instead of them; remove this NS record, or serve the server name from the zone it delegates to", cut.rr.Header().Name, d.ServerName, key)
				continue
			}
			if len(z.Addresses) == 0 {
				checkHandWrittenAddress(ps, m, z, d, key)
			}
		}
		if !d.SRVFallback || d.srvTarget == "" {
			continue
		}
		owner := "_matrix-fed._tcp." + name
		if z := zoneOf(owner); z != nil {
			if cut := cutAbove(z, owner); cut != nil {
				ps.errorf(cut.key, "delegates %q to other servers, and the SRV fallback %q of %s is below it, so resolvers get a referral instead of it; remove this NS record, or set srv_fallback = false in %s", cut.rr.Header().Name, owner, key, key)
				continue
			}
		}
		checkSRVTarget(ps, zoneOf, d, key)
	}
}

// cutAbove returns the NS record below z's apex at or above name, if any:
// a zone cut that hands name to other servers (RFC 1034 §4.2.1).
func cutAbove(z *zoneBuild, name string) *sourced {
	for i, s := range z.records {
		h := s.rr.Header()
		if h.Rrtype == dns.TypeNS && h.Name != z.Origin && dns.IsSubDomain(h.Name, name) {
			return &z.records[i]
		}
	}
	return nil
}

// checkSRVTarget requires the host the SRV fallback (and m.server) points
// at to have an address when it is inside a zone signpost serves: nobody
// else can publish one.
func checkSRVTarget(ps *problems, zoneOf func(string) *zoneBuild, d *Delegation, key string) {
	target := strings.ToLower(fqdn(d.srvTarget))
	z := zoneOf(target)
	if z == nil || cutAbove(z, target) != nil {
		return // served elsewhere
	}
	exists := false
	for _, s := range z.records {
		h := s.rr.Header()
		switch {
		case h.Name == target && (h.Rrtype == dns.TypeA || h.Rrtype == dns.TypeAAAA):
			return
		case h.Name == target && h.Rrtype == dns.TypeCNAME:
			return // an alias: checkZone says what RFC 2782 thinks of it
		case h.Rrtype == dns.TypeDNAME && h.Name != target && dns.IsSubDomain(h.Name, target):
			return // an ancestor's DNAME rewrites the target elsewhere (RFC 6672)
		case h.Name == target || dns.IsSubDomain(target, h.Name):
			exists = true
		case strings.HasPrefix(h.Name, "*.") && h.Name[2:] != target && dns.IsSubDomain(h.Name[2:], target):
			// A wildcard may answer; RFC 4592's rules are the server's job.
			// An address or an alias answers; another type is NODATA.
			if h.Rrtype == dns.TypeA || h.Rrtype == dns.TypeAAAA || h.Rrtype == dns.TypeCNAME {
				return
			}
			exists = true
		}
	}
	answer := "NXDOMAIN"
	if exists {
		answer = "no address (NODATA)"
	}
	rel := strings.TrimSuffix(strings.TrimSuffix(target, z.Origin), ".")
	if rel == "" {
		rel = "@"
	}
	ps.errorf(key+".server", "host %q is in zone %q but has no A or AAAA record there, so remote servers get %s for it and cannot reach the homeserver; add one to %s.records, e.g. \"%s 300 IN A 198.51.100.7\" with the homeserver's address", strings.TrimSuffix(target, "."), z.Origin, answer, z.key, rel)
}

// checkHandWrittenAddress warns about a server name whose A/AAAA record is
// written in records while its zone has no addresses: signpost gets
// certificates only for server names whose address comes from addresses
// (Model.CertificateNames), so its HTTPS cannot work from here. The user
// may mean it: the record may point at another web server that serves the
// documents.
//
// A server name in acme.names (or covered by a wildcard there) does get a
// certificate, so it is left alone.
func checkHandWrittenAddress(ps *problems, m *Model, z *zoneBuild, d *Delegation, key string) {
	if m.ACME.names(d.ServerName) {
		return
	}
	name := d.ServerName + "."
	for _, s := range z.records {
		h := s.rr.Header()
		if h.Name != name || (h.Rrtype != dns.TypeA && h.Rrtype != dns.TypeAAAA) {
			continue
		}
		addr := strings.TrimPrefix(s.rr.String(), h.String())
		ps.warnf(s.key, "server name %q (%s) gets its address from this record, not from %s.addresses, so signpost requests no certificate for it and cannot serve its /.well-known over HTTPS; if %s is this host, remove the record and write addresses = [%q] in %s; if another web server serves the documents, ignore this", d.ServerName, key, z.key, addr, addr, z.key)
		return
	}
}

// checkCatalogAbove rejects a catalog zone that is a parent of a served
// zone: a secondary asking for the member zone's SOA would be answered
// from the catalog, with NXDOMAIN, and never transfer the member. (A
// catalog inside or equal to a zone is rejected by buildCatalog.)
func checkCatalogAbove(ps *problems, m *Model, zones []*zoneBuild) {
	if m.DNS.Catalog == "" {
		return
	}
	for _, z := range zones {
		if z.Origin != m.DNS.Catalog && dns.IsSubDomain(m.DNS.Catalog, z.Origin) {
			ps.errorf("dns.catalog", "%q is a parent of %s (%q), so secondaries asking for that zone's SOA are answered from the catalog with NXDOMAIN and never transfer it; use a name outside every zone, such as \"catalog.signpost.invalid\"", m.DNS.Catalog, z.key, z.Origin)
			return
		}
	}
}
