package dnsserver

import (
	"github.com/miekg/dns"
	"github.com/signpost-dev/signpost/config"
)

// zoneState is what a zone's served serial was computed from.
type zoneState struct {
	src    *config.Zone
	dyn    string // dynKey of the dynamic records served
	gen    int    // the signer's generation of the zone (dnssec.go)
	serial uint32
}

// serialAfter reports whether a comes after b in RFC 1982 serial number
// arithmetic. (Exactly half-way round is undefined; it counts as not
// after, so we move on to b+1, which is defined.)
func serialAfter(a, b uint32) bool {
	return a != b && int32(a-b) > 0
}

// rebuild picks every zone's serial, tells OnSerials, publishes a new index
// and NOTIFYs the secondaries of the zones whose serial changed. The caller
// holds buildMu.
//
// config picks a zone's serial from its content and the previous model; the
// dynamic records are ours to account for. A zone whose configuration and
// dynamic records are what they were keeps its serial; any other gets the
// configured one or, if that is not after the serial served so far,
// that plus one. So the served serial strictly increases with every change,
// whatever the configured one does.
func (s *Server) rebuild() {
	dyn := s.dynamic()
	var zones []*config.Zone
	if s.model != nil {
		zones = append(zones, s.model.Zones...)
		if s.model.Catalog != nil {
			zones = append(zones, s.model.Catalog)
		}
	}
	serials := make(map[string]uint32, len(zones))
	var changed []string
	for _, mz := range zones {
		key := dynKey(mz.Origin, dyn)
		gen := s.signer.generation(mz.Origin)
		serial := mz.SOA.Serial
		st, seen := s.zstate[mz.Origin]
		if seen {
			if key == st.dyn && gen == st.gen && sameZone(mz, st.src) {
				serial = st.serial
			} else if !serialAfter(serial, st.serial) {
				serial = st.serial + 1
			}
		}
		if !seen || serial != st.serial {
			changed = append(changed, mz.Origin)
		}
		serials[mz.Origin] = serial
		s.zstate[mz.Origin] = zoneState{src: mz, dyn: key, gen: gen, serial: serial}
	}
	if len(changed) > 0 && s.opts.OnSerials != nil {
		s.opts.OnSerials(s.serialsLocked())
	}
	ix := buildIndex(s.model, dyn, serials, s.ix.Load(), s.signer, &s.stats)
	s.signer.mu.Lock()
	errs := s.signer.errs
	s.signer.errs = nil
	s.signer.mu.Unlock()
	for _, err := range errs {
		s.logger.Error("dnssec", "err", err)
	}
	s.ix.Store(ix)
	for _, origin := range changed {
		if secs := s.model.Secondaries(origin); len(secs) > 0 {
			z := ix.zoneAt(origin)
			if z == nil {
				continue
			}
			s.notify.send(origin, z.soa.rrs[0].(*dns.SOA), secs)
		}
	}
}

// Serials returns the serial of every zone served since New, the catalog
// zone included, by origin: the map Options.OnSerials receives.
func (s *Server) Serials() map[string]uint32 {
	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	return s.serialsLocked()
}

func (s *Server) serialsLocked() map[string]uint32 {
	out := make(map[string]uint32, len(s.zstate))
	for origin, st := range s.zstate {
		out[origin] = st.serial
	}
	return out
}

// sameZone reports whether a and b hold the same records, the SOA serial
// aside. config keeps a zone's serial while its content stays the same and
// changes it otherwise, so zones with different serials are different; the
// records are compared only when the serials agree, which guards against a
// model parsed without Options.Previous.
func sameZone(a, b *config.Zone) bool {
	if a == b {
		return true
	}
	if a.SOA.Serial != b.SOA.Serial || len(a.Records) != len(b.Records) {
		return false
	}
	for i, ra := range a.Records {
		rb := b.Records[i]
		if ra.Header().Ttl != rb.Header().Ttl || !dns.IsDuplicate(ra, rb) {
			return false
		}
	}
	return true
}

// dynamic returns the dynamic records by owner name: the ACME values first,
// then the records written by UPDATE.
func (s *Server) dynamic() map[string][]dns.RR {
	dyn := make(map[string][]dns.RR, len(s.txt)+len(s.upd))
	for name, values := range s.txt {
		for _, v := range values {
			dyn[name] = append(dyn[name], &dns.TXT{
				Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: acmeTTL},
				Txt: []string{v},
			})
		}
	}
	for name, set := range s.upd {
		for _, r := range set.rrs {
			dyn[name] = append(dyn[name], &dns.TXT{
				Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: set.ttl},
				Txt: r.txt,
			})
		}
	}
	return dyn
}
