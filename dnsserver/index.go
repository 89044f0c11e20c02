package dnsserver

import (
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
	"github.com/signpost-dev/signpost/config"
)

// acmeTTL is the TTL of the DNS-01 TXT records. It is short because the
// values change with every certificate order, and a resolver in front of a
// CA should not keep an old one for long.
const acmeTTL = 60

// index is everything needed to answer queries: the zones of one model with
// their effective serials, the dynamic TXT records present when it was
// built (ACME DNS-01 and RFC 2136 updates), and the precomputed answers. It
// is immutable once built; the server swaps a pointer to it.
type index struct {
	zones map[string]*zone // by origin: lower case, fully qualified
	// maxZoneLabels is the label count of the deepest origin, so zone
	// lookup can skip labels that cannot start an origin.
	maxZoneLabels int
	fast          *fastIndex
	// stats has the counters of each zone the fast path precomputes
	// replies for; nil: counters of their own (tests).
	stats *dnsStats

	model *config.Model // what the zones came from; nil before SetModel
	keys  keyring       // the model's TSIG keys and the server's replay cache
	// catalog answers the catalog zone, on its own: only to clients
	// allowed to transfer it. nil without a catalog zone.
	catalog *index
}

type zone struct {
	src    *config.Zone
	dynKey string // the dynamic records included, see dynKey
	serial uint32 // the serial served, at least src.SOA.Serial
	leaves bool   // has a CNAME or DNAME to a name outside the zone
	// dname: the zone has a DNAME. Names below it exist only by synthesis,
	// which the fast path's negative answers know nothing of, so every
	// name the zone has no precomputed reply for takes the full path.
	dname  bool
	fast   *fastZone
	origin string
	apex   *node
	soa    *rrset // as stored
	negSOA *rrset // TTL min(SOA TTL, minimum), for negative answers (RFC 2308 §5)
	ns     *rrset // apex NS
	nodes  map[string]*node
	// signed: the zone carries DNSSEC records (dnssec.go), and chain is
	// its NSEC chain in canonical order.
	signed bool
	chain  []*node
	// records is the zone as transferred: the SOA with the served serial,
	// the rest of the configured records in canonical order, then the
	// dynamic records.
	records []dns.RR
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
	sigs []dns.RR // its RRSIGs in a signed zone, sent with it to DO queries
}

func (n *node) get(t uint16) *rrset {
	for _, s := range n.sets {
		if s.typ == t {
			return s
		}
	}
	return nil
}

// buildIndex indexes every zone of m, serving each with its serial from
// serials (the zone's own when missing), with the dynamic TXT records of dyn
// (owner name to records) added to the zones that hold them. Records that
// cannot be served (an owner outside every zone, at a CNAME or below a zone
// cut) are left out; AddTXT and UPDATE refuse them up front, so this only
// happens when a reload took a zone away.
//
// Zones of prev built from the same *config.Zone with the same dynamic
// records and serial are reused, with their precomputed answers, so an ACME
// challenge costs the rebuild of one zone, not of all of them. A zone whose
// CNAMEs leave it depends on the others and is rebuilt whenever any zone
// changes.
//
// Zones the model asks to sign are signed by sg with their keys; a zone
// without keys, or whose signing fails, is served unsigned and sg keeps
// the error for the server to log.
func buildIndex(m *config.Model, dyn map[string][]dns.RR, serials map[string]uint32, prev *index, sg *signer, st *dnsStats) *index {
	ix := &index{zones: map[string]*zone{}, model: m, stats: st}
	// The replay cache outlives every index of a server.
	seen := newMACCache()
	if prev != nil && prev.keys.seen != nil {
		seen = prev.keys.seen
	}
	if m == nil {
		ix.keys.seen = seen
		ix.fast = buildFast(ix)
		return ix
	}
	ix.keys = newKeyring(m.Keys)
	ix.keys.seen = seen
	serial := func(mz *config.Zone) uint32 {
		if s, ok := serials[mz.Origin]; ok {
			return s
		}
		return mz.SOA.Serial
	}
	var fresh []*zone
	for _, mz := range m.Zones {
		key := dynKey(mz.Origin, dyn)
		if prev != nil {
			if z := prev.zones[mz.Origin]; z != nil && z.src == mz && z.dynKey == key && z.serial == serial(mz) {
				ix.zones[z.origin] = z
				ix.maxZoneLabels = max(ix.maxZoneLabels, dns.CountLabel(z.origin))
				continue
			}
		}
		z := buildZone(mz, dyn, serial(mz))
		if z == nil {
			continue
		}
		sg.signIfAsked(z)
		z.dynKey = key
		ix.zones[z.origin] = z
		ix.maxZoneLabels = max(ix.maxZoneLabels, dns.CountLabel(z.origin))
		fresh = append(fresh, z)
	}
	changed := len(fresh) > 0 || prev == nil || len(prev.zones) != len(ix.zones)
	for _, z := range ix.zones {
		if !slices.Contains(fresh, z) && changed && z.leaves {
			nz := buildZone(z.src, dyn, z.serial)
			sg.signIfAsked(nz)
			nz.dynKey = z.dynKey
			ix.zones[z.origin] = nz
			fresh = append(fresh, nz)
		}
	}
	ix.buildFastZones(fresh)
	if mz := m.Catalog; mz != nil {
		var z *zone
		if prev != nil && prev.catalog != nil {
			if pz := prev.catalog.zones[mz.Origin]; pz != nil && pz.src == mz && pz.serial == serial(mz) {
				z = pz
			}
		}
		if z == nil {
			z = buildZone(mz, nil, serial(mz))
		}
		if z != nil {
			ix.catalog = &index{zones: map[string]*zone{z.origin: z}, maxZoneLabels: dns.CountLabel(z.origin), model: m, keys: ix.keys}
		}
	}
	ix.fast = buildFast(ix)
	return ix
}

