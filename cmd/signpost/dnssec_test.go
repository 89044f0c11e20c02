package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dev/signpost/config"
	"github.com/signpost-dev/signpost/internal/pgtest"
)

func dnssecTOML(state string) string {
	return `
[dns]
listen = ["127.0.0.1:0"]
nameservers = ["ns1.chat.example.test"]
dnssec = true
[http]
listen = "127.0.0.1:0"
plain_listen = "127.0.0.1:0"
[acme]
mode = "self-signed"
storage = "` + state + `"
[[zone]]
origin = "chat.example.test"
addresses = ["127.0.0.1"]
[[zone]]
origin = "plain.test"
addresses = ["127.0.0.1"]
dnssec = false
`
}

// TestDNSSECKeys: serve makes a key per signed zone and keeps it in the
// state directory (mode 0600) or the database; zone and validate print the
// DS of the key served; dnssec roll adds a key that signs next to the old
// one and that CDS names, and -finish takes the old one away, each seen
// after a reload; a restart signs with the stored key.
func TestDNSSECKeys(t *testing.T) {
	t.Run("directory", func(t *testing.T) { testDNSSECKeys(t, t.TempDir()) })
	t.Run("postgres", func(t *testing.T) { testDNSSECKeys(t, pgtest.Start(t).NewDatabase("dnssec")) })
}

