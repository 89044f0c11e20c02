package httpserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dev/signpost/config"
)

// TestMain fails the run when a test leaves server goroutines behind.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(); leaked != "" {
			os.Stderr.WriteString("goroutines left running after the tests:\n" + leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines returns the stacks of goroutines that belong to a server
// or a connection, waiting a little for ones that are on their way out.
func leakedGoroutines() string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "net/http.(*conn).serve") ||
				strings.Contains(g, "net/http.(*Server).Serve") ||
				strings.Contains(g, "net/http.(*http2serverConn).serve") ||
				strings.Contains(g, "signpost/httpserver.") && !strings.Contains(g, "TestMain") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testPKI is a private CA and one ECDSA P-256 leaf certificate per name.
type testPKI struct {
	pool  *x509.CertPool
	certs []tls.Certificate // in the order of the names given
}

func newPKI(t testing.TB, names ...string) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "signpost test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	for i, name := range names {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)),
			Subject:      pkix.Name{CommonName: name},
			DNSNames:     []string{name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		p.certs = append(p.certs, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf})
	}
	return p
}

// serverTLS returns a configuration that picks the certificate by SNI, as
// acme's does, and the first one without SNI.
func (p *testPKI) serverTLS() *tls.Config {
	return &tls.Config{Certificates: p.certs}
}

// mustParse builds a model from TOML text with the real config package.
func mustParse(t testing.TB, text string) *config.Model {
	t.Helper()
	m, err := config.Parse("test.toml", []byte(text), config.Options{})
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	return m
}

// testServer is a Server on two loopback listeners.
type testServer struct {
	*Server
	tlsAddr, plainAddr string
	pki                *testPKI
}

// startServer runs a Server with TLS and plain listeners on 127.0.0.1:0 and
// stops it when the test ends, failing the test if Serve fails.
func startServer(t testing.TB, o Options, m *config.Model) *testServer {
	t.Helper()
	pki := newPKI(t, testNames...)
	if o.TLSConfig == nil {
		o.TLSConfig = pki.serverTLS()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s := New(o)
	s.SetModel(m)
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 2)
	go func() { errc <- s.ServeTLS(tl) }()
	go func() { errc <- s.ServePlain(pl) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		for range 2 {
			if err := <-errc; err != nil {
				t.Errorf("Serve returned %v after Shutdown, want nil", err)
			}
		}
	})
	return &testServer{Server: s, tlsAddr: tl.Addr().String(), plainAddr: pl.Addr().String(), pki: pki}
}

// testNames are the names the test PKI has certificates for; the first is
// what a client without SNI gets.
var testNames = []string{"chat.example.com", "other.example.org", "unknown.example.net"}

// client returns an HTTP client that connects to addr whatever the URL says,
// speaks only HTTP/2 or only HTTP/1.1, trusts the test CA and does not
// follow redirects.
func (ts *testServer) client(t testing.TB, addr string, h2 bool) *http.Client {
	t.Helper()
	var protos http.Protocols
	protos.SetHTTP1(!h2)
	protos.SetHTTP2(h2)
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig:    &tls.Config{RootCAs: ts.pki.pool},
		Protocols:          &protos,
		DisableCompression: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       30 * time.Second, // a hang fails the test instead of the run
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// exchange is one request and the complete answer expected for it.
type exchange struct {
	name   string
	method string // GET if empty
	url    string // scheme and host of the URL set the SNI
	host   string // Host header; the URL's host if empty
	header http.Header

	status int
	want   http.Header // every response header except Date
	body   string
}

// check sends e and compares status, every header and the body bytes.
func check(t *testing.T, c *http.Client, e exchange) {
	t.Helper()
	method := e.method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, e.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.host != "" {
		req.Host = e.host
	}
	for k, v := range e.header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s (Host %q): %v", method, e.url, e.host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	if resp.StatusCode != e.status {
		t.Errorf("status: got %d, want %d", resp.StatusCode, e.status)
	}
	got := resp.Header.Clone()
	if d := got.Get("Date"); d == "" {
		t.Errorf("no Date header")
	} else if _, err := http.ParseTime(d); err != nil {
		t.Errorf("Date %q: %v", d, err)
	}
	got.Del("Date")
	if diff := headerDiff(got, e.want); diff != "" {
		t.Errorf("headers differ (- got, + want):\n%s", diff)
	}
	if string(body) != e.body {
		t.Errorf("body: got %q, want %q", body, e.body)
	}
}

