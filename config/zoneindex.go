package config

import "github.com/miekg/dns"

// enclosing returns the value byOrigin holds for the deepest of name's
// ancestors, name included, and false if it holds none. It costs one map
// look-up a label, where testing every zone with dns.IsSubDomain cost
// 16% of loading 3,000 zones and grew with the square of their number.
func enclosing[T any](byOrigin map[string]T, name string) (T, bool) {
	name = dns.CanonicalName(name)
	for off, end := 0, false; !end; off, end = dns.NextLabel(name, off) {
		if v, ok := byOrigin[name[off:]]; ok {
			return v, true
		}
	}
	v, ok := byOrigin["."]
	return v, ok
}

// ancestors returns the proper ancestors of name (fully qualified) below
// the root, nearest first.
func ancestors(name string) []string {
	var out []string
	for off, end := dns.NextLabel(name, 0); !end; off, end = dns.NextLabel(name, off) {
		out = append(out, name[off:])
	}
	return out
}

// zoneIndex returns a function that finds the zone holding a name.
func zoneIndex(zones []*zoneBuild) func(string) *zoneBuild {
	byOrigin := make(map[string]*zoneBuild, len(zones))
	for _, z := range zones {
		byOrigin[z.Origin] = z
	}
	return func(name string) *zoneBuild {
		z, _ := enclosing(byOrigin, name)
		return z
	}
}
