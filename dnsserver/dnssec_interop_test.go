package dnsserver

import (
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

// validatedTOML is served signed under a test root: chat.example.test
// with what a Matrix deployment needs, and broken.test, whose signatures
// the test makes with a key other than the one published. %d is the port
// of the NSD secondary.
const validatedTOML = `
[dns]
nameservers = ["ns1.chat.example.test"]
hostmaster = "hostmaster@example.test"
ttl = "1h"
dnssec = true

[[zone]]
origin = "chat.example.test"
addresses = ["127.0.0.1"]
records = [
  "hs 300 IN A 198.51.100.7",
  "hs 300 IN AAAA 2001:db8::7",
  "*.wild 300 IN TXT \"wild\"",
  "child 300 IN NS ns.elsewhere.test.",
]

[[zone]]
origin = "broken.test"
addresses = ["127.0.0.1"]

[[delegation]]
server_name = "chat.example.test"
server = "hs.chat.example.test:8448"
client = "https://hs.chat.example.test"

[[secondary]]
address = "127.0.0.1:%d"
`

// validated is one question to a validating resolver and what it must
// answer: the rcode, the AD bit, and the answer records' data.
type validated struct {
	name   string
	qtype  uint16
	rcode  int
	ad     bool
	answer []string // rdata, in order
}

func checkValidated(t *testing.T, resolver string, cases ...validated) {
	t.Helper()
	cl := &dns.Client{Timeout: 5 * time.Second}
	for _, c := range cases {
		q := new(dns.Msg)
		q.SetQuestion(c.name, c.qtype)
		q.SetEdns0(1232, true)
		r, _, err := cl.Exchange(q, resolver)
		if err != nil {
			t.Errorf("%s %s: %v", c.name, dns.TypeToString[c.qtype], err)
			continue
		}
		var got []string
		for _, rr := range r.Answer {
			if rr.Header().Rrtype == c.qtype {
				got = append(got, strings.TrimPrefix(rr.String(), rr.Header().String()))
			}
		}
		if r.Rcode != c.rcode || r.AuthenticatedData != c.ad || strings.Join(got, "|") != strings.Join(c.answer, "|") {
			t.Errorf("%s %s: got %s AD=%v %q, want %s AD=%v %q", c.name, dns.TypeToString[c.qtype],
				dns.RcodeToString[r.Rcode], r.AuthenticatedData, got, dns.RcodeToString[c.rcode], c.ad, c.answer)
		}
	}
}

// testRoot is a root zone signed by dnssec-signzone and served by NSD,
// delegating zones to signpost on 127.0.0.1 with their DS records.
type testRoot struct {
	t      *testing.T
	dir    string
	port   int
	addr   string // NSD's, host:port
	anchor string // the root's DNSKEY, for resolvers
	nsd    *testenv.Daemon
	serial uint32
}

func newTestRoot(t *testing.T) *testRoot {
	testenv.Programs(t, []string{"nsd"}, []string{"nsd"})
	r := &testRoot{t: t, dir: t.TempDir(), port: testenv.FreePort(t)}
	r.addr = fmt.Sprintf("127.0.0.1:%d", r.port)
	return r
}

// stub is the root's address as Unbound's stub-addr wants it.
func (r *testRoot) stub() string { return strings.Replace(r.addr, ":", "@", 1) }

// serve signs the root with ds, a DS RRset per child, and (re)starts NSD
// with it.
func (r *testRoot) serve(ds map[string][]*dns.DS) {
	t := r.t
	t.Helper()
	r.serial++
	var zone strings.Builder
	fmt.Fprintf(&zone, ". 3600 IN SOA ns.root. hostmaster.root. %d 7200 3600 1209600 300\n. 3600 IN NS ns.root.\nns.root. 3600 IN A 127.0.0.1\n", r.serial)
	for origin, records := range ds {
		fmt.Fprintf(&zone, "%s 3600 IN NS ns1.chat.example.test.\n", origin)
		for _, d := range records {
			zone.WriteString(d.String() + "\n")
		}
	}
	zone.WriteString("ns1.chat.example.test. 3600 IN A 127.0.0.1\n")
	r.anchor = testenv.SignZone(t, r.dir, ".", "root.zone", zone.String())
	if r.nsd != nil {
		r.nsd.Stop()
	}
	conf := testenv.NSDServerConf(r.dir, r.port, 1, "  rrl-ratelimit: 0\n") + "zone:\n  name: \".\"\n  zonefile: \"root.zone\"\n"
	path := filepath.Join(r.dir, "nsd.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	r.nsd = testenv.RunDaemon(t, testenv.Programs(t, []string{"nsd"}, []string{"nsd"})[0], "-d", "-c", path)
	testenv.WaitSOA(t, r.addr, ".", r.serial, 10*time.Second)
}

// resolver starts a validating Unbound that trusts the root and sends the
// queries of each of zones to addr (host:port); it returns its address.
func (r *testRoot) resolver(addr string, zones ...string) (string, *testenv.Daemon) {
	r.t.Helper()
	port := testenv.FreePort(r.t)
	stubs := map[string]string{".": r.stub()}
	for _, z := range zones {
		stubs[z] = strings.Replace(addr, ":", "@", 1)
	}
	d := testenv.RunUnbound(r.t, r.t.TempDir(), port, r.anchor, stubs)
	return fmt.Sprintf("127.0.0.1:%d", port), d
}

// TestDNSSECValidated: Unbound, trusting only a test root signed by BIND's
// tools and served by NSD, validates what signpost serves: the SRV
// fallback, addresses, NXDOMAIN, NODATA (at a name and at an empty
// non-terminal), a wildcard, an insecure delegation and a fresh ACME
// challenge all come back with AD, and a zone signed with a key other
// than its DNSKEY comes back SERVFAIL. dnssec-verify and kzonecheck accept
// the zone as transferred, and an NSD secondary serves the copy so that
// it still validates with signpost stopped.
func TestDNSSECValidated(t *testing.T) {
	nsd := testenv.Programs(t, []string{"nsd", "unbound", "dnssec-verify", "kzonecheck"}, []string{"nsd", "unbound", "bind9-utils", "knot"})[0]
	secPort := testenv.FreePort(t)
	m := testModel(t, fmt.Sprintf(validatedTOML, secPort))
	good, wrong := testKey(t, "chat.example.test."), testKey(t, "broken.test.")
	broken := testKey(t, "broken.test.")
	broken.Signer = wrong.Signer // publishes one key, signs with another
	keys := map[string][]ZoneKey{"chat.example.test.": {good}, "broken.test.": {broken}}
	s := startOnePort(t, m, Options{}, func(s *Server) { s.SetKeys(keys) })
	_, sport, _ := strings.Cut(s.tcp, ":")
	root := newTestRoot(t)
	root.serve(map[string][]*dns.DS{
		"chat.example.test.": DS("chat.example.test.", keys["chat.example.test."], 3600),
		"broken.test.":       DS("broken.test.", keys["broken.test."], 3600),
	})
	resolver, unbound := root.resolver(s.udp, "chat.example.test.", "broken.test.")

	// The NSD secondary copies the signed zone now, to serve it later.
	secDir := t.TempDir()
	conf := testenv.NSDServerConf(secDir, secPort, 1, "  rrl-ratelimit: 0\n") + fmt.Sprintf(
		"zone:\n  name: \"chat.example.test\"\n  zonefile: \"chat.zone\"\n  request-xfr: 127.0.0.1@%s NOKEY\n  allow-notify: 127.0.0.1 NOKEY\n", sport)
	confPath := filepath.Join(secDir, "nsd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.RunDaemon(t, nsd, "-d", "-c", confPath)
	secondary := fmt.Sprintf("127.0.0.1:%d", secPort)

	srv := "10 0 8448 hs.chat.example.test."
	cases := []validated{
		{"_matrix-fed._tcp.chat.example.test.", dns.TypeSRV, dns.RcodeSuccess, true, []string{srv}},
		{"hs.chat.example.test.", dns.TypeA, dns.RcodeSuccess, true, []string{"198.51.100.7"}},
		{"hs.chat.example.test.", dns.TypeAAAA, dns.RcodeSuccess, true, []string{"2001:db8::7"}},
		{"chat.example.test.", dns.TypeA, dns.RcodeSuccess, true, []string{"127.0.0.1"}},
		{"nope.chat.example.test.", dns.TypeA, dns.RcodeNameError, true, nil},
		{"_matrix._tcp.chat.example.test.", dns.TypeSRV, dns.RcodeNameError, true, nil},
		{"hs.chat.example.test.", dns.TypeTXT, dns.RcodeSuccess, true, nil},
		{"_tcp.chat.example.test.", dns.TypeSRV, dns.RcodeSuccess, true, nil},
		{"x.wild.chat.example.test.", dns.TypeTXT, dns.RcodeSuccess, true, []string{`"wild"`}},
		{"x.wild.chat.example.test.", dns.TypeA, dns.RcodeSuccess, true, nil},
		{"child.chat.example.test.", dns.TypeDS, dns.RcodeSuccess, true, nil},
	}
	checkValidated(t, resolver, cases...)
	checkValidated(t, resolver, validated{"broken.test.", dns.TypeSOA, dns.RcodeServerFailure, false, nil})

	acme := "_acme-challenge.chat.example.test."
	if err := s.AddTXT(acme, "fresh-token"); err != nil {
		t.Fatal(err)
	}
	checkValidated(t, resolver, validated{acme, dns.TypeTXT, dns.RcodeSuccess, true, []string{`"fresh-token"`}})

	// The zone as transferred passes BIND's and Knot's checks.
	zone := axfrText(t, s.tcp, "chat.example.test.")
	file := filepath.Join(t.TempDir(), "chat.example.test.zone")
	if err := os.WriteFile(file, []byte(zone), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{
		{"dnssec-verify", "-z", "-o", "chat.example.test.", file},
		{"kzonecheck", "-o", "chat.example.test.", "-d", "on", file},
	} {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", cmd[0], err, out)
		} else {
			t.Logf("%s: %s", cmd[0], strings.TrimSpace(string(out)))
		}
	}

	// With signpost stopped, the secondary's copy validates as well.
	testenv.WaitSOA(t, secondary, "chat.example.test.", s.Serials()["chat.example.test."], 15*time.Second)
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	unbound.Stop()
	resolver2, _ := root.resolver(secondary, "chat.example.test.")
	checkValidated(t, resolver2, cases...)
	checkValidated(t, resolver2, validated{acme, dns.TypeTXT, dns.RcodeSuccess, true, []string{`"fresh-token"`}})
}

// axfrText transfers zone from addr and returns it as a master file.
func axfrText(t *testing.T, addr, zone string) string {
	t.Helper()
	q := new(dns.Msg)
	q.SetAxfr(zone)
	env, err := new(dns.Transfer).In(q, addr)
	if err != nil {
		t.Fatal(err)
	}
	var rrs []dns.RR
	for e := range env {
		if e.Error != nil {
			t.Fatal(e.Error)
		}
		rrs = append(rrs, e.RR...)
	}
	var b strings.Builder
	for _, rr := range rrs[:len(rrs)-1] { // the SOA again closes a transfer
		b.WriteString(rr.String() + "\n")
	}
	return b.String()
}

// TestInteropNSDSigned: NSD, serving the signed zones as signpost
// transfers them, answers every lookup case with the DO bit as signpost
// does: the same signatures and the same NSEC proofs.
func TestInteropNSDSigned(t *testing.T) {
	m := testModel(t, signedTOML+"\n[[secondary]]\naddress = \"127.0.0.1:9\"\n")
	s := startOnePort(t, m, Options{UDPReaders: 1}, func(s *Server) { s.SetKeys(testKeys(t, m)) })
	var zones []nsdZone
	for _, z := range m.Zones {
		zones = append(zones, nsdZone{z.Origin, axfrText(t, s.tcp, z.Origin)})
	}
	nsd := startNSDZones(t, zones, "  rrl-ratelimit: 0\n")
	var qs []*dns.Msg
	for _, c := range lookupCases {
		if c.Qtype == dns.TypeAXFR || c.Qtype == dns.TypeIXFR {
			continue // allowed here, to read the signed zones
		}
		if c.EDNS == 0 {
			c.EDNS = 1232
		}
		c.DO = true
		qs = append(qs, query(c))
		c.Qname = mixCase(c.Qname)
		qs = append(qs, query(c))
	}
	for _, name := range []string{"_acme-challenge.chat.example.com.", "zzz.chat.example.com.", "a.chat.example.com.", "b.c.chat.example.com.", "x.y.wild.chat.example.com.", "chat.example.com."} {
		for _, qtype := range []uint16{dns.TypeA, dns.TypeTXT, dns.TypeNSEC, dns.TypeDNSKEY, dns.TypeCDS, dns.TypeRRSIG, dns.TypeDS} {
			q := new(dns.Msg)
			q.SetQuestion(name, qtype)
			q.SetEdns0(4096, true)
			qs = append(qs, q)
		}
	}
	compareNSD(t, s, nsd, qs)
}

// TestDNSSECKeyRoll rolls a zone's key by double signature while
// validating resolvers watch: one that cached the old DNSKEY RRset and DS
// before the roll keeps validating as the new key signs next to the old
// one and as the parent, reading CDS, swaps the DS; a resolver that starts
// after the swap validates through the new DS, and one that starts after
// the old key is gone validates with the new key alone.
func TestDNSSECKeyRoll(t *testing.T) {
	testenv.Programs(t, []string{"nsd", "unbound"}, []string{"nsd", "unbound"})
	const origin = "chat.example.test."
	m := testModel(t, strings.Replace(fmt.Sprintf(validatedTOML, testenv.FreePort(t)), "origin = \"broken.test\"", "origin = \"other.test\"\ndnssec = false", 1))
	k1, k2 := testKey(t, origin), testKey(t, origin)
	s := startOnePort(t, m, Options{}, func(s *Server) { s.SetKeys(map[string][]ZoneKey{origin: {k1}}) })
	root := newTestRoot(t)
	root.serve(map[string][]*dns.DS{origin: DS(origin, []ZoneKey{k1}, 3600)})
	cached, _ := root.resolver(s.udp, origin)
	srv := "10 0 8448 hs.chat.example.test."
	checkValidated(t, cached, validated{"hs.chat.example.test.", dns.TypeA, dns.RcodeSuccess, true, []string{"198.51.100.7"}})
	oldKeys := func(resolver string, want int) {
		t.Helper()
		q := new(dns.Msg).SetQuestion(origin, dns.TypeDNSKEY)
		q.SetEdns0(1232, true)
		r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(q, resolver)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, rr := range r.Answer {
			if rr.Header().Rrtype == dns.TypeDNSKEY {
				n++
			}
		}
		if n != want || !r.AuthenticatedData {
			t.Errorf("%s has %d DNSKEY records (AD=%v), want %d validated", resolver, n, r.AuthenticatedData, want)
		}
	}
	oldKeys(cached, 1)

	// The roll starts: both keys sign, CDS names the new one.
	retiring := k1
	retiring.Retiring = true
	s.SetKeys(map[string][]ZoneKey{origin: {retiring, k2}})
	s.SetModel(m)
	checkValidated(t, cached,
		validated{"hs.chat.example.test.", dns.TypeAAAA, dns.RcodeSuccess, true, []string{"2001:db8::7"}},
		validated{"_matrix-fed._tcp.chat.example.test.", dns.TypeSRV, dns.RcodeSuccess, true, []string{srv}})
	oldKeys(cached, 1) // still the cached RRset: the new key is unknown to it

	// The parent reads CDS and publishes the DS it names.
	q := new(dns.Msg).SetQuestion(origin, dns.TypeCDS)
	r := exchange(t, "udp", s.udp, q)
	var ds []*dns.DS
	for _, rr := range r.Answer {
		cds := rr.(*dns.CDS)
		d := cds.DS
		d.Hdr.Rrtype = dns.TypeDS
		ds = append(ds, &d)
	}
	want := DS(origin, []ZoneKey{k2}, 3600)
	if len(ds) != 1 || !strings.EqualFold(ds[0].Digest, want[0].Digest) || ds[0].KeyTag != k2.DNSKEY.KeyTag() {
		t.Fatalf("CDS during the roll names %v, want the new key's %v", ds, want)
	}
	root.serve(map[string][]*dns.DS{origin: ds})
	checkValidated(t, cached, validated{"x.wild.chat.example.test.", dns.TypeTXT, dns.RcodeSuccess, true, []string{`"wild"`}})
	fresh, _ := root.resolver(s.udp, origin)
	checkValidated(t, fresh,
		validated{"_matrix-fed._tcp.chat.example.test.", dns.TypeSRV, dns.RcodeSuccess, true, []string{srv}},
		validated{"nope.chat.example.test.", dns.TypeA, dns.RcodeNameError, true, nil})
	oldKeys(fresh, 2)

	// Once the old DS has expired from caches, the old key goes.
	s.SetKeys(map[string][]ZoneKey{origin: {k2}})
	s.SetModel(m)
	after, _ := root.resolver(s.udp, origin)
	checkValidated(t, after,
		validated{"_matrix-fed._tcp.chat.example.test.", dns.TypeSRV, dns.RcodeSuccess, true, []string{srv}},
		validated{"hs.chat.example.test.", dns.TypeTXT, dns.RcodeSuccess, true, nil})
	oldKeys(after, 1)
}
