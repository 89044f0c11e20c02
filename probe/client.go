package probe

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
)

// supportedVersions is matrix-js-sdk's SUPPORTED_MATRIX_VERSIONS
// (src/version-support.ts): Element refuses a homeserver whose
// /_matrix/client/versions lists none of them.
var supportedVersions = []string{
	"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7",
	"v1.8", "v1.9", "v1.10", "v1.11", "v1.12", "v1.13",
}

// The outcomes of the Client-Server API's "Well-known URIs" flow, with the
// names matrix-js-sdk's AutoDiscovery uses.
const (
	OutcomeSuccess    = "SUCCESS"
	OutcomeIgnore     = "IGNORE"
	OutcomeFailPrompt = "FAIL_PROMPT"
	OutcomeFailError  = "FAIL_ERROR"
)

// matrix-js-sdk's AutoDiscoveryError texts.
const (
	reasonInvalid            = "Invalid homeserver discovery response"
	reasonGeneric            = "Failed to get autodiscovery configuration from server"
	reasonInvalidHsBaseURL   = "Invalid base_url for m.homeserver"
	reasonInvalidHomeserver  = "Homeserver URL does not appear to be a valid Matrix homeserver"
	reasonUnsupportedVersion = "The homeserver does not meet the version requirements"
	reasonInvalidJSON        = "Invalid JSON"
	reasonMissingWellKnown   = "No .well-known JSON file found"
	reasonInvalidIsBaseURL   = "Invalid base_url for m.identity_server"
	reasonInvalidIS          = "Identity server URL does not appear to be a valid identity server"
)

// elementOrigin is the Origin a browser client sends; CORS must allow it.
const elementOrigin = "https://app.element.io"

// clientDiscovery runs the client's auto-discovery as matrix-js-sdk's
// AutoDiscovery.findClientConfig does, and records the outcome.
func (p *prober) clientDiscovery(ctx context.Context) {
	ctx = withSection(ctx, SectionClient)
	r := p.rep
	c := &r.Client
	fix := ""
	set := func(outcome, reason string) {
		c.Outcome, c.Reason = outcome, reason
		st := StatusOK
		switch outcome {
		case OutcomeIgnore:
			st = StatusWarn
		case OutcomeFailPrompt, OutcomeFailError:
			st = StatusFail
		}
		msg := "client discovery: " + outcome
		if reason != "" {
			msg += " (" + reason + ")"
		}
		if c.BaseURL != "" {
			msg += ", homeserver " + c.BaseURL
		}
		r.add(SectionClient, st, fix, "%s", msg)
	}

	u := "https://" + p.sn.hostForURL() + "/.well-known/matrix/client"
	f := p.http.get(ctx, "GET", u, nil, netip.Addr{})
	for _, h := range f.Hops {
		r.add(SectionClient, StatusInfo, "", "GET %s redirected: %s", u, h)
	}
	if f.Err != nil {
		msg, efix, _ := describeErr(f.Err, p.sn.Host)
		r.add(SectionClient, StatusInfo, "", "GET %s: %s", u, msg)
		fix = efix
		set(OutcomeFailPrompt, reasonGeneric)
		return
	}
	r.add(SectionClient, StatusInfo, "", "GET %s: %d, %d bytes%s", u, f.Status, len(f.Body), bodyPreview(f.Body))
	p.checkCORS(u, f, f.Status == 200)
	if f.Status == 200 || f.Status == 404 {
		p.checkPreflight(ctx, u)
	}
	const wantDoc = `serve {"m.homeserver": {"base_url": "https://matrix.example.com"}} at /.well-known/matrix/client`
	switch {
	case f.Status == 404:
		fix = wantDoc + " so clients find the homeserver from the user ID"
		set(OutcomeIgnore, reasonMissingWellKnown)
		return
	case f.Status != 200:
		fix = wantDoc + " with status 200"
		set(OutcomeFailPrompt, reasonGeneric)
		return
	case f.TooLarge:
		fix = wantDoc
		set(OutcomeFailPrompt, reasonInvalid)
		return
	}
	var doc any
	if err := json.Unmarshal(f.Body, &doc); err != nil {
		fix = wantDoc
		set(OutcomeFailPrompt, reasonInvalidJSON)
		return
	}
	obj, _ := doc.(map[string]any)
	hs, hasHS := obj["m.homeserver"]
	if !hasHS || !truthy(hs) {
		fix = wantDoc
		set(OutcomeFailPrompt, reasonInvalid)
		return
	}
	hsObj, _ := hs.(map[string]any)
	rawBase := hsObj["base_url"]
	if !truthy(rawBase) {
		fix = wantDoc
		set(OutcomeFailPrompt, reasonInvalidHsBaseURL)
		return
	}
	base, ok := sanitizeURL(rawBase)
	if !ok {
		fix = "write m.homeserver.base_url as an absolute https URL, like https://matrix.example.com"
		set(OutcomeFailError, reasonInvalidHsBaseURL)
		return
	}
	c.BaseURL = base
	p.checkBaseURL(rawBase.(string))

	vu := base + "/_matrix/client/versions"
	vf := p.http.get(ctx, "GET", vu, nil, netip.Addr{})
	var versions []string
	switch {
	case vf.Err != nil:
		msg, efix, _ := describeErr(vf.Err, hostOf(base))
		r.add(SectionClient, StatusInfo, "", "GET %s: %s", vu, msg)
		fix = efix
		set(OutcomeFailError, reasonInvalidHomeserver)
		return
	default:
		r.add(SectionClient, StatusInfo, "", "GET %s: %d%s", vu, vf.Status, bodyPreview(vf.Body))
		var v struct {
			Versions []any `json:"versions"`
		}
		if vf.Status != 200 || json.Unmarshal(vf.Body, &v) != nil || v.Versions == nil {
			fix = "point base_url at the homeserver's client API; " + vu + " must answer 200 with a versions list"
			set(OutcomeFailError, reasonInvalidHomeserver)
			return
		}
		for _, x := range v.Versions {
			if s, ok := x.(string); ok {
				versions = append(versions, s)
			}
		}
		p.checkCORS(vu, vf, true)
	}
	if !anyIn(versions, supportedVersions) {
		fix = "upgrade the homeserver; Element needs one of " + strings.Join(supportedVersions, ", ")
		set(OutcomeFailError, reasonUnsupportedVersion)
		return
	}
	set(OutcomeSuccess, "")
	p.identityServer(ctx, obj)
}

