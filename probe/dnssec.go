package probe

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// sigWarnBefore is how long before a signature expires probe warns: a
// signer that refreshes signatures (Knot and signpost: 7 days ahead) never
// comes this close.
const sigWarnBefore = 3 * 24 * time.Hour

// dnssecCheck checks a signed zone the way a validating resolver sees it:
// the parent's DS matches a DNSKEY, and the signatures over the DNSKEY
// RRset, the SOA, the SRV names and their denial of existence verify with
// the zone's keys and are not about to expire. An unsigned zone (no
// DNSKEY) is not checked, and adds nothing to the report.
func (p *prober) dnssecCheck(ctx context.Context, zone, host string) {
	r := p.rep
	km, err := p.askDO(ctx, zone, dns.TypeDNSKEY)
	if err != nil {
		return
	}
	var keys []*dns.DNSKEY
	for _, rr := range km.Answer {
		if k, ok := rr.(*dns.DNSKEY); ok && strings.EqualFold(k.Hdr.Name, zone) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return
	}
	var tags []string
	for _, k := range keys {
		tags = append(tags, fmt.Sprintf("%d (algorithm %d)", k.KeyTag(), k.Algorithm))
	}
	r.add(SectionDNS, StatusInfo, "", "DNSSEC: zone %s is signed, DNSKEY key tags %s", zone, strings.Join(tags, ", "))

	// The chain from the parent.
	var want []string
	for _, k := range keys {
		if k.Flags&dns.SEP != 0 {
			want = append(want, k.ToDS(dns.SHA256).String())
		}
	}
	fix := "give the registrar the DS record `signpost zone` prints: " + strings.Join(want, "; ")
	dm, err := p.askDO(ctx, zone, dns.TypeDS)
	var ds []*dns.DS
	if err == nil {
		for _, rr := range dm.Answer {
			if d, ok := rr.(*dns.DS); ok && strings.EqualFold(d.Hdr.Name, zone) {
				ds = append(ds, d)
			}
		}
	}
	switch {
	case err != nil:
		r.add(SectionDNS, StatusWarn, "", "DNSSEC: DS %s: no answer (%v)", zone, err)
	case len(ds) == 0:
		r.add(SectionDNS, StatusWarn, fix,
			"DNSSEC: zone %s is signed but its parent publishes no DS record: validating resolvers treat it as unsigned", zone)
	default:
		var matched []string
		for _, d := range ds {
			for _, k := range keys {
				if k.KeyTag() == d.KeyTag && k.Algorithm == d.Algorithm {
					if own := k.ToDS(d.DigestType); own != nil && strings.EqualFold(own.Digest, d.Digest) {
						matched = append(matched, fmt.Sprint(d.KeyTag))
					}
				}
			}
		}
		if len(matched) == 0 {
			var have []string
			for _, d := range ds {
				have = append(have, fmt.Sprint(d.KeyTag))
			}
			r.add(SectionDNS, StatusFail, "replace the DS at the registrar: "+strings.Join(want, "; "),
				"DNSSEC: the parent's DS (key tag %s) matches none of the zone's DNSKEYs: validating resolvers answer SERVFAIL for every name in %s",
				strings.Join(have, ", "), zone)
		} else {
			r.add(SectionDNS, StatusOK, "", "DNSSEC: the parent's DS matches DNSKEY key tag %s", strings.Join(matched, ", "))
		}
	}

	// Signatures, and signed denial for the SRV names.
	var problems []string
	var earliest time.Time
	sets := 0
	check := func(m *dns.Msg) {
		for _, sec := range [][]dns.RR{m.Answer, m.Ns} {
			n, first, probs := verifySets(sec, zone, keys, p.now())
			sets += n
			problems = append(problems, probs...)
			if !first.IsZero() && (earliest.IsZero() || first.Before(earliest)) {
				earliest = first
			}
		}
	}
	check(km)
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{zone, dns.TypeSOA}, {"_matrix-fed._tcp." + host, dns.TypeSRV}, {"_matrix._tcp." + host, dns.TypeSRV}} {
		m, err := p.askDO(ctx, q.name, q.qtype)
		if err != nil {
			continue
		}
		check(m)
		if len(m.Answer) == 0 && (m.Rcode == dns.RcodeNameError || m.Rcode == dns.RcodeSuccess) && !hasDenial(m) {
			problems = append(problems, fmt.Sprintf("%s %s is %s with no NSEC or NSEC3 proof", q.name, dns.TypeToString[q.qtype], dns.RcodeToString[m.Rcode]))
		}
	}
	sort.Strings(problems)
	switch {
	case len(problems) > 0:
		r.add(SectionDNS, StatusFail, "re-sign the zone (signpost does by itself: check it runs and its logs), and make every nameserver serve the signed copy",
			"DNSSEC: %s; validating resolvers answer SERVFAIL", strings.Join(problems, "; "))
	case earliest.Sub(p.now()) < sigWarnBefore:
		r.add(SectionDNS, StatusWarn, "re-sign the zone now; a signer should refresh signatures about a week before they expire",
			"DNSSEC: a signature in %s expires %s, in %s", zone, earliest.UTC().Format(time.RFC3339), earliest.Sub(p.now()).Round(time.Minute))
	default:
		r.add(SectionDNS, StatusOK, "", "DNSSEC: %d RRsets verify with the zone's keys, SRV denial included; the first signature expires in %.1f days",
			sets, earliest.Sub(p.now()).Hours()/24)
	}
}

