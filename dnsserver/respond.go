package dnsserver

import (
	"encoding/binary"
	"encoding/hex"
	"slices"

	"github.com/miekg/dns"
)

const (
	// udpSize is the EDNS payload size we advertise and the most we send
	// over UDP (RFC 9715, DNS flag day 2020): no fragmentation.
	udpSize = 1232
	// minUDPSize is the limit without EDNS and the floor of an advertised
	// size (RFC 1035 §4.2.1, RFC 6891 §6.2.5).
	minUDPSize = 512
	maxMsgSize = 65535

	edeNotSupported     = 21
	edeNotAuthoritative = 20
)

// respond answers a parsed query and returns the reply in wire format,
// appended to buf[:0], or nil when the query must be dropped. tcp lifts the
// size limit to 64 KiB.
//
// The reply is built for the query name in lower case and the client's own
// spelling is copied over the question afterwards: every name compressed
// against the question then reads back in the client's case, as from NSD,
// and the bytes are the same whatever case the client sent, which is what
// lets the fast path serve precomputed replies.
func (ix *index) respond(req *dns.Msg, tcp bool, buf []byte) []byte {
	return ix.respondTo(req, tcp, buf, nil)
}

// respondTo is respond for a query from cl (nil if unknown): the reply
// carries our COOKIE and NSID options when the query asks for them
// (cookie.go), as the fast path's does. It sets cl.cookieOK when the
// query's server cookie is valid.
func (ix *index) respondTo(req *dns.Msg, tcp bool, buf []byte, cl *sender) []byte {
	if req.Response {
		return nil // never answer an answer: that is how loops start
	}
	resp := &dns.Msg{MsgHdr: dns.MsgHdr{
		Id:               req.Id,
		Response:         true,
		Opcode:           req.Opcode,
		RecursionDesired: req.RecursionDesired,
	}}
	if req.Opcode != dns.OpcodeQuery {
		// NOTIFY and UPDATE are not served yet (RFC 1035 §4.1.1).
		resp.Rcode = dns.RcodeNotImplemented
		return packTo(resp, buf)
	}
	// Like NSD: one question, nothing in answer or authority, at most one
	// OPT (RFC 6891 §6.1.1) and nothing else in additional.
	if len(req.Question) > 1 {
		resp.RecursionDesired = false // NSD clears every flag here
		resp.Rcode = dns.RcodeFormatError
		return packTo(resp, buf)
	}
	if req.Rcode&0xF != 0 || len(req.Question) == 0 || len(req.Answer) != 0 || len(req.Ns) != 0 {
		resp.Rcode = dns.RcodeFormatError
		return packTo(resp, buf)
	}
	var opt *dns.OPT
	for _, rr := range req.Extra {
		o, ok := rr.(*dns.OPT)
		if !ok || opt != nil || o.Hdr.Name != "." {
			resp.Rcode = dns.RcodeFormatError
			return packTo(resp, buf)
		}
		opt = o
	}
	eq, ok := optionsOf(opt)
	if !ok {
		resp.Rcode = dns.RcodeFormatError
		return packTo(resp, buf)
	}
	// ours adds our options to the reply's OPT, before any EDE, as NSD
	// orders them.
	ours := func(o *dns.OPT) *dns.OPT {
		o.Option = append(cl.options(&eq), o.Option...)
		return o
	}
	q := req.Question[0]
	limit := minUDPSize
	if tcp {
		limit = maxMsgSize
	}
	var ropt *dns.OPT
	if opt != nil {
		ropt = &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: udpSize}}
		if opt.Do() {
			ropt.SetDo()
		}
		if !tcp && opt.UDPSize() > minUDPSize {
			limit = min(int(opt.UDPSize()), udpSize)
		}
	}
	resp.Question = []dns.Question{{Name: lower(q.Name), Qtype: q.Qtype, Qclass: q.Qclass}}
	switch {
	case opt != nil && opt.Version() != 0:
		// RFC 6891 §6.1.3: BADVERS, with the highest version we know (0).
		resp.Rcode = dns.RcodeBadVers
		resp.Extra = []dns.RR{ours(ropt)}
		return packQuestion(resp, q.Name, buf)
	case q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY:
		// We only have class IN data. Like NSD: refused, with EDE 21, and
		// the question echoed for CHAOS only. Class ANY is answered from
		// the IN data (below), as NSD does.
		resp.Rcode = dns.RcodeRefused
		if ropt != nil {
			ropt.Option = []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: edeNotSupported}}
			resp.Extra = []dns.RR{ours(ropt)}
		}
		if q.Qclass == dns.ClassCHAOS {
			return packQuestion(resp, q.Name, buf)
		}
		resp.Question = nil
		return packTo(resp, buf)
	case q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR:
		// Zone transfers are not offered (yet).
		resp.Rcode = dns.RcodeRefused
		if ropt != nil {
			resp.Extra = []dns.RR{ours(ropt)}
		}
		return packQuestion(resp, q.Name, buf)
	}
	a := answer{anyClass: q.Qclass == dns.ClassANY, do: opt != nil && opt.Do()}
	ix.resolve(&a, resp.Question[0].Name, q.Qtype)
	if cl != nil {
		for _, e := range a.entries {
			if e.sec == secAnswer && e.owner != e.set.name { // only wildcard synthesis renames
				cl.wildcard = e.set.name
				break
			}
		}
	}
	resp.Authoritative = a.aa && !a.anyClass
	resp.Rcode = a.rcode
	if a.refused && ropt != nil {
		ropt.Option = []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: edeNotAuthoritative}}
	}
	if a.tooLong && ropt != nil {
		ropt.Option = []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: dns.ExtendedErrorCodeOther, ExtraText: "DNAME expansion became too large"}}
	}
	if ropt != nil {
		ours(ropt)
	}
	encode(resp, &a, ropt, limit)
	return packQuestion(resp, q.Name, buf)
}

