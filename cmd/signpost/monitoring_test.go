package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestShippedMonitoring: every metric the shipped alerts and dashboard use
// is in a scrape of a running signpost that has done everything once (a
// secondary watched and notified, a zone transferred), and promtool, when
// installed, accepts the rules.
func TestShippedMonitoring(t *testing.T) {
	// The instance is its own secondary: the watch and NOTIFY then have
	// someone who answers, whose address is known once it listens.
	text := metricsTOML(t)
	in := startServeWith(t, text, nil, func(e *env) { e.watchEvery = 20 * time.Millisecond })
	// A changed record, so the zone's serial moves and a NOTIFY goes out.
	in.write(strings.Replace(text, "hs 300 IN A 127.0.0.1", "hs 300 IN A 127.0.0.2", 1) +
		fmt.Sprintf("\n[[secondary]]\naddress = %q\n", in.addrs.DNS[0]))
	if err := in.reload(func() { in.hup <- syscall.SIGHUP }); err != nil {
		t.Fatal(err)
	}
	in.query("udp", "chat.example.test.", dns.TypeA)
	in.get("chat.example.test", "/.well-known/matrix/server")
	m := new(dns.Msg)
	m.SetAxfr("chat.example.test.")
	tr := &dns.Transfer{}
	envs, err := tr.In(m, in.addrs.DNS[0])
	if err != nil {
		t.Fatal(err)
	}
	for e := range envs {
		if e.Error != nil {
			t.Fatalf("AXFR: %v", e.Error)
		}
	}
	var have map[string]float64
	deadline := time.Now().Add(10 * time.Second)
	for {
		have = in.metrics()
		if hasFamily(have, "signpost_secondary_serial") && hasFamily(have, "signpost_dns_notify_sent_total") && hasFamily(have, "signpost_dns_transfers_total") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no secondary, NOTIFY or transfer metrics in the scrape after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	names := regexp.MustCompile(`\b(?:signpost|process|go)_[a-z0-9_]+\b`)
	for _, file := range []string{"../../deploy/prometheus/alerts.yml", "../../deploy/grafana/signpost.json", "../../README.md"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		if strings.HasSuffix(file, "README.md") {
			// Only the Monitoring section lists metrics; elsewhere a
			// signpost_ name may be a table in PostgreSQL.
			_, text, _ = strings.Cut(text, "\n## Monitoring\n")
			text, _, _ = strings.Cut(text, "\n## ")
		}
		used := slices.Compact(slices.Sorted(slices.Values(names.FindAllString(text, -1))))
		if len(used) < 5 {
			t.Errorf("%s uses %d metrics; the pattern finds none?", file, len(used))
		}
		for _, name := range used {
			if !hasFamily(have, name) {
				t.Errorf("%s uses %s, which signpost does not export", file, name)
			}
		}
	}

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (apt-get install prometheus): rules not checked")
	}
	if out, err := exec.Command(promtool, "check", "rules", "../../deploy/prometheus/alerts.yml").CombinedOutput(); err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
}

// hasFamily reports whether a scrape has a series of the metric name (of
// a histogram: its count).
func hasFamily(vs map[string]float64, name string) bool {
	for series := range vs {
		base, _, _ := strings.Cut(series, "{")
		if base == name || base == name+"_count" {
			return true
		}
	}
	return false
}
