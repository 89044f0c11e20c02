package probe

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// env is the common setup: chat.example.com and hs.example.com resolve to
// 127.0.0.1, a fake homeserver for chat.example.com listens on its own port
// ({HS}) with a certificate for both names.
type env struct {
	s      *scenario
	hs     *homeserver
	hsPort int
}

func newEnv(t *testing.T) *env {
	s := newScenario(t)
	hs := newHomeserver("chat.example.com")
	p := s.serve("HS", "", 0, hs, "hs.example.com", "chat.example.com")
	s.rr("chat.example.com. 300 IN A 127.0.0.1", "hs.example.com. 300 IN A 127.0.0.1")
	return &env{s: s, hs: hs, hsPort: p}
}

// hp is "host:{HS}".
func (e *env) hp(host string) string { return fmt.Sprintf("%s:%d", host, e.hsPort) }

// clientDoc is a working /.well-known/matrix/client.
func (e *env) clientDoc() route {
	return route{body: fmt.Sprintf(`{"m.homeserver":{"base_url":"https://%s"}}`, e.hp("hs.example.com"))}
}

// wellKnown starts the site at chat.example.com:443 with the server
// document given and a working client document.
func (e *env) wellKnown(server route, certNames ...string) {
	if len(certNames) == 0 {
		certNames = []string{"chat.example.com"}
	}
	routes := map[string]route{"/.well-known/matrix/client": e.clientDoc()}
	if server.status != 0 || server.body != "" {
		routes["/.well-known/matrix/server"] = server
	}
	e.s.serve("WK", "127.0.0.1", 443, &site{routes: routes}, certNames...)
}

// on8448 makes the homeserver fixture answer at host:8448 too.
func (e *env) on8448(ip string) { e.s.mapAddr("tcp", ip, 8448, e.hsPort) }

func targetLines(s *scenario, ts []Target) []string {
	var out []string
	for _, t := range ts {
		var addrs []string
		for _, a := range t.Addrs {
			addrs = append(addrs, a.String())
		}
		out = append(out, s.normalize(fmt.Sprintf("%s | %s port %d | Host %s | cert %s | SNI %q | %s",
			t.Step, t.Host, t.Port, t.HostHeader, t.CertName, t.SNI, strings.Join(addrs, ","))))
	}
	return out
}

// checkGolden compares got with testdata/name.golden.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("report differs from %s (go test -update rewrites it; read the diff):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

// hasLines fails unless every want line is a whole line of text.
func hasLines(t *testing.T, text string, want ...string) {
	t.Helper()
	lines := map[string]bool{}
	for _, l := range strings.Split(text, "\n") {
		lines[l] = true
	}
	for _, w := range want {
		if !lines[w] {
			t.Errorf("report lacks line:\n%s\nreport:\n%s", w, text)
		}
	}
}

