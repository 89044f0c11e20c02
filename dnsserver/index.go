package dnsserver

import (
	"slices"
	"strings"

	"github.com/miekg/dns"
	"github.com/signpost-dev/signpost/config"
)

// acmeTTL is the TTL of the DNS-01 TXT records. It is short because the
// values change with every certificate order, and a resolver in front of a
// CA should not keep an old one for long.
const acmeTTL = 60

// index is everything needed to answer queries: the zones of one model plus
// the ACME TXT records present when it was built, and the precomputed
// answers. It is immutable once built; the server swaps a pointer to it.
type index struct {
	zones map[string]*zone // by origin: lower case, fully qualified
	// maxZoneLabels is the label count of the deepest origin, so zone
	// lookup can skip labels that cannot start an origin.
	maxZoneLabels int
	fast          *fastIndex
}

type zone struct {
	src    *config.Zone
	txtKey string // the ACME records included, see txtKey
	leaves bool   // has a CNAME to a name outside the zone
	fast   *fastZone
	origin string
	apex   *node
	soa    *rrset // as stored
	negSOA *rrset // TTL min(SOA TTL, minimum), for negative answers (RFC 2308 §5)
	ns     *rrset // apex NS
	nodes  map[string]*node
}

// node is one name that exists in a zone: it owns records, or it is an empty
// non-terminal (RFC 8020: it exists, it only has no data).
type node struct {
	name string
	sets []*rrset // SOA first, then by type: the order NSD picks ANY from
	// cut is the highest delegation point at or above this name (the node
	// itself included), nil if the name is authoritative data.
	cut *node
}

type rrset struct {
	name string
	typ  uint16
	rrs  []dns.RR
}

func (n *node) get(t uint16) *rrset {
	for _, s := range n.sets {
		if s.typ == t {
			return s
		}
	}
	return nil
}

// buildIndex indexes every zone of m, with the TXT records of txt (owner
// name to values) added to the zones that hold them. Records that cannot be
// served (a TXT owner outside every zone, at a CNAME or below a zone cut) are
// left out; AddTXT refuses them up front, so this only happens when a reload
// took a zone away.
//
// Zones of prev built from the same *config.Zone with the same TXT records
// are reused, with their precomputed answers, so an ACME challenge costs the
// rebuild of one zone, not of all of them. A zone whose CNAMEs leave it
// depends on the others and is rebuilt whenever any zone changes.
func buildIndex(m *config.Model, txt map[string][]string, prev *index) *index {
	ix := &index{zones: map[string]*zone{}}
	if m == nil {
		ix.fast = buildFast(ix)
		return ix
	}
	var fresh []*zone
	for _, mz := range m.Zones {
		key := txtKey(mz.Origin, txt)
		if prev != nil {
			if z := prev.zones[mz.Origin]; z != nil && z.src == mz && z.txtKey == key {
				ix.zones[z.origin] = z
				ix.maxZoneLabels = max(ix.maxZoneLabels, dns.CountLabel(z.origin))
				continue
			}
		}
		z := buildZone(mz, txt)
		if z == nil {
			continue
		}
		z.txtKey = key
		ix.zones[z.origin] = z
		ix.maxZoneLabels = max(ix.maxZoneLabels, dns.CountLabel(z.origin))
		fresh = append(fresh, z)
	}
	changed := len(fresh) > 0 || prev == nil || len(prev.zones) != len(ix.zones)
	for _, z := range ix.zones {
		if !slices.Contains(fresh, z) && changed && z.leaves {
			nz := buildZone(z.src, txt)
			nz.txtKey = z.txtKey
			ix.zones[z.origin] = nz
			fresh = append(fresh, nz)
		}
	}
	for _, z := range fresh {
		z.fast = ix.buildFastZone(z)
	}
	ix.fast = buildFast(ix)
	return ix
}

