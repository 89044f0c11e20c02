package dnsserver

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"math"
	"math/bits"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/miekg/dns"
)

// The fast path answers a UDP query by copying a reply packed when the index
// was built, then patching in the query's ID, RD bit, DO bit and question
// bytes (the client's 0x20 spelling). Replies are packed by respond, the full
// path, from a lower-case query with ID 0, so both paths give the same bytes;
// fast_test.go checks that for every precomputed reply. Anything the fast
// path does not recognise returns nil and goes the full path.
//
// EDNS options in the query (cookie.go) are read in place. The OPT record
// is the last record of every precomputed EDNS reply (respond appends it
// last, and TSIG, which would follow it, never takes this path), so our
// options, NSID and COOKIE, are appended to the end of the copy and the
// OPT's RDLENGTH patched; the counts do not change.

// fastIndex holds the precomputed replies of one index.
type fastIndex struct {
	// slots are a hash table of the precomputed replies by the lower-case
	// wire-format name followed by the big-endian qtype (open addressing,
	// linear probing, at most half full). A slot holds
	// the entry's data (an empty slot none), the top half of the key's
	// hash (seed) and the entry's zone in zones and stats. With 10,000
	// zones every pointer a lookup follows misses the processor's caches:
	// a Go map missed two or three times before the entry's data, a slot
	// once. Zones do not nest (config), so no two zones have a key in
	// common.
	//
	// Every name that exists in a zone has an entry for qtype 0 (which no
	// query gets from the fast path), without replies, its flags in place
	// of the entry's: what NXDOMAIN and NODATA need.
	slots []fastSlot
	seed  maphash.Seed
	// cold: the table and its entries outgrow the CPU's caches, and a
	// reader with a batch of packets warms them (warm).
	cold bool
	// stats are each zone's counters, by fastSlot.zone: zones[i].stats,
	// kept apart in one dense slice so that counting a positive answer
	// does not load the zone's fastZone, another cache miss at 10,000
	// zones.
	stats []*zoneStats
	zones []*fastZone // each zone, by fastSlot.zone

	refused [2]template // no EDNS, EDNS: REFUSED for names outside every zone
}

type fastSlot struct {
	data      string // as fastEntry.data
	tag, zone uint32
}

// fastEntry is the replies to one question. Their sizes, the question's
// key and the replies follow each other in data, in one allocation for
// the zone: a provider's 10,000 zones would otherwise hold a quarter of a
// million slices and strings, and a lookup reads them all from
// neighbouring bytes.
type fastEntry struct {
	// data is a header of entryHeader bytes: flags, the key's length,
	// then the big-endian lengths of the replies edns, dnssec and plain;
	// then the key (as in fastIndex.slots) and the replies. A length of 0
	// is no reply (they all have a header).
	//
	// edns is the reply with our OPT (last, no options), DO clear, at the
	// 1232-byte limit; none: the full path.
	// dnssec is the reply to a query with the DO bit in a signed zone:
	// as edns, with the signatures and denial; none outside signed zones.
	// plain is the reply without EDNS (512-byte limit); none when it is
	// edns without its OPT record (entryPlainFromEDNS), as it nearly
	// always is.
	data  string
	stats *zoneStats // the zone's counters
}

const entryHeader = 8

const (
	// entryEDNSComplete: edns lost nothing to the limit, so it is also
	// the reply for any smaller limit it fits in, and the reply over TCP.
	entryEDNSComplete uint8 = 1 << iota
	// entryPlainComplete: plain lost nothing to the limit: it is also the
	// reply over TCP.
	entryPlainComplete
	entryDNSSECComplete // as entryEDNSComplete, for dnssec
	entryPlainFromEDNS
	entrySigned // the zone is signed: a DO query gets dnssec
)

// typeName is the qtype of the names' entries in the table.
const typeName = 0

func (e fastEntry) has(flag uint8) bool { return e.data[0]&flag != 0 }

func (e fastEntry) len(i int) int { return int(e.data[i])<<8 | int(e.data[i+1]) }