// TestResolution covers every branch of "Resolving server names". Each case
// states the targets a remote server connects to, the lines that prove the
// branch was taken, and the whole report is compared with a golden file.
func TestResolution(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(e *env) string // returns the name to probe
		targets []string
		failed  bool
		lines   []string
	}{
		{
			name: "ip-literal",
			setup: func(e *env) string {
				e.hs.serverName = "127.0.0.1"
				e.s.serve("HSIP", "127.0.0.1", 8448, e.hs, "127.0.0.1")
				e.s.serve("WK", "127.0.0.1", 443, &site{routes: map[string]route{"/.well-known/matrix/client": e.clientDoc()}}, "127.0.0.1")
				return "127.0.0.1"
			},
			targets: []string{`1 (IP literal) | 127.0.0.1 port 8448 | Host 127.0.0.1 | cert 127.0.0.1 | SNI "" | 127.0.0.1`},
			lines: []string{
				`ok    resolve    step 1: 127.0.0.1 is an IP literal: connect to 127.0.0.1 port 8448 with Host "127.0.0.1"; the certificate must name the IP address`,
				`skip  resolve    steps 2-6 skipped: an IP literal is used as it is, without well-known or SRV lookups`,
				`ok    connect    IPv4 127.0.0.1:8448 (127.0.0.1, Host 127.0.0.1): the key response is for server_name "127.0.0.1"`,
			},
		},
		{
			name: "ip-literal-port",
			setup: func(e *env) string {
				e.s.serve("HSIP", "", 0, e.hs, "127.0.0.1")
				name := fmt.Sprintf("127.0.0.1:%d", e.s.port("HSIP"))
				e.hs.serverName = name
				e.s.serve("WK", "127.0.0.1", 443, &site{routes: map[string]route{"/.well-known/matrix/client": e.clientDoc()}}, "127.0.0.1")
				return name
			},
			targets: []string{`1 (IP literal) | 127.0.0.1 port {HSIP} | Host 127.0.0.1:{HSIP} | cert 127.0.0.1 | SNI "" | 127.0.0.1`},
			lines: []string{
				`ok    resolve    step 1: 127.0.0.1:{HSIP} is an IP literal: connect to 127.0.0.1 port {HSIP} with Host "127.0.0.1:{HSIP}"; the certificate must name the IP address`,
				`ok    connect    IPv4 127.0.0.1:{HSIP} (127.0.0.1, Host 127.0.0.1:{HSIP}): federation API answers: FakeHS 1.0`,
			},
		},
		{
			name: "ipv6-literal",
			setup: func(e *env) string {
				e.hs.serverName = "[::1]"
				e.s.serve("HSIP", "::1", 8448, e.hs, "::1")
				e.s.serve("WK", "::1", 443, &site{routes: map[string]route{"/.well-known/matrix/client": e.clientDoc()}}, "::1")
				return "[::1]"
			},
			targets: []string{`1 (IP literal) | ::1 port 8448 | Host [::1] | cert ::1 | SNI "" | ::1`},
			lines: []string{
				`ok    connect    IPv6 [::1]:8448 (::1, Host [::1]): TLS 1.3, certificate for ::1 valid until 2030-04-02, issued by Probe Test CA`,
			},
		},
		{
			name: "explicit-port",
			setup: func(e *env) string {
				e.hs.serverName = e.hp("chat.example.com")
				e.wellKnown(route{})
				return e.hp("chat.example.com")
			},
			targets: []string{`2 (explicit port) | chat.example.com port {HS} | Host chat.example.com:{HS} | cert chat.example.com | SNI "chat.example.com" | 127.0.0.1`},
			lines: []string{
				`skip  resolve    steps 3-6 skipped: with an explicit port there is no well-known or SRV lookup`,
				`skip  wellknown  well-known checks skipped: remote servers do not fetch /.well-known/matrix/server for a server name with an IP literal or an explicit port`,
				`skip  fallback   SRV fallback rehearsal skipped: remote servers never look up SRV for a server name with an IP literal or an explicit port`,
			},
		},
		{
			name: "wellknown-with-port",
			setup: func(e *env) string {
				e.wellKnown(wkServer(e.hp("hs.example.com")))
				return "chat.example.com"
			},
			targets: []string{`3.2 (delegated name with port) | hs.example.com port {HS} | Host hs.example.com:{HS} | cert hs.example.com | SNI "hs.example.com" | 127.0.0.1`},
			lines: []string{
				`ok    resolve    step 3: the well-known endpoint delegates to "hs.example.com:{HS}"`,
				`skip  resolve    steps 3.3-3.5 skipped: the delegated name has a port, so no SRV lookup is made`,
				`info  fallback   no SRV record at _matrix-fed._tcp.chat.example.com.: when the well-known endpoint is down, remote servers try chat.example.com port 8448`,
			},
		},
		{
			name: "wellknown-ip-literal",
			setup: func(e *env) string {
				e.s.serve("HSIP", "", 0, e.hs, "127.0.0.1")
				e.wellKnown(wkServer(fmt.Sprintf("127.0.0.1:%d", e.s.port("HSIP"))))
				return "chat.example.com"
			},
			targets: []string{`3.1 (delegated IP literal) | 127.0.0.1 port {HSIP} | Host 127.0.0.1:{HSIP} | cert 127.0.0.1 | SNI "" | 127.0.0.1`},
			lines: []string{
				`skip  resolve    steps 3.2-3.5 skipped: the delegated name is an IP literal`,
			},
		},
		{
			name: "wellknown-no-port-matrix-fed",
			setup: func(e *env) string {
				e.wellKnown(wkServer("hs.example.com"))
				e.s.rr(fmt.Sprintf("_matrix-fed._tcp.hs.example.com. 300 IN SRV 0 0 %d hs.example.com.", e.hsPort),
					"_matrix._tcp.hs.example.com. 300 IN SRV 0 0 1 wrong.example.com.")
				return "chat.example.com"
			},
			targets: []string{`3.3 (SRV _matrix-fed._tcp.hs.example.com. 0 0 {HS} hs.example.com.) | hs.example.com port {HS} | Host hs.example.com | cert hs.example.com | SNI "hs.example.com" | 127.0.0.1`},
			lines: []string{
				`ok    resolve    step 3.3: SRV _matrix-fed._tcp.hs.example.com. gives 1 target(s); connect with Host "hs.example.com" and a certificate for hs.example.com`,
				`skip  resolve    step 3.4 skipped: step 3.3 found SRV records`,
				`skip  resolve    step 3.5 skipped: step 3.3 found SRV records`,
			},
		},
		{
			name: "wellknown-no-port-legacy-srv",
			setup: func(e *env) string {
				e.wellKnown(wkServer("hs.example.com"))
				e.s.rr(fmt.Sprintf("_matrix._tcp.hs.example.com. 300 IN SRV 0 0 %d hs.example.com.", e.hsPort))
				return "chat.example.com"
			},
			targets: []string{`3.4 (SRV _matrix._tcp.hs.example.com. 0 0 {HS} hs.example.com.) | hs.example.com port {HS} | Host hs.example.com | cert hs.example.com | SNI "hs.example.com" | 127.0.0.1`},
			lines: []string{
				`info  resolve    step 3.3: no SRV record at _matrix-fed._tcp.hs.example.com.`,
				`warn  resolve    step 3.4: found only the deprecated SRV name _matrix._tcp.hs.example.com.; servers that dropped it will fall back to port 8448  Fix: publish the same record as _matrix-fed._tcp.hs.example.com.; Matrix 1.8 deprecated _matrix._tcp.hs.example.com.`,
			},
		},
		{
			name: "wellknown-no-port-8448",
			setup: func(e *env) string {
				e.wellKnown(wkServer("hs.example.com"))
				e.on8448("127.0.0.1")
				return "chat.example.com"
			},
			targets: []string{`3.5 (port 8448) | hs.example.com port 8448 | Host hs.example.com | cert hs.example.com | SNI "hs.example.com" | 127.0.0.1`},
			lines: []string{
				`info  resolve    step 3.4: no SRV record at _matrix._tcp.hs.example.com.`,
				`ok    resolve    step 3.5: no SRV record: look up AAAA/A of hs.example.com and connect to port 8448 with Host "hs.example.com"`,
			},
		},
		{
			name: "wellknown-redirect",
			setup: func(e *env) string {
				e.s.serve("WK", "127.0.0.1", 443, &site{routes: map[string]route{
					"/.well-known/matrix/server": {status: 301, header: map[string]string{"Location": "https://www.example.com/matrix.json"}},
					"/matrix.json":               wkServer(e.hp("hs.example.com")),
					"/.well-known/matrix/client": e.clientDoc(),
				}}, "chat.example.com", "www.example.com")
				e.s.rr("www.example.com. 300 IN A 127.0.0.1")
				return "chat.example.com"
			},
			targets: []string{`3.2 (delegated name with port) | hs.example.com port {HS} | Host hs.example.com:{HS} | cert hs.example.com | SNI "hs.example.com" | 127.0.0.1`},
			lines: []string{
				`info  resolve    GET https://chat.example.com/.well-known/matrix/server redirected: 301 -> https://www.example.com/matrix.json`,
			},
		},
		// Invalid well-known answers: each sends remote servers to step 4;
		// with no SRV record they end at chat.example.com:8448.
		{
			name:    "wellknown-bad-json",
			setup:   invalidWellKnown(route{body: `{"m.server": hs.example.com}`}),
			targets: fallback8448,
			failed:  true,
			lines:   []string{`fail  resolve    step 3: GET https://chat.example.com/.well-known/matrix/server: the body is not JSON: invalid character 'h' looking for beginning of value; remote servers go on to step 4  Fix: serve a JSON object like {"m.server": "hs.example.com:443"}`},
		},
		{
			name:    "wellknown-empty-object",
			setup:   invalidWellKnown(route{body: `{}`}),
			targets: fallback8448,
			failed:  true,
			lines:   []string{`fail  resolve    step 3: GET https://chat.example.com/.well-known/matrix/server: the JSON object has no "m.server"; remote servers go on to step 4  Fix: serve a JSON object like {"m.server": "hs.example.com:443"}`},
		},
		{
			name:    "wellknown-non-string",
			setup:   invalidWellKnown(route{body: `{"m.server": 8448}`}),
			targets: fallback8448,
			failed:  true,
			lines:   []string{`fail  resolve    step 3: GET https://chat.example.com/.well-known/matrix/server: "m.server" is a JSON number, not a string; remote servers go on to step 4  Fix: serve a JSON object like {"m.server": "hs.example.com:443"}`},
		},
		{
			name:    "wellknown-scheme",
			setup:   invalidWellKnown(route{body: `{"m.server": "https://hs.example.com"}`}),
			targets: fallback8448,
			failed:  true,
			lines:   []string{`fail  resolve    step 3: GET https://chat.example.com/.well-known/matrix/server: m.server "https://hs.example.com" is invalid: "https://hs.example.com" is a URL; write only the host and optional port, without a scheme or path; remote servers go on to step 4  Fix: write m.server as host or host:port, e.g. "hs.example.com:443"`},
		},
		{
			name:    "wellknown-port-70000",
			setup:   invalidWellKnown(route{body: `{"m.server": "hs.example.com:70000"}`}),
			targets: fallback8448,
			failed:  true,
			lines:   []string{`fail  resolve    step 3: GET https://chat.example.com/.well-known/matrix/server: m.server "hs.example.com:70000" is invalid: port 70000 is out of range; ports go from 1 to 65535; remote servers go on to step 4  Fix: write m.server as host or host:port, e.g. "hs.example.com:443"`},
		},
		{
			name:    "wellknown-404",
			setup:   invalidWellKnown(route{}),
			targets: fallback8448,
			lines:   []string{`warn  resolve    step 3: GET https://chat.example.com/.well-known/matrix/server: 404 Not Found; remote servers go on to step 4  Fix: if you want to delegate with well-known, serve {"m.server": "host:port"} there; SRV-only delegation is also valid`},
		},
		{
			name:    "wellknown-500",
			setup:   invalidWellKnown(route{status: 500, body: `{"m.server": "hs.example.com:443"}`}),
			targets: fallback8448,
			failed:  true,
			lines:   []string{`fail  resolve    step 3: GET https://chat.example.com/.well-known/matrix/server: status 500; only 200 counts; remote servers go on to step 4  Fix: answer 200 with {"m.server": "host:port"}, or 404 if you do not delegate with well-known`},
		},
		{
			name:    "wellknown-redirect-loop",
			setup:   invalidWellKnown(route{status: 302, header: map[string]string{"Location": "/.well-known/matrix/server"}}),
			targets: fallback8448,
			failed:  true,
			lines: []string{
				`info  resolve    GET https://chat.example.com/.well-known/matrix/server redirected: 302 -> https://chat.example.com/.well-known/matrix/server`,
				`fail  resolve    step 3: GET https://chat.example.com/.well-known/matrix/server: the redirects loop back to a URL already visited; remote servers go on to step 4  Fix: make the redirect end at a URL that answers 200`,
			},
		},
		{
			name: "wellknown-wrong-certificate",
			setup: func(e *env) string {
				e.wellKnown(wkServer(e.hp("hs.example.com")), "other.example.com")
				e.on8448("127.0.0.1")
				return "chat.example.com"
			},
			targets: fallback8448,
			failed:  true,
			lines: []string{
				`fail  resolve    step 3: GET https://chat.example.com/.well-known/matrix/server: the certificate does not cover chat.example.com (it names other.example.com); remote servers go on to step 4  Fix: serve a certificate whose names include chat.example.com`,
				`fail  client     client discovery: FAIL_PROMPT (Failed to get autodiscovery configuration from server)  Fix: serve a certificate whose names include chat.example.com`,
			},
		},
		{
			name: "wellknown-unreachable",
			setup: func(e *env) string {
				e.on8448("127.0.0.1")
				return "chat.example.com"
			},
			targets: fallback8448,
			failed:  true, // client discovery cannot work either
			lines: []string{
				`warn  resolve    step 3: GET https://chat.example.com/.well-known/matrix/server: dial tcp 127.0.0.1:443: connection refused; remote servers go on to step 4  Fix: if you delegate with well-known, make https://chat.example.com/ reachable; otherwise ignore this`,
			},
		},
		// Step 4 and later: SRV on the server name itself.
		{
			name: "srv-matrix-fed-before-matrix",
			setup: func(e *env) string {
				e.wellKnown(route{})
				e.s.rr(fmt.Sprintf("_matrix-fed._tcp.chat.example.com. 300 IN SRV 10 0 %d hs.example.com.", e.hsPort),
					"_matrix._tcp.chat.example.com. 300 IN SRV 0 0 9 legacy.example.com.")
				return "chat.example.com"
			},
			targets: []string{`4 (SRV _matrix-fed._tcp.chat.example.com. 10 0 {HS} hs.example.com.) | hs.example.com port {HS} | Host chat.example.com | cert chat.example.com | SNI "chat.example.com" | 127.0.0.1`},
			lines: []string{
				`ok    resolve    step 4: SRV _matrix-fed._tcp.chat.example.com. gives 1 target(s); connect with Host "chat.example.com" and a certificate for chat.example.com`,
				`skip  resolve    step 5 skipped: step 4 found SRV records`,
				`skip  resolve    step 6 skipped: step 4 found SRV records`,
				`skip  fallback   SRV fallback rehearsal skipped: the well-known request failed, so the SRV path above is already the live one`,
			},
		},
		{
			name: "srv-matrix-only",
			setup: func(e *env) string {
				e.wellKnown(route{})
				e.s.rr(fmt.Sprintf("_matrix._tcp.chat.example.com. 300 IN SRV 0 0 %d hs.example.com.", e.hsPort))
				return "chat.example.com"
			},
			targets: []string{`5 (SRV _matrix._tcp.chat.example.com. 0 0 {HS} hs.example.com.) | hs.example.com port {HS} | Host chat.example.com | cert chat.example.com | SNI "chat.example.com" | 127.0.0.1`},
			lines: []string{
				`info  resolve    step 4: no SRV record at _matrix-fed._tcp.chat.example.com.`,
				`warn  resolve    step 5: found only the deprecated SRV name _matrix._tcp.chat.example.com.; servers that dropped it will fall back to port 8448  Fix: publish the same record as _matrix-fed._tcp.chat.example.com.; Matrix 1.8 deprecated _matrix._tcp.chat.example.com.`,
			},
		},
		{
			name: "srv-priority-order",
			setup: func(e *env) string {
				e.wellKnown(route{})
				e.s.rr(fmt.Sprintf("_matrix-fed._tcp.chat.example.com. 300 IN SRV 20 0 %d c.example.com.", e.hsPort),
					fmt.Sprintf("_matrix-fed._tcp.chat.example.com. 300 IN SRV 0 0 %d a.example.com.", e.hsPort),
					fmt.Sprintf("_matrix-fed._tcp.chat.example.com. 300 IN SRV 10 0 %d b.example.com.", e.hsPort),
					"a.example.com. 300 IN A 127.0.0.1", "b.example.com. 300 IN A 127.0.0.1", "c.example.com. 300 IN A 127.0.0.1")
				return "chat.example.com"
			},
			targets: []string{
				`4 (SRV _matrix-fed._tcp.chat.example.com. 0 0 {HS} a.example.com.) | a.example.com port {HS} | Host chat.example.com | cert chat.example.com | SNI "chat.example.com" | 127.0.0.1`,
				`4 (SRV _matrix-fed._tcp.chat.example.com. 10 0 {HS} b.example.com.) | b.example.com port {HS} | Host chat.example.com | cert chat.example.com | SNI "chat.example.com" | 127.0.0.1`,
				`4 (SRV _matrix-fed._tcp.chat.example.com. 20 0 {HS} c.example.com.) | c.example.com port {HS} | Host chat.example.com | cert chat.example.com | SNI "chat.example.com" | 127.0.0.1`,
			},
		},
		{
			name: "srv-target-dot",
			setup: func(e *env) string {
				e.wellKnown(route{})
				e.s.rr("_matrix-fed._tcp.chat.example.com. 300 IN SRV 0 0 0 .")
				e.on8448("127.0.0.1")
				return "chat.example.com"
			},
			failed: true,
			lines: []string{
				`fail  resolve    step 4: SRV _matrix-fed._tcp.chat.example.com. has the single target ".", which means "no service here": remote servers will not connect at all  Fix: delete the SRV record _matrix-fed._tcp.chat.example.com., or point it at the homeserver`,
			},
		},
		{
			name: "srv-target-cname",
			setup: func(e *env) string {
				e.wellKnown(route{})
				e.s.rr(fmt.Sprintf("_matrix-fed._tcp.chat.example.com. 300 IN SRV 0 0 %d alias.example.com.", e.hsPort),
					"alias.example.com. 300 IN CNAME hs.example.com.")
				return "chat.example.com"
			},
			targets: []string{`4 (SRV _matrix-fed._tcp.chat.example.com. 0 0 {HS} alias.example.com.) | alias.example.com port {HS} | Host chat.example.com | cert chat.example.com | SNI "chat.example.com" | 127.0.0.1`},
			lines: []string{
				`warn  dns        SRV target alias.example.com is a CNAME (alias.example.com. -> hs.example.com.); RFC 2782 forbids aliases there, and resolvers that follow the rule find no address  Fix: point the SRV record at the canonical name (hs.example.com.) instead of the alias`,
			},
		},
		{
			name: "srv-servfail",
			setup: func(e *env) string {
				e.wellKnown(route{})
				e.s.rcodes["_matrix-fed._tcp.chat.example.com. SRV"] = dns.RcodeServerFailure
				e.on8448("127.0.0.1")
				return "chat.example.com"
			},
			targets: fallback8448,
			failed:  true,
			lines: []string{
				`fail  resolve    step 4: SRV _matrix-fed._tcp.chat.example.com. got SERVFAIL: Synapse stops here and will not federate with this server; other servers treat it as no record  Fix: make the nameservers of chat.example.com answer SRV queries for _matrix-fed._tcp.chat.example.com. (NXDOMAIN or an empty answer is fine)`,
				`fail  dns        SRV lookups fail: _matrix-fed._tcp.chat.example.com. SERVFAIL; Synapse will not federate with chat.example.com while they do  Fix: make every nameserver of the zone answer these names (NXDOMAIN or NOERROR with no records is fine)`,
			},
		},
		{
			name: "srv-refused-legacy",
			setup: func(e *env) string {
				e.wellKnown(route{})
				e.s.rcodes["_matrix._tcp.chat.example.com. SRV"] = dns.RcodeRefused
				e.on8448("127.0.0.1")
				return "chat.example.com"
			},
			targets: fallback8448,
			failed:  true,
			lines: []string{
				`fail  resolve    step 5: SRV _matrix._tcp.chat.example.com. got REFUSED: Synapse stops here and will not federate with this server; other servers treat it as no record  Fix: make the nameservers of chat.example.com answer SRV queries for _matrix._tcp.chat.example.com. (NXDOMAIN or an empty answer is fine)`,
			},
		},
		{
			name: "fallback-8448",
			setup: func(e *env) string {
				e.wellKnown(route{})
				e.on8448("127.0.0.1")
				return "chat.example.com"
			},
			targets: fallback8448,
			lines: []string{
				`info  resolve    step 5: no SRV record at _matrix._tcp.chat.example.com.`,
				`ok    resolve    step 6: no SRV record: look up AAAA/A of chat.example.com and connect to port 8448 with Host "chat.example.com"`,
				`ok    connect    IPv4 127.0.0.1:8448 (chat.example.com, Host chat.example.com): TLS 1.3, certificate for chat.example.com valid until 2030-04-02, issued by Probe Test CA`,
			},
		},
		{
			name: "no-address",
			setup: func(e *env) string {
				e.wellKnown(wkServer("nowhere.example.com:8448"))
				return "chat.example.com"
			},
			targets: []string{`3.2 (delegated name with port) | nowhere.example.com port 8448 | Host nowhere.example.com:8448 | cert nowhere.example.com | SNI "nowhere.example.com" | `},
			failed:  true,
			lines: []string{
				`fail  resolve    nowhere.example.com has no address (no AAAA or A records): remote servers cannot connect  Fix: publish an A and/or AAAA record for nowhere.example.com`,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			name := tc.setup(e)
			r := e.s.run(name)
			text := e.s.text(r)
			got := targetLines(e.s, r.Targets)
			if strings.Join(got, "\n") != strings.Join(tc.targets, "\n") {
				t.Errorf("targets:\n got %q\nwant %q", got, tc.targets)
			}
			if r.Failed() != tc.failed {
				t.Errorf("Failed() = %v, want %v", r.Failed(), tc.failed)
			}
			hasLines(t, text, tc.lines...)
			checkGolden(t, "resolve-"+tc.name, text)
		})
	}
}