// identityServer checks m.identity_server as matrix-js-sdk does; a failure
// there leaves the homeserver outcome alone.
func (p *prober) identityServer(ctx context.Context, doc map[string]any) {
	r := p.rep
	is, ok := doc["m.identity_server"]
	if !ok || !truthy(is) {
		return
	}
	isObj, _ := is.(map[string]any)
	base, ok := sanitizeURL(isObj["base_url"])
	if !ok {
		r.Client.IdentityOutcome = OutcomeFailPrompt
		r.add(SectionClient, StatusFail, "write m.identity_server.base_url as an absolute https URL, or remove m.identity_server",
			"m.identity_server: FAIL_PROMPT (%s)", reasonInvalidIsBaseURL)
		return
	}
	u := base + "/_matrix/identity/v2"
	f := p.http.get(ctx, "GET", u, nil, netip.Addr{})
	var v any
	if f.Err != nil || f.Status != 200 || json.Unmarshal(f.Body, &v) != nil {
		what := ""
		if f.Err != nil {
			what, _, _ = describeErr(f.Err, hostOf(base))
		} else {
			what = fmt.Sprintf("status %d", f.Status)
		}
		r.Client.IdentityOutcome = OutcomeFailPrompt
		r.add(SectionClient, StatusFail, "point m.identity_server.base_url at a working identity server, or remove it",
			"m.identity_server: FAIL_PROMPT (%s): GET %s: %s", reasonInvalidIS, u, what)
		return
	}
	r.Client.IdentityOutcome = OutcomeSuccess
	r.add(SectionClient, StatusOK, "", "m.identity_server: SUCCESS, %s", base)
}

// truthy is JavaScript's truthiness for a decoded JSON value.
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != ""
	case float64:
		return x != 0
	}
	return true
}

// sanitizeURL is matrix-js-sdk's sanitizeWellKnownUrl: an http or https URL
// with a hostname, reduced to scheme, host, port and path, without one
// trailing slash.
func sanitizeURL(v any) (string, bool) {
	s, ok := v.(string)
	if !ok || s == "" {
		return "", false
	}
	u, err := url.Parse(s)
	if err != nil || u.Hostname() == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", false
	}
	out := u.Scheme + "://" + u.Host + u.EscapedPath()
	out = strings.TrimSuffix(out, "/")
	return out, true
}

