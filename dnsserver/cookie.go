package dnsserver

import (
	"encoding/binary"
	"encoding/hex"
	"math/bits"
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dev/signpost/config"
)

// DNS cookies (RFC 7873) with the interoperable server cookie of RFC 9018:
//
//	server cookie = version 1 | reserved (3 bytes, 0) | timestamp (4 bytes) | hash (8 bytes)
//	hash = SipHash-2-4(secret, client cookie | version | reserved | timestamp | client IP)
//
// so that several signpost instances (or other servers implementing RFC
// 9018) sharing one secret accept each other's cookies. A server cookie is
// valid when its hash verifies under the current or the previous secret and
// its timestamp is at most an hour old and at most five minutes in the
// future (RFC 9018 §4.3). A valid cookie under half an hour old made with the
// current secret is echoed; any other gets a fresh one. Cookies are never
// enforced (no BADCOOKIE), as in NSD and Knot by default: a client without a
// valid server cookie is answered normally and is subject to rate limiting;
// one with a valid server cookie has proved its address and is not.

const (
	cookieVersion   = 1
	cookieMaxAge    = 3600 // seconds: older server cookies are invalid
	cookieMaxFuture = 300  // seconds: clock skew tolerated between instances
	cookieRenew     = 1800 // seconds: older valid cookies are replaced
	// serverCookieLen is our server cookie's length; a client cookie is
	// 8 bytes, and the whole option 8 (client only) or 16 to 40.
	serverCookieLen = 16
	clientCookieLen = 8
	cookieOptLen    = 4 + clientCookieLen + serverCookieLen
)

// ednsConf is what the model says about EDNS options, in the form the
// answering paths use.
type ednsConf struct {
	secret, previous [2]uint64 // SipHash keys
	hasPrevious      bool
	nsid             []byte // the NSID option (code, length, data) to send; nil: none
}

// newEDNSConf takes the secrets and NSID from d; random is the secret used
// when d has none.
func newEDNSConf(d *config.DNS, random [16]byte) *ednsConf {
	c := &ednsConf{secret: sipKey(random)}
	if len(d.CookieSecret) == 16 {
		c.secret = sipKey([16]byte(d.CookieSecret))
	}
	if len(d.CookieSecretPrevious) == 16 {
		c.previous, c.hasPrevious = sipKey([16]byte(d.CookieSecretPrevious)), true
	}
	if d.NSID != "" {
		c.nsid = binary.BigEndian.AppendUint16(nil, dns.EDNS0NSID)
		c.nsid = binary.BigEndian.AppendUint16(c.nsid, uint16(len(d.NSID)))
		c.nsid = append(c.nsid, d.NSID...)
	}
	return c
}

func sipKey(k [16]byte) [2]uint64 {
	return [2]uint64{binary.LittleEndian.Uint64(k[:8]), binary.LittleEndian.Uint64(k[8:])}
}

// sender is who sent a query, as far as answering it needs to know: cookies
// are computed for its address. A nil *sender means unknown: the reply then
// carries neither COOKIE nor NSID, on the fast path and the full path alike.
type sender struct {
	addr netip.Addr // unmapped; the zero Addr gets no cookie
	now  uint32     // unix seconds, for server cookie timestamps
	edns *ednsConf  // secrets and NSID; nil: no cookie, no NSID

	// cookieOK is set by answering: the query carried a valid server
	// cookie, so the client has proved its address.
	cookieOK bool
	// wildcard is set by the full path when the answer was synthesized
	// from a wildcard: its owner, which rate limiting counts the answer
	// under, so that random names under one wildcard share a bucket.
	wildcard string
}

// newSender describes the sender of a query received at t; edns may be nil.
func newSender(ap netip.AddrPort, t time.Time, edns *ednsConf) sender {
	return sender{addr: ap.Addr().Unmap(), now: uint32(t.Unix()), edns: edns}
}

// ednsReq is what a query's OPT asks for beyond the OPT itself.
type ednsReq struct {
	cookie []byte // the first COOKIE option's data, nil if none
	nsid   bool   // an NSID option was present
}

// optStatus says what parsing a query's EDNS options found.
type optStatus uint8

const (
	optOK      optStatus = iota
	optFull              // something only the full path handles
	optFormErr           // a malformed COOKIE option: FORMERR (RFC 7873 §5.2.2)
)

// cookieLenOK says whether n is a valid length for COOKIE option data: a
// client cookie alone, or with a server cookie of 8 to 32 bytes.
func cookieLenOK(n int) bool { return n == clientCookieLen || n >= 16 && n <= 40 }

// parseOptions reads the options of a query's OPT RDATA without allocating.
// Options miekg/dns parses with rules of its own (and may reject, making the
// query FORMERR on the full path) send the query there; PADDING and unknown
// options are ignored. Padding replies is for encrypted transports (RFC 8467
// §4); we have none, so ignoring it is what the RFC asks.
func parseOptions(rdata []byte, q *ednsReq) optStatus {
	for len(rdata) > 0 {
		if len(rdata) < 4 {
			return optFull
		}
		code := binary.BigEndian.Uint16(rdata)
		n := int(binary.BigEndian.Uint16(rdata[2:]))
		if 4+n > len(rdata) {
			return optFull
		}
		data := rdata[4 : 4+n]
		rdata = rdata[4+n:]
		switch code {
		case dns.EDNS0NSID:
			q.nsid = true
		case dns.EDNS0COOKIE:
			if !cookieLenOK(n) {
				return optFormErr
			}
			if q.cookie == nil {
				q.cookie = data
			}
		case dns.EDNS0PADDING:
		case dns.EDNS0LLQ, dns.EDNS0UL, dns.EDNS0ESU, dns.EDNS0DAU, dns.EDNS0DHU, dns.EDNS0N3U,
			dns.EDNS0SUBNET, dns.EDNS0EXPIRE, dns.EDNS0TCPKEEPALIVE, dns.EDNS0EDE,
			dns.EDNS0REPORTING, dns.EDNS0ZONEVERSION:
			return optFull
		}
	}
	return optOK
}

