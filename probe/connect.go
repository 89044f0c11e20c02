package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// connectTarget connects to every address of t, IPv6 and IPv4 alike, as a
// remote homeserver would. In a rehearsal failures are warnings: they
// describe what will happen when the live path breaks.
func (p *prober) connectTarget(ctx context.Context, section string, t *Target, rehearsal bool) {
	for _, ip := range t.Addrs {
		p.connectAddr(ctx, section, t, ip, rehearsal)
	}
}

func (p *prober) connectAddr(ctx context.Context, section string, t *Target, ip netip.Addr, rehearsal bool) {
	ap := netip.AddrPortFrom(ip, t.Port)
	fam := "IPv4"
	if ip.Is6() && !ip.Is4In6() {
		fam = "IPv6"
	}
	label := fmt.Sprintf("%s %s (%s, Host %s)", fam, ap, t.Host, t.HostHeader)
	add := func(st Status, fix, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if rehearsal && st == StatusFail {
			st = StatusWarn
			msg = "the fallback will fail when the well-known endpoint is down: " + msg
		}
		p.rep.add(section, st, fix, "%s: %s", label, msg)
	}

	conn, err := p.handshake(ctx, ap, t.SNI)
	if err != nil {
		msg, fix, _ := describeErr(err, t.CertName)
		add(StatusFail, fix, "cannot connect: %s", msg)
		return
	}
	state := conn.ConnectionState()
	conn.Close()
	if state.Version < tls.VersionTLS12 {
		add(StatusFail, "enable TLS 1.2 and 1.3 on the homeserver or its reverse proxy", "negotiated %s; remote servers require TLS 1.2 or newer", tls.VersionName(state.Version))
		return
	}
	if len(state.PeerCertificates) == 0 {
		add(StatusFail, "serve a certificate", "the server sent no certificate")
		return
	}
	leaf := state.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range state.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{
		DNSName:       t.CertName,
		Roots:         p.o.Roots,
		Intermediates: inter,
		CurrentTime:   p.now(),
	})
	if err != nil {
		msg, fix, _ := describeErr(err, t.CertName)
		add(StatusFail, fix, "%s", msg)
		p.rep.add(section, StatusSkip, "", "%s: federation requests skipped: remote servers stop at the certificate", label)
		return
	}
	add(StatusOK, "", "%s, certificate for %s valid until %s, issued by %s",
		tls.VersionName(state.Version), t.CertName, leaf.NotAfter.UTC().Format("2006-01-02"), issuerName(leaf))

	tr := &http.Transport{
		Proxy: nil,
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return p.handshake(ctx, ap, t.SNI)
		},
		ResponseHeaderTimeout: p.timeout,
	}
	defer tr.CloseIdleConnections()

	status, body, err := p.fedGet(ctx, tr, t, "/_matrix/federation/v1/version")
	switch {
	case err != nil:
		msg, fix, _ := describeErr(err, t.CertName)
		add(StatusFail, fix, "GET /_matrix/federation/v1/version: %s", msg)
	case status != 200:
		add(StatusFail, "route /_matrix/federation/ to the homeserver in the reverse proxy",
			"GET /_matrix/federation/v1/version: status %d%s", status, bodyPreview(body))
	default:
		var v struct {
			Server struct {
				Name    string `json:"name"`
				Version string `json:"version"`
			} `json:"server"`
		}
		if json.Unmarshal(body, &v) != nil || v.Server.Name == "" {
			add(StatusWarn, "route /_matrix/federation/ to the homeserver", "GET /_matrix/federation/v1/version: 200 but not a version object%s", bodyPreview(body))
		} else {
			add(StatusOK, "", "federation API answers: %s %s", v.Server.Name, v.Server.Version)
		}
	}

	status, body, err = p.fedGet(ctx, tr, t, "/_matrix/key/v2/server")
	switch {
	case err != nil:
		msg, fix, _ := describeErr(err, t.CertName)
		add(StatusFail, fix, "GET /_matrix/key/v2/server: %s", msg)
		return
	case status != 200:
		add(StatusFail, "route /_matrix/key/ to the homeserver in the reverse proxy", "GET /_matrix/key/v2/server: status %d%s", status, bodyPreview(body))
		return
	}
	for _, f := range checkKeyResponse(body, p.name, p.now()) {
		add(f.Status, f.Fix, "%s", f.Msg)
	}
}

