package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
	"github.com/miekg/dns"
)

// TestFederation builds the world, then walks through the scenarios of
// issue 12 in order, each a subtest: the world changes between them
// (signpost's HTTPS goes away, then signpost itself), so they share it.
func TestFederation(t *testing.T) {
	w := newWorld(t)
	start := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }

	w.startRoot()
	w.startResolver()
	w.startPebble()
	w.startSecondary()
	sp := w.startSignpost(signpostIP + ":443")
	w.eventually("the secondary serving chat.example.test", nil, func() error { return soa(secondaryIP, serverName) })
	w.eventually("signpost's well-known with a certificate from Pebble", sp, func() error {
		_, err := w.wellKnown()
		return err
	})
	step("DNS, Pebble and signpost up")

	// The homeserver for chat.example.test gets its certificate for both
	// names by DNS-01 through signpost (RFC 2136); the other one by HTTP-01.
	hsCert, hsKeyFile := w.obtain("hs", []string{hsName, serverName}, map[string]acmez.Solver{acme.ChallengeTypeDNS01: nsupdateSolver{w}})
	otherCert, otherKeyFile := w.obtainHTTP01("other", otherName, otherIP)
	step("homeserver certificates issued")

	hs := w.newHomeserver(serverName, hsName, hsIP, hsCert, hsKeyFile)
	other := w.newHomeserver(otherName, otherName, otherIP, otherCert, otherKeyFile)
	w.startHomeserver(hs)
	w.startHomeserver(other)
	alice := w.register(hs, "alice")
	bob := w.register(other, "bob")
	room := alice.createRoom()
	step("homeservers up, room " + room + " created on " + serverName)

	// cross sends a message each way and waits until the other side has it.
	cross := func(t *testing.T, label string) {
		t.Helper()
		toOther := fmt.Sprintf("%s: from %s to %s", label, serverName, otherName)
		alice.send(room, toOther)
		w.eventually("bob seeing "+toOther, nil, func() error { return bob.sees(room, alice.id, toOther) })
		toHS := fmt.Sprintf("%s: from %s to %s", label, otherName, serverName)
		bob.send(room, toHS)
		w.eventually("alice seeing "+toHS, nil, func() error { return alice.sees(room, bob.id, toHS) })
	}
	// lookupsSince returns the distinct questions about chat.example.test
	// names the resolver had after mark, sorted. The test's own requests to
	// the homeservers skip DNS, so these are the homeservers' lookups (A
	// and AAAA come in either order, and again for a new connection).
	lookupsSince := func(mark int) []string {
		var out []string
		for _, q := range w.resolverQueries()[mark:] {
			if strings.Contains(q, serverName+". ") {
				out = append(out, q)
			}
		}
		slices.Sort(out)
		return slices.Compact(out)
	}

	t.Run("1-well-known", func(t *testing.T) {
		w.t = t
		mark := len(w.resolverQueries())
		w.eventually("bob joining the room through "+serverName, nil, func() error { return bob.join(room, serverName) })
		cross(t, "scenario 1")
		// other.test found hs.chat.example.test:8448 from the well-known
		// document: it asked for the address of chat.example.test (to
		// fetch it) and of hs.chat.example.test, never for the SRV record.
		want := []string{"chat.example.test. A", "chat.example.test. AAAA", "hs.chat.example.test. A", "hs.chat.example.test. AAAA"}
		if got := lookupsSince(mark); !slices.Equal(got, want) {
			t.Errorf("lookups while joining and sending: %q, want %q", got, want)
		}
		step("scenario 1 done")
	})

	t.Run("4-client-discovery", func(t *testing.T) {
		w.t = t
		w.clientDiscovery(t)
		step("scenario 4 done")
	})

	t.Run("5-probe", func(t *testing.T) {
		w.t = t
		lines := w.probe(t, 0,
			`ok    resolve    step 3: the well-known endpoint delegates to "hs.chat.example.test:8448"`,
			"ok    fallback   the SRV fallback _matrix-fed._tcp.chat.example.test. works",
			"ok    client     client discovery: SUCCESS, homeserver https://hs.chat.example.test:8448",
		)
		for _, line := range lines {
			if strings.HasPrefix(line, "warn") || strings.HasPrefix(line, "fail") {
				t.Errorf("probe reports: %s", line)
			}
		}
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "PASS: ") || !strings.HasSuffix(last, " ok, 0 warn, 0 fail; client discovery SUCCESS") {
			t.Errorf("summary %q, want PASS with no warn and no fail", last)
		}
		step("scenario 5 done")
	})

	t.Run("2-srv-when-https-is-down", func(t *testing.T) {
		w.t = t
		// signpost restarted with its HTTPS listener away from port 443:
		// DNS is served as before, the well-known is unreachable.
		w.stop("signpost")
		sp := w.startSignpost(signpostIP + ":8443")
		w.eventually("signpost answering DNS again", sp, func() error { return soa(signpostIP, serverName) })
		if _, err := w.wellKnown(); !isRefused(err) {
			t.Fatalf("well-known fetch: %v, want connection refused", err)
		}
		w.stop(other.label())
		mark := len(w.resolverQueries())
		w.startHomeserver(other)
		cross(t, "scenario 2")
		// The well-known fetch (address of chat.example.test) failed, so
		// other.test asked for the SRV record and the address of its target.
		want := []string{"_matrix-fed._tcp.chat.example.test. SRV", "chat.example.test. A", "chat.example.test. AAAA", "hs.chat.example.test. A", "hs.chat.example.test. AAAA"}
		if got := lookupsSince(mark); !slices.Equal(got, want) {
			t.Errorf("lookups after other.test restarted: %q, want %q", got, want)
		}
		step("scenario 2 done")
	})

	t.Run("3-secondary-when-signpost-is-down", func(t *testing.T) {
		w.t = t
		w.stop("signpost")
		if _, err := ask(signpostIP, serverName, dns.TypeSOA); err == nil {
			t.Fatal("signpost still answers DNS after it was stopped")
		}
		// A fresh resolver has nothing cached: what it finds now comes
		// from the secondary.
		w.stop("unbound")
		w.startResolver()
		// The resolver tries ns1 first and waits for it to time out, so
		// the first questions may time out too, as on the internet.
		want := "_matrix-fed._tcp.chat.example.test.\t0\tIN\tSRV\t10 0 8448 hs.chat.example.test."
		w.eventually("the resolver answering the SRV from the secondary", nil, func() error {
			r, err := ask(resolverIP, "_matrix-fed._tcp."+serverName, dns.TypeSRV)
			if err != nil {
				return err
			}
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].String() != want {
				t.Fatalf("the resolver answers the SRV with\n%s\nwant %s", r, want)
			}
			return nil
		})
		w.stop(other.label())
		w.startHomeserver(other)
		cross(t, "scenario 3")
		step("scenario 3 done")
	})

	t.Run("5-probe-after-stop", func(t *testing.T) {
		w.t = t
		// The probe sees the well-known fail, follows the SRV fallback to
		// the homeserver, names the nameserver that is down and finds the
		// other one serving the zone.
		lines := w.probe(t, 1,
			"warn  resolve    step 3: GET https://chat.example.test/.well-known/matrix/server: dial tcp 127.0.0.3:443: connect: connection refused;",
			"ok    resolve    step 4: SRV _matrix-fed._tcp.chat.example.test. gives 1 target(s);",
			"ok    connect    IPv4 127.0.0.5:8448 (hs.chat.example.test, Host chat.example.test): TLS 1.3, certificate for chat.example.test valid until",
			"ok    connect    IPv4 127.0.0.5:8448 (hs.chat.example.test, Host chat.example.test): federation API answers: Dendrite 0.13.8",
			"fail  dns        nameserver ns1.chat.example.test. (127.0.0.3): SOA chat.example.test.: no answer",
			"info  dns        nameserver ns2.chat.example.test. (127.0.0.4): SOA serial",
			"fail  client     client discovery: FAIL_PROMPT",
		)
		if last, want := lines[len(lines)-1], "FAIL: 9 ok, 2 warn, 2 fail; client discovery FAIL_PROMPT"; last != want {
			t.Errorf("summary %q, want %q", last, want)
		}
	})
}

