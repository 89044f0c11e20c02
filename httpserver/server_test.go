package httpserver

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Two tenants; only the first has a support document.
const twoTenants = `
[http]
listen        = "127.0.0.1:8443"
root_redirect = "https://www.example.com/"

[acme]
mode = "self-signed"

[[delegation]]
server_name = "chat.example.com"
server      = "hs.chat.example.com:443"
client      = "https://hs.chat.example.com"

[delegation.support]
page     = "https://example.com/help"
contacts = [{ matrix_id = "@admin:chat.example.com", email = "admin@example.com", role = "m.role.admin" }]

[[delegation]]
server_name     = "other.example.org"
server          = "matrix.other.example.org:8448"
client          = "https://matrix.other.example.org"
identity_server = "https://id.other.example.org"
client_extra    = { "org.matrix.msc3575.proxy" = { url = "https://sync.example.com" } }
`

// The exact documents config builds for twoTenants.
const (
	chatServer  = `{"m.server":"hs.chat.example.com:443"}`
	chatClient  = `{"m.homeserver":{"base_url":"https://hs.chat.example.com"}}`
	chatSupport = `{"contacts":[{"email_address":"admin@example.com","matrix_id":"@admin:chat.example.com","role":"m.role.admin"}],"support_page":"https://example.com/help"}`
	otherServer = `{"m.server":"matrix.other.example.org:8448"}`
	otherClient = `{"m.homeserver":{"base_url":"https://matrix.other.example.org"},"m.identity_server":{"base_url":"https://id.other.example.org"},"org.matrix.msc3575.proxy":{"url":"https://sync.example.com"}}`

	notFoundBody    = `{"errcode":"M_NOT_FOUND","error":"Not found"}`
	unrecognized    = `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`
	misdirectedBody = `{"errcode":"M_UNKNOWN","error":"Misdirected request: the Host header does not match the TLS server name"}`
)

const (
	chatURL  = "https://chat.example.com"
	otherURL = "https://other.example.org"
)

