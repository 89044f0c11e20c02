package probe

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dev/signpost/internal/testenv"
)

// testNow is the probe's clock in every scenario, so certificate and key
// dates in the reports are stable.
var testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// ---- DNS ----

// dnsFixture is an authoritative server for the records it holds. It is the
// probe's resolver in tests, and also answers as the zone's nameserver.
type dnsFixture struct {
	addr    string
	records []dns.RR
	// rcodes forces an rcode for "name TYPE", e.g. "_matrix-fed._tcp.chat.example.com. SRV".
	rcodes map[string]int
}

// startDNS serves records on 127.0.0.1, UDP and TCP on the same port.
func startDNS(t *testing.T, records []string, rcodes map[string]int) *dnsFixture {
	t.Helper()
	f := &dnsFixture{rcodes: rcodes}
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("record %q: %v", s, err)
		}
		f.records = append(f.records, rr)
	}
	pc, l := testenv.ListenDNS(t)
	f.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(f.serve)
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: l, Handler: h}
	var wg sync.WaitGroup
	wg.Add(2)
	udpStarted, tcpStarted := make(chan struct{}), make(chan struct{})
	udp.NotifyStartedFunc = func() { close(udpStarted) }
	tcp.NotifyStartedFunc = func() { close(tcpStarted) }
	go func() { defer wg.Done(); _ = udp.ActivateAndServe() }()
	go func() { defer wg.Done(); _ = tcp.ActivateAndServe() }()
	<-udpStarted
	<-tcpStarted
	t.Cleanup(func() {
		_ = udp.Shutdown()
		_ = tcp.Shutdown()
		wg.Wait()
	})
	return f
}