// checkBaseURL warns about base_url forms that work in Element but not in
// every client.
func (p *prober) checkBaseURL(raw string) {
	r := p.rep
	u, _ := url.Parse(raw)
	if u.Scheme == "http" {
		r.add(SectionClient, StatusWarn, "use https:// in base_url",
			"base_url %q uses plain http: passwords and tokens travel unencrypted, and web clients on https pages cannot reach it", raw)
	}
	if strings.HasSuffix(raw, "/") {
		r.add(SectionClient, StatusWarn, "remove the trailing slash from base_url",
			"base_url %q ends in a slash: Element strips it, but some clients build URLs like //_matrix/… that fail", raw)
	}
	if path := strings.TrimSuffix(u.Path, "/"); path != "" {
		r.add(SectionClient, StatusWarn, "serve the client API at the root of a hostname if you can",
			"base_url %q has a path (%s): Element supports it, some clients and bridges do not", raw, path)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		r.add(SectionClient, StatusWarn, "remove the query, fragment or user info from base_url",
			"base_url %q has a query, fragment or user info that clients drop", raw)
	}
}

func hostOf(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	return u.Hostname()
}

func anyIn(have, want []string) bool {
	for _, h := range have {
		for _, w := range want {
			if h == w {
				return true
			}
		}
	}
	return false
}

// checkCORS checks that a browser may read the response. Without
// Access-Control-Allow-Origin, Element Web cannot even see a 404 and treats
// it as FAIL_PROMPT instead of IGNORE (MSC2499).
func (p *prober) checkCORS(u string, f *fetched, required bool) {
	acao := f.Header.Get("Access-Control-Allow-Origin")
	if acao == "*" || acao == elementOrigin {
		p.rep.add(SectionClient, StatusOK, "", "CORS: %s answers %d with Access-Control-Allow-Origin: %s", u, f.Status, acao)
		return
	}
	st := StatusWarn
	if required {
		st = StatusFail
	}
	what := "no Access-Control-Allow-Origin"
	if acao != "" {
		what = "Access-Control-Allow-Origin: " + acao
	}
	p.rep.add(SectionClient, st, "send Access-Control-Allow-Origin: * on every response under /.well-known/matrix/ and /_matrix/",
		"CORS: %s answers %d with %s: web clients cannot read it", u, f.Status, what)
}

// checkPreflight sends the OPTIONS request a browser sends before a
// request with custom headers.
func (p *prober) checkPreflight(ctx context.Context, u string) {
	h := http.Header{}
	h.Set("Origin", elementOrigin)
	h.Set("Access-Control-Request-Method", "GET")
	h.Set("Access-Control-Request-Headers", "Authorization, Content-Type")
	f := p.http.get(ctx, "OPTIONS", u, h, netip.Addr{})
	fix := "answer OPTIONS with 200 or 204, Access-Control-Allow-Origin: * and Access-Control-Allow-Methods including GET"
	if f.Err != nil {
		msg, _, _ := describeErr(f.Err, p.sn.Host)
		p.rep.add(SectionClient, StatusWarn, fix, "CORS: OPTIONS %s: %s", u, msg)
		return
	}
	acao := f.Header.Get("Access-Control-Allow-Origin")
	methods := strings.ToUpper(f.Header.Get("Access-Control-Allow-Methods"))
	okStatus := f.Status == 200 || f.Status == 204
	okMethods := methods == "*" || strings.Contains(methods, "GET")
	if okStatus && (acao == "*" || acao == elementOrigin) && okMethods {
		p.rep.add(SectionClient, StatusOK, "", "CORS: OPTIONS %s answers %d, Access-Control-Allow-Origin: %s, Access-Control-Allow-Methods: %s",
			u, f.Status, acao, f.Header.Get("Access-Control-Allow-Methods"))
		return
	}
	p.rep.add(SectionClient, StatusWarn, fix, "CORS: OPTIONS %s answers %d, Access-Control-Allow-Origin %q, Access-Control-Allow-Methods %q",
		u, f.Status, acao, f.Header.Get("Access-Control-Allow-Methods"))
}