// probe runs `signpost probe chat.example.test` through the world's
// resolver, trusting only Pebble's root, logs its report, checks its exit
// code and that a line starts with each of prefixes, and returns the
// report's lines.
func (w *world) probe(t *testing.T, wantCode int, prefixes ...string) []string {
	t.Helper()
	cmd := exec.Command(filepath.Join(w.bin, "signpost"), "probe", serverName, "-resolver", resolverIP+":53", "-ca-file", w.root)
	out, err := cmd.CombinedOutput()
	if _, exit := err.(*exec.ExitError); err != nil && !exit {
		t.Fatalf("probe: %v", err)
	}
	t.Logf("signpost probe %s:\n%s", serverName, out)
	if code := cmd.ProcessState.ExitCode(); code != wantCode {
		t.Errorf("probe exit code %d, want %d", code, wantCode)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for _, want := range prefixes {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, want) }) {
			t.Errorf("no line starting %q", want)
		}
	}
	return lines
}

// clientDiscovery runs matrix-js-sdk's AutoDiscovery against
// chat.example.test in Node, trusting only Pebble's root.
func (w *world) clientDiscovery(t *testing.T) {
	t.Helper()
	js := os.Getenv(envJS)
	if strings.HasPrefix(js, "missing: ") {
		skip(t, "matrix-js-sdk "+js)
	}
	script, err := os.ReadFile("js/discover.mjs")
	if err != nil {
		t.Fatal(err)
	}
	// Node resolves the import from the script's directory.
	path := filepath.Join(js, "discover.mjs")
	if err := os.WriteFile(path, script, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", path, serverName)
	cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+w.root)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node discover.mjs: %v\n%s", err, out)
	}
	var got struct {
		Homeserver struct {
			State   string `json:"state"`
			BaseURL string `json:"base_url"`
			Error   string `json:"error"`
		} `json:"homeserver"`
		Versions *struct {
			Status int `json:"status"`
			Body   struct {
				Versions []string `json:"versions"`
			} `json:"body"`
		} `json:"versions"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("node printed %q: %v", out, err)
	}
	if got.Homeserver.State != "SUCCESS" || got.Homeserver.BaseURL != "https://"+hsName+":8448" {
		t.Fatalf("findClientConfig: state %q base_url %q error %q, want SUCCESS and %q",
			got.Homeserver.State, got.Homeserver.BaseURL, got.Homeserver.Error, "https://"+hsName+":8448")
	}
	if got.Versions == nil || got.Versions.Status != 200 || !slices.Contains(got.Versions.Body.Versions, "v1.1") {
		t.Fatalf("/versions from %s: %s, want status 200 listing v1.1", got.Homeserver.BaseURL, out)
	}
}
