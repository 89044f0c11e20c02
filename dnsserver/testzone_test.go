package dnsserver

import (
	"time"

	"github.com/signpost-dev/signpost/config"
)

// testTOML is the configuration every test answers from. It covers each
// kind of name a zone can have: apex, in-zone nameserver, server name with
// SRV fallback, CNAMEs (in zone, out of zone, dangling, looping), a
// wildcard, a delegation with glue, an empty non-terminal and a large RRset.
const testTOML = `
[dns]
listen = ["127.0.0.1:8053"]
nameservers = ["ns1.chat.example.com", "ns2.example.net"]
hostmaster = "hostmaster@example.com"
ttl = "1h"

[[zone]]
origin = "chat.example.com"
addresses = ["203.0.113.10", "2001:db8::10"]
records = [
  "hs 300 IN A 198.51.100.7",
  "hs 300 IN AAAA 2001:db8::7",
  "www 300 IN CNAME hs",
  "ext 300 IN CNAME hs.other.org.",
  "dang 300 IN CNAME nope",
  "loop1 300 IN CNAME loop2",
  "loop2 300 IN CNAME loop1",
  "tomatrix 300 IN CNAME matrix.test.",
  "*.wild 300 IN TXT \"wild\"",
  "*.wild 300 IN A 192.0.2.99",
  "child 300 IN NS ns.child",
  "child 300 IN NS ns.elsewhere.org.",
  "ns.child 300 IN A 192.0.2.53",
  "mail 300 IN MX 10 hs",
  "mail 300 IN MX 20 mx.wild",
  "a.b.c 300 IN TXT \"deep\"",
  "big 300 IN A 192.0.2.1",
  "big 300 IN TXT \"01234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789 one\"",
  "big 300 IN TXT \"01234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789 two\"",
  "big 300 IN TXT \"01234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789 three\"",
]

[[zone]]
origin = "matrix.test"
addresses = ["192.0.2.80"]

[[delegation]]
server_name = "chat.example.com"
server = "hs.chat.example.com:8448"
client = "https://hs.chat.example.com"

[[delegation]]
server_name = "matrix.test"
server = "matrix.test:443"
client = "https://matrix.test"
`

// parseExample parses testTOML for examples, which have no testing.T.
func parseExample() (*config.Model, error) {
	return config.Parse("example.toml", []byte(testTOML), config.Options{Now: func() time.Time { return time.Unix(1, 0) }})
}
