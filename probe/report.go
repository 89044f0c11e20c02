package probe

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"
)

// Status is the verdict of one check.
type Status string

// The statuses a check can have. Only StatusFail makes Report.Failed true.
const (
	StatusOK   Status = "ok"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
	// StatusSkip marks a step of an algorithm that was not taken, with the reason.
	StatusSkip Status = "skip"
	// StatusInfo records what was asked and what came back, without a verdict.
	StatusInfo Status = "info"
)

// Sections group checks in the order the probe runs them.
const (
	SectionName      = "name"      // the server name's grammar
	SectionResolve   = "resolve"   // server-name resolution, step by step
	SectionConnect   = "connect"   // TLS, version and keys on every resolved address
	SectionFallback  = "fallback"  // SRV fallback rehearsal
	SectionWellKnown = "wellknown" // hygiene of /.well-known/matrix/server
	SectionClient    = "client"    // client discovery, CORS and the support document
	SectionDNS       = "dns"       // nameserver consistency and address sanity
)

// Check is one line of the report.
type Check struct {
	Section string `json:"section"`
	Status  Status `json:"status"`
	// Message says what was found, in one line.
	Message string `json:"message"`
	// Fix says what the admin should change; empty when nothing needs to change.
	Fix string `json:"fix,omitempty"`
}

// Target is one place a remote homeserver will connect to, as the
// resolution algorithm produced it.
type Target struct {
	// Step names the step of the specification's algorithm that produced
	// the target, e.g. "3.3 (SRV _matrix-fed._tcp.hs.example.com.)".
	Step string `json:"step"`
	// Host is the name resolved to Addrs, or the IP literal.
	Host string `json:"host"`
	Port uint16 `json:"port"`
	// HostHeader is the Host header a remote server sends.
	HostHeader string `json:"host_header"`
	// CertName is the name (or IP address) the certificate must cover.
	CertName string `json:"cert_name"`
	// SNI is the TLS server name sent; empty for IP literals.
	SNI   string       `json:"sni"`
	Addrs []netip.Addr `json:"addrs"`
}

// ClientResult is the outcome of client discovery as matrix-js-sdk
// (Element) computes it.
type ClientResult struct {
	// Outcome is SUCCESS, IGNORE, FAIL_PROMPT or FAIL_ERROR.
	Outcome string `json:"outcome"`
	// Reason is matrix-js-sdk's error text for a failed outcome.
	Reason  string `json:"reason,omitempty"`
	BaseURL string `json:"base_url,omitempty"`
	// IdentityOutcome is the m.identity_server outcome: PROMPT when none is
	// configured, else SUCCESS or FAIL_PROMPT.
	IdentityOutcome string `json:"identity_outcome"`
}

// Report is everything one probe found.
type Report struct {
	ServerName string    `json:"server_name"`
	Resolver   string    `json:"resolver"`
	Time       time.Time `json:"time"`
	// Targets are the federation targets in the order a remote server tries them.
	Targets []Target     `json:"targets"`
	Client  ClientResult `json:"client"`
	Checks  []Check      `json:"checks"`
}

// Failed reports whether any check failed; the CLI exits 1 then.
func (r *Report) Failed() bool {
	for _, c := range r.Checks {
		if c.Status == StatusFail {
			return true
		}
	}
	return false
}

// Count returns how many checks have status s.
func (r *Report) Count(s Status) int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == s {
			n++
		}
	}
	return n
}

func (r *Report) add(section string, s Status, fix, format string, args ...any) {
	r.Checks = append(r.Checks, Check{Section: section, Status: s, Message: fmt.Sprintf(format, args...), Fix: fix})
}

// WriteText writes the report for people: a header, one line per check
// ("fail  connect    ...  Fix: ..."), and a summary line.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "probe %s via resolver %s at %s\n", r.ServerName, r.Resolver, r.Time.UTC().Format(time.RFC3339))
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "%-4s  %-9s  %s", c.Status, c.Section, c.Message)
		if c.Fix != "" {
			fmt.Fprintf(&b, "  Fix: %s", c.Fix)
		}
		b.WriteByte('\n')
	}
	client := r.Client.Outcome
	if client == "" {
		client = "not run"
	}
	verdict := "PASS"
	if r.Failed() {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "%s: %d ok, %d warn, %d fail; client discovery %s\n",
		verdict, r.Count(StatusOK), r.Count(StatusWarn), r.Count(StatusFail), client)
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as one indented JSON object with the same
// content as WriteText, plus a "summary" object and "failed".
func (r *Report) WriteJSON(w io.Writer) error {
	type summary struct {
		OK   int `json:"ok"`
		Warn int `json:"warn"`
		Fail int `json:"fail"`
	}
	out := struct {
		*Report
		Summary summary `json:"summary"`
		Failed  bool    `json:"failed"`
	}{r, summary{r.Count(StatusOK), r.Count(StatusWarn), r.Count(StatusFail)}, r.Failed()}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(out)
}