// buildFastZones precomputes the replies of zones, on every core: a
// provider's 10,000 zones take seconds on one.
func (ix *index) buildFastZones(zones []*zone) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(zones)) {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(zones); i = int(next.Add(1)) - 1 {
				z := zones[i]
				z.fast = ix.buildFastZone(z)
				// Exact matches keep their precomputed replies; NXDOMAIN
				// and NODATA go the full path, which synthesises from
				// the DNAME.
				z.fast.slow = z.fast.slow || z.dname
			}
		})
	}
	wg.Wait()
}

// dynKey identifies the dynamic records that fall inside origin.
func dynKey(origin string, dyn map[string][]dns.RR) string {
	var parts []string
	for name, rrs := range dyn {
		if dns.IsSubDomain(origin, name) {
			for _, rr := range rrs {
				parts = append(parts, rr.String())
			}
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, "\n")
}

// zoneAt returns the zone with origin name (lower case), the catalog zone
// included, or nil.
func (ix *index) zoneAt(name string) *zone {
	if z := ix.zones[name]; z != nil {
		return z
	}
	if ix.catalog != nil {
		return ix.catalog.zones[name]
	}
	return nil
}

// inCatalog says whether name (any case) is in the catalog zone.
func (ix *index) inCatalog(name string) bool {
	if ix.catalog == nil {
		return false
	}
	for origin := range ix.catalog.zones {
		return dns.IsSubDomain(origin, lower(name))
	}
	return false
}

// buildZone indexes one zone, served with serial, plus the records of dyn
// inside it; nil if it has no SOA (config never makes one).
func buildZone(mz *config.Zone, dyn map[string][]dns.RR, serial uint32) *zone {
	z := &zone{origin: mz.Origin, src: mz, serial: serial, nodes: map[string]*node{}}
	z.records = mz.Records
	if serial != mz.SOA.Serial {
		soa := dns.Copy(mz.SOA).(*dns.SOA)
		soa.Serial = serial
		z.records = slices.Clone(mz.Records)
		for i, rr := range z.records {
			if rr == dns.RR(mz.SOA) {
				z.records[i] = soa
			}
		}
	}
	byName := map[string]map[uint16][]dns.RR{}
	for _, rr := range z.records {
		h := rr.Header()
		name := strings.ToLower(h.Name)
		if byName[name] == nil {
			byName[name] = map[uint16][]dns.RR{}
		}
		byName[name][h.Rrtype] = append(byName[name][h.Rrtype], rr)
		switch rr := rr.(type) {
		case *dns.CNAME:
			z.leaves = z.leaves || !dns.IsSubDomain(z.origin, lower(rr.Target))
		case *dns.DNAME:
			z.dname = true
			z.leaves = z.leaves || !dns.IsSubDomain(z.origin, lower(rr.Target))
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
	z.addDynamic(dyn)
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
// CNAME (RFC 1034 §3.6.2), not at or below a zone cut and not below a
// DNAME, where they would be occluded.
func (z *zone) txtAllowed(name string) bool {
	if z.findCut(name) != nil {
		return false
	}
	if z.belowDNAME(name) {
		return false
	}
	if nd := z.nodes[name]; nd != nil && nd.get(dns.TypeCNAME) != nil {
		return false
	}
	return true
}

// belowDNAME says whether name (in z) is below a DNAME, where names exist
// only by synthesis (RFC 6672 §2.4).
func (z *zone) belowDNAME(name string) bool {
	if !z.dname || name == z.origin {
		return false
	}
	i, _ := dns.NextLabel(name, 0)
	nd, _ := z.closestEncloser(name[i:])
	return z.dnameAt(nd) != nil
}

// addDynamic adds the dynamic TXT records that belong to z, creating their
// names (and the empty non-terminals above them) as needed. A record whose
// data is already in the RRset is not added twice (RFC 2181 §5).
func (z *zone) addDynamic(dyn map[string][]dns.RR) {
	names := make([]string, 0, len(dyn))
	for name := range dyn {
		if dns.IsSubDomain(z.origin, name) && len(dyn[name]) > 0 && z.txtAllowed(name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if len(names) > 0 {
		z.records = slices.Clip(z.records)
	}
	for _, name := range names {
		for n := name; z.nodes[n] == nil; {
			z.nodes[n] = &node{name: n}
			i, _ := dns.NextLabel(n, 0)
			n = n[i:]
		}
		nd := z.nodes[name]
		old := nd.get(dns.TypeTXT)
		var have []dns.RR
		if old != nil {
			have = old.rrs
		}
		added := slices.Clip(have)
		for _, rr := range dyn[name] {
			if !slices.ContainsFunc(added, func(x dns.RR) bool { return dns.IsDuplicate(x, rr) }) {
				added = append(added, rr)
				z.records = append(z.records, rr)
			}
		}
		if len(added) == len(have) {
			continue
		}
		if old != nil {
			// A TXT RRset from the configuration and the dynamic values
			// form one RRset; copy so the previous index stays intact.
			merged := &rrset{name: name, typ: dns.TypeTXT, rrs: added}
			sets := slices.Clone(nd.sets)
			for i := range sets {
				if sets[i] == old {
					sets[i] = merged
				}
			}
			nd.sets = sets
			continue
		}
		nd.sets = append(nd.sets, &rrset{name: name, typ: dns.TypeTXT, rrs: added})
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
