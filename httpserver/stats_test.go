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

// TestStatsReload: a name's counts survive a reload that rebuilds its
// site, a name without requests has no series, and a name the model no
// longer serves shows none either.
func TestStatsReload(t *testing.T) {
	ts := startServer(t, Options{}, mustParse(t, twoTenants))
	c := ts.client(t, ts.tlsAddr, false)
	get := func(url string, status int) {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != status {
			t.Fatalf("GET %s: status %d, want %d", url, resp.StatusCode, status)
		}
	}
	requests := func() []string {
		return promtest.Pick(promtest.Values(t, ts.Metrics()), "signpost_http_requests_total")
	}
	get(chatURL+"/.well-known/matrix/server", 200)
	before := ts.index.Load().sites["chat.example.com"]
	ts.SetModel(mustParse(t, strings.Replace(twoTenants, "hs.chat.example.com:443", "hs.chat.example.com:8448", 1)))
	if ts.index.Load().sites["chat.example.com"] == before {
		t.Fatal("the reload did not rebuild the site; the test needs a change that does")
	}
	get(chatURL+"/.well-known/matrix/server", 200)
	want := []string{`signpost_http_requests_total{document="server",server_name="chat.example.com",status="200"} 2`}
	if got := requests(); !slices.Equal(got, want) {
		t.Errorf("after a reload:\ngot  %q\nwant %q", got, want)
	}
	ts.SetModel(mustParse(t, strings.Replace(twoTenants, `server_name = "chat.example.com"`, `server_name = "chat2.example.com"`, 1)))
	if got := requests(); len(got) != 0 {
		t.Errorf("after the name was removed: %q, want none", got)
	}
}