var fallback8448 = []string{`6 (port 8448) | chat.example.com port 8448 | Host chat.example.com | cert chat.example.com | SNI "chat.example.com" | 127.0.0.1`}

// invalidWellKnown serves server as the well-known document and the
// homeserver at chat.example.com:8448, where step 6 ends.
func invalidWellKnown(server route) func(e *env) string {
	return func(e *env) string {
		e.wellKnown(server)
		e.on8448("127.0.0.1")
		return "chat.example.com"
	}
}

func TestBadServerName(t *testing.T) {
	s := newScenario(t)
	r := s.run("https://chat.example.com/")
	text := s.text(r)
	want := `probe https://chat.example.com/ via resolver 127.0.0.1:{DNS} at 2030-01-02T03:04:05Z
fail  name       "https://chat.example.com/" is not a server name: "https://chat.example.com/" is a URL; write only the host and optional port, without a scheme or path  Fix: use the part after the colon in your users' IDs, e.g. example.com or example.com:8448
FAIL: 0 ok, 0 warn, 1 fail; client discovery not run
`
	if text != want {
		t.Fatalf("got:\n%s\nwant:\n%s", text, want)
	}
}

// TestKeyChecks covers the checks of /_matrix/key/v2/server.
func TestKeyChecks(t *testing.T) {
	tests := []struct {
		name   string
		hs     func(h *homeserver)
		failed bool
		lines  []string
	}{
		{
			name: "valid",
			lines: []string{
				`ok    connect    IPv4 127.0.0.1:{HS} (chat.example.com, Host chat.example.com:{HS}): the keys are valid until 2030-01-03T03:04:05Z`,
				`ok    connect    IPv4 127.0.0.1:{HS} (chat.example.com, Host chat.example.com:{HS}): ed25519 key(s) ed25519:a_test; 1 signature(s) verified`,
			},
		},
		{
			name:   "wrong-server-name",
			hs:     func(h *homeserver) { h.serverName = "other.example.com" },
			failed: true,
			lines: []string{
				`fail  connect    IPv4 127.0.0.1:{HS} (chat.example.com, Host chat.example.com:{HS}): the key response says server_name "other.example.com", not "chat.example.com:{HS}": remote servers reject it  Fix: the delegation points at a homeserver configured for another name; set server_name: "chat.example.com:{HS}" in its configuration, or delegate to the right homeserver`,
				`fail  connect    IPv4 127.0.0.1:{HS} (chat.example.com, Host chat.example.com:{HS}): the key response is not signed by "chat.example.com:{HS}"  Fix: the homeserver's server_name must be the server name`,
			},
		},
		{
			name:   "expired",
			hs:     func(h *homeserver) { h.validUntil = testNow.Add(-time.Minute) },
			failed: true,
			lines: []string{
				`fail  connect    IPv4 127.0.0.1:{HS} (chat.example.com, Host chat.example.com:{HS}): the keys expired at 2030-01-02T03:03:05Z (valid_until_ts 1893553385000)  Fix: check the homeserver's clock and restart it so it republishes its keys`,
			},
		},
		{
			name: "expiring-within-the-hour",
			hs:   func(h *homeserver) { h.validUntil = testNow.Add(30 * time.Minute) },
			lines: []string{
				`warn  connect    IPv4 127.0.0.1:{HS} (chat.example.com, Host chat.example.com:{HS}): the keys expire within the hour, at 2030-01-02T03:34:05Z  Fix: check the homeserver's clock; keys are normally published valid for a day or more`,
			},
		},
		{
			name:   "no-ed25519-key",
			hs:     func(h *homeserver) { h.keyID = "curve25519:a_test" },
			failed: true,
			lines: []string{
				`fail  connect    IPv4 127.0.0.1:{HS} (chat.example.com, Host chat.example.com:{HS}): the key response lists no ed25519 verify key  Fix: check the homeserver's signing key configuration`,
			},
		},
		{
			name: "bad-signature",
			hs: func(h *homeserver) {
				h.tamper = func(o map[string]any) {
					o["old_verify_keys"] = map[string]any{"ed25519:old": map[string]any{"key": "x", "expired_ts": 1}}
				}
			},
			failed: true,
			lines: []string{
				`fail  connect    IPv4 127.0.0.1:{HS} (chat.example.com, Host chat.example.com:{HS}): signature ed25519:a_test does not verify over the canonical JSON  Fix: something rewrites the response, or the homeserver publishes a key it does not sign with; check its signing key and any proxy`,
				`fail  connect    IPv4 127.0.0.1:{HS} (chat.example.com, Host chat.example.com:{HS}): no signature by a listed verify key: remote servers reject the keys  Fix: check the homeserver's signing key configuration`,
			},
		},
		{
			name: "unsigned-field-ignored",
			hs: func(h *homeserver) {
				h.tamper = func(o map[string]any) { o["unsigned"] = map[string]any{"age_ts": 1} }
			},
			lines: []string{
				`ok    connect    IPv4 127.0.0.1:{HS} (chat.example.com, Host chat.example.com:{HS}): ed25519 key(s) ed25519:a_test; 1 signature(s) verified`,
			},
		},
		{
			name: "signature-by-unlisted-key",
			hs: func(h *homeserver) {
				h.tamper = func(o map[string]any) {
					o["signatures"].(map[string]any)[h.serverName].(map[string]any)["ed25519:gone"] = "AAAA"
				}
			},
			lines: []string{
				`warn  connect    IPv4 127.0.0.1:{HS} (chat.example.com, Host chat.example.com:{HS}): signature ed25519:gone is by a key not in verify_keys; it cannot be checked`,
				`ok    connect    IPv4 127.0.0.1:{HS} (chat.example.com, Host chat.example.com:{HS}): ed25519 key(s) ed25519:a_test; 1 signature(s) verified`,
			},
		},
		{
			name:   "float-breaks-canonical-json",
			hs:     func(h *homeserver) { h.edit = func(o map[string]any) { o["valid_until_ts"] = 1.5 } },
			failed: true,
			lines: []string{
				`fail  connect    IPv4 127.0.0.1:{HS} (chat.example.com, Host chat.example.com:{HS}): valid_until_ts 1.5 is not an integer  Fix: upgrade the homeserver; this field must be milliseconds since 1970`,
				`fail  connect    IPv4 127.0.0.1:{HS} (chat.example.com, Host chat.example.com:{HS}): the key response cannot be put in canonical JSON, so no signature can verify: number 1.5 is not an integer; canonical JSON has no fractions  Fix: upgrade the homeserver`,
			},
		},
		{
			name:   "not-json",
			hs:     func(h *homeserver) { h.raw = "<html>Bad Gateway</html>" },
			failed: true,
			lines: []string{
				`fail  connect    IPv4 127.0.0.1:{HS} (chat.example.com, Host chat.example.com:{HS}): the key response is not JSON: invalid character '<' looking for beginning of value  Fix: check the reverse proxy in front of the homeserver passes /_matrix/key/ through`,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.wellKnown(route{})
			name := e.hp("chat.example.com")
			e.hs.serverName = name
			if tc.hs != nil {
				tc.hs(e.hs)
			}
			r := e.s.run(name)
			text := e.s.text(r)
			if r.Failed() != tc.failed {
				t.Errorf("Failed() = %v, want %v\n%s", r.Failed(), tc.failed, text)
			}
			hasLines(t, text, tc.lines...)
		})
	}
}

