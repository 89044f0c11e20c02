package main

import (
	"strings"
	"syscall"
	"testing"
)

// TestServeDNSOff: with dns.listen = [] serve opens no DNS socket, answers
// the documents over HTTPS, and reloads.
func TestServeDNSOff(t *testing.T) {
	text := strings.Replace(loopback(readExample(t, "local.toml")), `listen      = ["127.0.0.1:0"]`, `listen      = []`, 1)
	if !strings.Contains(text, "listen      = []") {
		t.Fatal("local.toml no longer has the dns.listen line this test rewrites")
	}
	in := startServe(t, text, nil)
	if in.addrs.DNS != nil {
		t.Errorf("DNS listening on %q, want no DNS listener", in.addrs.DNS)
	}
	const want = `{"m.server":"hs.chat.example.test:8448"}`
	if resp, body := in.get("chat.example.test", "/.well-known/matrix/server"); resp.StatusCode != 200 || body != want {
		t.Errorf("GET server: %d %q, want 200 %q", resp.StatusCode, body, want)
	}
	in.write(strings.Replace(text, "hs.chat.example.test:8448", "hs.chat.example.test:443", 1))
	if err := in.reload(func() { in.hup <- syscall.SIGHUP }); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if _, body := in.get("chat.example.test", "/.well-known/matrix/server"); body != `{"m.server":"hs.chat.example.test:443"}` {
		t.Errorf("after reload GET server: %q", body)
	}
	if log := in.stderr.String(); !strings.Contains(log, `msg=serving`) || !strings.Contains(log, ` dns=off `) {
		t.Errorf("the start-up line does not say DNS is off:\n%s", log)
	}
}