// tlsExchanges are the HTTPS behaviours, each checked over HTTP/1.1 and
// HTTP/2.
func tlsExchanges() []exchange {
	wk404 := merge(cors, jsonHeaders(notFoundBody))
	return []exchange{
		{name: "server", url: chatURL + "/.well-known/matrix/server",
			status: 200, want: docHeaders(chatServer, 86400), body: chatServer},
		{name: "client", url: chatURL + "/.well-known/matrix/client",
			status: 200, want: docHeaders(chatClient, 3600), body: chatClient},
		{name: "support", url: chatURL + "/.well-known/matrix/support",
			status: 200, want: docHeaders(chatSupport, 3600), body: chatSupport},
		{name: "other tenant server", url: otherURL + "/.well-known/matrix/server",
			status: 200, want: docHeaders(otherServer, 86400), body: otherServer},
		{name: "other tenant client", url: otherURL + "/.well-known/matrix/client",
			status: 200, want: docHeaders(otherClient, 3600), body: otherClient},
		{name: "support not configured", url: otherURL + "/.well-known/matrix/support",
			status: 404, want: wk404, body: notFoundBody},
		{name: "query string ignored", url: chatURL + "/.well-known/matrix/client?x=1",
			status: 200, want: docHeaders(chatClient, 3600), body: chatClient},
		{name: "HEAD", method: "HEAD", url: chatURL + "/.well-known/matrix/client",
			status: 200, want: docHeaders(chatClient, 3600), body: ""},
		{name: "HEAD 404", method: "HEAD", url: otherURL + "/.well-known/matrix/support",
			status: 404, want: wk404, body: ""},

		// Host routing: case, trailing dot and port do not matter.
		{name: "host upper case", url: "https://CHAT.Example.COM/.well-known/matrix/server",
			status: 200, want: docHeaders(chatServer, 86400), body: chatServer},
		{name: "host trailing dot", url: chatURL + "/.well-known/matrix/server", host: "chat.example.com.",
			status: 200, want: docHeaders(chatServer, 86400), body: chatServer},
		{name: "host default port", url: chatURL + "/.well-known/matrix/server", host: "chat.example.com:443",
			status: 200, want: docHeaders(chatServer, 86400), body: chatServer},
		{name: "host dot and port", url: chatURL + "/.well-known/matrix/server", host: "Chat.Example.Com.:8443",
			status: 200, want: docHeaders(chatServer, 86400), body: chatServer},
		{name: "host bad port", url: chatURL + "/.well-known/matrix/server", host: "chat.example.com:https",
			status: 404, want: wk404, body: notFoundBody},

		// Unknown names never get another tenant's documents.
		{name: "unknown host", url: "https://unknown.example.net/.well-known/matrix/server",
			status: 404, want: wk404, body: notFoundBody},
		{name: "unknown host client", url: "https://unknown.example.net/.well-known/matrix/client",
			status: 404, want: wk404, body: notFoundBody},
		{name: "unknown host root", url: "https://unknown.example.net/",
			status: 404, want: jsonHeaders(notFoundBody), body: notFoundBody},
		{name: "SNI and Host differ", url: chatURL + "/.well-known/matrix/server", host: "other.example.org",
			status: 421, want: merge(cors, jsonHeaders(misdirectedBody)), body: misdirectedBody},
		{name: "SNI known, Host unknown", url: chatURL + "/.well-known/matrix/client", host: "unknown.example.net",
			status: 421, want: merge(cors, jsonHeaders(misdirectedBody)), body: misdirectedBody},
		{name: "SNI and Host differ outside well-known", url: chatURL + "/", host: "other.example.org",
			status: 421, want: jsonHeaders(misdirectedBody), body: misdirectedBody},

		// Conditional requests.
		{name: "If-None-Match", url: chatURL + "/.well-known/matrix/client",
			header: hdr("If-None-Match", etagOf(chatClient)),
			status: 304, want: notModifiedHeaders(chatClient, 3600)},
		{name: "If-None-Match weak", url: chatURL + "/.well-known/matrix/server",
			header: hdr("If-None-Match", "W/"+etagOf(chatServer)),
			status: 304, want: notModifiedHeaders(chatServer, 86400)},
		{name: "If-None-Match list", url: chatURL + "/.well-known/matrix/server",
			header: hdr("If-None-Match", `"nope", W/"other" ,`+etagOf(chatServer)),
			status: 304, want: notModifiedHeaders(chatServer, 86400)},
		{name: "If-None-Match star", url: chatURL + "/.well-known/matrix/support",
			header: hdr("If-None-Match", "*"),
			status: 304, want: notModifiedHeaders(chatSupport, 3600)},
		{name: "If-None-Match HEAD", method: "HEAD", url: chatURL + "/.well-known/matrix/client",
			header: hdr("If-None-Match", etagOf(chatClient)),
			status: 304, want: notModifiedHeaders(chatClient, 3600)},
		{name: "If-None-Match other document", url: chatURL + "/.well-known/matrix/client",
			header: hdr("If-None-Match", etagOf(chatServer)),
			status: 200, want: docHeaders(chatClient, 3600), body: chatClient},
		{name: "If-None-Match other tenant", url: otherURL + "/.well-known/matrix/server",
			header: hdr("If-None-Match", etagOf(chatServer)),
			status: 200, want: docHeaders(otherServer, 86400), body: otherServer},
		{name: "If-None-Match malformed", url: chatURL + "/.well-known/matrix/server",
			header: hdr("If-None-Match", `nope, `+etagOf(chatServer)),
			status: 200, want: docHeaders(chatServer, 86400), body: chatServer},
		{name: "If-None-Match unknown host", url: "https://unknown.example.net/.well-known/matrix/server",
			header: hdr("If-None-Match", "*"),
			status: 404, want: wk404, body: notFoundBody},

		// Methods.
		{name: "OPTIONS", method: "OPTIONS", url: chatURL + "/.well-known/matrix/client",
			header: hdr("Origin", "https://app.element.io", "Access-Control-Request-Method", "GET"),
			status: 204, want: merge(cors, hdr("Allow", "GET, HEAD, OPTIONS"))},
		{name: "OPTIONS support not configured", method: "OPTIONS", url: otherURL + "/.well-known/matrix/support",
			status: 204, want: merge(cors, hdr("Allow", "GET, HEAD, OPTIONS"))},
		{name: "POST", method: "POST", url: chatURL + "/.well-known/matrix/client",
			status: 405, want: merge(cors, hdr("Allow", "GET, HEAD, OPTIONS"), jsonHeaders(unrecognized)), body: unrecognized},
		{name: "DELETE", method: "DELETE", url: chatURL + "/.well-known/matrix/server",
			status: 405, want: merge(cors, hdr("Allow", "GET, HEAD, OPTIONS"), jsonHeaders(unrecognized)), body: unrecognized},

		// Other paths.
		{name: "root", url: chatURL + "/",
			status: 302, want: hdr("Location", "https://www.example.com/", "Content-Length", "0")},
		{name: "root HEAD", method: "HEAD", url: otherURL + "/",
			status: 302, want: hdr("Location", "https://www.example.com/", "Content-Length", "0")},
		// Methods that carry a body get one answer on every path; the body
		// is never read.
		{name: "root POST", method: "POST", url: chatURL + "/",
			status: 405, want: merge(cors, hdr("Allow", "GET, HEAD, OPTIONS"), jsonHeaders(unrecognized)), body: unrecognized},
		{name: "PATCH elsewhere", method: "PATCH", url: chatURL + "/x",
			status: 405, want: merge(cors, hdr("Allow", "GET, HEAD, OPTIONS"), jsonHeaders(unrecognized)), body: unrecognized},
		{name: "other path", url: chatURL + "/index.html",
			status: 404, want: jsonHeaders(notFoundBody), body: notFoundBody},
		{name: "well-known directory", url: chatURL + "/.well-known/matrix/",
			status: 404, want: wk404, body: notFoundBody},
		{name: "trailing slash", url: chatURL + "/.well-known/matrix/server/",
			status: 404, want: wk404, body: notFoundBody},
		{name: "unknown document", url: chatURL + "/.well-known/matrix/policy",
			status: 404, want: wk404, body: notFoundBody},
		{name: "no matrix", url: chatURL + "/.well-known/server",
			status: 404, want: jsonHeaders(notFoundBody), body: notFoundBody},
	}
}

func TestTLS(t *testing.T) {
	ts := startServer(t, Options{}, mustParse(t, twoTenants))
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		c := ts.client(t, ts.tlsAddr, proto == "HTTP/2.0")
		for _, e := range tlsExchanges() {
			t.Run(proto+"/"+e.name, func(t *testing.T) {
				check(t, c, e)
			})
		}
	}
}

// TestCORS checks the CORS headers on each kind of answer on their own, so
// that a change to the shared expectations cannot hide their loss.
func TestCORS(t *testing.T) {
	ts := startServer(t, Options{}, mustParse(t, twoTenants))
	want := map[string]string{
		"Access-Control-Allow-Origin":  "*",
		"Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, OPTIONS",
		"Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization",
	}
	for _, tc := range []struct {
		method, url, inm string
		status           int
	}{
		{"GET", chatURL + "/.well-known/matrix/client", "", 200},
		{"GET", chatURL + "/.well-known/matrix/client", etagOf(chatClient), 304},
		{"GET", otherURL + "/.well-known/matrix/support", "", 404},
		{"GET", "https://unknown.example.net/.well-known/matrix/client", "", 404},
		{"POST", chatURL + "/.well-known/matrix/client", "", 405},
		{"OPTIONS", chatURL + "/.well-known/matrix/client", "", 204},
	} {
		for _, h2 := range []bool{false, true} {
			c := ts.client(t, ts.tlsAddr, h2)
			req, _ := http.NewRequest(tc.method, tc.url, nil)
			if tc.inm != "" {
				req.Header.Set("If-None-Match", tc.inm)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("%s %s: status %d, want %d", tc.method, tc.url, resp.StatusCode, tc.status)
			}
			for k, v := range want {
				if got := resp.Header.Values(k); !slices.Equal(got, []string{v}) {
					t.Errorf("%s %s (%d, h2 %v): %s = %q, want %q", tc.method, tc.url, resp.StatusCode, h2, k, got, v)
				}
			}
		}
	}
}