// TestTLSChecks covers certificate chain, name and version failures on a
// federation target.
func TestTLSChecks(t *testing.T) {
	e := newEnv(t)
	e.wellKnown(route{})
	// Targets in priority order: the good homeserver, one with a
	// certificate from an unknown CA, one that speaks only TLS 1.1, and one
	// whose certificate names hs.example.com only.
	unknown := startHTTPS(t, newCA(t), e.hs, "chat.example.com")
	e.s.ports[unknown] = "{UNKNOWN}"
	old := startTLS(t, &tls.Config{
		Certificates: []tls.Certificate{e.s.ca.leaf(t, "chat.example.com")},
		MinVersion:   tls.VersionTLS10,
		MaxVersion:   tls.VersionTLS11,
	}, e.hs)
	e.s.ports[old] = "{OLD}"
	wrongName := e.s.serve("WRONG", "", 0, e.hs, "hs.example.com")
	e.s.rr(fmt.Sprintf("_matrix-fed._tcp.chat.example.com. 300 IN SRV 0 0 %d hs.example.com.", e.hsPort),
		fmt.Sprintf("_matrix-fed._tcp.chat.example.com. 300 IN SRV 1 0 %d hs.example.com.", unknown),
		fmt.Sprintf("_matrix-fed._tcp.chat.example.com. 300 IN SRV 2 0 %d hs.example.com.", old),
		fmt.Sprintf("_matrix-fed._tcp.chat.example.com. 300 IN SRV 3 0 %d wrong.example.com.", wrongName),
		"wrong.example.com. 300 IN A 127.0.0.1")
	r := e.s.run("chat.example.com")
	text := e.s.text(r)
	hasLines(t, text,
		`ok    connect    IPv4 127.0.0.1:{HS} (hs.example.com, Host chat.example.com): TLS 1.3, certificate for chat.example.com valid until 2030-04-02, issued by Probe Test CA`,
		`fail  connect    IPv4 127.0.0.1:{UNKNOWN} (hs.example.com, Host chat.example.com): the certificate is not signed by a trusted authority (self-signed, or the intermediate certificate is missing)  Fix: serve the full chain from a public CA (e.g. Let's Encrypt), intermediates included`,
		`skip  connect    IPv4 127.0.0.1:{UNKNOWN} (hs.example.com, Host chat.example.com): federation requests skipped: remote servers stop at the certificate`,
		`fail  connect    IPv4 127.0.0.1:{OLD} (hs.example.com, Host chat.example.com): negotiated TLS 1.1; remote servers require TLS 1.2 or newer  Fix: enable TLS 1.2 and 1.3 on the homeserver or its reverse proxy`,
		`fail  connect    IPv4 127.0.0.1:{WRONG} (wrong.example.com, Host chat.example.com): the certificate does not cover chat.example.com (it names hs.example.com)  Fix: serve a certificate whose names include chat.example.com`,
	)
	if !r.Failed() {
		t.Error("Failed() = false, want true")
	}
}

