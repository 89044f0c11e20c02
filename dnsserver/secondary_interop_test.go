package dnsserver

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/signpost-dev/signpost/internal/testenv"
)

// The interop tests run real NSD and Knot as secondaries of signpost, and
// real nsupdate and knsupdate against it, all on loopback ports picked at
// run time. Each skips when its program is not installed (Debian packages
// nsd, knot, bind9-dnsutils, knot-dnsutils).

// sameAnswers asks signpost and the secondary the same questions and
// requires the same replies (records compared as sets). With minimal set,
// the optional records of a positive answer (apex NS in authority, the
// nameservers' addresses) are left out of the comparison: Knot, unlike
// NSD and signpost, does not send them.
func sameAnswers(t *testing.T, signpost, secondary string, minimal bool, qs ...tc) {
	t.Helper()
	for _, c := range qs {
		q := query(c)
		want := exchange(t, "udp", signpost, q.Copy())
		got := exchange(t, "udp", secondary, q.Copy())
		if minimal {
			want, got = withoutOptional(want), withoutOptional(got)
		}
		if g, w := normalize(got), normalize(want); g != w {
			t.Errorf("%s %s: the secondary answers\n%s\nsignpost answers\n%s", c.Qname, dns.TypeToString[c.Qtype], g, w)
		}
	}
}

// withoutOptional drops the apex NS records from the authority section of
// a positive answer, and from the additional section every address record
// that is not of an SRV or MX target in the answer.
func withoutOptional(m *dns.Msg) *dns.Msg {
	m = m.Copy()
	targets := map[string]bool{}
	for _, rr := range m.Answer {
		switch rr := rr.(type) {
		case *dns.SRV:
			targets[strings.ToLower(rr.Target)] = true
		case *dns.MX:
			targets[strings.ToLower(rr.Mx)] = true
		}
	}
	if len(m.Answer) > 0 {
		m.Ns = nil
	}
	var extra []dns.RR
	for _, rr := range m.Extra {
		if rr.Header().Rrtype == dns.TypeOPT || targets[strings.ToLower(rr.Header().Name)] {
			extra = append(extra, rr)
		}
	}
	m.Extra = extra
	return m
}

// fallbackQueries are what a remote homeserver asks when the well-known
// fetch fails: the SRV fallback and its target's addresses.
var fallbackQueries = []tc{
	{Qname: "_matrix-fed._tcp.chat.example.com.", Qtype: dns.TypeSRV, EDNS: 1232},
	{Qname: "_matrix-fed._tcp.chat.example.com.", Qtype: dns.TypeSRV},
	{Qname: "hs.chat.example.com.", Qtype: dns.TypeA, EDNS: 1232},
	{Qname: "hs.chat.example.com.", Qtype: dns.TypeAAAA, EDNS: 1232},
	{Qname: "_matrix._tcp.chat.example.com.", Qtype: dns.TypeSRV, EDNS: 1232},
	{Qname: "_matrix-fed._tcp.matrix.test.", Qtype: dns.TypeSRV, EDNS: 1232},
}

// followChange makes a change on signpost and measures how long the
// secondary takes to serve it: NOTIFY, SOA query, transfer, load.
func followChange(t *testing.T, s *testServer, secondary, name string, change func()) {
	t.Helper()
	before := s.Serials()["chat.example.com."]
	start := time.Now()
	change()
	serial := s.Serials()["chat.example.com."]
	if serial == before {
		t.Fatalf("%s: the serial did not change", name)
	}
	testenv.WaitSOA(t, secondary, "chat.example.com.", serial, 15*time.Second)
	t.Logf("%s -> secondary serving serial %d: %.3fs", name, serial, time.Since(start).Seconds())
}