// size returns the length of e's data, read from its header.
func (e fastEntry) size() int { return entryHeader + int(e.data[1]) + e.len(2) + e.len(4) + e.len(6) }

func (e fastEntry) key() string { return e.data[entryHeader : entryHeader+int(e.data[1])] }

// The replies are strings: appending one to a packet copies it, and
// nothing can write into data.

func (e fastEntry) edns() string {
	i := entryHeader + int(e.data[1])
	return e.data[i : i+e.len(2)]
}

func (e fastEntry) dnssec() string {
	i := entryHeader + int(e.data[1]) + e.len(2)
	return e.data[i : i+e.len(4)]
}

// plain returns the reply without EDNS, empty if it is edns's.
func (e fastEntry) plain() string {
	i := entryHeader + int(e.data[1]) + e.len(2) + e.len(4)
	return e.data[i : i+e.len(6)]
}

// fastZone is one zone's part of the fast path: its precomputed replies,
// and what NXDOMAIN and NODATA need for names that have none.
type fastZone struct {
	// entries are the data of the zone's fastEntries, back to back, and
	// count how many: buildFast puts them in the index's table.
	entries string
	count   int
	labels  int         // of the origin
	neg     [2]template // SOA in authority, without and with OPT
	// clash lists the labels right above the origin of SOA MNAME/RNAME
	// names inside the zone: a query name under the same label would let
	// miekg/dns compress differently from the template.
	clash [][]byte
	// slow sends every query in the zone to the full path: the catalog
	// zone, whose answer depends on who asks.
	slow bool
	// signed: a signed zone, whose replies to DO queries are the entries'
	// dnssec ones, and whose negative DO answers come from sec.
	signed bool
	sec    *fastDenial
	// stats counts the zone's replies.
	stats *zoneStats
}

const (
	// flagComplex: an exact match needs the full path (CNAME, zone cut).
	flagComplex uint8 = 1 << iota
	// flagNoNX: as the closest encloser of a missing name, it does not
	// make NXDOMAIN (a wildcard below, or a zone cut).
	flagNoNX
)

// template is what follows the question in a reply, with the offsets of
// the compression pointers that must move by the distance from the start
// of the query name to the start of the origin.
type template struct {
	header [12]byte // ID zero, QDCOUNT 1
	body   []byte
	ptrs   []int
	doPos  int // offset in body of the OPT flags byte, -1 without OPT
	rdlen  int // offset in body of the OPT RDLENGTH, -1 without OPT
}

// fastChars marks the bytes the fast path lets through in a label: those
// miekg/dns writes as themselves in presentation format. Anything else takes
// the full path.
var fastChars = func() (t [256]byte) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = byte(c)
		t[c-'a'+'A'] = byte(c)
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c)
	}
	t['-'], t['_'], t['*'] = '-', '_', '*'
	return t
}()

// Names whose every answer needs the full path get table entries for the
// types resolvers ask there most: at a zone cut (referrals) the types of
// commonTypes, at a CNAME those of a web name behind it. Each entry costs
// some 200 bytes, for a provider's 10,000 zones with a www CNAME each 2 MB;
// other questions there, and ANY anywhere (RFC 8482 answers, which
// resolvers rarely ask), go the full path.
var (
	commonTypes = []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypeTXT, dns.TypeMX,
		dns.TypeNS, dns.TypeCNAME, dns.TypeSOA, dns.TypeHTTPS, dns.TypeCAA, dns.TypeDS}
	cnameTypes = []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeCNAME, dns.TypeHTTPS}
)

