package acme_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"

	"github.com/signpost-dev/signpost/acme"
	"github.com/signpost-dev/signpost/config"
	"github.com/signpost-dev/signpost/dnsserver"
	"github.com/signpost-dev/signpost/httpserver"
	"github.com/signpost-dev/signpost/internal/testenv"
)

// waitLimit bounds every wait for a log line. It is a failure guard, not a
// synchronisation: the tests wait for the line itself.
const waitLimit = 60 * time.Second

// ---------------------------------------------------------------- logs

// record is one captured slog record, attributes flattened to strings.
type record struct {
	Time  time.Time
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

// logs captures slog records for assertions and also writes them to the
// test's output, so a failure shows what happened.
type logs struct {
	mu      sync.Mutex
	records []record
	changed chan struct{} // closed and replaced on every record
}

func newLogs() *logs { return &logs{changed: make(chan struct{})} }

// handler captures every record and writes those at level or above to
// the test's output.
func (l *logs) handler(t testing.TB, level slog.Level) slog.Handler {
	return &logHandler{l: l, out: slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level})}
}

// mark returns a position; waits started from it ignore earlier records.
func (l *logs) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.records)
}

// wait returns the first record at or after since with message msg and
// name attribute name (any name if empty).
func (l *logs) wait(t testing.TB, since int, msg, name string) record {
	t.Helper()
	attrs := map[string]string{}
	if name != "" {
		attrs["name"] = name
	}
	return l.waitAttrs(t, since, msg, attrs)
}

// waitAttrs returns the first record at or after since with message msg
// and every attribute in attrs.
func (l *logs) waitAttrs(t testing.TB, since int, msg string, attrs map[string]string) record {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for _, r := range l.records[since:] {
			match := r.Msg == msg
			for k, v := range attrs {
				match = match && r.Attrs[k] == v
			}
			if match {
				l.mu.Unlock()
				return r
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no log record %q with %v within %s", msg, attrs, waitLimit)
		}
	}
}

// obtained waits until the certificate for name has been obtained and is
// in the cache that TLS handshakes read (two steps: certmagic reports
// the first before doing the second), and returns the obtained record.
func (e *env) obtained(since int, name string) record {
	e.t.Helper()
	r := e.logs.wait(e.t, since, "certificate obtained", name)
	e.logs.wait(e.t, since, "serving certificate", name)
	return r
}

// startObtained starts an instance serving mod and waits until it has
// obtained and serves a certificate for name.
func (e *env) startObtained(mod *config.Model, name string) *instance {
	e.t.Helper()
	mark := e.logs.mark()
	in := e.start(mod)
	e.obtained(mark, name)
	return in
}

// find returns every record since with message msg.
func (l *logs) find(since int, msg string) []record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []record
	for _, r := range l.records[since:] {
		if r.Msg == msg {
			out = append(out, r)
		}
	}
	return out
}

type logHandler struct {
	l     *logs
	out   slog.Handler
	attrs []slog.Attr
}

func (h *logHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	rec := record{Time: r.Time, Level: r.Level, Msg: r.Message, Attrs: map[string]string{}}
	for _, a := range h.attrs {
		rec.Attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.String()
		return true
	})
	h.l.mu.Lock()
	h.l.records = append(h.l.records, rec)
	close(h.l.changed)
	h.l.changed = make(chan struct{})
	h.l.mu.Unlock()
	if !h.out.Enabled(ctx, r.Level) {
		return nil
	}
	return h.out.Handle(ctx, r)
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &logHandler{l: h.l, out: h.out.WithAttrs(as), attrs: append(slices.Clip(h.attrs), as...)}
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	return &logHandler{l: h.l, out: h.out.WithGroup(name), attrs: h.attrs}
}

// ---------------------------------------------------------------- pebble

