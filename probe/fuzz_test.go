package probe

import (
	"testing"
	"time"
)

// FuzzInputs feeds arbitrary bytes to every parser that sees remote input;
// none may panic.
func FuzzInputs(f *testing.F) {
	for _, s := range []string{
		`{"m.server": "hs.example.com:443"}`, `{}`, `[1,2]`, `{"m.server": 1}`, `[::1]:8448`, `1.2.3.4:0`,
		`{"server_name":"a","valid_until_ts":1e400,"verify_keys":{"ed25519:a":{"key":"AAAA"}},"signatures":{"a":{"ed25519:a":"AAAA"}}}`,
		`{"contacts":[{"role":1,"matrix_id":[]}],"support_page":{}}`, "\x00\xff", `{"a":-0.0e-5}`,
	} {
		f.Add([]byte(s))
	}
	now := time.Unix(1_900_000_000, 0)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseServerName(string(b))
		_ = dnsNameProblem(string(b))
		_, _ = parseMServer(b)
		_ = checkKeyResponse(b, "a", now)
		_ = supportProblems(b)
		if v, err := decodeJSON(b); err == nil {
			_, _ = canonicalJSON(v)
		}
		_, _ = sanitizeURL(string(b))
	})
}