// encode fills the sections of resp from a, keeping within limit the way NSD
// does: RRsets go in whole; one that does not fit in the answer or authority
// section sets TC and ends the message (RFC 2181 §9), one that does not fit
// in additional is left out, unless it is referral glue (RFC 9471).
func encode(resp *dns.Msg, a *answer, opt *dns.OPT, limit int) {
	entries := a.entries
	if !slices.IsSortedFunc(entries, func(x, y entry) int { return int(x.sec) - int(y.sec) }) {
		entries = slices.Clone(entries)
		slices.SortStableFunc(entries, func(x, y entry) int { return int(x.sec) - int(y.sec) })
	}
	resp.Compress = true
	for _, e := range entries {
		appendEntry(resp, e, a.do)
	}
	if opt != nil {
		resp.Extra = append(resp.Extra, opt)
	}
	// miekg/dns's Len counts a few bytes too many for RRSIGs; packing
	// gives the size sent, which the fast path's precomputed replies
	// have, so that both paths cut in the same place.
	size := resp.Len
	if a.do || slices.ContainsFunc(entries, func(e entry) bool { return e.set.typ == dns.TypeRRSIG }) {
		size = func() int {
			b, err := resp.Pack()
			if err != nil {
				return resp.Len()
			}
			return len(b)
		}
	}
	if size() <= limit {
		return
	}
	resp.Answer, resp.Ns, resp.Extra = nil, nil, nil
	optLen := 0
	if opt != nil {
		optLen = dns.Len(opt)
	}
	for _, e := range entries {
		an, ns, ex := len(resp.Answer), len(resp.Ns), len(resp.Extra)
		appendEntry(resp, e, a.do)
		if size()+optLen <= limit {
			continue
		}
		resp.Answer, resp.Ns, resp.Extra = resp.Answer[:an], resp.Ns[:ns], resp.Extra[:ex]
		if e.sec <= secOptAuthority || e.glue {
			resp.Truncated = true
			break
		}
	}
	if opt != nil {
		resp.Extra = append(resp.Extra, opt)
	}
}

// appendEntry adds e's records to resp, with their signatures when do is
// set and the zone is signed: an RRset and its RRSIGs go in together, or
// not at all.
func appendEntry(resp *dns.Msg, e entry, do bool) {
	rrs := e.set.rrs
	if do && len(e.set.sigs) > 0 {
		rrs = append(slices.Clip(rrs), e.set.sigs...)
	}
	if e.owner != e.set.name {
		src := rrs
		rrs = make([]dns.RR, len(src))
		for i, rr := range src {
			rrs[i] = dns.Copy(rr)
			rrs[i].Header().Name = e.owner
		}
	}
	switch e.sec {
	case secAnswer:
		resp.Answer = append(resp.Answer, rrs...)
	case secAuthority, secOptAuthority:
		resp.Ns = append(resp.Ns, rrs...)
	default:
		resp.Extra = append(resp.Extra, rrs...)
	}
}

func packTo(resp *dns.Msg, buf []byte) []byte {
	out, err := resp.PackBuffer(buf[:cap(buf)])
	if err != nil {
		return servfail(resp.Id, resp.Opcode, resp.RecursionDesired, buf)
	}
	return out
}

// packQuestion packs resp and writes the client's spelling of the question
// name (name, as unpacked) over the lower-case one packed.
func packQuestion(resp *dns.Msg, name string, buf []byte) []byte {
	out := packTo(resp, buf)
	if len(out) > 12 && binary.BigEndian.Uint16(out[4:]) == 1 {
		// Same length as the lower-case name, so nothing moves.
		_, _ = dns.PackDomainName(name, out, 12, nil, false)
	}
	return out
}

// servfail is the reply when something went wrong on our side.
func servfail(id uint16, opcode int, rd bool, buf []byte) []byte {
	return headerOnly(id, opcode, rd, dns.RcodeServerFailure, buf)
}

// headerOnly is a reply of a header alone, with the query's ID, opcode and
// RD, and rcode.
func headerOnly(id uint16, opcode int, rd bool, rcode int, buf []byte) []byte {
	out := append(buf[:0], make([]byte, 12)...)
	binary.BigEndian.PutUint16(out, id)
	out[2] = 0x80 | byte(opcode&0xF)<<3
	if rd {
		out[2] |= 0x01
	}
	out[3] = byte(rcode & 0xF)
	return out
}

// optionsOf reads what opt (nil if none) asks for beyond the OPT itself. It
// returns false for a COOKIE option of a length RFC 7873 §5.2.2 does not
// allow, which gets FORMERR; the fast path's parseOptions agrees.
func optionsOf(opt *dns.OPT) (ednsReq, bool) {
	var eq ednsReq
	if opt == nil {
		return eq, true
	}
	for _, o := range opt.Option {
		switch o := o.(type) {
		case *dns.EDNS0_NSID:
			eq.nsid = true
		case *dns.EDNS0_COOKIE:
			c, err := hex.DecodeString(o.Cookie)
			if err != nil || !cookieLenOK(len(c)) {
				return eq, false
			}
			if eq.cookie == nil {
				eq.cookie = c
			}
		}
	}
	return eq, true
}
