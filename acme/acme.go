// Package acme keeps a TLS certificate for every name signpost serves. In
// mode "acme" it drives certmagic against the configured ACME directory and
// answers all three challenges itself: HTTP-01 through a wrapper around the
// plain HTTP handler, TLS-ALPN-01 through the *tls.Config it hands out, and
// DNS-01 by writing _acme-challenge TXT records into signpost's own zones
// through a TXTStore. In mode "self-signed" it makes a certificate per name
// in memory and never talks to a CA or writes to disk.
//
// acme imports config and nothing else of signpost's: the DNS server is
// reached through the TXTStore interface and a DNS address, the HTTP server
// through TLSConfig and HTTPHandler. certmagic logs through zap; zap stays
// inside this package and reaches the caller as *slog.Logger records.
package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/signpost-dev/signpost/config"
)

// TXTStore holds the TXT records signpost's DNS server publishes for DNS-01.
// Names are fully qualified with a trailing dot
// ("_acme-challenge.chat.example.com."). A name may hold several values at
// once (a name and its wildcard are validated with two values under one
// name), and RemoveTXT removes only the value it is given.
// dnsserver.Server satisfies it.
type TXTStore interface {
	AddTXT(name, value string) error
	RemoveTXT(name, value string) error
}

// Options configure a Manager.
type Options struct {
	// Logger receives certificate events: obtained, renewed and failed at
	// info and error level with the name and the issuer, and certmagic's own
	// chatter at debug level. If nil, logs are discarded.
	Logger *slog.Logger

	// ACME is the [acme] table of the configuration the process starts
	// with. Mode, Email, Directory, Challenges, CARoot and Storage are read
	// here once; SetModel warns when a later model changes them, because
	// they take effect only after a restart. The names to manage come from
	// each model given to SetModel.
	ACME config.ACME

	// Store receives the TXT records that answer DNS-01 challenges. It is
	// required when dns-01 is offered in mode "acme"; otherwise unused.
	Store TXTStore

	// DNSAddr is host:port of signpost's own DNS listener (UDP, and TCP for
	// truncated answers). Before letting the CA validate a DNS-01
	// challenge, the Manager queries it, and every [[secondary]] of the
	// zone at its address, until each serves the TXT value.
	// Required when dns-01 is offered in mode "acme".
	DNSAddr string

	// PlainAddr and TLSAddr are the addresses of the plain HTTP and HTTPS
	// listeners, already bound (pass l.Addr().String()). certmagic probes
	// them before each HTTP-01 and TLS-ALPN-01 challenge and, finding them
	// in use, leaves the answering to HTTPHandler and TLSConfig; were they
	// not yet bound, it would bind the port itself. PlainAddr is required
	// when http-01 is offered, TLSAddr when tls-alpn-01 is offered.
	PlainAddr string
	TLSAddr   string

	// DNSWaitTimeout bounds how long a DNS-01 challenge waits for DNSAddr
	// and the secondaries to serve its TXT record; 2 minutes if zero.
	DNSWaitTimeout time.Duration

	// Limits are the CA's issuance limits, which orders are queued to
	// stay within. If nil, Let's Encrypt's published limits apply when
	// acme.directory is Let's Encrypt's, and only an in-flight bound for
	// any other CA (see LetsEncryptLimits and Limits).
	Limits *Limits
}

// Manager obtains, renews, caches and serves the certificates. It is safe
// for concurrent use. Create it with New and end it with Stop.
type Manager struct {
	log      *slog.Logger
	settings config.ACME
	mode     string

	// The model SetModel was last given: zone membership and the name
	// served to clients that send no SNI are read from it.
	model atomic.Pointer[config.Model]

	// mode "acme"
	cache   *certmagic.Cache
	storage *gatedStorage
	zoneCfg *certmagic.Config // names inside a zone: DNS-01 first, then HTTP-01/TLS-ALPN-01; nil without dns-01
	webCfg  *certmagic.Config // other names: HTTP-01/TLS-ALPN-01; nil when neither is offered
	webIss  *certmagic.ACMEIssuer
	store   TXTStore
	dnsAddr []string // every server that must serve a TXT record before validation
	dnsWait time.Duration
	alpn    bool
	wanted  atomic.Pointer[map[string]bool] // names currently wanted, read by onEvent
	queue   *queue                          // lets orders start within the CA's limits, fairly

	// mode "self-signed"
	self atomic.Pointer[selfSignedSet]

	mu      sync.Mutex // serialises SetModel and Stop
	ctx     context.Context
	cancel  context.CancelFunc
	managed map[string]*keeper // mode "acme": name → the goroutine that keeps its certificate
	stopped bool
	muted   atomic.Bool // set by Stop: certmagic's leftover goroutines log nothing more

	stats certStats // see stats.go
}

