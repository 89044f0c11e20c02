// Package manyzones writes signpost configuration files with many server
// names, as a hosting provider's (scenario S4) would be: one zone per
// customer, each with this host's addresses, a delegation with support
// contacts, and a few records of the customer's own. The config tests, the
// serve tests and bench/scale use it to measure and check how signpost
// scales with the number of names.
package manyzones

import (
	"bufio"
	"fmt"
	"io"
)

// Options shape the file; the zero value writes DNS on 127.0.0.1:0, HTTP
// on 127.0.0.1:0 and self-signed certificates kept in the current directory.
type Options struct {
	// DNSListen, HTTPSListen and PlainListen are the listen addresses;
	// "127.0.0.1:0" if empty.
	DNSListen, HTTPSListen, PlainListen string
	// Storage is acme.storage; "." if empty.
	Storage string
	// Catalog, if set, is dns.catalog, and Secondary the address of a
	// [[secondary]] that may transfer every zone and the catalog.
	Catalog   string
	Secondary string
	// NoRRL turns response rate limiting off, for load tests that send
	// every query from one address.
	NoRRL bool
	// Extra, if set, is one more record for zone Changed, so that two
	// files can differ in one zone only (a reload that changes one line).
	Extra   string
	Changed int
}

// Origin is the origin (and server name) of zone i.
func Origin(i int) string { return fmt.Sprintf("tenant%05d.example", i) }

// Write writes a configuration with n zones and n delegations to w.
func Write(w io.Writer, n int, o Options) error {
	or := func(s string) string {
		if s == "" {
			return "127.0.0.1:0"
		}
		return s
	}
	if o.Storage == "" {
		o.Storage = "."
	}
	b := bufio.NewWriter(w)
	fmt.Fprintf(b, "[dns]\nlisten = [%q]\nnameservers = [\"ns1.provider.example\", \"ns2.provider.example\"]\nhostmaster = \"dns@provider.example\"\nttl = \"30m\"\n", or(o.DNSListen))
	if o.Catalog != "" {
		fmt.Fprintf(b, "catalog = %q\n", o.Catalog)
	}
	if o.NoRRL {
		fmt.Fprint(b, "\n[dns.rrl]\nrate = 0\n")
	}
	fmt.Fprintf(b, "\n[http]\nlisten = %q\nplain_listen = %q\n", or(o.HTTPSListen), or(o.PlainListen))
	fmt.Fprintf(b, "\n[acme]\nmode = \"self-signed\"\nstorage = %q\n", o.Storage)
	if o.Secondary != "" {
		fmt.Fprintf(b, "\n[[key]]\nname = \"xfr.provider.example\"\nsecret = \"c2lnbnBvc3Qgc2NhbGUgYmVuY2ggc2VjcmV0IGtleQ==\"\n")
		fmt.Fprintf(b, "\n[[secondary]]\naddress = %q\nkey = \"xfr.provider.example\"\n", o.Secondary)
	}
	for i := range n {
		origin := Origin(i)
		// Addresses of the homeserver differ by zone, as customers' do.
		v4 := fmt.Sprintf("198.51.%d.%d", 100+i/250%100, 1+i%250)
		fmt.Fprintf(b, "\n[[zone]]\norigin = %q\naddresses = [\"203.0.113.40\", \"2001:db8::40\"]\nrecords = [\n", origin)
		fmt.Fprintf(b, "  \"hs 300 IN A %s\",\n  \"hs 300 IN AAAA 2001:db8:1::%x\",\n", v4, i+1)
		fmt.Fprintf(b, "  \"www 300 IN CNAME hs\",\n  \"@ 300 IN MX 10 mail.provider.example.\",\n")
		fmt.Fprintf(b, "  \"@ 300 IN TXT \\\"customer=%d\\\"\",\n", 1000+i)
		if o.Extra != "" && o.Changed == i {
			fmt.Fprintf(b, "  %q,\n", o.Extra)
		}
		fmt.Fprint(b, "]\n")
		fmt.Fprintf(b, "\n[[delegation]]\nserver_name = %q\nserver = \"hs.%s:8448\"\nclient = \"https://hs.%s\"\n", origin, origin, origin)
		fmt.Fprintf(b, "\n[delegation.support]\npage = \"https://provider.example/support/%d\"\n", i)
		fmt.Fprintf(b, "contacts = [{ matrix_id = \"@admin:%s\", email = \"admin@%s\", role = \"m.role.admin\" }]\n", origin, origin)
	}
	return b.Flush()
}