// TestFallbackRehearsal: the well-known works, but the SRV fallback's
// target does not present a certificate for the server name.
func TestFallbackRehearsal(t *testing.T) {
	e := newEnv(t)
	e.wellKnown(wkServer(e.hp("hs.example.com")))
	only := e.s.serve("HSONLY", "", 0, e.hs, "hs.example.com")
	e.s.rr(fmt.Sprintf("_matrix-fed._tcp.chat.example.com. 300 IN SRV 0 0 %d hs.example.com.", only))
	r := e.s.run("chat.example.com")
	text := e.s.text(r)
	hasLines(t, text,
		`info  fallback   asked SRV _matrix-fed._tcp.chat.example.com.: NOERROR, SRV 0 0 {HSONLY} hs.example.com.`,
		`warn  fallback   IPv4 127.0.0.1:{HSONLY} (hs.example.com, Host chat.example.com): the fallback will fail when the well-known endpoint is down: the certificate does not cover chat.example.com (it names hs.example.com)  Fix: serve a certificate whose names include chat.example.com`,
	)
	if r.Failed() {
		t.Errorf("Failed() = true, want false: a broken fallback is a warning while the well-known works\n%s", text)
	}
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "ok    fallback") {
			t.Errorf("unexpected line %q: the fallback does not work", l)
		}
	}
}