func TestNoRootRedirect(t *testing.T) {
	ts := startServer(t, Options{}, mustParse(t, `
[[delegation]]
server_name = "chat.example.com"
server      = "hs.chat.example.com:443"
client      = "https://hs.chat.example.com"
`))
	c := ts.client(t, ts.tlsAddr, false)
	check(t, c, exchange{url: chatURL + "/", status: 404, want: jsonHeaders(notFoundBody), body: notFoundBody})
}

func TestMaxAgeFromConfig(t *testing.T) {
	ts := startServer(t, Options{}, mustParse(t, `
[http]
server_max_age = "48h"
client_max_age = "5m"

[[delegation]]
server_name = "chat.example.com"
server      = "hs.chat.example.com:443"
client      = "https://hs.chat.example.com"

[delegation.support]
page     = "https://example.com/help"
contacts = [{ matrix_id = "@admin:chat.example.com", email = "admin@example.com", role = "m.role.admin" }]
`))
	c := ts.client(t, ts.tlsAddr, false)
	check(t, c, exchange{url: chatURL + "/.well-known/matrix/server", status: 200, want: docHeaders(chatServer, 172800), body: chatServer})
	check(t, c, exchange{url: chatURL + "/.well-known/matrix/client", status: 200, want: docHeaders(chatClient, 300), body: chatClient})
	check(t, c, exchange{url: chatURL + "/.well-known/matrix/support", status: 200, want: docHeaders(chatSupport, 300), body: chatSupport})
}

func TestNoModel(t *testing.T) {
	ts := startServer(t, Options{}, nil)
	c := ts.client(t, ts.tlsAddr, false)
	check(t, c, exchange{url: chatURL + "/.well-known/matrix/server",
		status: 404, want: merge(cors, jsonHeaders(notFoundBody)), body: notFoundBody})
}

// TestWire compares the bytes of whole HTTP/1.1 answers, header order and
// spelling included, with only the Date value masked, from the fast path
// and from net/http: documents of different lengths and Cache-Control,
// HEAD, 304, the CORS preflight and a 404.
func TestWire(t *testing.T) {
	m := mustParse(t, twoTenants)
	const close = "Connection: close\r\n\r\n"
	for _, tc := range []struct {
		name, sni, req, want string
	}{
		{"server", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\n",
			"HTTP/1.1 200 OK\r\n" +
				"Access-Control-Allow-Headers: X-Requested-With, Content-Type, Authorization\r\n" +
				"Access-Control-Allow-Methods: GET, HEAD, POST, PUT, DELETE, OPTIONS\r\n" +
				"Access-Control-Allow-Origin: *\r\n" +
				"Cache-Control: max-age=86400\r\n" +
				"Content-Length: 38\r\n" +
				"Content-Type: application/json\r\n" +
				"Etag: " + etagOf(chatServer) + "\r\n" +
				"Date: *\r\n" + close + chatServer},
		{"support", "chat.example.com", "GET /.well-known/matrix/support HTTP/1.1\r\nHost: chat.example.com\r\n",
			docWire(chatSupport, 3600, false) + close + chatSupport},
		{"other client", "other.example.org", "GET /.well-known/matrix/client HTTP/1.1\r\nHost: other.example.org\r\n",
			docWire(otherClient, 3600, false) + close + otherClient},
		{"other server", "other.example.org", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: other.example.org\r\n",
			docWire(otherServer, 86400, false) + close + otherServer},
		{"HEAD", "chat.example.com", "HEAD /.well-known/matrix/client HTTP/1.1\r\nHost: chat.example.com\r\n",
			docWire(chatClient, 3600, false) + close},
		{"304", "chat.example.com", "GET /.well-known/matrix/client HTTP/1.1\r\nHost: chat.example.com\r\nIf-None-Match: " + etagOf(chatClient) + "\r\n",
			docWire(chatClient, 3600, true) + close},
		{"304 HEAD", "other.example.org", "HEAD /.well-known/matrix/server HTTP/1.1\r\nHost: other.example.org\r\nIf-None-Match: " + etagOf(otherServer) + "\r\n",
			docWire(otherServer, 86400, true) + close},
		{"preflight", "chat.example.com", "OPTIONS /.well-known/matrix/client HTTP/1.1\r\nHost: chat.example.com\r\n",
			"HTTP/1.1 204 No Content\r\n" + corsWire + "Allow: GET, HEAD, OPTIONS\r\nDate: *\r\n" + close},
		{"404", "other.example.org", "GET /.well-known/matrix/support HTTP/1.1\r\nHost: other.example.org\r\n",
			"HTTP/1.1 404 Not Found\r\n" + corsWire + "Content-Length: 45\r\nContent-Type: application/json\r\nDate: *\r\n" + close + notFoundBody},
	} {
		for _, fast := range []bool{true, false} {
			ts := startServer(t, Options{noFast: !fast}, m)
			if got := rawExchange(t, ts, tc.sni, tc.req+close); got != tc.want {
				t.Errorf("%s (fast path %v):\ngot  %q\nwant %q", tc.name, fast, got, tc.want)
			}
		}
	}
}

