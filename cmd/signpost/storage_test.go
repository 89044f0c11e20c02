package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signpost-dev/signpost/internal/pgtest"
)

// TestValidateDatabaseStorage: validate connects to a PostgreSQL storage
// and warns, with the URL's password hidden, when it cannot; with a
// database that runs it says nothing, and the tables exist afterwards.
func TestValidateDatabaseStorage(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close() // nothing listens there now
	pg := pgtest.Start(t)
	up := strings.Replace(pg.NewDatabase("validate"), "postgres@", "postgres:s3cret@", 1) // trust: the password is not checked

	for _, tc := range []struct {
		name, storage, warning string
	}{
		{"down", "postgres://signpost:s3cret@" + closed + "/certs", "signpost.toml:6: acme.storage: postgres://signpost:xxxxx@" + closed + "/certs cannot be used ("},
		{"up", up, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "signpost.toml")
			text := "[dns]\nnameservers = [\"ns1.chat.example.test\"]\n[acme]\nemail = \"admin@example.test\"\nchallenges = [\"http-01\"]\nstorage = \"" + tc.storage + "\"\n"
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			e := env{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }, now: time.Now}
			if code := e.run(context.Background(), []string{"validate", "-config", path}); code != exitOK {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitOK, stderr.String())
			}
			out := stdout.String() + stderr.String()
			if strings.Contains(out, "s3cret") {
				t.Errorf("the password is shown:\n%s", out)
			}
			var warnings []string
			for _, line := range strings.Split(stdout.String(), "\n") {
				if strings.HasPrefix(line, "warning: ") {
					warnings = append(warnings, line)
				}
			}
			// A password in the URL is warned about in either case.
			want := 1
			if tc.warning != "" {
				want = 2
			}
			if len(warnings) != want || (tc.warning != "" && !strings.Contains(warnings[1], "/"+tc.warning)) {
				t.Errorf("warnings %q; want %d, the storage one with %q", warnings, want, tc.warning)
			}
			if !strings.Contains(warnings[0], "acme.storage: the URL holds a password") {
				t.Errorf("first warning %q, want the one about the password in the file", warnings[0])
			}
		})
	}
}