func testDNSSECKeys(t *testing.T, state string) {
	text := dnssecTOML(state)
	command := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		e := env{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }, now: time.Now}
		return e.run(context.Background(), args), stdout.String(), stderr.String()
	}

	config := filepath.Join(t.TempDir(), "signpost.toml")
	if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := command("zone", "-config", config); code != 0 || !strings.Contains(out, "; DNSSEC chat.example.test.: no key yet; signpost serve makes one") {
		t.Fatalf("zone before serve: exit %d\n%s%s", code, out, errs)
	}

	hup := make(chan os.Signal, 1)
	in := startServe(t, text, hup)
	dnskeys := func() []*dns.DNSKEY {
		t.Helper()
		r := in.query("udp", "chat.example.test.", dns.TypeDNSKEY)
		var out []*dns.DNSKEY
		for _, rr := range r.Answer {
			out = append(out, rr.(*dns.DNSKEY))
		}
		return out
	}
	cds := func() []string {
		t.Helper()
		var out []string
		for _, rr := range in.query("udp", "chat.example.test.", dns.TypeCDS).Answer {
			out = append(out, strings.ToUpper(rr.(*dns.CDS).Digest))
		}
		return out
	}
	first := dnskeys()
	if len(first) != 1 || first[0].Algorithm != dns.ECDSAP256SHA256 || first[0].Flags != 257 {
		t.Fatalf("DNSKEY RRset %v, want one key of algorithm 13, flags 257", first)
	}
	if r := in.query("udp", "plain.test.", dns.TypeDNSKEY); len(r.Answer) != 0 {
		t.Errorf("plain.test (dnssec = false) serves DNSKEY %v", r.Answer)
	}
	if !strings.HasPrefix(state, "postgres") {
		fi, err := os.Stat(filepath.Join(state, "dnssec", "chat.example.test.json"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file: %v, mode %v; want mode 0600", err, fi.Mode())
		}
	}
	ds := first[0].ToDS(dns.SHA256)
	ds.Digest = strings.ToUpper(ds.Digest) // as printed
	if got := cds(); len(got) != 1 || got[0] != ds.Digest {
		t.Errorf("CDS digests %v, want [%s]", got, ds.Digest)
	}
	for _, cmd := range []string{"zone", "validate"} {
		code, out, errs := command(cmd, "-config", config)
		if code != 0 || !strings.Contains(out, ds.Digest) || strings.Contains(out, "no key yet") {
			t.Errorf("%s: exit %d, want the DS %s in\n%s%s", cmd, code, ds, out, errs)
		}
	}

	// Start a roll: two keys sign, CDS names the new one.
	code, out, errs := command("dnssec", "roll", "-zone", "chat.example.test", "-config", config)
	if code != 0 {
		t.Fatalf("dnssec roll: exit %d\n%s%s", code, out, errs)
	}
	if code, _, _ := command("dnssec", "roll", "-zone", "chat.example.test", "-config", config); code != exitFail {
		t.Errorf("a second roll while one is under way: exit %d, want %d", code, exitFail)
	}
	if err := in.reload(func() { hup <- os.Interrupt }); err != nil {
		t.Fatal(err)
	}
	both := dnskeys()
	if len(both) != 2 {
		t.Fatalf("during the roll DNSKEY is %v, want two keys", both)
	}
	var next *dns.DNSKEY
	for _, k := range both {
		if k.PublicKey != first[0].PublicKey {
			next = k
		}
	}
	if next == nil {
		t.Fatalf("the old key is missing from %v", both)
	}
	newDS := next.ToDS(dns.SHA256)
	newDS.Digest = strings.ToUpper(newDS.Digest)
	if got := cds(); len(got) != 1 || got[0] != newDS.Digest {
		t.Errorf("during the roll CDS digests %v, want the new key's [%s]", got, newDS.Digest)
	}
	if !strings.Contains(out, newDS.Digest) {
		t.Errorf("dnssec roll printed\n%s\nwithout the new DS %s", out, newDS)
	}
	q := new(dns.Msg).SetQuestion("chat.example.test.", dns.TypeSOA)
	q.SetEdns0(1232, true)
	r, _, err := (&dns.Client{}).Exchange(q, in.addrs.DNS[0])
	if err != nil {
		t.Fatal(err)
	}
	sigs := 0
	for _, rr := range r.Answer {
		if sig, ok := rr.(*dns.RRSIG); ok {
			sigs++
			key := first[0]
			if sig.KeyTag == next.KeyTag() {
				key = next
			}
			if err := sig.Verify(key, r.Answer[:1]); err != nil {
				t.Errorf("SOA signature by key %d: %v", sig.KeyTag, err)
			}
		}
	}
	if sigs != 2 {
		t.Errorf("during the roll the SOA has %d signatures, want 2:\n%v", sigs, r)
	}

	// Finish: only the new key is left.
	if code, out, errs := command("dnssec", "roll", "-zone", "chat.example.test", "-finish", "-config", config); code != 0 {
		t.Fatalf("dnssec roll -finish: exit %d\n%s%s", code, out, errs)
	}
	if err := in.reload(func() { hup <- os.Interrupt }); err != nil {
		t.Fatal(err)
	}
	if after := dnskeys(); len(after) != 1 || after[0].PublicKey != next.PublicKey {
		t.Errorf("after the roll DNSKEY is %v, want the new key alone", after)
	}
	if code, _, _ := command("dnssec", "roll", "-zone", "chat.example.test", "-finish", "-config", config); code != exitFail {
		t.Errorf("finishing with no roll under way: exit %d, want %d", code, exitFail)
	}

	// Another start signs with the stored key, not a new one.
	again := startServe(t, text, nil)
	r = again.query("udp", "chat.example.test.", dns.TypeDNSKEY)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.DNSKEY).PublicKey != next.PublicKey {
		t.Errorf("after a restart DNSKEY is %v, want the stored key", r.Answer)
	}
}

// TestDNSSECKeyShared: instances that share a database and start at once
// make one key between them, not one each.
func TestDNSSECKeyShared(t *testing.T) {
	db := pgtest.Start(t).NewDatabase("dnsseckeys")
	m, err := config.Parse("signpost.toml", []byte(dnssecTOML(db)), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 4
	keys := make(chan string, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			k, err := loadKeys(m, time.Now())
			if err != nil {
				errs <- err
				return
			}
			keys <- k["chat.example.test."][0].DNSKEY.PublicKey
		}()
	}
	var first string
	for i := range n {
		select {
		case err := <-errs:
			t.Fatal(err)
		case k := <-keys:
			if i == 0 {
				first = k
			} else if k != first {
				t.Errorf("instance %d signs with another key than instance 0", i)
			}
		}
	}
}
