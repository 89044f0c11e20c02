package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// maxWellKnown is the body size Synapse reads from a well-known endpoint
// (WELL_KNOWN_MAX_SIZE, 50 KiB); MSC2499 proposes 51200 too.
const maxWellKnown = 50 * 1024

// maxRedirects bounds redirect chains. Twisted's RedirectAgent, which
// Synapse uses, stops after 20.
const maxRedirects = 20

var (
	errRedirectLoop     = errors.New("redirect loop")
	errTooManyRedirects = fmt.Errorf("more than %d redirects", maxRedirects)
)

// noAddrError is a hostname that resolved to no address.
type noAddrError struct {
	host   string
	detail string
}

func (e *noAddrError) Error() string {
	return fmt.Sprintf("%s has no usable A or AAAA record (%s)", e.host, e.detail)
}

// httpClient makes the probe's "regular HTTPS requests": names resolved
// through the probe's own DNS, connections through Options.Dial,
// certificates verified against Options.Roots at the probe's clock.
type httpClient struct {
	p  *prober
	tr *http.Transport
	// pinned transports, one per forced address, closed with the client.
	pinned []*http.Transport
}

func newHTTPClient(p *prober) *httpClient {
	c := &httpClient{p: p}
	c.tr = c.transport(netip.Addr{})
	return c
}

func (c *httpClient) close() {
	c.tr.CloseIdleConnections()
	for _, t := range c.pinned {
		t.CloseIdleConnections()
	}
}

// transport builds a Transport; when pin is valid every connection to a
// hostname goes to that address instead of the DNS answer (split-brain
// checks).
func (c *httpClient) transport(pin netip.Addr) *http.Transport {
	p := c.p
	return &http.Transport{
		Proxy: nil, // never the environment's proxy: we must see what remote servers see
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if ip, err := netip.ParseAddr(host); err == nil {
				return p.dial(ctx, network, net.JoinHostPort(ip.String(), port))
			}
			var addrs []netip.Addr
			if pin.IsValid() {
				addrs = []netip.Addr{pin}
			} else {
				r := p.lookupAddrs(ctx, sectionOf(ctx), host)
				addrs = r.all()
				if len(addrs) == 0 {
					detail := "no records"
					if len(r.Failed) > 0 {
						detail = strings.Join(r.Failed, "; ")
					}
					return nil, &noAddrError{host: host, detail: detail}
				}
			}
			var firstErr error
			for _, ip := range addrs {
				conn, err := p.dial(ctx, network, net.JoinHostPort(ip.String(), port))
				if err == nil {
					return conn, nil
				}
				if firstErr == nil {
					firstErr = err
				}
			}
			return nil, firstErr
		},
		TLSClientConfig: &tls.Config{
			RootCAs:    p.o.Roots,
			MinVersion: tls.VersionTLS12,
			Time:       p.now,
		},
		TLSHandshakeTimeout:   p.timeout,
		ResponseHeaderTimeout: p.timeout,
		MaxIdleConnsPerHost:   2,
	}
}

type sectionKey struct{}

// withSection tells the dialer which report section a request belongs to,
// so the DNS lookups it makes are listed there.
func withSection(ctx context.Context, section string) context.Context {
	return context.WithValue(ctx, sectionKey{}, section)
}

func sectionOf(ctx context.Context) string {
	if s, ok := ctx.Value(sectionKey{}).(string); ok {
		return s
	}
	return SectionResolve
}

// fetched is one HTTP exchange, redirects followed.
type fetched struct {
	URL    string
	Hops   []string // "302 -> https://…" for every redirect followed
	Status int
	Header http.Header
	Body   []byte
	// TooLarge is set when the body exceeded maxWellKnown; Body is then cut.
	TooLarge bool
	Err      error
}

