package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The world's addresses, all on the namespace's loopback interface. Every
// DNS server listens on port 53 of its own address, as on the internet,
// so resolvers need no port tricks.
const (
	resolverIP  = "127.0.0.1" // Unbound, the resolver of every process; Pebble on 14000/15000
	rootIP      = "127.0.0.2" // NSD serving the root zone, the parent of chat.example.test
	signpostIP  = "127.0.0.3" // signpost: DNS, HTTPS, HTTP; ns1.chat.example.test
	secondaryIP = "127.0.0.4" // NSD copying chat.example.test from signpost; ns2.chat.example.test
	hsIP        = "127.0.0.5" // Dendrite for chat.example.test, at hs.chat.example.test:8448
	otherIP     = "127.0.0.6" // Dendrite for other.test, at other.test:8448

	serverName = "chat.example.test"
	hsName     = "hs.chat.example.test"
	otherName  = "other.test"
)

// Secrets of the world (test-only, made for it).
const (
	xfrKey    = "xfr.chat.example.test."
	xfrSecret = "c2lnbnBvc3QgZTJlIHRyYW5zZmVyIGtleSwgdGVzdA=="
	hsKey     = "hs.chat.example.test."
	hsSecret  = "c2lnbnBvc3QgZTJlIGhvbWVzZXJ2ZXIga2V5LCB0ZXN0IG9ubHk="
)

// waitLimit bounds every wait for another process. It is a failure guard,
// not a synchronisation: the waits poll for the state itself.
const waitLimit = 60 * time.Second

// world is the test world: the programs, their files and their logs.
type world struct {
	t       *testing.T // the test or subtest running now
	top     *testing.T // the test that owns the world
	bin     string     // signpost, dendrite, pebble
	dir     string     // configuration and data of every program
	logs    string     // one log file per program, kept when the test fails
	root    string     // PEM file of Pebble's issuing root: the only root anyone trusts
	roots   *x509.CertPool
	minica  string // PEM file of the root of Pebble's own API certificate
	mu      sync.Mutex
	running map[string]*proc
}

func newWorld(t *testing.T) *world {
	t.Helper()
	if reason := os.Getenv(envSkip); reason != "" {
		skip(t, reason)
	}
	logs, err := os.MkdirTemp("", "signpost-e2e-logs-")
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, top: t, bin: os.Getenv(envBin), dir: t.TempDir(), logs: logs, running: map[string]*proc{}}
	w.minica = filepath.Join(os.Getenv(envPebble), "test/certs/pebble.minica.pem")
	t.Cleanup(w.close)
	return w
}

// close stops every program; on failure it prints the end of every log
// and keeps them all.
func (w *world) close() {
	w.mu.Lock()
	procs := make([]*proc, 0, len(w.running))
	for _, p := range w.running {
		procs = append(procs, p)
	}
	w.mu.Unlock()
	for _, p := range procs {
		p.stop()
	}
	if !w.top.Failed() {
		os.RemoveAll(w.logs)
		return
	}
	entries, _ := os.ReadDir(w.logs)
	for _, e := range entries {
		path := filepath.Join(w.logs, e.Name())
		w.top.Logf("---- last lines of %s:\n%s", path, tail(path, 40))
	}
	w.top.Logf("all logs kept in %s", w.logs)
}

