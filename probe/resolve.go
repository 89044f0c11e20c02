package probe

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// wellKnownResult is the outcome of GET https://<hostname>/.well-known/matrix/server.
type wellKnownResult struct {
	F *fetched
	// Delegated is the parsed m.server; valid only when Problem is "".
	Delegated serverName
	Raw       string // m.server as written
	// Problem says why the response is not a valid delegation; "" if valid.
	Problem string
	Fix     string
	// Status is the check status given to a failed fetch: warn when there
	// is simply no well-known (404, nothing listening), fail when something
	// is there but broken.
	Status Status
}

// resolve runs "Resolving server names" step by step and fills
// Report.Targets.
func (p *prober) resolve(ctx context.Context) {
	sn := p.sn
	r := p.rep
	if sn.IP.IsValid() {
		port := sn.Port
		if port == 0 {
			port = 8448
		}
		r.add(SectionResolve, StatusOK, "", "step 1: %s is an IP literal: connect to %s port %d with Host %q; the certificate must name the IP address",
			p.name, sn.IP, port, p.name)
		r.add(SectionResolve, StatusSkip, "", "steps 2-6 skipped: an IP literal is used as it is, without well-known or SRV lookups")
		p.addTarget(Target{Step: "1 (IP literal)", Host: sn.IP.String(), Port: port, HostHeader: p.name, CertName: sn.IP.String(), Addrs: []netip.Addr{sn.IP}})
		return
	}
	if sn.Port != 0 {
		r.add(SectionResolve, StatusOK, "", "step 2: %s has an explicit port: look up AAAA/A of %s, connect to port %d with Host %q; the certificate must name %s",
			p.name, sn.Host, sn.Port, p.name, sn.Host)
		r.add(SectionResolve, StatusSkip, "", "steps 3-6 skipped: with an explicit port there is no well-known or SRV lookup")
		p.addrTarget(ctx, "2 (explicit port)", sn.Host, sn.Port, p.name, sn.Host)
		return
	}

	wk := p.fetchServerWellKnown(ctx)
	p.wk = wk
	if wk.Problem == "" {
		d := wk.Delegated
		r.add(SectionResolve, StatusOK, "", "step 3: the well-known endpoint delegates to %q", wk.Raw)
		r.add(SectionResolve, StatusSkip, "", "steps 4-6 skipped: they apply only when the well-known request fails")
		switch {
		case d.IP.IsValid():
			port := d.Port
			if port == 0 {
				port = 8448
			}
			r.add(SectionResolve, StatusOK, "", "step 3.1: %q is an IP literal: connect to %s port %d with Host %q; the certificate must name the IP address",
				wk.Raw, d.IP, port, wk.Raw)
			r.add(SectionResolve, StatusSkip, "", "steps 3.2-3.5 skipped: the delegated name is an IP literal")
			p.addTarget(Target{Step: "3.1 (delegated IP literal)", Host: d.IP.String(), Port: port, HostHeader: wk.Raw, CertName: d.IP.String(), Addrs: []netip.Addr{d.IP}})
		case d.Port != 0:
			r.add(SectionResolve, StatusOK, "", "step 3.2: %q has a port: look up AAAA/A of %s, connect to port %d with Host %q; the certificate must name %s",
				wk.Raw, d.Host, d.Port, d.String(), d.Host)
			r.add(SectionResolve, StatusSkip, "", "steps 3.3-3.5 skipped: the delegated name has a port, so no SRV lookup is made")
			p.addrTarget(ctx, "3.2 (delegated name with port)", d.Host, d.Port, d.String(), d.Host)
		default:
			r.add(SectionResolve, StatusOK, "", "step 3.3: %q has no port: look up SRV records for it", wk.Raw)
			p.srvChain(ctx, d.Host, [3]string{"3.3", "3.4", "3.5"})
		}
		return
	}
	st := wk.Status
	r.add(SectionResolve, st, wk.Fix, "step 3: GET https://%s/.well-known/matrix/server: %s; remote servers go on to step 4", sn.hostForURL(), wk.Problem)
	p.srvLive = fqdn("_matrix-fed._tcp." + sn.Host)
	p.srvChain(ctx, sn.Host, [3]string{"4", "5", "6"})
}

