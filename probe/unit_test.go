package probe

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseServerName(t *testing.T) {
	tests := []struct {
		in      string
		host    string
		ip      bool
		port    uint16
		wantErr string // substring of the error; "" means valid
	}{
		{in: "matrix.org", host: "matrix.org"},
		{in: "matrix.org:8888", host: "matrix.org", port: 8888},
		{in: "1.2.3.4", host: "1.2.3.4", ip: true},
		{in: "1.2.3.4:1234", host: "1.2.3.4", ip: true, port: 1234},
		{in: "[1234:5678::abcd]", host: "1234:5678::abcd", ip: true},
		{in: "[1234:5678::abcd]:5678", host: "1234:5678::abcd", ip: true, port: 5678},
		{in: "example.com.", host: "example.com."},
		{in: "hs.example.com:65535", host: "hs.example.com", port: 65535},
		{in: "hs.example.com:1", host: "hs.example.com", port: 1},
		{in: "", wantErr: "it is empty"},
		{in: "https://hs.example.com", wantErr: "is a URL"},
		{in: "hs.example.com:70000", wantErr: "port 70000 is out of range"},
		{in: "hs.example.com:0", wantErr: "port 0 is out of range"},
		{in: "hs.example.com:123456", wantErr: `port "123456" is not a number`},
		{in: "hs.example.com:", wantErr: "ends in a colon"},
		{in: "hs.example.com:http", wantErr: `port "http" is not a number`},
		{in: "hs_example.com", wantErr: "contains '_'"},
		{in: "1234:5678::abcd", wantErr: "more than one colon"},
		{in: "[1234:5678::abcd", wantErr: "never closes"},
		{in: "[1.2.3.4]", wantErr: "not a valid IPv6 address"},
		{in: "[::1]x", wantErr: "not :port"},
		{in: "256.1.1.1", wantErr: "0 to 255"},
		{in: "hs.example.com/path", wantErr: "contains characters"},
		{in: ":8448", wantErr: "has no hostname"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			sn, err := parseServerName(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseServerName(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseServerName(%q): %v", tc.in, err)
			}
			if sn.Host != tc.host || sn.IP.IsValid() != tc.ip || sn.Port != tc.port {
				t.Fatalf("parseServerName(%q) = host %q ip %v port %d, want host %q ip %v port %d",
					tc.in, sn.Host, sn.IP.IsValid(), sn.Port, tc.host, tc.ip, tc.port)
			}
			if got := sn.String(); got != tc.in {
				t.Fatalf("String() = %q, want %q", got, tc.in)
			}
		})
	}
}