// skip skips the test, or fails it where the test must run (CI).
func skip(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv(envRequire) != "" {
		t.Fatalf("e2e: cannot run, and %s is set: %s", envRequire, reason)
	}
	t.Skip("e2e: " + reason)
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// ---------------------------------------------------------------- processes

// proc is one running program; its output goes to logs/<name>.log, and a
// restart appends to the same file.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// start runs a program in the background, as name.
func (w *world) start(name string, env []string, prog string, args ...string) *proc {
	w.t.Helper()
	log, err := os.OpenFile(filepath.Join(w.logs, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		w.t.Fatal(err)
	}
	fmt.Fprintf(log, "==== %s %s %s\n", time.Now().Format(time.RFC3339Nano), prog, strings.Join(args, " "))
	cmd := exec.Command(prog, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		w.t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(p.done)
	}()
	w.mu.Lock()
	w.running[name] = p
	w.mu.Unlock()
	return p
}

// stop ends the program named name with SIGTERM (SIGKILL after 10 s) and
// waits for it.
func (w *world) stop(name string) {
	w.mu.Lock()
	p := w.running[name]
	delete(w.running, name)
	w.mu.Unlock()
	if p != nil {
		p.stop()
	}
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// exited reports whether the program has ended, with its log's end.
func (p *proc) exited(w *world) error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v\n%s", p.name, p.cmd.ProcessState, tail(filepath.Join(w.logs, p.name+".log"), 20))
	default:
		return nil
	}
}

// eventually polls check until it returns nil, failing the test with the
// last error after waitLimit. Polling is the only way to see another
// process reach a state; p, if set, fails the wait early when it exits.
func (w *world) eventually(what string, p *proc, check func() error) {
	w.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		err := check()
		if err == nil {
			return
		}
		if p != nil {
			if perr := p.exited(w); perr != nil {
				w.t.Fatalf("%s: %v", what, perr)
			}
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("%s: not within %s; last: %v", what, waitLimit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (w *world) write(name, content string) string {
	w.t.Helper()
	path := filepath.Join(w.dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		w.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return path
}

// ---------------------------------------------------------------- Pebble

// startPebble runs Pebble, Let's Encrypt's test CA, validating challenges
// on ports 80 and 443 of whatever the world's resolver says a name is, and
// saves its issuing root.
func (w *world) startPebble() {
	w.t.Helper()
	pebble := os.Getenv(envPebble)
	conf := w.write("pebble.json", fmt.Sprintf(`{"pebble": {
  "listenAddress": "%[1]s:14000",
  "managementListenAddress": "%[1]s:15000",
  "certificate": %[2]q,
  "privateKey": %[3]q,
  "httpPort": 80,
  "tlsPort": 443,
  "ocspResponderURL": "",
  "externalAccountBindingRequired": false
}}`, resolverIP, filepath.Join(pebble, "test/certs/localhost/cert.pem"), filepath.Join(pebble, "test/certs/localhost/key.pem")))
	p := w.start("pebble", []string{"PEBBLE_VA_NOSLEEP=1"}, filepath.Join(w.bin, "pebble"),
		"-config", conf, "-dnsserver", resolverIP+":53")

	minica, err := os.ReadFile(w.minica)
	if err != nil {
		w.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(minica)
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	var root []byte
	w.eventually("Pebble's root certificate", p, func() error {
		resp, err := cl.Get("https://" + resolverIP + ":15000/roots/0")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		root, err = io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %s", resp.Status)
		}
		return err
	})
	w.root = w.write("pebble-root.pem", string(root))
	w.roots = x509.NewCertPool()
	if !w.roots.AppendCertsFromPEM(root) {
		w.t.Fatalf("Pebble's root is not PEM: %q", root)
	}
}

// ---------------------------------------------------------------- DNS

// rootZone is the parent: it delegates chat.example.test to signpost and
// the secondary, and gives other.test (a homeserver without delegation,
// found at its name, port 8448) its address.
const rootZone = `$TTL 300
.                       IN SOA a.root.test. hostmaster.root.test. 1 3600 600 86400 60
.                       IN NS  a.root.test.
a.root.test.            IN A   ` + rootIP + `
chat.example.test.      IN NS  ns1.chat.example.test.
chat.example.test.      IN NS  ns2.chat.example.test.
ns1.chat.example.test.  IN A   ` + signpostIP + `
ns2.chat.example.test.  IN A   ` + secondaryIP + `
other.test.             IN A   ` + otherIP + `
`

// nsdConf is the server: part of an nsd.conf for a foreground NSD on
// ip:53 keeping its files in dir; zones follows.
func nsdConf(dir, ip, zones string) string {
	return fmt.Sprintf(`server:
  ip-address: %[2]s
  port: 53
  username: ""
  chroot: ""
  zonesdir: %[1]q
  database: ""
  pidfile: %[3]q
  xfrdfile: %[4]q
  zonelistfile: %[5]q
  server-count: 1
  verbosity: 2
remote-control:
  control-enable: no
%[6]s`, dir, ip, filepath.Join(dir, "nsd.pid"), filepath.Join(dir, "xfrd.state"), filepath.Join(dir, "zone.list"), zones)
}

func (w *world) startRoot() {
	w.t.Helper()
	dir := filepath.Join(w.dir, "nsd-root")
	w.write("nsd-root/root.zone", rootZone)
	conf := w.write("nsd-root/nsd.conf", nsdConf(dir, rootIP, "zone:\n  name: \".\"\n  zonefile: \"root.zone\"\n"))
	p := w.start("nsd-root", nil, "nsd", "-d", "-c", conf)
	w.eventually("the root zone served", p, func() error { return soa(rootIP, ".") })
}

// startSecondary runs NSD as ns2.chat.example.test, copying the zone from
// signpost by AXFR with TSIG and taking its NOTIFYs, as the README says;
// it asks from its own address, the one signpost allows transfers to.
// NOTIFY comes from whatever source address the kernel picks (127.0.0.1
// on loopback), so any loopback address may notify, with the key.
func (w *world) startSecondary() *proc {
	w.t.Helper()
	dir := filepath.Join(w.dir, "nsd-secondary")
	conf := w.write("nsd-secondary/nsd.conf", nsdConf(dir, secondaryIP, fmt.Sprintf(`key:
  name: %q
  algorithm: hmac-sha256
  secret: %q
zone:
  name: %q
  zonefile: "chat.example.test.zone"
  request-xfr: %s %s
  outgoing-interface: %s
  allow-notify: 127.0.0.0/8 %s
`, xfrKey, xfrSecret, serverName, signpostIP, xfrKey, secondaryIP, xfrKey)))
	return w.start("nsd-secondary", nil, "nsd", "-d", "-c", conf)
}

// startResolver runs Unbound as the resolver every program uses: it knows
// only the world's root server and follows delegations from there, as a
// resolver on the internet does. It logs every query, so the test can see
// which names a homeserver looked up.
func (w *world) startResolver() {
	w.t.Helper()
	dir := filepath.Join(w.dir, "unbound")
	conf := w.write("unbound/unbound.conf", fmt.Sprintf(`server:
  interface: %[1]s
  port: 53
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  username: ""
  chroot: ""
  directory: %[2]q
  pidfile: %[3]q
  use-syslog: no
  logfile: ""
  log-queries: yes
  verbosity: 1
  num-threads: 1
  module-config: "iterator"
  qname-minimisation: no
  # No caching: Pebble validates through this resolver too, and a cached
  # TXT record of an earlier challenge would fail the next one. Scenario 3
  # restarts it anyway, so that nothing could come from a cache.
  cache-max-ttl: 0
  cache-max-negative-ttl: 0
  infra-host-ttl: 5
  # Unbound answers test. itself (RFC 6761) unless told not to.
  local-zone: "test." nodefault
stub-zone:
  name: "."
  stub-addr: %[4]s
remote-control:
  control-enable: no
`, resolverIP, dir, filepath.Join(dir, "unbound.pid"), rootIP))
	p := w.start("unbound", nil, "unbound", "-d", "-c", conf)
	w.eventually("the resolver answering", p, func() error { return soa(resolverIP, ".") })
}

// resolverQueries returns the queries Unbound has logged so far, one
// "name type" string each, in order.
func (w *world) resolverQueries() []string {
	w.t.Helper()
	f, err := os.Open(filepath.Join(w.logs, "unbound.log"))
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	var qs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "[1764583200] unbound[123:0] info: 127.0.0.1 hs.chat.example.test. A IN"
		_, q, ok := strings.Cut(sc.Text(), " info: 127.0.0.1 ")
		if ok && strings.HasSuffix(q, " IN") {
			qs = append(qs, strings.TrimSuffix(q, " IN"))
		}
	}
	return qs
}

// soa asks ip:53 for zone's SOA and requires an authoritative answer (or
// a recursive one from the resolver).
func soa(ip, zone string) error {
	r, err := ask(ip, zone, dns.TypeSOA)
	if err != nil {
		return err
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		return fmt.Errorf("SOA %s from %s: %s with %d answers", zone, ip, dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	return nil
}

// ask sends one query to ip:53 over UDP, with recursion desired when it
// goes to the resolver.
func ask(ip, name string, qtype uint16) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	q.RecursionDesired = ip == resolverIP
	cl := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := cl.Exchange(q, net.JoinHostPort(ip, "53"))
	return r, err
}

// ---------------------------------------------------------------- signpost

// signpostConf is signpost's configuration in the world; httpsListen is
// where its HTTPS server listens (moved away from port 443 to make the
// well-known unreachable).
func (w *world) signpostConf(httpsListen string) string {
	return fmt.Sprintf(`[dns]
listen      = ["%[1]s:53"]
nameservers = ["ns1.chat.example.test", "ns2.chat.example.test"]
hostmaster  = "hostmaster@example.test"
ttl         = "5m"

[http]
listen       = %[2]q
plain_listen = "%[1]s:80"

[acme]
email     = "admin@example.test"
directory = "https://%[3]s:14000/dir"
ca_root   = %[4]q
storage   = %[5]q

[[key]]
name   = %[6]q
secret = %[7]q

[[key]]
name      = %[8]q
algorithm = "hmac-sha512"
secret    = %[9]q

[[secondary]]
address = %[10]q
key     = %[6]q

[[update]]
key   = %[8]q
names = [%[11]q, %[12]q]

[[zone]]
origin    = %[11]q
addresses = [%[1]q]
records   = ["ns2 IN A %[10]s", "hs IN A %[13]s"]

[[delegation]]
server_name = %[11]q
server      = "%[12]s:8448"
client      = "https://%[12]s:8448"
`, signpostIP, httpsListen, resolverIP, w.minica, filepath.Join(w.dir, "signpost-state"),
		xfrKey, xfrSecret, hsKey, hsSecret, secondaryIP, serverName, hsName, hsIP)
}

// startSignpost runs `signpost serve` with its HTTPS on httpsListen.
func (w *world) startSignpost(httpsListen string) *proc {
	w.t.Helper()
	conf := w.write("signpost.toml", w.signpostConf(httpsListen))
	return w.start("signpost", nil, filepath.Join(w.bin, "signpost"), "serve", "-config", conf)
}

// httpClient trusts only Pebble's root and resolves through the world.
func (w *world) httpClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: w.roots}, DisableKeepAlives: true},
		Timeout:   20 * time.Second,
	}
}

// directClient is httpClient for the test's own requests to the
// homeservers: it connects to their addresses without asking DNS (TLS
// still checks the name), so that the resolver's log holds only what the
// homeservers themselves looked up.
func (w *world) directClient() *http.Client {
	direct := map[string]string{hsName: hsIP, otherName: otherIP}
	cl := w.httpClient()
	cl.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if ip, ok := direct[host]; ok {
			addr = net.JoinHostPort(ip, port)
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	return cl
}

// wellKnown fetches https://chat.example.test/.well-known/matrix/server
// through the world's DNS, verifying the certificate against Pebble's
// root, and returns the body.
func (w *world) wellKnown() (string, error) {
	resp, err := w.httpClient().Get("https://" + serverName + "/.well-known/matrix/server")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	return string(body), err
}

// isRefused reports whether err is a refused TCP connection.
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// ctx returns a context bounded by waitLimit.
func (w *world) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	w.t.Cleanup(cancel)
	return ctx
}