// supportDocument fetches /.well-known/matrix/support (Matrix 1.10) and
// checks it against the schema.
func (p *prober) supportDocument(ctx context.Context) {
	ctx = withSection(ctx, SectionClient)
	r := p.rep
	u := "https://" + p.sn.hostForURL() + "/.well-known/matrix/support"
	f := p.http.get(ctx, "GET", u, nil, netip.Addr{})
	if f.Err != nil {
		msg, fix, _ := describeErr(f.Err, p.sn.Host)
		r.add(SectionClient, StatusWarn, fix, "support document: GET %s: %s", u, msg)
		return
	}
	p.checkCORS(u, f, false)
	switch {
	case f.Status == 404:
		r.add(SectionClient, StatusInfo, "", "support document: none published (404); it is optional")
		return
	case f.Status != 200:
		r.add(SectionClient, StatusWarn, "answer 200 with the support document, or 404 if there is none",
			"support document: status %d", f.Status)
		return
	}
	problems := supportProblems(f.Body)
	if len(problems) == 0 {
		r.add(SectionClient, StatusOK, "", "support document: valid%s", bodyPreview(f.Body))
		return
	}
	for _, pr := range problems {
		r.add(SectionClient, StatusFail, `follow the schema: {"contacts": [{"matrix_id": "@admin:example.com", "email_address": "admin@example.com", "role": "m.role.admin"}], "support_page": "https://example.com/help"}`,
			"support document: %s", pr)
	}
}

var namespacedID = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,254}$`)

// supportProblems validates a support document against the Client-Server
// API schema of GET /.well-known/matrix/support.
func supportProblems(body []byte) []string {
	var probs []string
	var v any
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&v); err != nil {
		return []string{"not JSON: " + err.Error()}
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return []string{fmt.Sprintf("a JSON %s, not an object", jsonKind(v))}
	}
	nContacts := 0
	if cv, ok := obj["contacts"]; ok {
		list, ok := cv.([]any)
		if !ok {
			probs = append(probs, fmt.Sprintf("contacts is a JSON %s, not an array", jsonKind(cv)))
		}
		nContacts = len(list)
		for i, item := range list {
			c, ok := item.(map[string]any)
			if !ok {
				probs = append(probs, fmt.Sprintf("contacts[%d] is a JSON %s, not an object", i, jsonKind(item)))
				continue
			}
			role, ok := c["role"].(string)
			switch {
			case !ok:
				probs = append(probs, fmt.Sprintf("contacts[%d] has no role (m.role.admin or m.role.security)", i))
			case role == "m.role.admin" || role == "m.role.security":
			case strings.HasPrefix(role, "m."):
				probs = append(probs, fmt.Sprintf("contacts[%d].role %q is not a role the specification defines", i, role))
			case !namespacedID.MatchString(role):
				probs = append(probs, fmt.Sprintf("contacts[%d].role %q is neither m.role.admin, m.role.security nor a namespaced identifier", i, role))
			}
			mx, hasMX := c["matrix_id"]
			em, hasEM := c["email_address"]
			if !hasMX && !hasEM {
				probs = append(probs, fmt.Sprintf("contacts[%d] has neither matrix_id nor email_address", i))
			}
			if hasMX {
				s, ok := mx.(string)
				if !ok || !strings.HasPrefix(s, "@") || !strings.Contains(s, ":") {
					probs = append(probs, fmt.Sprintf("contacts[%d].matrix_id %v is not a user ID like @admin:example.com", i, jsonString(mx)))
				}
			}
			if hasEM {
				s, ok := em.(string)
				if !ok || strings.Count(s, "@") != 1 || strings.HasPrefix(s, "@") || strings.HasSuffix(s, "@") {
					probs = append(probs, fmt.Sprintf("contacts[%d].email_address %v is not an email address", i, jsonString(em)))
				}
			}
		}
	}
	hasPage := false
	if pv, ok := obj["support_page"]; ok {
		s, ok := pv.(string)
		u, err := url.Parse(s)
		if !ok || err != nil || !u.IsAbs() || u.Host == "" {
			probs = append(probs, fmt.Sprintf("support_page %v is not an absolute URL", jsonString(pv)))
		} else {
			hasPage = true
		}
	}
	if nContacts == 0 && !hasPage {
		probs = append(probs, "it needs at least one contact or a support_page")
	}
	return probs
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
