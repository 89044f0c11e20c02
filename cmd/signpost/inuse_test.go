package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestListenInUse: an address in use fails start-up with a message that
// names the address, what commonly holds it and how to fix it.
func TestListenInUse(t *testing.T) {
	base := loopback(readExample(t, "local.toml"))
	for _, tc := range []struct {
		name  string
		block func(t *testing.T) (port string) // holds an address as another program would
		edit  func(text, port string) string
		want  string // the err attribute, PORT replaced
	}{
		{
			name:  "dns on a wildcard address, stub resolver on 127.0.0.53",
			block: func(t *testing.T) string { return holdUDP(t, "127.0.0.53:0") },
			edit: func(text, port string) string {
				return strings.Replace(text, `listen      = ["127.0.0.1:0"]`, `listen      = ["0.0.0.0:`+port+`"]`, 1)
			},
			want: `dns: listen udp 0.0.0.0:PORT: bind: address already in use; port PORT is taken on some address of this host, commonly by systemd-resolved's stub listener on 127.0.0.53 and 127.0.0.54 (the Debian and Ubuntu default), which a wildcard address such as 0.0.0.0:PORT collides with, or by another DNS server (bind9, unbound, dnsmasq); listen on this host's public addresses only, e.g. dns.listen = ['203.0.113.10:PORT'], or set DNSStubListener=no in /etc/systemd/resolved.conf and restart systemd-resolved (ss -lntup 'sport = :PORT' shows who)`,
		},
		{
			name:  "dns on one address",
			block: func(t *testing.T) string { return holdUDP(t, "127.0.0.1:0") },
			edit: func(text, port string) string {
				return strings.Replace(text, `listen      = ["127.0.0.1:0"]`, `listen      = ["127.0.0.1:`+port+`"]`, 1)
			},
			want: `dns: listen udp 127.0.0.1:PORT: bind: address already in use; another program holds 127.0.0.1:PORT, commonly another DNS server (bind9, unbound, dnsmasq), or systemd-resolved on 127.0.0.53 and 127.0.0.54; stop it, or list another address in dns.listen (ss -lntup 'sport = :PORT' shows who)`,
		},
		{
			name:  "https",
			block: func(t *testing.T) string { return holdTCP(t) },
			edit: func(text, port string) string {
				return strings.Replace(text, `listen        = "127.0.0.1:0"`, `listen        = "127.0.0.1:`+port+`"`, 1)
			},
			want: `https: listen tcp 127.0.0.1:PORT: bind: address already in use; another program holds 127.0.0.1:PORT, commonly a web server (nginx, Apache, Caddy); stop it, or move http.listen to another address and let the web server proxy /.well-known/matrix/ to signpost's plain HTTP listener (README, scenario S3) (ss -lntup 'sport = :PORT' shows who)`,
		},
		{
			name:  "plain http",
			block: func(t *testing.T) string { return holdTCP(t) },
			edit: func(text, port string) string {
				return strings.Replace(text, `plain_listen  = "127.0.0.1:0"`, `plain_listen  = "127.0.0.1:`+port+`"`, 1)
			},
			want: `http: listen tcp 127.0.0.1:PORT: bind: address already in use; another program holds 127.0.0.1:PORT, commonly a web server (nginx, Apache, Caddy); stop it, or move http.plain_listen to another address and let the web server proxy /.well-known/matrix/ to signpost's plain HTTP listener (README, scenario S3) (ss -lntup 'sport = :PORT' shows who)`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := tc.block(t)
			text := tc.edit(base, port)
			if text == base {
				t.Fatal("local.toml no longer has the line this case rewrites")
			}
			path := filepath.Join(t.TempDir(), "signpost.toml")
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			e := env{stdout: io.Discard, stderr: &stderr, getenv: func(string) string { return "" }, now: time.Now}
			if code := e.run(context.Background(), []string{"serve", "-config", path}); code != exitFail {
				t.Errorf("exit %d, want %d", code, exitFail)
			}
			got := ""
			for line := range strings.SplitSeq(stderr.String(), "\n") {
				if _, err, ok := strings.Cut(line, `msg="cannot listen" err=`); ok {
					got = err
				}
			}
			if want := strings.ReplaceAll(`"`+tc.want+`"`, "PORT", port); got != want {
				t.Errorf("got\n%s\nwant\n%s\nin:\n%s", got, want, stderr.String())
			}
		})
	}
}

// holdUDP binds a UDP socket at addr for the rest of the test, without
// SO_REUSEPORT, as another DNS server would, and returns its port.
func holdUDP(t *testing.T, addr string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Skipf("cannot bind %s: %v", addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	_, port, _ := net.SplitHostPort(pc.LocalAddr().String())
	return port
}

// holdTCP listens on a free TCP port of 127.0.0.1 for the rest of the test.
func holdTCP(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}
