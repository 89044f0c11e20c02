package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/signpost-dev/signpost/internal/testenv"
)

// instance is one `signpost serve` run in-process on loopback ports.
type instance struct {
	t       *testing.T
	config  string
	addrs   bound
	hup     chan os.Signal
	reloads chan error
	stderr  *testenv.SyncBuffer
	done    chan int
}

// loopback rewrites a config's listen addresses to free loopback ports.
func loopback(text string) string {
	r := strings.NewReplacer(
		`"127.0.0.1:8053"`, `"127.0.0.1:0"`,
		`"127.0.0.1:8443"`, `"127.0.0.1:0"`,
		`"127.0.0.1:8080"`, `"127.0.0.1:0"`,
		`"127.0.0.1:9153"`, `"127.0.0.1:0"`,
	)
	return r.Replace(text)
}

func startServe(t *testing.T, text string, hup chan os.Signal) *instance {
	t.Helper()
	return startServeWith(t, text, hup, nil)
}

// startServeWith is startServe with the env changed by set first, and more
// flags for serve.
func startServeWith(t *testing.T, text string, hup chan os.Signal, set func(*env), flags ...string) *instance {
	t.Helper()
	in := &instance{
		t:       t,
		config:  filepath.Join(t.TempDir(), "signpost.toml"),
		hup:     hup,
		reloads: make(chan error, 1),
		stderr:  &testenv.SyncBuffer{},
		done:    make(chan int, 1),
	}
	if in.hup == nil {
		in.hup = make(chan os.Signal, 1)
	}
	in.write(text)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan bound, 1)
	e := env{
		stdout: io.Discard, stderr: in.stderr, getenv: func(string) string { return "" }, now: time.Now,
		hup: in.hup, ready: func(b bound) { ready <- b }, reloaded: func(err error) { in.reloads <- err },
	}
	if set != nil {
		set(&e)
	}
	go func() { in.done <- e.run(ctx, append([]string{"serve", "-config", in.config}, flags...)) }()
	select {
	case in.addrs = <-ready:
	case code := <-in.done:
		cancel()
		t.Fatalf("serve exited with %d before it was ready:\n%s", code, in.stderr.String())
	}
	t.Cleanup(func() {
		cancel()
		if code := <-in.done; code != 0 {
			t.Errorf("serve exited with %d:\n%s", code, in.stderr.String())
		}
	})
	return in
}

func (in *instance) write(text string) {
	in.t.Helper()
	if err := os.WriteFile(in.config, []byte(text), 0o644); err != nil {
		in.t.Fatal(err)
	}
}

// reload sends SIGHUP and waits until serve has dealt with it.
func (in *instance) reload(sig func()) error {
	in.t.Helper()
	sig()
	select {
	case err := <-in.reloads:
		return err
	case <-time.After(10 * time.Second):
		in.t.Fatalf("no reload after SIGHUP:\n%s", in.stderr.String())
		return nil
	}
}

func (in *instance) query(net, name string, qtype uint16) *dns.Msg {
	in.t.Helper()
	c := &dns.Client{Net: net, Timeout: 5 * time.Second}
	q := new(dns.Msg).SetQuestion(name, qtype)
	q.RecursionDesired = false
	r, _, err := c.Exchange(q, in.addrs.DNS[0])
	if err != nil {
		in.t.Fatalf("%s %s %s: %v", net, name, dns.TypeToString[qtype], err)
	}
	return r
}

func (in *instance) get(host, path string) (*http.Response, string) {
	in.t.Helper()
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: host, InsecureSkipVerify: true}, // self-signed; the name is checked below
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, in.addrs.HTTPS)
		},
	}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + host + path)
	if err != nil {
		in.t.Fatalf("GET https://%s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || resp.TLS.PeerCertificates[0].VerifyHostname(host) != nil {
		in.t.Errorf("GET https://%s%s: certificate does not name %s", host, path, host)
	}
	return resp, string(body)
}

func readExample(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("../../deploy/examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func rrStrings(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, rr.String())
	}
	return out
}

