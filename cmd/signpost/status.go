package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/signpost-dev/signpost/monitor"
)

// status asks a running signpost, through its metrics listener, how it is
// doing, and prints the answer for people or, with -json, as /status gave
// it. It exits 1 when something needs attention.
func (e env) status(ctx context.Context, args []string) int {
	var addr string
	var asJSON bool
	path, code := e.configFlags("status", args, func(fs *flag.FlagSet) {
		fs.StringVar(&addr, "addr", "", "`host:port` of the metrics listener; default: metrics.listen of the config file")
		fs.BoolVar(&asJSON, "json", false, "print the status as JSON")
	})
	if code >= 0 {
		return code
	}
	if addr == "" {
		var err error
		if addr, err = metricsAddr(path); err != nil {
			fmt.Fprintf(e.stderr, "signpost status: %v\n", err)
			return exitFail
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		fmt.Fprintf(e.stderr, "signpost status: %v\n", err)
		return exitUsage
	}
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		fmt.Fprintf(e.stderr, "signpost status: is signpost running? %v\n", err)
		return exitFail
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var st monitor.Status
	if err == nil {
		err = json.Unmarshal(body, &st)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "signpost status: http://%s/status: %v\n", addr, err)
		return exitFail
	}
	if asJSON {
		e.stdout.Write(body)
	} else {
		printStatus(e.stdout, st, e.now())
	}
	if len(st.Problems) > 0 {
		return exitFail
	}
	return exitOK
}

// metricsAddr reads metrics.listen from the config file, and only that: a
// file a reload rejected still names the listener of the running instance.
func metricsAddr(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%w; give the metrics listener with -addr", err)
	}
	var f struct {
		Metrics struct {
			Listen string `toml:"listen"`
		} `toml:"metrics"`
	}
	if err := toml.Unmarshal(data, &f); err != nil {
		return "", fmt.Errorf("%s: %v; give the metrics listener with -addr", path, err)
	}
	if f.Metrics.Listen == "" {
		return "", fmt.Errorf("%s: no metrics.listen, so there is nothing to ask; set [metrics] listen = \"127.0.0.1:9153\" and restart signpost, or give -addr", path)
	}
	host, port, err := net.SplitHostPort(f.Metrics.Listen)
	if err != nil {
		return "", fmt.Errorf("%s: metrics.listen %q is not host:port", path, f.Metrics.Listen)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1" // listening everywhere: here too
	}
	return net.JoinHostPort(host, port), nil
}

// printStatus writes st for people, problems first, on one screen.
func printStatus(w io.Writer, st monitor.Status, now time.Time) {
	day := func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }
	fmt.Fprintf(w, "signpost %s, up since %s\n\n", st.Version, day(st.Started))
	if len(st.Problems) == 0 {
		fmt.Fprintln(w, "nothing needs attention")
	} else {
		fmt.Fprintf(w, "%d problem(s):\n", len(st.Problems))
		for _, p := range st.Problems {
			fmt.Fprintf(w, "  ! %s\n", p)
		}
	}
	table := func(title string, rows [][]string) {
		if len(rows) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s:\n", title)
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		for _, r := range rows {
			fmt.Fprintf(tw, "  %s\n", strings.Join(r, "\t"))
		}
		tw.Flush()
	}
	var rows [][]string
	for _, l := range st.Listeners {
		rows = append(rows, []string{l.Kind, l.Address})
	}
	table("listeners", rows)
	rows = nil
	for _, z := range st.Zones {
		rows = append(rows, []string{z.Zone, fmt.Sprintf("serial %d", z.Serial)})
	}
	table("zones", rows)
	rows = nil
	for _, c := range st.Certificates {
		state := "ok"
		switch left := c.NotAfter.Sub(now); {
		case c.NotAfter.IsZero():
			state = "NONE YET"
		case left <= 0:
			state = "EXPIRED"
		case left < monitor.CertificateWarning:
			state = "RENEWAL OVERDUE"
		}
		if !c.LastFailure.IsZero() {
			state += ", last attempt failed " + day(c.LastFailure)
		}
		expires := "-"
		if !c.NotAfter.IsZero() {
			expires = fmt.Sprintf("expires %s (%d days)", day(c.NotAfter), int(c.NotAfter.Sub(now)/(24*time.Hour)))
		}
		rows = append(rows, []string{c.Name, expires, state})
	}
	table("certificates", rows)
	rows = nil
	for _, s := range st.Secondaries {
		state := fmt.Sprintf("in sync, serial %d", s.Serial)
		switch {
		case s.Behind && !s.Up:
			state = fmt.Sprintf("BEHIND for %s: no answer", time.Duration(s.BehindSeconds)*time.Second)
		case s.Behind:
			state = fmt.Sprintf("BEHIND for %s: serial %d", time.Duration(s.BehindSeconds)*time.Second, s.Serial)
		}
		rows = append(rows, []string{s.Secondary, s.Zone, state})
	}
	table("secondaries", rows)
	r := st.Reload
	last := "loaded " + day(r.LastSuccess)
	if r.LastRejected {
		last += "; the last reload was REJECTED"
	}
	fmt.Fprintf(w, "\nconfiguration %s (reloads: %d applied, %d rejected)\n", last, r.Succeeded, r.Failed)
}
