package dnsserver

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"github.com/miekg/dns"
	"github.com/signpost-dev/signpost/config"
)

// maxUpdateRRs bounds the records UPDATE may keep at one name: a key
// writes ACME DNS-01 challenges, not a database. One order for a name and
// its wildcard needs two values at once; eight leave room for overlapping
// orders and a value a client failed to delete. Each value is one string
// of at most 255 bytes (an ACME value is 43), so one name holds at most
// 8 x 256 bytes of RDATA, and a policy's names bound a key's whole
// footprint: no per-message limit is needed on top. (Unbounded, one
// allowed name grew the process from 15 to 95 MB.)
const maxUpdateRRs = 8

// updSet is what UPDATE wrote at one owner name. Its records form one
// RRset, so they share one TTL: the last add's (RFC 2181 §5.2).
type updSet struct {
	ttl uint32
	rrs []updRR
}

type updRR struct {
	txt []string
	key string // who wrote it: it stays across reloads while that key may write here
}

// update applies an RFC 2136 UPDATE. What a key may do is narrow: add and
// delete TXT records at the _acme-challenge names of its [[update]] policy.
// Everything it writes is kept in memory only; a restart forgets it.
//
// The checks run in RFC 2136 §3 order, after the TSIG check: zone section
// (FORMERR, NOTAUTH), prerequisites (§3.2), prescan (§3.4.1: NOTZONE,
// FORMERR), then permission (REFUSED), so a malformed or misdirected update
// gets the rcode that says so rather than a blanket refusal. The update
// applies whole or not at all.
func (s *Server) update(x *request) {
	req := x.req
	resp := &dns.Msg{MsgHdr: dns.MsgHdr{Id: req.Id, Response: true, Opcode: dns.OpcodeUpdate}}
	if req.IsEdns0() != nil {
		resp.Extra = []dns.RR{&dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: udpSize}}}
	}
	zoneName, rcode, why := "", dns.RcodeSuccess, ""
	switch {
	case len(req.Question) != 1 || req.Question[0].Qtype != dns.TypeSOA:
		rcode, why = dns.RcodeFormatError, "zone section is not one SOA question"
	default:
		resp.Question = req.Question
		zoneName = lower(req.Question[0].Name)
		if x.tsig == nil {
			// Knot's answer to an update its ACL does not admit.
			rcode, why = dns.RcodeNotAuth, "not signed; updates need a TSIG key with an [[update]] policy"
			break
		}
		rcode, why = s.applyUpdate(zoneName, req.Question[0].Qclass, x.keyName(), req.Answer, req.Ns)
	}
	resp.Rcode = rcode
	attrs := []any{"zone", zoneName, "key", x.keyName(), "client", x.peer.String(), "rcode", dns.RcodeToString[rcode]}
	if why != "" {
		attrs = append(attrs, "reason", why)
	}
	// Refusals at debug level only: unsigned updates cost nothing to send.
	level := slog.LevelDebug
	if rcode == dns.RcodeSuccess {
		level = slog.LevelInfo
		s.stats.updates[0].Add(1)
	} else {
		s.stats.updates[1].Add(1)
	}
	s.logger.Log(context.Background(), level, "update", attrs...)
	_ = x.reply(resp)
}

