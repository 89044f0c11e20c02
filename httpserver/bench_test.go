package httpserver

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// discardWriter is the cheapest ResponseWriter, so that the handler
// benchmarks measure the handler and nothing else.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }

// BenchmarkHandler measures the handler alone, as net/http calls it on the
// TLS listener with the access log off. net/http's own cost per request
// (reading the request, a fresh header map, writing) comes on top; see
// BenchmarkHTTPS for the whole.
func BenchmarkHandler(b *testing.B) {
	s := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	s.SetModel(mustParse(b, twoTenants))
	h := s.https.Handler
	for _, bc := range []struct {
		name, method, sni, host, path, inm string
		status                             int
	}{
		{"200", "GET", "chat.example.com", "chat.example.com", "/.well-known/matrix/client", "", 200},
		{"200 mixed case host", "GET", "chat.example.com", "Chat.Example.Com:443", "/.well-known/matrix/server", "", 200},
		{"HEAD", "HEAD", "chat.example.com", "chat.example.com", "/.well-known/matrix/server", "", 200},
		{"304", "GET", "chat.example.com", "chat.example.com", "/.well-known/matrix/client", etagOf(chatClient), 304},
		{"404 support", "GET", "other.example.org", "other.example.org", "/.well-known/matrix/support", "", 404},
		{"404 path", "GET", "chat.example.com", "chat.example.com", "/favicon.ico", "", 404},
		{"421", "GET", "chat.example.com", "other.example.org", "/.well-known/matrix/server", "", 421},
		{"OPTIONS", "OPTIONS", "chat.example.com", "chat.example.com", "/.well-known/matrix/client", "", 204},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := &http.Request{Method: bc.method, Host: bc.host, URL: &url.URL{Path: bc.path},
				Header: http.Header{}, TLS: &tls.ConnectionState{ServerName: bc.sni}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
			if bc.inm != "" {
				r.Header.Set("If-None-Match", bc.inm)
			}
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				h.ServeHTTP(w, r)
			}
			if w.status != bc.status {
				b.Fatalf("status %d, want %d", w.status, bc.status)
			}
		})
	}
}

// BenchmarkFastPath measures what the TLS fast path does per HTTP/1.1
// request between reading the head and writing the answer: parse, look up,
// assemble the bytes.
func BenchmarkFastPath(b *testing.B) {
	s := New(Options{Logger: slog.New(slog.DiscardHandler)})
	s.SetModel(mustParse(b, twoTenants))
	for _, bc := range []struct{ name, head string }{
		{"GET", "GET /.well-known/matrix/client HTTP/1.1\r\nHost: chat.example.com\r\nUser-Agent: Synapse/1.120\r\nAccept: */*\r\n\r\n"},
		{"304", "GET /.well-known/matrix/client HTTP/1.1\r\nHost: chat.example.com\r\nIf-None-Match: " + etagOf(chatClient) + "\r\n\r\n"},
		{"404", "GET /.well-known/matrix/support HTTP/1.1\r\nHost: other.example.org\r\n\r\n"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			buf := []byte(bc.head)
			out := make([]byte, 0, 1024)
			b.ReportAllocs()
			for b.Loop() {
				var q fastRequest
				var ok bool
				out, _, ok = s.fastAnswer(out[:0], &q, string(buf), "chat.example.com", time.Now())
				if !ok {
					b.Fatal("not a fast-path request")
				}
			}
		})
	}
}

// BenchmarkHandlerAccessLog is BenchmarkHandler's 200 with the access log
// on, to show what debug logging costs.
func BenchmarkHandlerAccessLog(b *testing.B) {
	s := New(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	s.SetModel(mustParse(b, twoTenants))
	r := &http.Request{Method: "GET", Host: "chat.example.com", URL: &url.URL{Path: "/.well-known/matrix/client"},
		Header: http.Header{}, TLS: &tls.ConnectionState{ServerName: "chat.example.com"}, Proto: "HTTP/1.1"}
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		s.https.Handler.ServeHTTP(w, r)
	}
}

// BenchmarkSetModel is the cost of a reload on the HTTP side.
func BenchmarkSetModel(b *testing.B) {
	s := New(Options{})
	m := mustParse(b, twoTenants)
	b.ReportAllocs()
	for b.Loop() {
		s.SetModel(m)
	}
}

// BenchmarkHTTPS is a whole request over a kept-alive TLS connection on
// loopback, client included, with as many parallel clients as GOMAXPROCS.
func BenchmarkHTTPS(b *testing.B) {
	for _, h2 := range []bool{false, true} {
		name := "HTTP/1.1"
		if h2 {
			name = "HTTP/2"
		}
		b.Run(name, func(b *testing.B) {
			ts := startServer(b, Options{Logger: slog.New(slog.DiscardHandler)}, mustParse(b, twoTenants))
			c := ts.client(b, ts.tlsAddr, h2)
			req, _ := http.NewRequest("GET", chatURL+"/.well-known/matrix/client", nil)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 512)
				for pb.Next() {
					resp, err := c.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					n, _ := io.ReadFull(resp.Body, buf[:len(chatClient)])
					resp.Body.Close()
					if resp.StatusCode != 200 || n != len(chatClient) {
						b.Errorf("got %d, %d bytes", resp.StatusCode, n)
						return
					}
				}
			})
		})
	}
}
