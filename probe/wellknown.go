package probe

import (
	"bytes"
	"context"
	"fmt"
	"mime"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Synapse's well-known cache bounds (synapse/http/federation/well_known_resolver.py).
const (
	synapseDefaultCache = 24 * time.Hour
	synapseMinCache     = 5 * time.Minute
	synapseMaxCache     = 48 * time.Hour
)

// synapseCacheTime returns how long Synapse caches a valid well-known
// response with these headers, and how it got there. It follows
// _cache_period_from_headers: no-store means 0, then max-age, then Expires;
// with none of them the default applies (with ±10% jitter); anything
// explicit is clamped to 5 min..48 h.
func synapseCacheTime(h http.Header, now time.Time) (time.Duration, string) {
	directives := map[string]*string{}
	for _, line := range h.Values("Cache-Control") {
		for _, d := range strings.Split(line, ",") {
			k, v, hasV := strings.Cut(d, "=")
			k = strings.ToLower(strings.TrimSpace(k))
			if hasV {
				v = strings.TrimSpace(v)
				directives[k] = &v
			} else {
				directives[k] = nil
			}
		}
	}
	var period time.Duration
	var why string
	explicit := false
	if _, ok := directives["no-store"]; ok {
		period, why, explicit = 0, "Cache-Control: no-store", true
	} else if v, ok := directives["max-age"]; ok && v != nil && *v != "" {
		if n, err := strconv.ParseInt(*v, 10, 64); err == nil {
			period, why, explicit = time.Duration(n)*time.Second, "Cache-Control: max-age="+*v, true
		}
	}
	if !explicit {
		if exp := h.Values("Expires"); len(exp) > 0 {
			explicit = true
			why = "Expires: " + exp[len(exp)-1]
			if t, err := http.ParseTime(exp[len(exp)-1]); err == nil {
				period = t.Sub(now)
			}
		}
	}
	if !explicit {
		return synapseDefaultCache, "no Cache-Control max-age or Expires: Synapse's default, with ±10% jitter"
	}
	switch {
	case period < synapseMinCache:
		return synapseMinCache, why + ", raised to Synapse's minimum"
	case period > synapseMaxCache:
		return synapseMaxCache, why + ", cut to Synapse's maximum"
	}
	return period, why
}

// wellKnownHygiene checks what the resolution algorithm does not: the
// response's headers and size, and whether every address of the host gives
// the same answer.
func (p *prober) wellKnownHygiene(ctx context.Context) {
	r := p.rep
	wk := p.wk
	if wk == nil {
		r.add(SectionWellKnown, StatusSkip, "", "well-known checks skipped: remote servers do not fetch /.well-known/matrix/server for a server name with an IP literal or an explicit port")
		return
	}
	f := wk.F
	if f.Err != nil || f.Status != 200 {
		r.add(SectionWellKnown, StatusSkip, "", "header and cache checks skipped: /.well-known/matrix/server gave no 200 answer")
	} else {
		ct := f.Header.Get("Content-Type")
		mt, _, err := mime.ParseMediaType(ct)
		switch {
		case ct == "application/json":
			r.add(SectionWellKnown, StatusOK, "", "Content-Type: application/json")
		case err == nil && mt == "application/json":
			r.add(SectionWellKnown, StatusOK, "", "Content-Type: %s", ct)
		default:
			r.add(SectionWellKnown, StatusWarn, "serve it with Content-Type: application/json",
				"Content-Type is %q, not application/json; servers parse it anyway, but proxies and browsers may not", ct)
		}
		r.add(SectionWellKnown, StatusOK, "", "body is %d bytes (Synapse reads at most %d)", len(f.Body), maxWellKnown)
		d, why := synapseCacheTime(f.Header, p.now())
		st, fix := StatusOK, ""
		if strings.Contains(why, "raised") || strings.Contains(why, "cut") {
			st, fix = StatusWarn, "send Cache-Control: max-age between 300 and 172800 seconds"
		}
		r.add(SectionWellKnown, st, fix, "Synapse caches this answer for %s (%s)", d, why)
	}

	// Split-brain: every address must give the same answer, or remote
	// servers see different delegations depending on which one they hit.
	res := p.lookupAddrs(ctx, SectionWellKnown, p.sn.Host)
	addrs := res.all()
	if len(addrs) < 2 {
		r.add(SectionWellKnown, StatusSkip, "", "consistency across addresses skipped: %s has %d address(es)", p.sn.Host, len(addrs))
		return
	}
	u := "https://" + p.sn.hostForURL() + "/.well-known/matrix/server"
	type seen struct {
		addr netip.Addr
		sum  string
	}
	var answers []seen
	for _, a := range addrs {
		g := p.http.get(withSection(ctx, SectionWellKnown), "GET", u, nil, a)
		var sum string
		if g.Err != nil {
			msg, _, _ := describeErr(g.Err, p.sn.Host)
			sum = "error: " + msg
		} else {
			sum = fmt.Sprintf("%d %s", g.Status, bytes.TrimSpace(g.Body))
		}
		answers = append(answers, seen{a, sum})
	}
	same := true
	for _, a := range answers[1:] {
		same = same && a.sum == answers[0].sum
	}
	if same {
		r.add(SectionWellKnown, StatusOK, "", "all %d addresses of %s give the same answer", len(answers), p.sn.Host)
		return
	}
	var parts []string
	for _, a := range answers {
		parts = append(parts, fmt.Sprintf("%s gives %s", a.addr, strings.TrimSpace(a.sum)))
	}
	r.add(SectionWellKnown, StatusFail, "serve the same /.well-known/matrix/server from every A and AAAA address, or remove the records of hosts that do not serve it",
		"split-brain: the addresses of %s disagree: %s", p.sn.Host, strings.Join(parts, "; "))
}
