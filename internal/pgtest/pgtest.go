// Package pgtest runs a throw-away PostgreSQL cluster for tests: initdb in
// a temporary directory, postgres on a loopback port, stopped and removed
// when the test ends. PostgreSQL refuses to run as root, so as root the
// cluster belongs to the unprivileged user "nobody" and its programs run
// through runuser. Tests skip, saying why, when PostgreSQL is not
// installed (Debian package postgresql; .ci/run installs it).
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is one running cluster. Its superuser is "postgres", trusted
// without a password on 127.0.0.1.
type Server struct {
	t     testing.TB
	bin   string // directory of initdb, pg_ctl
	dir   string // data directory
	port  int
	owner string // user the cluster runs as; "" for the current one
}

// Start creates and starts a cluster, and stops it when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := findBin()
	if bin == "" {
		t.Skip("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin): install the Debian package postgresql to run this test")
	}
	s := &Server{t: t, bin: bin}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("nobody"); err != nil {
			t.Skipf("running as root and there is no user \"nobody\" to run PostgreSQL as: %v", err)
		}
		s.owner = "nobody"
	}
	dir, err := os.MkdirTemp("", "pgtest-*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s.dir = filepath.Join(dir, "data")
	if s.owner != "" {
		u, _ := user.Lookup(s.owner)
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	s.run("initdb", "-D", s.dir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	s.port = freePort(t)
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

func findBin() string {
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		return filepath.Dir(p)
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(found) == 0 {
		return ""
	}
	return filepath.Dir(found[len(found)-1])
}

// freePort returns a loopback TCP port that was free a moment ago.
// postgres binds its own socket, so a race with another process is
// possible but shows as a start failure, not as a wrong answer.
func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *Server) run(prog string, args ...string) {
	s.t.Helper()
	cmd := exec.Command(filepath.Join(s.bin, prog), args...)
	if s.owner != "" {
		cmd = exec.Command("runuser", append([]string{"-u", s.owner, "--", filepath.Join(s.bin, prog)}, args...)...)
	}
	cmd.Dir = os.TempDir() // the owner may not be able to enter ours
	if out, err := cmd.CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(filepath.Dir(s.dir), "log"))
		s.t.Fatalf("%s %s: %v\n%s\nserver log:\n%s", prog, strings.Join(args, " "), err, out, log)
	}
}

// Restart starts the cluster again after Stop (or for the first time), on
// the same port, and waits until it accepts connections.
func (s *Server) Restart() {
	s.t.Helper()
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -c port=%d -c unix_socket_directories=%s -c fsync=off -c max_connections=200", s.port, filepath.Dir(s.dir))
	s.run("pg_ctl", "start", "-D", s.dir, "-l", filepath.Join(filepath.Dir(s.dir), "log"), "-w", "-t", "60", "-o", opts)
}

// Stop stops the cluster at once (fast shutdown: sessions are ended).
// Stopping a stopped cluster does nothing.
func (s *Server) Stop() {
	s.t.Helper()
	if _, err := os.Stat(filepath.Join(s.dir, "postmaster.pid")); err != nil {
		return
	}
	s.run("pg_ctl", "stop", "-D", s.dir, "-m", "fast", "-w", "-t", "60")
}

// Addr is host:port of the cluster.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL returns the connection URL of database db as the superuser.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", s.Addr(), db)
}

// NewDatabase creates an empty database for the test and returns its URL.
func (s *Server) NewDatabase(name string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		s.t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		s.t.Fatal(err)
	}
	return s.URL(name)
}

// QueryRow runs query on the database at url, on a connection of its own,
// and scans its one row into dest; the error is Scan's (pgx.ErrNoRows for
// no row). Failing to connect fails the test.
func QueryRow(t testing.TB, url string, dest []any, query string, args ...any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, query, args...).Scan(dest...)
}
