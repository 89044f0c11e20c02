package probe_test

import (
	"os"
	"time"

	"github.com/signpost-dev/signpost/probe"
)

// A report prints one line per check, the fix after "Fix:", and a verdict.
// signpost probe prints it with WriteText, or WriteJSON for -json, and exits
// 1 when Failed reports true.
func ExampleReport_WriteText() {
	r := &probe.Report{
		ServerName: "chat.example.com",
		Resolver:   "127.0.0.1:53",
		Time:       time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		Client:     probe.ClientResult{Outcome: probe.OutcomeSuccess, IdentityOutcome: "PROMPT"},
		Checks: []probe.Check{
			{Section: probe.SectionResolve, Status: probe.StatusOK, Message: `step 3: the well-known endpoint delegates to "hs.chat.example.com:443"`},
			{Section: probe.SectionResolve, Status: probe.StatusSkip, Message: "steps 4-6 skipped: they apply only when the well-known request fails"},
			{Section: probe.SectionFallback, Status: probe.StatusWarn,
				Message: "IPv4 198.51.100.7:443 (hs.chat.example.com, Host chat.example.com): the fallback will fail when the well-known endpoint is down: the certificate does not cover chat.example.com (it names hs.chat.example.com)",
				Fix:     "serve a certificate whose names include chat.example.com"},
		},
	}
	_ = r.WriteText(os.Stdout)
	if r.Failed() {
		os.Exit(1)
	}
	// Output:
	// probe chat.example.com via resolver 127.0.0.1:53 at 2030-01-02T03:04:05Z
	// ok    resolve    step 3: the well-known endpoint delegates to "hs.chat.example.com:443"
	// skip  resolve    steps 4-6 skipped: they apply only when the well-known request fails
	// warn  fallback   IPv4 198.51.100.7:443 (hs.chat.example.com, Host chat.example.com): the fallback will fail when the well-known endpoint is down: the certificate does not cover chat.example.com (it names hs.chat.example.com)  Fix: serve a certificate whose names include chat.example.com
	// PASS: 1 ok, 1 warn, 0 fail; client discovery SUCCESS
}