// buildFast gathers the precomputed replies of every zone.
func buildFast(ix *index) *fastIndex {
	f := &fastIndex{}
	f.refused[0] = refusedTemplate(false)
	f.refused[1] = refusedTemplate(true)
	// The catalog zone's answers depend on who asks: its origin's entry
	// sends every question in it to the full path.
	var catalog []fastZone
	if ix.catalog != nil {
		for origin := range ix.catalog.zones {
			var wire [256]byte
			n, _ := dns.PackDomainName(origin, wire[:], 0, nil, false)
			z := fastZone{slow: true}
			z.compact(nil, map[string]uint8{string(wire[:n]): 0})
			catalog = append(catalog, z)
		}
	}
	n := 0
	for _, z := range ix.zones {
		n += z.fast.count
	}
	n += len(catalog)
	f.seed = maphash.MakeSeed()
	f.slots = make([]fastSlot, max(1, 1<<bits.Len(uint(2*n))))
	size := len(f.slots) * int(unsafe.Sizeof(fastSlot{}))
	f.stats = make([]*zoneStats, 0, len(ix.zones)+len(catalog))
	f.zones = make([]*fastZone, 0, len(ix.zones)+len(catalog))
	add := func(z *fastZone) {
		zi := uint32(len(f.zones))
		size += len(z.entries)
		f.zones = append(f.zones, z)
		f.stats = append(f.stats, z.stats)
		mask := uint64(len(f.slots) - 1)
		for data := z.entries; data != ""; {
			e := fastEntry{data: data}
			e.data = data[:e.size()]
			data = data[len(e.data):]
			h := maphash.String(f.seed, e.key())
			i := h & mask
			for f.slots[i].data != "" {
				i = (i + 1) & mask
			}
			f.slots[i] = fastSlot{data: e.data, tag: uint32(h >> 32), zone: zi}
		}
	}
	for _, z := range ix.zones {
		add(z.fast)
	}
	for i := range catalog {
		add(&catalog[i])
	}
	f.cold = size >= coldSize
	return f
}

// lookup returns the entry for key (as in slots), if there is one.
func (f *fastIndex) lookup(key []byte) (fastEntry, bool) {
	if s := f.slot(key); s != nil {
		return fastEntry{data: s.data, stats: f.stats[s.zone]}, true
	}
	return fastEntry{}, false
}

