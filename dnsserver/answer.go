package dnsserver

import (
	"github.com/miekg/dns"
)

// Sections in the order they are encoded. The split ones follow NSD: NS
// records added to a positive answer are optional authority, and additional
// records go A first, then AAAA, so a small client still gets IPv4 glue.
type section uint8

const (
	secAnswer section = iota
	secAuthority
	secOptAuthority
	secAddA
	secAddAAAA
	secCount
)

// maxChase bounds CNAME chasing inside our zones; a loop stops earlier when
// an RRset comes round again.
const maxChase = 16

type entry struct {
	sec   section
	owner string // the owner to write: differs from set.name for wildcard answers
	set   *rrset
	// glue is in-domain referral glue: if it does not fit, the response
	// is truncated rather than sent without it (RFC 9471).
	glue bool
}

// answer is a response being assembled, as RRsets per section.
type answer struct {
	rcode   int
	aa      bool
	refused bool // out of every zone: NSD adds EDE 20 (Not Authoritative)
	// anyClass: the query asked for class ANY (255). NSD answers it from
	// its class IN data, but as a cache would: without AA, without the SOA
	// of a negative answer and without the optional apex NS (a referral
	// keeps its NS and glue).
	anyClass bool
	// tooLong: a DNAME made a name longer than 255 octets (YXDOMAIN);
	// NSD says why in an EDE.
	tooLong bool
	// do: the query set the DO bit, so answers from signed zones carry
	// their signatures and denial of existence (RFC 4035 §3.1).
	do      bool
	cnames  int
	entries []entry
}

// add puts set (owned by owner) in sec unless it is already in the answer,
// in which case it moves to the earlier section. It reports whether the set
// was new. Additional processing for NS, MX and SRV follows NSD's add_rrset.
func (a *answer) add(z *zone, sec section, owner string, set *rrset) bool {
	for i := range a.entries {
		if a.entries[i].set == set && a.entries[i].owner == owner {
			if sec < a.entries[i].sec {
				a.entries[i].sec = sec
				return true
			}
			return false
		}
	}
	a.entries = append(a.entries, entry{sec: sec, owner: owner, set: set})
	switch set.typ {
	case dns.TypeNS:
		a.additional(z, set, true)
	case dns.TypeMX, dns.TypeSRV:
		a.additional(z, set, false)
	}
	return true
}

// additional adds the A and AAAA records of the names set points to, when
// they are in zone z. Glue (names at or below a zone cut) is only added for
// NS sets.
func (a *answer) additional(z *zone, set *rrset, allowGlue bool) {
	for _, rr := range set.rrs {
		var target string
		switch rr := rr.(type) {
		case *dns.NS:
			target = rr.Ns
		case *dns.MX:
			target = rr.Mx
		case *dns.SRV:
			target = rr.Target
		}
		target = lower(target)
		if !dns.IsSubDomain(z.origin, target) {
			continue
		}
		nd, exact := z.closestEncloser(target)
		if !exact {
			// A target that only exists through a wildcard gets the
			// wildcard's addresses under its own name (NSD does this too).
			w := z.nodes["*."+nd.name]
			if w == nil {
				continue
			}
			nd = w
		}
		if !allowGlue && z.findCut(target) != nil {
			continue
		}
		if s := nd.get(dns.TypeA); s != nil {
			a.add(z, secAddA, target, s)
		}
		if s := nd.get(dns.TypeAAAA); s != nil {
			a.add(z, secAddAAAA, target, s)
		}
	}
}

// resolve answers qname/qtype from ix into a. qname is lower case. It
// follows NSD's answer_lookup_zone: find the zone, then the closest
// encloser, then a delegation above it, then exact match, wildcard or
// NXDOMAIN.
func (ix *index) resolve(a *answer, qname string, qtype uint16) {
	z := ix.zoneFor(qname)
	if z == nil {
		if a.cnames == 0 {
			a.rcode = dns.RcodeRefused
			a.refused = true
		}
		return
	}
	nd, exact := z.closestEncloser(qname)
	if exact && qtype == dns.TypeDS && nd == z.apex {
		// The parent zone answers DS; we never serve the parent (zones do
		// not nest), so this zone says it has none (RFC 4035 §3.1.4.1).
		a.aa = true
		a.nodata(z)
		a.nodataProof(z, nd)
		return
	}
	if cut := nd.cut; cut != nil && !(exact && qtype == dns.TypeDS && nd == cut) {
		// Referral: not authoritative, unless we got here through an
		// authoritative CNAME.
		a.aa = a.cnames > 0
		before := len(a.entries)
		a.add(z, secAuthority, cut.name, cut.get(dns.TypeNS))
		if a.do && z.signed {
			// The DS, or the NSEC that proves there is none: an insecure
			// delegation (RFC 4035 §3.1.4).
			if ds := cut.get(dns.TypeDS); ds != nil {
				a.add(z, secAuthority, cut.name, ds)
			} else {
				a.add(z, secAuthority, cut.name, cut.get(dns.TypeNSEC))
			}
		}
		for i := before; i < len(a.entries); i++ {
			if e := &a.entries[i]; e.sec >= secAddA && dns.IsSubDomain(cut.name, e.owner) {
				e.glue = true
			}
		}
		return
	}
	a.aa = true
	owner := qname
	if !exact {
		if d := z.dnameAt(nd); d != nil {
			ix.synthesize(a, z, d, qname, qtype)
			return
		}
		w := z.nodes["*."+nd.name]
		if w == nil {
			a.rcode = dns.RcodeNameError
			if a.do && z.signed && !a.anyClass {
				// No such name, and no wildcard that could make it
				// (RFC 4035 §3.1.3.2). NSD puts this proof before the
				// SOA, a NODATA one after it; so do we.
				a.denial(z, z.covering(qname))
				a.denial(z, z.covering("*."+nd.name))
			}
			a.nodata(z)
			return
		}
		if a.do && z.signed {
			// The answer comes from a wildcard: prove qname itself does
			// not exist (RFC 4035 §3.1.3.3, .4).
			a.denial(z, z.covering(qname))
		}
		nd = w // RFC 4592: synthesize from the wildcard, owner is qname
	}
	ix.answerNode(a, z, nd, owner, qtype)
}

