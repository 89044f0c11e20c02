package httpserver

import (
	"bytes"
	"runtime"
	"strings"
	"testing"

	"github.com/signpost-dev/signpost/internal/manyzones"
)

// TestReloadReusesDocuments: a model that changed one document of one of
// many names gets an index that shares every other site, the other two
// documents of that name, and the answers of every document, with the
// index before it.
func TestReloadReusesDocuments(t *testing.T) {
	var b bytes.Buffer
	if err := manyzones.Write(&b, 20, manyzones.Options{}); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	before := newIndex(mustParse(t, text), nil)
	changed := strings.Replace(text, `page = "https://provider.example/support/3"`, `page = "https://provider.example/help/3"`, 1)
	after := newIndex(mustParse(t, changed), before)
	name := manyzones.Origin(3)
	for n, st := range after.sites {
		if same := before.sites[n] == st; same != (n != name) {
			t.Errorf("site %s: reused %v, want %v", n, same, n != name)
		}
	}
	st, old := after.sites[name], before.sites[name]
	if st.docs[docServer] != old.docs[docServer] || st.docs[docClient] != old.docs[docClient] {
		t.Error("unchanged server or client document of the changed name was rebuilt")
	}
	if st.docs[docSupport].answers != old.docs[docClient].answers || after.serverAnswers != before.serverAnswers {
		t.Error("answers of unchanged max-ages were rebuilt")
	}
	if got, want := string(st.docs[docSupport].body), `{"contacts":[{"email_address":"admin@`+name+`","matrix_id":"@admin:`+name+`","role":"m.role.admin"}],"support_page":"https://provider.example/help/3"}`; got != want {
		t.Errorf("support document %s, want %s", got, want)
	}
}

// BenchmarkModelMemory reports the live heap SetModel adds for a provider's
// 10,000 names, per name: the index with its precomputed answers, the model
// itself excluded. A name's request counters come with its first request.
// Issue 14's bar is the whole process's RSS, and this is httpserver's share
// of it.
func BenchmarkModelMemory(b *testing.B) {
	const n = 10000
	var text bytes.Buffer
	if err := manyzones.Write(&text, n, manyzones.Options{}); err != nil {
		b.Fatal(err)
	}
	m := mustParse(b, text.String())
	var perName float64
	for b.Loop() {
		perName = liveBytes(func() any {
			s := New(Options{})
			s.SetModel(m)
			return s
		}) / n
	}
	b.ReportMetric(perName, "B/name")
}

// liveBytes returns how much the heap holds after build than before it,
// with what build returned still reachable.
func liveBytes(build func() any) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	v := build()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(v)
	return float64(after.HeapAlloc) - float64(before.HeapAlloc)
}

// TestManyNamesWire: every document of many names, whose answers share
// everything but body, ETag and Content-Length, goes out with its own
// values, byte for byte, from the fast path, from net/http on HTTP/1.1 and,
// field for field, on HTTP/2.
func TestManyNamesWire(t *testing.T) {
	const n = 12 // support pages 0 to 11: bodies of two lengths
	var text bytes.Buffer
	if err := manyzones.Write(&text, n, manyzones.Options{}); err != nil {
		t.Fatal(err)
	}
	m := mustParse(t, text.String())
	var names []string
	for _, d := range m.Delegations {
		names = append(names, d.ServerName)
	}
	pki := newPKI(t, names...)
	fast := startServer(t, Options{TLSConfig: pki.serverTLS()}, m)
	slow := startServer(t, Options{TLSConfig: pki.serverTLS(), noFast: true}, m)
	fast.pki, slow.pki = pki, pki
	for _, d := range m.Delegations {
		name := d.ServerName
		get := func(method, doc, inm string) string {
			req := method + " /.well-known/matrix/" + doc + " HTTP/1.1\r\nHost: " + name + "\r\n"
			if inm != "" {
				req += "If-None-Match: " + inm + "\r\n"
			}
			return req + "\r\n"
		}
		server, client, support := string(d.ServerDoc), string(d.ClientDoc), string(d.SupportDoc)
		req := get("GET", "server", "") + get("GET", "client", "") + get("GET", "support", "") +
			get("HEAD", "support", "") + get("GET", "server", etagOf(server)) +
			get("HEAD", "client", etagOf(client)) +
			"GET /.well-known/matrix/client HTTP/1.1\r\nHost: " + name + "\r\nConnection: close\r\n\r\n"
		want := docWire(server, 86400, false) + "\r\n" + server +
			docWire(client, 3600, false) + "\r\n" + client +
			docWire(support, 3600, false) + "\r\n" + support +
			docWire(support, 3600, false) + "\r\n" +
			docWire(server, 86400, true) + "\r\n" +
			docWire(client, 3600, true) + "\r\n" +
			docWire(client, 3600, false) + "Connection: close\r\n\r\n" + client
		for _, ts := range []*testServer{fast, slow} {
			if got := rawExchange(t, ts, name, req); got != want {
				t.Errorf("%s (fast path %v):\ngot  %q\nwant %q", name, ts == fast, got, want)
			}
		}
		c := fast.client(t, fast.tlsAddr, true)
		u := "https://" + name + "/.well-known/matrix/"
		check(t, c, exchange{url: u + "server", status: 200, want: docHeaders(server, 86400), body: server})
		check(t, c, exchange{url: u + "client", status: 200, want: docHeaders(client, 3600), body: client})
		check(t, c, exchange{url: u + "support", status: 200, want: docHeaders(support, 3600), body: support})
		check(t, c, exchange{url: u + "support", header: hdr("If-None-Match", etagOf(support)),
			status: 304, want: notModifiedHeaders(support, 3600)})
	}
}
