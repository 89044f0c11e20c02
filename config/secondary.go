package config

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// TSIGKey is one [[key]]: a shared secret for TSIG (RFC 8945).
type TSIGKey struct {
	// Name is the key name as sent on the wire: lower case, fully qualified.
	Name string
	// Algorithm is dns.HmacSHA256 or dns.HmacSHA512.
	Algorithm string
	// Secret is the base64 secret, as miekg/dns takes it.
	Secret string
}

// Secondary is one [[secondary]]: a server that copies zones from signpost
// by AXFR and is told about changes by NOTIFY.
type Secondary struct {
	// Notify is where NOTIFY messages go (port 53 unless written).
	Notify netip.AddrPort
	// Key signs NOTIFY and must sign this secondary's transfer requests; nil
	// means transfers from its address need no key (not recommended).
	Key *TSIGKey
	// Zones are the origins this secondary copies; nil means every zone,
	// and the catalog zone when there is one.
	Zones []string
}

// UpdatePolicy is one [[update]]: what a key may change by RFC 2136 UPDATE.
type UpdatePolicy struct {
	Key *TSIGKey
	// Names are the owners the key may add TXT records at and delete them
	// from: "_acme-challenge.<name>." for each configured name.
	Names []string
}

// Secondaries returns the secondaries that copy the zone with origin.
func (m *Model) Secondaries(origin string) []*Secondary {
	var out []*Secondary
	for _, s := range m.SecondaryServers {
		if s.Zones == nil || slices.Contains(s.Zones, origin) {
			out = append(out, s)
		}
	}
	return out
}

// TransferAllowed reports whether a transfer of origin may go to a client
// at addr that signed its request with keyName ("" when unsigned; the
// caller must have verified the signature). A secondary with a key must
// use it; one without may transfer unsigned.
func (m *Model) TransferAllowed(origin string, addr netip.Addr, keyName string) bool {
	for _, s := range m.Secondaries(origin) {
		if s.Notify.Addr() != addr.Unmap() {
			continue
		}
		if s.Key == nil || s.Key.Name == keyName {
			return true
		}
	}
	return false
}

// Key returns the TSIG key with name (case-insensitive, trailing dot
// optional), or nil.
func (m *Model) Key(name string) *TSIGKey {
	name = fqdn(name)
	for _, k := range m.Keys {
		if k.Name == name {
			return k
		}
	}
	return nil
}

type keyTable struct {
	Name       string `toml:"name"`
	Algorithm  string `toml:"algorithm"`
	Secret     string `toml:"secret"`
	SecretFile string `toml:"secret_file"`
}

type secondaryTable struct {
	Address string   `toml:"address"`
	Key     string   `toml:"key"`
	Zones   []string `toml:"zones"`
}

type updateTable struct {
	Key   string   `toml:"key"`
	Names []string `toml:"names"`
}

var algorithms = map[string]string{"hmac-sha256": dns.HmacSHA256, "hmac-sha512": dns.HmacSHA512}

