package httpserver

import (
	"strings"
	"testing"
)

// fastCases are raw HTTP/1.1 exchanges over TLS. The fast path must answer
// each exactly as net/http does: either itself, byte for byte, or by
// handing the connection over.
var fastCases = []struct {
	fast           bool // the fast path answers (the first request)
	name, sni, req string
}{
	{true, "GET server", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},
	{true, "GET client", "chat.example.com", "GET /.well-known/matrix/client HTTP/1.1\r\nHost: chat.example.com\r\nUser-Agent: x\r\nAccept: */*\r\n\r\n"},
	{true, "GET support", "chat.example.com", "GET /.well-known/matrix/support HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},
	{true, "GET other", "other.example.org", "GET /.well-known/matrix/client HTTP/1.1\r\nhost: other.example.org\r\n\r\n"},
	{true, "support 404", "other.example.org", "GET /.well-known/matrix/support HTTP/1.1\r\nHost: other.example.org\r\n\r\n"},
	{true, "HEAD", "chat.example.com", "HEAD /.well-known/matrix/client HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},
	{true, "OPTIONS", "chat.example.com", "OPTIONS /.well-known/matrix/client HTTP/1.1\r\nHost: chat.example.com\r\nOrigin: https://app.element.io\r\nAccess-Control-Request-Method: GET\r\n\r\n"},
	{true, "If-None-Match", "chat.example.com", "GET /.well-known/matrix/client HTTP/1.1\r\nHost: chat.example.com\r\nIf-None-Match: " + etagOf(chatClient) + "\r\n\r\n"},
	{true, "If-None-Match twice", "chat.example.com", "GET /.well-known/matrix/client HTTP/1.1\r\nHost: chat.example.com\r\nIf-None-Match: \"a\"\r\nif-none-match: W/" + etagOf(chatClient) + "\r\n\r\n"},
	{false, "If-None-Match many", "chat.example.com", "GET /.well-known/matrix/client HTTP/1.1\r\nHost: chat.example.com\r\n" + strings.Repeat("If-None-Match: \"a\"\r\n", 5) + "If-None-Match: *\r\n\r\n"},
	{true, "If-None-Match other", "chat.example.com", "GET /.well-known/matrix/client HTTP/1.1\r\nHost: chat.example.com\r\nIf-None-Match: \"x\"\r\n\r\n"},
	{true, "host case dot port", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: CHAT.example.com.:443\r\n\r\n"},
	{true, "host spaces", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost:   chat.example.com \t\r\n\r\n"},
	{true, "misdirected", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: other.example.org\r\n\r\n"},
	{true, "unknown host", "unknown.example.net", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: unknown.example.net\r\n\r\n"},
	{true, "query", "chat.example.com", "GET /.well-known/matrix/server?a=b HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},
	{true, "root", "chat.example.com", "GET / HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},
	{true, "root HEAD", "chat.example.com", "HEAD / HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},
	{true, "root OPTIONS", "chat.example.com", "OPTIONS / HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},
	{true, "other path", "chat.example.com", "GET /favicon.ico HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},
	{true, "Content-Length 0", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nContent-Length: 0\r\n\r\n"},
	{true, "Connection keep-alive", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nConnection: keep-alive\r\n\r\n"},
	{true, "Connection close", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nConnection: keep-alive, Close\r\n\r\n"},
	{true, "pipelined", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\n\r\nHEAD /.well-known/matrix/client HTTP/1.1\r\nHost: chat.example.com\r\n\r\nGET /x HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},

	// Handed to net/http.
	{false, "POST with body", "chat.example.com", "POST /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nContent-Length: 5\r\n\r\nhello"},
	{false, "POST without body", "chat.example.com", "POST /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},
	{false, "GET with body", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nContent-Length: 3\r\n\r\nabc"},
	{false, "chunked", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
	{false, "Expect", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n"},
	{false, "Upgrade", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
	{false, "HTTP/1.0", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.0\r\nHost: chat.example.com\r\n\r\n"},
	{false, "HTTP/1.0 no Host", "other.example.org", "GET /.well-known/matrix/server HTTP/1.0\r\n\r\n"},
	{false, "no Host", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\n\r\n"},
	{false, "two Hosts", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nHost: other.example.org\r\n\r\n"},
	{false, "empty Host", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost:\r\n\r\n"},
	{false, "odd Host", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com!\r\n\r\n"},
	{false, "LF only", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\nHost: chat.example.com\n\n"},
	{false, "mixed line ends", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\n\r\n"},
	{false, "obs-fold", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nX-A: a\r\n b\r\n\r\n"},
	{false, "bad header name", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nX A: b\r\n\r\n"},
	{false, "header without colon", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nXA\r\n\r\n"},
	{false, "control in value", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nX-A: a\x01b\r\n\r\n"},
	{false, "percent path", "chat.example.com", "GET /.well-known/matrix/%73erver HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},
	{false, "absolute form", "chat.example.com", "GET https://chat.example.com/.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},
	{false, "OPTIONS star", "chat.example.com", "OPTIONS * HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},
	{false, "unknown method", "chat.example.com", "BREW /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},
	{false, "lower-case method", "chat.example.com", "get /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},
	{false, "double space", "chat.example.com", "GET  /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},
	{false, "HTTP/2 preface", "chat.example.com", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
	{false, "leading empty line", "chat.example.com", "\r\nGET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},
	{false, "no version", "chat.example.com", "GET /.well-known/matrix/server\r\nHost: chat.example.com\r\n\r\n"},
	{false, "long header", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nCookie: " + strings.Repeat("c", 6000) + "\r\n\r\n"},
	{false, "huge header", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nCookie: " + strings.Repeat("c", 40000) + "\r\n\r\n"},
	{true, "fast then body", "chat.example.com", "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\n\r\nPOST /.well-known/matrix/client HTTP/1.1\r\nHost: chat.example.com\r\nContent-Length: 2\r\n\r\nhiGET /.well-known/matrix/client HTTP/1.1\r\nHost: chat.example.com\r\n\r\n"},
}

// TestFastPathMatchesNetHTTP sends every case to a server with the fast
// path and to one without it, and compares the bytes that come back.
func TestFastPathMatchesNetHTTP(t *testing.T) {
	m := mustParse(t, twoTenants)
	fast := startServer(t, Options{}, m)
	slow := startServer(t, Options{noFast: true}, m)
	// A last request that closes the connection, so that reading to EOF
	// collects every answer.
	const last = "GET /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nConnection: close\r\n\r\n"
	for _, tc := range fastCases {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]string
			for i, ts := range []*testServer{fast, slow} {
				got[i] = rawExchange(t, ts, tc.sni, tc.req+last)
			}
			if got[0] != got[1] {
				t.Errorf("fast path:\n%q\nnet/http:\n%q", got[0], got[1])
			}
			end, ok := scanHead([]byte(tc.req))
			var q fastRequest
			if fast := ok && end > 0 && end <= fastBufSize && parseHead(tc.req[:end], &q); fast != tc.fast {
				t.Errorf("answered by the fast path: %v, want %v", fast, tc.fast)
			}
			if !strings.HasPrefix(got[0], "HTTP/1.") {
				t.Errorf("no answer: %q", got[0])
			}
		})
	}
}

func TestScanHead(t *testing.T) {
	for _, tc := range []struct {
		in   string
		end  int
		fast bool
	}{
		{"", 0, true},
		{"GET / HTTP/1.1\r\n", 0, true},
		{"GET / HTTP/1.1\r\nHost: a\r\n", 0, true},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r", 0, true},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27, true},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET", 27, true},
		{"GET / HTTP/1.1\nHost: a\r\n\r\n", 0, false},
		{"\r\nGET / HTTP/1.1\r\n", 0, false},
		{"\n", 0, false},
	} {
		end, fast := scanHead([]byte(tc.in))
		if end != tc.end || fast != tc.fast {
			t.Errorf("scanHead(%q) = %d, %v; want %d, %v", tc.in, end, fast, tc.end, tc.fast)
		}
	}
}

// FuzzParseHead: no head makes the fast path panic, and whatever it
// accepts is a request it can answer.
func FuzzParseHead(f *testing.F) {
	for _, tc := range fastCases {
		f.Add(tc.req)
	}
	ix := newIndex(mustParse(f, twoTenants), nil)
	f.Fuzz(func(t *testing.T, s string) {
		end, ok := scanHead([]byte(s))
		if !ok || end == 0 {
			return
		}
		var q fastRequest
		if parseHead(s[:end], &q) {
			if q.path == "" || q.path[0] != '/' || q.host == "" {
				t.Errorf("accepted %q with path %q host %q", s, q.path, q.host)
			}
			for _, sni := range []string{"", "chat.example.com"} {
				resp, _ := ix.answer(&request{method: q.method, host: q.host, sni: sni, tls: true, path: q.path, inm: q.inm[:q.ninm]})
				if resp.response == nil || len(resp.appendH1(nil)) == 0 {
					t.Errorf("no answer for %q", s)
				}
			}
		}
	})
}

// TestHeaderValueNewlines: a value with a newline (root_redirect is the
// only one from outside) is written as net/http writes it, not as two
// header fields.
func TestHeaderValueNewlines(t *testing.T) {
	r := newResponse(302, "", false, newField("Location", "https://example.com/\r\nSet-Cookie: x=1 "))
	want := "HTTP/1.1 302 Found\r\nLocation: https://example.com/  Set-Cookie: x=1\r\n"
	if got := string(r.appendH1(nil)); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestIsIP(t *testing.T) {
	for s, want := range map[string]bool{
		"127.0.0.1": true, "::1": true, "2001:db8::1": true, "10.0.0": true,
		"chat.example.com": false, "1.example": false, "example.123": false, "": false, "a": false,
	} {
		if got := isIP(s); got != want {
			t.Errorf("isIP(%q) = %v, want %v", s, got, want)
		}
	}
}