// applyUpdate checks an update against the current zone and policy and, if
// every check passes, applies it. It returns the rcode and, for anything
// but success, why.
func (s *Server) applyUpdate(zoneName string, class uint16, key string, prereqs, updates []dns.RR) (int, string) {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	ix := s.ix.Load()
	z := ix.zones[zoneName]
	if z == nil || class != dns.ClassINET {
		return dns.RcodeNotAuth, "not a zone served here"
	}
	allowed := map[string]bool{}
	for _, p := range s.model.Updates {
		if p.Key.Name == key {
			for _, n := range p.Names {
				allowed[n] = true
			}
		}
	}
	if len(allowed) == 0 {
		return dns.RcodeRefused, "key has no [[update]] policy"
	}
	if rcode, why := checkPrereqs(z, prereqs); rcode != dns.RcodeSuccess {
		return rcode, why
	}
	for _, rr := range updates {
		if rcode, why := prescan(z, rr); rcode != dns.RcodeSuccess {
			return rcode, why
		}
	}
	for _, rr := range updates {
		h := rr.Header()
		name := lower(h.Name)
		switch {
		case h.Rrtype != dns.TypeTXT:
			return dns.RcodeRefused, "only TXT records may be updated, not " + dns.TypeToString[h.Rrtype]
		case !allowed[name]:
			return dns.RcodeRefused, name + " is not among the key's names"
		case z.findCut(name) != nil:
			return dns.RcodeRefused, name + " is below a delegation, where TXT records would not be served"
		case z.belowDNAME(name):
			return dns.RcodeRefused, name + " is below a DNAME, where TXT records would not be served"
		}
		if txt, ok := rr.(*dns.TXT); ok && h.Class == dns.ClassINET && len(txt.Txt) != 1 {
			// One string holds at most 255 bytes on the wire.
			return dns.RcodeRefused, "a TXT record for ACME is one string of at most 255 bytes"
		}
	}

	// Apply to copies, so a failure half-way leaves nothing changed.
	upd := make(map[string]*updSet, len(s.upd))
	for name, set := range s.upd {
		upd[name] = set
	}
	copied := map[string]bool{}
	edit := func(name string) *updSet {
		if !copied[name] {
			n := &updSet{}
			if old := upd[name]; old != nil {
				n.ttl, n.rrs = old.ttl, slices.Clone(old.rrs)
			}
			upd[name] = n
			copied[name] = true
		}
		return upd[name]
	}
	changed := false
	for _, rr := range updates {
		h := rr.Header()
		name := lower(h.Name)
		switch h.Class {
		case dns.ClassINET:
			if nd := z.nodes[name]; nd != nil && nd.get(dns.TypeCNAME) != nil {
				continue // RFC 2136 §3.4.2.2: ignored next to a CNAME
			}
			txt := rr.(*dns.TXT).Txt
			set := edit(name)
			if set.ttl != h.Ttl && len(set.rrs) > 0 {
				changed = true
			}
			set.ttl = h.Ttl
			if slices.ContainsFunc(set.rrs, func(r updRR) bool { return slices.Equal(r.txt, txt) }) {
				continue
			}
			if len(set.rrs) >= maxUpdateRRs {
				// Nothing applied yet: the edits are on copies.
				return dns.RcodeRefused, fmt.Sprintf("more than %d TXT records at %s", maxUpdateRRs, name)
			}
			set.rrs = append(set.rrs, updRR{txt: slices.Clone(txt), key: key})
			changed = true
		case dns.ClassANY: // delete the RRset: what UPDATE wrote there
			set := edit(name)
			changed = changed || len(set.rrs) > 0
			set.rrs = nil
		case dns.ClassNONE: // delete one record
			txt := rr.(*dns.TXT).Txt
			set := edit(name)
			before := len(set.rrs)
			set.rrs = slices.DeleteFunc(set.rrs, func(r updRR) bool { return slices.Equal(r.txt, txt) })
			changed = changed || len(set.rrs) != before
		}
	}
	for name := range copied {
		if len(upd[name].rrs) == 0 {
			delete(upd, name)
		}
	}
	if changed {
		s.upd = upd
		s.rebuild()
	}
	return dns.RcodeSuccess, ""
}

