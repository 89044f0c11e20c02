package config

import (
	"strings"
	"testing"
)

// TestReachAccepted: setups the reach checks must leave alone, because
// the server name, its SRV record and its target all resolve.
func TestReachAccepted(t *testing.T) {
	tests := []struct{ name, records, server string }{
		{"target is a server name with addresses", `"hs 300 IN A 198.51.100.7"`, "chat.example.com:8448"},
		{"target outside every zone", `"hs 300 IN A 198.51.100.7"`, "matrix.example.org:443"},
		{"target under a wildcard", `"*.hosts 300 IN A 198.51.100.7"`, "hs.hosts.chat.example.com:443"},
		{"target under a wildcard alias", `"*.m 300 IN CNAME lb.example.org."`, "x.m.chat.example.com:443"},
		{"target under a DNAME", `"old 300 IN DNAME new.example.org."`, "hs.old.chat.example.com:443"},
		{"target deep under a DNAME", `"old 300 IN DNAME new.example.org."`, "a.hs.old.chat.example.com:443"},
		{"target behind a cut", `"hosts 300 IN NS ns.example.net."`, "hs.hosts.chat.example.com:443"},
		{"target is an in-zone nameserver with glue", `"hs 300 IN A 198.51.100.7"`, "ns1.chat.example.com:443"},
		{"cut beside the server name", `"hs 300 IN A 198.51.100.7", "team 300 IN NS ns.example.net."`, "hs.chat.example.com:443"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := strings.NewReplacer(
				`records = ["hs 300 IN A 198.51.100.7"]`, "records = ["+tt.records+"]",
				`server = "hs.chat.example.com:443"`, `server = "`+tt.server+`"`,
			).Replace(base)
			m, err := parse(t, text)
			if err != nil {
				t.Fatalf("%s\n%v", text, err)
			}
			if len(m.Warnings) != 0 {
				t.Errorf("warnings %v, want none", m.Warnings)
			}
		})
	}
}

// TestReachProblems: the cases the golden files do not show.
func TestReachProblems(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"SRV fallback behind a cut",
			strings.Replace(base, `records = ["hs 300 IN A 198.51.100.7"]`, `records = ["hs 300 IN A 198.51.100.7", "_tcp 300 IN NS ns.example.net."]`, 1),
			`signpost.toml:9: zone[0].records[1]: delegates "_tcp.chat.example.com." to other servers, and the SRV fallback "_matrix-fed._tcp.chat.example.com." of delegation[0] is below it, so resolvers get a referral instead of it; remove this NS record, or set srv_fallback = false in delegation[0]`},
		{"server name at the cut",
			strings.Replace(base, `records = ["hs 300 IN A 198.51.100.7"]`, `records = ["hs 300 IN A 198.51.100.7", "team 300 IN NS ns.example.net."]`, 1) +
				"[[delegation]]\nserver_name = \"x.team.chat.example.com\"\nserver = \"hs.chat.example.com:443\"\nclient = \"https://hs.chat.example.com\"\n",
			`signpost.toml:9: zone[0].records[1]: delegates "team.chat.example.com." to other servers, and server name "x.team.chat.example.com" (delegation[1]) is at or below it: its A/AAAA and _matrix-fed._tcp SRV records sit behind the cut, so resolvers get a referral instead of them; remove this NS record, or serve the server name from the zone it delegates to`},
		{"target under a wildcard with no address",
			strings.NewReplacer(`records = ["hs 300 IN A 198.51.100.7"]`, `records = ["*.m 300 IN TXT \"x\""]`, `server = "hs.chat.example.com:443"`, `server = "x.m.chat.example.com:443"`).Replace(base),
			`signpost.toml:13: delegation[0].server: host "x.m.chat.example.com" is in zone "chat.example.com." but has no A or AAAA record there, so remote servers get no address (NODATA) for it and cannot reach the homeserver; add one to zone[0].records, e.g. "x.m 300 IN A 198.51.100.7" with the homeserver's address`},
		{"catalog above a zone, several levels up",
			strings.Replace(base, "[dns]", "[dns]\ncatalog = \"com\"", 1),
			`signpost.toml:3: dns.catalog: "com." is a parent of zone[0] ("chat.example.com."), so secondaries asking for that zone's SOA are answered from the catalog with NXDOMAIN and never transfer it; use a name outside every zone, such as "catalog.signpost.invalid"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.text)
			if err == nil {
				t.Fatalf("no error, want %s", tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("got\n\t%s\nwant\n\t%s", got, tt.want)
			}
		})
	}
}

// TestHandWrittenAddressInNames: a server name whose address is written in
// records gets no warning when acme.names asks for its certificate, by
// name or by a wildcard one label up.
func TestHandWrittenAddressInNames(t *testing.T) {
	const text = `[dns]
listen = ["127.0.0.1:8053"]
nameservers = ["ns1.example.net"]

[acme]
mode = "self-signed"
names = [%s]

[[zone]]
origin = "chat.example.com"
records = ["@ 300 IN A 203.0.113.10", "hs 300 IN A 198.51.100.7"]

[[delegation]]
server_name = "chat.example.com"
server = "hs.chat.example.com:443"
client = "https://hs.chat.example.com"
`
	for _, tt := range []struct {
		names    string
		warnings int
	}{
		{`"chat.example.com"`, 0},
		{`"*.example.com"`, 0},
		{`"www.chat.example.com"`, 1},
		{`"*.chat.example.com"`, 1},
	} {
		t.Run(tt.names, func(t *testing.T) {
			m, err := parse(t, strings.Replace(text, "%s", tt.names, 1))
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Warnings) != tt.warnings {
				t.Errorf("got warnings %v, want %d", m.Warnings, tt.warnings)
			}
		})
	}
}
