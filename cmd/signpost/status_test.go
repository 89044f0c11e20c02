package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/signpost-dev/signpost/internal/testenv"
)

// TestStatus runs signpost serve with a secondary that does not answer,
// and compares what `signpost status` prints, for people and as JSON,
// with testdata/status/*.golden: first with the secondary behind, then
// also with a reload rejected. Times, durations, serials and ports are
// normalised; `go test -update` rewrites the files.
func TestStatus(t *testing.T) {
	secondary := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)) // nothing listens there
	text := metricsTOML(t) + fmt.Sprintf("\n[[secondary]]\naddress = %q\n", secondary)
	in := startServeWith(t, text, nil, func(e *env) { e.watchEvery = 20 * time.Millisecond })

	// Behind at one check is a change on its way; wait for the second.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := in.scrape("/metrics")
		if !strings.Contains(body, `signpost_secondary_behind_seconds{secondary="`+secondary+`",zone="chat.example.test."} 0`+"\n") &&
			strings.Contains(body, `signpost_secondary_behind_seconds{secondary="`+secondary+`",zone="chat.example.test."}`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watch never found the secondary behind twice:\n%s", body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	serial := in.query("udp", "chat.example.test.", dns.TypeSOA).Answer[0].(*dns.SOA).Serial
	normalise := strings.NewReplacer(
		in.addrs.DNS[0], "DNS_ADDR", in.addrs.HTTPS, "HTTPS_ADDR", in.addrs.Plain, "HTTP_ADDR",
		in.addrs.Metrics, "METRICS_ADDR", secondary, "SECONDARY_ADDR", strconv.FormatUint(uint64(serial), 10), "SERIAL",
		runtimeVersion(), "GOVERSION",
	)
	times := regexp.MustCompile(`\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?)?(Z| UTC)`)
	durations := regexp.MustCompile(`\b\d+(\.\d+)?(h\d+m)?(m\d+)?s\b|"behind_seconds": \d+(\.\d+)?`)
	run := func(args ...string) string {
		var stdout, stderr bytes.Buffer
		e := env{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }, now: time.Now}
		code := e.run(context.Background(), append([]string{"status", "-addr", in.addrs.Metrics}, args...))
		out := normalise.Replace(stdout.String() + stderr.String())
		out = times.ReplaceAllString(out, "TIME")
		out = durations.ReplaceAllStringFunc(out, func(d string) string {
			if strings.HasPrefix(d, `"behind_seconds"`) {
				return `"behind_seconds": SECONDS`
			}
			return "DURATION"
		})
		return out + fmt.Sprintf("-- exit --\n%d\n", code)
	}
	check := func(name, got string) {
		t.Helper()
		path := filepath.Join("testdata", "status", name+".golden")
		if *update {
			if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Errorf("%s:\n--- got ---\n%s--- want ---\n%s", path, got, want)
		}
	}
	check("behind", run())
	check("behind-json", run("-json"))

	in.write(strings.Replace(text, `server      = "hs.chat.example.test:8448"`, `server      = "hs.chat.example.test"`, 1))
	if err := in.reload(func() { in.hup <- syscall.SIGHUP }); err == nil {
		t.Fatal("reload of a broken file succeeded")
	}
	check("rejected", run())

	// Without -addr, status finds the listener in the config file, even
	// one a reload rejected.
	var stdout, stderr bytes.Buffer
	text = strings.Replace(text, `listen = "127.0.0.1:0"`, `listen = "`+in.addrs.Metrics+`"`, 1)
	in.write(strings.Replace(text, `server      = "hs.chat.example.test:8448"`, `server      = "hs.chat.example.test"`, 1))
	e := env{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }, now: time.Now}
	if code := e.run(context.Background(), []string{"status", "-config", in.config}); code != exitFail || !strings.Contains(stdout.String(), "the last reload was rejected") {
		t.Errorf("status -config: exit %d, stdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}

	// /readyz says the same as the certificates do: ready.
	if code, body := in.scrape("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d %q", code, body)
	}
}

// TestStatusNoListener: without metrics.listen status says what to do.
func TestStatusNoListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signpost.toml")
	if err := os.WriteFile(path, []byte("[dns]\nlisten = []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	e := env{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }, now: time.Now}
	code := e.run(context.Background(), []string{"status", "-config", path})
	want := "signpost status: " + path + ": no metrics.listen, so there is nothing to ask; set [metrics] listen = \"127.0.0.1:9153\" and restart signpost, or give -addr\n"
	if code != exitFail || stderr.String() != want || stdout.Len() != 0 {
		t.Errorf("exit %d, stderr %q, stdout %q; want 1 and %q", code, &stderr, &stdout, want)
	}
}
