package dnsserver

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dev/signpost/config"
)

// Response rate limiting (RRL) keeps signpost from being a useful amplifier
// for anyone who spoofs a victim's address. It applies to UDP replies only:
// TCP needs a handshake, so its source is real, and so is the source of a
// query with a valid server cookie (see cookie.go); neither is limited.
//
// Every UDP reply is accounted to a bucket keyed, as in NSD and Knot, by
//
//   - the source prefix (dns.rrl.ipv4_prefix, default /24; ipv6_prefix, /56),
//   - the kind of reply: answer, NXDOMAIN, NODATA, referral or error,
//   - a name: the query name for answers, the zone (the owner of the SOA in
//     authority) for NXDOMAIN and NODATA, the delegation for referrals, and
//     none for errors, so that random names under one zone, or refused
//     names outside every zone, share one bucket.
//
// As in NSD and Knot, answers synthesized from a wildcard count under the
// wildcard, not the query name, so that random names under one wildcard
// share a bucket (the full path, which makes them, says so).
//
// A bucket allows dns.rrl.rate replies per second with a burst of one
// second's worth: the generic cell rate algorithm, a token bucket stored as
// one "theoretical arrival time" (TAT). Knot's rate-limit is a token bucket
// too; NSD counts per second with a decaying average. A reply over the rate
// is dropped, except every dns.rrl.slip-th, which goes out truncated (TC,
// header and question and OPT, no records) so that a real resolver behind
// the spoofed address retries over TCP and gets its answer; that reply
// carries our cookie, with which the resolver is exempt from then on. NSD
// slips at random one in rrl-slip and leaves the OPT out; Knot, like us,
// counts.
//
// The table has a fixed number of buckets (rrlBuckets), allocated once, so
// memory stays the same under a flood from millions of spoofed sources.
// Each bucket is one 64-bit word, updated with compare-and-swap, so readers
// on every core account without locks or allocation:
//
//	tag (12 bits) | slip counter (4 bits) | TAT in µs since start (48 bits)
//
// Two keys that land in one bucket share it while it is busy (which can
// only make limiting stricter); an idle bucket (TAT in the past) is taken
// over by the next key that needs it. Keys are hashed with a per-server
// random seed, so an attacker cannot aim at a victim's bucket.

const (
	rrlBucketBits = 18
	rrlBuckets    = 1 << rrlBucketBits // 2 MiB of buckets
	rrlTATBits    = 48
	rrlTATMask    = 1<<rrlTATBits - 1
)

// Reply kinds for RRL.
const (
	rrlAnswer byte = iota
	rrlNXDomain
	rrlNoData
	rrlReferral
	rrlError
	rrlWildcard // an answer synthesized from a wildcard
)

// rrlAction is what to do with a reply.
type rrlAction uint8

const (
	rrlSend rrlAction = iota
	rrlDrop
	rrlSlip
)

// rrlConf is the model's [dns.rrl] in the form accounting uses.
type rrlConf struct {
	interval int64 // µs between replies at the rate
	tau      int64 // µs a bucket may run ahead of the clock: the burst
	slip     uint64
	v4, v6   int
	exempt   []netip.Prefix
}

// rrl is one server's rate limiter; its table outlives reloads.
type rrl struct {
	conf    atomic.Pointer[rrlConf] // nil: off
	start   time.Time               // monotonic zero of TATs
	seed    maphash.Seed
	buckets []atomic.Uint64 // allocated when first configured on
}

func newRRL() *rrl {
	return &rrl{start: time.Now(), seed: maphash.MakeSeed()}
}

// configure applies a model's settings. It runs under Server.buildMu.
func (r *rrl) configure(c config.RRL) {
	if c.Rate <= 0 {
		r.conf.Store(nil)
		return
	}
	if r.buckets == nil {
		r.buckets = make([]atomic.Uint64, rrlBuckets)
	}
	interval := int64(time.Second/time.Microsecond) / int64(c.Rate)
	r.conf.Store(&rrlConf{
		interval: interval,
		tau:      int64(time.Second/time.Microsecond) - interval,
		slip:     uint64(c.Slip),
		v4:       c.IPv4Prefix,
		v6:       c.IPv6Prefix,
		exempt:   c.Exempt,
	})
}

// account counts reply, about to go to addr at t, and says what to do with
// it; wildcard is the wildcard that synthesized the answer, if one did. It
// never allocates.
func (r *rrl) account(reply []byte, addr netip.Addr, wildcard string, t time.Time) rrlAction {
	c := r.conf.Load()
	if c == nil || !addr.IsValid() || len(reply) < 12 {
		return rrlSend
	}
	for _, p := range c.exempt {
		if p.Contains(addr) {
			return rrlSend
		}
	}
	var key [1 + 16 + 1 + 255]byte
	n := 0
	if addr.Is4() {
		key[0] = 4
		a := addr.As4()
		n = 1 + copy(key[1:], a[:])
		maskBits(key[1:n], c.v4)
	} else {
		key[0] = 6
		a := addr.As16()
		n = 1 + copy(key[1:], a[:])
		maskBits(key[1:n], c.v6)
	}
	kind, name := rrlClassify(reply)
	key[n] = kind
	n++
	if kind == rrlAnswer && wildcard != "" {
		key[n-1] = rrlWildcard
		n += copy(key[n:], wildcard) // lower case already, at most 255 bytes
	} else {
		for _, ch := range name {
			if 'A' <= ch && ch <= 'Z' {
				ch += 'a' - 'A'
			}
			key[n] = ch
			n++
		}
	}
	h := maphash.Bytes(r.seed, key[:n])
	return r.take(&r.buckets[h&(rrlBuckets-1)], h>>(64-12), c, int64(t.Sub(r.start)/time.Microsecond)+1)
}