// New returns a Manager for o.ACME that manages no names until SetModel.
// In mode "acme" it reads the CA root file and prepares the storage
// directory's certmagic configuration, but contacts nobody: start-up never
// waits for the CA.
func New(o Options) (*Manager, error) {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		log:      logger,
		settings: o.ACME,
		mode:     o.ACME.Mode,
		ctx:      ctx,
		cancel:   cancel,
		managed:  map[string]*keeper{},
	}
	switch o.ACME.Mode {
	case config.ModeSelfSigned:
		m.self.Store(&selfSignedSet{certs: &selfSignedCerts{log: logger}})
		return m, nil
	case config.ModeACME, "":
		m.mode = config.ModeACME
		if err := m.setUpACME(o); err != nil {
			cancel()
			return nil, err
		}
		return m, nil
	default:
		cancel()
		return nil, fmt.Errorf("acme: unknown mode %q; use %q or %q", o.ACME.Mode, config.ModeACME, config.ModeSelfSigned)
	}
}

func (m *Manager) setUpACME(o Options) error {
	a := o.ACME
	if a.Directory == "" {
		return errors.New("acme: no directory URL")
	}
	if a.Storage == "" {
		return errors.New("acme: no storage directory or URL")
	}
	offers := func(c string) bool { return slices.Contains(a.Challenges, c) }
	useDNS, useHTTP, useALPN := offers(config.ChallengeDNS01), offers(config.ChallengeHTTP01), offers(config.ChallengeTLSALPN01)
	if !useDNS && !useHTTP && !useALPN {
		return errors.New("acme: no challenge type offered; list at least one in acme.challenges")
	}
	if useDNS && (o.Store == nil || o.DNSAddr == "") {
		return errors.New("acme: dns-01 is offered but Options.Store or Options.DNSAddr is missing")
	}
	var listenHost string
	var httpPort, tlsPort int
	var err error
	if useHTTP {
		if listenHost, httpPort, err = splitAddr(o.PlainAddr); err != nil {
			return fmt.Errorf("acme: http-01 is offered but Options.PlainAddr %w", err)
		}
	}
	if useALPN {
		host, port, err := splitAddr(o.TLSAddr)
		if err != nil {
			return fmt.Errorf("acme: tls-alpn-01 is offered but Options.TLSAddr %w", err)
		}
		// certmagic has one ListenHost for both probes; when the listeners
		// are on different hosts, the wildcard host still finds both busy.
		if useHTTP && host != listenHost {
			listenHost = ""
		} else {
			listenHost = host
		}
		tlsPort = port
	}
	var roots *x509.CertPool
	if a.CARoot != "" {
		if roots, err = loadRoots(a.CARoot); err != nil {
			return err
		}
	}

	zl := newZapLogger(m.log.Handler(), &m.muted, m.stats.challenge)
	m.store = o.Store
	m.dnsAddr = []string{o.DNSAddr}
	m.dnsWait = cmpOr(o.DNSWaitTimeout, 2*time.Minute)
	m.alpn = useALPN
	lim := limitsFor(a.Directory)
	if o.Limits != nil {
		lim = *o.Limits
	}
	m.queue = newQueue(lim, time.Now, m.log)
	if m.storage, err = newStorage(a.Storage, m.log); err != nil {
		return err
	}
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: m.configForCert,
		Logger:           zl,
	})

	newConfig := func() *certmagic.Config {
		// Every field certmagic.New would otherwise copy from
		// certmagic.Default is set here, so nothing global leaks in.
		return certmagic.New(m.cache, certmagic.Config{
			RenewalWindowRatio: certmagic.DefaultRenewalWindowRatio,
			KeySource:          certmagic.StandardKeyGenerator{KeyType: certmagic.P256},
			Storage:            m.storage,
			Logger:             zl,
			OnEvent:            m.onEvent,
			ShouldEmitFunc:     handledEvent,
			Issuers:            []certmagic.Issuer{}, // filled below; nil would make certmagic add a DefaultACME issuer
		})
	}
	template := certmagic.ACMEIssuer{
		CA:           a.Directory,
		Email:        a.Email,
		Agreed:       true,
		TrustedRoots: roots,
		Logger:       zl,
	}
	web := func(cfg *certmagic.Config) *certmagic.ACMEIssuer {
		t := template
		t.DisableHTTPChallenge = !useHTTP
		t.DisableTLSALPNChallenge = !useALPN
		t.ListenHost = listenHost
		t.AltHTTPPort = httpPort
		t.AltTLSALPNPort = tlsPort
		return certmagic.NewACMEIssuer(cfg, t)
	}
	if useHTTP || useALPN {
		m.webCfg = newConfig()
		m.webIss = web(m.webCfg)
		m.webCfg.Issuers = []certmagic.Issuer{m.webIss}
	}
	if useDNS {
		// certmagic offers only dns-01 from an issuer with a DNS01Solver,
		// so names inside our zones get two issuers, tried in turn: DNS-01
		// first, since it needs nothing but our own zone to be delegated,
		// then HTTP-01/TLS-ALPN-01 if offered.
		m.zoneCfg = newConfig()
		t := template
		t.DNS01Solver = dnsSolver{m}
		m.zoneCfg.Issuers = []certmagic.Issuer{certmagic.NewACMEIssuer(m.zoneCfg, t)}
		if useHTTP || useALPN {
			m.zoneCfg.Issuers = append(m.zoneCfg.Issuers, web(m.zoneCfg))
		}
	}
	wanted := map[string]bool{}
	m.wanted.Store(&wanted)
	return nil
}

func splitAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q has no usable port", addr)
	}
	return host, port, nil
}

// loadRoots returns the system roots plus those in the PEM file at path:
// acme.ca_root adds a private or test CA, it does not replace the public ones.
func loadRoots(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("acme: ca_root: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("acme: ca_root: %s holds no PEM certificate", path)
	}
	return pool, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// SetModel makes the Manager keep certificates for exactly
// mod.CertificateNames(). New names are taken into management at once and in
// the background: a certificate in storage is served immediately, a missing
// or expiring one is obtained without blocking the caller, and failures are
// logged and retried with backoff: storage faults from 1 s doubling to 10
// minutes and at once on the next SetModel (a SIGHUP), CA failures on
// certmagic's schedule. A stored certificate, key or account that does not
// parse is moved aside and replaced. Names no longer listed are dropped from
// management (their files stay in storage). In mode "self-signed" each new
// name gets its certificate before SetModel returns.
//
// ctx bounds SetModel itself; the background work lives until Stop.
func (m *Manager) SetModel(ctx context.Context, mod *config.Model) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("acme: set model: %w", err)
	}
	if mod == nil {
		return errors.New("acme: set model: nil model")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return errors.New("acme: set model: manager is stopped")
	}
	if old := m.settings; !sameSettings(old, mod.ACME) {
		m.log.Warn("acme settings changed; they take effect after a restart", "path", mod.Path)
	}
	m.model.Store(mod)
	names := mod.CertificateNames()
	if m.mode == config.ModeSelfSigned {
		return m.setSelfSigned(names)
	}

	wanted := make(map[string]bool, len(names))
	for _, n := range names {
		wanted[n] = true
	}
	m.wanted.Store(&wanted)
	var dropped []certmagic.SubjectIssuer
	for _, name := range slices.Sorted(maps.Keys(m.managed)) {
		if !wanted[name] {
			m.managed[name].cancel()
			delete(m.managed, name)
			dropped = append(dropped, certmagic.SubjectIssuer{Subject: name})
			m.queue.forget(name)
			m.log.Info("certificate no longer managed", "name", name)
		}
	}
	if len(dropped) > 0 {
		m.cache.RemoveManaged(dropped)
	}
	for _, name := range names {
		if k := m.managed[name]; k != nil {
			k.poke() // a reload retries a name waiting out a storage fault now
			continue
		}
		cfg, reason := m.configFor(mod, name)
		if cfg == nil {
			m.log.Error("cannot obtain a certificate", "name", name, "error", reason)
			continue
		}
		kctx, cancel := context.WithCancel(m.ctx)
		k := &keeper{cancel: cancel, kick: make(chan struct{}, 1)}
		m.managed[name] = k
		m.log.Info("managing certificate", "name", name, "challenges", m.challengesFor(cfg))
		go m.keep(kctx, cfg, name, k.kick)
	}
	return nil
}