func buildKeys(ps *problems, f *file, m *Model) {
	for i, kt := range f.Key {
		key := fmt.Sprintf("key[%d]", i)
		k := &TSIGKey{Name: fqdn(kt.Name)}
		if kt.Name == "" {
			ps.errorf(key+".name", "missing; name the key as the other side does, e.g. name = \"xfr.example.com\"")
			continue
		} else if _, ok := dns.IsDomainName(kt.Name); !ok {
			ps.errorf(key+".name", "%q is not a DNS name; TSIG key names are domain names, e.g. \"xfr.example.com\"", kt.Name)
			continue
		}
		if m.Key(k.Name) != nil {
			ps.errorf(key+".name", "%q is defined twice; remove one", kt.Name)
			continue
		}
		alg, ok := algorithms[cmpOr(strings.ToLower(kt.Algorithm), "hmac-sha256")]
		if !ok {
			ps.errorf(key+".algorithm", "%q is not supported; use \"hmac-sha256\" (default) or \"hmac-sha512\"", kt.Algorithm)
			continue
		}
		k.Algorithm = alg
		secret := kt.Secret
		switch {
		case kt.Secret != "" && kt.SecretFile != "":
			ps.errorf(key+".secret", "both secret and secret_file are set; keep one")
			continue
		case kt.SecretFile != "":
			data, err := os.ReadFile(kt.SecretFile)
			if err != nil {
				ps.errorf(key+".secret_file", "cannot be read (%v); write the path of a file holding the base64 secret", err)
				continue
			}
			secret = strings.TrimSpace(string(data))
		case kt.Secret == "":
			ps.errorf(key+".secret", "missing; set secret (base64, e.g. from `openssl rand -base64 32`) or secret_file")
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(secret)
		if err != nil {
			ps.errorf(key+".secret", "is not base64; generate one with `openssl rand -base64 32`")
			continue
		}
		if len(raw) < 16 {
			ps.errorf(key+".secret", "is %d bytes; use at least 16 random bytes (`openssl rand -base64 32`)", len(raw))
			continue
		}
		k.Secret = secret
		m.Keys = append(m.Keys, k)
	}
}

func buildSecondaries(ps *problems, f *file, m *Model) {
	origins := map[string]bool{}
	for _, z := range m.Zones {
		origins[z.Origin] = true
	}
	if m.DNS.Catalog != "" {
		origins[m.DNS.Catalog] = true
	}
	for i, st := range f.Secondary {
		key := fmt.Sprintf("secondary[%d]", i)
		s := &Secondary{}
		ap, err := netip.ParseAddrPort(st.Address)
		if err != nil {
			a, aerr := netip.ParseAddr(st.Address)
			if aerr != nil || a.Zone() != "" {
				ps.errorf(key+".address", "%q is not an IP address; write the secondary's address, e.g. \"198.51.100.53\" or \"198.51.100.53:53\"", st.Address)
				continue
			}
			ap = netip.AddrPortFrom(a, 53)
		}
		s.Notify = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if st.Key != "" {
			if s.Key = m.Key(st.Key); s.Key == nil {
				ps.errorf(key+".key", "%q is not a [[key]] name; define it or fix the name", st.Key)
				continue
			}
		}
		for j, z := range st.Zones {
			o := fqdn(z)
			if !origins[o] {
				ps.errorf(fmt.Sprintf("%s.zones[%d]", key, j), "%q is not a zone of this file; list origins of [[zone]] tables", z)
				continue
			}
			s.Zones = append(s.Zones, o)
		}
		if s.Key == nil {
			ps.warnf(key+".key", "no key: anyone who can send from %s may copy the zones; set key to a [[key]] name", s.Notify.Addr())
		}
		m.SecondaryServers = append(m.SecondaryServers, s)
	}
}

func buildUpdates(ps *problems, f *file, m *Model) {
	for i, ut := range f.Update {
		key := fmt.Sprintf("update[%d]", i)
		p := &UpdatePolicy{Key: m.Key(ut.Key)}
		if ut.Key == "" {
			ps.errorf(key+".key", "missing; updates are accepted only when signed, so name a [[key]]")
			continue
		}
		if p.Key == nil {
			ps.errorf(key+".key", "%q is not a [[key]] name; define it or fix the name", ut.Key)
			continue
		}
		if len(ut.Names) == 0 {
			ps.errorf(key+".names", "missing; list the names whose _acme-challenge TXT records this key may change, e.g. names = [\"chat.example.com\"]")
		}
		for j, n := range ut.Names {
			nkey := fmt.Sprintf("%s.names[%d]", key, j)
			name := strings.TrimPrefix(strings.TrimSuffix(strings.ToLower(n), "."), "*.")
			name = strings.TrimPrefix(name, "_acme-challenge.")
			if p := hostnameProblem(name); p != "" {
				ps.errorf(nkey, "%q %s", n, p)
				continue
			}
			owner := "_acme-challenge." + name + "."
			if m.ZoneFor(owner) == nil {
				ps.errorf(nkey, "%q is outside every zone, so its _acme-challenge records cannot be served here", n)
				continue
			}
			p.Names = append(p.Names, owner)
		}
		m.Updates = append(m.Updates, p)
	}
}

// buildCatalog makes the RFC 9432 catalog zone listing every zone, so a
// secondary that follows it picks up new zones with no change of its own.
func buildCatalog(ps *problems, m *Model, o Options) {
	if m.DNS.Catalog == "" {
		return
	}
	origin := m.DNS.Catalog
	if m.ZoneFor(origin) != nil {
		ps.errorf("dns.catalog", "%q is inside a zone signpost serves; use a name of its own such as \"catalog.signpost.invalid\"", origin)
		return
	}
	hdr := func(name string, t uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: 0}
	}
	z := &zoneBuild{Zone: &Zone{Origin: origin}, key: "dns.catalog"}
	// RFC 9432 §4.1: the NS record is required by the zone format but never
	// used; "invalid." is the conventional target.
	z.records = append(z.records,
		sourced{&dns.NS{Hdr: hdr(origin, dns.TypeNS), Ns: "invalid."}, "dns.catalog"},
		sourced{&dns.TXT{Hdr: hdr("version."+origin, dns.TypeTXT), Txt: []string{"2"}}, "dns.catalog"},
	)
	for _, member := range m.Zones {
		// A member's unique ID must stay stable while the zone exists; a
		// hash of its name is, and needs no state.
		sum := sha256.Sum256([]byte(member.Origin))
		id := hex.EncodeToString(sum[:8])
		z.records = append(z.records, sourced{&dns.PTR{Hdr: hdr(id+".zones."+origin, dns.TypePTR), Ptr: member.Origin}, "dns.catalog"})
	}
	if prev := z.finish(m, o, []string{"invalid."}); prev != nil {
		z.Zone = prev
	}
	m.Catalog = z.Zone
}

func parseCatalog(ps *problems, s string) string {
	if s == "" {
		return ""
	}
	name := strings.ToLower(strings.TrimSuffix(s, "."))
	if p := originProblem(name); p != "" {
		ps.errorf("dns.catalog", "%q %s", s, p)
		return ""
	}
	return name + "."
}
