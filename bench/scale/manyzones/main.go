// Command manyzones writes a signpost configuration with N server names,
// one zone each, as a hosting provider's would be (internal/manyzones).
// bench/scale/run.sh uses it.
//
//	go run ./bench/scale/manyzones -n 10000 -dns 127.0.0.1:5300 > provider.toml
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/signpost-dev/signpost/internal/manyzones"
)

func main() {
	var o manyzones.Options
	n := flag.Int("n", 1000, "number of server names (and zones)")
	flag.StringVar(&o.DNSListen, "dns", "", "dns.listen address (default 127.0.0.1:0)")
	flag.StringVar(&o.HTTPSListen, "https", "", "http.listen address (default 127.0.0.1:0)")
	flag.StringVar(&o.PlainListen, "plain", "", "http.plain_listen address (default 127.0.0.1:0)")
	flag.StringVar(&o.Storage, "storage", "", "acme.storage directory (default .)")
	flag.StringVar(&o.Catalog, "catalog", "", "dns.catalog origin (default none)")
	flag.StringVar(&o.Secondary, "secondary", "", "address of a [[secondary]] that may transfer every zone (default none)")
	flag.BoolVar(&o.NoRRL, "no-rrl", false, "turn response rate limiting off")
	flag.StringVar(&o.Extra, "extra", "", "one more record for zone -changed")
	flag.IntVar(&o.Changed, "changed", 0, "the zone that gets -extra")
	flag.Parse()
	if err := manyzones.Write(os.Stdout, *n, o); err != nil {
		fmt.Fprintln(os.Stderr, "manyzones:", err)
		os.Exit(1)
	}
}
