package config

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/pelletier/go-toml/v2"
)

var testNow = func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }

const base = `
[dns]
nameservers = ["ns1.chat.example.com"]
hostmaster = "hostmaster@example.com"

[[zone]]
origin = "chat.example.com"
addresses = ["203.0.113.10", "2001:db8::10"]
records = ["hs 300 IN A 198.51.100.7"]

[[delegation]]
server_name = "chat.example.com"
server = "hs.chat.example.com:443"
client = "https://hs.chat.example.com"
`

func parse(t *testing.T, text string) (*Model, error) {
	t.Helper()
	return Parse("signpost.toml", []byte(text), Options{Now: testNow})
}

// TestProblems shows the exact message of every validation rule.
func TestProblems(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []string
	}{
		{"unknown key with suggestion", "[dns]\ntll = \"1h\"\n",
			[]string{`signpost.toml:2: dns.tll: unknown key; did you mean "ttl"?`}},
		{"unknown key without suggestion", "[http]\nfrobnicate = 1\n",
			[]string{`signpost.toml:2: http.frobnicate: unknown key; expected one of listen, plain_listen, root_redirect, server_max_age, client_max_age`}},
		{"unknown key in second array table", base + "[[zone]]\norigin = \"other.example\"\naddreses = []\n",
			[]string{`signpost.toml:17: zone[1].addreses: unknown key; did you mean "addresses"?`}},
		{"unknown keys in inline tables", "http = { listen = \"[::]:443\", lisen = \"x\" }\n" + base + "[delegation.support]\ncontacts = [\n  { role = \"m.role.admin\", email = \"a@example.com\" },\n  { role = \"m.role.admin\", emial = \"b@example.com\" },\n]\n",
			[]string{
				`signpost.toml:1: http.lisen: unknown key; did you mean "listen"?`,
				`signpost.toml:19: delegation[0].support.contacts[1].emial: unknown key; did you mean "email"?`,
				`signpost.toml:19: delegation[0].support.contacts[1]: has neither matrix_id nor email; the spec requires at least one of them`,
			}},
		{"wrong type", "[dns]\nttl = 3600\n",
			[]string{`signpost.toml:2: dns.ttl: cannot decode TOML integer into struct field config.dnsTable.TTL of type string`}},
		{"toml syntax", "[dns\n",
			[]string{`signpost.toml:1: expected ']' to close table name`}},
		{"server name with scheme", strings.Replace(base, `server_name = "chat.example.com"`, `server_name = "https://chat.example.com"`, 1),
			[]string{`signpost.toml:12: delegation[0].server_name: "https://chat.example.com" has a scheme (https://); write the bare name as in user IDs without it: "chat.example.com"`}},
		{"server name upper case", strings.Replace(base, `server_name = "chat.example.com"`, `server_name = "Chat.example.com"`, 1),
			[]string{`signpost.toml:12: delegation[0].server_name: "Chat.example.com" has upper-case letters; Matrix server names are lower case: write "chat.example.com"`}},
		{"server name trailing dot", strings.Replace(base, `server_name = "chat.example.com"`, `server_name = "chat.example.com."`, 1),
			[]string{`signpost.toml:12: delegation[0].server_name: "chat.example.com." ends with a dot; write "chat.example.com"`}},
		{"server name with port", strings.Replace(base, `server_name = "chat.example.com"`, `server_name = "chat.example.com:8448"`, 1),
			[]string{`signpost.toml:12: delegation[0].server_name: "chat.example.com:8448" has a port (8448); remote servers connect to a server name with a port directly and never read .well-known or SRV, so there is nothing to delegate: write "chat.example.com"`}},
		{"server name IP", strings.Replace(base, `server_name = "chat.example.com"`, `server_name = "203.0.113.1"`, 1),
			[]string{`signpost.toml:12: delegation[0].server_name: "203.0.113.1" is an IP address; remote servers connect to an IP literal directly, so delegation needs a DNS name`}},
		{"server name bad character", strings.Replace(base, `server_name = "chat.example.com"`, `server_name = "chat_room.example.com"`, 1),
			[]string{`signpost.toml:12: delegation[0].server_name: "chat_room.example.com" contains '_'; only letters, digits, "-" and "." are allowed (IDNs in their xn-- form)`}},
		{"server without port", strings.Replace(base, `server = "hs.chat.example.com:443"`, `server = "hs.chat.example.com"`, 1),
			[]string{`signpost.toml:13: delegation[0].server: "hs.chat.example.com" has no port; without one, remote servers look up SRV records and then connect to port 8448, not 443: write "hs.chat.example.com:443"`}},
		{"server port out of range", strings.Replace(base, `server = "hs.chat.example.com:443"`, `server = "hs.chat.example.com:70000"`, 1),
			[]string{`signpost.toml:13: delegation[0].server: "hs.chat.example.com:70000" port "70000" is out of range; use 1-65535`}},
		{"server port zero", strings.Replace(base, `server = "hs.chat.example.com:443"`, `server = "hs.chat.example.com:0"`, 1),
			[]string{`signpost.toml:13: delegation[0].server: "hs.chat.example.com:0" port "0" is out of range; use 1-65535`}},
		{"server with scheme", strings.Replace(base, `server = "hs.chat.example.com:443"`, `server = "https://hs.chat.example.com:443"`, 1),
			[]string{`signpost.toml:13: delegation[0].server: "https://hs.chat.example.com:443" has a scheme (https://); write host:port without it: "hs.chat.example.com:443"`}},
		{"server IPv6 without brackets", strings.Replace(base, `server = "hs.chat.example.com:443"`, `server = "2001:db8::1"`, 1) + "srv_fallback = false\n",
			[]string{`signpost.toml:13: delegation[0].server: "2001:db8::1" is an IPv6 address without brackets; write "[2001:db8::1]:443"`}},
		{"server IP with SRV fallback", strings.Replace(base, `server = "hs.chat.example.com:443"`, `server = "198.51.100.7:8448"`, 1),
			[]string{`signpost.toml:13: delegation[0].server: server "198.51.100.7:8448" names an IP address, and SRV targets must be host names (RFC 2782); set srv_fallback = false or use a host name`}},
		{"client http", strings.Replace(base, `client = "https://hs.chat.example.com"`, `client = "http://hs.chat.example.com"`, 1),
			[]string{`signpost.toml:14: delegation[0].client: "http://hs.chat.example.com" uses http; clients on https pages refuse other schemes, so write https://hs.chat.example.com`}},
		{"client relative", strings.Replace(base, `client = "https://hs.chat.example.com"`, `client = "hs.chat.example.com"`, 1),
			[]string{`signpost.toml:14: delegation[0].client: "hs.chat.example.com" is not an absolute URL; write e.g. "https://matrix.example.com"`}},
		{"client query", strings.Replace(base, `client = "https://hs.chat.example.com"`, `client = "https://hs.chat.example.com/?x=1"`, 1),
			[]string{`signpost.toml:14: delegation[0].client: "https://hs.chat.example.com/?x=1" has a query; clients append API paths to the base URL, so remove it`}},
		{"client fragment", strings.Replace(base, `client = "https://hs.chat.example.com"`, `client = "https://hs.chat.example.com/#x"`, 1),
			[]string{`signpost.toml:14: delegation[0].client: "https://hs.chat.example.com/#x" has a fragment; clients append API paths to the base URL, so remove it`}},
		{"identity server http", base + "identity_server = \"http://id.example.com\"\n",
			[]string{`signpost.toml:15: delegation[0].identity_server: "http://id.example.com" uses http; clients on https pages refuse other schemes, so write https://id.example.com`}},
		{"client_extra sets m.homeserver", base + "client_extra = { \"m.homeserver\" = { base_url = \"https://x.example\" } }\n",
			[]string{`signpost.toml:15: delegation[0].client_extra: sets "m.homeserver", which signpost writes from "client"; remove it here`}},
		{"client_extra sets m.identity_server", base + "client_extra = { \"m.identity_server\" = { base_url = \"https://x.example\" } }\n",
			[]string{`signpost.toml:15: delegation[0].client_extra: sets "m.identity_server", which signpost writes from "identity_server"; remove it here`}},
		{"support empty", base + "[delegation.support]\n",
			[]string{`signpost.toml:15: delegation[0].support: has neither page nor contacts; the spec requires at least one: add page = "https://example.com/help" or a contact`}},
		{"support contact without role", base + "[delegation.support]\ncontacts = [{ email = \"a@example.com\" }]\n",
			[]string{`signpost.toml:16: delegation[0].support.contacts[0].role: missing; use "m.role.admin" or "m.role.security"`}},
		{"support contact without id or email", base + "[delegation.support]\ncontacts = [{ role = \"m.role.admin\" }]\n",
			[]string{`signpost.toml:16: delegation[0].support.contacts[0]: has neither matrix_id nor email; the spec requires at least one of them`}},
		{"support contact bad matrix id", base + "[delegation.support]\ncontacts = [\n  { role = \"m.role.admin\", email = \"a@example.com\" },\n  { role = \"m.role.security\", matrix_id = \"admin\" },\n]\n",
			[]string{`signpost.toml:18: delegation[0].support.contacts[1].matrix_id: "admin" is not a Matrix user ID; write it as "@user:example.com"`}},
		{"support unknown spec role", base + "[delegation.support]\ncontacts = [{ role = \"m.role.boss\", email = \"a@example.com\" }]\n",
			[]string{`signpost.toml:16: delegation[0].support.contacts[0].role: "m.role.boss" is not a role the spec defines; use "m.role.admin", "m.role.security", "m.role.moderator" or a namespaced role such as "org.example.role.billing"`}},
		{"support bad email and page", base + "[delegation.support]\npage = \"help\"\ncontacts = [{ role = \"m.role.admin\", email = \"nobody\" }]\n",
			[]string{
				`signpost.toml:16: delegation[0].support.page: "help" is not an absolute http(s) URL; write e.g. "https://example.com/help"`,
				`signpost.toml:17: delegation[0].support.contacts[0].email: "nobody" is not an email address; write e.g. "admin@example.com"`,
			}},
		{"bad address", strings.Replace(base, `"2001:db8::10"`, `"203.0.113.300"`, 1),
			[]string{`signpost.toml:8: zone[0].addresses[1]: "203.0.113.300" is not an IP address; write an IPv4 or IPv6 address`}},
		{"unspecified address", strings.Replace(base, `"2001:db8::10"`, `"0.0.0.0"`, 1),
			[]string{`signpost.toml:8: zone[0].addresses[1]: 0.0.0.0 cannot be a host's address; write this host's public IP address`}},
		{"record outside zone", strings.Replace(base, `"hs 300 IN A 198.51.100.7"`, `"hs.example.org. 300 IN A 198.51.100.7"`, 1),
			[]string{`signpost.toml:9: zone[0].records[0]: owner "hs.example.org." is outside zone "chat.example.com."; use a name under the origin, or a relative name like "www"`}},
		{"record does not parse", strings.Replace(base, `"hs 300 IN A 198.51.100.7"`, `"hs 300 IN A 198.51.100.700"`, 1),
			[]string{`signpost.toml:9: zone[0].records[0]: "hs 300 IN A 198.51.100.700" does not parse (bad A A: "198.51.100.700"); write one record as in a zone file, e.g. "www 300 IN A 203.0.113.5"`}},
		{"two records in one string", strings.Replace(base, `"hs 300 IN A 198.51.100.7"`, `"hs 300 IN A 198.51.100.7\nhs 300 IN A 198.51.100.8"`, 1),
			[]string{`signpost.toml:9: zone[0].records[0]: "hs 300 IN A 198.51.100.7\nhs 300 IN A 198.51.100.8" holds more than one record; write one record per string`}},
		{"SOA in records", strings.Replace(base, `"hs 300 IN A 198.51.100.7"`, `"@ SOA ns1 h 1 2 3 4 5"`, 1),
			[]string{`signpost.toml:9: zone[0].records[0]: SOA records are derived; remove this one and set dns.hostmaster and dns.ttl instead`}},
		{"apex NS in records", strings.Replace(base, `"hs 300 IN A 198.51.100.7"`, `"@ NS ns2.example.net."`, 1),
			[]string{`signpost.toml:9: zone[0].records[0]: NS records at the apex are derived from dns.nameservers; remove this one`}},
		{"CNAME at apex", strings.Replace(base, `"hs 300 IN A 198.51.100.7"`, `"@ CNAME web.example.net."`, 1),
			[]string{`signpost.toml:9: zone[0].records[0]: a CNAME at the zone apex "chat.example.com." is not allowed: the apex holds SOA and NS; use A/AAAA records`}},
		{"CNAME beside other data", strings.Replace(base, `"hs 300 IN A 198.51.100.7"`, `"www CNAME web.example.net.", "www TXT hello"`, 1),
			[]string{`signpost.toml:9: zone[0].records[0]: "www.chat.example.com." has a CNAME and other data (TXT from zone[0].records[1]); a CNAME must be the only record at its name (RFC 1034 §3.6.2)`}},
		{"CNAME at a server name", strings.Replace(base, `"hs 300 IN A 198.51.100.7"`, `"hs CNAME web.example.net."`, 1),
			[]string{`signpost.toml:13: delegation[0].server: SRV target "hs.chat.example.com." is a CNAME (zone[0].records[0]); SRV targets must have A/AAAA records of their own (RFC 2782)`}},
		{"SRV target CNAME", strings.Replace(base, `"hs 300 IN A 198.51.100.7"`, `"hs A 198.51.100.7", "_xmpp._tcp SRV 0 0 5269 x", "x CNAME hs"`, 1),
			[]string{`signpost.toml:9: zone[0].records[1]: SRV target "x.chat.example.com." is a CNAME (zone[0].records[2]); SRV targets must have A/AAAA records of their own (RFC 2782)`}},
		{"A at a served server name", strings.Replace(base, `"hs 300 IN A 198.51.100.7"`, `"hs A 198.51.100.7", "@ A 198.51.100.8"`, 1),
			[]string{`signpost.toml:9: zone[0].records[1]: "chat.example.com" is a server name whose A/AAAA records come from zone[0].addresses (this host serves its .well-known); remove this record`}},
		{"SRV fallback written by hand", strings.Replace(base, `"hs 300 IN A 198.51.100.7"`, `"hs A 198.51.100.7", "_matrix-fed._tcp SRV 10 0 443 hs"`, 1),
			[]string{`signpost.toml:9: zone[0].records[1]: "_matrix-fed._tcp.chat.example.com." is derived from delegation[0].server; remove this record or set srv_fallback = false`}},
		{"DNSKEY written into a signed zone", strings.Replace(strings.Replace(base, "[dns]", "[dns]\ndnssec = true", 1), `"hs 300 IN A 198.51.100.7"`, `"hs A 198.51.100.7", "@ DNSKEY 257 3 13 AAAA"`, 1),
			[]string{`signpost.toml:10: zone[0].records[1]: DNSKEY records are made by signpost in a signed zone; remove this one`}},
		{"duplicate record", strings.Replace(base, `"hs 300 IN A 198.51.100.7"`, `"hs A 198.51.100.7", "hs 60 A 198.51.100.7"`, 1),
			[]string{`signpost.toml:9: zone[0].records[1]: repeats the record from zone[0].records[0]; remove one`}},
		{"duplicate zone", base + "[[zone]]\norigin = \"chat.example.com.\"\n",
			[]string{`signpost.toml:16: zone[1].origin: "chat.example.com." is already zone[0]; merge the two tables`}},
		{"nested zone", base + "[[zone]]\norigin = \"sub.chat.example.com\"\n",
			[]string{`signpost.toml:16: zone[1].origin: "sub.chat.example.com" and zone[0] ("chat.example.com.") nest; serve the inner names from the outer zone's records instead`}},
		{"duplicate server name", base + "[[delegation]]\nserver_name = \"chat.example.com\"\nserver = \"hs.chat.example.com:443\"\nclient = \"https://hs.chat.example.com\"\n",
			[]string{`signpost.toml:16: delegation[1].server_name: "chat.example.com" is already delegation[0]; merge the two`}},
		{"nameserver in zone without address", strings.Replace(base, `addresses = ["203.0.113.10", "2001:db8::10"]`, ``, 1),
			[]string{`signpost.toml:3: dns.nameservers[0]: "ns1.chat.example.com" is inside zone "chat.example.com." but has no address; add addresses to zone[0] or an A/AAAA record for it to its records`}},
		{"no nameservers", strings.Replace(base, `nameservers = ["ns1.chat.example.com"]`, ``, 1),
			[]string{`signpost.toml:2: dns.nameservers: missing; list the names the parent zone's NS records point at, e.g. nameservers = ["ns1.chat.example.com"]`}},
		{"table written twice", base + "[dns]\n",
			[]string{`signpost.toml:15: dns: table dns already exists`}},
		{"ttl not a duration", strings.Replace(base, `[dns]`, "[dns]\nttl = \"1 hour\"", 1),
			[]string{`signpost.toml:3: dns.ttl: "1 hour" is not a duration; write e.g. "1h", "30m" or "300s"`}},
		{"max age out of range", base + "[http]\nserver_max_age = \"72h\"\nclient_max_age = \"1m\"\n",
			[]string{
				`signpost.toml:16: http.server_max_age: 72h is out of range; Synapse clamps cache times to 5m..48h, so use whole seconds in that range`,
				`signpost.toml:17: http.client_max_age: 1m is out of range; Synapse clamps cache times to 5m..48h, so use whole seconds in that range`,
			}},
		{"bad listen", base + "[http]\nlisten = \"443\"\n",
			[]string{`signpost.toml:16: http.listen: "443" is not host:port; write e.g. "[::]:53" or "127.0.0.1:8053"`}},
		{"acme mode and challenge", base + "[acme]\nmode = \"manual\"\nchallenges = [\"dns-01\", \"dns01\"]\n",
			[]string{
				`signpost.toml:16: acme.mode: "manual" is not a mode; use "acme" (certificates from the CA) or "self-signed" (local trials, no CA)`,
				`signpost.toml:17: acme.challenges[1]: "dns01" is not a challenge type; use "tls-alpn-01", "http-01" or "dns-01"`,
			}},
		{"missing delegation keys", base + "[[delegation]]\nsrv_fallback = false\n",
			[]string{
				`signpost.toml:15: delegation[1].server_name: missing; write the name that appears in user IDs, e.g. server_name = "example.com"`,
				`signpost.toml:15: delegation[1].server: missing; write where the homeserver's federation listener is, with its port, e.g. server = "matrix.example.com:443"`,
				`signpost.toml:15: delegation[1].client: missing; write the homeserver's client URL, e.g. client = "https://matrix.example.com"`,
			}},
		{"key problems", base + "[[key]]\nname = \"xfr\"\nalgorithm = \"hmac-md5\"\nsecret = \"c2VjcmV0\"\n[[key]]\nname = \"b\"\nsecret = \"c2VjcmV0\"\n[[key]]\nname = \"c\"\nsecret = \"not base64!\"\n[[key]]\nname = \"d\"\nsecret_file = \"/nonexistent/d.key\"\n",
			[]string{
				`signpost.toml:17: key[0].algorithm: "hmac-md5" is not supported; use "hmac-sha256" (default) or "hmac-sha512"`,
				`signpost.toml:21: key[1].secret: is 6 bytes; use at least 16 random bytes (` + "`openssl rand -base64 32`" + `)`,
				`signpost.toml:24: key[2].secret: is not base64; generate one with ` + "`openssl rand -base64 32`",
				`signpost.toml:27: key[3].secret_file: cannot be read (open /nonexistent/d.key: no such file or directory); write the path of a file holding the base64 secret`,
			}},
		{"secondary and update problems", base + "[[secondary]]\naddress = \"ns2.example.net\"\n[[secondary]]\naddress = \"198.51.100.53\"\nkey = \"nokey\"\n[[secondary]]\naddress = \"198.51.100.54\"\nzones = [\"other.example\"]\n[[update]]\nkey = \"nokey\"\n[[update]]\n",
			[]string{
				`signpost.toml:16: secondary[0].address: "ns2.example.net" is not an IP address; write the secondary's address, e.g. "198.51.100.53" or "198.51.100.53:53"`,
				`signpost.toml:19: secondary[1].key: "nokey" is not a [[key]] name; define it or fix the name`,
				`signpost.toml:22: secondary[2].zones[0]: "other.example" is not a zone of this file; list origins of [[zone]] tables`,
				`signpost.toml:24: update[0].key: "nokey" is not a [[key]] name; define it or fix the name`,
				`signpost.toml:25: update[1].key: missing; updates are accepted only when signed, so name a [[key]]`,
			}},
		{"update name outside zones", base + "[[key]]\nname = \"hs\"\nsecret = \"MDEyMzQ1Njc4OWFiY2RlZg==\"\n[[update]]\nkey = \"hs\"\nnames = [\"example.org\", \"Bad_Name\"]\n",
			[]string{
				`signpost.toml:20: update[0].names[0]: "example.org" is outside every zone, so its _acme-challenge records cannot be served here`,
				`signpost.toml:20: update[0].names[1]: "Bad_Name" contains '_'; only letters, digits, "-" and "." are allowed (IDNs in their xn-- form)`,
			}},
		{"catalog inside a zone", strings.Replace(base, "[dns]", "[dns]\ncatalog = \"catalog.chat.example.com\"", 1),
			[]string{`signpost.toml:3: dns.catalog: "catalog.chat.example.com." is inside a zone signpost serves; use a name of its own such as "catalog.signpost.invalid"`}},
		{"RRset with two TTLs", strings.Replace(base, `"hs 300 IN A 198.51.100.7"`, `"hs 300 IN A 198.51.100.7", "hs 600 IN A 198.51.100.8"`, 1),
			[]string{`signpost.toml:9: zone[0].records[1]: TTL 600 differs from 300 in zone[0].records[0] for the same name and type; an RRset has one TTL (RFC 2181 §5.2), so write the same TTL`}},
		{"records below a DNAME", strings.Replace(base, `"hs 300 IN A 198.51.100.7"`, `"hs 300 IN A 198.51.100.7", "old DNAME new.example.", "www.old A 198.51.100.9"`, 1),
			[]string{`signpost.toml:9: zone[0].records[2]: "www.old.chat.example.com." is below the DNAME at "old.chat.example.com." (zone[0].records[1]), where it can never be reached (RFC 6672 §2.4); remove one of them`}},
		{"two DNAMEs at one name", strings.Replace(base, `"hs 300 IN A 198.51.100.7"`, `"hs 300 IN A 198.51.100.7", "old DNAME new.example.", "old DNAME other.example."`, 1),
			[]string{`signpost.toml:9: zone[0].records[2]: "old.chat.example.com." already has a DNAME (zone[0].records[1]); a name has at most one (RFC 6672 §2.4), so remove one`}},
		{"DNAME at a delegation", strings.Replace(base, `"hs 300 IN A 198.51.100.7"`, `"hs 300 IN A 198.51.100.7", "old DNAME new.example.", "old NS ns.example."`, 1),
			[]string{`signpost.toml:9: zone[0].records[1]: "old.chat.example.com." is a delegation (NS from zone[0].records[2]), which hides a DNAME at the same name; remove one of them`}},
		{"hostmaster with odd characters", strings.Replace(base, `hostmaster@example.com`, `a b@example.com`, 1),
			[]string{`signpost.toml:4: dns.hostmaster: "a b@example.com" has ' ' in its local part, which zone checkers reject in an SOA RNAME; use letters, digits, "-", "_", "+" and "."`}},
		{"one port for https and http", base + "[http]\nlisten = \"[::]:8443\"\nplain_listen = \"[::]:8443\"\n",
			[]string{`signpost.toml:17: http.plain_listen: "[::]:8443" is also http.listen; HTTPS and plain HTTP need ports of their own`}},
		{"metrics on the https port", base + "[metrics]\nlisten = \"[::]:443\"\n",
			[]string{`signpost.toml:16: metrics.listen: "[::]:443" is also http.listen; the metrics listener needs a port of its own, e.g. "127.0.0.1:9153"`}},
		{"metrics not host:port", base + "[metrics]\nlisten = \"9153\"\n",
			[]string{`signpost.toml:16: metrics.listen: "9153" is not host:port; write e.g. "[::]:53" or "127.0.0.1:8053"`}},
		{"metrics key misspelt", base + "[metrics]\nlisen = \"127.0.0.1:9153\"\n",
			[]string{`signpost.toml:16: metrics.lisen: unknown key; did you mean "listen"?`}},
		{"storage URL of another database", base + "[acme]\nstorage = \"mysql://u:pw@db/certs\"\n",
			[]string{`signpost.toml:16: acme.storage: "mysql://…" is not a storage signpost knows; write a directory, e.g. "/var/lib/signpost", or a PostgreSQL URL, postgres://user@host:5432/database`}},
		{"storage URL without host or database", base + "[acme]\nstorage = \"postgres://u:pw@/?password=pw2\"\n",
			[]string{
				`signpost.toml:16: acme.storage: postgres://u:xxxxx@/ names no host; write postgres://user@host:5432/database`,
				`signpost.toml:16: acme.storage: postgres://u:xxxxx@/ names no database; write postgres://user@host:5432/database`,
			}},
		{"storage URL that does not parse", base + "[acme]\nstorage = \"postgres://u:p%zz@db/certs\"\n",
			[]string{`signpost.toml:16: acme.storage: is not a valid PostgreSQL URL; write postgres://user@host:5432/database, percent-encoding special characters in the user name and password (% as %25, @ as %40)`}},
		{"document too large", base + "client_extra = { \"org.example.big\" = \"" + strings.Repeat("x", 17000) + "\" }\n",
			[]string{`signpost.toml:15: delegation[0].client_extra: makes a document of 17080 bytes; keep it under 16384 (Synapse rejects over 50 KiB, and clients fetch it on every login)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parse(t, tt.text)
			if err == nil {
				t.Fatalf("no error; want %q (model %v)", tt.want, m)
			}
			errs, ok := err.(Errors)
			if !ok {
				t.Fatalf("error is %T, want config.Errors: %v", err, err)
			}
			var got []string
			for _, p := range errs {
				got = append(got, p.String())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(tt.want, "\n\t"))
			}
		})
	}
}

// TestEveryProblemAtOnce is the case the foundation issue names: a typo,
// a bad IP, a scheme and a CNAME conflict give one message each.
func TestEveryProblemAtOnce(t *testing.T) {
	text := strings.NewReplacer(
		`hostmaster =`, `hostmastr =`,
		`"2001:db8::10"`, `"203.0.113.300"`,
		`server_name = "chat.example.com"`, `server_name = "https://chat.example.com"`,
		`"hs 300 IN A 198.51.100.7"`, `"hs A 198.51.100.7", "www CNAME hs", "www TXT x"`,
	).Replace(base)
	_, err := parse(t, text)
	want := `signpost.toml:4: dns.hostmastr: unknown key; did you mean "hostmaster"?
signpost.toml:8: zone[0].addresses[1]: "203.0.113.300" is not an IP address; write an IPv4 or IPv6 address
signpost.toml:9: zone[0].records[1]: "www.chat.example.com." has a CNAME and other data (TXT from zone[0].records[2]); a CNAME must be the only record at its name (RFC 1034 §3.6.2)
signpost.toml:12: delegation[0].server_name: "https://chat.example.com" has a scheme (https://); write the bare name as in user IDs without it: "chat.example.com"`
	if err == nil || err.Error() != want {
		t.Errorf("got\n%v\nwant\n%s", err, want)
	}
}

// TestStoragePassword: a PostgreSQL URL is valid, and one holding a
// password gets a warning that does not repeat it.
func TestStoragePassword(t *testing.T) {
	for storage, want := range map[string][]string{
		"postgres://signpost@db.example/certs?sslmode=verify-full": nil,
		"postgresql://signpost:s3cret@db.example:5433/certs":       {`signpost.toml:16: acme.storage: the URL holds a password, so this file is as secret as the certificates' keys; consider leaving it out and setting PGPASSWORD or a ~/.pgpass file for the user signpost runs as`},
	} {
		m, err := parse(t, base+"[acme]\nstorage = \""+storage+"\"\n")
		if err != nil {
			t.Fatalf("%s: %v", storage, err)
		}
		var got []string
		for _, w := range m.Warnings {
			got = append(got, w.String())
		}
		if !reflect.DeepEqual(got, want) || m.ACME.Storage != storage {
			t.Errorf("%s: storage %q, warnings %q; want it kept, warnings %q", storage, m.ACME.Storage, got, want)
		}
	}
}

func TestWarnings(t *testing.T) {
	text := base + `client_extra = { proxy = "x" }
[[delegation]]
server_name = "example.org"
server = "hs.chat.example.com:443"
client = "https://hs.chat.example.com"
`
	m, err := parse(t, text)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range m.Warnings {
		got = append(got, w.String())
	}
	want := []string{
		`signpost.toml:15: delegation[0].client_extra: key "proxy" is not namespaced; the spec reserves un-namespaced keys, so use a Java-style name such as "org.example.proxy"`,
		`signpost.toml:16: delegation[1].srv_fallback: "_matrix-fed._tcp.example.org." is outside every zone, so the SRV fallback is not published; delegate a zone that holds it or set srv_fallback = false`,
		`signpost.toml:17: delegation[1].server_name: "example.org" is outside every zone: signpost serves its documents only (scenario S3), and its A/AAAA records live elsewhere; it gets no certificate, as the web server in front terminates TLS; if the name's address is this host instead, add "example.org" to acme.names`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
	if names := m.CertificateNames(); slices.Contains(names, "example.org") {
		t.Errorf("certificate names %q: the S3 name should not be among them", names)
	}

	// Listed in acme.names, the name gets a certificate, and the warning
	// says nothing of certificates.
	m, err = parse(t, "[acme]\nnames = [\"example.org\"]\n"+text)
	if err != nil {
		t.Fatal(err)
	}
	last := m.Warnings[len(m.Warnings)-1].String()
	if want := `signpost.toml:19: delegation[1].server_name: "example.org" is outside every zone: signpost serves its documents only (scenario S3), and its A/AAAA records live elsewhere`; last != want {
		t.Errorf("with acme.names:\ngot  %s\nwant %s", last, want)
	}
	if names := m.CertificateNames(); !slices.Contains(names, "example.org") {
		t.Errorf("certificate names %q, want example.org among them", names)
	}
	if d := m.Delegation("EXAMPLE.ORG."); d == nil || d.Zone != nil {
		t.Errorf("Delegation(EXAMPLE.ORG.) = %+v, want the S3 delegation with no zone", d)
	}
}

func TestModel(t *testing.T) {
	text := base + `identity_server = "https://id.example.com/"
client_extra = { "org.matrix.msc3575.proxy" = { url = "https://sync.example.com" } }
[delegation.support]
page = "https://example.com/help"
contacts = [{ matrix_id = "@admin:chat.example.com", email = "admin@example.com", role = "m.role.admin" }]
`
	m, err := parse(t, text)
	if err != nil {
		t.Fatal(err)
	}
	d := m.Delegation("chat.example.com")
	if d == nil {
		t.Fatal("no delegation for chat.example.com")
	}
	docs := []struct{ got, want string }{
		{string(d.ServerDoc), `{"m.server":"hs.chat.example.com:443"}`},
		{string(d.ClientDoc), `{"m.homeserver":{"base_url":"https://hs.chat.example.com"},"m.identity_server":{"base_url":"https://id.example.com"},"org.matrix.msc3575.proxy":{"url":"https://sync.example.com"}}`},
		{string(d.SupportDoc), `{"contacts":[{"email_address":"admin@example.com","matrix_id":"@admin:chat.example.com","role":"m.role.admin"}],"support_page":"https://example.com/help"}`},
	}
	for _, doc := range docs {
		if doc.got != doc.want {
			t.Errorf("document\n got %s\nwant %s", doc.got, doc.want)
		}
	}
	var zone strings.Builder
	if err := m.Zones[0].WriteMasterFile(&zone); err != nil {
		t.Fatal(err)
	}
	wantZone := "$ORIGIN chat.example.com.\n" +
		"chat.example.com.\t3600\tIN\tSOA\tns1.chat.example.com. hostmaster.example.com. 1767225600 7200 3600 1209600 300\n" +
		"chat.example.com.\t3600\tIN\tA\t203.0.113.10\n" +
		"chat.example.com.\t3600\tIN\tNS\tns1.chat.example.com.\n" +
		"chat.example.com.\t3600\tIN\tAAAA\t2001:db8::10\n" +
		"_matrix-fed._tcp.chat.example.com.\t3600\tIN\tSRV\t10 0 443 hs.chat.example.com.\n" +
		"hs.chat.example.com.\t300\tIN\tA\t198.51.100.7\n" +
		"ns1.chat.example.com.\t3600\tIN\tA\t203.0.113.10\n" +
		"ns1.chat.example.com.\t3600\tIN\tAAAA\t2001:db8::10\n"
	if zone.String() != wantZone {
		t.Errorf("zone\n got:\n%s\nwant:\n%s", zone.String(), wantZone)
	}
	if got := m.CertificateNames(); !reflect.DeepEqual(got, []string{"chat.example.com"}) {
		t.Errorf("CertificateNames() = %q", got)
	}
	if z := m.ZoneFor("_matrix-fed._tcp.CHAT.example.com"); z != m.Zones[0] {
		t.Errorf("ZoneFor(_matrix-fed._tcp.CHAT.example.com) = %v", z)
	}
	if z := m.ZoneFor("example.com."); z != nil {
		t.Errorf("ZoneFor(example.com.) = %v, want nil", z.Origin)
	}
}

// TestSerial shows the serial follows content, never the clock alone, and
// never goes backwards.
func TestSerial(t *testing.T) {
	first, err := parse(t, base)
	if err != nil {
		t.Fatal(err)
	}
	later := func() time.Time { return testNow().Add(time.Hour) }
	same, err := Parse("signpost.toml", []byte(base), Options{Now: later, Previous: first})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := same.Zones[0].SOA.Serial, first.Zones[0].SOA.Serial; got != want {
		t.Errorf("unchanged zone: serial %d, want the previous %d", got, want)
	}
	changed := strings.Replace(base, "198.51.100.7", "198.51.100.8", 1)
	next, err := Parse("signpost.toml", []byte(changed), Options{Now: later, Previous: first})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := next.Zones[0].SOA.Serial, first.Zones[0].SOA.Serial+3600; got != want {
		t.Errorf("changed zone: serial %d, want %d (the clock)", got, want)
	}
	earlier := func() time.Time { return testNow().Add(-time.Hour) }
	back, err := Parse("signpost.toml", []byte(base), Options{Now: earlier, Previous: next})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := back.Zones[0].SOA.Serial, next.Zones[0].SOA.Serial+1; got != want {
		t.Errorf("clock went back: serial %d, want %d", got, want)
	}
}

// TestKnownKeys keeps the "did you mean" table in step with the structs.
func TestKnownKeys(t *testing.T) {
	got := map[string][]string{}
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct {
			return
		}
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			tag := f.Tag.Get("toml")
			got[prefix] = append(got[prefix], tag)
			walk(strings.TrimPrefix(prefix+"."+tag, "."), f.Type)
		}
	}
	walk("", reflect.TypeOf(file{}))
	if !reflect.DeepEqual(got, knownKeys) {
		t.Errorf("knownKeys is out of date:\n got %v\nwant %v", knownKeys, got)
	}
	// And the structs decode a full file strictly.
	var f file
	if err := toml.Unmarshal([]byte(base), &f); err != nil {
		t.Fatal(err)
	}
}

func TestSecondaries(t *testing.T) {
	text := strings.Replace(base, "[dns]", "[dns]\ncatalog = \"catalog.signpost.invalid\"", 1) + `
[[zone]]
origin = "other.example"
[[key]]
name = "XFR.example.com."
secret = "MDEyMzQ1Njc4OWFiY2RlZg=="
[[key]]
name = "hs.example.com"
algorithm = "hmac-sha512"
secret = "MDEyMzQ1Njc4OWFiY2RlZg=="
[[secondary]]
address = "198.51.100.53"
key = "xfr.example.com"
[[secondary]]
address = "[2001:db8::53]:5353"
zones = ["other.example."]
[[update]]
key = "hs.example.com"
names = ["chat.example.com", "*.chat.example.com"]
`
	m, err := parse(t, text)
	if err != nil {
		t.Fatal(err)
	}
	xfr := m.Key("xfr.example.com")
	if xfr == nil || xfr.Name != "xfr.example.com." || xfr.Algorithm != "hmac-sha256." {
		t.Fatalf("Key(xfr.example.com) = %+v", xfr)
	}
	if hs := m.Key("HS.example.com"); hs == nil || hs.Algorithm != "hmac-sha512." || hs.Secret != "MDEyMzQ1Njc4OWFiY2RlZg==" {
		t.Errorf("Key(HS.example.com) = %+v", hs)
	}
	a53, a6 := netip.MustParseAddr("198.51.100.53"), netip.MustParseAddr("2001:db8::53")
	allowed := []struct {
		origin string
		addr   netip.Addr
		key    string
		want   bool
	}{
		{"chat.example.com.", a53, "xfr.example.com.", true},
		{"chat.example.com.", a53, "", false},                // its key is required
		{"chat.example.com.", a53, "hs.example.com.", false}, // and no other key will do
		{"chat.example.com.", a6, "", false},                 // only copies other.example
		{"other.example.", a6, "", true},                     // no key configured
		{"other.example.", netip.MustParseAddr("::ffff:198.51.100.53"), "xfr.example.com.", true},
		{"catalog.signpost.invalid.", a53, "xfr.example.com.", true},
		{"chat.example.com.", netip.MustParseAddr("198.51.100.54"), "xfr.example.com.", false},
	}
	for _, a := range allowed {
		if got := m.TransferAllowed(a.origin, a.addr, a.key); got != a.want {
			t.Errorf("TransferAllowed(%s, %s, %q) = %v, want %v", a.origin, a.addr, a.key, got, a.want)
		}
	}
	if got := m.SecondaryServers[1].Notify.String(); got != "[2001:db8::53]:5353" {
		t.Errorf("notify address %s", got)
	}
	if got := m.Updates[0].Names; !reflect.DeepEqual(got, []string{"_acme-challenge.chat.example.com.", "_acme-challenge.chat.example.com."}) {
		t.Errorf("update names %q", got)
	}
	var cat strings.Builder
	m.Catalog.WriteMasterFile(&cat)
	want := "$ORIGIN catalog.signpost.invalid.\n" +
		"catalog.signpost.invalid.\t3600\tIN\tSOA\tinvalid. hostmaster.example.com. 1767225600 7200 3600 1209600 300\n" +
		"catalog.signpost.invalid.\t0\tIN\tNS\tinvalid.\n" +
		"version.catalog.signpost.invalid.\t0\tIN\tTXT\t\"2\"\n" +
		"a63ced7f31ae2ea2.zones.catalog.signpost.invalid.\t0\tIN\tPTR\tchat.example.com.\n" +
		"d9088829380cc53a.zones.catalog.signpost.invalid.\t0\tIN\tPTR\tother.example.\n"
	if cat.String() != want {
		t.Errorf("catalog:\n%s\nwant:\n%s", cat.String(), want)
	}
	if len(m.Warnings) != 1 || !strings.Contains(m.Warnings[0].String(), "secondary[1].key: no key") {
		t.Errorf("warnings %v", m.Warnings)
	}
}

// TestApexNameserverIsServerName: the apex as its own nameserver and a
// served server name gets its addresses once, not a conflict.
func TestApexNameserverIsServerName(t *testing.T) {
	m, err := parse(t, strings.Replace(base, `nameservers = ["ns1.chat.example.com"]`, `nameservers = ["chat.example.com"]`, 1))
	if err != nil {
		t.Fatal(err)
	}
	var a int
	for _, rr := range m.Zones[0].Records {
		if rr.Header().Name == "chat.example.com." && rr.Header().Rrtype == dns.TypeA {
			a++
		}
	}
	if a != 1 {
		t.Errorf("apex has %d A records, want 1:\n%v", a, m.Zones[0].Records)
	}
}

// TestEDNSKeys covers dns.nsid, the cookie secrets and [dns.rrl]: defaults,
// values as written, and the exact message for each bad value.
func TestEDNSKeys(t *testing.T) {
	m, err := parse(t, base)
	if err != nil {
		t.Fatal(err)
	}
	want := DNS{Listen: m.DNS.Listen, Nameservers: m.DNS.Nameservers, Hostmaster: m.DNS.Hostmaster, TTL: m.DNS.TTL,
		RRL: RRL{Rate: 200, Slip: 2, IPv4Prefix: 24, IPv6Prefix: 56}}
	if !reflect.DeepEqual(m.DNS, want) {
		t.Errorf("defaults: got %+v, want %+v", m.DNS, want)
	}

	set := strings.Replace(base, "[dns]", `[dns]
nsid = "ns1.example signpost"
cookie_secret = "000102030405060708090a0b0c0d0e0F"
cookie_secret_previous = "ffeeddccbbaa99887766554433221100"
rrl = { rate = 50, slip = 0, ipv4_prefix = 32, ipv6_prefix = 64, exempt = ["192.0.2.0/24", "2001:db8::1", "::ffff:10.0.0.0/104"] }`, 1)
	set = strings.Replace(set, `"::ffff:10.0.0.0/104"`, `"10.0.0.0/8"`, 1)
	m, err = parse(t, set)
	if err != nil {
		t.Fatal(err)
	}
	want.NSID = "ns1.example signpost"
	want.CookieSecret = []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	want.CookieSecretPrevious = []byte{0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00}
	want.RRL = RRL{Rate: 50, Slip: 0, IPv4Prefix: 32, IPv6Prefix: 64, Exempt: []netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::1/128"), netip.MustParsePrefix("10.0.0.0/8")}}
	if !reflect.DeepEqual(m.DNS, want) {
		t.Errorf("set: got %+v, want %+v", m.DNS, want)
	}
	if m, err := parse(t, base+"\n[dns.rrl]\nrate = 0\n"); err != nil || m.DNS.RRL.Rate != 0 || m.DNS.RRL.Slip != 2 {
		t.Errorf("rate = 0: got %+v, %v; want rate 0, other keys default", m.DNS.RRL, err)
	}

	for _, c := range []struct {
		name, dns string
		want      []string
	}{
		{"nsid not ASCII", `nsid = "nś1"`, []string{`signpost.toml:3: dns.nsid: "nś1" has a byte that is not printable ASCII; use letters, digits and punctuation, e.g. the host name`}},
		{"nsid too long", `nsid = "` + strings.Repeat("n", 129) + `"`, []string{`signpost.toml:3: dns.nsid: is 129 bytes; use at most 128`}},
		{"secret not hex", `cookie_secret = "not a secret at all, not hex!!!!"`, []string{`signpost.toml:3: dns.cookie_secret: is not 32 hex digits (16 bytes); generate one with "openssl rand -hex 16"`}},
		{"secret too short", `cookie_secret = "0011"`, []string{`signpost.toml:3: dns.cookie_secret: is not 32 hex digits (16 bytes); generate one with "openssl rand -hex 16"`}},
		{"previous without secret", `cookie_secret_previous = "00112233445566778899aabbccddeeff"`, []string{`signpost.toml:3: dns.cookie_secret_previous: is set without dns.cookie_secret; set cookie_secret to the secret cookies are made with now`}},
		{"bad previous", "cookie_secret = \"00112233445566778899aabbccddeeff\"\ncookie_secret_previous = \"xyz\"", []string{`signpost.toml:4: dns.cookie_secret_previous: is not 32 hex digits (16 bytes); generate one with "openssl rand -hex 16"`}},
		{"rrl values out of range", "rrl = { rate = -1, slip = 11, ipv4_prefix = 0, ipv6_prefix = 129 }", []string{
			`signpost.toml:3: dns.rrl.rate: -1 is out of range; use 0 (off) or responses per second, from 0 to 100000`,
			`signpost.toml:3: dns.rrl.slip: 11 is out of range; use 0 (drop all over the rate) or n to send every n-th truncated, from 0 to 10`,
			`signpost.toml:3: dns.rrl.ipv4_prefix: 0 is out of range; use a prefix length, from 1 to 32`,
			`signpost.toml:3: dns.rrl.ipv6_prefix: 129 is out of range; use a prefix length, from 1 to 128`,
		}},
		{"rrl exempt", "[dns.rrl]\nexempt = [\n  \"192.0.2.1/24\",\n  \"localhost\",\n  \"::ffff:192.0.2.0/120\",\n  \"fe80::1%eth0\",\n]", []string{
			`signpost.toml:7: dns.rrl.exempt[0]: "192.0.2.1/24" has bits set after the prefix length; write "192.0.2.0/24"`,
			`signpost.toml:8: dns.rrl.exempt[1]: "localhost" is not an address prefix; write e.g. "192.0.2.0/24", "2001:db8::/56" or one address`,
			`signpost.toml:9: dns.rrl.exempt[2]: "::ffff:192.0.2.0/120" is an IPv4-mapped IPv6 prefix; write the IPv4 prefix`,
			`signpost.toml:10: dns.rrl.exempt[3]: "fe80::1%eth0" is not an address prefix; write e.g. "192.0.2.0/24", "2001:db8::/56" or one address`,
		}},
		{"rrl key as NSD spells it", "[dns.rrl]\nratelimit = 5", []string{`signpost.toml:6: dns.rrl.ratelimit: unknown key; did you mean "rate"?`}},
		{"rrl unknown key", "[dns.rrl]\nwhitelist = []", []string{`signpost.toml:6: dns.rrl.whitelist: unknown key; expected one of rate, slip, ipv4_prefix, ipv6_prefix, exempt`}},
		{"rrl typo", "[dns.rrl]\nslp = 5", []string{`signpost.toml:6: dns.rrl.slp: unknown key; did you mean "slip"?`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			text := base
			if strings.HasPrefix(c.dns, "[dns.rrl]") {
				text = strings.Replace(base, "\n[[zone]]", c.dns+"\n\n[[zone]]", 1)
			} else {
				text = strings.Replace(base, "[dns]\n", "[dns]\n"+c.dns+"\n", 1)
			}
			_, err := parse(t, text)
			var got []string
			if errs, ok := err.(Errors); ok {
				for _, p := range errs {
					got = append(got, p.String())
				}
			} else if err != nil {
				got = []string{err.Error()}
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got\n%s\nwant\n%s\n(file:\n%s)", strings.Join(got, "\n"), strings.Join(c.want, "\n"), text)
			}
		})
	}
}

// TestDNSSECSwitch: dns.dnssec signs every zone unless a zone says
// otherwise, a zone can ask for it alone, and signing changes the serial.
func TestDNSSECSwitch(t *testing.T) {
	two := base + "[[zone]]\norigin = \"other.test\"\n"
	for _, tt := range []struct {
		name string
		text string
		want []bool // per zone, in canonical order: chat.example.com, other.test
	}{
		{"off by default", two, []bool{false, false}},
		{"on for all", strings.Replace(two, "[dns]", "[dns]\ndnssec = true", 1), []bool{true, true}},
		{"on but one zone off", strings.Replace(two, "[dns]", "[dns]\ndnssec = true", 1) + "dnssec = false\n", []bool{true, false}},
		{"one zone on", two + "dnssec = true\n", []bool{false, true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parse(t, tt.text)
			if err != nil {
				t.Fatal(err)
			}
			var got []bool
			for _, z := range m.Zones {
				got = append(got, z.DNSSEC)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DNSSEC per zone %v, want %v", got, tt.want)
			}
		})
	}
	now := func() time.Time { return time.Unix(1000, 0) }
	plain, err := Parse("signpost.toml", []byte(base), Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	later := func() time.Time { return time.Unix(900, 0) } // the clock went back
	signed, err := Parse("signpost.toml", []byte(strings.Replace(base, "[dns]", "[dns]\ndnssec = true", 1)), Options{Now: later, Previous: plain})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := signed.Zones[0].SOA.Serial, plain.Zones[0].SOA.Serial+1; got != want {
		t.Errorf("serial %d after turning DNSSEC on, want %d", got, want)
	}
}