// TestServeLocalDefault runs the README's first command (on free ports)
// and checks the answers the README promises.
func TestServeLocalDefault(t *testing.T) {
	in := startServe(t, loopback(readExample(t, "local.toml")), nil)
	for _, network := range []string{"udp", "tcp"} {
		r := in.query(network, "_matrix-fed._tcp.chat.example.test.", dns.TypeSRV)
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative || r.Truncated || r.RecursionAvailable {
			t.Errorf("%s SRV: rcode %s aa=%v tc=%v ra=%v", network, dns.RcodeToString[r.Rcode], r.Authoritative, r.Truncated, r.RecursionAvailable)
		}
		wantAnswer := []string{"_matrix-fed._tcp.chat.example.test.\t300\tIN\tSRV\t10 0 8448 hs.chat.example.test."}
		// As NSD answers: the zone's NS set in authority and the addresses of
		// the SRV target and the nameserver in additional.
		wantNs := []string{"chat.example.test.\t300\tIN\tNS\tns1.chat.example.test."}
		wantExtra := []string{"hs.chat.example.test.\t300\tIN\tA\t127.0.0.1", "ns1.chat.example.test.\t300\tIN\tA\t127.0.0.1"}
		if got := rrStrings(r.Answer); strings.Join(got, "\n") != strings.Join(wantAnswer, "\n") {
			t.Errorf("%s SRV answer %q, want %q", network, got, wantAnswer)
		}
		if got := rrStrings(r.Extra); strings.Join(got, "\n") != strings.Join(wantExtra, "\n") {
			t.Errorf("%s SRV additional %q, want %q", network, got, wantExtra)
		}
		if got := rrStrings(r.Ns); strings.Join(got, "\n") != strings.Join(wantNs, "\n") {
			t.Errorf("%s SRV authority %q, want %q", network, got, wantNs)
		}
		nx := in.query(network, "nope.chat.example.test.", dns.TypeA)
		if nx.Rcode != dns.RcodeNameError || !nx.Authoritative || len(nx.Answer) != 0 || len(nx.Ns) != 1 || nx.Ns[0].Header().Rrtype != dns.TypeSOA {
			t.Errorf("%s nope A: %v", network, nx)
		}
	}
	docs := map[string]string{
		"/.well-known/matrix/server":  `{"m.server":"hs.chat.example.test:8448"}`,
		"/.well-known/matrix/client":  `{"m.homeserver":{"base_url":"https://hs.chat.example.test"}}`,
		"/.well-known/matrix/support": `{"contacts":[{"matrix_id":"@admin:chat.example.test","role":"m.role.admin"}],"support_page":"https://chat.example.test/help"}`,
	}
	for path, want := range docs {
		resp, body := in.get("chat.example.test", path)
		if resp.StatusCode != 200 || body != want || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("GET %s: %d %q %v, want 200 %q", path, resp.StatusCode, body, resp.Header, want)
		}
	}
}

// TestReadmeCommands runs the dig and curl lines of the README against the
// local default when those programs are installed.
func TestReadmeCommands(t *testing.T) {
	in := startServe(t, loopback(readExample(t, "local.toml")), nil)
	host, port, _ := net.SplitHostPort(in.addrs.DNS[0])
	t.Run("dig", func(t *testing.T) {
		if _, err := exec.LookPath("dig"); err != nil {
			t.Skip("dig not installed (Debian: bind9-dnsutils); .ci/run installs it")
		}
		out, err := exec.Command("dig", "@"+host, "-p", port, "_matrix-fed._tcp.chat.example.test", "SRV", "+norec").CombinedOutput()
		if err != nil {
			t.Fatalf("dig: %v\n%s", err, out)
		}
		for _, want := range []string{"status: NOERROR", "flags: qr aa;", "_matrix-fed._tcp.chat.example.test. 300 IN SRV 10 0 8448 hs.chat.example.test.", "hs.chat.example.test.\t300\tIN\tA\t127.0.0.1"} {
			if !strings.Contains(strings.Join(strings.Fields(string(out)), " "), strings.Join(strings.Fields(want), " ")) {
				t.Errorf("dig output lacks %q:\n%s", want, out)
			}
		}
		out, _ = exec.Command("dig", "@"+host, "-p", port, "nope.chat.example.test", "A", "+norec").CombinedOutput()
		if !strings.Contains(string(out), "status: NXDOMAIN") || !strings.Contains(string(out), "AUTHORITY: 1") {
			t.Errorf("dig nope: want NXDOMAIN with the SOA in authority:\n%s", out)
		}
	})
	t.Run("curl", func(t *testing.T) {
		if _, err := exec.LookPath("curl"); err != nil {
			t.Skip("curl not installed")
		}
		_, hport, _ := net.SplitHostPort(in.addrs.HTTPS)
		for path, want := range map[string]string{
			"server": `{"m.server":"hs.chat.example.test:8448"}`,
			"client": `{"m.homeserver":{"base_url":"https://hs.chat.example.test"}}`,
		} {
			out, err := exec.Command("curl", "-sS", "-k", "--resolve", "chat.example.test:"+hport+":127.0.0.1", "https://chat.example.test:"+hport+"/.well-known/matrix/"+path).CombinedOutput()
			if err != nil || string(out) != want {
				t.Errorf("curl %s: %v %q, want %q", path, err, out, want)
			}
		}
	})
}