// handshake dials ap and completes a TLS handshake sending sni (none for an
// IP literal, as the specification requires). Verification is done by the
// caller against the probe's roots and clock, so it can say which part
// failed; older TLS versions are allowed here only so they can be reported.
func (p *prober) handshake(ctx context.Context, ap netip.AddrPort, sni string) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	raw, err := p.dial(ctx, "tcp", ap.String())
	if err != nil {
		return nil, err
	}
	if _, err := netip.ParseAddr(sni); err == nil {
		sni = ""
	}
	c := tls.Client(raw, &tls.Config{
		ServerName:         sni,
		InsecureSkipVerify: true, // verified by the caller with Options.Roots; see above
		MinVersion:         tls.VersionTLS10,
		NextProtos:         []string{"http/1.1"},
	})
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

func (p *prober) fedGet(ctx context.Context, tr *http.Transport, t *Target, path string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout*2)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "https://"+t.HostHeader+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Host = t.HostHeader
	req.Header.Set("User-Agent", "signpost-probe")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, err
}

func issuerName(c *x509.Certificate) string {
	if c.Issuer.CommonName != "" {
		return c.Issuer.CommonName
	}
	if len(c.Issuer.Organization) > 0 {
		return strings.Join(c.Issuer.Organization, ", ")
	}
	return c.Issuer.String()
}

// rehearseSRV checks the SRV fallback even when the well-known endpoint
// works: if it is published, its targets must serve a certificate for the
// server name, or federation breaks the day the well-known endpoint is down.
func (p *prober) rehearseSRV(ctx context.Context) {
	r := p.rep
	switch {
	case p.sn.IP.IsValid() || p.sn.Port != 0:
		r.add(SectionFallback, StatusSkip, "", "SRV fallback rehearsal skipped: remote servers never look up SRV for a server name with an IP literal or an explicit port")
		return
	case p.srvLive != "":
		r.add(SectionFallback, StatusSkip, "", "SRV fallback rehearsal skipped: the well-known request failed, so the SRV path above is already the live one")
		return
	}
	res := p.lookupSRV(ctx, SectionFallback, "_matrix-fed._tcp."+p.sn.Host)
	switch {
	case res.A.failed():
		r.add(SectionFallback, StatusWarn, fmt.Sprintf("make the nameservers answer SRV queries for %s", res.Name),
			"SRV %s got %s: when the well-known endpoint is down, Synapse will not federate", res.Name, res.A.rcodeText())
		return
	case res.Unavailable:
		r.add(SectionFallback, StatusWarn, fmt.Sprintf("delete the SRV record %s, or point it at the homeserver", res.Name),
			"SRV %s says \"no service\" (target \".\"): when the well-known endpoint is down, federation stops", res.Name)
		return
	case len(res.Records) == 0:
		r.add(SectionFallback, StatusInfo, "", "no SRV record at %s: when the well-known endpoint is down, remote servers try %s port 8448",
			res.Name, p.sn.Host)
		return
	}
	before := len(r.Checks)
	for _, s := range res.Records {
		if s.Target == "." {
			continue
		}
		target := strings.TrimSuffix(s.Target, ".")
		addrs := p.lookupAddrs(ctx, SectionFallback, target)
		if len(addrs.all()) == 0 {
			r.add(SectionFallback, StatusWarn, fmt.Sprintf("publish an A and/or AAAA record for %s", target),
				"SRV target %s has no address: the fallback will fail when the well-known endpoint is down", target)
			continue
		}
		t := Target{Step: "4 (fallback rehearsal)", Host: target, Port: s.Port, HostHeader: p.sn.Host, CertName: p.sn.Host, SNI: p.sn.Host, Addrs: addrs.all()}
		p.connectTarget(ctx, SectionFallback, &t, true)
	}
	for _, c := range r.Checks[before:] {
		if c.Section == SectionFallback && c.Status == StatusWarn {
			return
		}
	}
	r.add(SectionFallback, StatusOK, "", "the SRV fallback %s works: if the well-known endpoint goes down, federation continues", res.Name)
}