func headerDiff(got, want http.Header) string {
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		if !slices.Equal(got[k], want[k]) {
			if g, ok := got[k]; ok {
				b.WriteString("- " + k + ": " + strings.Join(g, " | ") + "\n")
			}
			if w, ok := want[k]; ok {
				b.WriteString("+ " + k + ": " + strings.Join(w, " | ") + "\n")
			}
		}
	}
	return b.String()
}

// etagOf is the validator the server promises for a body: a strong tag of
// 96 bits of its SHA-256.
func etagOf(body string) string {
	sum := sha256.Sum256([]byte(body))
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`
}

// hdr builds an http.Header from key, value pairs.
func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func merge(hs ...http.Header) http.Header {
	out := http.Header{}
	for _, h := range hs {
		for k, v := range h {
			out[k] = append(out[k], v...)
		}
	}
	return out
}

var cors = hdr(
	"Access-Control-Allow-Origin", "*",
	"Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE, OPTIONS",
	"Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization",
)

// docHeaders are the headers of a 200 for body.
func docHeaders(body string, maxAge int) http.Header {
	return merge(cors, hdr(
		"Cache-Control", "max-age="+itoa(maxAge),
		"Etag", etagOf(body),
		"Content-Type", "application/json",
		"Content-Length", itoa(len(body)),
	))
}

// notModifiedHeaders are the headers of a 304 for body.
func notModifiedHeaders(body string, maxAge int) http.Header {
	return merge(cors, hdr(
		"Cache-Control", "max-age="+itoa(maxAge),
		"Etag", etagOf(body),
	))
}

// corsWire is how the CORS fields of a response look on HTTP/1.1.
const corsWire = "Access-Control-Allow-Headers: X-Requested-With, Content-Type, Authorization\r\n" +
	"Access-Control-Allow-Methods: GET, HEAD, POST, PUT, DELETE, OPTIONS\r\n" +
	"Access-Control-Allow-Origin: *\r\n"

// docWire is the HTTP/1.1 status line and header fields, with Date masked
// as rawExchange masks it, of a 200 for body (or a 304, if notModified),
// up to the fields that depend on the request.
func docWire(body string, maxAge int, notModified bool) string {
	if notModified {
		return "HTTP/1.1 304 Not Modified\r\n" + corsWire +
			"Cache-Control: max-age=" + itoa(maxAge) + "\r\n" +
			"Etag: " + etagOf(body) + "\r\n" +
			"Date: *\r\n"
	}
	return "HTTP/1.1 200 OK\r\n" + corsWire +
		"Cache-Control: max-age=" + itoa(maxAge) + "\r\n" +
		"Content-Length: " + itoa(len(body)) + "\r\n" +
		"Content-Type: application/json\r\n" +
		"Etag: " + etagOf(body) + "\r\n" +
		"Date: *\r\n"
}

var dateLine = regexp.MustCompile(`\r\nDate: [^\r]*\r\n`)

// rawExchange sends req, which must end in a request that closes the
// connection, on a new HTTP/1.1 connection to ts's TLS listener with
// server name sni, and returns everything that comes back, Date values
// masked as "*".
func rawExchange(t *testing.T, ts *testServer, sni, req string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", ts.tlsAddr, &tls.Config{ServerName: sni, RootCAs: ts.pki.pool, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, req)
	raw, _ := io.ReadAll(conn) // a reset after a 400 may follow the answer
	return dateLine.ReplaceAllString(string(raw), "\r\nDate: *\r\n")
}

func jsonHeaders(body string) http.Header {
	return hdr("Content-Type", "application/json", "Content-Length", itoa(len(body)))
}

func itoa(n int) string { return big.NewInt(int64(n)).String() }

// waitClosed reads from c until the server closes it and fails the test if
// that takes more than a generous minute.
func waitClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("server did not close the connection: %v", err)
	}
}