func TestPlain(t *testing.T) {
	// The wrapper stands in for acme's HTTPHandler: it answers challenge
	// paths and hands the rest on.
	wrap := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
				w.Header().Set("Content-Type", "text/plain")
				io.WriteString(w, "key-authorization")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	ts := startServer(t, Options{WrapPlain: wrap}, mustParse(t, twoTenants))
	c := ts.client(t, ts.plainAddr, false)
	wk404 := merge(cors, jsonHeaders(notFoundBody))
	for _, e := range []exchange{
		{name: "acme challenge", url: "http://chat.example.com/.well-known/acme-challenge/tok",
			status: 200, want: hdr("Content-Type", "text/plain", "Content-Length", "17"), body: "key-authorization"},
		{name: "server", url: "http://chat.example.com/.well-known/matrix/server",
			status: 200, want: docHeaders(chatServer, 86400), body: chatServer},
		{name: "client via proxy Host", url: "http://chat.example.com/.well-known/matrix/client", host: "Chat.Example.Com:80",
			status: 200, want: docHeaders(chatClient, 3600), body: chatClient},
		{name: "other tenant", url: "http://other.example.org/.well-known/matrix/client",
			status: 200, want: docHeaders(otherClient, 3600), body: otherClient},
		{name: "support not configured", url: "http://other.example.org/.well-known/matrix/support",
			status: 404, want: wk404, body: notFoundBody},
		{name: "304", url: "http://chat.example.com/.well-known/matrix/client", header: hdr("If-None-Match", etagOf(chatClient)),
			status: 304, want: notModifiedHeaders(chatClient, 3600)},
		{name: "OPTIONS", method: "OPTIONS", url: "http://chat.example.com/.well-known/matrix/client",
			status: 204, want: merge(cors, hdr("Allow", "GET, HEAD, OPTIONS"))},
		{name: "POST", method: "POST", url: "http://chat.example.com/.well-known/matrix/server",
			status: 405, want: merge(cors, hdr("Allow", "GET, HEAD, OPTIONS"), jsonHeaders(unrecognized)), body: unrecognized},
		{name: "unknown host", url: "http://unknown.example.net/.well-known/matrix/server",
			status: 404, want: wk404, body: notFoundBody},
		{name: "redirect root", url: "http://chat.example.com/",
			status: 301, want: hdr("Location", "https://chat.example.com:8443/", "Content-Length", "0")},
		{name: "redirect keeps path and query", url: "http://CHAT.example.com./a/b?c=d&e",
			status: 301, want: hdr("Location", "https://chat.example.com:8443/a/b?c=d&e", "Content-Length", "0")},
		{name: "POST elsewhere", method: "POST", url: "http://other.example.org/x",
			status: 405, want: merge(cors, hdr("Allow", "GET, HEAD, OPTIONS"), jsonHeaders(unrecognized)), body: unrecognized},
		{name: "PUT to an ACME challenge path", method: "PUT", url: "http://chat.example.com/.well-known/acme-challenge/tok",
			status: 405, want: merge(cors, hdr("Allow", "GET, HEAD, OPTIONS"), jsonHeaders(unrecognized)), body: unrecognized},
		{name: "unknown host is not redirected", url: "http://unknown.example.net/",
			status: 404, want: jsonHeaders(notFoundBody), body: notFoundBody},
	} {
		t.Run(e.name, func(t *testing.T) { check(t, c, e) })
	}
}

// TestPlainRedirectDefaultPort: with HTTPS on 443 the redirect names no port.
func TestPlainRedirectDefaultPort(t *testing.T) {
	ts := startServer(t, Options{}, mustParse(t, `
[http]
listen = "[::]:443"

[[delegation]]
server_name = "chat.example.com"
server      = "hs.chat.example.com:443"
client      = "https://hs.chat.example.com"
`))
	c := ts.client(t, ts.plainAddr, false)
	check(t, c, exchange{url: "http://chat.example.com:80/x?y", status: 301,
		want: hdr("Location", "https://chat.example.com/x?y", "Content-Length", "0")})
}

// TestPlainNoHost: HTTP/1.0 without Host cannot be routed on the plain
// listener, which has no SNI to fall back on.
func TestPlainNoHost(t *testing.T) {
	ts := startServer(t, Options{}, mustParse(t, twoTenants))
	conn, err := net.Dial("tcp", ts.plainAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /.well-known/matrix/server HTTP/1.0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 404 || string(body) != notFoundBody {
		t.Errorf("got %d %q, want 404 %q", resp.StatusCode, body, notFoundBody)
	}
}

// TestTLSNoHost: HTTP/1.0 without Host is routed by SNI.
func TestTLSNoHost(t *testing.T) {
	ts := startServer(t, Options{}, mustParse(t, twoTenants))
	conn, err := tls.Dial("tcp", ts.tlsAddr, &tls.Config{ServerName: "other.example.org", RootCAs: ts.pki.pool})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /.well-known/matrix/server HTTP/1.0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != otherServer {
		t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, otherServer)
	}
}

func TestTLSConfig(t *testing.T) {
	pki := newPKI(t, testNames...)
	caller := &tls.Config{Certificates: pki.certs, NextProtos: []string{"acme-tls/1"}, MinVersion: tls.VersionTLS10}
	ts := startServer(t, Options{TLSConfig: caller}, mustParse(t, twoTenants))
	ts.pki = pki
	if !slices.Equal(caller.NextProtos, []string{"acme-tls/1"}) || caller.MinVersion != tls.VersionTLS10 {
		t.Errorf("caller's config was modified: NextProtos %q, MinVersion %x", caller.NextProtos, caller.MinVersion)
	}
	for _, tc := range []struct {
		offer []string
		want  string
	}{
		{[]string{"h2", "http/1.1"}, "h2"},
		{[]string{"http/1.1", "h2"}, "h2"}, // the server's preference decides
		{[]string{"http/1.1"}, "http/1.1"},
		{[]string{"acme-tls/1"}, "acme-tls/1"},
		{nil, ""},
	} {
		conn, err := tls.Dial("tcp", ts.tlsAddr, &tls.Config{ServerName: "chat.example.com", RootCAs: pki.pool, NextProtos: tc.offer})
		if err != nil {
			t.Errorf("offer %q: %v", tc.offer, err)
			continue
		}
		if got := conn.ConnectionState().NegotiatedProtocol; got != tc.want {
			t.Errorf("offer %q: negotiated %q, want %q", tc.offer, got, tc.want)
		}
		if tc.want == "acme-tls/1" {
			// Nothing but the handshake happens on such a connection.
			waitClosed(t, conn)
		}
		conn.Close()
	}
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		conn, err := tls.Dial("tcp", ts.tlsAddr, &tls.Config{ServerName: "chat.example.com", RootCAs: pki.pool, MinVersion: v, MaxVersion: v})
		if err == nil {
			conn.Close()
			t.Errorf("TLS version %x accepted, want TLS 1.2 minimum", v)
		}
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		conn, err := tls.Dial("tcp", ts.tlsAddr, &tls.Config{ServerName: "chat.example.com", RootCAs: pki.pool, MinVersion: v, MaxVersion: v})
		if err != nil {
			t.Errorf("TLS version %x: %v", v, err)
			continue
		}
		conn.Close()
	}
}