// optionsLen is the length of the options appendOptions adds for q.
func (cl *sender) optionsLen(q *ednsReq) int {
	if cl == nil || cl.edns == nil {
		return 0
	}
	n := 0
	if q.nsid {
		n += len(cl.edns.nsid)
	}
	if q.cookie != nil && cl.addr.IsValid() {
		n += cookieOptLen
	}
	return n
}

// appendOptions appends our reply's options for q to out (NSID, then
// COOKIE), the last bytes of an OPT RR whose RDLENGTH is at rdlenAt, and
// adds their length to it. It sets cl.cookieOK.
func (cl *sender) appendOptions(out []byte, q *ednsReq, rdlenAt int) []byte {
	n := len(out)
	if cl == nil || cl.edns == nil {
		return out
	}
	if q.nsid {
		out = append(out, cl.edns.nsid...)
	}
	if q.cookie != nil && cl.addr.IsValid() {
		out = binary.BigEndian.AppendUint16(out, dns.EDNS0COOKIE)
		out = binary.BigEndian.AppendUint16(out, clientCookieLen+serverCookieLen)
		var c [clientCookieLen + serverCookieLen]byte
		cl.cookieOK = cl.edns.cookie(&c, q.cookie, cl.addr, cl.now)
		out = append(out, c[:]...)
	}
	if n != len(out) {
		binary.BigEndian.PutUint16(out[rdlenAt:], binary.BigEndian.Uint16(out[rdlenAt:])+uint16(len(out)-n))
	}
	return out
}

// options is appendOptions for the full path: our reply's options for q as
// miekg/dns options, in the same order.
func (cl *sender) options(q *ednsReq) []dns.EDNS0 {
	if cl == nil || cl.edns == nil {
		return nil
	}
	var opts []dns.EDNS0
	if q.nsid && cl.edns.nsid != nil {
		opts = append(opts, &dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: hex.EncodeToString(cl.edns.nsid[4:])})
	}
	if q.cookie != nil && cl.addr.IsValid() {
		var c [clientCookieLen + serverCookieLen]byte
		cl.cookieOK = cl.edns.cookie(&c, q.cookie, cl.addr, cl.now)
		opts = append(opts, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: hex.EncodeToString(c[:])})
	}
	return opts
}

// cookie writes the COOKIE option data of our reply to dst: the client
// cookie of in (the query's option data), then its server cookie if valid
// and fresh, else a new one. It reports whether in held a valid server
// cookie.
func (c *ednsConf) cookie(dst *[clientCookieLen + serverCookieLen]byte, in []byte, addr netip.Addr, now uint32) (valid bool) {
	copy(dst[:clientCookieLen], in)
	// The reserved bytes are hashed as received: RFC 9018 §4.2 lets
	// future servers use them, and its example A.3 has them set.
	if srv := in[clientCookieLen:]; len(srv) == serverCookieLen && srv[0] == cookieVersion {
		age := int32(now - binary.BigEndian.Uint32(srv[4:])) // serial number arithmetic (RFC 9018 §4.3)
		if age >= -cookieMaxFuture && age <= cookieMaxAge {
			mac := binary.LittleEndian.Uint64(srv[8:])
			switch {
			case cookieHash(c.secret, in[:clientCookieLen], srv[:8], addr) == mac:
				if age <= cookieRenew {
					copy(dst[clientCookieLen:], srv)
					return true
				}
				valid = true
			case c.hasPrevious && cookieHash(c.previous, in[:clientCookieLen], srv[:8], addr) == mac:
				valid = true
			}
		}
	}
	s := dst[clientCookieLen:]
	s[0], s[1], s[2], s[3] = cookieVersion, 0, 0, 0
	binary.BigEndian.PutUint32(s[4:], now)
	binary.LittleEndian.PutUint64(s[8:], cookieHash(c.secret, in[:clientCookieLen], s[:8], addr))
	return valid
}

// cookieHash is the RFC 9018 hash of a server cookie whose first 8 bytes
// (version, reserved, timestamp) are head, as SipHash's little-endian
// output.
func cookieHash(key [2]uint64, client, head []byte, addr netip.Addr) uint64 {
	var b [clientCookieLen + 8 + 16]byte
	copy(b[:], client)
	copy(b[8:], head)
	n := 16
	if addr.Is4() {
		a := addr.As4()
		n += copy(b[16:], a[:])
	} else {
		a := addr.As16()
		n += copy(b[16:], a[:])
	}
	return siphash24(key[0], key[1], b[:n])
}

// siphash24 is SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast
// short-input PRF", 2012) of p under the key k0|k1 (little-endian halves).
func siphash24(k0, k1 uint64, p []byte) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13) ^ v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16) ^ v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21) ^ v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17) ^ v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	last := uint64(len(p)) << 56
	for ; len(p) >= 8; p = p[8:] {
		m := binary.LittleEndian.Uint64(p)
		v3 ^= m
		round()
		round()
		v0 ^= m
	}
	for i, c := range p {
		last |= uint64(c) << (8 * i)
	}
	v3 ^= last
	round()
	round()
	v0 ^= last
	v2 ^= 0xff
	round()
	round()
	round()
	round()
	return v0 ^ v1 ^ v2 ^ v3
}