// pebble is Let's Encrypt's test CA running in this process behind an
// httptest TLS server, with counters of what clients asked it.
type pebble struct {
	srv        *httptest.Server
	ca         *ca.CAImpl
	caPEM      string // file holding the directory server's certificate, for acme.ca_root
	root       *x509.Certificate
	orders     atomic.Int64 // orders created
	challenges atomic.Int64 // challenges the client asked to validate
	accounts   atomic.Int64 // accounts created
	ari        atomic.Int64 // renewal information served
	nonces     atomic.Int64 // requests rejected with badNonce

	mu         sync.Mutex
	nameOrders map[string]int // orders created, by the names they were for
	orderSeq   []string       // the first name of every order created, in order
}

type pebbleOptions struct {
	validity    uint64 // certificate lifetime in seconds; Pebble's 90 days if zero
	nonceReject int    // percentage of good nonces rejected
}

// startPebble runs Pebble whose validation authority resolves names through
// dnsAddr and validates on our plain and TLS ports. It reads its behaviour
// from the environment when constructed, so tests set it with t.Setenv
// (which also keeps them from running in parallel).
func startPebble(t testing.TB, dnsAddr string, httpPort, tlsPort int, o pebbleOptions) *pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_AUTHZREUSE", "0") // else half the orders skip the challenge
	t.Setenv("PEBBLE_WFE_NONCEREJECT", strconv.Itoa(o.nonceReject))

	var buf syncBuffer
	logger := log.New(&buf, "pebble ", log.Lmicroseconds)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble log:\n%s", buf.String())
		}
	})
	store := db.NewMemoryStore()
	profiles := map[string]ca.Profile{"default": {Description: "test", ValidityPeriod: o.validity}}
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, profiles)
	validator := va.New(logger, httpPort, tlsPort, false, dnsAddr, store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)

	p := &pebble{ca: authority}
	p.srv = httptest.NewUnstartedServer(p.count(front.Handler()))
	p.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)

	p.caPEM = filepath.Join(t.TempDir(), "pebble-server.pem")
	writePEM(t, p.caPEM, p.srv.Certificate())
	root, err := x509.ParseCertificate(authority.GetRootCert(0).DER)
	if err != nil {
		t.Fatal(err)
	}
	p.root = root
	return p
}

func (p *pebble) directory() string { return p.srv.URL + wfe.DirectoryPath }

// count wraps Pebble's handler to count what the tests assert on.
func (p *pebble) count(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var names []string
		if r.Method == http.MethodPost && r.URL.Path == "/order-plz" {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			names = orderNames(body)
		}
		rec := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/order-plz" && rec.status == http.StatusCreated:
			p.orders.Add(1)
			p.mu.Lock()
			if p.nameOrders == nil {
				p.nameOrders = map[string]int{}
			}
			for _, n := range names {
				p.nameOrders[n]++
			}
			if len(names) > 0 {
				p.orderSeq = append(p.orderSeq, names[0])
			}
			p.mu.Unlock()
		case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/chalZ/") && rec.status == http.StatusOK:
			p.challenges.Add(1)
		case r.Method == http.MethodPost && r.URL.Path == "/sign-me-up" && rec.status == http.StatusCreated:
			p.accounts.Add(1)
		case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/draft-ietf-acme-ari-03/renewalInfo/") && rec.status == http.StatusOK:
			p.ari.Add(1)
		}
		if bytes.Contains(rec.body, []byte("urn:ietf:params:acme:error:badNonce")) {
			p.nonces.Add(1)
		}
	})
}

// ordersByName returns how many orders Pebble created for each name,
// and the name of each order in the order they were created.
func (p *pebble) ordersByName() (map[string]int, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.nameOrders), slices.Clone(p.orderSeq)
}

