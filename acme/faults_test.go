package acme_test

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/signpost-dev/signpost/config"
)

// healLimit is the bar for healing: once a storage fault is gone (or,
// for a file that does not parse, once signpost meets it), HTTPS for the
// name serves a valid certificate within this time, with no restart. The
// back-off after a fault is at most 8 s by the time these tests remove
// it, and an order against in-process Pebble takes about a second.
const healLimit = 20 * time.Second

// The storage faults below are injected into a running instance. Each test
// checks that the name that met the fault fails its handshakes cleanly
// meanwhile, that HTTPS serves a valid certificate again within healLimit
// after the fault is gone, and that nothing that was in storage is lost.

// TestFaultStorageUnderFile: acme.storage is below a regular file, so
// nothing can be stored. signpost keeps retrying with back-off; once the
// file is gone, the next retry obtains the certificate.
func TestFaultStorageUnderFile(t *testing.T) {
	e := newEnv(t, pebbleOptions{})
	blocker := filepath.Join(t.TempDir(), "blocker")
	if err := os.WriteFile(blocker, []byte("a file where a directory should be\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.storage = filepath.Join(blocker, "storage")
	const name = "chat.example.test"
	mod := e.model(site{serverNames: []string{name}, challenges: []string{config.ChallengeHTTP01}})
	mark := e.logs.mark()
	e.start(mod)

	// Two failures: the first is not the last.
	first := e.logs.wait(t, mark, "no certificate yet; will retry", name)
	second := e.logs.wait(t, e.logs.index(first)+1, "no certificate yet; will retry", name)
	for _, r := range []record{first, second} {
		if r.Level != slog.LevelError || !strings.Contains(r.Attrs["error"], "not a directory") {
			t.Errorf("failure logged as %+v; want error level and the reason (not a directory)", r)
		}
	}
	if first.Attrs["retry_in"] != "1" || second.Attrs["retry_in"] != "2" {
		t.Errorf("retry_in %s then %s, want 1 then 2 (seconds, doubling)", first.Attrs["retry_in"], second.Attrs["retry_in"])
	}
	if _, err := e.handshake(name, e.roots()); err == nil {
		t.Errorf("handshake for %s succeeded without a certificate", name)
	}

	mark = e.logs.mark()
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	e.healed(mark, removed, mod, name)
}

// TestFaultReadOnlyStorage: the storage file system turns read-only while
// signpost runs. The certificate it has keeps being served; a name added
// by a reload cannot be stored and is retried until the file system is
// writable again, then obtained at once on the next reload, without
// waiting out the back-off.
func TestFaultReadOnlyStorage(t *testing.T) {
	e := newEnv(t, pebbleOptions{})
	mnt := mountTmpfs(t, "size=1m")
	e.storage = filepath.Join(mnt, "storage")
	const a, b = "chat.example.test", "team.example.test"
	ch := []string{config.ChallengeTLSALPN01}
	modA := e.model(site{serverNames: []string{a}, challenges: ch})
	in := e.startObtained(modA, a)
	before := files(t, e.storage)

	remount(t, mnt, "ro")
	modAB := e.model(site{serverNames: []string{a, b}, challenges: ch})
	mark := e.logs.mark()
	in.setModel(modAB)
	failed := e.logs.wait(t, mark, "no certificate yet; will retry", b)
	if !strings.Contains(failed.Attrs["error"], "read-only file system") {
		t.Errorf("failure logged as %+v; want the reason (read-only file system)", failed)
	}
	e.fetch(modAB, a, e.roots())
	if _, err := e.handshake(b, e.roots()); err == nil {
		t.Errorf("handshake for %s succeeded without a certificate", b)
	}

	// Wait out two more failures, so the next retry is 4 s away: the
	// reload below must not wait for it.
	second := e.logs.wait(t, e.logs.index(failed)+1, "no certificate yet; will retry", b)
	third := e.logs.wait(t, e.logs.index(second)+1, "no certificate yet; will retry", b)
	if third.Attrs["retry_in"] != "4" {
		t.Fatalf("third failure %+v, want retry_in=4", third)
	}

	remount(t, mnt, "rw")
	removed := time.Now()
	mark = e.logs.mark()
	in.setModel(modAB) // SIGHUP: retried now, not after the back-off
	e.healed(mark, removed, modAB, b)
	if got := e.logs.wait(t, mark, "certificate obtained", b); !got.Time.Before(third.Time.Add(4 * time.Second)) {
		t.Errorf("obtained %s after the last failure, want before its 4 s back-off ended: the reload did not retry at once", got.Time.Sub(third.Time))
	}
	e.fetch(modAB, a, e.roots())
	checkKept(t, before, files(t, e.storage), nil)
}

// TestFaultFullFilesystem: the storage file system fills up while signpost
// runs; a name added meanwhile is obtained once space is freed, by the
// back-off retries alone.
func TestFaultFullFilesystem(t *testing.T) {
	e := newEnv(t, pebbleOptions{})
	mnt := mountTmpfs(t, "size=512k")
	e.storage = filepath.Join(mnt, "storage")
	const a, b = "chat.example.test", "team.example.test"
	ch := []string{config.ChallengeHTTP01}
	modA := e.model(site{serverNames: []string{a}, challenges: ch})
	in := e.startObtained(modA, a)
	before := files(t, e.storage)

	filler := filepath.Join(mnt, "filler")
	fill(t, filler)
	modAB := e.model(site{serverNames: []string{a, b}, challenges: ch})
	mark := e.logs.mark()
	in.setModel(modAB)
	first := e.logs.wait(t, mark, "no certificate yet; will retry", b)
	e.logs.wait(t, e.logs.index(first)+1, "no certificate yet; will retry", b)
	if !strings.Contains(first.Attrs["error"], "no space left on device") {
		t.Errorf("failure logged as %+v; want the reason (no space left on device)", first)
	}
	e.fetch(modAB, a, e.roots())

	mark = e.logs.mark()
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	e.healed(mark, time.Now(), modAB, b)
	checkKept(t, before, files(t, e.storage), nil)
}

// TestFaultCorruptCertificate: a stored certificate or key that does not
// parse (here cut in half, as a crash or a full disk leaves it) is met when
// a reload brings its name back. It is moved aside with the files of its
// set, a new certificate is obtained and served, and nothing is deleted.
func TestFaultCorruptCertificate(t *testing.T) {
	for _, ext := range []string{".crt", ".key"} {
		t.Run(ext, func(t *testing.T) {
			e := newEnv(t, pebbleOptions{})
			const name = "chat.example.test"
			ch := []string{config.ChallengeDNS01}
			mod := e.model(site{serverNames: []string{name}, challenges: ch})
			in := e.startObtained(mod, name)
			old := e.fetch(mod, name, e.roots())

			mark := e.logs.mark()
			in.setModel(e.model(site{challenges: ch}))
			e.logs.wait(t, mark, "certificate no longer managed", name)
			before := files(t, e.storage)
			file := siteFile(t, e, name, ext)
			corrupted := truncate(t, file)

			mark = e.logs.mark()
			in.setModel(mod)
			moved := e.logs.wait(t, mark, "certificate file does not parse; moved aside with the files that belong to it, a new certificate will be obtained", "")
			if moved.Level != slog.LevelError || moved.Attrs["path"] != file || !strings.HasPrefix(moved.Attrs["moved_to"], file+".corrupt-") {
				t.Errorf("logged %+v; want error level, path %s and where it went", moved, file)
			}
			e.healed(mark, time.Now(), mod, name)
			if fresh := e.fetch(mod, name, e.roots()); fresh.Equal(old) {
				t.Errorf("serves the old certificate (serial %s) again, want a new one", old.SerialNumber)
			}
			if n := e.pebble.orders.Load(); n != 2 {
				t.Errorf("orders = %d, want 2", n)
			}
			rel, _ := filepath.Rel(e.storage, file)
			checkKept(t, before, files(t, e.storage), map[string]string{filepath.ToSlash(rel): corrupted})
		})
	}
}

// TestFaultCorruptAccount: the ACME account file turns to garbage while
// signpost runs. The next order moves it aside with its key, registers a
// new account and gets its certificate; the name already served is not
// disturbed.
func TestFaultCorruptAccount(t *testing.T) {
	e := newEnv(t, pebbleOptions{})
	const a, b = "chat.example.test", "team.example.test"
	ch := []string{config.ChallengeHTTP01}
	modA := e.model(site{serverNames: []string{a}, challenges: ch})
	in := e.startObtained(modA, a)
	before := files(t, e.storage)
	accounts, err := filepath.Glob(filepath.Join(e.storage, "acme", "*", "users", "*", "*.json"))
	if err != nil || len(accounts) != 1 {
		t.Fatalf("account files %q, %v; want one", accounts, err)
	}
	garbage := "{\"status\": \"valid\", \"contact\": [\x00garbage"
	if err := os.WriteFile(accounts[0], []byte(garbage), 0o600); err != nil {
		t.Fatal(err)
	}

	modAB := e.model(site{serverNames: []string{a, b}, challenges: ch})
	mark := e.logs.mark()
	in.setModel(modAB)
	moved := e.logs.wait(t, mark, "ACME account file does not parse; moved aside with the files that belong to it, a new account will be registered", "")
	if moved.Level != slog.LevelError || moved.Attrs["path"] != accounts[0] || !strings.HasPrefix(moved.Attrs["moved_to"], accounts[0]+".corrupt-") {
		t.Errorf("logged %+v; want error level, path %s and where it went", moved, accounts[0])
	}
	e.healed(mark, time.Now(), modAB, b)
	e.fetch(modAB, a, e.roots())
	if n := e.pebble.accounts.Load(); n != 2 {
		t.Errorf("accounts = %d, want 2 (the garbage one replaced)", n)
	}
	rel, _ := filepath.Rel(e.storage, accounts[0])
	checkKept(t, before, files(t, e.storage), map[string]string{filepath.ToSlash(rel): garbage})
}

// TestFaultCorruptLock: a lock file holding garbage, or JSON cut short
// (certmagic copes only with empty ones), would fail every obtain of its
// name; it is moved aside.
func TestFaultCorruptLock(t *testing.T) {
	for _, tc := range []struct{ name, content string }{
		{"garbage", "\x00\x00 not a lock"},
		{"truncated", `{"created":"2026-01-01T00:00:00Z","upd`},
	} {
		t.Run(tc.name, func(t *testing.T) { testFaultCorruptLock(t, tc.content) })
	}
}

func testFaultCorruptLock(t *testing.T, garbage string) {
	e := newEnv(t, pebbleOptions{})
	const a, b = "chat.example.test", "team.example.test"
	ch := []string{config.ChallengeTLSALPN01}
	modA := e.model(site{serverNames: []string{a}, challenges: ch})
	in := e.startObtained(modA, a)
	lock := filepath.Join(e.storage, "locks", "issue_cert_"+b+".lock")
	if err := os.WriteFile(lock, []byte(garbage), 0o644); err != nil {
		t.Fatal(err)
	}

	modAB := e.model(site{serverNames: []string{a, b}, challenges: ch})
	mark := e.logs.mark()
	in.setModel(modAB)
	moved := e.logs.wait(t, mark, "lock file does not parse; moved aside", "")
	if moved.Level != slog.LevelError || moved.Attrs["path"] != lock {
		t.Errorf("logged %+v; want error level and path %s", moved, lock)
	}
	e.healed(mark, time.Now(), modAB, b)
	if data, err := os.ReadFile(moved.Attrs["moved_to"]); err != nil || string(data) != garbage {
		t.Errorf("moved-aside lock: %q, %v; want the garbage kept", data, err)
	}
}

// healed waits for name's certificate to be obtained and served after
// since, requires that within healLimit of removed, and fetches the
// document over HTTPS with a client that trusts only Pebble's root.
func (e *env) healed(since int, removed time.Time, mod *config.Model, name string) {
	e.t.Helper()
	e.obtained(since, name)
	e.fetch(mod, name, e.roots())
	if took := time.Since(removed); took > healLimit {
		e.t.Errorf("%s served again %.1fs after the fault was gone, want within %s", name, took.Seconds(), healLimit)
	} else {
		e.t.Logf("%s served again %.1fs after the fault was gone", name, took.Seconds())
	}
}

// index returns the position of r among the records, for waits that must
// start after it.
func (l *logs) index(r record) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.records {
		if l.records[i].Time.Equal(r.Time) && l.records[i].Msg == r.Msg {
			return i
		}
	}
	return len(l.records)
}

// checkKept requires that every file of before is still in after, with the
// same content, or moved aside as <path>.corrupt-<time> (with content
// corrupted[path] if given, else the same content). Nothing is deleted.
func checkKept(t *testing.T, before, after map[string]fileInfo, corrupted map[string]string) {
	t.Helper()
	for p, f := range before {
		want := f.data
		if c, ok := corrupted[p]; ok {
			want = c
		}
		if g, ok := after[p]; ok && g.data == want && corrupted[p] == "" {
			continue
		}
		found := false
		for q, g := range after {
			if strings.HasPrefix(q, p+".corrupt-") && g.data == want {
				found = true
			}
		}
		if !found {
			t.Errorf("%s is gone: neither in place with its content nor moved aside as %s.corrupt-*; storage now %q", p, p, keys(after))
		}
	}
}

func keys(m map[string]fileInfo) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// siteFile returns the path of name's stored certificate file with ext.
func siteFile(t *testing.T, e *env, name, ext string) string {
	t.Helper()
	got, err := filepath.Glob(filepath.Join(e.storage, "certificates", "*", name, name+ext))
	if err != nil || len(got) != 1 {
		t.Fatalf("%s%s in storage: %q, %v; want one", name, ext, got, err)
	}
	return got[0]
}

// truncate cuts file to half its length and returns what is left.
func truncate(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	data = data[:len(data)/2]
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// mountTmpfs mounts a tmpfs with options on a fresh directory and unmounts
// it when the test ends, or skips the test where mounting is not allowed
// (not root, or in a container without CAP_SYS_ADMIN).
func mountTmpfs(t *testing.T, options string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, options); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v); this fault needs one, and root or CAP_SYS_ADMIN to make it", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// remount makes the tmpfs at dir read-only ("ro") or writable ("rw").
func remount(t *testing.T, dir, mode string) {
	t.Helper()
	// mount(8) rather than the syscall: a remount must repeat the flags
	// the kernel keeps, which mount(8) reads back for us.
	if out, err := exec.Command("mount", "-o", "remount,"+mode, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s %s: %v: %s", dir, mode, err, out)
	}
}

// fill writes file until the file system is full.
func fill(t *testing.T, file string) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{'x'}, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}