// checkPrereqs evaluates the prerequisite section against z (RFC 2136
// §3.2), the dynamic records included.
func checkPrereqs(z *zone, prereqs []dns.RR) (int, string) {
	type key struct {
		name string
		typ  uint16
	}
	var order []key
	temp := map[key][]dns.RR{}
	for _, rr := range prereqs {
		h := rr.Header()
		name := lower(h.Name)
		if h.Ttl != 0 {
			return dns.RcodeFormatError, "prerequisite with a TTL"
		}
		if !dns.IsSubDomain(z.origin, name) {
			return dns.RcodeNotZone, "prerequisite " + name + " is outside the zone"
		}
		nd := z.nodes[name]
		inUse := nd != nil && len(nd.sets) > 0
		switch h.Class {
		case dns.ClassANY:
			if h.Rdlength != 0 {
				return dns.RcodeFormatError, "prerequisite of class ANY with data"
			}
			if h.Rrtype == dns.TypeANY {
				if !inUse {
					return dns.RcodeNameError, "name " + name + " is not in use"
				}
			} else if nd == nil || nd.get(h.Rrtype) == nil {
				return dns.RcodeNXRrset, "no " + dns.TypeToString[h.Rrtype] + " at " + name
			}
		case dns.ClassNONE:
			if h.Rdlength != 0 {
				return dns.RcodeFormatError, "prerequisite of class NONE with data"
			}
			if h.Rrtype == dns.TypeANY {
				if inUse {
					return dns.RcodeYXDomain, "name " + name + " is in use"
				}
			} else if nd != nil && nd.get(h.Rrtype) != nil {
				return dns.RcodeYXRrset, dns.TypeToString[h.Rrtype] + " exists at " + name
			}
		case dns.ClassINET:
			k := key{name, h.Rrtype}
			if _, ok := temp[k]; !ok {
				order = append(order, k)
			}
			temp[k] = append(temp[k], rr)
		default:
			return dns.RcodeFormatError, "prerequisite of class " + dns.ClassToString[h.Class]
		}
	}
	for _, k := range order {
		var have []dns.RR
		if nd := z.nodes[k.name]; nd != nil {
			if set := nd.get(k.typ); set != nil {
				have = set.rrs
			}
		}
		if !sameSet(have, temp[k]) {
			return dns.RcodeNXRrset, dns.TypeToString[k.typ] + " at " + k.name + " is not the RRset given"
		}
	}
	return dns.RcodeSuccess, ""
}

// sameSet compares two RRsets as sets of data, TTLs aside.
func sameSet(a, b []dns.RR) bool {
	in := func(rr dns.RR, set []dns.RR) bool {
		return slices.ContainsFunc(set, func(x dns.RR) bool { return dns.IsDuplicate(x, rr) })
	}
	for _, rr := range a {
		if !in(rr, b) {
			return false
		}
	}
	for _, rr := range b {
		if !in(rr, a) {
			return false
		}
	}
	return len(a) > 0
}

// prescan checks one update record (RFC 2136 §3.4.1.3).
func prescan(z *zone, rr dns.RR) (int, string) {
	h := rr.Header()
	name := lower(h.Name)
	if !dns.IsSubDomain(z.origin, name) {
		return dns.RcodeNotZone, name + " is outside the zone"
	}
	if _, bare := rr.(*dns.RR_Header); bare && h.Class != dns.ClassANY {
		return dns.RcodeFormatError, "record without data"
	}
	switch h.Class {
	case dns.ClassINET:
		if isMeta(h.Rrtype) {
			return dns.RcodeFormatError, "cannot add a record of type " + dns.TypeToString[h.Rrtype]
		}
	case dns.ClassANY:
		if h.Ttl != 0 || h.Rdlength != 0 || (isMeta(h.Rrtype) && h.Rrtype != dns.TypeANY) {
			return dns.RcodeFormatError, "malformed RRset deletion"
		}
	case dns.ClassNONE:
		if h.Ttl != 0 || isMeta(h.Rrtype) {
			return dns.RcodeFormatError, "malformed record deletion"
		}
	default:
		return dns.RcodeFormatError, "update of class " + dns.ClassToString[h.Class]
	}
	return dns.RcodeSuccess, ""
}

// isMeta says whether t is a QTYPE or meta-TYPE (RFC 6895 §3.1: 128-255,
// and OPT), which no zone holds.
func isMeta(t uint16) bool {
	return t == dns.TypeOPT || (t >= 128 && t <= 255)
}

// keepAllowedUpdates drops the records UPDATE wrote that the current
// model's policies no longer let their key write. The caller holds
// buildMu.
func (s *Server) keepAllowedUpdates() {
	for name, set := range s.upd {
		kept := make([]updRR, 0, len(set.rrs))
		for _, r := range set.rrs {
			if mayUpdate(s.model, r.key, name) {
				kept = append(kept, r)
			}
		}
		switch {
		case len(kept) == 0:
			delete(s.upd, name)
		case len(kept) != len(set.rrs):
			s.upd[name] = &updSet{ttl: set.ttl, rrs: kept}
		}
	}
}

func mayUpdate(m *config.Model, key, name string) bool {
	if m == nil {
		return false
	}
	for _, p := range m.Updates {
		if p.Key.Name == key && slices.Contains(p.Names, name) {
			return true
		}
	}
	return false
}
