package config

import (
	"fmt"
	"slices"
	"strings"
)

// DNSOff reports whether the file turns signpost's DNS server off, with
// dns.listen = [] written out empty: documents only, as in scenario S3
// behind an organisation's web server. Leaving dns.listen out keeps the
// default, [::]:53.
func (m *Model) DNSOff() bool { return len(m.DNS.Listen) == 0 }

// checkDNSOff, when DNS is off, leaves dns-01 out of the challenges (it
// needs signpost's DNS server to publish its TXT records) and warns about
// each key that needs the DNS server, naming the fix. A challenge list
// that is left empty is an error in mode "acme": no certificate could be
// obtained.
func checkDNSOff(ps *problems, f *file, m *Model) {
	if !m.DNSOff() {
		return
	}
	const on = "or list this host's addresses in dns.listen to turn DNS on"
	acme := m.ACME.Mode == ModeACME
	if i := slices.Index(f.ACME.Challenges, ChallengeDNS01); i >= 0 && acme {
		ps.warnf(fmt.Sprintf("acme.challenges[%d]", i), "%q needs signpost's DNS server, which dns.listen = [] turns off, so it is left out; remove it, %s", ChallengeDNS01, on)
	}
	dropped := slices.DeleteFunc(slices.Clone(m.ACME.Challenges), func(c string) bool { return c == ChallengeDNS01 })
	if len(dropped) == 0 && len(m.ACME.Challenges) > 0 && acme {
		ps.errorf("acme.challenges", "lists only %q, which needs signpost's DNS server, and dns.listen = [] turns it off, so no certificate can be obtained; add %q or %q, %s", ChallengeDNS01, ChallengeTLSALPN01, ChallengeHTTP01, on)
	}
	m.ACME.Challenges = dropped
	for i, n := range f.ACME.Names {
		if strings.HasPrefix(n, "*.") && acme {
			ps.warnf(fmt.Sprintf("acme.names[%d]", i), "%q is a wildcard, which only %q can obtain, and dns.listen = [] turns signpost's DNS server off; name the hosts one by one, %s", n, ChallengeDNS01, on)
		}
	}
	for i := range f.Secondary {
		ps.warnf(fmt.Sprintf("secondary[%d]", i), "gets no NOTIFY and no zone transfer: dns.listen = [] turns signpost's DNS server off; remove this [[secondary]], %s", on)
	}
	for i := range f.Update {
		ps.warnf(fmt.Sprintf("update[%d]", i), "no UPDATE can arrive: dns.listen = [] turns signpost's DNS server off; remove this [[update]], %s", on)
	}
	if f.DNS.Catalog != "" {
		ps.warnf("dns.catalog", "no secondary can transfer the catalog zone: dns.listen = [] turns signpost's DNS server off; remove dns.catalog, %s", on)
	}
}