func TestServeTLSWithoutConfig(t *testing.T) {
	s := New(Options{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := s.ServeTLS(l); err == nil || !strings.Contains(err.Error(), "no TLS configuration") {
		t.Errorf("ServeTLS without TLSConfig: %v, want an error", err)
	}
}

// TestSessionResumption: peers that reconnect skip the full handshake, with
// tickets in TLS 1.3 and in TLS 1.2.
func TestSessionResumption(t *testing.T) {
	ts := startServer(t, Options{}, mustParse(t, twoTenants))
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cfg := &tls.Config{ServerName: "chat.example.com", RootCAs: ts.pki.pool, MaxVersion: v,
			ClientSessionCache: tls.NewLRUClientSessionCache(4), NextProtos: []string{"http/1.1"}}
		for i, want := range []bool{false, true} {
			conn, err := tls.Dial("tcp", ts.tlsAddr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			// A request makes the client read the TLS 1.3 ticket, which
			// follows the handshake.
			io.WriteString(conn, "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nConnection: close\r\n\r\n")
			io.Copy(io.Discard, conn)
			if got := conn.ConnectionState().DidResume; got != want {
				t.Errorf("TLS %x connection %d: DidResume %v, want %v", v, i, got, want)
			}
			conn.Close()
		}
	}
}

// TestReload: a new model changes the answers on connections that stay open.
func TestReload(t *testing.T) {
	ts := startServer(t, Options{}, mustParse(t, twoTenants))
	reloaded := mustParse(t, `
[http]
client_max_age = "10m"

[[delegation]]
server_name = "chat.example.com"
server      = "hs2.chat.example.com:8448"
client      = "https://hs2.chat.example.com"
`)
	newServer := `{"m.server":"hs2.chat.example.com:8448"}`
	newClient := `{"m.homeserver":{"base_url":"https://hs2.chat.example.com"}}`
	for _, h2 := range []bool{false, true} {
		ts.SetModel(mustParse(t, twoTenants))
		c := ts.client(t, ts.tlsAddr, h2)
		var conns []net.Conn
		get := func(e exchange) {
			t.Helper()
			trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { conns = append(conns, i.Conn) }}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", e.url, nil)
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != e.status || string(body) != e.body {
				t.Errorf("h2 %v %s: got %d %q, want %d %q", h2, e.url, resp.StatusCode, body, e.status, e.body)
			}
			if got := resp.Header.Get("Cache-Control"); e.status == 200 && got != e.want.Get("Cache-Control") {
				t.Errorf("h2 %v %s: Cache-Control %q, want %q", h2, e.url, got, e.want.Get("Cache-Control"))
			}
		}
		get(exchange{url: chatURL + "/.well-known/matrix/client", status: 200, body: chatClient, want: hdr("Cache-Control", "max-age=3600")})
		ts.SetModel(reloaded)
		get(exchange{url: chatURL + "/.well-known/matrix/client", status: 200, body: newClient, want: hdr("Cache-Control", "max-age=600")})
		get(exchange{url: chatURL + "/.well-known/matrix/server", status: 200, body: newServer, want: hdr("Cache-Control", "max-age=86400")})
		get(exchange{url: chatURL + "/.well-known/matrix/support", status: 404, body: notFoundBody})
		if len(conns) != 4 || conns[1] != conns[0] || conns[2] != conns[0] || conns[3] != conns[0] {
			t.Errorf("h2 %v: requests used connections %v, want one kept across the reload", h2, conns)
		}
	}
}

// TestSlowClients: hundreds of clients that connect and stall, in the TLS
// handshake, in the middle of their headers or trickling a request body,
// on both listeners, do not keep a normal request from being answered,
// whether the connection budget is far or near. Bodies are never read:
// the requests that send one are answered at once and their connections
// closed, where net/http would have drained the body for an hour first. A
// GET that announces a body is no exception.
func TestSlowClients(t *testing.T) {
	const slow = 300
	for _, maxConns := range []int{0, 50} {
		t.Run(fmt.Sprint("MaxConns=", maxConns), func(t *testing.T) {
			// Timeouts far beyond the test's patience: if the slow clients
			// held the server up, only the client timeout would end it.
			ts := startServer(t, Options{MaxConns: maxConns, MaxConnsPerSource: 2 * slow,
				ReadHeaderTimeout: time.Hour, ReadTimeout: time.Hour, WriteTimeout: time.Hour},
				mustParse(t, twoTenants))
			var stalled []net.Conn
			defer func() {
				for _, c := range stalled {
					c.Close()
				}
			}()
			var bodies []slowBody
			held := 0 // stalled connections a far budget must keep
			for i := range slow {
				for _, plain := range []bool{false, true} {
					addr := ts.tlsAddr
					if plain {
						addr = ts.plainAddr
					}
					raw, err := net.Dial("tcp", addr)
					if err != nil {
						t.Fatal(err)
					}
					stalled = append(stalled, raw)
					kind := i % 4
					if kind == 0 && !plain {
						held++
						continue // stalls before the TLS handshake
					}
					c := raw
					if !plain {
						tc := tls.Client(raw, &tls.Config{ServerName: "chat.example.com", RootCAs: ts.pki.pool, NextProtos: []string{"http/1.1"}})
						if err := tc.Handshake(); err != nil {
							if maxConns == 0 {
								t.Fatal(err)
							}
							continue // displaced while handshaking: the budget at work
						}
						c = tc
					}
					switch kind {
					case 0, 1:
						held++
						io.WriteString(c, "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.exa")
					case 2:
						io.WriteString(c, "POST /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nContent-Length: 200000\r\n\r\n{")
						bodies = append(bodies, slowBody{c, plain})
					case 3:
						io.WriteString(c, "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nContent-Length: 200000\r\n\r\n{")
						bodies = append(bodies, slowBody{c, plain})
					}
				}
			}
			for _, addr := range []string{ts.tlsAddr, ts.plainAddr} {
				url := chatURL + "/.well-known/matrix/client"
				if addr == ts.plainAddr {
					url = "http://chat.example.com/.well-known/matrix/client"
				}
				check(t, ts.client(t, addr, false), exchange{url: url,
					status: 200, want: docHeaders(chatClient, 3600), body: chatClient})
			}
			for _, b := range bodies {
				b.check(t, maxConns == 0)
			}
			limit := maxConns
			if limit == 0 {
				limit = DefaultMaxConns
			}
			tlsHeld, plainHeld := ts.tlsConns.count(), ts.plainConns.count()
			if tlsHeld > limit || plainHeld > limit || (maxConns == 0 && tlsHeld+plainHeld < held) {
				t.Errorf("open connections: %d HTTPS and %d plain, want at most %d each and (with a far budget) all %d stalled ones in all",
					tlsHeld, plainHeld, limit, held)
			}
		})
	}
}

// slowBody is a connection that sent a request head announcing a 200,000
// byte body, and one byte of it.
type slowBody struct {
	c     net.Conn
	plain bool
}

// check reads the answer, a 405 that comes without the body being read and
// closes the connection. Unless mustAnswer is set, a connection that the
// budget displaced before its request was read passes.
func (b slowBody) check(t *testing.T, mustAnswer bool) {
	t.Helper()
	b.c.SetReadDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(b.c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		if !mustAnswer {
			return
		}
		t.Fatalf("slow body (plain %v): %v, want an answer before the body", b.plain, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("slow body (plain %v): reading the answer: %v", b.plain, err)
	}
	resp.Header.Del("Date")
	if resp.StatusCode != 405 || string(body) != unrecognized {
		t.Errorf("slow body (plain %v): got %d %q, want 405 %q", b.plain, resp.StatusCode, body, unrecognized)
	}
	if !resp.Close {
		t.Errorf("slow body (plain %v): no Connection: close", b.plain)
	}
	if diff := headerDiff(resp.Header, merge(cors, hdr("Allow", "GET, HEAD, OPTIONS"), jsonHeaders(unrecognized))); diff != "" {
		t.Errorf("slow body (plain %v): headers differ (- got, + want):\n%s", b.plain, diff)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("slow body (plain %v): after the answer read %v, want EOF", b.plain, err)
	}
}

// TestConnBoundBusy: when every connection is in the middle of a request, a
// new one displaces the one that has been in its request longest, rather
// than being refused: a request stuck that long is a client stalling (in
// its body, or in reading the answer), not a normal one.
func TestConnBoundBusy(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 2)
	var once sync.Once
	defer once.Do(func() { close(release) })
	wrap := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/block" {
				next.ServeHTTP(w, r)
				return
			}
			started <- struct{}{}
			<-release
		})
	}
	ts := startServer(t, Options{MaxConns: 2, WrapPlain: wrap}, mustParse(t, twoTenants))
	var busy []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", ts.plainAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /block HTTP/1.1\r\nHost: chat.example.com\r\n\r\n")
		busy = append(busy, c)
		<-started
	}
	check(t, ts.client(t, ts.plainAddr, false), exchange{url: "http://chat.example.com/.well-known/matrix/server",
		status: 200, want: docHeaders(chatServer, 86400), body: chatServer})
	waitClosed(t, busy[0])
	if n := ts.plainConns.count(); n != 2 {
		t.Errorf("open connections: %d, want 2", n)
	}
	once.Do(func() { close(release) })
	resp, err := http.ReadResponse(bufio.NewReader(busy[1]), nil)
	if err != nil {
		t.Fatalf("busy connection that was not displaced: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("busy connection that was not displaced: status %d, want 200", resp.StatusCode)
	}
}