// slot returns the slot of key, nil if it has none.
func (f *fastIndex) slot(key []byte) *fastSlot {
	h := maphash.Bytes(f.seed, key)
	mask := uint64(len(f.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := &f.slots[i]
		if s.data == "" {
			return nil
		}
		if s.tag == uint32(h>>32) && (fastEntry{data: s.data}).key() == string(key) {
			return s
		}
	}
}

// buildFastZone precomputes the replies for the names of z. It runs once all
// zones are in ix, since a CNAME may lead into another zone.
func (ix *index) buildFastZone(z *zone) *fastZone {
	var wire [256]byte
	buf := make([]byte, 0, 4096) // packed replies are copied out at their size
	fz := &fastZone{signed: z.signed, stats: new(zoneStats), labels: dns.CountLabel(z.origin)}
	names := map[string]uint8{} // every existing name (lower-case wire) → flags
	if ix.stats != nil {
		fz.stats = ix.stats.zone(z.origin)
	}
	table := map[string]*precomputed{}
	for _, nd := range z.nodes {
		var fl uint8
		if nd.cut != nil {
			fl |= flagComplex | flagNoNX
		}
		if nd.get(dns.TypeCNAME) != nil {
			fl |= flagComplex
		}
		if z.nodes["*."+nd.name] != nil {
			fl |= flagNoNX
		}
		n, err := dns.PackDomainName(nd.name, wire[:], 0, nil, false)
		if err != nil {
			continue
		}
		if n+2 > math.MaxUint8 {
			continue // its keys would not fit fastEntry's; replyTo sends it the full path
		}
		names[string(wire[:n])] = fl
		var types []uint16
		for _, s := range nd.sets {
			types = append(types, s.typ)
		}
		switch {
		case nd.cut != nil:
			types = append(types, commonTypes...)
		case fl&flagComplex != 0:
			types = append(types, cnameTypes...)
		}
		for _, t := range types {
			key := string(append(wire[:n:n], byte(t>>8), byte(t)))
			if table[key] == nil {
				table[key] = ix.precompute(nd.name, t, buf, z.signed)
			}
		}
	}
	fz.compact(table, names)
	soa := z.soa.rrs[0].(*dns.SOA)
	for _, name := range []string{lower(soa.Ns), lower(soa.Mbox)} {
		if name != z.origin && dns.IsSubDomain(z.origin, name) {
			labels := dns.SplitDomainName(name)
			label := labels[len(labels)-dns.CountLabel(z.origin)-1]
			fz.clash = append(fz.clash, append([]byte{byte(len(label))}, label...))
		}
	}
	if z.signed {
		fz.sec = buildDenial(z)
	}
	fz.neg[0] = negTemplate(z, false)
	fz.neg[1] = negTemplate(z, true)
	return fz
}

// precomputed is the replies to one question as precompute packs them.
type precomputed struct {
	plain, edns, dnssec                         []byte // nil: none
	plainComplete, ednsComplete, dnssecComplete bool
}

// compact puts the entries of table in z with their keys and replies each
// in one allocation for the zone: what outlives a build is then a few
// dense objects, not a quarter of a million small ones scattered among the
// build's garbage, which for 10,000 zones left the process 120 MB larger
// than its live heap.
func (z *fastZone) compact(table map[string]*precomputed, names map[string]uint8) {
	n := 0
	for k := range names {
		n += entryHeader + len(k) + 2
	}
	for k, p := range table {
		n += entryHeader + len(k) + len(p.edns) + len(p.dnssec)
		if !plainInEDNS(p.plain, p.edns) {
			n += len(p.plain)
		}
	}
	var data strings.Builder // its String does not copy
	data.Grow(n)
	for k, fl := range names {
		data.Write([]byte{fl, byte(len(k) + 2), 0, 0, 0, 0, 0, 0})
		data.WriteString(k)
		data.Write([]byte{typeName >> 8, typeName & 0xFF})
	}
	for k, p := range table {
		var flags uint8
		plain := p.plain
		if plainInEDNS(p.plain, p.edns) {
			flags, plain = entryPlainFromEDNS, nil
		}
		for _, f := range []struct {
			set  bool
			flag uint8
		}{{p.plainComplete, entryPlainComplete}, {p.ednsComplete, entryEDNSComplete}, {p.dnssecComplete, entryDNSSECComplete}, {z.signed, entrySigned}} {
			if f.set {
				flags |= f.flag
			}
		}
		data.Write([]byte{flags, byte(len(k)), byte(len(p.edns) >> 8), byte(len(p.edns)),
			byte(len(p.dnssec) >> 8), byte(len(p.dnssec)), byte(len(plain) >> 8), byte(len(plain))})
		data.WriteString(k)
		data.Write(p.edns)
		data.Write(p.dnssec)
		data.Write(plain)
	}
	z.entries, z.count = data.String(), len(names)+len(table)
}

// optLen is the size of the OPT record ending every precomputed EDNS reply:
// root owner, type, class, TTL and an empty RDATA.
const optLen = 11

// plainInEDNS says the reply without EDNS is the reply with EDNS minus its
// OPT record, one fewer in ARCOUNT: then only the latter is kept, which
// for a provider's 10,000 zones is 27 MB less.
func plainInEDNS(plain, edns []byte) bool {
	if plain == nil || len(edns) != len(plain)+optLen || len(plain) < 12 {
		return false
	}
	ar := binary.BigEndian.Uint16(plain[10:])
	return string(plain[:10]) == string(edns[:10]) && binary.BigEndian.Uint16(edns[10:]) == ar+1 &&
		string(plain[12:]) == string(edns[12:len(plain)])
}

// precompute packs the replies to name/qtype through the full path, using
// buf as scratch space, and those to DO queries when signed.
func (ix *index) precompute(name string, qtype uint16, buf []byte, signed bool) *precomputed {
	req := new(dns.Msg)
	req.Question = []dns.Question{{Name: name, Qtype: qtype, Qclass: dns.ClassINET}}
	e := &precomputed{}
	e.plain, e.plainComplete = ix.packUDP(req, minUDPSize, buf)
	req.SetEdns0(udpSize, false)
	e.edns, e.ednsComplete = ix.packUDP(req, udpSize, buf)
	// replyTo patches the DO bit and appends options at fixed offsets from
	// the end: the OPT, without options, must be the last record. If it
	// ever is not, such queries take the full path.
	if !optLast(e.edns) {
		e.edns = nil
	}
	if signed {
		req.IsEdns0().SetDo()
		e.dnssec, e.dnssecComplete = ix.packUDP(req, udpSize, buf)
		if !optLast(e.dnssec) {
			e.dnssec = nil
		}
	}
	return e
}

// optLast says whether the reply b ends with our OPT record without
// options.
func optLast(b []byte) bool {
	n := len(b)
	return n >= 12+11 && bytes.Equal(b[n-11:n-6], []byte{0, 0, byte(dns.TypeOPT), udpSize >> 8, udpSize & 0xFF}) && b[n-2]|b[n-1] == 0
}

// packUDP returns the UDP reply to req, whose size limit is limit, and
// whether it is also the reply over TCP, with nothing cut to fit. The TCP
// reply is packed first: when it fits the limit it is the UDP reply too
// (encode cuts nothing from a reply within the limit), which spares a
// second packing for most questions; with 10,000 zones these packings
// were most of the time to build an index. The reply is a copy of its
// own size: packing allocates for the uncompressed length, and a
// provider's index holds a quarter of a million replies.
func (ix *index) packUDP(req *dns.Msg, limit int, buf []byte) ([]byte, bool) {
	full := ix.respond(req, true, buf)
	if len(full) <= limit {
		return bytes.Clone(full), true
	}
	full = bytes.Clone(full)
	udp := bytes.Clone(ix.respond(req, false, buf))
	return udp, bytes.Equal(udp, full)
}

// negTemplate packs the SOA-in-authority part of NXDOMAIN and NODATA
// replies for a query at the origin itself.
func negTemplate(z *zone, edns bool) template {
	m := new(dns.Msg)
	m.Response, m.Authoritative, m.Compress = true, true, true
	m.Question = []dns.Question{{Name: z.origin, Qtype: dns.TypeA, Qclass: dns.ClassINET}}
	m.Ns = z.negSOA.rrs
	if edns {
		m.Extra = []dns.RR{&dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: udpSize}}}
	}
	return makeTemplate(m)
}