// get fetches rawURL with method (GET or OPTIONS) and extra headers. When pin
// is valid the first hostname is connected at that address.
func (c *httpClient) get(ctx context.Context, method, rawURL string, hdr http.Header, pin netip.Addr) *fetched {
	f := &fetched{URL: rawURL}
	tr := c.tr
	if pin.IsValid() {
		tr = c.transport(pin)
		c.pinned = append(c.pinned, tr)
	}
	client := &http.Client{
		Transport: tr,
		Timeout:   c.p.timeout * 2,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			status := 0
			if req.Response != nil {
				status = req.Response.StatusCode
			}
			f.Hops = append(f.Hops, fmt.Sprintf("%d -> %s", status, req.URL))
			for _, v := range via {
				if v.URL.String() == req.URL.String() {
					return errRedirectLoop
				}
			}
			if len(via) > maxRedirects {
				return errTooManyRedirects
			}
			return nil
		},
	}
	ctx, cancel := context.WithTimeout(ctx, c.p.timeout*2)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
	if err != nil {
		f.Err = err
		return f
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	req.Header.Set("User-Agent", "signpost-probe")
	resp, err := client.Do(req)
	if err != nil {
		f.Err = unwrapURLError(err)
		return f
	}
	defer resp.Body.Close()
	f.Status = resp.StatusCode
	f.Header = resp.Header
	f.Body, err = io.ReadAll(io.LimitReader(resp.Body, maxWellKnown+1))
	if err != nil {
		f.Err = fmt.Errorf("reading the body: %w", err)
	}
	if len(f.Body) > maxWellKnown {
		f.TooLarge = true
		f.Body = f.Body[:maxWellKnown]
	}
	return f
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Kinds of failure describeErr tells apart.
const (
	errKindTLS      = "tls"
	errKindRedirect = "redirect"
	errKindDNS      = "dns"
	errKindNet      = "net"
)

// describeErr explains a connection or TLS failure, what fixes it, and which
// kind of failure it is.
func describeErr(err error, name string) (msg, fix, kind string) {
	var hn x509.HostnameError
	var hnp *x509.HostnameError
	var ua x509.UnknownAuthorityError
	var uap *x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var cip *x509.CertificateInvalidError
	var na *noAddrError
	var ne net.Error
	var ve *tls.CertificateVerificationError
	switch {
	case errors.Is(err, errRedirectLoop):
		return "the redirects loop back to a URL already visited", "make the redirect end at a URL that answers 200", errKindRedirect
	case errors.Is(err, errTooManyRedirects):
		return err.Error(), "redirect at most once or twice, straight to the final URL", errKindRedirect
	case errors.As(err, &hnp) || errors.As(err, &hn):
		if hnp != nil {
			hn = *hnp
		}
		if hn.Host != "" {
			name = hn.Host
		}
		return fmt.Sprintf("the certificate does not cover %s (it names %s)", name, certNames(hn.Certificate)),
			fmt.Sprintf("serve a certificate whose names include %s", name), errKindTLS
	case errors.As(err, &uap) || errors.As(err, &ua):
		return "the certificate is not signed by a trusted authority (self-signed, or the intermediate certificate is missing)",
			"serve the full chain from a public CA (e.g. Let's Encrypt), intermediates included", errKindTLS
	case errors.As(err, &cip) || errors.As(err, &ci):
		if cip != nil {
			ci = *cip
		}
		if ci.Reason == x509.Expired {
			return "the certificate has expired or is not yet valid: " + ci.Error(), "renew the certificate", errKindTLS
		}
		return "the certificate is invalid: " + ci.Error(), "serve a certificate from a public CA", errKindTLS
	case errors.As(err, &ve):
		return "the certificate did not verify: " + ve.Err.Error(), "serve a valid certificate chain", errKindTLS
	case errors.As(err, &na):
		return err.Error(), fmt.Sprintf("publish an A and/or AAAA record for %s", na.host), errKindDNS
	case errors.As(err, &ne) && ne.Timeout():
		return "timed out: " + err.Error(), "check that the host is up and that no firewall drops the connection", errKindNet
	}
	var ae tls.AlertError
	var re tls.RecordHeaderError
	if errors.As(err, &ae) || errors.As(err, &re) || strings.Contains(err.Error(), "tls:") {
		return "TLS failed: " + err.Error(), "serve TLS 1.2 or newer with a valid certificate on this port", errKindTLS
	}
	return err.Error(), "check that the host is up, listening, and reachable through the firewall", errKindNet
}

func certNames(c *x509.Certificate) string {
	if c == nil {
		return "nothing"
	}
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "no subject alternative names"
	}
	return strings.Join(names, ", ")
}
