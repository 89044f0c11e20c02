package dnsserver

import (
	"net/netip"

	"github.com/miekg/dns"
)

// The special path answers what respond cannot answer alone: signed
// messages (TSIG, RFC 8945), zone transfers, UPDATE, NOTIFY, and queries of
// the catalog zone, whose answer depends on who asks. None of it is common,
// so none of it touches the fast path or the plain query path.

// request is one message on the special path and what answering it needs.
type request struct {
	ix   *index
	req  *dns.Msg
	peer netip.AddrPort // the client; zero when unknown
	tcp  bool
	// tsigStatus is the result of verifying req's TSIG, if it has one,
	// with dns.TsigVerifyWithProvider(raw, ix.keys, "", false) on the
	// bytes as received: ix.keys (keyring.Verify) enforces the 300s time
	// window and the replay cache, so every transport must verify through
	// it and through nothing else.
	tsigStatus error
	send       func([]byte) error

	// cl is the sender, for the COOKIE and NSID options of replies that
	// carry an OPT; nil: none.
	cl *sender

	tsig   *dns.TSIG // req's TSIG once verified; replies are signed with its key
	mac    string    // the MAC the next signed reply chains to
	signed int       // replies signed so far
}

// plain says whether respond alone answers req: an unsigned query that is
// not a transfer and not of the catalog zone.
func (ix *index) plain(req *dns.Msg) bool {
	if req.Opcode != dns.OpcodeQuery || req.IsTsig() != nil {
		return false
	}
	if len(req.Question) == 1 {
		q := req.Question[0]
		if q.Qtype == dns.TypeAXFR || q.Qtype == dns.TypeIXFR || ix.inCatalog(q.Name) {
			return false
		}
	}
	return true
}

// keyName is the name of the key req was signed with, "" if unsigned.
func (x *request) keyName() string {
	if x.tsig == nil {
		return ""
	}
	return lower(dns.Fqdn(x.tsig.Hdr.Name))
}

func (s *Server) special(x *request) {
	req := x.req
	if t := req.IsTsig(); t != nil {
		if t.Algorithm == "" {
			// miekg/dns reads a TSIG with empty RDATA as one with empty
			// fields, and a reply signed "with" it cannot be packed
			// right. No TSIG names the root as its algorithm, so the
			// record is malformed: FORMERR, header only, as NSD answers.
			_ = x.send(headerOnly(req.Id, req.Opcode, req.RecursionDesired, dns.RcodeFormatError, nil))
			return
		}
		if x.tsigStatus != nil {
			// Debug: anyone can send these, and a log line each would be a
			// way to fill the disk.
			s.logger.Debug("tsig verification failed", "key", t.Hdr.Name, "client", x.peer.String(), "err", x.tsigStatus)
			x.tsigFailed(t)
			return
		}
		x.tsig, x.mac = t, t.MAC
		req.Extra = req.Extra[: len(req.Extra)-1 : len(req.Extra)-1]
	}
	switch req.Opcode {
	case dns.OpcodeUpdate:
		s.update(x)
	case dns.OpcodeNotify:
		// signpost is never a secondary, so it acts on no NOTIFY. It
		// says so as NSD does, header only: REFUSED with AA for a zone it
		// serves but takes no NOTIFY for, NXDOMAIN for any other name
		// (Knot says NOTAUTH to both).
		m := &dns.Msg{MsgHdr: dns.MsgHdr{Id: req.Id, Response: true, Opcode: dns.OpcodeNotify, Rcode: dns.RcodeNameError}}
		if len(req.Question) == 1 && x.ix.zoneAt(lower(req.Question[0].Name)) != nil {
			m.Authoritative, m.Rcode = true, dns.RcodeRefused
		}
		_ = x.reply(m)
	default:
		if req.Opcode == dns.OpcodeQuery && len(req.Question) == 1 {
			if t := req.Question[0].Qtype; t == dns.TypeAXFR || t == dns.TypeIXFR {
				s.transfer(x)
				return
			}
		}
		x.query()
	}
}

