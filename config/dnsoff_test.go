package config

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// TestDNSOff: dns.listen = [] turns DNS off, a missing dns.listen keeps the
// default, and dns-01 is left out of the challenges when DNS is off.
func TestDNSOff(t *testing.T) {
	const docs = `
[[delegation]]
server_name = "example.com"
server      = "matrix.example.com:443"
client      = "https://matrix.example.com"
srv_fallback = false
`
	// Every case has this warning, on the line of server_name.
	s3 := func(line int) string {
		return fmt.Sprintf(`signpost.toml:%d: delegation[0].server_name: "example.com" is outside every zone: signpost serves its documents only (scenario S3), and its A/AAAA records live elsewhere; it gets no certificate, as the web server in front terminates TLS; if the name's address is this host instead, add "example.com" to acme.names`, line)
	}
	for _, tc := range []struct {
		name, text string
		off        bool
		listen     []string
		challenges []string
		problems   []string // errors, or else warnings
	}{
		{name: "absent", text: docs,
			listen: []string{"[::]:53"}, challenges: []string{"tls-alpn-01", "http-01", "dns-01"}, problems: []string{s3(3)}},
		{name: "empty", text: "[dns]\nlisten = []\n" + docs,
			off: true, listen: []string{}, challenges: []string{"tls-alpn-01", "http-01"}, problems: []string{s3(5)}},
		{name: "listed", text: "[dns]\nlisten = [\"127.0.0.1:53\"]\n" + docs,
			listen: []string{"127.0.0.1:53"}, challenges: []string{"tls-alpn-01", "http-01", "dns-01"}, problems: []string{s3(5)}},
		{name: "dns-01 among others", text: "[dns]\nlisten = []\n[acme]\nchallenges = [\"dns-01\", \"http-01\"]\n" + docs,
			off: true, listen: []string{}, challenges: []string{"http-01"},
			problems: []string{`signpost.toml:4: acme.challenges[0]: "dns-01" needs signpost's DNS server, which dns.listen = [] turns off, so it is left out; remove it, or list this host's addresses in dns.listen to turn DNS on`, s3(7)}},
		{name: "dns-01 alone", text: "[dns]\nlisten = []\n[acme]\nchallenges = [\"dns-01\"]\n" + docs,
			problems: []string{`signpost.toml:4: acme.challenges: lists only "dns-01", which needs signpost's DNS server, and dns.listen = [] turns it off, so no certificate can be obtained; add "tls-alpn-01" or "http-01", or list this host's addresses in dns.listen to turn DNS on`}},
		{name: "dns-01 alone, self-signed", text: "[dns]\nlisten = []\n[acme]\nmode = \"self-signed\"\nchallenges = [\"dns-01\"]\n" + docs,
			off: true, listen: []string{}, challenges: []string{}, problems: []string{s3(8)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parse(t, tc.text)
			var got []string
			if err != nil {
				for _, p := range err.(Errors) {
					got = append(got, p.String())
				}
			} else {
				for _, p := range m.Warnings {
					got = append(got, p.String())
				}
				if m.DNSOff() != tc.off || !reflect.DeepEqual(m.DNS.Listen, tc.listen) || !reflect.DeepEqual(m.ACME.Challenges, tc.challenges) {
					t.Errorf("DNSOff %v, listen %q, challenges %q; want %v, %q, %q", m.DNSOff(), m.DNS.Listen, m.ACME.Challenges, tc.off, tc.listen, tc.challenges)
				}
			}
			if !reflect.DeepEqual(got, tc.problems) {
				t.Errorf("problems\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(tc.problems, "\n\t"))
			}
		})
	}
}

// TestDNSOffZoneChecks: with DNS off no record is served, so a zone needs
// no dns.nameservers, and the checks of what resolvers would see (an SRV
// target with no address, a catalog above a zone) do not run.
func TestDNSOffZoneChecks(t *testing.T) {
	const text = `[dns]
listen  = []
catalog = "com"

[[zone]]
origin    = "example.com"
addresses = ["203.0.113.10"]

[[delegation]]
server_name = "example.com"
server      = "matrix.example.com:443"
client      = "https://matrix.example.com"
`
	for _, tc := range []struct{ name, text, mname string }{
		{"no nameservers", text, "example.com."},
		// No catalog here: the SRV target check runs only on a file
		// without errors, and this one has nameservers.
		{"nameservers", strings.Replace(text, `catalog = "com"`, `nameservers = ["ns1.example.net"]`, 1), "ns1.example.net."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parse(t, tc.text)
			if err != nil {
				t.Fatalf("got %v, want no errors", err)
			}
			var got []string
			for _, p := range m.Warnings {
				got = append(got, p.String())
			}
			var want []string
			if strings.Contains(tc.text, "catalog") {
				want = []string{`signpost.toml:3: dns.catalog: no secondary can transfer the catalog zone: dns.listen = [] turns signpost's DNS server off; remove dns.catalog, or list this host's addresses in dns.listen to turn DNS on`}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("warnings\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
			}
			if len(m.Zones) != 1 || m.Zones[0].SOA.Ns != tc.mname {
				t.Errorf("got zones %v, want example.com. with SOA MNAME %s", m.Zones, tc.mname)
			}
		})
	}
}