// keeper is the goroutine that keeps one name's certificate in the cache.
type keeper struct {
	cancel context.CancelFunc // ends it
	kick   chan struct{}      // wakes it from a back-off wait; capacity 1
}

func (k *keeper) poke() {
	select {
	case k.kick <- struct{}{}:
	default: // already poked
	}
}

// Back-off after a failed attempt to load or obtain a certificate: storage
// faults are local and cheap to retry, so start at a second; double up to
// ten minutes so a lasting fault logs a few lines an hour, not thousands.
const (
	retryFirst = time.Second
	retryMax   = 10 * time.Minute
)

// keep loads name's certificate from storage into the cache, or obtains
// it, and keeps trying until that succeeds: a failure is logged and
// retried after a back-off, or at once when SetModel pokes it, never given
// up. certmagic's ManageAsync, which this replaces, gives up for good on
// any storage error but "not found". Once the certificate is cached,
// certmagic's maintenance renews it and keep only waits.
func (m *Manager) keep(ctx context.Context, cfg *certmagic.Config, name string, kick <-chan struct{}) {
	delay := time.Duration(0)
	for {
		err := m.ensure(ctx, cfg, name)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			delay = 0
			select {
			case <-ctx.Done():
				return
			case <-kick:
			}
			continue
		}
		delay = min(max(2*delay, retryFirst), retryMax)
		m.log.Error("no certificate yet; will retry", "name", name, "error", err, "retry_in", delay.Seconds())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
		case <-kick:
		case <-t.C:
		}
		t.Stop()
	}
}

// ensure makes one attempt to have a certificate for name in the cache:
// it returns nil at once if one is there; else it loads the stored one,
// renewing it first if it is due, or obtains a new one. A storage fault
// ends the attempt and is what ensure returns.
func (m *Manager) ensure(ctx context.Context, cfg *certmagic.Config, name string) error {
	if m.cached(name) {
		return nil
	}
	actx, fault := withFaultReport(ctx)
	defer fault.cancel()
	err := m.load(actx, cfg, name)
	if err != nil && ctx.Err() == nil {
		if f := fault.first(); f != nil {
			return f // the cause; err is often only "context canceled"
		}
	}
	return err
}

func (m *Manager) load(ctx context.Context, cfg *certmagic.Config, name string) error {
	cert, err := cfg.CacheManagedCertificate(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		// The queue decides when the first attempt may start; certmagic's
		// retries pass through it again in onEvent.
		if err := m.queue.wait(ctx, name, false); err != nil {
			return err
		}
		// Async: not interactive (the sync variant would prompt on stdin
		// for an email address when none is configured), and retried by
		// certmagic while the CA fails, on its back-off schedule; storage
		// faults end it through the fault report.
		err := cfg.ObtainCertAsync(ctx, name)
		m.queue.done(name) // found in storage after all, or ended without an event
		if err != nil {
			return err
		}
		_, err = cfg.CacheManagedCertificate(ctx, name)
		return err
	}
	if err != nil {
		return err
	}
	m.chargeStored(ctx, cfg, name, cert)
	if !cert.NeedsRenewal(cfg) {
		return nil
	}
	// The stored certificate is served meanwhile; it is in the cache. A
	// renewal that fails here is not retried by keep: certmagic's
	// maintenance renews cached certificates on its own schedule.
	if err := cfg.RenewCertAsync(ctx, name, false); err != nil {
		if f := faultIn(ctx); f != nil {
			m.log.Error("certificate renewal failed; serving the stored certificate, maintenance retries", "name", name, "error", f)
			return nil
		}
		return err
	}
	renewed, err := cfg.CacheManagedCertificate(ctx, name)
	if err != nil {
		return err
	}
	if renewed.Hash() != cert.Hash() {
		m.cache.Remove([]string{cert.Hash()})
	}
	return nil
}

