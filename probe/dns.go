package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// answer is the outcome of one DNS query.
type answer struct {
	Name  string // fully qualified, lower case
	Type  uint16
	Msg   *dns.Msg // nil when Err is set
	Err   error    // transport failure: timeout, refused connection, garbage
	Cache bool     // true when this came from the per-run cache
}

// rcodeText is the rcode's mnemonic, or the transport error.
func (a *answer) rcodeText() string {
	if a.Err != nil {
		return "no answer (" + a.Err.Error() + ")"
	}
	return dns.RcodeToString[a.Msg.Rcode]
}

// failed reports whether the query got no usable answer: a transport error
// or an rcode other than NOERROR and NXDOMAIN. Synapse treats such answers to
// an SRV query as fatal rather than as "no record".
func (a *answer) failed() bool {
	return a.Err != nil || (a.Msg.Rcode != dns.RcodeSuccess && a.Msg.Rcode != dns.RcodeNameError)
}

func fqdn(name string) string { return dns.CanonicalName(name) }

// ask sends a recursive query for name/qtype to the configured resolver,
// once per run: later calls return the cached answer. The first call records
// an info line in section saying what was asked and what came back.
func (p *prober) ask(ctx context.Context, section, name string, qtype uint16) *answer {
	key := fqdn(name) + "/" + dns.TypeToString[qtype]
	if a, ok := p.cache[key]; ok {
		c := *a
		c.Cache = true
		return &c
	}
	m := new(dns.Msg)
	m.SetQuestion(fqdn(name), qtype)
	m.RecursionDesired = true
	m.SetEdns0(1232, false)
	a := &answer{Name: fqdn(name), Type: qtype}
	a.Msg, a.Err = p.exchange(ctx, p.resolver, m)
	p.cache[key] = a
	p.rep.add(section, StatusInfo, "", "asked %s %s: %s", dns.TypeToString[qtype], a.Name, describeAnswer(a, qtype))
	return a
}

// describeAnswer renders the rcode and the records of the asked type (and
// any CNAMEs on the way) compactly.
func describeAnswer(a *answer, qtype uint16) string {
	if a.Err != nil {
		return a.rcodeText()
	}
	var rrs []string
	for _, rr := range a.Msg.Answer {
		h := rr.Header()
		if h.Rrtype == qtype || h.Rrtype == dns.TypeCNAME {
			rrs = append(rrs, rrData(rr))
		}
	}
	s := a.rcodeText()
	if len(rrs) == 0 {
		if a.Msg.Rcode == dns.RcodeSuccess {
			s += ", no records"
		}
		return s
	}
	return s + ", " + strings.Join(rrs, "; ")
}

// rrData is a record without owner, TTL and class, e.g. "SRV 10 5 443 hs.example.com.".
func rrData(rr dns.RR) string {
	h := rr.Header()
	full := rr.String()
	hdr := h.String()
	data := strings.TrimPrefix(full, hdr)
	t := dns.TypeToString[h.Rrtype]
	if h.Rrtype == dns.TypeCNAME {
		return h.Name + " CNAME " + data
	}
	return t + " " + data
}

// exchange sends m to server over UDP, and again over TCP when the answer is
// truncated or UDP got no answer.
func (p *prober) exchange(ctx context.Context, server string, m *dns.Msg) (*dns.Msg, error) {
	r, err := p.exchangeOn(ctx, "udp", server, m)
	if err == nil && !r.Truncated {
		return r, nil
	}
	if ctx.Err() != nil {
		return nil, err
	}
	rt, errt := p.exchangeOn(ctx, "tcp", server, m)
	if errt != nil {
		if err != nil {
			return nil, err
		}
		return r, nil // keep the truncated UDP answer; better than nothing
	}
	return rt, nil
}

var errMismatch = errors.New("answer does not match the question")

// exchangeOn does one query over one transport. Connections go through
// Options.Dial so tests can map nameserver addresses to loopback.
func (p *prober) exchangeOn(ctx context.Context, network, server string, m *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	m = m.Copy()
	m.Id = dns.Id()
	buf, err := m.Pack()
	if err != nil {
		return nil, err
	}
	conn, err := p.dial(ctx, network, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if network == "tcp" {
		framed := make([]byte, 2+len(buf))
		binary.BigEndian.PutUint16(framed, uint16(len(buf)))
		copy(framed[2:], buf)
		if _, err := conn.Write(framed); err != nil {
			return nil, err
		}
		var l [2]byte
		if _, err := io.ReadFull(conn, l[:]); err != nil {
			return nil, err
		}
		resp := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(conn, resp); err != nil {
			return nil, err
		}
		return checkReply(m, resp)
	}
	if _, err := conn.Write(buf); err != nil {
		return nil, err
	}
	resp := make([]byte, 65535)
	for {
		n, err := conn.Read(resp)
		if err != nil {
			return nil, err
		}
		r, err := checkReply(m, resp[:n])
		if errors.Is(err, errMismatch) {
			continue // a stray or spoofed datagram; keep waiting for ours
		}
		return r, err
	}
}

func checkReply(q *dns.Msg, b []byte) (*dns.Msg, error) {
	r := new(dns.Msg)
	if err := r.Unpack(b); err != nil {
		return nil, fmt.Errorf("malformed answer: %w", err)
	}
	if r.Id != q.Id || len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, q.Question[0].Name) ||
		r.Question[0].Qtype != q.Question[0].Qtype {
		return nil, errMismatch
	}
	return r, nil
}