// TestWellKnownHygiene covers Content-Type, cache time, split-brain, and
// IPv4/IPv6 targets connected separately.
func TestWellKnownHygiene(t *testing.T) {
	e := newEnv(t)
	hp := e.hp("hs.example.com")
	e.s.serve("WK", "::1", 443, &site{routes: map[string]route{
		"/.well-known/matrix/server": {body: fmt.Sprintf(`{"m.server": %q}`, hp), header: map[string]string{"Content-Type": "text/plain", "Cache-Control": "max-age=60"}},
		"/.well-known/matrix/client": e.clientDoc(),
	}}, "chat.example.com")
	// The IPv4 address of chat.example.com serves a stale delegation; the
	// probe, like getaddrinfo, prefers IPv6 and sees the good one first.
	e.s.serve("WK4", "127.0.0.1", 443, &site{routes: map[string]route{
		"/.well-known/matrix/server": wkServer("old.example.com:443"),
	}}, "chat.example.com")
	e.s.rr("chat.example.com. 300 IN AAAA ::1", "hs.example.com. 300 IN AAAA ::1")
	e.s.mapAddr("tcp", "::1", e.hsPort, e.hsPort)
	r := e.s.run("chat.example.com")
	text := e.s.text(r)
	hasLines(t, text,
		`warn  wellknown  Content-Type is "text/plain", not application/json; servers parse it anyway, but proxies and browsers may not  Fix: serve it with Content-Type: application/json`,
		`warn  wellknown  Synapse caches this answer for 5m0s (Cache-Control: max-age=60, raised to Synapse's minimum)  Fix: send Cache-Control: max-age between 300 and 172800 seconds`,
		`fail  wellknown  split-brain: the addresses of chat.example.com disagree: ::1 gives 200 {"m.server": "hs.example.com:{HS}"}; 127.0.0.1 gives 200 {"m.server": "old.example.com:443"}  Fix: serve the same /.well-known/matrix/server from every A and AAAA address, or remove the records of hosts that do not serve it`,
		`ok    connect    IPv6 [::1]:{HS} (hs.example.com, Host hs.example.com:{HS}): federation API answers: FakeHS 1.0`,
		`ok    connect    IPv4 127.0.0.1:{HS} (hs.example.com, Host hs.example.com:{HS}): federation API answers: FakeHS 1.0`,
	)
	got := targetLines(e.s, r.Targets)
	want := []string{`3.2 (delegated name with port) | hs.example.com port {HS} | Host hs.example.com:{HS} | cert hs.example.com | SNI "hs.example.com" | ::1,127.0.0.1`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("targets: got %q, want %q", got, want)
	}
}

