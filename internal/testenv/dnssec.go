package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Programs returns the paths of progs, or skips the test naming the first
// one missing and the Debian package that has it (pkgs[i] for progs[i]).
func Programs(t testing.TB, progs, pkgs []string) []string {
	t.Helper()
	var out []string
	for i, p := range progs {
		path, err := exec.LookPath(p)
		if err != nil {
			t.Skipf("%s not installed (apt-get install %s): skipping", p, pkgs[i])
		}
		out = append(out, path)
	}
	return out
}

// SignZone signs text, a master file of zone origin, with an ECDSA P-256
// key made by BIND's dnssec-keygen, and writes the signed zone
// (dnssec-signzone) to dir/<file>. The key is made on the first call for
// a file and used again by the next ones, so a parent can be signed again
// with new DS records under the same trust anchor. It returns the key's
// DNSKEY record, in presentation format: the trust anchor of a resolver
// when origin is the root. flags go to dnssec-signzone, e.g. "-e", "+3600"
// for signatures that expire an hour from now. It skips the test without
// bind9-utils.
func SignZone(t testing.TB, dir, origin, file, text string, flags ...string) string {
	t.Helper()
	tools := Programs(t, []string{"dnssec-keygen", "dnssec-signzone"}, []string{"bind9-utils", "bind9-utils"})
	keys := filepath.Join(dir, "keys-"+file)
	if err := os.MkdirAll(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	made, _ := filepath.Glob(filepath.Join(keys, "*.key"))
	var base string
	if len(made) > 0 {
		base = strings.TrimSuffix(filepath.Base(made[0]), ".key")
	} else {
		out, err := exec.Command(tools[0], "-q", "-K", keys, "-a", "ECDSAP256SHA256", "-f", "KSK", "-n", "ZONE", origin).CombinedOutput()
		if err != nil {
			t.Fatalf("dnssec-keygen: %v\n%s", err, out)
		}
		base = strings.TrimSpace(string(out))
	}
	pub, err := os.ReadFile(filepath.Join(keys, base+".key"))
	if err != nil {
		t.Fatal(err)
	}
	var dnskey string
	for _, line := range strings.Split(string(pub), "\n") {
		if line != "" && !strings.HasPrefix(line, ";") {
			dnskey = line
		}
	}
	unsigned := filepath.Join(dir, file+".unsigned")
	if err := os.WriteFile(unsigned, []byte(text+dnskey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-q", "-K", keys, "-d", keys, "-o", origin, "-z", "-f", filepath.Join(dir, file)}, flags...)
	if out, err := exec.Command(tools[1], append(args, unsigned)...).CombinedOutput(); err != nil {
		t.Fatalf("dnssec-signzone: %v\n%s", err, out)
	}
	return dnskey
}

// RunUnbound runs a validating Unbound on 127.0.0.1:port that trusts
// anchor (a DNSKEY or DS record of the root) and sends the queries of each
// zone in stubs to its address (host@port), "." included. It answers test.
// names like any other, keeps no negative answers and does not synthesise
// answers from NSEC records it holds (RFC 8198), so each query reaches the
// zone's server. It returns once Unbound answers. It skips the test
// without unbound.
func RunUnbound(t testing.TB, dir string, port int, anchor string, stubs map[string]string) *Daemon {
	t.Helper()
	unbound := Programs(t, []string{"unbound"}, []string{"unbound"})[0]
	var conf strings.Builder
	fmt.Fprintf(&conf, `server:
  interface: 127.0.0.1
  port: %d
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  username: ""
  chroot: ""
  directory: %q
  pidfile: %q
  use-syslog: no
  logfile: ""
  verbosity: 1
  val-log-level: 2
  log-servfail: yes
  num-threads: 1
  module-config: "validator iterator"
  qname-minimisation: no
  aggressive-nsec: no
  cache-max-negative-ttl: 0
  infra-host-ttl: 5
  local-zone: "test." nodefault
  trust-anchor: %q
`, port, dir, filepath.Join(dir, "unbound.pid"), anchor)
	zones := make([]string, 0, len(stubs))
	for z := range stubs {
		zones = append(zones, z)
	}
	sort.Strings(zones)
	for _, z := range zones {
		fmt.Fprintf(&conf, "stub-zone:\n  name: %q\n  stub-addr: %s\n  stub-prime: no\n", z, stubs[z])
	}
	conf.WriteString("remote-control:\n  control-enable: no\n")
	path := filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(path, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	d := RunDaemon(t, unbound, "-d", "-c", path)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cl := &dns.Client{Timeout: 500 * time.Millisecond}
	deadline := time.Now().Add(10 * time.Second)
	for {
		q := new(dns.Msg)
		q.SetQuestion(".", dns.TypeSOA)
		if _, _, err := cl.Exchange(q, addr); err == nil {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("unbound did not start answering on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