// TestServeReload shows SIGHUP swapping the model, and a broken file being
// rejected while the previous model keeps serving.
func TestServeReload(t *testing.T) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	t.Cleanup(func() { signal.Stop(hup) })
	text := loopback(readExample(t, "local.toml"))
	in := startServe(t, text, hup)
	sighup := func() { syscall.Kill(os.Getpid(), syscall.SIGHUP) }

	srv := func() string {
		r := in.query("udp", "_matrix-fed._tcp.chat.example.test.", dns.TypeSRV)
		return strings.Join(rrStrings(r.Answer), "\n")
	}
	doc := func() string { _, body := in.get("chat.example.test", "/.well-known/matrix/server"); return body }

	in.write(strings.Replace(text, "hs.chat.example.test:8448", "hs.chat.example.test:443", 1))
	if err := in.reload(sighup); err != nil {
		t.Fatalf("reload of a good file: %v", err)
	}
	if got, want := srv(), "_matrix-fed._tcp.chat.example.test.\t300\tIN\tSRV\t10 0 443 hs.chat.example.test."; got != want {
		t.Errorf("after reload SRV %q, want %q", got, want)
	}
	if got, want := doc(), `{"m.server":"hs.chat.example.test:443"}`; got != want {
		t.Errorf("after reload document %q, want %q", got, want)
	}

	in.write(strings.Replace(text, `plain_listen  = "127.0.0.1:0"`, `plain_listen  = "127.0.0.1:1"`, 1))
	if err := in.reload(sighup); err == nil || !strings.Contains(err.Error(), "listen addresses changed") {
		t.Fatalf("reload that moves a listener: %v, want it rejected", err)
	}

	in.write(strings.Replace(text, `server      = "hs.chat.example.test:8448"`, `server      = "hs.chat.example.test"`, 1))
	if err := in.reload(sighup); err == nil {
		t.Fatal("reload of a broken file succeeded")
	}
	if got, want := srv(), "_matrix-fed._tcp.chat.example.test.\t300\tIN\tSRV\t10 0 443 hs.chat.example.test."; got != want {
		t.Errorf("after a rejected reload SRV %q, want the previous %q", got, want)
	}
	if got, want := doc(), `{"m.server":"hs.chat.example.test:443"}`; got != want {
		t.Errorf("after a rejected reload document %q, want the previous %q", got, want)
	}
	if log := in.stderr.String(); !strings.Contains(log, `has no port; without one, remote servers look up SRV records`) || !strings.Contains(log, "still serving the previous configuration") {
		t.Errorf("the rejected reload is not explained in the log:\n%s", log)
	}
}

func TestServeBadConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "signpost.toml")
	os.WriteFile(path, []byte("[dns]\nlisten = [\"nonsense\"]\n"), 0o644)
	var stderr bytes.Buffer
	e := env{stdout: io.Discard, stderr: &stderr, getenv: func(string) string { return "" }, now: time.Now}
	if code := e.run(context.Background(), []string{"serve", "-config", path}); code != exitFail {
		t.Errorf("exit %d, want %d", code, exitFail)
	}
	if want := `dns.listen[0]: "nonsense" is not host:port`; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q lacks %q", stderr.String(), want)
	}
}

// TestServeStorageProblem: at start-up an unusable acme.storage is logged
// at ERROR with the file, line and key and the fix, and serve still starts
// and answers DNS: certificates are retried until the storage is fixed.
func TestServeStorageProblem(t *testing.T) {
	text := strings.Replace(loopback(readExample(t, "local.toml")), `mode = "self-signed"`,
		"mode = \"acme\"\nstorage = \"testdata/not-a-directory/storage\"\nchallenges = [\"dns-01\"]", 1)
	in := startServe(t, text, nil)
	want := `level=ERROR msg=storage problem="` + in.config + `:19: acme.storage: \"testdata/not-a-directory/storage\" is under a regular file testdata/not-a-directory; remove testdata/not-a-directory or set acme.storage to a directory elsewhere"`
	if log := in.stderr.String(); !strings.Contains(log, want) {
		t.Errorf("log has no line\n%s\nlog:\n%s", want, log)
	}
	if r := in.query("udp", "chat.example.test.", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("A chat.example.test: %v", r)
	}
}
