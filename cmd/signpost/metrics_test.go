package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/signpost-dev/signpost/internal/promtest"
)

// metricsTOML is the local example with the metrics listener on a free
// port, and a key that may UPDATE the homeserver's _acme-challenge name.
func metricsTOML(t *testing.T) string {
	if !strings.Contains(readExample(t, "local.toml"), "[metrics]\nlisten = \"127.0.0.1:9153\"\n") {
		t.Fatal("local.toml does not turn the metrics listener on at 127.0.0.1:9153")
	}
	return loopback(readExample(t, "local.toml")) + `
[[key]]
name      = "hs.chat.example.test"
algorithm = "hmac-sha512"
secret    = "aG9tZXNlcnZlciBleGFtcGxlIGtleSwgbm90IHNlY3JldA=="

[[update]]
key   = "hs.chat.example.test"
names = ["hs.chat.example.test"]
`
}

// scrape fetches path from the metrics listener.
func (in *instance) scrape(path string) (int, string) {
	in.t.Helper()
	resp, err := http.Get("http://" + in.addrs.Metrics + path)
	if err != nil {
		in.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// metrics scrapes /metrics and parses it as Prometheus does.
func (in *instance) metrics() map[string]float64 {
	in.t.Helper()
	code, body := in.scrape("/metrics")
	if code != http.StatusOK {
		in.t.Fatalf("/metrics: %d\n%s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		in.t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	var list []*dto.MetricFamily
	for _, mf := range mfs {
		list = append(list, mf)
	}
	return promtest.Flatten(list)
}

// TestServeMetrics runs signpost serve, makes known traffic (DNS queries of
// several types over UDP and TCP, well-known requests with a 404, UPDATEs,
// a reload and a rejected one) and checks the counters in a scrape of
// /metrics, as Prometheus would read them.
func TestServeMetrics(t *testing.T) {
	text := metricsTOML(t)
	in := startServe(t, text, nil)
	if in.addrs.Metrics == "" {
		t.Fatal("no metrics listener")
	}
	if code, body := in.scrape("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q, want 200 \"ok\\n\"", code, body)
	}
	if code, body := in.scrape("/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz: %d %q, want 200 \"ready\\n\"", code, body)
	}

	in.query("udp", "chat.example.test.", dns.TypeA)
	in.query("udp", "chat.example.test.", dns.TypeA)
	in.query("udp", "hs.chat.example.test.", dns.TypeAAAA)              // NODATA
	in.query("udp", "nope.chat.example.test.", dns.TypeA)               // NXDOMAIN
	in.query("udp", "_matrix-fed._tcp.chat.example.test.", dns.TypeSRV) // SRV fallback
	in.query("udp", "example.org.", dns.TypeMX)                         // not ours
	in.query("tcp", "chat.example.test.", dns.TypeSOA)
	in.get("chat.example.test", "/.well-known/matrix/server")
	in.get("chat.example.test", "/.well-known/matrix/client")
	in.get("chat.example.test", "/.well-known/matrix/nope")

	update := func(signed bool) int {
		m := new(dns.Msg)
		m.SetUpdate("chat.example.test.")
		rr, _ := dns.NewRR(`_acme-challenge.hs.chat.example.test. 60 IN TXT "token"`)
		m.Insert([]dns.RR{rr})
		c := &dns.Client{Timeout: 5 * time.Second}
		if signed {
			m.SetTsig("hs.chat.example.test.", dns.HmacSHA512, 300, time.Now().Unix())
			c.TsigSecret = map[string]string{"hs.chat.example.test.": "aG9tZXNlcnZlciBleGFtcGxlIGtleSwgbm90IHNlY3JldA=="}
		}
		r, _, err := c.Exchange(m, in.addrs.DNS[0])
		if err != nil {
			t.Fatalf("UPDATE: %v", err)
		}
		return r.Rcode
	}
	if rc := update(true); rc != dns.RcodeSuccess {
		t.Errorf("signed UPDATE: %s, want NOERROR", dns.RcodeToString[rc])
	}
	if rc := update(false); rc != dns.RcodeNotAuth {
		t.Errorf("unsigned UPDATE: %s, want NOTAUTH", dns.RcodeToString[rc])
	}

	hup := func() { in.hup <- syscall.SIGHUP }
	in.write(strings.Replace(text, "hs 300 IN A 127.0.0.1", "hs 300 IN A 127.0.0.2", 1))
	if err := in.reload(hup); err != nil {
		t.Fatalf("reload: %v", err)
	}
	before := time.Now()
	in.write(strings.Replace(text, `server      = "hs.chat.example.test:8448"`, `server      = "hs.chat.example.test"`, 1))
	if err := in.reload(hup); err == nil {
		t.Fatal("reload of a broken file succeeded")
	}
	soa := in.query("udp", "chat.example.test.", dns.TypeSOA).Answer[0].(*dns.SOA)

	vs := in.metrics()
	zone := `zone="chat.example.test."`
	want := []string{
		`signpost_dns_queries_total{qtype="A",transport="udp",` + zone + `} 3`,
		`signpost_dns_queries_total{qtype="AAAA",transport="udp",` + zone + `} 1`,
		`signpost_dns_queries_total{qtype="MX",transport="udp",zone="none"} 1`,
		`signpost_dns_queries_total{qtype="SOA",transport="tcp",` + zone + `} 1`,
		`signpost_dns_queries_total{qtype="SOA",transport="udp",` + zone + `} 3`, // two UPDATEs (zone section) and a query
		`signpost_dns_queries_total{qtype="SRV",transport="udp",` + zone + `} 1`,
	}
	if got := promtest.Pick(vs, "signpost_dns_queries_total"); !slices.Equal(got, want) {
		t.Errorf("DNS queries:\ngot  %q\nwant %q", got, want)
	}
	want = []string{
		`signpost_dns_responses_total{rcode="NOERROR",transport="tcp",` + zone + `} 1`,
		`signpost_dns_responses_total{rcode="NOERROR",transport="udp",` + zone + `} 6`,
		`signpost_dns_responses_total{rcode="NOTAUTH",transport="udp",` + zone + `} 1`,
		`signpost_dns_responses_total{rcode="NXDOMAIN",transport="udp",` + zone + `} 1`,
		`signpost_dns_responses_total{rcode="REFUSED",transport="udp",zone="none"} 1`,
	}
	if got := promtest.Pick(vs, "signpost_dns_responses_total"); !slices.Equal(got, want) {
		t.Errorf("DNS responses:\ngot  %q\nwant %q", got, want)
	}
	want = []string{
		`signpost_http_requests_total{document="client",server_name="chat.example.test",status="200"} 1`,
		`signpost_http_requests_total{document="other",server_name="chat.example.test",status="404"} 1`,
		`signpost_http_requests_total{document="server",server_name="chat.example.test",status="200"} 1`,
	}
	if got := promtest.Pick(vs, "signpost_http_requests_total"); !slices.Equal(got, want) {
		t.Errorf("HTTP requests:\ngot  %q\nwant %q", got, want)
	}
	for series, v := range map[string]float64{
		`signpost_dns_updates_total{result="accepted"}`:                             1,
		`signpost_dns_updates_total{result="refused"}`:                              1,
		`signpost_dns_zone_serial{` + zone + `}`:                                    float64(soa.Serial),
		`signpost_dns_response_size_bytes_count{transport="udp"}`:                   9,
		`signpost_dns_response_size_bytes_count{transport="tcp"}`:                   1,
		`signpost_http_tls_handshakes_total`:                                        3,
		`signpost_config_reloads_total{result="success"}`:                           1,
		`signpost_config_reloads_total{result="failure"}`:                           1,
		`signpost_config_last_reload_successful`:                                    0,
		`signpost_build_info{goversion="` + runtimeVersion() + `",version="devel"}`: 1,
		`signpost_listener_info{address="` + in.addrs.Metrics + `",kind="metrics"}`: 1,
		`signpost_listener_info{address="` + in.addrs.DNS[0] + `",kind="dns"}`:      1,
	} {
		if got, ok := vs[series]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, v)
		}
	}
	if ts := vs["signpost_config_last_reload_success_timestamp_seconds"]; ts > float64(before.Unix()) || ts < float64(before.Add(-time.Minute).Unix()) {
		t.Errorf("last good reload at %v, want the first reload, just before %v", ts, before.Unix())
	}
	if na := vs[`signpost_certificate_not_after_seconds{name="chat.example.test"}`]; na < float64(time.Now().Add(364*24*time.Hour).Unix()) {
		t.Errorf("certificate not after %v, want a year from now (self-signed)", na)
	}
	for _, family := range []string{"go_goroutines", "process_start_time_seconds", "signpost_dns_tcp_connections", "signpost_dns_rate_limited_total", "signpost_http_connections_evicted_total", "signpost_acme_challenges_total"} {
		if len(promtest.Pick(vs, family)) == 0 {
			t.Errorf("no %s in the scrape", family)
		}
	}
	if t.Failed() {
		_, body := in.scrape("/metrics")
		fmt.Println(body)
	}
}