// TestPerSourceCap: a source at its cap displaces its own stalest
// connections, never another source's, on either listener.
func TestPerSourceCap(t *testing.T) {
	const limit, tries = 4, 10
	ts := startServer(t, Options{MaxConnsPerSource: limit}, mustParse(t, twoTenants))
	for _, plain := range []bool{false, true} {
		addr, lim := ts.tlsAddr, ts.tlsConns
		if plain {
			addr, lim = ts.plainAddr, ts.plainConns
		}
		t.Run(map[bool]string{false: "https", true: "plain"}[plain], func(t *testing.T) {
			var conns []net.Conn
			for range tries {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
				c, err := d.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if plain {
					io.WriteString(c, "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\n")
				}
				conns = append(conns, c)
			}
			// Another source is not held back; the accept queue is first in,
			// first out, so this comes after all of the above.
			url := chatURL + "/.well-known/matrix/server"
			if plain {
				url = "http://chat.example.com/.well-known/matrix/server"
			}
			check(t, ts.client(t, addr, false), exchange{url: url, status: 200, want: docHeaders(chatServer, 86400), body: chatServer})
			if n := lim.sourceCount(net.IPv4(127, 0, 0, 2)); n != limit {
				t.Errorf("127.0.0.2 holds %d connections, want %d", n, limit)
			}
			// The oldest were displaced; the newest still work.
			for _, c := range conns[:tries-limit] {
				waitClosed(t, c)
			}
			for _, c := range conns[tries-limit:] {
				if plain {
					io.WriteString(c, "Connection: close\r\n\r\n")
				} else {
					tc := tls.Client(c, &tls.Config{ServerName: "chat.example.com", RootCAs: ts.pki.pool, NextProtos: []string{"http/1.1"}})
					if err := tc.Handshake(); err != nil {
						t.Fatalf("newest connection: %v", err)
					}
					io.WriteString(tc, "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nConnection: close\r\n\r\n")
					c = tc
				}
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("newest connection: %v", err)
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(body) != chatServer {
					t.Errorf("newest connection: got %d %q, want 200 %q", resp.StatusCode, body, chatServer)
				}
			}
		})
	}
}