// txtKey identifies the ACME TXT records that fall inside origin.
func txtKey(origin string, txt map[string][]string) string {
	var parts []string
	for name, values := range txt {
		if dns.IsSubDomain(origin, name) {
			parts = append(parts, name+"\x00"+strings.Join(values, "\x00"))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, "\x01")
}

// buildZone indexes one zone; nil if it has no SOA (config never makes one).
func buildZone(mz *config.Zone, txt map[string][]string) *zone {
	z := &zone{origin: mz.Origin, src: mz, nodes: map[string]*node{}}
	byName := map[string]map[uint16][]dns.RR{}
	for _, rr := range mz.Records {
		h := rr.Header()
		name := strings.ToLower(h.Name)
		if byName[name] == nil {
			byName[name] = map[uint16][]dns.RR{}
		}
		byName[name][h.Rrtype] = append(byName[name][h.Rrtype], rr)
		if c, ok := rr.(*dns.CNAME); ok && !dns.IsSubDomain(z.origin, lower(c.Target)) {
			z.leaves = true
		}
	}
	// Every ancestor of a name up to the apex exists (RFC 8020).
	for name := range byName {
		for n := name; ; {
			if z.nodes[n] == nil {
				z.nodes[n] = &node{name: n}
			}
			if n == z.origin {
				break
			}
			i, _ := dns.NextLabel(n, 0)
			n = n[i:]
		}
	}
	for name, types := range byName {
		nd := z.nodes[name]
		for t, rrs := range types {
			nd.sets = append(nd.sets, &rrset{name: name, typ: t, rrs: rrs})
		}
		slices.SortFunc(nd.sets, func(a, b *rrset) int {
			return typeOrder(a.typ) - typeOrder(b.typ)
		})
	}
	z.apex = z.nodes[z.origin]
	if z.apex == nil {
		return nil
	}
	z.soa = z.apex.get(dns.TypeSOA)
	z.ns = z.apex.get(dns.TypeNS)
	if z.soa == nil {
		return nil
	}
	soa := dns.Copy(z.soa.rrs[0]).(*dns.SOA)
	soa.Hdr.Ttl = min(soa.Hdr.Ttl, soa.Minttl)
	z.negSOA = &rrset{name: z.origin, typ: dns.TypeSOA, rrs: []dns.RR{soa}}
	for _, nd := range z.nodes {
		nd.cut = z.findCut(nd.name)
	}
	z.addTXT(txt)
	return z
}

// typeOrder sorts SOA first, then by type number, which is the order of a
// zone file written from config.Zone.Records (SOA first, then canonical).
func typeOrder(t uint16) int {
	if t == dns.TypeSOA {
		return -1
	}
	return int(t)
}

// findCut returns the highest node strictly below the apex, at or above
// name, that has an NS RRset: the delegation point that makes name
// non-authoritative (RFC 1034 §4.3.2 step 3b).
func (z *zone) findCut(name string) *node {
	var cut *node
	for n := name; n != z.origin; {
		if nd := z.nodes[n]; nd != nil && nd.get(dns.TypeNS) != nil {
			cut = nd
		}
		i, end := dns.NextLabel(n, 0)
		if end {
			break
		}
		n = n[i:]
	}
	return cut
}

// txtAllowed says whether TXT records can be served at name in z: not at a
// CNAME (RFC 1034 §3.6.2) and not at or below a zone cut, where they would be
// occluded.
func (z *zone) txtAllowed(name string) bool {
	if z.findCut(name) != nil {
		return false
	}
	if nd := z.nodes[name]; nd != nil && nd.get(dns.TypeCNAME) != nil {
		return false
	}
	return true
}

// addTXT adds the ACME records that belong to z, creating their names (and
// the empty non-terminals above them) as needed.
func (z *zone) addTXT(txt map[string][]string) {
	names := make([]string, 0, len(txt))
	for name := range txt {
		if dns.IsSubDomain(z.origin, name) && len(txt[name]) > 0 && z.txtAllowed(name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		var rrs []dns.RR
		for _, v := range txt[name] {
			rrs = append(rrs, &dns.TXT{
				Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: acmeTTL},
				Txt: []string{v},
			})
		}
		for n := name; z.nodes[n] == nil; {
			z.nodes[n] = &node{name: n}
			i, _ := dns.NextLabel(n, 0)
			n = n[i:]
		}
		nd := z.nodes[name]
		if s := nd.get(dns.TypeTXT); s != nil {
			// A TXT RRset from the configuration and the challenge values
			// form one RRset; copy so the previous index stays intact.
			merged := &rrset{name: name, typ: dns.TypeTXT, rrs: append(slices.Clip(s.rrs), rrs...)}
			sets := slices.Clone(nd.sets)
			for i := range sets {
				if sets[i] == s {
					sets[i] = merged
				}
			}
			nd.sets = sets
			continue
		}
		nd.sets = append(nd.sets, &rrset{name: name, typ: dns.TypeTXT, rrs: rrs})
		slices.SortFunc(nd.sets, func(a, b *rrset) int { return typeOrder(a.typ) - typeOrder(b.typ) })
	}
}

// zoneFor returns the zone holding name (lower case, fully qualified), or nil.
func (ix *index) zoneFor(name string) *zone {
	labels := dns.CountLabel(name)
	for off, end := 0, false; !end; off, end = dns.NextLabel(name, off) {
		if labels <= ix.maxZoneLabels {
			if z := ix.zones[name[off:]]; z != nil {
				return z
			}
		}
		labels--
	}
	return ix.zones["."]
}

// closestEncloser returns the deepest existing node at or above name, and
// whether it is name itself. name must be inside z.
func (z *zone) closestEncloser(name string) (*node, bool) {
	for n, exact := name, true; ; exact = false {
		if nd := z.nodes[n]; nd != nil {
			return nd, exact
		}
		i, end := dns.NextLabel(n, 0)
		if end || n == z.origin {
			return z.apex, false
		}
		n = n[i:]
	}
}