// chargeStored tells the queue when a certificate found in storage was
// issued, if that was recent enough to count against the CA's limits.
// The storage's modification time is when it was saved; the certificate's
// NotBefore is the fallback, though Let's Encrypt backdates it by an hour.
func (m *Manager) chargeStored(ctx context.Context, cfg *certmagic.Config, name string, cert certmagic.Certificate) {
	if cert.Leaf == nil || time.Since(cert.Leaf.NotBefore) > m.queue.lim.window()+time.Hour {
		return // the common case at start-up: no storage look-up
	}
	at := cert.Leaf.NotBefore
	for _, iss := range cfg.Issuers {
		if ki, err := m.storage.Stat(ctx, certmagic.StorageKeys.SiteCert(iss.IssuerKey(), name)); err == nil && !ki.Modified.IsZero() {
			at = ki.Modified
			break
		}
	}
	m.queue.issued(name, at)
}

// cached reports whether the cache holds a certificate for exactly name.
func (m *Manager) cached(name string) bool {
	for _, c := range m.cache.AllMatchingCertificates(name) {
		if slices.Contains(c.Names, name) {
			return true
		}
	}
	return false
}

func sameSettings(a, b config.ACME) bool {
	return a.Mode == b.Mode && a.Email == b.Email && a.Directory == b.Directory &&
		slices.Equal(a.Challenges, b.Challenges) && a.CARoot == b.CARoot && a.Storage == b.Storage
}

// configFor returns the certmagic configuration that can obtain name under
// mod, or nil and why none can.
func (m *Manager) configFor(mod *config.Model, name string) (*certmagic.Config, string) {
	base, wildcard := strings.CutPrefix(name, "*.")
	inZone := mod != nil && mod.ZoneFor(base) != nil
	switch {
	case inZone && m.zoneCfg != nil:
		return m.zoneCfg, ""
	case wildcard && m.zoneCfg == nil:
		return nil, "a wildcard name needs dns-01, which acme.challenges does not offer"
	case wildcard:
		return nil, "a wildcard name needs dns-01, which signpost answers only for names inside its zones"
	case m.webCfg != nil:
		return m.webCfg, ""
	default:
		return nil, "only dns-01 is offered (acme.challenges), and signpost answers it only for names inside its zones"
	}
}

func (m *Manager) challengesFor(cfg *certmagic.Config) []string {
	var cs []string
	if cfg == m.zoneCfg {
		cs = append(cs, config.ChallengeDNS01)
	}
	if m.webIss != nil {
		if !m.webIss.DisableHTTPChallenge {
			cs = append(cs, config.ChallengeHTTP01)
		}
		if !m.webIss.DisableTLSALPNChallenge {
			cs = append(cs, config.ChallengeTLSALPN01)
		}
	}
	return cs
}

// configForCert tells certmagic's maintenance which configuration renews a
// cached certificate; zone membership can change with a reload.
func (m *Manager) configForCert(cert certmagic.Certificate) (*certmagic.Config, error) {
	mod := m.model.Load()
	for _, name := range cert.Names {
		if cfg, _ := m.configFor(mod, name); cfg != nil {
			return cfg, nil
		}
	}
	// Nothing can renew it; let the attempt fail, and be logged, with
	// whichever configuration exists.
	return cmpOr(m.webCfg, m.zoneCfg), nil
}

// handledEvent lists the events onEvent acts on. Without it certmagic
// would also build and deliver an event for every TLS handshake.
func handledEvent(event string) bool {
	switch event {
	case "cert_obtained", "cert_failed", "cert_obtaining", "cached_managed_cert":
		return true
	}
	return false
}

