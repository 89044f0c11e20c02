package httpserver

import (
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/signpost-dev/signpost/internal/promtest"
)

// TestStats sends known requests over HTTPS (fast path and HTTP/2) and
// plain HTTP, and a failed handshake, and checks every counter.
func TestStats(t *testing.T) {
	ts := startServer(t, Options{}, mustParse(t, twoTenants))
	h1 := ts.client(t, ts.tlsAddr, false)
	h2 := ts.client(t, ts.tlsAddr, true)
	plain := ts.client(t, ts.plainAddr, false)
	get := func(c *http.Client, method, url string) {
		t.Helper()
		req, err := http.NewRequest(method, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if method == http.MethodPost {
			req.Body = io.NopCloser(strings.NewReader("x"))
			req.ContentLength = 1
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get(h1, "GET", "https://chat.example.com/.well-known/matrix/server")
	get(h1, "GET", "https://chat.example.com/.well-known/matrix/server")
	get(h1, "GET", "https://chat.example.com/.well-known/matrix/nope")
	get(h2, "GET", "https://chat.example.com/.well-known/matrix/client")
	get(h2, "OPTIONS", "https://chat.example.com/.well-known/matrix/client")
	get(h1, "GET", "https://unknown.example.net/.well-known/matrix/server")
	get(plain, "GET", "http://other.example.org/.well-known/matrix/support")
	get(plain, "GET", "http://other.example.org/login")
	get(plain, "POST", "http://other.example.org/.well-known/matrix/server")

	// A handshake that fails: not TLS at all.
	conn, err := net.Dial("tcp", ts.tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n")); err != nil {
		t.Fatal(err)
	}
	// The server counts the failure before it closes the connection.
	io.Copy(io.Discard, conn)
	conn.Close()

	vs := promtest.Values(t, ts.Metrics())
	want := []string{
		`signpost_http_requests_total{document="client",server_name="chat.example.com",status="200"} 1`,
		`signpost_http_requests_total{document="client",server_name="chat.example.com",status="204"} 1`,
		`signpost_http_requests_total{document="other",server_name="chat.example.com",status="404"} 1`,
		`signpost_http_requests_total{document="other",server_name="other.example.org",status="301"} 1`,
		`signpost_http_requests_total{document="server",server_name="chat.example.com",status="200"} 2`,
		`signpost_http_requests_total{document="server",server_name="none",status="404"} 1`,
		`signpost_http_requests_total{document="server",server_name="other.example.org",status="405"} 1`,
		`signpost_http_requests_total{document="support",server_name="other.example.org",status="404"} 1`,
	}
	if got := promtest.Pick(vs, "signpost_http_requests_total"); !slices.Equal(got, want) {
		t.Errorf("requests:\ngot  %q\nwant %q", got, want)
	}
	for series, v := range map[string]float64{
		`signpost_http_tls_handshakes_total`:                        3, // h1, h2, unknown.example.net
		`signpost_http_tls_handshake_errors_total`:                  1,
		`signpost_http_connections_evicted_total{listener="https"}`: 0,
	} {
		if got, ok := vs[series]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, v)
		}
	}
}
