package acme_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/signpost-dev/signpost/acme"
	"github.com/signpost-dev/signpost/config"
	"github.com/signpost-dev/signpost/httpserver"
	"github.com/signpost-dev/signpost/internal/pgtest"
	"github.com/signpost-dev/signpost/internal/testenv"
)

// The tests in this file run several signpost instances on one machine,
// each on its own loopback address (127.0.0.1, .2, .3) with the same
// ports, all with acme.storage naming one PostgreSQL database. Pebble
// validates challenges at the address the zone gives the names, so the
// tests choose which instance answers.

// sharedEnv is an env whose storage is a fresh database of a throw-away
// PostgreSQL cluster, which it also returns.
func sharedEnv(t *testing.T) (*env, *pgtest.Server) {
	t.Helper()
	pg := pgtest.Start(t) // first, so its cleanup runs after the instances'
	e := newEnv(t, pebbleOptions{})
	e.storage = pg.NewDatabase("shared")
	return e, pg
}

// host returns addr with its host replaced by 127.0.0.<n>.
func host(t testing.TB, addr string, n int) string {
	t.Helper()
	return net.JoinHostPort("127.0.0."+strconv.Itoa(n), strconv.Itoa(port(t, addr)))
}

// startNth starts instance n (1, 2, 3) on 127.0.0.<n>, logging with
// instance=<n>.
func (e *env) startNth(mod *config.Model, n int) *instance {
	e.t.Helper()
	return e.startOn(mod, host(e.t, e.plainAddr, n), host(e.t, e.tlsAddr, n), e.log.With("instance", strconv.Itoa(n)))
}

// served waits until instance n answers a handshake for name with a
// certificate for it that chains to Pebble's root, and returns the leaf.
// The limit is a failure guard.
func (e *env) served(n int, name string) *x509.Certificate {
	e.t.Helper()
	leaf, err := e.serving(n, name, time.Now().Add(waitLimit))
	if err != nil {
		e.t.Fatalf("%v (waited %s)", err, waitLimit)
	}
	return leaf
}