func (f *dnsFixture) serve(w dns.ResponseWriter, q *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	m.RecursionAvailable = true
	if len(q.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	qn := strings.ToLower(q.Question[0].Name)
	qt := q.Question[0].Qtype
	if rc, ok := f.rcodes[qn+" "+dns.TypeToString[qt]]; ok {
		m.Rcode = rc
		m.Authoritative = false
		_ = w.WriteMsg(m)
		return
	}
	name := qn
	for hop := 0; hop < 8; hop++ {
		matched := false
		var cname *dns.CNAME
		for _, rr := range f.records {
			if strings.ToLower(rr.Header().Name) != name {
				continue
			}
			if rr.Header().Rrtype == qt {
				m.Answer = append(m.Answer, rr)
				matched = true
			}
			if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		if matched || cname == nil || qt == dns.TypeCNAME {
			break
		}
		m.Answer = append(m.Answer, cname)
		name = strings.ToLower(cname.Target)
	}
	if len(m.Answer) == 0 {
		if !f.exists(qn) {
			m.Rcode = dns.RcodeNameError
		}
		if soa := f.soaFor(qn); soa != nil {
			m.Ns = append(m.Ns, soa)
		}
	}
	_ = w.WriteMsg(m)
}

// exists reports whether name owns records or is an empty non-terminal.
func (f *dnsFixture) exists(name string) bool {
	for _, rr := range f.records {
		if dns.IsSubDomain(name, strings.ToLower(rr.Header().Name)) {
			return true
		}
	}
	return false
}

func (f *dnsFixture) soaFor(name string) dns.RR {
	var best dns.RR
	for _, rr := range f.records {
		if rr.Header().Rrtype == dns.TypeSOA && dns.IsSubDomain(strings.ToLower(rr.Header().Name), name) {
			if best == nil || len(rr.Header().Name) > len(best.Header().Name) {
				best = rr
			}
		}
	}
	return best
}

// ---- certificates ----

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Probe Test CA"},
		NotBefore:             testNow.Add(-24 * time.Hour),
		NotAfter:              testNow.Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

var serial struct {
	sync.Mutex
	n int64
}

// leaf issues a certificate for names; names that parse as IP addresses
// become IP SANs.
func (ca *testCA) leaf(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial.Lock()
	serial.n++
	sn := serial.n + 1
	serial.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(sn),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    testNow.Add(-time.Hour),
		NotAfter:     testNow.Add(90 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip, err := netip.ParseAddr(n); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip.AsSlice())
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// ---- HTTPS ----

// startHTTPS serves h over TLS on 127.0.0.1 with a certificate for names
// and returns the listener's port.
func startHTTPS(t *testing.T, ca *testCA, h http.Handler, names ...string) int {
	t.Helper()
	return startTLS(t, &tls.Config{Certificates: []tls.Certificate{ca.leaf(t, names...)}}, h)
}

func startTLS(t *testing.T, conf *tls.Config, h http.Handler) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:   h,
		TLSConfig: conf,
		ErrorLog:  slog.NewLogLogger(slog.NewTextHandler(t.Output(), nil), slog.LevelDebug),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ServeTLS(l, "", "")
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return l.Addr().(*net.TCPAddr).Port
}

// route is one canned HTTP answer.
type route struct {
	status int
	header map[string]string
	body   string
}

// site answers paths with canned responses and 404 for the rest. Every
// answer carries the CORS headers unless noCORS is set.
type site struct {
	routes map[string]route
	noCORS bool
}

func (s *site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.noCORS {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Allow-Methods", "GET, OPTIONS")
		w.Header().Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
	}
	if r.Method == http.MethodOptions && !s.noCORS {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	rt, ok := s.routes[r.URL.Path]
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if _, set := rt.header["Content-Type"]; !set && rt.body != "" {
		w.Header().Set("Content-Type", "application/json")
	}
	for k, v := range rt.header {
		w.Header().Set(k, v)
	}
	if rt.status == 0 {
		rt.status = 200
	}
	w.WriteHeader(rt.status)
	_, _ = w.Write([]byte(rt.body))
}

// ---- homeserver ----

// homeserver is a fake homeserver: federation version, signed server keys
// and the client versions endpoint.
type homeserver struct {
	serverName string
	keyID      string
	key        ed25519.PrivateKey
	validUntil time.Time
	// edit changes the key response before it is signed; tamper after.
	edit   func(map[string]any)
	tamper func(map[string]any)
	// raw, when set, replaces the key response entirely.
	raw      string
	versions []string
}

func newHomeserver(serverName string) *homeserver {
	seed := make([]byte, ed25519.SeedSize)
	copy(seed, "signpost probe test signing key")
	return &homeserver{
		serverName: serverName,
		keyID:      "ed25519:a_test",
		key:        ed25519.NewKeyFromSeed(seed),
		validUntil: testNow.Add(24 * time.Hour),
		versions:   []string{"r0.6.1", "v1.11"},
	}
}

// keyResponse builds and signs the /_matrix/key/v2/server body. It encodes
// with encoding/json (sorted keys, no HTML escaping), which equals canonical
// JSON for this ASCII content, so the fixture does not depend on the code
// under test.
func (h *homeserver) keyResponse() []byte {
	pub := h.key.Public().(ed25519.PublicKey)
	obj := map[string]any{
		"server_name":     h.serverName,
		"valid_until_ts":  h.validUntil.UnixMilli(),
		"verify_keys":     map[string]any{h.keyID: map[string]any{"key": base64.RawStdEncoding.EncodeToString(pub)}},
		"old_verify_keys": map[string]any{},
	}
	if h.edit != nil {
		h.edit(obj)
	}
	msg := marshalSorted(obj)
	sig := ed25519.Sign(h.key, msg)
	obj["signatures"] = map[string]any{h.serverName: map[string]any{h.keyID: base64.RawStdEncoding.EncodeToString(sig)}}
	if h.tamper != nil {
		h.tamper(obj)
	}
	return marshalSorted(obj)
}

func marshalSorted(v any) []byte {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err) // test fixture content is fixed; cannot fail
	}
	return []byte(strings.TrimSuffix(b.String(), "\n"))
}

func (h *homeserver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Access-Control-Allow-Origin", "*")
	switch r.URL.Path {
	case "/_matrix/federation/v1/version":
		_, _ = w.Write([]byte(`{"server":{"name":"FakeHS","version":"1.0"}}`))
	case "/_matrix/key/v2/server":
		if h.raw != "" {
			_, _ = w.Write([]byte(h.raw))
			return
		}
		_, _ = w.Write(h.keyResponse())
	case "/_matrix/client/versions":
		b, _ := json.Marshal(map[string]any{"versions": h.versions})
		_, _ = w.Write(b)
	case "/_matrix/identity/v2":
		_, _ = w.Write([]byte(`{}`))
	default:
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`))
	}
}

// ---- scenario ----

// scenario is one probe setup: DNS records, HTTPS servers, and the map from
// the addresses the probe dials (port 53, 443, 8448 on any IP) to the
// loopback listeners that stand in for them.
type scenario struct {
	t       *testing.T
	ca      *testCA
	records []string
	rcodes  map[string]int
	mu      sync.Mutex
	dialMap map[string]string // "tcp 127.0.0.1:443" -> "127.0.0.1:41234"
	ports   map[int]string    // fixture port -> placeholder for golden output
	extraNS []*dnsFixture
}

const zoneRecords = `example.com. 300 IN SOA ns1.example.com. hostmaster.example.com. 7 7200 3600 1209600 300
example.com. 300 IN NS ns1.example.com.
ns1.example.com. 300 IN A 127.0.0.1`

func newScenario(t *testing.T) *scenario {
	return &scenario{
		t:       t,
		ca:      newCA(t),
		records: strings.Split(zoneRecords, "\n"),
		rcodes:  map[string]int{},
		dialMap: map[string]string{},
		ports:   map[int]string{},
	}
}

func (s *scenario) rr(records ...string) { s.records = append(s.records, records...) }

// serve starts an HTTPS server and maps ip:port (port 443 or 8448, which a
// test cannot bind) to it. port 0 maps nothing: the server is reached at
// its own port, published through SRV or m.server. It returns the port.
func (s *scenario) serve(name string, ip string, port int, h http.Handler, certNames ...string) int {
	p := startHTTPS(s.t, s.ca, h, certNames...)
	s.ports[p] = "{" + name + "}"
	if port != 0 {
		s.mapAddr("tcp", ip, port, p)
	}
	return p
}

func (s *scenario) mapAddr(network, ip string, port, to int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dialMap[network+" "+net.JoinHostPort(ip, strconv.Itoa(port))] = "127.0.0.1:" + strconv.Itoa(to)
}

func (s *scenario) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	s.mu.Lock()
	to, ok := s.dialMap[network+" "+addr]
	s.mu.Unlock()
	if !ok {
		ap, err := netip.ParseAddrPort(addr)
		// Unmapped fixture ports on loopback are dialled as they are; any
		// other address is refused so no test traffic leaves the machine.
		if err != nil || !ap.Addr().IsLoopback() || ap.Port() < 1024 || ap.Port() == 8448 {
			var to net.Addr = net.TCPAddrFromAddrPort(ap)
			if network == "udp" {
				to = net.UDPAddrFromAddrPort(ap)
			}
			return nil, &net.OpError{Op: "dial", Net: network, Addr: to, Err: errors.New("connection refused")}
		}
		to = addr
	}
	var d net.Dialer
	return d.DialContext(ctx, network, to)
}

// run starts the DNS fixture with the scenario's records, maps port 53 of
// 127.0.0.1 to it, and probes name.
func (s *scenario) run(name string, mod ...func(*Options)) *Report {
	s.t.Helper()
	d := startDNS(s.t, s.records, s.rcodes)
	port := d.addr[strings.LastIndexByte(d.addr, ':')+1:]
	p, _ := strconv.Atoi(port)
	s.ports[p] = "{DNS}"
	s.mapAddr("udp", "127.0.0.1", 53, p)
	s.mapAddr("tcp", "127.0.0.1", 53, p)
	o := Options{
		Resolver:   d.addr,
		Roots:      s.ca.pool,
		Dial:       s.dial,
		Timeout:    2 * time.Second,
		Now:        func() time.Time { return testNow },
		AllowLocal: true,
		Logger:     slog.New(slog.NewTextHandler(s.t.Output(), nil)),
	}
	for _, m := range mod {
		m(&o)
	}
	return Run(context.Background(), name, o)
}

// text renders r with fixture ports replaced by placeholders, so golden
// files do not depend on the ports the kernel handed out.
func (s *scenario) text(r *Report) string {
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		s.t.Fatal(err)
	}
	return s.normalize(b.String())
}

func (s *scenario) normalize(out string) string {
	for p, name := range s.ports {
		out = replaceWord(out, strconv.Itoa(p), name)
	}
	return out
}

// replaceWord replaces whole-number occurrences of num, so a port is not
// replaced inside a longer number such as a timestamp.
func replaceWord(s, num, with string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, num)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		end := i + len(num)
		before := i > 0 && s[i-1] >= '0' && s[i-1] <= '9'
		after := end < len(s) && s[end] >= '0' && s[end] <= '9'
		if before || after {
			b.WriteString(s[:end])
		} else {
			b.WriteString(s[:i])
			b.WriteString(with)
		}
		s = s[end:]
	}
}

func (s *scenario) port(name string) int {
	for p, n := range s.ports {
		if n == "{"+name+"}" {
			return p
		}
	}
	s.t.Fatalf("no fixture port named %s", name)
	return 0
}

func wkServer(target string) route {
	return route{body: fmt.Sprintf(`{"m.server": %q}`, target), header: map[string]string{"Cache-Control": "max-age=86400"}}
}

// startPlain serves h over plain HTTP on 127.0.0.1 and returns the port.
func startPlain(t *testing.T, h http.Handler) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return l.Addr().(*net.TCPAddr).Port
}
