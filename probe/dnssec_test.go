package probe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dev/signpost/internal/testenv"
)

const signedChild = `example.test. 3600 IN SOA ns1.example.test. hostmaster.example.test. 1 7200 3600 1209600 300
example.test. 3600 IN NS ns1.example.test.
ns1.example.test. 3600 IN A 127.0.0.1
chat.example.test. 300 IN A 127.0.0.1
_matrix-fed._tcp.chat.example.test. 300 IN SRV 10 0 8448 hs.example.test.
hs.example.test. 300 IN A 127.0.0.1
`

// signedWorld signs example.test with BIND's tools (childFlags for
// dnssec-signzone) and a root that delegates it with ds (nil: the child's
// own DS), serves both from one NSD, and returns a validating Unbound in
// front of it, and NSD's address.
func signedWorld(t *testing.T, childFlags []string, ds func(own string) string) (resolver, nsd string) {
	t.Helper()
	progs := testenv.Programs(t, []string{"nsd", "unbound"}, []string{"nsd", "unbound"})
	dir := t.TempDir()
	key := testenv.SignZone(t, dir, "example.test.", "child.zone", signedChild, childFlags...)
	rr, err := dns.NewRR(key)
	if err != nil {
		t.Fatal(err)
	}
	own := rr.(*dns.DNSKEY).ToDS(dns.SHA256).String()
	if ds != nil {
		own = ds(own)
	}
	root := ". 3600 IN SOA ns.root. hostmaster.root. 1 7200 3600 1209600 300\n. 3600 IN NS ns.root.\nns.root. 3600 IN A 127.0.0.1\n" +
		"example.test. 3600 IN NS ns1.example.test.\nns1.example.test. 3600 IN A 127.0.0.1\n" + own + "\n"
	anchor := testenv.SignZone(t, dir, ".", "root.zone", root)
	port := testenv.FreePort(t)
	conf := testenv.NSDServerConf(dir, port, 1, "  rrl-ratelimit: 0\n") +
		"zone:\n  name: \".\"\n  zonefile: \"root.zone\"\nzone:\n  name: \"example.test\"\n  zonefile: \"child.zone\"\n"
	path := filepath.Join(dir, "nsd.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.RunDaemon(t, progs[0], "-d", "-c", path)
	nsd = fmt.Sprintf("127.0.0.1:%d", port)
	testenv.WaitSOA(t, nsd, "example.test.", 1, 10*time.Second)
	rport := testenv.FreePort(t)
	stub := fmt.Sprintf("127.0.0.1@%d", port)
	testenv.RunUnbound(t, t.TempDir(), rport, anchor, map[string]string{".": stub, "example.test.": stub})
	return fmt.Sprintf("127.0.0.1:%d", rport), nsd
}

// probeDNSSEC probes chat.example.test through resolver, with port 53 of
// 127.0.0.1 mapped to nsd and every other connection refused, and returns
// the report's DNSSEC lines.
func probeDNSSEC(t *testing.T, resolver, nsd string) []string {
	t.Helper()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == "127.0.0.1:53" {
			addr = nsd
		} else if addr != resolver {
			return nil, errors.New("connection refused")
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	r := Run(context.Background(), "chat.example.test", Options{
		Resolver: resolver, Dial: dial, Timeout: 2 * time.Second, AllowLocal: true,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	var b strings.Builder
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.Contains(l, "DNSSEC") {
			lines = append(lines, l)
		}
	}
	return lines
}

func hasPrefixes(t *testing.T, lines []string, want ...string) {
	t.Helper()
	if len(lines) != len(want) {
		t.Errorf("got %d DNSSEC lines, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
		return
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d:\n got %s\nwant %s...", i, lines[i], w)
		}
	}
}

// TestDNSSECChecks probes a zone signed by BIND's dnssec-signzone under a
// signed test root, through a validating Unbound: with the right DS, with
// a DS for no key of the zone, and with signatures about to expire.
func TestDNSSECChecks(t *testing.T) {
	t.Run("valid", func(t *testing.T) {
		resolver, nsd := signedWorld(t, nil, nil)
		hasPrefixes(t, probeDNSSEC(t, resolver, nsd),
			"info  dns        DNSSEC: zone example.test. is signed, DNSKEY key tags ",
			"ok    dns        DNSSEC: the parent's DS matches DNSKEY key tag ",
			"ok    dns        DNSSEC: 5 RRsets verify with the zone's keys, SRV denial included; the first signature expires in 30.0 days")
	})
	t.Run("DS for another key", func(t *testing.T) {
		resolver, nsd := signedWorld(t, nil, func(own string) string {
			f := strings.Fields(own)
			f[len(f)-1] = strings.Repeat("AB", 32) // same key tag, wrong digest
			return strings.Join(f, " ")
		})
		hasPrefixes(t, probeDNSSEC(t, resolver, nsd),
			"fail  dns        DNSSEC: the resolver fails (SERVFAIL) on chat.example.test, but answers with checking disabled: the zone example.test. does not validate",
			"info  dns        DNSSEC: zone example.test. is signed, DNSKEY key tags ",
			"fail  dns        DNSSEC: the parent's DS (key tag ",
			"ok    dns        DNSSEC: 5 RRsets verify")
	})
	t.Run("signatures about to expire", func(t *testing.T) {
		resolver, nsd := signedWorld(t, []string{"-e", "+86400"}, nil)
		hasPrefixes(t, probeDNSSEC(t, resolver, nsd),
			"info  dns        DNSSEC: zone example.test. is signed",
			"ok    dns        DNSSEC: the parent's DS matches",
			"warn  dns        DNSSEC: a signature in example.test. expires ")
	})
}