// serving is served with the caller's deadline, returning why not rather
// than failing the test. Polling: a certificate loaded by another
// instance's work shows only in the handshake.
func (e *env) serving(n int, name string, deadline time.Time) (*x509.Certificate, error) {
	e.t.Helper()
	addr := host(e.t, e.tlsAddr, n)
	for {
		leaf, err := leafAt(addr, name, e.roots())
		if err == nil {
			return leaf, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("instance %d does not serve %s: %v", n, name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func leafAt(addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &tls.Dialer{Config: &tls.Config{ServerName: name, RootCAs: roots}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	leaf := c.(*tls.Conn).ConnectionState().PeerCertificates[0]
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != name {
		return nil, fmt.Errorf("certificate for %q, want %q", leaf.DNSNames, name)
	}
	return leaf, nil
}

// TestSharedChallengeAnsweredByAnother: instance 1, in a process of its
// own, orders x.example.test; the name points at instance 2, in this
// process, which manages no name at all and answers Pebble's HTTP-01
// request from the challenge instance 1 wrote into the shared storage
// (certmagic keeps challenges in memory too, shared by every instance in
// one process, so the orderer must be another process for storage to be
// what carries it). Then instances 2 and 3 take the name up and serve the
// same certificate from storage, with no second order and one account.
func TestSharedChallengeAnsweredByAnother(t *testing.T) {
	e, _ := sharedEnv(t)
	const name = "x.example.test"
	s := site{serverNames: []string{name}, challenges: []string{config.ChallengeHTTP01}, addresses: "127.0.0.2"}
	all := e.model(s)
	empty := s
	empty.serverNames = nil
	none := e.model(empty)

	mark := e.logs.mark()
	two := e.startNth(none, 2)
	e.dns.SetModel(all)
	one := e.spawn(s, 1)
	one.waitLine("certificate obtained")
	answered := e.logs.waitAttrs(t, mark, "served key authentication", map[string]string{"name": name, "challenge": "http-01"})
	if answered.Attrs["instance"] != "2" || answered.Attrs["distributed"] != "true" {
		t.Errorf("challenge answered with %v; want instance 2, distributed (from storage)", answered.Attrs)
	}
	first := e.served(1, name)

	two.setModel(all)
	e.startNth(all, 3)
	for _, n := range []int{2, 3} {
		if got := e.served(n, name); !got.Equal(first) {
			t.Errorf("instance %d serves serial %s, want %s (the one instance 1 obtained)", n, got.SerialNumber, first.SerialNumber)
		}
	}
	if got := e.pebble.orders.Load(); got != 1 {
		t.Errorf("Pebble saw %d orders, want 1", got)
	}
	if got := e.pebble.accounts.Load(); got != 1 {
		t.Errorf("Pebble saw %d accounts, want 1", got)
	}
	if got := len(e.logs.find(mark, "certificate obtained")); got != 0 {
		t.Errorf("instances 2 and 3 logged \"certificate obtained\" %d times, want 0", got)
	}
}

// TestSharedOrdersOnce: three instances with the same configuration start
// together and race for three names. Each name is ordered once (by
// whichever instance takes its lock), every instance serves every name
// with the same certificate, and one ACME account is registered. The
// instances share this process, so only the storage's locks keep them
// apart: certmagic takes no other lock around an obtain.
func TestSharedOrdersOnce(t *testing.T) {
	e, _ := sharedEnv(t)
	names := []string{"a.example.test", "b.example.test", "c.example.test"}
	mod := e.model(site{serverNames: names, challenges: []string{config.ChallengeTLSALPN01}})
	mark := e.logs.mark()
	for n := 1; n <= 3; n++ {
		e.startNth(mod, n)
	}
	for _, name := range names {
		first := e.served(1, name)
		for n := 2; n <= 3; n++ {
			if got := e.served(n, name); !got.Equal(first) {
				t.Errorf("%s: instance %d serves serial %s, instance 1 %s; want one certificate", name, n, got.SerialNumber, first.SerialNumber)
			}
		}
	}
	if got, want := e.pebble.orders.Load(), int64(len(names)); got != want {
		t.Errorf("Pebble saw %d orders, want %d (one per name)", got, want)
	}
	if got := e.pebble.accounts.Load(); got != 1 {
		t.Errorf("Pebble saw %d accounts, want 1", got)
	}
	byWhom := map[string]string{}
	for _, r := range e.logs.find(mark, "certificate obtained") {
		if prev, ok := byWhom[r.Attrs["name"]]; ok {
			t.Errorf("%s obtained by instance %s and again by %s", r.Attrs["name"], prev, r.Attrs["instance"])
		}
		byWhom[r.Attrs["name"]] = r.Attrs["instance"]
	}
	t.Logf("ordered by instance: %v", byWhom)
}

// TestSharedServeProcesses is TestSharedOrdersOnce with real `signpost
// serve` processes, built from cmd/signpost: three of them, one per
// loopback address, race for three names with one PostgreSQL database as
// acme.storage. Their configurations differ only in [http]'s listen
// addresses, which they must: serve binds them without SO_REUSEPORT. DNS is
// off in them (dns.listen = []); the test's DNS server stands in for the
// world's and points the names at instance 1, so Pebble validates every
// challenge there, whoever ordered it: instance 1 answers the others'
// challenges from storage. Each name is ordered once, all instances serve
// the same certificate for it, and one account is registered.
func TestSharedServeProcesses(t *testing.T) {
	e, _ := sharedEnv(t)
	bin := buildSignpost(t)
	names := []string{"a.example.test", "b.example.test", "c.example.test"}
	s := site{serverNames: names, challenges: []string{config.ChallengeTLSALPN01}, dnsOff: true}
	world := s
	world.dnsOff = false
	e.dns.SetModel(e.model(world))
	for n := 1; n <= 3; n++ {
		cfg := writeConfig(t, e.tomlOn(s, host(t, e.tlsAddr, n), host(t, e.plainAddr, n)))
		startChild(t, exec.Command(bin, "serve", "-config", cfg), n)
	}

	// One deadline for all, and errors rather than a stop at the first,
	// so that a failure also shows the counts below.
	deadline := time.Now().Add(waitLimit)
	for _, name := range names {
		var first *x509.Certificate
		for n := 1; n <= 3; n++ {
			got, err := e.serving(n, name, deadline)
			switch {
			case err != nil:
				t.Errorf("%v (waited until %s)", err, deadline.Format(time.TimeOnly))
			case first == nil:
				first = got
			case !got.Equal(first):
				t.Errorf("%s: instance %d serves serial %s, an instance before it %s; want one certificate", name, n, got.SerialNumber, first.SerialNumber)
			}
		}
	}
	byName, _ := e.pebble.ordersByName()
	if got, want := e.pebble.orders.Load(), int64(len(names)); got != want {
		t.Errorf("Pebble saw %d orders, want %d (one per name); by name: %v", got, want, byName)
	}
	for _, name := range names {
		if byName[name] != 1 {
			t.Errorf("Pebble saw %d orders for %s, want 1", byName[name], name)
		}
	}
	if got := e.pebble.accounts.Load(); got != 1 {
		t.Errorf("Pebble saw %d accounts, want 1", got)
	}
}

// buildSignpost builds cmd/signpost and returns the binary's path.
func buildSignpost(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "signpost")
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command, to build signpost: %v", err)
	}
	if out, err := exec.Command(goCmd, "build", "-o", bin, "github.com/signpost-dev/signpost/cmd/signpost").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestSharedDatabaseRestart: with PostgreSQL stopped, instances keep
// serving the certificates they have; a name added meanwhile fails with a
// storage fault and is retried; once PostgreSQL is back, it is obtained
// once and every instance serves it.
func TestSharedDatabaseRestart(t *testing.T) {
	e, pg := sharedEnv(t)
	const x, y = "x.example.test", "y.example.test"
	s := site{serverNames: []string{x}, challenges: []string{config.ChallengeHTTP01}}
	mod := e.model(s)
	one, two := e.startNth(mod, 1), e.startNth(mod, 2)
	certX := e.served(1, x)
	if got := e.served(2, x); !got.Equal(certX) {
		t.Fatalf("instance 2 serves serial %s for %s, want %s", got.SerialNumber, x, certX.SerialNumber)
	}

	pg.Stop()
	mark := e.logs.mark()
	for n := 1; n <= 2; n++ {
		if got, err := leafAt(host(t, e.tlsAddr, n), x, e.roots()); err != nil || !got.Equal(certX) {
			t.Errorf("database down: instance %d serves %v, %v; want the cached certificate", n, got, err)
		}
	}
	s.serverNames = []string{x, y}
	mod = e.model(s)
	one.setModel(mod)
	two.setModel(mod)
	for _, n := range []string{"1", "2"} {
		failed := e.logs.waitAttrs(t, mark, "no certificate yet; will retry", map[string]string{"name": y, "instance": n})
		if !strings.Contains(failed.Attrs["error"], "storage") {
			t.Errorf("instance %s: failure %q, want a storage fault", n, failed.Attrs["error"])
		}
	}
	if got := e.pebble.orders.Load(); got != 1 {
		t.Errorf("database down: Pebble saw %d orders, want 1 (for %s only)", got, x)
	}

	pg.Restart()
	// The keepers retry on their back-off; a reload, as an operator would
	// send once the database is back, retries at once.
	one.setModel(mod)
	two.setModel(mod)
	certY := e.served(1, y)
	if got := e.served(2, y); !got.Equal(certY) {
		t.Errorf("instance 2 serves serial %s for %s, want %s", got.SerialNumber, y, certY.SerialNumber)
	}
	if got := e.pebble.orders.Load(); got != 2 {
		t.Errorf("Pebble saw %d orders, want 2 (one per name)", got)
	}
}

// TestSharedHolderKilled: an instance in another process takes the lock
// for x and places the order, but cannot get it validated (x points at
// 127.0.0.2, where nobody listens yet), so it waits to retry while it
// holds the lock. It is killed with SIGKILL: no clean-up runs. Instance 2
// then starts on 127.0.0.2, waits for the dead holder's lease to run out,
// takes the lock over and obtains the certificate.
func TestSharedHolderKilled(t *testing.T) {
	e, _ := sharedEnv(t)
	const name = "x.example.test"
	s := site{serverNames: []string{name}, challenges: []string{config.ChallengeHTTP01}, addresses: "127.0.0.2"}
	mod := e.model(s)
	e.dns.SetModel(mod)

	child := e.spawn(s, 1)
	// certmagic logs "will retry" after the failed validation, and keeps
	// the lock until its retry, a minute later.
	child.waitLine("will retry")
	if got := e.pebble.orders.Load(); got != 1 {
		t.Fatalf("Pebble saw %d orders before the kill, want 1", got)
	}
	lockOwner := lockRow(t, e.storage, "issue_cert_"+name)
	if lockOwner == "" {
		t.Fatal("no lock row for the child's obtain")
	}
	child.kill()

	mark := e.logs.mark()
	e.startNth(mod, 2)
	e.logs.waitAttrs(t, mark, "certificate obtained", map[string]string{"name": name, "instance": "2"})
	e.served(2, name)
	if got := e.pebble.orders.Load(); got != 2 {
		t.Errorf("Pebble saw %d orders, want 2 (the dead holder's and the one that finished)", got)
	}
	if got := lockRow(t, e.storage, "issue_cert_"+name); got != "" {
		t.Errorf("lock row still held by %q after the obtain finished", got)
	}
}

// child is a signpost instance in a process of its own: the test binary
// (runInstance, started by TestMain) or a built signpost.
type child struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan string   // its log lines, closed when it exits
	read  chan struct{} // closed when its output is read to the end
}

// spawn starts instance n of s in a process of its own, on 127.0.0.<n>,
// and kills it when the test ends.
func (e *env) spawn(s site, n int) *child {
	t := e.t.(*testing.T)
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "SIGNPOST_TEST_INSTANCE="+writeConfig(t, e.toml(s)),
		"SIGNPOST_TEST_PLAIN="+host(t, e.plainAddr, n), "SIGNPOST_TEST_TLS="+host(t, e.tlsAddr, n))
	return startChild(t, cmd, n)
}

// writeConfig writes text to a configuration file of its own and returns
// its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "signpost.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startChild starts cmd as instance n, logging its output to the test,
// and kills it when the test ends, or when the test binary dies first.
func startChild(t *testing.T, cmd *exec.Cmd, n int) *child {
	t.Helper()
	testenv.DieWithParent(cmd)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, cmd: cmd, lines: make(chan string, 1000), read: make(chan struct{})}
	t.Cleanup(c.kill)
	go func() {
		defer close(c.read)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			t.Log("instance " + strconv.Itoa(n) + ": " + sc.Text())
			select {
			case c.lines <- sc.Text():
			default: // nobody waits for it
			}
		}
		close(c.lines)
	}()
	return c
}

