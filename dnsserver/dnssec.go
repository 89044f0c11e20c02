package dnsserver

import (
	"crypto"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// DNSSEC: a zone whose config.Zone.DNSSEC is set is signed whenever its
// index is built, with the keys given to SetKeys. Signing adds to the
// zone what a signer such as Knot adds to a zone file: the DNSKEY RRset and
// CDS/CDNSKEY at the apex, an NSEC chain over the authoritative names, and
// an RRSIG for every authoritative RRset. The signed records are part of
// the zone's records, so AXFR hands secondaries a zone they serve as is,
// and the fast path precomputes DO replies with their signatures.
//
// NSEC, not NSEC3: signpost's zones hold the public names of Matrix
// servers, which NSEC3 would only hide from someone unwilling to crack
// SHA-1 hashes of a handful of names (RFC 9276 §2 says as much). NSEC
// answers are smaller, need no hashing on the resolver's side and let
// resolvers answer other missing names from the cache (RFC 8198).

// Signature timing, as Knot's defaults: signatures valid for 14 days,
// made again once less than 7 days remain, with the inception an hour in
// the past for resolvers whose clocks are behind.
const (
	sigValidity  = 14 * 24 * time.Hour
	sigRefresh   = 7 * 24 * time.Hour
	sigBackdate  = time.Hour
	resignPeriod = time.Hour // how often the server looks for signatures to refresh
)

// ZoneKey is one DNSSEC key of a zone: a combined signing key (flags 257,
// algorithm 13, ECDSA P-256) that signs every RRset, the DNSKEY RRset
// included.
type ZoneKey struct {
	DNSKEY *dns.DNSKEY
	Signer crypto.Signer
	// Retiring marks the old key of a key roll: it still signs and stays
	// in the DNSKEY RRset, so resolvers holding either key validate, but
	// CDS and CDNSKEY name only the keys not retiring, so a parent that
	// follows them moves its DS to the new key.
	Retiring bool
}

// signer makes and keeps the signatures of every signed zone. Signatures
// are reused while they have more than sigRefresh to run, so rebuilding a
// zone for one new TXT record signs that record's RRset and its NSEC
// records, not the whole zone.
type signer struct {
	now func() time.Time

	mu    sync.Mutex
	keys  map[string][]ZoneKey // by origin
	cache map[string]*dns.RRSIG
	// gen counts, per origin, the refreshes that changed a zone's
	// signatures without changing its data: part of its served serial.
	gen map[string]int
	// errs are the signing failures since the server last logged them.
	errs []error
}

func newSigner(now func() time.Time) *signer {
	if now == nil {
		now = time.Now
	}
	return &signer{now: now, keys: map[string][]ZoneKey{}, cache: map[string]*dns.RRSIG{}, gen: map[string]int{}}
}

// setKeys replaces the keys, counting a new generation for each zone whose
// keys changed so that its serial moves.
func (sg *signer) setKeys(keys map[string][]ZoneKey) {
	sg.mu.Lock()
	defer sg.mu.Unlock()
	same := func(a, b []ZoneKey) bool {
		return slices.EqualFunc(a, b, func(x, y ZoneKey) bool {
			return x.Retiring == y.Retiring && x.DNSKEY.PublicKey == y.DNSKEY.PublicKey && x.DNSKEY.Algorithm == y.DNSKEY.Algorithm
		})
	}
	for origin, ks := range keys {
		if !same(ks, sg.keys[origin]) {
			sg.gen[origin]++
		}
	}
	for origin := range sg.keys {
		if _, ok := keys[origin]; !ok {
			sg.gen[origin]++
		}
	}
	sg.keys = keys
}

// bump counts a refresh of origin's signatures and forgets those due for
// refresh, so the next signing makes them again.
func (sg *signer) bump(origin string) {
	now := sg.now()
	sg.mu.Lock()
	defer sg.mu.Unlock()
	sg.gen[origin]++
	for k, sig := range sg.cache {
		if sig.SignerName == origin && time.Unix(int64(sig.Expiration), 0).Sub(now) < sigRefresh {
			delete(sg.cache, k)
		}
	}
}

// generation returns the count of signature changes of origin not caused
// by a change of its data.
func (sg *signer) generation(origin string) int {
	sg.mu.Lock()
	defer sg.mu.Unlock()
	return sg.gen[origin]
}

// zoneKeys returns the keys of origin, nil if it has none.
func (sg *signer) zoneKeys(origin string) []ZoneKey {
	sg.mu.Lock()
	defer sg.mu.Unlock()
	return sg.keys[origin]
}

// sign returns the signatures of set by every key, reusing those made
// before that have long enough to run.
func (sg *signer) sign(origin string, keys []ZoneKey, owner string, typ uint16, rrs []dns.RR) ([]dns.RR, error) {
	var text strings.Builder
	for _, rr := range rrs {
		text.WriteString(rr.String())
		text.WriteByte('\n')
	}
	now := sg.now()
	var sigs []dns.RR
	for _, k := range keys {
		ck := fmt.Sprintf("%s %d %d\n%s", origin, k.DNSKEY.KeyTag(), typ, text.String())
		sg.mu.Lock()
		sig := sg.cache[ck]
		sg.mu.Unlock()
		if sig == nil || time.Unix(int64(sig.Expiration), 0).Sub(now) < sigRefresh {
			sig = &dns.RRSIG{
				Hdr:        dns.RR_Header{Name: owner, Rrtype: dns.TypeRRSIG, Class: dns.ClassINET, Ttl: rrs[0].Header().Ttl},
				Algorithm:  k.DNSKEY.Algorithm,
				Inception:  uint32(now.Add(-sigBackdate).Unix()),
				Expiration: uint32(now.Add(sigValidity).Unix()),
				KeyTag:     k.DNSKEY.KeyTag(),
				SignerName: origin,
			}
			if err := sig.Sign(k.Signer, rrs); err != nil {
				return nil, fmt.Errorf("dnsserver: sign %s/%s in %s: %w", owner, dns.TypeToString[typ], origin, err)
			}
			sg.mu.Lock()
			sg.cache[ck] = sig
			sg.mu.Unlock()
		}
		sigs = append(sigs, sig)
	}
	return sigs, nil
}

// due says whether some signature in z has less than sigRefresh to run:
// then the zone is signed again.
func (sg *signer) due(z *zone) bool {
	limit := sg.now().Add(sigRefresh)
	for _, nd := range z.nodes {
		for _, s := range nd.sets {
			for _, sig := range s.sigs {
				if time.Unix(int64(sig.(*dns.RRSIG).Expiration), 0).Before(limit) {
					return true
				}
			}
		}
	}
	return false
}

// signIfAsked signs z if its configuration asks for it. Without keys, or
// when signing fails, z stays unsigned and the reason is kept in sg.err.
// sg may be nil: nothing is signed.
func (sg *signer) signIfAsked(z *zone) {
	if sg == nil || !z.src.DNSSEC {
		return
	}
	keys := sg.zoneKeys(z.origin)
	var err error
	if len(keys) == 0 {
		err = fmt.Errorf("dnsserver: zone %s asks for DNSSEC but has no keys; serving it unsigned", z.origin)
	} else if err = sg.signZone(z, keys); err != nil {
		err = fmt.Errorf("%w; serving %s unsigned", err, z.origin)
	}
	if err != nil {
		sg.mu.Lock()
		sg.errs = append(sg.errs, err)
		sg.mu.Unlock()
	}
}

// signZone signs z, freshly built and not yet served, with keys: it adds
// the DNSKEY, CDS and CDNSKEY RRsets at the apex, the NSEC chain, and the
// signatures, to the nodes and to the records transferred. It signs
// everything before it changes anything, so on error z is as it was.
func (sg *signer) signZone(z *zone, keys []ZoneKey) error {
	ttl := z.soa.rrs[0].Header().Ttl
	var dnskeys, cds, cdnskeys []dns.RR
	for _, k := range keys {
		dk := *k.DNSKEY
		dk.Hdr = dns.RR_Header{Name: z.origin, Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: ttl}
		dnskeys = append(dnskeys, &dk)
		if k.Retiring {
			continue
		}
		ds := dk.ToDS(dns.SHA256).ToCDS()
		ds.Hdr.Ttl = ttl
		cds = append(cds, ds)
		cdk := dk.ToCDNSKEY()
		cdk.Hdr.Ttl = ttl
		cdnskeys = append(cdnskeys, cdk)
	}
	var apexSets []*rrset
	for _, set := range []*rrset{
		{name: z.origin, typ: dns.TypeDNSKEY, rrs: dnskeys},
		{name: z.origin, typ: dns.TypeCDS, rrs: cds},
		{name: z.origin, typ: dns.TypeCDNSKEY, rrs: cdnskeys},
	} {
		if len(set.rrs) > 0 {
			apexSets = append(apexSets, set)
		}
	}
	setsOf := func(nd *node) []*rrset {
		if nd == z.apex {
			return append(slices.Clip(nd.sets), apexSets...)
		}
		return nd.sets
	}

	// The chain runs through every name with authoritative data or a
	// delegation, in canonical order; names below a cut (glue) and empty
	// non-terminals have no NSEC (RFC 4034 §4.1.1).
	var chain []*node
	for _, nd := range z.nodes {
		if len(setsOf(nd)) > 0 && (nd.cut == nil || nd.cut == nd) {
			chain = append(chain, nd)
		}
	}
	slices.SortFunc(chain, func(a, b *node) int { return compareNames(a.name, b.name) })
	nttl := z.negSOA.rrs[0].Header().Ttl // RFC 9077: as the negative TTL
	nsecs := make([]*rrset, len(chain))
	for i, nd := range chain {
		types := []uint16{dns.TypeNSEC, dns.TypeRRSIG}
		for _, s := range setsOf(nd) {
			if nd.cut != nd || s.typ == dns.TypeNS || s.typ == dns.TypeDS {
				types = append(types, s.typ) // glue at a cut is not ours
			}
		}
		slices.Sort(types)
		nsec := &dns.NSEC{
			Hdr:        dns.RR_Header{Name: nd.name, Rrtype: dns.TypeNSEC, Class: dns.ClassINET, Ttl: nttl},
			NextDomain: chain[(i+1)%len(chain)].name,
			TypeBitMap: types,
		}
		nsecs[i] = &rrset{name: nd.name, typ: dns.TypeNSEC, rrs: []dns.RR{nsec}}
	}

	sigs := map[*rrset][]dns.RR{}
	all := make([][]dns.RR, len(chain)) // every signature at each name
	for i, nd := range chain {
		for _, s := range append(slices.Clip(setsOf(nd)), nsecs[i]) {
			// At a delegation only the DS and NSEC are ours to sign
			// (RFC 4035 §2.2).
			if nd.cut == nd && s.typ != dns.TypeDS && s.typ != dns.TypeNSEC {
				continue
			}
			ss, err := sg.sign(z.origin, keys, nd.name, s.typ, s.rrs)
			if err != nil {
				return err
			}
			sigs[s] = ss
			all[i] = append(all[i], ss...)
		}
	}

	// Everything is signed: now change the zone.
	z.records = slices.Clip(z.records)
	for _, set := range apexSets {
		z.records = append(z.records, set.rrs...)
	}
	z.apex.sets = setsOf(z.apex)
	for i, nd := range chain {
		nd.sets = append(nd.sets, nsecs[i], &rrset{name: nd.name, typ: dns.TypeRRSIG, rrs: all[i]})
		slices.SortFunc(nd.sets, func(a, b *rrset) int { return typeOrder(a.typ) - typeOrder(b.typ) })
		z.records = append(z.records, nsecs[i].rrs...)
	}
	for i := range chain {
		z.records = append(z.records, all[i]...)
	}
	for s, ss := range sigs {
		s.sigs = ss
	}
	// The SOA of negative answers has a lower TTL; so do its signatures,
	// which stay valid: validators take the original TTL from the RRSIG.
	for _, sig := range z.soa.sigs {
		s := dns.Copy(sig)
		s.Header().Ttl = nttl
		z.negSOA.sigs = append(z.negSOA.sigs, s)
	}
	z.chain = chain
	z.signed = true
	return nil
}

// covering returns the NSEC RRset of the name in z's chain that comes last
// before name in canonical order: the NSEC that proves name does not exist,
// or, for an empty non-terminal, that it has no data.
func (z *zone) covering(name string) *rrset {
	i, found := slices.BinarySearchFunc(z.chain, name, func(nd *node, name string) int { return compareNames(nd.name, name) })
	if !found {
		i--
	}
	if i < 0 {
		i = len(z.chain) - 1 // before the apex cannot happen inside the zone
	}
	return z.chain[i].get(dns.TypeNSEC)
}

// compareNames orders two lower-case, fully qualified names canonically
// (RFC 4034 §6.1): label by label from the root, each compared as bytes.
func compareNames(a, b string) int {
	if a == b {
		return 0
	}
	la, lb := labelsOf(a), labelsOf(b)
	for i, j := len(la)-1, len(lb)-1; i >= 0 && j >= 0; i, j = i-1, j-1 {
		if c := strings.Compare(la[i], lb[j]); c != 0 {
			return c
		}
	}
	return len(la) - len(lb)
}

// labelsOf returns the labels of name as their wire bytes (escapes
// resolved), so that they compare as RFC 4034 §6.1 asks.
func labelsOf(name string) []string {
	var wire [256]byte
	n, err := dns.PackDomainName(name, wire[:], 0, nil, false)
	if err != nil {
		return dns.SplitDomainName(name)
	}
	var out []string
	for off := 0; off < n && wire[off] != 0; off += 1 + int(wire[off]) {
		out = append(out, string(wire[off+1:off+1+int(wire[off])]))
	}
	return out
}

// DS returns the DS record (SHA-256 digest) of each key not retiring: what
// the parent zone should publish.
func DS(origin string, keys []ZoneKey, ttl uint32) []*dns.DS {
	var out []*dns.DS
	for _, k := range keys {
		if k.Retiring {
			continue
		}
		dk := *k.DNSKEY
		dk.Hdr = dns.RR_Header{Name: dns.Fqdn(origin), Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: ttl}
		ds := dk.ToDS(dns.SHA256)
		ds.Hdr.Ttl = ttl
		out = append(out, ds)
	}
	return out
}

// fastDenial is a signed zone's part of the fast path for negative
// answers to DO queries. A NODATA reply depends only on the name; an
// NXDOMAIN reply on where the name falls in the NSEC chain and on its
// closest encloser, which is an ancestor of the NSEC owner before it or of
// the one after it (canonical order lists a name's descendants right after
// it). So one template per name, and one per gap in the chain and such
// ancestor, cover every negative answer. Each template
// has the name it is for as its question, so the compression pointers move
// by where that name starts in the query name.
type fastDenial struct {
	// chain holds the sort key (sortKey) of each NSEC owner, in
	// canonical order.
	chain  []string
	nodata map[string]*template // by lower-case wire name
	// nx is keyed by the closest encloser's lower-case wire name and the
	// gap's index, two bytes big-endian.
	nx map[string]*template
}

// sortKey turns a lower-case wire-format name into a string whose byte
// order is the canonical order of names: its labels from the root down,
// each followed by a zero byte. (The fast path lets no zero byte through
// in a label; a name in the zone holding one would sort slightly off and
// only costs the fast path that answer, which checkSame would show.)
func sortKey(dst, wire []byte, labels []int) []byte {
	for i := len(labels) - 1; i >= 0; i-- {
		l := int(wire[labels[i]])
		dst = append(dst, wire[labels[i]+1:labels[i]+1+l]...)
		dst = append(dst, 0)
	}
	return dst
}

// wireLabels returns the offsets of the labels of a wire-format name.
func wireLabels(wire []byte) []int {
	var out []int
	for off := 0; off < len(wire) && wire[off] != 0; off += 1 + int(wire[off]) {
		out = append(out, off)
	}
	return out
}

func buildDenial(z *zone) *fastDenial {
	d := &fastDenial{nodata: map[string]*template{}, nx: map[string]*template{}}
	var wire [256]byte
	pack := func(name string) []byte {
		n, err := dns.PackDomainName(name, wire[:], 0, nil, false)
		if err != nil {
			return nil
		}
		return slices.Clone(wire[:n])
	}
	for _, nd := range z.chain {
		w := pack(nd.name)
		d.chain = append(d.chain, string(sortKey(nil, w, wireLabels(w))))
	}
	reply := func(qname string, ns ...*rrset) *template {
		m := new(dns.Msg)
		m.Response, m.Authoritative, m.Compress = true, true, true
		m.Question = []dns.Question{{Name: qname, Qtype: dns.TypeA, Qclass: dns.ClassINET}}
		var seen []*rrset
		for _, s := range ns {
			if s == nil || slices.Contains(seen, s) {
				continue
			}
			seen = append(seen, s)
			m.Ns = append(m.Ns, s.rrs...)
			m.Ns = append(m.Ns, s.sigs...)
		}
		opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: udpSize}}
		opt.SetDo()
		m.Extra = []dns.RR{opt}
		t := makeTemplate(m)
		return &t
	}
	for _, nd := range z.nodes {
		if nd.cut != nil || nd.get(dns.TypeCNAME) != nil {
			continue // the full path answers these
		}
		proof := nd.get(dns.TypeNSEC)
		if proof == nil {
			proof = z.covering(nd.name) // an empty non-terminal
		}
		if w := pack(nd.name); w != nil {
			d.nodata[string(w)] = reply(nd.name, z.negSOA, proof)
		}
	}
	for i, owner := range z.chain {
		// An empty non-terminal in the gap sorts right before the next
		// owner, its descendant: the closest encloser may be one of its
		// ancestors too.
		next := z.chain[(i+1)%len(z.chain)]
		for _, start := range []string{owner.name, next.name} {
			for n := start; ; {
				if ce := z.nodes[n]; ce != nil && ce.cut == nil {
					if w := pack(n); w != nil {
						key := string(append(w, byte(i>>8), byte(i)))
						if d.nx[key] == nil {
							d.nx[key] = reply(n, owner.get(dns.TypeNSEC), z.covering("*."+n), z.negSOA)
						}
					}
				}
				if n == z.origin {
					break
				}
				j, _ := dns.NextLabel(n, 0)
				n = n[j:]
			}
		}
	}
	return d
}

// find returns the template for the query name in sc.key[:k] (nl labels)
// whose closest encloser starts at label j: the name itself (NODATA) when
// j is 0. nil sends the query to the full path.
func (d *fastDenial) find(sc *scratch, k, nl, j int) *template {
	if j == 0 {
		return d.nodata[string(sc.key[:k])]
	}
	rev := sortKey(sc.rev[:0], sc.key[:k], sc.labels[:nl])
	lo, hi := 0, len(d.chain)
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		if lessBytes(d.chain[h], rev) {
			lo = h + 1
		} else {
			hi = h
		}
	}
	i := lo - 1 // the last owner before the name
	if i < 0 || len(d.chain) == 0 {
		return nil
	}
	key := append(sc.rev[:0], sc.key[sc.labels[j]:k]...) // the closest encloser
	key = append(key, byte(i>>8), byte(i))
	return d.nx[string(key)]
}

// lessBytes says whether s sorts before b, without allocating.
func lessBytes(s string, b []byte) bool {
	for i := 0; i < len(s) && i < len(b); i++ {
		if s[i] != b[i] {
			return s[i] < b[i]
		}
	}
	return len(s) < len(b)
}