// TestSourceOf: IPv4 addresses count one by one, IPv6 ones by /64.
func TestSourceOf(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"192.0.2.1", "192.0.2.1", true},
		{"192.0.2.1", "192.0.2.2", false},
		{"::ffff:192.0.2.1", "192.0.2.1", true},
		{"2001:db8::1", "2001:db8::ffff:1", true},
		{"2001:db8::1", "2001:db8:0:1::1", false},
	} {
		a := sourceOf(&net.TCPAddr{IP: net.ParseIP(tc.a), Port: 1})
		b := sourceOf(&net.TCPAddr{IP: net.ParseIP(tc.b), Port: 2})
		if (a == b) != tc.same {
			t.Errorf("%s and %s: keys %v and %v, want same %v", tc.a, tc.b, a, b, tc.same)
		}
	}
}

// TestTimeouts: the server closes connections that stall in the handshake,
// in the headers or between requests.
func TestTimeouts(t *testing.T) {
	ts := startServer(t, Options{ReadHeaderTimeout: time.Second, IdleTimeout: time.Second},
		mustParse(t, twoTenants))
	t.Run("handshake", func(t *testing.T) {
		c, err := net.Dial("tcp", ts.tlsAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		waitClosed(t, c)
	})
	t.Run("headers", func(t *testing.T) {
		c, err := tls.Dial("tcp", ts.tlsAddr, &tls.Config{ServerName: "chat.example.com", RootCAs: ts.pki.pool, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: chat")
		waitClosed(t, c)
	})
	t.Run("plain headers", func(t *testing.T) {
		c, err := net.Dial("tcp", ts.plainAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\n")
		waitClosed(t, c)
	})
	t.Run("idle", func(t *testing.T) {
		c, err := tls.Dial("tcp", ts.tlsAddr, &tls.Config{ServerName: "chat.example.com", RootCAs: ts.pki.pool, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		c.SetReadDeadline(time.Now().Add(time.Minute))
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("idle connection: read %v, want EOF", err)
		}
	})
}

func TestHeaderLimit(t *testing.T) {
	ts := startServer(t, Options{MaxHeaderBytes: 1024}, mustParse(t, twoTenants))
	c := ts.client(t, ts.tlsAddr, false)
	req, _ := http.NewRequest("GET", chatURL+"/.well-known/matrix/server", nil)
	req.Header.Set("Cookie", strings.Repeat("x", 8<<10))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d, want 431", resp.StatusCode)
	}
	// Within the limit, the same request is answered.
	check(t, c, exchange{url: chatURL + "/.well-known/matrix/server", header: hdr("Cookie", strings.Repeat("x", 512)),
		status: 200, want: docHeaders(chatServer, 86400), body: chatServer})
}

// TestMalformed: requests that net/http passes on but that make no sense
// here get clean errors, and the server keeps answering.
func TestMalformed(t *testing.T) {
	ts := startServer(t, Options{}, mustParse(t, twoTenants))
	for _, req := range []string{
		"GET /.well-known/matrix/server HTTP/1.1\r\nHost: [::1\r\n\r\n",
		"GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com:44x\r\n\r\n",
		"GET /.well-known/matrix/server HTTP/1.1\r\nHost: [::1]:443\r\n\r\n",
		"GET /.well-known/matrix/server HTTP/1.1\r\nHost: [::1]x\r\n\r\n",
		"GET /.well-known/matrix/server HTTP/1.1\r\nHost: .\r\n\r\n",
		"GET /.well-known/matrix/server HTTP/1.1\r\nHost: :\r\n\r\n",
		"GET * HTTP/1.1\r\nHost: chat.example.com\r\n\r\n",
		"GET http://chat.example.com/.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\n\r\n",
	} {
		conn, err := net.Dial("tcp", ts.plainAddr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, req)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		conn.Close()
		if err != nil {
			t.Errorf("%q: %v", req, err)
			continue
		}
		resp.Body.Close()
		want := 404
		if strings.HasPrefix(req, "GET http:") {
			want = 200
		}
		if resp.StatusCode != want {
			t.Errorf("%q: status %d, want %d", req, resp.StatusCode, want)
		}
	}
}

func TestAccessLog(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo} {
		var buf syncBuffer
		logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level,
			ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == "time" || a.Key == "duration" || a.Key == "remote" {
					return slog.Attr{}
				}
				return a
			}}))
		ts := startServer(t, Options{Logger: logger}, mustParse(t, twoTenants))
		c := ts.client(t, ts.tlsAddr, false)
		check(t, c, exchange{url: chatURL + "/.well-known/matrix/server", status: 200, want: docHeaders(chatServer, 86400), body: chatServer})
		pc := ts.client(t, ts.plainAddr, false)
		check(t, pc, exchange{url: "http://chat.example.com/x", status: 301, want: hdr("Location", "https://chat.example.com:8443/x", "Content-Length", "0")})
		want := ""
		if level == slog.LevelDebug {
			want = "level=DEBUG msg=\"http request\" proto=HTTP/1.1 method=GET host=chat.example.com path=/.well-known/matrix/server status=200 bytes=38\n" +
				"level=DEBUG msg=\"http request\" proto=HTTP/1.1 method=GET host=chat.example.com path=/x status=301 bytes=0\n"
		}
		if got := buf.String(); got != want {
			t.Errorf("level %v: log\n%s\nwant\n%s", level, got, want)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestShutdownClosesKeepAlive: Shutdown ends idle keep-alive connections
// and Serve returns nil (checked by startServer's cleanup).
func TestShutdownClosesKeepAlive(t *testing.T) {
	s := New(Options{TLSConfig: newPKI(t, testNames...).serverTLS()})
	s.SetModel(mustParse(t, twoTenants))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.ServePlain(l) }()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Errorf("ServePlain after Shutdown: %v, want nil", err)
	}
	c.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("keep-alive connection after Shutdown: %v, want EOF", err)
	}
}