// askDO asks the resolver for name/qtype with the DO bit, so the answer
// carries signatures, and the CD bit, so that a validating resolver hands
// over data that fails validation for us to say why. It adds nothing to
// the report.
func (p *prober) askDO(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(fqdn(name), qtype)
	m.RecursionDesired = true
	m.CheckingDisabled = true
	m.SetEdns0(1232, true)
	return p.exchange(ctx, p.resolver, m)
}

// bogusZone is for when the resolver fails to find the zone of host: if it
// finds it with checking disabled, DNSSEC validation is what fails, and the
// zone is returned for dnssecCheck to say why.
func (p *prober) bogusZone(ctx context.Context, host string) string {
	m, err := p.askDO(ctx, host, dns.TypeSOA)
	if err != nil || (m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError) {
		return ""
	}
	for _, sec := range [][]dns.RR{m.Answer, m.Ns} {
		for _, rr := range sec {
			if s, ok := rr.(*dns.SOA); ok {
				zone := strings.ToLower(s.Hdr.Name)
				p.rep.add(SectionDNS, StatusFail, "see the DNSSEC lines below",
					"DNSSEC: the resolver fails (SERVFAIL) on %s, but answers with checking disabled: the zone %s does not validate", host, zone)
				return zone
			}
		}
	}
	return ""
}

func hasDenial(m *dns.Msg) bool {
	for _, rr := range m.Ns {
		if t := rr.Header().Rrtype; t == dns.TypeNSEC || t == dns.TypeNSEC3 {
			return true
		}
	}
	return false
}

// verifySets verifies every RRset of sec owned inside zone against keys at
// now. It returns how many verified, when the first of their signatures
// expires, and what is wrong with the others.
func verifySets(sec []dns.RR, zone string, keys []*dns.DNSKEY, now time.Time) (int, time.Time, []string) {
	type setKey struct {
		name string
		typ  uint16
	}
	sets := map[setKey][]dns.RR{}
	sigs := map[setKey][]*dns.RRSIG{}
	var order []setKey
	for _, rr := range sec {
		h := rr.Header()
		if !dns.IsSubDomain(zone, strings.ToLower(h.Name)) {
			continue
		}
		if sig, ok := rr.(*dns.RRSIG); ok {
			k := setKey{strings.ToLower(h.Name), sig.TypeCovered}
			sigs[k] = append(sigs[k], sig)
			continue
		}
		k := setKey{strings.ToLower(h.Name), h.Rrtype}
		if sets[k] == nil {
			order = append(order, k)
		}
		sets[k] = append(sets[k], rr)
	}
	var problems []string
	var first time.Time
	ok := 0
	for _, k := range order {
		what := k.name + " " + dns.TypeToString[k.typ]
		if k.typ == dns.TypeNS && k.name != strings.ToLower(zone) {
			continue // a delegation: the child signs it
		}
		if len(sigs[k]) == 0 {
			problems = append(problems, what+" is not signed")
			continue
		}
		var err error
		verified := false
		for _, sig := range sigs[k] {
			var key *dns.DNSKEY
			for _, dk := range keys {
				if dk.KeyTag() == sig.KeyTag && dk.Algorithm == sig.Algorithm {
					key = dk
				}
			}
			switch {
			case key == nil:
				err = fmt.Errorf("signed by key tag %d, which is not in the DNSKEY RRset", sig.KeyTag)
			case !sig.ValidityPeriod(now):
				err = fmt.Errorf("signature valid %s to %s only", time.Unix(int64(sig.Inception), 0).UTC().Format(time.RFC3339), time.Unix(int64(sig.Expiration), 0).UTC().Format(time.RFC3339))
			default:
				if err = sig.Verify(key, sets[k]); err == nil {
					verified = true
					exp := time.Unix(int64(sig.Expiration), 0)
					if first.IsZero() || exp.Before(first) {
						first = exp
					}
				}
			}
		}
		if verified {
			ok++
		} else {
			problems = append(problems, fmt.Sprintf("%s: %v", what, err))
		}
	}
	return ok, first, problems
}