func refusedTemplate(edns bool) template {
	m := new(dns.Msg)
	m.Response = true
	m.Rcode = dns.RcodeRefused
	m.Question = []dns.Question{{Name: ".", Qtype: dns.TypeA, Qclass: dns.ClassINET}}
	if edns {
		m.Extra = []dns.RR{&dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: udpSize},
			Option: []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: edeNotAuthoritative}}}}
	}
	return makeTemplate(m)
}

// makeTemplate packs m and splits it after the question, noting where the
// compression pointers and the OPT flags are.
func makeTemplate(m *dns.Msg) template {
	b, err := m.Pack()
	if err != nil {
		panic("dnsserver: packing a reply template: " + err.Error()) // our own data: a bug
	}
	off := 12
	off = skipName(b, off, nil) + 4
	t := template{body: b[off:], doPos: -1, rdlen: -1}
	copy(t.header[:], b[:12])
	t.header[3] &^= 0x0F // rcode is set per reply
	pos := 0
	for range len(m.Ns) + len(m.Extra) {
		rrStart := pos
		pos = skipName(t.body, pos, &t.ptrs)
		typ := binary.BigEndian.Uint16(t.body[pos:])
		rdlen := int(binary.BigEndian.Uint16(t.body[pos+8:]))
		pos += 10
		switch typ {
		case dns.TypeSOA:
			p := skipName(t.body, pos, &t.ptrs)
			skipName(t.body, p, &t.ptrs)
		case dns.TypeOPT:
			t.doPos = rrStart + 1 + 6 // root name, type, class, extended rcode, version
			t.rdlen = rrStart + 1 + 8
			if pos+rdlen != len(t.body) {
				panic("dnsserver: OPT is not the last record of a reply template") // our own data: a bug
			}
		}
		pos += rdlen
	}
	return t
}

// skipName returns the offset after the name at off in b, appending the
// offsets of compression pointers to ptrs.
func skipName(b []byte, off int, ptrs *[]int) int {
	for {
		l := int(b[off])
		switch {
		case l == 0:
			return off + 1
		case l&0xC0 == 0xC0:
			if ptrs != nil {
				*ptrs = append(*ptrs, off)
			}
			return off + 2
		default:
			off += 1 + l
		}
	}
}