// addrResult is a name resolved to addresses the way getaddrinfo would:
// AAAA and A, following CNAMEs.
type addrResult struct {
	V6, V4 []netip.Addr
	// Chain lists the CNAMEs followed, in order ("a. -> b.").
	Chain []string
	// Failed lists queries that got no usable answer (SERVFAIL, timeout…).
	Failed []string
}

func (r addrResult) all() []netip.Addr {
	return append(append([]netip.Addr(nil), r.V6...), r.V4...)
}

// lookupAddrs resolves host to its IPv6 and IPv4 addresses. Every address
// is checked for being private, loopback or for documentation.
func (p *prober) lookupAddrs(ctx context.Context, section, host string) addrResult {
	var res addrResult
	for _, qt := range []uint16{dns.TypeAAAA, dns.TypeA} {
		name := fqdn(host)
		for hop := 0; hop < 8; hop++ {
			a := p.ask(ctx, section, name, qt)
			if a.failed() {
				res.Failed = append(res.Failed, fmt.Sprintf("%s %s: %s", dns.TypeToString[qt], name, a.rcodeText()))
				break
			}
			addrs, final, chain := followAnswer(a.Msg, name, qt)
			res.Chain = appendUnique(res.Chain, chain...)
			if qt == dns.TypeAAAA {
				res.V6 = append(res.V6, addrs...)
			} else {
				res.V4 = append(res.V4, addrs...)
			}
			if len(addrs) > 0 || final == name {
				break
			}
			name = final // the answer stopped at a CNAME; ask for its target
		}
	}
	for _, ip := range res.all() {
		p.checkAddr(host, ip)
	}
	return res
}

func appendUnique(list []string, items ...string) []string {
	for _, it := range items {
		found := false
		for _, l := range list {
			found = found || l == it
		}
		if !found {
			list = append(list, it)
		}
	}
	return list
}

// followAnswer walks the CNAME chain from name through the answer section
// and returns the addresses of the final name, the final name, and the
// chain links followed.
func followAnswer(m *dns.Msg, name string, qt uint16) ([]netip.Addr, string, []string) {
	var chain []string
	cur := name
	for i := 0; i < 16; i++ {
		next := ""
		for _, rr := range m.Answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, cur) {
				next = fqdn(c.Target)
			}
		}
		if next == "" {
			break
		}
		chain = append(chain, cur+" -> "+next)
		cur = next
	}
	var addrs []netip.Addr
	for _, rr := range m.Answer {
		if !strings.EqualFold(rr.Header().Name, cur) {
			continue
		}
		switch v := rr.(type) {
		case *dns.A:
			if qt == dns.TypeA {
				if ip, ok := netip.AddrFromSlice(v.A.To4()); ok {
					addrs = append(addrs, ip)
				}
			}
		case *dns.AAAA:
			if qt == dns.TypeAAAA {
				if ip, ok := netip.AddrFromSlice(v.AAAA.To16()); ok {
					addrs = append(addrs, ip)
				}
			}
		}
	}
	return addrs, cur, chain
}

// checkAddr warns once per address that remote servers cannot reach
// loopback, private, link-local or documentation addresses.
func (p *prober) checkAddr(host string, ip netip.Addr) {
	if p.seenAddr[ip] {
		return
	}
	p.seenAddr[ip] = true
	kind := addrKind(ip)
	if kind == "" {
		return
	}
	if p.o.AllowLocal {
		p.rep.add(SectionDNS, StatusInfo, "", "%s has %s address %s; accepted because local addresses are allowed for this probe", host, kind, ip)
		return
	}
	p.rep.add(SectionDNS, StatusWarn, "publish the host's public address instead, unless this setup is only for a private network",
		"%s has %s address %s: homeservers on the internet cannot reach it", host, kind, ip)
}

var docPrefixes = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("3fff::/20"),
}

var sharedPrefix = netip.MustParsePrefix("100.64.0.0/10")

// addrKind names why an address is not reachable from the internet, or
// returns "" for an ordinary public address.
func addrKind(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback():
		return "loopback"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsPrivate():
		return "private"
	case ip.IsLinkLocalUnicast():
		return "link-local"
	case ip.IsMulticast():
		return "multicast"
	case sharedPrefix.Contains(ip):
		return "carrier-grade NAT"
	}
	for _, p := range docPrefixes {
		if p.Contains(ip) {
			return "documentation"
		}
	}
	return ""
}

// srvResult is one SRV lookup.
type srvResult struct {
	Name string
	A    *answer
	// Records are sorted as a remote server tries them: priority ascending,
	// then weight descending (RFC 2782 picks randomly by weight; heavier first
	// is the most likely order).
	Records []*dns.SRV
	// Unavailable is true when the only record has target ".": RFC 2782's
	// "service decidedly not available".
	Unavailable bool
}

func (p *prober) lookupSRV(ctx context.Context, section, name string) srvResult {
	a := p.ask(ctx, section, name, dns.TypeSRV)
	res := srvResult{Name: fqdn(name), A: a}
	if a.failed() {
		return res
	}
	for _, rr := range a.Msg.Answer {
		if s, ok := rr.(*dns.SRV); ok && strings.EqualFold(s.Hdr.Name, res.Name) {
			res.Records = append(res.Records, s)
		}
	}
	if len(res.Records) == 1 && res.Records[0].Target == "." {
		res.Unavailable = true
		res.Records = nil
		return res
	}
	sort.SliceStable(res.Records, func(i, j int) bool {
		a, b := res.Records[i], res.Records[j]
		if a.Priority != b.Priority {
			return a.Priority < b.Priority
		}
		return a.Weight > b.Weight
	})
	return res
}

// dialer is what Options.Dial defaults to.
func defaultDial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}