// srvChain runs the SRV part of the algorithm for host: _matrix-fed._tcp,
// then the deprecated _matrix._tcp, then AAAA/A on port 8448. Host header
// and certificate name are host itself in every case.
func (p *prober) srvChain(ctx context.Context, host string, steps [3]string) {
	r := p.rep
	for i, svc := range []string{"_matrix-fed._tcp.", "_matrix._tcp."} {
		step := steps[i]
		res := p.lookupSRV(ctx, SectionResolve, svc+host)
		switch {
		case res.A.failed():
			r.add(SectionResolve, StatusFail, fmt.Sprintf("make the nameservers of %s answer SRV queries for %s (NXDOMAIN or an empty answer is fine)", host, res.Name),
				"step %s: SRV %s got %s: Synapse stops here and will not federate with this server; other servers treat it as no record",
				step, res.Name, res.A.rcodeText())
			continue
		case res.Unavailable:
			r.add(SectionResolve, StatusFail, fmt.Sprintf("delete the SRV record %s, or point it at the homeserver", res.Name),
				"step %s: SRV %s has the single target \".\", which means \"no service here\": remote servers will not connect at all", step, res.Name)
			return
		case len(res.Records) == 0:
			r.add(SectionResolve, StatusInfo, "", "step %s: no SRV record at %s", step, res.Name)
			continue
		}
		if i == 1 {
			r.add(SectionResolve, StatusWarn, fmt.Sprintf("publish the same record as %s; Matrix 1.8 deprecated %s", "_matrix-fed._tcp."+fqdn(host), res.Name),
				"step %s: found only the deprecated SRV name %s; servers that dropped it will fall back to port 8448", step, res.Name)
		} else {
			r.add(SectionResolve, StatusOK, "", "step %s: SRV %s gives %d target(s); connect with Host %q and a certificate for %s",
				step, res.Name, len(res.Records), host, host)
		}
		for j := i + 1; j < 3; j++ {
			r.add(SectionResolve, StatusSkip, "", "step %s skipped: step %s found SRV records", steps[j], step)
		}
		for _, s := range res.Records {
			if s.Target == "." {
				r.add(SectionResolve, StatusWarn, "remove SRV records with target \".\" when other records exist",
					"SRV %s has a record with target \".\" next to real targets; it is ignored", res.Name)
				continue
			}
			target := strings.TrimSuffix(s.Target, ".")
			p.addrTargetSRV(ctx, fmt.Sprintf("%s (SRV %s %d %d %d %s)", step, res.Name, s.Priority, s.Weight, s.Port, s.Target), target, s.Port, host)
		}
		return
	}
	r.add(SectionResolve, StatusOK, "", "step %s: no SRV record: look up AAAA/A of %s and connect to port 8448 with Host %q", steps[2], host, host)
	p.addrTarget(ctx, steps[2]+" (port 8448)", host, 8448, host, host)
}

// addrTarget resolves host and adds the target.
func (p *prober) addrTarget(ctx context.Context, step, host string, port uint16, hostHeader, certName string) {
	res := p.lookupAddrs(ctx, SectionResolve, host)
	p.reportAddrs(host, res)
	p.addTarget(Target{Step: step, Host: host, Port: port, HostHeader: hostHeader, CertName: certName, SNI: certName, Addrs: res.all()})
}

// addrTargetSRV resolves an SRV target, which must not be an alias (RFC 2782).
func (p *prober) addrTargetSRV(ctx context.Context, step, target string, port uint16, name string) {
	res := p.lookupAddrs(ctx, SectionResolve, target)
	if len(res.Chain) > 0 {
		p.rep.add(SectionDNS, StatusWarn, fmt.Sprintf("point the SRV record at the canonical name (%s) instead of the alias", lastLink(res.Chain)),
			"SRV target %s is a CNAME (%s); RFC 2782 forbids aliases there, and resolvers that follow the rule find no address",
			target, strings.Join(res.Chain, ", "))
	}
	p.reportAddrs(target, res)
	p.addTarget(Target{Step: step, Host: target, Port: port, HostHeader: name, CertName: name, SNI: name, Addrs: res.all()})
}

func lastLink(chain []string) string {
	l := chain[len(chain)-1]
	if i := strings.Index(l, " -> "); i >= 0 {
		return l[i+4:]
	}
	return l
}

func (p *prober) reportAddrs(host string, res addrResult) {
	if len(res.all()) == 0 {
		detail := "no AAAA or A records"
		if len(res.Failed) > 0 {
			detail = strings.Join(res.Failed, "; ")
		}
		p.rep.add(SectionResolve, StatusFail, fmt.Sprintf("publish an A and/or AAAA record for %s", host),
			"%s has no address (%s): remote servers cannot connect", host, detail)
		return
	}
	var list []string
	for _, a := range res.all() {
		list = append(list, a.String())
	}
	p.rep.add(SectionResolve, StatusInfo, "", "%s resolves to %s", host, strings.Join(list, ", "))
}

