package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dev/signpost/internal/pgtest"
)

// TestSerialSurvivesRestart: an UPDATE bumps a zone's serial past the
// clock; after a restart within the same second the serial must still be
// higher, or secondaries would ignore the zone until the clock caught up.
// The serials are kept in the storage directory, or in the database when
// acme.storage is one.
func TestSerialSurvivesRestart(t *testing.T) {
	t.Run("directory", func(t *testing.T) { testSerialSurvivesRestart(t, t.TempDir()) })
	t.Run("postgres", func(t *testing.T) { testSerialSurvivesRestart(t, pgtest.Start(t).NewDatabase("serials")) })
}

func testSerialSurvivesRestart(t *testing.T, state string) {
	text := `
[dns]
listen = ["127.0.0.1:0"]
nameservers = ["ns1.chat.example.test"]
[http]
listen = "127.0.0.1:0"
plain_listen = "127.0.0.1:0"
[acme]
mode = "self-signed"
storage = "` + state + `"
[[zone]]
origin = "chat.example.test"
addresses = ["127.0.0.1"]
[[key]]
name = "hs-key"
secret = "MDEyMzQ1Njc4OWFiY2RlZg=="
[[secondary]]
address = "127.0.0.1:9"
key = "hs-key"
[[update]]
key = "hs-key"
names = ["chat.example.test"]
`
	frozen := time.Now()
	clock := func() time.Time { return frozen } // both runs in "the same second"
	serve := func() (stop func(), soa func() uint32, dnsAddr string) {
		config := filepath.Join(t.TempDir(), "signpost.toml")
		os.WriteFile(config, []byte(text), 0o644)
		ctx, cancel := context.WithCancel(context.Background())
		ready, done := make(chan bound, 1), make(chan int, 1)
		e := env{stdout: io.Discard, stderr: t.Output(), getenv: func(string) string { return "" }, now: clock,
			hup: make(chan os.Signal), ready: func(b bound) { ready <- b }}
		go func() { done <- e.run(ctx, []string{"serve", "-config", config}) }()
		var b bound
		select {
		case b = <-ready:
		case code := <-done:
			t.Fatalf("serve exited %d", code)
		}
		soa = func() uint32 {
			r, err := dns.Exchange(new(dns.Msg).SetQuestion("chat.example.test.", dns.TypeSOA), b.DNS[0])
			if err != nil || len(r.Answer) != 1 {
				t.Fatalf("SOA query: %v %v", err, r)
			}
			return r.Answer[0].(*dns.SOA).Serial
		}
		return func() { cancel(); <-done }, soa, b.DNS[0]
	}

	stop, soa, addr := serve()
	first := soa()
	up := new(dns.Msg).SetUpdate("chat.example.test.")
	txt, _ := dns.NewRR(`_acme-challenge.chat.example.test. 60 IN TXT "token"`)
	up.Insert([]dns.RR{txt})
	up.SetTsig("hs-key.", dns.HmacSHA256, 300, time.Now().Unix())
	c := &dns.Client{TsigSecret: map[string]string{"hs-key.": "MDEyMzQ1Njc4OWFiY2RlZg=="}}
	r, _, err := c.Exchange(up, addr)
	if err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("UPDATE: %v %v", err, r)
	}
	bumped := soa()
	if bumped != first+1 {
		t.Fatalf("serial after UPDATE %d, want %d", bumped, first+1)
	}
	stop()
	saved, err := readSerials(state)
	if err != nil || len(saved) != 1 || saved["chat.example.test."] != bumped {
		t.Fatalf("saved serials %v, %v; want chat.example.test. at %d", saved, err, bumped)
	}

	stop, soa, _ = serve()
	defer stop()
	if again := soa(); int32(again-bumped) <= 0 {
		t.Errorf("serial after restart %d, want above %d (the last one served)", again, bumped)
	}
}