// orderNames returns the identifiers of a new-order request: the JWS's
// payload, base64url without padding, holds {"identifiers": [...]}.
func orderNames(body []byte) []string {
	var jws struct{ Payload string }
	if json.Unmarshal(body, &jws) != nil {
		return nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(jws.Payload)
	if err != nil {
		return nil
	}
	var order struct{ Identifiers []struct{ Value string } }
	if json.Unmarshal(payload, &order) != nil {
		return nil
	}
	var names []string
	for _, id := range order.Identifiers {
		names = append(names, id.Value)
	}
	return names
}

type statusWriter struct {
	http.ResponseWriter
	status int
	body   []byte // the first bytes, enough to see a problem type
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if len(w.body) < 512 {
		w.body = append(w.body, b[:min(len(b), 512-len(w.body))]...)
	}
	return w.ResponseWriter.Write(b)
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func writePEM(t testing.TB, path string, cert *x509.Certificate) {
	t.Helper()
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------- env

// env is one signpost host: its DNS server (real dnsserver, UDP and TCP on
// one port), the addresses of its HTTP listeners, a storage directory and
// Pebble. instances of signpost (Manager + httpserver) come and go on it,
// as restarts do.
type env struct {
	t         testing.TB
	dnsWait   time.Duration // Options.DNSWaitTimeout of the Managers started
	logs      *logs
	log       *slog.Logger
	dns       *dnsserver.Server
	dnsAddr   string
	store     acme.TXTStore // what the Manager writes TXT records to; dns unless a test wraps it
	plainAddr string
	tlsAddr   string
	storage   string
	pebble    *pebble
}

func newEnv(t testing.TB, po pebbleOptions) *env {
	t.Helper()
	checkLeaks(t)
	e := &env{t: t, logs: newLogs(), storage: filepath.Join(t.TempDir(), "storage")}
	level := slog.LevelDebug
	if _, bench := t.(*testing.B); bench {
		level = slog.LevelWarn // certmagic's debug lines would bury the figures
	}
	e.log = slog.New(e.logs.handler(t, level))
	e.dns = dnsserver.New(dnsserver.Options{Logger: e.log.With("server", "dns")})
	e.store = e.dns
	pc, l := testenv.ListenDNS(t)
	e.dnsAddr = l.Addr().String()
	serve(t, func() error { return e.dns.ServeUDP(pc) })
	serve(t, func() error { return e.dns.ServeTCP(l) })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.dns.Shutdown(ctx); err != nil {
			t.Errorf("dns shutdown: %v", err)
		}
	})

	// Ports each instance binds again, as a restarted process would, on
	// 127.0.0.1, .2 or .3 (shared_test.go).
	hosts := []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}
	plainPort := testenv.ReusablePort(t, hosts...)
	tlsPort := testenv.ReusablePort(t, hosts...)
	for tlsPort == plainPort {
		tlsPort = testenv.ReusablePort(t, hosts...)
	}
	e.plainAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(plainPort))
	e.tlsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(tlsPort))
	e.pebble = startPebble(t, e.dnsAddr, port(t, e.plainAddr), port(t, e.tlsAddr), po)
	return e
}