// TestClientDiscovery covers the outcomes of matrix-js-sdk's
// AutoDiscovery.findClientConfig.
func TestClientDiscovery(t *testing.T) {
	tests := []struct {
		name     string
		client   *route // nil: 404
		noCORS   bool
		versions []string
		outcome  string
		reason   string
		identity string
		lines    []string
	}{
		{name: "success", client: &route{body: `{"m.homeserver":{"base_url":"https://hs.example.com:{HS}"}}`}, outcome: OutcomeSuccess, identity: "PROMPT"},
		{name: "ignore-404", outcome: OutcomeIgnore, reason: reasonMissingWellKnown, identity: "PROMPT",
			lines: []string{
				`warn  client     client discovery: IGNORE (No .well-known JSON file found)  Fix: serve {"m.homeserver": {"base_url": "https://matrix.example.com"}} at /.well-known/matrix/client so clients find the homeserver from the user ID`,
				`ok    client     CORS: https://chat.example.com/.well-known/matrix/client answers 404 with Access-Control-Allow-Origin: *`,
			}},
		{name: "fail-prompt-500", client: &route{status: 500, body: `{}`}, outcome: OutcomeFailPrompt, reason: reasonGeneric, identity: "PROMPT"},
		{name: "fail-prompt-bad-json", client: &route{body: `{"m.homeserver": `}, outcome: OutcomeFailPrompt, reason: reasonInvalidJSON, identity: "PROMPT"},
		{name: "fail-prompt-empty-body", client: &route{body: ``, header: map[string]string{"Content-Type": "application/json"}}, outcome: OutcomeFailPrompt, reason: reasonInvalidJSON, identity: "PROMPT"},
		{name: "fail-prompt-no-homeserver", client: &route{body: `{"m.identity_server":{"base_url":"https://id.example.com"}}`}, outcome: OutcomeFailPrompt, reason: reasonInvalid, identity: "PROMPT"},
		{name: "fail-prompt-no-base-url", client: &route{body: `{"m.homeserver":{"url":"https://hs.example.com"}}`}, outcome: OutcomeFailPrompt, reason: reasonInvalidHsBaseURL, identity: "PROMPT"},
		{name: "fail-error-scheme", client: &route{body: `{"m.homeserver":{"base_url":"ftp://hs.example.com"}}`}, outcome: OutcomeFailError, reason: reasonInvalidHsBaseURL, identity: "PROMPT"},
		{name: "fail-error-not-url", client: &route{body: `{"m.homeserver":{"base_url":"hs.example.com"}}`}, outcome: OutcomeFailError, reason: reasonInvalidHsBaseURL, identity: "PROMPT"},
		{name: "fail-error-versions-404", client: &route{body: `{"m.homeserver":{"base_url":"https://chat.example.com"}}`}, outcome: OutcomeFailError, reason: reasonInvalidHomeserver, identity: "PROMPT"},
		{name: "fail-error-unsupported-version", client: &route{body: `{"m.homeserver":{"base_url":"https://hs.example.com:{HS}"}}`}, versions: []string{"r0.6.1", "v1.99"},
			outcome: OutcomeFailError, reason: reasonUnsupportedVersion, identity: "PROMPT"},
		{name: "base-url-warnings", client: &route{body: `{"m.homeserver":{"base_url":"https://hs.example.com:{HS}/"}}`}, outcome: OutcomeSuccess, identity: "PROMPT",
			lines: []string{`warn  client     base_url "https://hs.example.com:{HS}/" ends in a slash: Element strips it, but some clients build URLs like //_matrix/… that fail  Fix: remove the trailing slash from base_url`}},
		{name: "base-url-path", client: &route{body: `{"m.homeserver":{"base_url":"https://hs.example.com:{HS}/matrix"}}`}, outcome: OutcomeFailError, reason: reasonInvalidHomeserver, identity: "PROMPT",
			lines: []string{`warn  client     base_url "https://hs.example.com:{HS}/matrix" has a path (/matrix): Element supports it, some clients and bridges do not  Fix: serve the client API at the root of a hostname if you can`}},
		{name: "identity-server-success", client: &route{body: `{"m.homeserver":{"base_url":"https://hs.example.com:{HS}"},"m.identity_server":{"base_url":"https://hs.example.com:{HS}"}}`},
			outcome: OutcomeSuccess, identity: OutcomeSuccess},
		{name: "identity-server-broken", client: &route{body: `{"m.homeserver":{"base_url":"https://hs.example.com:{HS}"},"m.identity_server":{"base_url":"https://chat.example.com/id"}}`},
			outcome: OutcomeSuccess, identity: OutcomeFailPrompt,
			lines: []string{`fail  client     m.identity_server: FAIL_PROMPT (Identity server URL does not appear to be a valid identity server): GET https://chat.example.com/id/_matrix/identity/v2: status 404  Fix: point m.identity_server.base_url at a working identity server, or remove it`}},
		{name: "no-cors", client: &route{body: `{"m.homeserver":{"base_url":"https://hs.example.com:{HS}"}}`}, noCORS: true, outcome: OutcomeSuccess, identity: "PROMPT",
			lines: []string{
				`fail  client     CORS: https://chat.example.com/.well-known/matrix/client answers 200 with no Access-Control-Allow-Origin: web clients cannot read it  Fix: send Access-Control-Allow-Origin: * on every response under /.well-known/matrix/ and /_matrix/`,
				`warn  client     CORS: OPTIONS https://chat.example.com/.well-known/matrix/client answers 200, Access-Control-Allow-Origin "", Access-Control-Allow-Methods ""  Fix: answer OPTIONS with 200 or 204, Access-Control-Allow-Origin: * and Access-Control-Allow-Methods including GET`,
				`warn  client     CORS: https://chat.example.com/.well-known/matrix/support answers 404 with no Access-Control-Allow-Origin: web clients cannot read it  Fix: send Access-Control-Allow-Origin: * on every response under /.well-known/matrix/ and /_matrix/`,
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.versions != nil {
				e.hs.versions = tc.versions
			}
			routes := map[string]route{"/.well-known/matrix/server": wkServer(e.hp("hs.example.com"))}
			if tc.client != nil {
				c := *tc.client
				c.body = strings.ReplaceAll(c.body, "{HS}", fmt.Sprint(e.hsPort))
				routes["/.well-known/matrix/client"] = c
			}
			e.s.serve("WK", "127.0.0.1", 443, &site{routes: routes, noCORS: tc.noCORS}, "chat.example.com")
			r := e.s.run("chat.example.com")
			text := e.s.text(r)
			if r.Client.Outcome != tc.outcome || r.Client.Reason != tc.reason || r.Client.IdentityOutcome != tc.identity {
				t.Errorf("client = %+v, want outcome %s reason %q identity %s\n%s", r.Client, tc.outcome, tc.reason, tc.identity, text)
			}
			want := fmt.Sprintf("client discovery: %s", tc.outcome)
			if tc.reason != "" {
				want += " (" + tc.reason + ")"
			}
			found := false
			for _, c := range r.Checks {
				found = found || (c.Section == SectionClient && strings.HasPrefix(c.Message, want))
			}
			if !found {
				t.Errorf("no client check starting %q\n%s", want, text)
			}
			hasLines(t, text, tc.lines...)
			wantFail := tc.outcome == OutcomeFailPrompt || tc.outcome == OutcomeFailError || tc.identity == OutcomeFailPrompt || tc.noCORS
			if r.Failed() != wantFail {
				t.Errorf("Failed() = %v, want %v\n%s", r.Failed(), wantFail, text)
			}
		})
	}
}

func TestSupportDocument(t *testing.T) {
	e := newEnv(t)
	e.s.serve("WK", "127.0.0.1", 443, &site{routes: map[string]route{
		"/.well-known/matrix/server":  wkServer(e.hp("hs.example.com")),
		"/.well-known/matrix/client":  e.clientDoc(),
		"/.well-known/matrix/support": {body: `{"contacts":[{"matrix_id":"admin","role":"m.role.admin"}]}`},
	}}, "chat.example.com")
	r := e.s.run("chat.example.com")
	hasLines(t, e.s.text(r),
		`fail  client     support document: contacts[0].matrix_id "admin" is not a user ID like @admin:example.com  Fix: follow the schema: {"contacts": [{"matrix_id": "@admin:example.com", "email_address": "admin@example.com", "role": "m.role.admin"}], "support_page": "https://example.com/help"}`)
}