// TestInteropNSDSecondary: NSD, configured as the README says, copies the
// zones from signpost by AXFR with TSIG, answers the SRV fallback exactly
// as signpost does, and follows a reload and an ACME TXT change after
// NOTIFY.
func TestInteropNSDSecondary(t *testing.T) {
	nsd, err := exec.LookPath("nsd")
	if err != nil {
		t.Skip("nsd not installed (apt-get install nsd): skipping NSD as a secondary")
	}
	port := testenv.FreePort(t)
	nsdAddr := fmt.Sprintf("127.0.0.1:%d", port)
	text := secondaryTOML(nsdAddr)
	s := startOnePort(t, testModel(t, text), Options{})
	_, sport, _ := strings.Cut(s.tcp, ":")

	dir := t.TempDir()
	var conf strings.Builder
	conf.WriteString(testenv.NSDServerConf(dir, port, 2, ""))
	fmt.Fprintf(&conf, `key:
  name: %q
  algorithm: hmac-sha256
  secret: %q
`, xfrKey, xfrSecret)
	for _, zone := range []string{"chat.example.com", "matrix.test"} {
		fmt.Fprintf(&conf, `zone:
  name: %q
  zonefile: %q
  request-xfr: 127.0.0.1@%s %s
  allow-notify: 127.0.0.1 %s
`, zone, zone+".zone", sport, xfrKey, xfrKey)
	}
	confPath := filepath.Join(dir, "nsd.conf")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.RunDaemon(t, nsd, "-d", "-c", confPath)

	d := testenv.WaitSOA(t, nsdAddr, "chat.example.com.", 1, 15*time.Second)
	t.Logf("NSD start -> first zone copied: %.3fs", d.Seconds())
	testenv.WaitSOA(t, nsdAddr, "matrix.test.", 1, 15*time.Second)
	sameAnswers(t, s.udp, nsdAddr, false, fallbackQueries...)

	followChange(t, s, nsdAddr, "reload", func() {
		s.SetModel(testModel(t, strings.Replace(text, "198.51.100.7", "198.51.100.8", 1)))
	})
	sameAnswers(t, s.udp, nsdAddr, false, fallbackQueries...)
	followChange(t, s, nsdAddr, "ACME TXT added", func() {
		if err := s.AddTXT(acmeName, "challenge"); err != nil {
			t.Fatal(err)
		}
	})
	sameAnswers(t, s.udp, nsdAddr, false, tc{Qname: acmeName, Qtype: dns.TypeTXT, EDNS: 1232})
}

// TestInteropKnotCatalog: Knot, given only the catalog zone, finds both
// zones in it (RFC 9432), copies them with TSIG, answers the SRV fallback
// exactly as signpost does, and follows a reload and an UPDATE after
// NOTIFY.
func TestInteropKnotCatalog(t *testing.T) {
	knotd, err := exec.LookPath("knotd")
	if err != nil {
		t.Skip("knotd not installed (apt-get install knot): skipping Knot as a secondary")
	}
	port := testenv.FreePort(t)
	knotAddr := fmt.Sprintf("127.0.0.1:%d", port)
	text := secondaryTOML(knotAddr)
	s := startOnePort(t, testModel(t, text), Options{})
	_, sport, _ := strings.Cut(s.tcp, ":")

	dir := t.TempDir()
	conf := fmt.Sprintf(`server:
  listen: 127.0.0.1@%d
  rundir: %q
log:
  - target: stderr
    any: info
database:
  storage: %q
  journal-db-max-size: 64M
  kasp-db-max-size: 16M
  timer-db-max-size: 16M
  catalog-db-max-size: 16M
key:
  - id: %s
    algorithm: hmac-sha256
    secret: %s
remote:
  - id: signpost
    address: 127.0.0.1@%s
    key: %s
acl:
  - id: notify-from-signpost
    address: 127.0.0.1
    key: %s
    action: notify
template:
  - id: default
    storage: %q
    master: signpost
    acl: notify-from-signpost
    zonefile-load: none
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: catalog.signpost.invalid
    catalog-role: interpret
    catalog-template: default
`, port, dir, dir, xfrKey, xfrSecret, sport, xfrKey, xfrKey, dir)
	confPath := filepath.Join(dir, "knot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.RunDaemon(t, knotd, "-c", confPath)

	d := testenv.WaitSOA(t, knotAddr, "chat.example.com.", 1, 15*time.Second)
	t.Logf("Knot start -> member zone found in the catalog and copied: %.3fs", d.Seconds())
	testenv.WaitSOA(t, knotAddr, "matrix.test.", 1, 15*time.Second)
	sameAnswers(t, s.udp, knotAddr, true, fallbackQueries...)

	followChange(t, s, knotAddr, "reload", func() {
		s.SetModel(testModel(t, strings.Replace(text, "198.51.100.7", "198.51.100.8", 1)))
	})
	sameAnswers(t, s.udp, knotAddr, true, fallbackQueries...)
	followChange(t, s, knotAddr, "UPDATE", func() {
		m := newUpdate("chat.example.com.")
		m.Insert([]dns.RR{txtRR(t, acmeName, 60, "by-update")})
		expectUpdate(t, s, "tcp", m, hs, dns.RcodeSuccess, 0)
	})
	sameAnswers(t, s.udp, knotAddr, true, tc{Qname: acmeName, Qtype: dns.TypeTXT, EDNS: 1232})
}

// updateTool runs nsupdate or knsupdate (over TCP with -v) with the hs key,
// sending one update to s, and returns its output and whether it
// succeeded.
func updateTool(t *testing.T, tool string, s *testServer, tcp bool, update string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"-y", "hmac-sha512:" + strings.TrimSuffix(hsKey, ".") + ":" + hsSecret}
	if tcp {
		args = append(args, "-v")
	}
	cmd := exec.CommandContext(ctx, tool, args...)
	host, port, _ := strings.Cut(s.udp, ":")
	cmd.Stdin = strings.NewReader(fmt.Sprintf("server %s %s\nzone chat.example.com.\n%s\nsend\n", host, port, update))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err == nil
}

