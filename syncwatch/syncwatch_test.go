package syncwatch

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dev/signpost/config"
	"github.com/signpost-dev/signpost/dnsserver"
	"github.com/signpost-dev/signpost/internal/promtest"
	"github.com/signpost-dev/signpost/internal/testenv"
)

const zoneTOML = `
[dns]
listen = ["127.0.0.1:0"]
nameservers = ["ns1.chat.example.com"]
hostmaster = "hostmaster@example.com"

[[zone]]
origin = "chat.example.com"
addresses = ["203.0.113.10"]
records = ["hs 300 IN A %s"]

[[secondary]]
address = %q
`

// TestNSD watches a real NSD secondary: in sync, then stopped while the
// zone changes (behind, logged once WarnAfter has passed on the watch's
// clock), then started again (in sync, logged as caught up).
func TestNSD(t *testing.T) {
	nsd, err := exec.LookPath("nsd")
	if err != nil {
		t.Skip("nsd not installed (apt-get install nsd): skipping the watch on an NSD secondary")
	}
	port := testenv.FreePort(t)
	nsdAddr := fmt.Sprintf("127.0.0.1:%d", port)
	model := func(a string) *config.Model {
		m, err := config.Parse("test.toml", []byte(fmt.Sprintf(zoneTOML, a, nsdAddr)), config.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	dns := dnsserver.New(dnsserver.Options{Logger: slog.New(slog.NewTextHandler(t.Output(), nil)), NotifyTries: 1})
	pc, l := testenv.ListenDNS(t)
	go dns.ServeUDP(pc)
	go dns.ServeTCP(l)
	t.Cleanup(func() { dns.Shutdown(context.Background()) })
	dns.SetModel(model("198.51.100.7"))
	first := dns.Serials()["chat.example.com."]

	dir := t.TempDir()
	conf := testenv.NSDServerConf(dir, port, 1, "") + fmt.Sprintf(`zone:
  name: chat.example.com
  zonefile: chat.example.com.zone
  request-xfr: %s NOKEY
  allow-notify: 127.0.0.1 NOKEY
`, strings.Replace(l.Addr().String(), ":", "@", 1))
	confPath := filepath.Join(dir, "nsd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	d := testenv.RunDaemon(t, nsd, "-d", "-c", confPath)
	testenv.WaitSOA(t, nsdAddr, "chat.example.com.", first, 15*time.Second)

	var logs testenv.SyncBuffer
	now := time.Unix(1_800_000_000, 0)
	w := New(Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}})),
		Serials: dns.Serials, Timeout: 5 * time.Second, Now: func() time.Time { return now }})
	w.SetModel(model("198.51.100.7"))
	check := func(want map[string]float64, wantLogs string) {
		t.Helper()
		w.Check(context.Background())
		if got := promtest.Values(t, w.Metrics()); !maps.Equal(got, want) {
			t.Errorf("metrics:\ngot  %v\nwant %v", got, want)
		}
		if got := logs.String(); got != wantLogs {
			t.Errorf("logs:\ngot  %q\nwant %q", got, wantLogs)
		}
	}
	series := func(name string) string {
		return name + `{secondary="` + nsdAddr + `",zone="chat.example.com."}`
	}
	inSync := func(serial uint32) map[string]float64 {
		return map[string]float64{
			series("signpost_secondary_serial"):         float64(serial),
			series("signpost_secondary_up"):             1,
			series("signpost_secondary_behind"):         0,
			series("signpost_secondary_behind_seconds"): 0,
		}
	}
	check(inSync(first), "")

	// NSD stops; the zone changes. The watch finds it behind at once, and
	// says so in the log only when WarnAfter has passed.
	d.Stop()
	dns.SetModel(model("198.51.100.8"))
	second := dns.Serials()["chat.example.com."]
	if second == first {
		t.Fatal("the serial did not change")
	}
	down := func(secs float64) map[string]float64 {
		return map[string]float64{
			series("signpost_secondary_up"):             0,
			series("signpost_secondary_behind"):         1,
			series("signpost_secondary_behind_seconds"): secs,
		}
	}
	check(down(0), "")
	now = now.Add(4 * time.Minute)
	check(down(240), "")
	now = now.Add(time.Minute)
	warn := fmt.Sprintf("level=WARN msg=\"secondary behind\" zone=chat.example.com. secondary=%s serial_served=%d behind_seconds=300 problem=\"no authoritative SOA answer\"\n", nsdAddr, second)
	check(down(300), warn)
	now = now.Add(time.Minute)
	check(down(360), warn) // logged once

	// NSD starts again and fetches the change.
	testenv.RunDaemon(t, nsd, "-d", "-c", confPath)
	testenv.WaitSOA(t, nsdAddr, "chat.example.com.", second, 15*time.Second)
	now = now.Add(time.Minute)
	check(inSync(second), warn+fmt.Sprintf("level=INFO msg=\"secondary caught up\" zone=chat.example.com. secondary=%s serial=%d\n", nsdAddr, second))

	// A reload that drops the secondary drops its series.
	m, err := config.Parse("test.toml", []byte(strings.SplitN(fmt.Sprintf(zoneTOML, "198.51.100.8", nsdAddr), "[[secondary]]", 2)[0]), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.SetModel(m)
	if got := promtest.Values(t, w.Metrics()); len(got) != 0 {
		t.Errorf("metrics after the secondary was removed: %v, want none", got)
	}
}