// scratch is one reader's working memory for the fast path.
type scratch struct {
	key    [256 + 2]byte
	rev    [256 + 2]byte // the query name in canonical sort form (fastDenial)
	labels [128]int
	now    time.Time // when the packets being answered arrived; zero: ask the clock

	// What the last reply of the fast path answered, for counting: the
	// zone's counters (nil: none) and the query type.
	zone  *zoneStats
	qtype uint16
	tally tally
}

// clock returns when the packets being answered arrived.
func (sc *scratch) clock() time.Time {
	if sc.now.IsZero() {
		return time.Now()
	}
	return sc.now
}

// reply answers pkt into out[:0] from precomputed data, or returns nil if
// pkt needs the full path. It never allocates. The sender is unknown: the
// reply has no COOKIE or NSID option; replyTo is the same with a sender.
func (f *fastIndex) reply(pkt, out []byte, sc *scratch) []byte {
	return f.replyTo(pkt, out, sc, nil)
}

// replyTo answers pkt, a query from cl (nil if unknown), into out[:0] from
// precomputed data, or returns nil if pkt needs the full path (respondTo
// with the same cl gives the same bytes). It never allocates. The reply
// fits the query's UDP limit; a caller serving TCP must not use it for a
// query whose reply the limit truncated. It sets cl.cookieOK when the
// query's server cookie is valid.
func (f *fastIndex) replyTo(pkt, out []byte, sc *scratch, cl *sender) []byte {
	if len(pkt) < 12+1+4 || pkt[2]&^0x01 != 0 || pkt[3]&0x0F != 0 ||
		pkt[4] != 0 || pkt[5] != 1 || pkt[6]|pkt[7]|pkt[8]|pkt[9]|pkt[10] != 0 || pkt[11] > 1 {
		return nil // only plain queries: opcode QUERY, one question, no records but OPT
	}
	off, k, nl := sc.parseName(pkt)
	if off < 0 {
		return nil
	}
	qtype := binary.BigEndian.Uint16(pkt[off:])
	if pkt[off+2] != 0 || pkt[off+3] != 1 || qtype == dns.TypeAXFR || qtype == dns.TypeIXFR || qtype == dns.TypeANY ||
		qtype == typeName || k+2 > math.MaxUint8 {
		// No entry for ANY (commonTypes), or for a name too long for an
		// entry's key: not NODATA either. Type 0 is the names' entries.
		return nil
	}
	sc.zone, sc.qtype = nil, qtype
	qend := off + 4
	edns, do, limit := 0, false, minUDPSize
	var eq ednsReq
	if pkt[11] == 1 {
		o := pkt[qend:]
		// Root owner, type OPT, version 0, RDATA to the end.
		if len(o) < 11 || o[0] != 0 || o[1] != 0 || o[2] != 41 || o[6] != 0 ||
			11+int(binary.BigEndian.Uint16(o[9:])) != len(o) {
			return nil
		}
		switch parseOptions(o[11:], &eq) {
		case optFull:
			return nil
		case optFormErr:
			return formerr(pkt, out)
		}
		edns, do = 1, o[7]&0x80 != 0
		limit = min(max(int(binary.BigEndian.Uint16(o[3:])), minUDPSize), udpSize)
	} else if qend != len(pkt) {
		return nil
	}
	extra := cl.optionsLen(&eq)
	sc.key[k], sc.key[k+1] = byte(qtype>>8), byte(qtype)
	if e, ok := f.lookup(sc.key[:k+2]); ok {
		fromEDNS := e.has(entryPlainFromEDNS)
		src := e.plain()
		if edns == 0 && fromEDNS {
			src = e.edns()
			src = src[:len(src)-optLen]
		}
		if edns == 1 {
			complete := e.has(entryEDNSComplete)
			src = e.edns()
			if do && e.has(entrySigned) {
				src, complete = e.dnssec(), e.has(entryDNSSECComplete)
			}
			if src == "" {
				return nil
			}
			// Cut to size without our options, it may be cut elsewhere
			// with them: the full path knows.
			if (limit != udpSize || extra > 0) && (!complete || len(src)+extra > limit) {
				return nil
			}
		}
		sc.zone = e.stats
		out = append(out[:0], src...)
		copy(out, pkt[:2])
		out[2] |= pkt[2] & 0x01
		copy(out[12:], pkt[12:qend])
		if edns == 0 && fromEDNS {
			binary.BigEndian.PutUint16(out[10:], binary.BigEndian.Uint16(out[10:])-1)
		}
		if edns == 1 {
			// Precomputed replies have no options: the OPT's flags and
			// RDLENGTH end the packet.
			if do {
				out[len(out)-4] |= 0x80
			}
			out = cl.appendOptions(out, &eq, len(out)-2)
		}
		return out
	}
	// No entry: NODATA or NXDOMAIN from the zone of the closest name that
	// exists, or REFUSED for a name outside every zone (no zone's origin,
	// which exists, is above it).
	var fz *fastZone
	var fl uint8
	j := 0
	sc.key[k], sc.key[k+1] = typeName>>8, typeName&0xFF
	for ; j < nl; j++ {
		if s := f.slot(sc.key[sc.labels[j] : k+2]); s != nil {
			fz, fl = f.zones[s.zone], s.data[0]
			break
		}
	}
	sc.key[k], sc.key[k+1] = byte(qtype>>8), byte(qtype) // as completeTCP expects
	if fz == nil {
		return f.refused[edns].write(out, pkt, qend, 0, dns.RcodeRefused, do, limit, &eq, cl)
	}
	if fz.slow {
		return nil
	}
	zi := nl - fz.labels // where the origin starts
	if zi > 0 {
		above := sc.key[sc.labels[zi-1]:sc.labels[zi]]
		for _, c := range fz.clash {
			if bytes.Equal(above, c) {
				return nil
			}
		}
	}
	rcode := dns.RcodeSuccess
	if j == 0 {
		if fl&flagComplex != 0 {
			return nil
		}
	} else {
		if fl&flagNoNX != 0 {
			return nil
		}
		rcode = dns.RcodeNameError
	}
	sc.zone = fz.stats
	if do && fz.signed {
		t := fz.sec.find(sc, k, nl, j)
		if t == nil {
			return nil
		}
		return t.write(out, pkt, qend, sc.labels[j], rcode, do, limit, &eq, cl)
	}
	return fz.neg[edns].write(out, pkt, qend, sc.labels[zi], rcode, do, limit, &eq, cl)
}

