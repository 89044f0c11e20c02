package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// The Matrix server-name grammar (Appendices, "Server Name"):
//
//	server_name = hostname [ ":" port ]
//	port        = 1*5DIGIT
//	hostname    = IPv4address / "[" IPv6address "]" / dns-name
//	dns-name    = 1*255dns-char
//	dns-char    = DIGIT / ALPHA / "-" / "."
//
// signpost also publishes these names in DNS, so it holds dns-names to the
// DNS rules as well: labels of 1 to 63 characters, no leading or trailing
// hyphen, and lower case, since that is how they appear in user IDs.

// hostnameProblem says what is wrong with a dns-name, or "" if nothing.
func hostnameProblem(s string) string {
	if s == "" {
		return "is empty"
	}
	if len(s) > 253 {
		return fmt.Sprintf("is %d characters long; a DNS name has at most 253", len(s))
	}
	if strings.HasSuffix(s, ".") {
		return fmt.Sprintf("ends with a dot; write %q", strings.TrimSuffix(s, "."))
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '.':
		case r >= 'A' && r <= 'Z':
			return fmt.Sprintf("has upper-case letters; Matrix server names are lower case: write %q", strings.ToLower(s))
		default:
			return fmt.Sprintf("contains %q; only letters, digits, \"-\" and \".\" are allowed (IDNs in their xn-- form)", r)
		}
	}
	for _, label := range strings.Split(s, ".") {
		switch {
		case label == "":
			return "has an empty label (two dots in a row, or a leading dot)"
		case len(label) > 63:
			return fmt.Sprintf("has a label of %d characters; DNS allows at most 63", len(label))
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Sprintf("has the label %q, which starts or ends with \"-\"", label)
		}
	}
	return ""
}

// originProblem checks a zone origin. Zones are DNS names, not host names,
// so underscores are fine (S3 delegates "_matrix-fed._tcp.example.com").
func originProblem(s string) string {
	if s == "" {
		return "is empty"
	}
	if p := schemeProblem(s, "the zone name"); p != "" {
		return p
	}
	if _, ok := dns.IsDomainName(s); !ok || strings.Contains(s, "..") || strings.HasPrefix(s, ".") {
		return "is not a valid DNS name; write e.g. \"chat.example.com\""
	}
	return ""
}

// schemeProblem catches the most common mistake, a URL where a name belongs.
func schemeProblem(s, want string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		rest := strings.TrimSuffix(s[i+3:], "/")
		return fmt.Sprintf("has a scheme (%s); write %s without it: %q", s[:i+3], want, rest)
	}
	return ""
}

// serverNameProblem checks a delegation's server_name: a dns-name, because
// only a server name without a port and without an IP literal is ever
// looked up through /.well-known/matrix/server or SRV.
func serverNameProblem(s string) string {
	if p := schemeProblem(s, "the bare name as in user IDs"); p != "" {
		return p
	}
	if h, port, err := net.SplitHostPort(s); err == nil {
		return fmt.Sprintf("has a port (%s); remote servers connect to a server name with a port directly and never read .well-known or SRV, so there is nothing to delegate: write %q", port, h)
	}
	if _, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return "is an IP address; remote servers connect to an IP literal directly, so delegation needs a DNS name"
	}
	return hostnameProblem(s)
}

// serverProblem checks m.server: hostname ":" port, with the port written out.
func serverProblem(s string) (host string, port uint16, problem string) {
	if p := schemeProblem(s, "host:port"); p != "" {
		return "", 0, p
	}
	h, ps, err := net.SplitHostPort(s)
	if err != nil {
		if _, err := netip.ParseAddr(s); err == nil && strings.Contains(s, ":") {
			return "", 0, fmt.Sprintf("is an IPv6 address without brackets; write \"[%s]:443\"", s)
		}
		return "", 0, fmt.Sprintf("has no port; without one, remote servers look up SRV records and then connect to port 8448, not 443: write %q", s+":443")
	}
	n, err := strconv.Atoi(ps)
	if err != nil || len(ps) > 5 || n < 1 || n > 65535 {
		return "", 0, fmt.Sprintf("port %q is out of range; use 1-65535", ps)
	}
	if strings.HasPrefix(s, "[") {
		if a, err := netip.ParseAddr(h); err != nil || !a.Is6() {
			return "", 0, fmt.Sprintf("%q is not an IPv6 address", h)
		}
		return h, uint16(n), ""
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Is6() {
			return "", 0, fmt.Sprintf("an IPv6 literal needs brackets: write \"[%s]:%s\"", h, ps)
		}
		return h, uint16(n), ""
	}
	if p := hostnameProblem(h); p != "" {
		return "", 0, fmt.Sprintf("host %q %s", h, p)
	}
	return h, uint16(n), ""
}

// listenProblem checks a listen address; an empty host means every address.
func listenProblem(s string) string {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf("%q is not host:port; write e.g. \"[::]:53\" or \"127.0.0.1:8053\"", s)
	}
	if h != "" {
		if _, err := netip.ParseAddr(h); err != nil && h != "localhost" {
			return fmt.Sprintf("host %q is not an IP address; listen on an IP address (\"[::]\" for all)", h)
		}
	}
	if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 65535 {
		return fmt.Sprintf("port %q is out of range; use 0-65535", p)
	}
	return ""
}

// fqdn lower-cases a name and adds the trailing dot.
func fqdn(s string) string {
	s = strings.ToLower(s)
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}
