package main

import (
	"bytes"
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
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeHomeserver answers what probe asks a homeserver: the federation
// version, its signed server keys, and the client versions.
func fakeHomeserver(t *testing.T, serverName string, cert tls.Certificate) *httptest.Server {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	pub := key.Public().(ed25519.PublicKey)
	keys := func() []byte {
		obj := map[string]any{
			"server_name":     serverName,
			"valid_until_ts":  time.Now().Add(24 * time.Hour).UnixMilli(),
			"verify_keys":     map[string]any{"ed25519:test": map[string]any{"key": base64.RawStdEncoding.EncodeToString(pub)}},
			"old_verify_keys": map[string]any{},
		}
		// encoding/json sorts keys and writes no spaces: canonical JSON for
		// this ASCII content.
		msg, _ := json.Marshal(obj)
		obj["signatures"] = map[string]any{serverName: map[string]any{"ed25519:test": base64.RawStdEncoding.EncodeToString(ed25519.Sign(key, msg))}}
		b, _ := json.Marshal(obj)
		return b
	}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Access-Control-Allow-Origin", "*")
		switch r.URL.Path {
		case "/_matrix/federation/v1/version":
			w.Write([]byte(`{"server":{"name":"fake","version":"1"}}`))
		case "/_matrix/key/v2/server":
			w.Write(keys())
		case "/_matrix/client/versions":
			w.Write([]byte(`{"versions":["v1.11"]}`))
		default:
			http.NotFound(w, r)
		}
	}))
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	hs.StartTLS()
	t.Cleanup(hs.Close)
	return hs
}

// testCA issues a certificate for names, signed by a CA made for the test.
func testCA(t *testing.T, names ...string) (tls.Certificate, []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "signpost test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}

// TestProbeAgainstServe runs `signpost probe` against a running `signpost
// serve` for a local zone, with a homeserver answering behind it, and
// expects a clean report.
func TestProbeAgainstServe(t *testing.T) {
	const config = `
[dns]
listen = ["127.0.0.1:0"]
nameservers = ["ns1.chat.example.test", "ns2.chat.example.test"]
hostmaster = "hostmaster@example.test"
ttl = "5m"
[http]
listen = "127.0.0.1:0"
plain_listen = "127.0.0.1:0"
[acme]
mode = "self-signed"
[[zone]]
origin = "chat.example.test"
addresses = ["127.0.0.1"]
records = ["hs 300 IN A 127.0.0.1", "ns2 IN A 127.0.0.1"]
[[delegation]]
server_name = "chat.example.test"
server = "hs.chat.example.test:8448"
client = "https://hs.chat.example.test:8448"
[delegation.support]
contacts = [{ matrix_id = "@admin:chat.example.test", role = "m.role.admin" }]
`
	in := startServe(t, config, nil)
	hsCert, caPEM := testCA(t, "hs.chat.example.test", "chat.example.test")
	hs := fakeHomeserver(t, "chat.example.test", hsCert)

	// Trust the test CA and signpost's self-signed certificate, as an admin
	// would pass the real CA's root with -ca-file.
	conn, err := tls.Dial("tcp", in.addrs.HTTPS, &tls.Config{ServerName: "chat.example.test", InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	selfSigned := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	caFile := filepath.Join(t.TempDir(), "roots.pem")
	roots := append(caPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: selfSigned.Raw})...)
	if err := os.WriteFile(caFile, roots, 0o644); err != nil {
		t.Fatal(err)
	}

	hsAddr := strings.TrimPrefix(hs.URL, "https://")
	_, dnsPort, _ := net.SplitHostPort(in.addrs.DNS[0])
	var stdout, stderr bytes.Buffer
	e := env{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }, now: time.Now}
	code := e.run(context.Background(), []string{"probe", "chat.example.test",
		"-resolver", in.addrs.DNS[0], "-ca-file", caFile,
		"-map", ":443=" + in.addrs.HTTPS, "-map", ":8448=" + hsAddr, "-map", ":53=127.0.0.1:" + dnsPort})
	report := stdout.String()
	if code != exitOK {
		t.Fatalf("probe exit %d, want 0\n%s%s", code, report, stderr.String())
	}
	for _, line := range strings.Split(report, "\n") {
		if strings.HasPrefix(line, "fail") || strings.HasPrefix(line, "warn") {
			t.Errorf("report line %q; want a clean report", line)
		}
	}
	for _, want := range []string{
		`GET https://chat.example.test/.well-known/matrix/server: 200, 40 bytes, body "{\"m.server\":\"hs.chat.example.test:8448\"}"`,
		"client discovery: SUCCESS",
		"both SRV names (_matrix-fed._tcp and _matrix._tcp) answer without SERVFAIL or REFUSED",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if !strings.HasPrefix(strings.TrimSpace(report[strings.LastIndex(strings.TrimSpace(report), "\n")+1:]), "PASS: ") {
		t.Errorf("report does not end with PASS:\n%s", report)
	}
}