// serve runs f until the test's cleanup shuts its server down, and fails
// the test if f returns an error.
func serve(t testing.TB, f func() error) {
	done := make(chan error, 1)
	go func() { done <- f() }()
	t.Cleanup(func() {
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
}

func listenTCP(t testing.TB, addr string) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func port(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// site describes the configuration of a test: the server names to serve
// (all inside zone example.test, which points at 127.0.0.1), extra
// certificate names, and the challenges offered.
type site struct {
	serverNames []string
	extraNames  []string
	challenges  []string
	mode        string
	addresses   string // of the zone, where names point; "127.0.0.1" if empty
	dnsOff      bool   // dns.listen = []: cmd/signpost serves no DNS
	extra       string // more TOML, appended
}

func (e *env) model(s site) *config.Model {
	e.t.Helper()
	text := e.toml(s)
	m, err := config.Parse("test.toml", []byte(text), config.Options{})
	if err != nil {
		e.t.Fatalf("config:\n%s\n%v", text, err)
	}
	return m
}

// toml returns the configuration of s as a file would hold it.
func (e *env) toml(s site) string { return e.tomlOn(s, e.tlsAddr, e.plainAddr) }

// tomlOn is toml with http.listen tlsAddr and http.plain_listen plainAddr.
func (e *env) tomlOn(s site, tlsAddr, plainAddr string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[dns]\nnameservers = [\"ns1.example.test\"]\nhostmaster = \"hostmaster@example.test\"\n")
	if s.dnsOff {
		b.WriteString("listen = []\n")
	}
	if tlsAddr != "" {
		fmt.Fprintf(&b, "[http]\nlisten = %q\nplain_listen = %q\n", tlsAddr, plainAddr)
	}
	fmt.Fprintf(&b, "[acme]\nemail = \"admin@example.test\"\nstorage = %q\n", e.storage)
	if e.pebble != nil {
		fmt.Fprintf(&b, "directory = %q\nca_root = %q\n", e.pebble.directory(), e.pebble.caPEM)
	}
	if s.mode != "" {
		fmt.Fprintf(&b, "mode = %q\n", s.mode)
	}
	fmt.Fprintf(&b, "challenges = %s\n", tomlList(s.challenges))
	fmt.Fprintf(&b, "names = %s\n", tomlList(s.extraNames))
	fmt.Fprintf(&b, "[[zone]]\norigin = \"example.test\"\naddresses = [%q]\nrecords = [\"hs 300 IN A 127.0.0.1\"]\n", cmpOr(s.addresses, "127.0.0.1"))
	for _, n := range s.serverNames {
		fmt.Fprintf(&b, "[[delegation]]\nserver_name = %q\nserver = \"hs.example.test:443\"\nclient = \"https://hs.example.test\"\n", n)
	}
	b.WriteString(s.extra)
	return b.String()
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func tomlList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// instance is one run of signpost's certificate and HTTPS side: a Manager
// wired to an httpserver exactly as cmd/signpost wires them.
type instance struct {
	e    *env
	mgr  *acme.Manager
	http *httpserver.Server
	once sync.Once
	done []chan error
}

// start runs an instance serving mod. Like cmd/signpost, it binds the
// listeners first, then builds the Manager with their addresses, then sets
// the model on DNS and HTTP before acme, so the names resolve before
// anything is asked of the CA.
func (e *env) start(mod *config.Model) *instance {
	e.t.Helper()
	return e.startOn(mod, e.plainAddr, e.tlsAddr, e.log)
}

// startOn starts an instance as start does, on other addresses and with
// another logger: several instances on one host, as the shared-storage
// tests run them.
func (e *env) startOn(mod *config.Model, plainAddr, tlsAddr string, log *slog.Logger) *instance {
	t := e.t
	t.Helper()
	plain, tl := listenTCP(t, plainAddr), listenTCP(t, tlsAddr)
	mgr, err := acme.New(acme.Options{
		Logger:         log,
		ACME:           mod.ACME,
		Store:          e.store,
		DNSAddr:        e.dnsAddr,
		PlainAddr:      plain.Addr().String(),
		TLSAddr:        tl.Addr().String(),
		DNSWaitTimeout: e.dnsWait,
	})
	if err != nil {
		plain.Close()
		tl.Close()
		t.Fatal(err)
	}
	hs := httpserver.New(httpserver.Options{
		Logger:    log.With("server", "http"),
		TLSConfig: mgr.TLSConfig(),
		WrapPlain: mgr.HTTPHandler,
	})
	in := &instance{e: e, mgr: mgr, http: hs}
	for _, f := range []func() error{func() error { return hs.ServePlain(plain) }, func() error { return hs.ServeTLS(tl) }} {
		done := make(chan error, 1)
		go func() { done <- f() }()
		in.done = append(in.done, done)
	}
	t.Cleanup(in.stop)
	in.setModel(mod)
	return in
}

func (in *instance) setModel(mod *config.Model) {
	in.e.t.Helper()
	in.e.dns.SetModel(mod)
	in.http.SetModel(mod)
	if err := in.mgr.SetModel(context.Background(), mod); err != nil {
		in.e.t.Fatal(err)
	}
}

// stop shuts the instance down as cmd/signpost does on SIGTERM.
func (in *instance) stop() {
	in.once.Do(func() {
		in.mgr.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := in.http.Shutdown(ctx); err != nil {
			in.e.t.Errorf("http shutdown: %v", err)
		}
		for _, d := range in.done {
			if err := <-d; err != nil {
				in.e.t.Errorf("http serve: %v", err)
			}
		}
	})
}

// ---------------------------------------------------------------- clients

// roots trusts only Pebble's issuing root.
func (e *env) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(e.pebble.root)
	return pool
}

// fetch GETs https://name/.well-known/matrix/server from the TLS listener
// with a client that trusts only roots, checks the chain and the name, and
// checks the body is exactly the document of the model.
func (e *env) fetch(mod *config.Model, name string, roots *x509.CertPool) *x509.Certificate {
	t := e.t
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, e.tlsAddr)
		},
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + name + "/.well-known/matrix/server")
	if err != nil {
		t.Fatalf("GET https://%s/.well-known/matrix/server: %v", name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200", name, resp.StatusCode)
	}
	if want := mod.Delegation(name).ServerDoc; !bytes.Equal(body, want) {
		t.Fatalf("GET %s: body %q, want %q", name, body, want)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("GET %s: protocol %s, want HTTP/2", name, resp.Proto)
	}
	cs := resp.TLS
	if len(cs.VerifiedChains) == 0 {
		t.Fatalf("GET %s: no verified chain", name)
	}
	leaf := cs.PeerCertificates[0]
	if !slices.Equal(leaf.DNSNames, []string{name}) {
		t.Errorf("certificate names %q, want [%q]", leaf.DNSNames, name)
	}
	chain := cs.VerifiedChains[0]
	if got := chain[len(chain)-1]; !got.Equal(e.pebble.root) {
		t.Errorf("chain ends at %q, want Pebble's root %q", got.Subject, e.pebble.root.Subject)
	}
	return leaf
}

// handshake connects to the TLS listener with SNI serverName and returns
// the leaf, verified against roots (not verified if roots is nil), or the
// handshake error.
func (e *env) handshake(serverName string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &tls.Dialer{Config: &tls.Config{ServerName: serverName, RootCAs: roots, InsecureSkipVerify: roots == nil}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", e.tlsAddr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// ---------------------------------------------------------------- files

// files returns every regular file under dir (locks excluded) with its
// content and permissions.
func files(t testing.TB, dir string) map[string]fileInfo {
	t.Helper()
	out := map[string]fileInfo{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() || strings.HasPrefix(rel, "locks") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = fileInfo{data: string(data), mode: info.Mode().Perm()}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type fileInfo struct {
	data string
	mode os.FileMode
}

// ---------------------------------------------------------------- leaks

// checkLeaks fails the test if goroutines of signpost's servers or of
// certmagic outlive it. Allowed: certmagic's per-CA rate limiters, which
// are process-wide by design (one per directory and account, never
// stopped); its lock-file refreshers, which notice a released lock only at
// their next 5-second tick and then exit; and Pebble's validation queue,
// which has no stop.
func checkLeaks(t testing.TB) {
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			leaked := leakedGoroutines()
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d goroutines leaked:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
				return
			}
			runtime.Gosched()
			time.Sleep(20 * time.Millisecond) // polling for exit: there is nothing to wait on
		}
	})
}

func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var leaked []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		switch {
		case strings.Contains(g, "checkLeaks"), strings.Contains(g, "testing.tRunner"), strings.Contains(g, "testing.(*T).Run"), strings.Contains(g, "testing.(*B)."):
		case strings.Contains(g, "RingBufferRateLimiter"), strings.Contains(g, "certmagic.keepLockfileFresh"),
			strings.Contains(g, "pebble/v2/va.VAImpl.processTasks"):
		case strings.Contains(g, "signpost-dev/signpost/"), strings.Contains(g, "caddyserver/certmagic"),
			strings.Contains(g, "mholt/acmez"), strings.Contains(g, "letsencrypt/pebble"):
			leaked = append(leaked, g)
		}
	}
	return leaked
}