// take charges one reply to bucket b for the key with the given tag at now
// (µs since start).
func (r *rrl) take(b *atomic.Uint64, tag uint64, c *rrlConf, now int64) rrlAction {
	for {
		old := b.Load()
		btag, ctr, tat := old>>52, old>>48&0xF, int64(old&rrlTATMask)
		if btag != tag && tat <= now {
			btag, ctr, tat = tag, 0, now // an idle bucket: ours now
		}
		tat = max(tat, now)
		if tat-now <= c.tau {
			if b.CompareAndSwap(old, btag<<52|ctr<<48|uint64(tat+c.interval)&rrlTATMask) {
				return rrlSend
			}
			continue
		}
		if c.slip == 0 {
			return rrlDrop
		}
		ctr = (ctr + 1) % c.slip
		if b.CompareAndSwap(old, btag<<52|ctr<<48|uint64(tat)&rrlTATMask) {
			if ctr == 0 {
				return rrlSlip
			}
			return rrlDrop
		}
	}
}

// maskBits clears the bits of a after the first bits.
func maskBits(a []byte, bits int) {
	for i := range a {
		switch {
		case bits >= 8:
			bits -= 8
		case bits > 0:
			a[i] &= 0xFF << (8 - bits)
			bits = 0
		default:
			a[i] = 0
		}
	}
}

// rrlClassify reads a reply's kind and the name it counts under (a slice
// of reply, in the client's letter case).
func rrlClassify(reply []byte) (kind byte, name []byte) {
	rcode := reply[3] & 0xF
	qd := binary.BigEndian.Uint16(reply[4:])
	an := binary.BigEndian.Uint16(reply[6:])
	ns := binary.BigEndian.Uint16(reply[8:])
	if qd != 1 || rcode != dns.RcodeSuccess && rcode != dns.RcodeNameError {
		return rrlError, nil
	}
	qend := nameEnd(reply, 12)
	if qend < 0 {
		return rrlError, nil
	}
	qname := reply[12:qend]
	switch {
	case rcode == dns.RcodeNameError:
		kind = rrlNXDomain
	case an > 0:
		return rrlAnswer, qname
	case ns == 0:
		return rrlError, nil
	case reply[2]&0x04 != 0: // AA
		kind = rrlNoData
	default:
		kind = rrlReferral
	}
	if an != 0 || ns == 0 {
		return kind, nil
	}
	// The owner of the first authority record: the zone, or the
	// delegation. It is compressed against the query name when it is one
	// of its suffixes, which is the common case.
	off := qend + 4
	if off+2 > len(reply) {
		return kind, nil
	}
	if reply[off]&0xC0 == 0xC0 {
		p := int(binary.BigEndian.Uint16(reply[off:]) & 0x3FFF)
		if p >= 12 && p < qend {
			return kind, reply[p:qend]
		}
		return kind, nil
	}
	if e := nameEnd(reply, off); e > 0 {
		return kind, reply[off:e]
	}
	return kind, nil
}

// nameEnd returns the offset after the uncompressed name at off in b, or
// -1 if there is none.
func nameEnd(b []byte, off int) int {
	for off < len(b) {
		l := int(b[off])
		switch {
		case l == 0:
			return off + 1
		case l > 63:
			return -1
		}
		off += 1 + l
	}
	return -1
}

// slipReply turns reply, in place, into the truncated reply RRL sends
// instead of dropping: its header with TC set, its question, and its OPT
// record (the last record, when there is one), nothing else.
func slipReply(reply []byte) []byte {
	if len(reply) < 12 {
		return reply
	}
	qd := binary.BigEndian.Uint16(reply[4:])
	count := int(binary.BigEndian.Uint16(reply[6:])) + int(binary.BigEndian.Uint16(reply[8:])) + int(binary.BigEndian.Uint16(reply[10:]))
	end := 12
	if qd == 1 {
		if e := nameEnd(reply, 12); e > 0 && e+4 <= len(reply) {
			end = e + 4
		}
	}
	// Find the last record; it is the OPT if there is one.
	optStart, optEnd := -1, -1
	off := end
	for range count {
		start := off
		off = skipNameSafe(reply, off)
		if off < 0 || off+10 > len(reply) {
			break
		}
		rdlen := int(binary.BigEndian.Uint16(reply[off+8:]))
		if off+10+rdlen > len(reply) {
			break
		}
		if binary.BigEndian.Uint16(reply[off:]) == dns.TypeOPT {
			optStart, optEnd = start, off+10+rdlen
		}
		off += 10 + rdlen
	}
	out := reply[:end]
	ar := uint16(0)
	if optStart >= 0 {
		out = append(out, reply[optStart:optEnd]...) // moves left: copy is safe
		ar = 1
	}
	if end == 12 {
		binary.BigEndian.PutUint16(out[4:], 0)
	}
	out[2] |= 0x02 // TC
	binary.BigEndian.PutUint16(out[6:], 0)
	binary.BigEndian.PutUint16(out[8:], 0)
	binary.BigEndian.PutUint16(out[10:], ar)
	return out
}

// skipNameSafe is skipName with bounds checks: the offset after the name
// at off, or -1.
func skipNameSafe(b []byte, off int) int {
	for off < len(b) {
		l := int(b[off])
		switch {
		case l == 0:
			return off + 1
		case l&0xC0 == 0xC0:
			if off+2 > len(b) {
				return -1
			}
			return off + 2
		case l > 63:
			return -1
		}
		off += 1 + l
	}
	return -1
}