// denial adds an NSEC RRset to the authority section.
func (a *answer) denial(z *zone, nsec *rrset) {
	if nsec != nil {
		a.add(z, secAuthority, nsec.name, nsec)
	}
}

// nodataProof adds what proves that nd has no RRset of the type asked: its
// own NSEC, or for an empty non-terminal the NSEC that covers it (RFC 4035
// §3.1.3.1).
func (a *answer) nodataProof(z *zone, nd *node) {
	if !a.do || !z.signed || a.anyClass {
		return
	}
	if s := nd.get(dns.TypeNSEC); s != nil {
		a.denial(z, s)
		return
	}
	a.denial(z, z.covering(nd.name))
}

// dnameAt returns the DNAME RRset at nd or the nearest of its ancestors in
// z, or nil. nd is the closest encloser of a name that does not exist, so
// the name is below any DNAME found (config allows no names below one).
func (z *zone) dnameAt(nd *node) *rrset {
	if !z.dname {
		return nil
	}
	for n := nd; n != nil; {
		if s := n.get(dns.TypeDNAME); s != nil {
			return s
		}
		if n == z.apex {
			return nil
		}
		i, _ := dns.NextLabel(n.name, 0)
		n = z.nodes[n.name[i:]]
	}
	return nil
}

// synthesize answers qname below the DNAME d as NSD does (RFC 6672 §3.3):
// the DNAME, a CNAME from qname to the name with d's owner replaced by its
// target, with the DNAME's TTL, and then whatever that name answers, chased
// like a CNAME. A result longer than 255 octets is YXDOMAIN with the DNAME
// alone; a chase that comes back to a DNAME already in the answer (a loop)
// stops there.
func (ix *index) synthesize(a *answer, z *zone, d *rrset, qname string, qtype uint16) {
	if !a.add(z, secAnswer, d.name, d) {
		return
	}
	dn := d.rrs[0].(*dns.DNAME)
	target := qname[:len(qname)-len(d.name)]
	if t := lower(dn.Target); t != "." {
		target += t
	}
	if _, err := dns.PackDomainName(target, make([]byte, 256), 0, nil, false); err != nil {
		a.rcode = dns.RcodeYXDomain
		a.tooLong = true
		return
	}
	cname := &dns.CNAME{Hdr: dns.RR_Header{Name: qname, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: dn.Hdr.Ttl}, Target: target}
	a.add(z, secAnswer, qname, &rrset{name: qname, typ: dns.TypeCNAME, rrs: []dns.RR{cname}})
	if qtype != dns.TypeCNAME && a.cnames < maxChase {
		a.cnames++
		ix.resolve(a, target, qtype)
	}
}

// nodata adds the SOA of a negative answer (NXDOMAIN or NODATA).
func (a *answer) nodata(z *zone) {
	if !a.anyClass {
		a.add(z, secAuthority, z.origin, z.negSOA)
	}
}

func (ix *index) answerNode(a *answer, z *zone, nd *node, owner string, qtype uint16) {
	if qtype == dns.TypeANY {
		// RFC 8482 §4.1: one RRset. NSD's choice: the first of the small,
		// popular types, else the last other type, else DNSSEC data.
		var preferred, normal, other *rrset
		for _, s := range nd.sets {
			switch s.typ {
			case dns.TypeA, dns.TypeAAAA, dns.TypeSOA, dns.TypeMX, dns.TypePTR:
				preferred = s
			case dns.TypeDNSKEY, dns.TypeRRSIG, dns.TypeNSEC:
				other = s
			default:
				normal = s
			}
			if preferred != nil {
				break
			}
		}
		switch {
		case preferred != nil:
			a.add(z, secAnswer, owner, preferred)
		case normal != nil:
			a.add(z, secAnswer, owner, normal)
		case other != nil:
			a.add(z, secAnswer, owner, other)
		default:
			a.nodata(z)
			a.nodataProof(z, nd)
		}
		return
	}
	if s := nd.get(qtype); s != nil {
		a.add(z, secAnswer, owner, s)
	} else if s := nd.get(dns.TypeCNAME); s != nil {
		if a.add(z, secAnswer, owner, s) && a.cnames < maxChase {
			a.cnames++
			ix.resolve(a, lower(s.rrs[0].(*dns.CNAME).Target), qtype)
		}
		return
	} else {
		a.nodata(z)
		a.nodataProof(z, nd)
		return
	}
	// NSD leaves the apex NS out for DNSKEY and DS, whose sets are large.
	if z.ns != nil && qtype != dns.TypeDNSKEY && qtype != dns.TypeDS && !a.anyClass {
		a.add(z, secOptAuthority, z.origin, z.ns)
	}
}

// lower returns s with ASCII letters in lower case, without allocating when
// it already is.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