// parseName reads the query name of pkt, at least 13 bytes long, into
// sc.key in lower case, with the start of each label in
// sc.labels. It returns the end of the name in pkt (-1 if the name needs
// the full path or leaves no room for type and class), the key's length
// and the number of labels.
func (sc *scratch) parseName(pkt []byte) (off, k, nl int) {
	off = 12
	for {
		l := int(pkt[off])
		if l == 0 {
			break
		}
		if l > 63 || off+1+l >= len(pkt) || k+1+l > 254 || nl == len(sc.labels) {
			return -1, 0, 0
		}
		sc.labels[nl] = k
		nl++
		sc.key[k] = byte(l)
		for i := 1; i <= l; i++ {
			c := fastChars[pkt[off+i]]
			if c == 0 {
				return -1, 0, 0
			}
			sc.key[k+i] = c
		}
		off += 1 + l
		k += 1 + l
	}
	sc.key[k] = 0
	k++
	off++
	if off+4 > len(pkt) {
		return -1, 0, 0
	}
	return off, k, nl
}

// Warming: with many zones, the slot and the entry a query needs are
// rarely in the CPU's cache, and answering waits for each in turn. A
// reader with a batch of packets first asks for the slots of all of
// them (warm), then for their entries (warmEntry), so that the loads run
// side by side, then answers. Measured with `signpost serve` at 10,000
// zones (bench/scale's queries): 2.84 µs of server CPU per query before,
// 2.69 after (medians of 8 interleaved runs), together with tally's
// queued adds.