func TestDNSNameProblem(t *testing.T) {
	for in, want := range map[string]string{
		"example.com":                   "",
		"example.com.":                  "",
		"a..b":                          "empty label",
		"-a.example.com":                "starts or ends with '-'",
		strings.Repeat("a", 64) + ".io": "longer than 63",
	} {
		got := dnsNameProblem(in)
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("dnsNameProblem(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCanonicalJSON uses the examples of the Appendices ("Canonical JSON").
func TestCanonicalJSON(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{}`, `{}`},
		{`{"one": 1, "two": "Two"}`, `{"one":1,"two":"Two"}`},
		{`{"b": "2", "a": "1"}`, `{"a":"1","b":"2"}`},
		{`{"auth": {"success": true, "mxid": "@john.doe:example.com", "profile": {"display_name": "John Doe", "three_pids": [{"medium": "email", "address": "john.doe@example.org"}, {"medium": "msisdn", "address": "123456789"}]}}}`,
			`{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}`},
		{`{"a": "日本語"}`, `{"a":"日本語"}`},
		{`{"本": 2, "日": 1}`, `{"日":1,"本":2}`},
		{`{"a": "\u65E5"}`, `{"a":"日"}`},
		{`{"a": null}`, `{"a":null}`},
		{`{"a": -0, "b": 1e10}`, `{"a":0,"b":10000000000}`},
		// Escapes: only the grammar's short forms and \u00XX in lower case;
		// '<', '>', '&', U+2028 and DEL stay raw (encoding/json would escape them).
		{`{"s": "\"\\\b\f\n\r\t\u0001\u001f<>&\u2028\u007f/"}`, "{\"s\":\"\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f<>&\u2028\u007f/\"}"},
		{`[9007199254740991, -9007199254740991, 1.0, 2E3, 0e999999, -0.0]`, `[9007199254740991,-9007199254740991,1,2000,0,0]`},
	}
	for _, tc := range tests {
		v, err := decodeJSON([]byte(tc.in))
		if err != nil {
			t.Fatalf("decode %s: %v", tc.in, err)
		}
		got, err := canonicalJSON(v)
		if err != nil {
			t.Fatalf("canonicalJSON(%s): %v", tc.in, err)
		}
		if string(got) != tc.want {
			t.Errorf("canonicalJSON(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{`{"a": 1.5}`, `{"a": 9007199254740992}`, `{"a": -9007199254740992}`, `{"a": 1e400}`, `{"a": 1e999999999}`, `{"a": 1.5e-999999999}`} {
		v, err := decodeJSON([]byte(bad))
		if err != nil {
			t.Fatalf("decode %s: %v", bad, err)
		}
		if got, err := canonicalJSON(v); err == nil {
			t.Errorf("canonicalJSON(%s) = %s, want an error", bad, got)
		}
	}
}

func TestSynapseCacheTime(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		header map[string][]string
		want   time.Duration
		why    string
	}{
		{nil, 24 * time.Hour, "no Cache-Control max-age or Expires: Synapse's default, with ±10% jitter"},
		{map[string][]string{"Cache-Control": {"max-age=3600"}}, time.Hour, "Cache-Control: max-age=3600"},
		{map[string][]string{"Cache-Control": {"public, MAX-AGE = 7200"}}, 2 * time.Hour, "Cache-Control: max-age=7200"},
		{map[string][]string{"Cache-Control": {"max-age=60"}}, 5 * time.Minute, "Cache-Control: max-age=60, raised to Synapse's minimum"},
		{map[string][]string{"Cache-Control": {"max-age=604800"}}, 48 * time.Hour, "Cache-Control: max-age=604800, cut to Synapse's maximum"},
		{map[string][]string{"Cache-Control": {"no-store, max-age=3600"}}, 5 * time.Minute, "Cache-Control: no-store, raised to Synapse's minimum"},
		{map[string][]string{"Cache-Control": {"max-age=abc"}}, 24 * time.Hour, "no Cache-Control max-age or Expires: Synapse's default, with ±10% jitter"},
		{map[string][]string{"Cache-Control": {"no-cache"}, "Expires": {"Wed, 02 Jan 2030 05:04:05 GMT"}}, 2 * time.Hour, "Expires: Wed, 02 Jan 2030 05:04:05 GMT"},
		{map[string][]string{"Expires": {"0"}}, 5 * time.Minute, "Expires: 0, raised to Synapse's minimum"},
	}
	for _, tc := range tests {
		got, why := synapseCacheTime(http.Header(tc.header), now)
		if got != tc.want || why != tc.why {
			t.Errorf("synapseCacheTime(%v) = %v, %q; want %v, %q", tc.header, got, why, tc.want, tc.why)
		}
	}
}

func TestSupportProblems(t *testing.T) {
	tests := []struct {
		body string
		want []string
	}{
		{`{"contacts":[{"matrix_id":"@admin:example.com","email_address":"admin@example.com","role":"m.role.admin"}],"support_page":"https://example.com/help"}`, nil},
		{`{"support_page":"https://example.com/help"}`, nil},
		{`{"contacts":[{"email_address":"sec@example.com","role":"org.example.abuse"}]}`, nil},
		{`{}`, []string{"it needs at least one contact or a support_page"}},
		{`{"contacts":[]}`, []string{"it needs at least one contact or a support_page"}},
		{`[]`, []string{"a JSON array, not an object"}},
		{`nope`, []string{"not JSON: invalid character 'o' in literal null (expecting 'u')"}},
		{`{"contacts":[{"matrix_id":"admin"}]}`, []string{
			"contacts[0] has no role (m.role.admin or m.role.security)",
			`contacts[0].matrix_id "admin" is not a user ID like @admin:example.com`}},
		{`{"contacts":[{"role":"m.role.owner"}],"support_page":"help"}`, []string{
			`contacts[0].role "m.role.owner" is not a role the specification defines`,
			"contacts[0] has neither matrix_id nor email_address",
			`support_page "help" is not an absolute URL`}},
		{`{"contacts":[{"role":"Admin","email_address":"x"}]}`, []string{
			`contacts[0].role "Admin" is neither m.role.admin, m.role.security nor a namespaced identifier`,
			`contacts[0].email_address "x" is not an email address`}},
		{`{"contacts":{"role":"m.role.admin"}}`, []string{"contacts is a JSON object, not an array", "it needs at least one contact or a support_page"}},
	}
	for _, tc := range tests {
		got := supportProblems([]byte(tc.body))
		if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
			t.Errorf("supportProblems(%s):\n got %q\nwant %q", tc.body, got, tc.want)
		}
	}
}

func TestReplaceWord(t *testing.T) {
	got := replaceWord("port 4123 and 41234 and 1894123 and :4123/", "4123", "{X}")
	want := "port {X} and 41234 and 1894123 and :{X}/"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestRemap(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	target := l.Addr().String()
	accepted := make(chan struct{}, 3)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
			accepted <- struct{}{}
		}
	}()
	dial := Remap(map[string]string{":443": target, "192.0.2.1:8448": target})
	for _, addr := range []string{"127.0.0.1:443", "[::1]:443", "192.0.2.1:8448"} {
		c, err := dial(context.Background(), "tcp", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		c.Close()
		<-accepted
	}
	// An unmapped address is dialled as it is: port 1 on loopback refuses.
	if c, err := dial(context.Background(), "tcp", "127.0.0.1:1"); err == nil {
		c.Close()
		t.Fatal("dial 127.0.0.1:1 succeeded, want connection refused")
	}
}