// waitLine waits for a log line of the child holding msg="<msg>".
func (c *child) waitLine(msg string) {
	c.t.Helper()
	deadline := time.After(waitLimit)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				c.t.Fatalf("child exited before logging %q", msg)
			}
			if strings.Contains(l, "msg=\""+msg+"\"") {
				return
			}
		case <-deadline:
			c.t.Fatalf("child did not log %q within %s", msg, waitLimit)
		}
	}
}

// kill ends the child with SIGKILL: nothing of it runs after. It waits
// for the output to be read to the end first, as os/exec asks of a pipe's
// reader, so no line is logged after the test has ended.
func (c *child) kill() {
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.read
	c.cmd.Wait()
}

// lockRow returns the owner of lock name, or "" if it is not held.
func lockRow(t *testing.T, url, name string) string {
	t.Helper()
	var owner string
	err := pgtest.QueryRow(t, url, []any{&owner}, "SELECT owner FROM signpost_certmagic_locks WHERE name = $1", name)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatal(err)
	}
	return owner
}

// TestMain runs this test binary as one signpost instance instead of the
// tests when spawn starts it so (SIGNPOST_TEST_INSTANCE names its config).
func TestMain(m *testing.M) {
	if cfgFile := os.Getenv("SIGNPOST_TEST_INSTANCE"); cfgFile != "" {
		err := runInstance(cfgFile)
		fmt.Fprintln(os.Stderr, "instance:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// runInstance serves the acme and https parts of the config in cfgFile, on
// SIGNPOST_TEST_PLAIN and SIGNPOST_TEST_TLS, until the process is killed.
func runInstance(cfgFile string) error {
	mod, err := config.Load(cfgFile, config.Options{})
	if err != nil {
		return err
	}
	plain, err := net.Listen("tcp", os.Getenv("SIGNPOST_TEST_PLAIN"))
	if err != nil {
		return err
	}
	tl, err := net.Listen("tcp", os.Getenv("SIGNPOST_TEST_TLS"))
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))
	mgr, err := acme.New(acme.Options{Logger: log, ACME: mod.ACME, PlainAddr: plain.Addr().String(), TLSAddr: tl.Addr().String()})
	if err != nil {
		return err
	}
	hs := httpserver.New(httpserver.Options{Logger: log, TLSConfig: mgr.TLSConfig(), WrapPlain: mgr.HTTPHandler})
	hs.SetModel(mod)
	go hs.ServePlain(plain)
	go hs.ServeTLS(tl)
	if err := mgr.SetModel(context.Background(), mod); err != nil {
		return err
	}
	select {} // until killed
}