// TestCurl is the acceptance check, with curl as the client.
func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed (Debian package curl)")
	}
	ts := startServer(t, Options{}, mustParse(t, twoTenants))
	_, port, _ := net.SplitHostPort(ts.tlsAddr)
	for _, proto := range []string{"--http1.1", "--http2"} {
		out, err := exec.Command(curl, "-sS", "-k", proto, "-D", "-", "--resolve", "chat.example.com:"+port+":127.0.0.1",
			"https://chat.example.com:"+port+"/.well-known/matrix/client").CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s: %v\n%s", proto, err, out)
		}
		got := string(out)
		if !strings.HasSuffix(got, "\r\n\r\n"+chatClient) {
			t.Errorf("curl %s: body is not the client document:\n%s", proto, got)
		}
		status := "HTTP/1.1 200 OK\r\n"
		if proto == "--http2" {
			status = "HTTP/2 200 \r\n"
		}
		if !strings.HasPrefix(got, status) {
			t.Errorf("curl %s: got\n%s\nwant status line %q", proto, got, status)
		}
		for _, h := range []string{"access-control-allow-origin: *\r\n", "content-type: application/json\r\n", "cache-control: max-age=3600\r\n"} {
			if !strings.Contains(strings.ToLower(got), h) {
				t.Errorf("curl %s: no %q in\n%s", proto, h, got)
			}
		}
	}
}

// TestImports holds the package's arrows: config and nothing else of
// signpost's, and no certmagic.
func TestImports(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command(gobin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		switch {
		case strings.HasPrefix(dep, "github.com/caddyserver/"):
			t.Errorf("imports %s: ACME arrives as a tls.Config and a handler wrapper", dep)
		case strings.HasPrefix(dep, "github.com/signpost-dev/signpost/") &&
			dep != "github.com/signpost-dev/signpost/config" && dep != "github.com/signpost-dev/signpost/httpserver":
			t.Errorf("imports %s: servers depend on config only, never on each other", dep)
		}
	}
}

// TestShutdownTLS: Shutdown closes fast-path keep-alive connections,
// connections still in the handshake and HTTP/2 connections, and ServeTLS
// returns nil.
func TestShutdownTLS(t *testing.T) {
	pki := newPKI(t, testNames...)
	s := New(Options{TLSConfig: pki.serverTLS(), Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	s.SetModel(mustParse(t, twoTenants))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.ServeTLS(l) }()
	ts := &testServer{Server: s, tlsAddr: l.Addr().String(), pki: pki}

	fast, err := tls.Dial("tcp", ts.tlsAddr, &tls.Config{ServerName: "chat.example.com", RootCAs: pki.pool, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	io.WriteString(fast, "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\n\r\n")
	br := bufio.NewReader(fast)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)

	h2 := ts.client(t, ts.tlsAddr, true)
	check(t, h2, exchange{url: chatURL + "/.well-known/matrix/server", status: 200, want: docHeaders(chatServer, 86400), body: chatServer})

	raw, err := net.Dial("tcp", ts.tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-errc; err != nil {
		t.Errorf("ServeTLS after Shutdown: %v, want nil", err)
	}
	fast.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := br.ReadByte(); err == nil {
		t.Errorf("keep-alive connection still open after Shutdown")
	}
	waitClosed(t, raw)
	if n := s.tlsConns.count(); n != 0 {
		t.Errorf("%d connections open after Shutdown", n)
	}
	// Serving after Shutdown returns at once.
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ServeTLS(l2); err != nil {
		t.Errorf("ServeTLS after Shutdown: %v, want nil", err)
	}
}

// TestPlainHTTPOnTLSPort: a client that speaks plain HTTP to the HTTPS port
// is told so, as net/http does.
func TestPlainHTTPOnTLSPort(t *testing.T) {
	ts := startServer(t, Options{}, mustParse(t, twoTenants))
	conn, err := net.Dial("tcp", ts.tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	got, _ := io.ReadAll(conn)
	if want := "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"; string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestExtraCertificateNames: a name in [acme] names has no documents, but
// "/" and the redirect to https work on it.
func TestExtraCertificateNames(t *testing.T) {
	ts := startServer(t, Options{}, mustParse(t, `
[http]
listen        = "[::]:443"
root_redirect = "https://www.example.com/"

[acme]
names = ["unknown.example.net"]

[[delegation]]
server_name = "chat.example.com"
server      = "hs.chat.example.com:443"
client      = "https://hs.chat.example.com"
`))
	c := ts.client(t, ts.tlsAddr, false)
	check(t, c, exchange{url: "https://unknown.example.net/", status: 302,
		want: hdr("Location", "https://www.example.com/", "Content-Length", "0")})
	check(t, c, exchange{url: "https://unknown.example.net/.well-known/matrix/server", status: 404,
		want: merge(cors, jsonHeaders(notFoundBody)), body: notFoundBody})
	pc := ts.client(t, ts.plainAddr, false)
	check(t, pc, exchange{url: "http://unknown.example.net/x", status: 301,
		want: hdr("Location", "https://unknown.example.net/x", "Content-Length", "0")})
}

// TestBodyAnswerEOF: after the 405 for a request with a body, the server
// shuts its side at once, on the plain listener too, so the client sees EOF
// well before bodyLinger (which only keeps the socket open to drain what
// the client still sends), and a client that closes on EOF frees its place
// in the budget at once rather than after the linger.
func TestBodyAnswerEOF(t *testing.T) {
	ts := startServer(t, Options{}, mustParse(t, twoTenants))
	for _, plain := range []bool{true, false} {
		var c net.Conn
		var err error
		if plain {
			c, err = net.Dial("tcp", ts.plainAddr)
		} else {
			c, err = tls.Dial("tcp", ts.tlsAddr, &tls.Config{ServerName: "chat.example.com", RootCAs: ts.pki.pool, NextProtos: []string{"http/1.1"}})
		}
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nContent-Length: 200000\r\n\r\n{")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("plain %v: %v", plain, err)
		}
		io.ReadAll(resp.Body)
		start := time.Now()
		_, err = br.ReadByte()
		if took := time.Since(start); err != io.EOF || took >= bodyLinger/2 {
			t.Errorf("plain %v: after the 405 got %v in %v, want EOF in under %v", plain, err, took, bodyLinger/2)
		}
	}
}