// query answers a query the way respond does, from the catalog zone for a
// client allowed to transfer it, and signs the reply if the query was
// signed.
func (x *request) query() {
	ix := x.ix
	if len(x.req.Question) == 1 && ix.inCatalog(x.req.Question[0].Name) &&
		ix.model.TransferAllowed(ix.model.Catalog.Origin, x.peer.Addr(), x.keyName()) {
		// Secondaries ask for the SOA before transferring; everyone else
		// is refused, as for any name we do not serve: the catalog lists
		// every customer's zone and is nobody else's business.
		ix = ix.catalog
	}
	out := ix.respond(x.req, x.tcp, nil)
	if out == nil {
		return
	}
	if x.tsig == nil {
		_ = x.send(out)
		return
	}
	var m dns.Msg
	if err := m.Unpack(out); err != nil {
		_ = x.send(servfail(x.req.Id, x.req.Opcode, x.req.RecursionDesired, nil))
		return
	}
	m.Compress = true
	if x.tcp {
		_ = x.reply(&m)
		return
	}
	// The signature adds a hundred bytes or so; a reply that no longer
	// fits the client's limit goes out truncated, still signed.
	limit := minUDPSize
	if opt := x.req.IsEdns0(); opt != nil {
		limit = min(max(int(opt.UDPSize()), minUDPSize), udpSize)
	}
	saved := m.Copy()
	b, mac, err := x.ix.keys.sign(&m, x.tsig, x.mac, false, 0)
	if err == nil && len(b) > limit {
		saved.Truncated = true
		saved.Answer, saved.Ns = nil, nil
		saved.Extra = slicesOPT(saved.Extra)
		b, mac, err = x.ix.keys.sign(saved, x.tsig, x.mac, false, 0)
	}
	if err != nil {
		b = servfail(x.req.Id, x.req.Opcode, x.req.RecursionDesired, nil)
	}
	x.mac = mac
	_ = x.send(b)
}

// slicesOPT keeps only the OPT record of an additional section.
func slicesOPT(extra []dns.RR) []dns.RR {
	for _, rr := range extra {
		if o, ok := rr.(*dns.OPT); ok {
			return []dns.RR{o}
		}
	}
	return nil
}

// reply sends m, signed when the request was: each further reply of a
// transfer chains to the one before it (RFC 8945 §5.3.1).
func (x *request) reply(m *dns.Msg) error {
	if o := m.IsEdns0(); o != nil && x.cl != nil && x.signed == 0 {
		if eq, ok := optionsOf(x.req.IsEdns0()); ok {
			o.Option = append(x.cl.options(&eq), o.Option...)
		}
	}
	var b []byte
	var err error
	if x.tsig != nil {
		b, x.mac, err = x.ix.keys.sign(m, x.tsig, x.mac, x.signed > 0, 0)
		x.signed++
	} else {
		b, err = m.Pack()
	}
	if err != nil {
		b = servfail(x.req.Id, x.req.Opcode, x.req.RecursionDesired, nil)
	}
	return x.send(b)
}

// tsigFailed answers a request whose TSIG did not verify: NOTAUTH with the
// TSIG error (RFC 8945 §5.2), the question echoed as Knot does, unsigned
// unless the error is BADTIME.
func (x *request) tsigFailed(t *dns.TSIG) {
	req := x.req
	m := &dns.Msg{MsgHdr: dns.MsgHdr{Id: req.Id, Response: true, Opcode: req.Opcode,
		RecursionDesired: req.RecursionDesired, Rcode: dns.RcodeNotAuth}, Question: req.Question}
	b, _, err := x.ix.keys.sign(m, t, t.MAC, false, tsigError(x.tsigStatus))
	if err != nil {
		b = servfail(req.Id, req.Opcode, req.RecursionDesired, nil)
	}
	_ = x.send(b)
}
