package config

import (
	"encoding/hex"
	"fmt"
	"net/netip"
)

// Defaults of [dns.rrl], as NSD's rrl-ratelimit, rrl-slip,
// rrl-ipv4-prefix-length and rrl-ipv6-prefix-length.
const (
	defaultRRLRate       = 200
	defaultRRLSlip       = 2
	defaultRRLIPv4Prefix = 24
	defaultRRLIPv6Prefix = 56

	maxRRLRate = 100000
	maxRRLSlip = 10 // as BIND's slip
	maxNSID    = 128
)

// rrlTable is [dns.rrl] as written; nil fields take the defaults.
type rrlTable struct {
	Rate       *int     `toml:"rate"`
	Slip       *int     `toml:"slip"`
	IPv4Prefix *int     `toml:"ipv4_prefix"`
	IPv6Prefix *int     `toml:"ipv6_prefix"`
	Exempt     []string `toml:"exempt"`
}

// buildEDNS checks and derives dns.nsid, the cookie secrets and [dns.rrl].
func buildEDNS(ps *problems, f *file, m *Model) {
	d := f.DNS
	if len(d.NSID) > maxNSID {
		ps.errorf("dns.nsid", "is %d bytes; use at most %d", len(d.NSID), maxNSID)
	} else {
		for _, c := range []byte(d.NSID) {
			if c < 0x20 || c > 0x7e {
				ps.errorf("dns.nsid", "%q has a byte that is not printable ASCII; use letters, digits and punctuation, e.g. the host name", d.NSID)
				break
			}
		}
	}
	m.DNS.NSID = d.NSID
	m.DNS.DNSSEC = d.DNSSEC
	m.DNS.CookieSecret = cookieSecret(ps, "dns.cookie_secret", d.CookieSecret)
	m.DNS.CookieSecretPrevious = cookieSecret(ps, "dns.cookie_secret_previous", d.CookieSecretPrevious)
	if d.CookieSecretPrevious != "" && d.CookieSecret == "" {
		ps.errorf("dns.cookie_secret_previous", "is set without dns.cookie_secret; set cookie_secret to the secret cookies are made with now")
	}

	r := RRL{Rate: defaultRRLRate, Slip: defaultRRLSlip, IPv4Prefix: defaultRRLIPv4Prefix, IPv6Prefix: defaultRRLIPv6Prefix}
	if t := d.RRL; t != nil {
		intKey(ps, "dns.rrl.rate", t.Rate, 0, maxRRLRate, "0 (off) or responses per second,", &r.Rate)
		intKey(ps, "dns.rrl.slip", t.Slip, 0, maxRRLSlip, "0 (drop all over the rate) or n to send every n-th truncated,", &r.Slip)
		intKey(ps, "dns.rrl.ipv4_prefix", t.IPv4Prefix, 1, 32, "a prefix length,", &r.IPv4Prefix)
		intKey(ps, "dns.rrl.ipv6_prefix", t.IPv6Prefix, 1, 128, "a prefix length,", &r.IPv6Prefix)
		for i, s := range t.Exempt {
			key := fmt.Sprintf("dns.rrl.exempt[%d]", i)
			p, err := netip.ParsePrefix(s)
			if err != nil {
				a, err := netip.ParseAddr(s)
				if err != nil || a.Zone() != "" {
					ps.errorf(key, "%q is not an address prefix; write e.g. \"192.0.2.0/24\", \"2001:db8::/56\" or one address", s)
					continue
				}
				a = a.Unmap()
				p = netip.PrefixFrom(a, a.BitLen())
			}
			if p.Addr().Is4In6() {
				ps.errorf(key, "%q is an IPv4-mapped IPv6 prefix; write the IPv4 prefix", s)
				continue
			}
			if p != p.Masked() {
				ps.errorf(key, "%q has bits set after the prefix length; write %q", s, p.Masked().String())
				continue
			}
			r.Exempt = append(r.Exempt, p)
		}
	}
	m.DNS.RRL = r
}

// cookieSecret decodes a cookie secret; it never repeats the value in a
// message, which would put a secret in logs.
func cookieSecret(ps *problems, key, s string) []byte {
	if s == "" {
		return nil
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 16 {
		ps.errorf(key, "is not 32 hex digits (16 bytes); generate one with \"openssl rand -hex 16\"")
		return nil
	}
	return b
}

// intKey checks an optional integer key against [lo, hi] and stores it in
// dst when valid.
func intKey(ps *problems, key string, v *int, lo, hi int, what string, dst *int) {
	if v == nil {
		return
	}
	if *v < lo || *v > hi {
		ps.errorf(key, "%d is out of range; use %s from %d to %d", *v, what, lo, hi)
		return
	}
	*dst = *v
}