func (p *prober) addTarget(t Target) {
	if t.Addrs == nil {
		t.Addrs = []netip.Addr{}
	}
	p.rep.Targets = append(p.rep.Targets, t)
}

// fetchServerWellKnown fetches and validates /.well-known/matrix/server
// exactly as step 3 requires: redirects followed with a loop guard, only 200
// is a valid answer, the body must be a JSON object whose m.server is a
// string in the server-name grammar.
func (p *prober) fetchServerWellKnown(ctx context.Context) *wellKnownResult {
	u := "https://" + p.sn.hostForURL() + "/.well-known/matrix/server"
	f := p.http.get(ctx, "GET", u, nil, netip.Addr{})
	wk := &wellKnownResult{F: f, Status: StatusFail}
	for _, h := range f.Hops {
		if strings.Contains(h, "-> http://") {
			p.rep.add(SectionResolve, StatusWarn, "redirect only to https:// URLs",
				"GET %s redirected to plain http: %s; anyone on the path can change the delegation", u, h)
			continue
		}
		p.rep.add(SectionResolve, StatusInfo, "", "GET %s redirected: %s", u, h)
	}
	if f.Err != nil {
		msg, fix, kind := describeErr(f.Err, p.sn.Host)
		wk.Problem, wk.Fix = msg, fix
		if kind != errKindTLS && kind != errKindRedirect {
			// Nothing answering is a legitimate "no well-known" (delegation
			// through SRV only); a wrong certificate or a loop is a mistake.
			wk.Status = StatusWarn
			wk.Fix = "if you delegate with well-known, make https://" + p.sn.hostForURL() + "/ reachable; otherwise ignore this"
		}
		return wk
	}
	p.rep.add(SectionResolve, StatusInfo, "", "GET %s: %d, %d bytes%s", u, f.Status, len(f.Body), bodyPreview(f.Body))
	switch {
	case f.Status == 404:
		wk.Status = StatusWarn
		wk.Problem = "404 Not Found"
		wk.Fix = "if you want to delegate with well-known, serve {\"m.server\": \"host:port\"} there; SRV-only delegation is also valid"
		return wk
	case f.Status != 200:
		wk.Problem = fmt.Sprintf("status %d; only 200 counts", f.Status)
		wk.Fix = "answer 200 with {\"m.server\": \"host:port\"}, or 404 if you do not delegate with well-known"
		return wk
	case f.TooLarge:
		wk.Problem = fmt.Sprintf("the body is larger than %d bytes; Synapse gives up reading it", maxWellKnown)
		wk.Fix = "serve only {\"m.server\": \"host:port\"}"
		return wk
	}
	raw, problem := parseMServer(f.Body)
	if problem != "" {
		wk.Problem = problem
		wk.Fix = "serve a JSON object like {\"m.server\": \"hs.example.com:443\"}"
		return wk
	}
	wk.Raw = raw
	d, err := parseServerName(raw)
	if err != nil {
		wk.Problem = fmt.Sprintf("m.server %q is invalid: %v", raw, err)
		wk.Fix = "write m.server as host or host:port, e.g. \"hs.example.com:443\""
		return wk
	}
	if !d.IP.IsValid() {
		if prob := dnsNameProblem(d.Host); prob != "" {
			wk.Problem = "m.server: " + prob
			wk.Fix = "write m.server as a valid hostname"
			return wk
		}
	}
	wk.Delegated = d
	return wk
}

// parseMServer returns m.server from a well-known body, or what is wrong.
func parseMServer(body []byte) (string, string) {
	if len(bytes.TrimSpace(body)) == 0 {
		return "", "the body is empty"
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&v); err != nil {
		return "", "the body is not JSON: " + err.Error()
	}
	if dec.More() {
		return "", "the body has data after the JSON value"
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return "", fmt.Sprintf("the body is a JSON %s, not an object", jsonKind(v))
	}
	ms, ok := obj["m.server"]
	if !ok {
		return "", "the JSON object has no \"m.server\""
	}
	s, ok := ms.(string)
	if !ok {
		return "", fmt.Sprintf("\"m.server\" is a JSON %s, not a string", jsonKind(ms))
	}
	return s, ""
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64, json.Number:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func bodyPreview(b []byte) string {
	const max = 120
	s := string(bytes.TrimSpace(b))
	if s == "" {
		return ""
	}
	if len(s) > max {
		s = s[:max] + "…"
	}
	return ", body " + strconv.QuoteToGraphic(s)
}
