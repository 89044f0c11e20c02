package probe

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// serverName is a server name (or an m.server value, which uses the same
// grammar) split into its parts.
type serverName struct {
	// Host is the hostname as written: a DNS name, a dotted-quad IPv4
	// literal, or an IPv6 literal without its brackets.
	Host string
	// IP is set when Host is an IP literal.
	IP netip.Addr
	// Port is the explicit port; zero when none was written.
	Port uint16
}

// hostForURL is Host as it appears in a URL or Host header: IPv6 literals
// get their brackets back.
func (s serverName) hostForURL() string {
	if s.IP.Is6() {
		return "[" + s.Host + "]"
	}
	return s.Host
}

func (s serverName) String() string {
	if s.Port != 0 {
		return s.hostForURL() + ":" + strconv.Itoa(int(s.Port))
	}
	return s.hostForURL()
}

// parseServerName checks s against the grammar in the Appendices ("Server
// Name") and the port range 1-65535. The error says what is wrong in words
// an admin can act on.
func parseServerName(s string) (serverName, error) {
	var sn serverName
	if s == "" {
		return sn, fmt.Errorf("it is empty")
	}
	if strings.Contains(s, "://") {
		return sn, fmt.Errorf("%q is a URL; write only the host and optional port, without a scheme or path", s)
	}
	if strings.ContainsAny(s, "/?#@ ") {
		return sn, fmt.Errorf("%q contains characters a server name cannot have (only a hostname and an optional :port)", s)
	}
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return sn, fmt.Errorf("%q opens an IPv6 literal with [ but never closes it", s)
		}
		host, port = s[1:end], s[end+1:]
		if port != "" {
			if port[0] != ':' {
				return sn, fmt.Errorf("%q has text after the IPv6 literal that is not :port", s)
			}
			port = port[1:]
			if port == "" {
				return sn, fmt.Errorf("%q ends in a colon without a port", s)
			}
		}
		if len(host) < 2 || len(host) > 45 || strings.Trim(host, "0123456789abcdefABCDEF:.") != "" {
			return sn, fmt.Errorf("%q is not an IPv6 literal", "["+host+"]")
		}
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is6() {
			return sn, fmt.Errorf("%q is not a valid IPv6 address", host)
		}
		sn.IP = ip
	} else {
		if i := strings.IndexByte(s, ':'); i >= 0 {
			host, port = s[:i], s[i+1:]
			if strings.IndexByte(port, ':') >= 0 {
				return sn, fmt.Errorf("%q has more than one colon; write IPv6 literals in brackets, like [2001:db8::1]:8448", s)
			}
			if port == "" {
				return sn, fmt.Errorf("%q ends in a colon without a port", s)
			}
		}
		if host == "" {
			return sn, fmt.Errorf("%q has no hostname", s)
		}
		if isDottedQuadShape(host) {
			ip, err := netip.ParseAddr(host)
			if err != nil || !ip.Is4() {
				return sn, fmt.Errorf("%q looks like an IPv4 address but each of its four numbers must be 0 to 255", host)
			}
			sn.IP = ip
		} else {
			if len(host) > 255 {
				return sn, fmt.Errorf("hostname is %d characters long; the limit is 255", len(host))
			}
			for _, r := range host {
				if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
					return sn, fmt.Errorf("hostname %q contains %q; only letters, digits, '-' and '.' are allowed", host, r)
				}
			}
		}
	}
	sn.Host = host
	if port != "" {
		if len(port) > 5 || strings.Trim(port, "0123456789") != "" {
			return sn, fmt.Errorf("port %q is not a number from 1 to 65535", port)
		}
		n, _ := strconv.Atoi(port)
		if n < 1 || n > 65535 {
			return sn, fmt.Errorf("port %d is out of range; ports go from 1 to 65535", n)
		}
		sn.Port = uint16(n)
	}
	return sn, nil
}

// isDottedQuadShape reports whether s matches the grammar's IPv4address
// production (1*3DIGIT "." x4); such a string is an IPv4 literal, valid or not.
func isDottedQuadShape(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if len(p) < 1 || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// dnsNameProblem returns the conventional-hostname problems the grammar
// itself allows but DNS does not (empty labels, labels over 63 octets,
// leading or trailing hyphens); "" when there are none.
func dnsNameProblem(host string) string {
	h := strings.TrimSuffix(host, ".")
	for _, l := range strings.Split(h, ".") {
		switch {
		case l == "":
			return fmt.Sprintf("hostname %q has an empty label (two dots in a row, or a leading dot)", host)
		case len(l) > 63:
			return fmt.Sprintf("hostname %q has a label longer than 63 characters", host)
		case l[0] == '-' || l[len(l)-1] == '-':
			return fmt.Sprintf("hostname %q has a label that starts or ends with '-'", host)
		}
	}
	return ""
}