// TestInteropUpdateTools: nsupdate (BIND) and knsupdate (Knot) add and
// delete an _acme-challenge TXT record with a TSIG key, over UDP and TCP;
// the record resolves in between, and a name outside the key's policy is
// refused.
func TestInteropUpdateTools(t *testing.T) {
	for _, tool := range []struct{ name, pkg string }{{"nsupdate", "bind9-dnsutils"}, {"knsupdate", "knot-dnsutils"}} {
		t.Run(tool.name, func(t *testing.T) {
			path, err := exec.LookPath(tool.name)
			if err != nil {
				t.Skipf("%s not installed (apt-get install %s)", tool.name, tool.pkg)
			}
			s := startOnePort(t, testModel(t, secondaryTOML(startNotifySink(t, 0).addr)), Options{})
			for _, tcp := range []bool{false, true} {
				value := fmt.Sprintf("%s-tcp-%v", tool.name, tcp)
				if out, ok := updateTool(t, path, s, tcp, fmt.Sprintf("update add %s 60 TXT %q", acmeName, value)); !ok {
					t.Fatalf("add (tcp %v) failed:\n%s", tcp, out)
				}
				checkQuery(t, "udp", s.udp, tc{Qname: acmeName, Qtype: dns.TypeTXT, Rcode: dns.RcodeSuccess, AA: true,
					Answer: []string{fmt.Sprintf("%s 60 IN TXT %q", acmeName, value)}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}})
				if out, ok := updateTool(t, path, s, tcp, fmt.Sprintf("update delete %s 60 TXT %q", acmeName, value)); !ok {
					t.Fatalf("delete (tcp %v) failed:\n%s", tcp, out)
				}
				checkQuery(t, "udp", s.udp, tc{Qname: acmeName, Qtype: dns.TypeTXT, Rcode: dns.RcodeNameError, AA: true,
					Ns: []string{negSOA(s.Serials()["chat.example.com."])}})
			}
			out, ok := updateTool(t, path, s, false, "update add _acme-challenge.hs.chat.example.com. 60 TXT \"x\"")
			if ok || !strings.Contains(out, "REFUSED") {
				t.Errorf("update outside the policy: succeeded=%v, output:\n%s\nwant a failure saying REFUSED", ok, out)
			}
			if got := s.Serials()["chat.example.com."]; got != 5 {
				t.Errorf("serial %d after two adds and two deletes, want 5", got)
			}
		})
	}
}