// onEvent turns certmagic's events into the log lines an operator needs,
// and drops a certificate that finished obtaining after its name was
// removed by SetModel.
func (m *Manager) onEvent(ctx context.Context, event string, data map[string]any) error {
	if m.muted.Load() {
		return errStopped // aborts an obtain or renewal that was about to start
	}
	if event == "cert_obtaining" {
		if err := m.admit(ctx, data); err != nil {
			return err // aborts the attempt; certmagic retries it later
		}
	}
	m.stats.event(event, data, time.Now())
	name, _ := data["identifier"].(string)
	switch event {
	case "cert_obtained":
		m.queue.done(name)
		msg := "certificate obtained"
		if renewal, _ := data["renewal"].(bool); renewal {
			msg = "certificate renewed"
		}
		m.log.Info(msg, "name", data["identifier"], "issuer", data["issuer"])
	case "cert_failed":
		msg := "certificate obtain failed"
		if renewal, _ := data["renewal"].(bool); renewal {
			msg = "certificate renewal failed"
		}
		issuers, _ := data["issuers"].([]string)
		m.queue.failed(name, max(len(issuers), 1))
		m.log.Error(msg, "name", data["identifier"], "issuer", strings.Join(slices.Compact(issuers), ","), "error", data["error"])
	case "cert_obtaining":
		m.log.Debug("obtaining certificate", "name", data["identifier"], "renewal", data["renewal"] == true)
	case "cached_managed_cert":
		sans, _ := data["sans"].([]string)
		wanted := *m.wanted.Load()
		for _, n := range sans {
			if wanted[n] {
				m.log.Info("serving certificate", "name", strings.Join(sans, ","))
				return nil
			}
		}
		subjects := make([]certmagic.SubjectIssuer, len(sans))
		for i, n := range sans {
			subjects[i] = certmagic.SubjectIssuer{Subject: n}
		}
		m.cache.RemoveManaged(subjects)
	}
	return nil
}

// admit holds an order attempt that certmagic is about to start until
// the queue lets it go: renewals, which certmagic's maintenance starts on
// its own, and retries of a first order. The first attempt of a first
// order was let through by load before certmagic took the name's lock, so
// that names waiting for their turn hold no lock.
func (m *Manager) admit(ctx context.Context, data map[string]any) error {
	name, _ := data["identifier"].(string)
	renewal, _ := data["renewal"].(bool)
	attempt := 0
	if n, ok := ctx.Value(certmagic.AttemptsCtxKey).(*int); ok {
		attempt = *n
	}
	if !renewal && attempt == 0 {
		return nil
	}
	return m.queue.wait(ctx, name, renewal)
}

// TLSConfig returns the configuration for the HTTPS listener. Certificates
// are chosen by SNI; a client that sends none gets the first name of the
// current model. In mode "acme" with tls-alpn-01 offered, "acme-tls/1" is
// among the protocols, and handshakes that ask only for it receive the
// challenge certificate.
func (m *Manager) TLSConfig() *tls.Config {
	protos := []string{"h2", "http/1.1"}
	if m.mode == config.ModeACME && m.alpn {
		protos = append(protos, "acme-tls/1")
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     protos,
		GetCertificate: m.getCertificate,
	}
}

func (m *Manager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	// An address is no server name (RFC 6066 §3 forbids sending one; wrk,
	// among others, does): such a client gets what one that sends none
	// gets, not a failed handshake.
	if _, err := netip.ParseAddr(hello.ServerName); hello.ServerName == "" || err == nil {
		if name := m.defaultName(); name != "" {
			h := *hello
			h.ServerName = name
			hello = &h
		}
	}
	if m.mode == config.ModeSelfSigned {
		sc, err := m.self.Load().get(hello.ServerName)
		if err != nil {
			return nil, err
		}
		return sc.cert, nil
	}
	return cmpOr(m.webCfg, m.zoneCfg).GetCertificate(hello)
}

func (m *Manager) defaultName() string {
	if mod := m.model.Load(); mod != nil {
		if names := mod.CertificateNames(); len(names) > 0 {
			return names[0]
		}
	}
	return ""
}

// HTTPHandler wraps next, the plain HTTP listener's handler, so that ACME
// HTTP-01 challenge requests are answered before next sees them. Without
// http-01 offered, it returns next.
func (m *Manager) HTTPHandler(next http.Handler) http.Handler {
	if m.webIss == nil || m.webIss.DisableHTTPChallenge {
		return next
	}
	return m.webIss.HTTPChallengeHandler(next)
}

// Stop ends certificate management: it cancels obtains and renewals in
// flight, stops certmagic's maintenance goroutine, and from then on refuses
// storage writes, so a Manager started later on the same directory is
// never raced. Certificates already cached are still served. Stop may be
// called more than once.
func (m *Manager) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return
	}
	m.stopped = true
	m.muted.Store(true)
	m.cancel()
	if m.cache != nil {
		m.queue.close()
		m.storage.close()
		m.cache.Stop()
	}
}
