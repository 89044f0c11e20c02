package probe

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/miekg/dns"
)

// dnsSanity checks the zone of the server name from its nameservers' side:
// every nameserver answers authoritatively with the same SOA serial and NS
// set, neither SRV name is answered with SERVFAIL or REFUSED, and a signed
// zone validates (dnssec.go).
func (p *prober) dnsSanity(ctx context.Context) {
	r := p.rep
	if p.sn.IP.IsValid() {
		r.add(SectionDNS, StatusSkip, "", "DNS checks skipped: the server name is an IP literal")
		return
	}
	host := p.sn.Host

	// SRV names: Synapse gives up on SERVFAIL or REFUSED instead of
	// treating them as "no record", even when the well-known works today.
	var bad []string
	for _, svc := range []string{"_matrix-fed._tcp.", "_matrix._tcp."} {
		a := p.ask(ctx, SectionDNS, svc+host, dns.TypeSRV)
		if a.failed() {
			bad = append(bad, a.Name+" "+a.rcodeText())
		}
	}
	if len(bad) > 0 {
		r.add(SectionDNS, StatusFail, "make every nameserver of the zone answer these names (NXDOMAIN or NOERROR with no records is fine)",
			"SRV lookups fail: %s; Synapse will not federate with %s while they do", strings.Join(bad, "; "), host)
	} else {
		r.add(SectionDNS, StatusOK, "", "both SRV names (_matrix-fed._tcp and _matrix._tcp) answer without SERVFAIL or REFUSED")
	}

	zone := p.findZone(ctx, host)
	if zone == "" {
		if zone = p.bogusZone(ctx, host); zone != "" {
			p.dnssecCheck(ctx, zone, host)
		}
		return
	}
	p.dnssecCheck(ctx, zone, host)
	nsA := p.ask(ctx, SectionDNS, zone, dns.TypeNS)
	var nsNames []string
	if !nsA.failed() {
		for _, rr := range nsA.Msg.Answer {
			if ns, ok := rr.(*dns.NS); ok && strings.EqualFold(ns.Hdr.Name, zone) {
				nsNames = append(nsNames, strings.ToLower(ns.Ns))
			}
		}
	}
	sort.Strings(nsNames)
	if len(nsNames) == 0 {
		r.add(SectionDNS, StatusFail, "publish NS records for the zone at its apex", "zone %s: no NS records (%s)", zone, nsA.rcodeText())
		return
	}
	if len(nsNames) == 1 {
		r.add(SectionDNS, StatusWarn, "add a second nameserver on another network; RFC 2182 asks for at least two",
			"zone %s has a single nameserver, %s", zone, nsNames[0])
	}

	serials := map[uint32][]string{}
	nsSets := map[string][]string{}
	reached := 0
	for _, ns := range nsNames {
		addrs := p.lookupAddrs(ctx, SectionDNS, ns)
		if len(addrs.all()) == 0 {
			r.add(SectionDNS, StatusFail, fmt.Sprintf("publish A/AAAA records (and glue at the parent) for %s", ns),
				"nameserver %s has no address", ns)
			continue
		}
		for _, ip := range addrs.all() {
			server := net.JoinHostPort(ip.String(), "53")
			label := fmt.Sprintf("nameserver %s (%s)", ns, ip)
			soa, err := p.direct(ctx, server, zone, dns.TypeSOA)
			if err != nil {
				r.add(SectionDNS, StatusFail, "make sure the nameserver runs and port 53 (UDP and TCP) is open",
					"%s: SOA %s: no answer (%v)", label, zone, err)
				continue
			}
			if soa.Rcode != dns.RcodeSuccess || !soa.Authoritative {
				r.add(SectionDNS, StatusFail, fmt.Sprintf("configure %s to serve the zone %s, or remove it from the NS records", ns, zone),
					"%s: SOA %s: %s, authoritative=%v: a lame delegation", label, zone, dns.RcodeToString[soa.Rcode], soa.Authoritative)
				continue
			}
			var serial uint32
			found := false
			for _, rr := range soa.Answer {
				if s, ok := rr.(*dns.SOA); ok {
					serial, found = s.Serial, true
				}
			}
			if !found {
				r.add(SectionDNS, StatusFail, fmt.Sprintf("configure %s to serve the zone %s", ns, zone),
					"%s: SOA %s: authoritative answer without a SOA record", label, zone)
				continue
			}
			reached++
			serials[serial] = append(serials[serial], label)
			nsr, err := p.direct(ctx, server, zone, dns.TypeNS)
			if err == nil && nsr.Rcode == dns.RcodeSuccess {
				var set []string
				for _, rr := range nsr.Answer {
					if n, ok := rr.(*dns.NS); ok {
						set = append(set, strings.ToLower(n.Ns))
					}
				}
				sort.Strings(set)
				key := strings.Join(set, " ")
				nsSets[key] = append(nsSets[key], label)
			}
			r.add(SectionDNS, StatusInfo, "", "%s: SOA serial %d, authoritative", label, serial)
		}
	}
	if reached == 0 {
		return
	}
	if len(serials) > 1 {
		var parts []string
		for s, who := range serials {
			parts = append(parts, fmt.Sprintf("serial %d at %s", s, strings.Join(who, ", ")))
		}
		sort.Strings(parts)
		r.add(SectionDNS, StatusWarn, "check zone transfers (NOTIFY/IXFR) from the primary to every secondary",
			"zone %s: nameservers disagree: %s", zone, strings.Join(parts, "; "))
	} else {
		r.add(SectionDNS, StatusOK, "", "zone %s: all %d nameserver address(es) answer with the same SOA serial", zone, reached)
	}
	want := strings.Join(nsNames, " ")
	var sets []string
	for set := range nsSets {
		sets = append(sets, set)
	}
	sort.Strings(sets)
	for _, set := range sets {
		who := nsSets[set]
		if set != want {
			r.add(SectionDNS, StatusWarn, "make the NS records in the zone match the delegation",
				"zone %s: %s list NS %q, the resolver sees %q", zone, strings.Join(who, ", "), set, want)
		}
	}
}

// findZone returns the apex of the zone that holds host, from the SOA in
// the answer (host is the apex) or in the authority section.
func (p *prober) findZone(ctx context.Context, host string) string {
	a := p.ask(ctx, SectionDNS, host, dns.TypeSOA)
	if a.failed() {
		p.rep.add(SectionDNS, StatusFail, "make the zone's nameservers answer", "cannot find the zone of %s: SOA query got %s", host, a.rcodeText())
		return ""
	}
	if a.Msg.Rcode == dns.RcodeNameError {
		p.rep.add(SectionDNS, StatusFail, fmt.Sprintf("create DNS records for %s", host), "%s does not exist in DNS (NXDOMAIN)", host)
	}
	for _, sec := range [][]dns.RR{a.Msg.Answer, a.Msg.Ns} {
		for _, rr := range sec {
			if s, ok := rr.(*dns.SOA); ok {
				return strings.ToLower(s.Hdr.Name)
			}
		}
	}
	p.rep.add(SectionDNS, StatusWarn, "", "cannot find the zone of %s: no SOA in the answer", host)
	return ""
}

// direct asks one nameserver directly, without recursion.
func (p *prober) direct(ctx context.Context, server, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(fqdn(name), qtype)
	m.RecursionDesired = false
	m.SetEdns0(1232, false)
	return p.exchange(ctx, server, m)
}