func runtimeVersion() string { return runtime.Version() }

// TestServeLogJSON: with -log-format json every line of the log is one JSON
// object with slog's keys; another format is a usage error.
func TestServeLogJSON(t *testing.T) {
	in := startServeWith(t, metricsTOML(t), nil, nil, "-log-format", "json")
	in.query("udp", "chat.example.test.", dns.TypeA)
	lines := strings.Split(strings.TrimSpace(in.stderr.String()), "\n")
	serving := false
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, l)
		}
		if rec["msg"] == "serving" {
			serving = rec["level"] == "INFO" && rec["metrics"] == in.addrs.Metrics && rec["https"] == in.addrs.HTTPS
		}
	}
	if !serving {
		t.Errorf("no INFO \"serving\" record with the metrics and https addresses:\n%s", in.stderr.String())
	}

	var stderr bytes.Buffer
	e := env{stdout: io.Discard, stderr: &stderr, getenv: func(string) string { return "" }, now: time.Now}
	if code := e.run(context.Background(), []string{"serve", "-log-format", "yaml", "-config", in.config}); code != exitUsage || stderr.String() != "signpost serve: -log-format \"yaml\": use text or json\n" {
		t.Errorf("-log-format yaml: exit %d, stderr %q; want 2 and a usage error", code, stderr.String())
	}
}

// TestServeNotReady: a name without a certificate (no CA reachable) makes
// /readyz answer 503 naming it, and status report it, while /healthz says
// the process is up.
func TestServeNotReady(t *testing.T) {
	text := strings.Replace(metricsTOML(t), `mode = "self-signed"`,
		"mode = \"acme\"\nstorage = \""+t.TempDir()+"\"\nchallenges = [\"http-01\"]\ndirectory = \"https://127.0.0.1:1/directory\"", 1)
	in := startServe(t, text, nil)
	if code, body := in.scrape("/readyz"); code != http.StatusServiceUnavailable || body != "chat.example.test has no valid certificate\n" {
		t.Errorf("/readyz: %d %q, want 503 naming chat.example.test", code, body)
	}
	if code, _ := in.scrape("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d, want 200", code)
	}
	if v := in.metrics()[`signpost_certificate_not_after_seconds{name="chat.example.test"}`]; v != 0 {
		t.Errorf("not_after of a name without a certificate: %v, want 0", v)
	}
}