// TestNameservers: two nameservers with different serials, one of them also
// lame for NS; and the private-address warning without AllowLocal.
func TestNameservers(t *testing.T) {
	e := newEnv(t)
	e.wellKnown(wkServer(e.hp("hs.example.com")))
	e.s.rr("example.com. 300 IN NS ns2.example.com.", "ns2.example.com. 300 IN A 127.0.0.2")
	// ns2 serves an older copy of the zone.
	second := startDNS(t, []string{
		"example.com. 300 IN SOA ns1.example.com. hostmaster.example.com. 6 7200 3600 1209600 300",
		"example.com. 300 IN NS ns1.example.com.",
	}, nil)
	port := second.addr[strings.LastIndexByte(second.addr, ':')+1:]
	var p int
	fmt.Sscan(port, &p)
	e.s.ports[p] = "{NS2}"
	e.s.mapAddr("udp", "127.0.0.2", 53, p)
	e.s.mapAddr("tcp", "127.0.0.2", 53, p)
	r := e.s.run("chat.example.com", func(o *Options) { o.AllowLocal = false })
	text := e.s.text(r)
	hasLines(t, text,
		`info  dns        nameserver ns1.example.com. (127.0.0.1): SOA serial 7, authoritative`,
		`info  dns        nameserver ns2.example.com. (127.0.0.2): SOA serial 6, authoritative`,
		`warn  dns        zone example.com.: nameservers disagree: serial 6 at nameserver ns2.example.com. (127.0.0.2); serial 7 at nameserver ns1.example.com. (127.0.0.1)  Fix: check zone transfers (NOTIFY/IXFR) from the primary to every secondary`,
		`warn  dns        zone example.com.: nameserver ns2.example.com. (127.0.0.2) list NS "ns1.example.com.", the resolver sees "ns1.example.com. ns2.example.com."  Fix: make the NS records in the zone match the delegation`,
		`warn  dns        chat.example.com has loopback address 127.0.0.1: homeservers on the internet cannot reach it  Fix: publish the host's public address instead, unless this setup is only for a private network`,
	)
	if r.Failed() {
		t.Errorf("Failed() = true; loopback warnings and serial drift must not fail\n%s", text)
	}
}

func TestLameNameserver(t *testing.T) {
	e := newEnv(t)
	e.wellKnown(wkServer(e.hp("hs.example.com")))
	e.s.rr("example.com. 300 IN NS ns2.example.com.", "ns2.example.com. 300 IN A 127.0.0.2")
	lame := startDNS(t, nil, map[string]int{"example.com. SOA": dns.RcodeRefused})
	var p int
	fmt.Sscan(lame.addr[strings.LastIndexByte(lame.addr, ':')+1:], &p)
	e.s.mapAddr("udp", "127.0.0.2", 53, p)
	e.s.mapAddr("tcp", "127.0.0.2", 53, p)
	r := e.s.run("chat.example.com")
	hasLines(t, e.s.text(r),
		`fail  dns        nameserver ns2.example.com. (127.0.0.2): SOA example.com.: REFUSED, authoritative=false: a lame delegation  Fix: configure ns2.example.com. to serve the zone example.com., or remove it from the NS records`)
	if !r.Failed() {
		t.Error("Failed() = false, want true")
	}
}

// TestReportJSON checks that -json carries the same checks as the text.
func TestReportJSON(t *testing.T) {
	e := newEnv(t)
	e.wellKnown(wkServer(e.hp("hs.example.com")))
	r := e.s.run("chat.example.com")
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var got struct {
		ServerName string   `json:"server_name"`
		Targets    []Target `json:"targets"`
		Client     ClientResult
		Checks     []Check `json:"checks"`
		Summary    struct{ OK, Warn, Fail int }
		Failed     bool `json:"failed"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if got.ServerName != "chat.example.com" || got.Failed != r.Failed() || len(got.Checks) != len(r.Checks) ||
		got.Summary.OK != r.Count(StatusOK) || got.Summary.Warn != r.Count(StatusWarn) || got.Summary.Fail != r.Count(StatusFail) ||
		got.Client != r.Client || len(got.Targets) != 1 || got.Targets[0].Addrs[0] != r.Targets[0].Addrs[0] {
		t.Fatalf("JSON does not match the report:\n%s", buf.String())
	}
	for i := range got.Checks {
		if got.Checks[i] != r.Checks[i] {
			t.Errorf("check %d: JSON %+v, report %+v", i, got.Checks[i], r.Checks[i])
		}
	}
	// Lines with a fix carry it in the JSON too, and HTML is not escaped.
	if !strings.Contains(buf.String(), `"fix": "add a second nameserver on another network; RFC 2182 asks for at least two"`) ||
		strings.Contains(buf.String(), `\u003e`) {
		t.Errorf("unexpected JSON encoding:\n%s", buf.String())
	}
}

// TestWellKnownEdgeCases: a body over Synapse's 50 KiB limit, and a
// redirect that downgrades to plain http.
func TestWellKnownEdgeCases(t *testing.T) {
	t.Run("too-large", func(t *testing.T) {
		e := newEnv(t)
		e.wellKnown(route{body: `{"m.server": "hs.example.com:443", "pad": "` + strings.Repeat("x", 60*1024) + `"}`})
		e.on8448("127.0.0.1")
		r := e.s.run("chat.example.com")
		hasLines(t, e.s.text(r),
			`fail  resolve    step 3: GET https://chat.example.com/.well-known/matrix/server: the body is larger than 51200 bytes; Synapse gives up reading it; remote servers go on to step 4  Fix: serve only {"m.server": "host:port"}`)
		if got := targetLines(e.s, r.Targets); strings.Join(got, "\n") != strings.Join(fallback8448, "\n") {
			t.Errorf("targets: got %q, want %q", got, fallback8448)
		}
	})
	t.Run("redirect-to-http", func(t *testing.T) {
		e := newEnv(t)
		e.s.serve("WK", "127.0.0.1", 443, &site{routes: map[string]route{
			"/.well-known/matrix/server": {status: 302, header: map[string]string{"Location": "http://chat.example.com/.well-known/matrix/server"}},
			"/.well-known/matrix/client": e.clientDoc(),
		}}, "chat.example.com")
		plain := startPlain(t, &site{routes: map[string]route{"/.well-known/matrix/server": wkServer(e.hp("hs.example.com"))}})
		e.s.mapAddr("tcp", "127.0.0.1", 80, plain)
		r := e.s.run("chat.example.com")
		hasLines(t, e.s.text(r),
			`warn  resolve    GET https://chat.example.com/.well-known/matrix/server redirected to plain http: 302 -> http://chat.example.com/.well-known/matrix/server; anyone on the path can change the delegation  Fix: redirect only to https:// URLs`,
			`ok    resolve    step 3: the well-known endpoint delegates to "hs.example.com:{HS}"`)
	})
}
