package dnsserver

import (
	"strings"
	"time"

	"github.com/miekg/dns"
)

// xfrChunk bounds the records, uncompressed, packed into one transfer
// message: well inside the 64 KiB a TCP message holds, signature included,
// and small enough that a slow secondary still gets steady progress.
const xfrChunk = 16 << 10

const edeProhibited = 18

// transfer answers AXFR and IXFR (RFC 5936, RFC 1995) to the clients
// Model.TransferAllowed admits: by address, and by TSIG key where the
// secondary has one.
//
// IXFR is answered with the whole zone, in AXFR form, which RFC 1995 §4
// allows: the zones are small, and a full copy cannot go wrong the way a
// journal can. A client that is up to date, and any IXFR over UDP, gets the
// single current SOA (RFC 1995 §2), which tells it to come back over TCP if
// it is behind.
func (s *Server) transfer(x *request) {
	req := x.req
	q := req.Question[0]
	ixfr := q.Qtype == dns.TypeIXFR
	resp := &dns.Msg{MsgHdr: dns.MsgHdr{Id: req.Id, Response: true, Opcode: dns.OpcodeQuery,
		RecursionDesired: req.RecursionDesired}, Question: req.Question}
	var opt *dns.OPT
	for _, rr := range req.Extra {
		o, ok := rr.(*dns.OPT)
		if !ok || opt != nil || o.Hdr.Name != "." {
			resp.Rcode = dns.RcodeFormatError
			_ = x.reply(resp)
			return
		}
		opt = o
	}
	var ropt *dns.OPT
	if opt != nil {
		ropt = &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: udpSize}}
		if opt.Do() {
			ropt.SetDo() // RFC 3225 §3: copied into the reply, as NSD does
		}
	}
	fail := func(rcode int, ede uint16) {
		resp.Rcode = rcode
		if ropt != nil {
			if ede != 0 {
				ropt.Option = []dns.EDNS0{&dns.EDNS0_EDE{InfoCode: ede}}
			}
			resp.Extra = []dns.RR{ropt}
		}
		_ = x.reply(resp)
	}
	// An IXFR carries the client's SOA in the authority section; nothing
	// else may carry records (RFC 5936 §2.1, RFC 1995 §3).
	var clientSerial uint32
	if len(req.Answer) != 0 || (!ixfr && len(req.Ns) != 0) || (ixfr && len(req.Ns) != 1) {
		fail(dns.RcodeFormatError, 0)
		return
	}
	if ixfr {
		soa, ok := req.Ns[0].(*dns.SOA)
		if !ok || !strings.EqualFold(soa.Hdr.Name, q.Name) {
			fail(dns.RcodeFormatError, 0)
			return
		}
		clientSerial = soa.Serial
	}
	switch {
	case q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY:
		// Class ANY is the IN zone, as for NSD.
		fail(dns.RcodeRefused, edeNotSupported)
		return
	case !x.tcp && !ixfr:
		// AXFR is TCP only (RFC 5936 §4.2); NSD and Knot both answer
		// NOTIMP over UDP.
		fail(dns.RcodeNotImplemented, 0)
		return
	}
	origin := lower(q.Name)
	z := x.ix.zoneAt(origin)
	if z == nil || x.ix.model == nil || !x.ix.model.TransferAllowed(origin, x.peer.Addr(), x.keyName()) {
		// NSD's answer: REFUSED (Knot says NOTAUTH). Not authoritative
		// for the name and not allowed look the same from outside.
		s.logger.Debug("transfer refused", "zone", origin, "qtype", dns.TypeToString[q.Qtype], "client", x.peer.String(), "key", x.keyName())
		fail(dns.RcodeRefused, edeProhibited)
		return
	}
	resp.Authoritative = true
	soa := z.soa.rrs[0]
	if ixfr && (!x.tcp || !serialAfter(z.serial, clientSerial)) {
		resp.Answer = []dns.RR{soa}
		if ropt != nil {
			resp.Extra = []dns.RR{ropt}
		}
		_ = x.reply(resp)
		return
	}
	start := time.Now()
	// RFC 5936 §2.2: the SOA first and last, the question in the first
	// message only.
	resp.Compress = true
	size, msgs := 0, 0
	flush := func() bool {
		if ropt != nil {
			resp.Extra = []dns.RR{ropt}
		}
		msgs++
		if err := x.reply(resp); err != nil {
			s.logger.Info("transfer aborted", "zone", origin, "client", x.peer.String(), "err", err)
			return false
		}
		resp = &dns.Msg{MsgHdr: resp.MsgHdr, Compress: true}
		size = 0
		return true
	}
	for _, rr := range append(z.records[:len(z.records):len(z.records)], soa) {
		l := dns.Len(rr)
		if size > 0 && size+l > xfrChunk && !flush() {
			return
		}
		resp.Answer = append(resp.Answer, rr)
		size += l
	}
	if !flush() {
		return
	}
	s.stats.transferred(origin)
	s.logger.Info("transfer", "zone", origin, "serial", z.serial, "qtype", dns.TypeToString[q.Qtype], "client", x.peer.String(),
		"key", x.keyName(), "records", len(z.records)+1, "messages", msgs, "seconds", time.Since(start).Seconds())
}