// coldSize is how much of a table and its entries stays in the CPU's
// caches, or near enough that warming costs more than it saves. In-process
// (BenchmarkBatchManyZones) warming cost 28 ns a query at 100 zones
// (0.3 MB) and 11 at 1,000 (3.7 MB), and saved 60 at 10,000 (34 MB).
const coldSize = 8 << 20

// warm asks the CPU to start loading the table slot that answering pkt
// will look at first, and returns the hash of pkt's key for warmEntry;
// false if pkt has no key (it takes the full path).
func (f *fastIndex) warm(pkt []byte, sc *scratch) (uint64, bool) {
	if len(pkt) < 12+1+4 {
		return 0, false
	}
	off, k, _ := sc.parseName(pkt)
	if off < 0 {
		return 0, false
	}
	sc.key[k], sc.key[k+1] = pkt[off], pkt[off+1]
	h := maphash.Bytes(f.seed, sc.key[:k+2])
	prefetch(unsafe.Pointer(&f.slots[h&uint64(len(f.slots)-1)]))
	return h, true
}

// warmEntry asks the CPU to start loading the start of the entry in the
// first slot whose tag matches h, which answering will compare with its
// key and copy from. It returns that slot, nil if none.
func (f *fastIndex) warmEntry(h uint64) *fastSlot {
	mask := uint64(len(f.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := &f.slots[i]
		if s.data == "" {
			return nil
		}
		if s.tag == uint32(h>>32) {
			prefetch(unsafe.Pointer(unsafe.StringData(s.data)))
			return s
		}
	}
}

// write builds a reply from the template: the query's ID and RD, rcode, the
// query's question, the body with its pointers moved by shift, and our
// options for eq.
func (t *template) write(out, pkt []byte, qend, shift, rcode int, do bool, limit int, eq *ednsReq, cl *sender) []byte {
	extra := 0
	if t.rdlen >= 0 {
		extra = cl.optionsLen(eq)
	}
	if 12+(qend-12)+len(t.body)+extra > limit {
		return nil
	}
	out = append(out[:0], t.header[:]...)
	copy(out, pkt[:2])
	out[2] |= pkt[2] & 0x01
	out[3] |= byte(rcode)
	out = append(out, pkt[12:qend]...)
	base := len(out)
	out = append(out, t.body...)
	for _, p := range t.ptrs {
		v := binary.BigEndian.Uint16(out[base+p:]) + uint16(shift)
		binary.BigEndian.PutUint16(out[base+p:], v)
	}
	if do && t.doPos >= 0 {
		out[base+t.doPos] |= 0x80
	}
	if t.rdlen >= 0 {
		start := base + t.rdlen + 2 // the OPT's RDATA, which ends the reply
		had := len(out) - start
		out = cl.appendOptions(out, eq, base+t.rdlen)
		if had > 0 && len(out)-start > had {
			// Ours go before the template's EDE, as NSD orders them.
			rotate(out[start:], had)
		}
	}
	return out
}

// rotate moves b[k:] in front of b[:k], in place.
func rotate(b []byte, k int) {
	slices.Reverse(b[:k])
	slices.Reverse(b[k:])
	slices.Reverse(b)
}

// completeTCP says whether out, the reply of reply to pkt, is also the
// reply over TCP: nothing in it was cut or left out to fit a UDP limit.
// Replies from templates are whole whenever write returned them.
func (f *fastIndex) completeTCP(pkt, out []byte, sc *scratch) bool {
	if out[2]&0x02 != 0 {
		return false // TC
	}
	n := 12
	for pkt[n] != 0 { // reply has checked every label
		n += 1 + int(pkt[n])
	}
	e, ok := f.lookup(sc.key[:n-12+1+2]) // reply left name and qtype there
	switch {
	case !ok:
		return true
	case pkt[11] == 1 && e.has(entrySigned) && pkt[n+1+4+7]&0x80 != 0: // the OPT's DO bit
		return e.has(entryDNSSECComplete)
	case pkt[11] == 1:
		return e.has(entryEDNSComplete)
	default:
		return e.has(entryPlainComplete)
	}
}
