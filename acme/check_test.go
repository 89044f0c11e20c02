package acme_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/signpost-dev/signpost/acme"
)

// TestCheckStorage: each way acme.storage cannot hold certificates gets a
// message that names the cause and the fix; usable directories pass, and
// the check leaves nothing behind.
func TestCheckStorage(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ dir, want string }{
		{dir, ""},
		{filepath.Join(dir, "new", "deeper"), ""},
		{file, fmt.Sprintf("%q is a regular file, not a directory; move it away or set acme.storage to a directory", file)},
		{filepath.Join(file, "storage"), fmt.Sprintf("%q is under a regular file %s; remove %s or set acme.storage to a directory elsewhere", filepath.Join(file, "storage"), file, file)},
		{"/dev/null/x", `"/dev/null/x" is under a device /dev/null; set acme.storage to a directory elsewhere`},
		{"", `is empty; set it to a directory signpost can write, e.g. "/var/lib/signpost"`},
	}
	for _, tt := range tests {
		err := acme.CheckStorage(tt.dir)
		if got := fmt.Sprint(err); (tt.want == "" && err != nil) || (tt.want != "" && got != tt.want) {
			t.Errorf("CheckStorage(%q) = %v, want %q", tt.dir, err, tt.want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the check left %d entries in %s, want only the file the test made", len(entries), dir)
	}

	t.Run("read-only", func(t *testing.T) {
		mnt := mountTmpfs(t, "size=64k")
		remount(t, mnt, "ro")
		want := fmt.Sprintf("%q is not writable (read-only file system); make it writable by the user signpost runs as, or set acme.storage to a directory that is", mnt)
		if err := acme.CheckStorage(mnt); fmt.Sprint(err) != want {
			t.Errorf("CheckStorage = %v, want %q", err, want)
		}
		sub := filepath.Join(mnt, "storage")
		want = fmt.Sprintf("%q does not exist and cannot be created: %s is not writable (read-only file system); create %s writable by the user signpost runs as, or set acme.storage to a directory that is", sub, mnt, sub)
		if err := acme.CheckStorage(sub); fmt.Sprint(err) != want {
			t.Errorf("CheckStorage = %v, want %q", err, want)
		}
	})
	t.Run("full", func(t *testing.T) {
		mnt := mountTmpfs(t, "size=64k")
		fill(t, filepath.Join(mnt, "filler"))
		want := fmt.Sprintf("%q is not writable (no space left on device); make it writable by the user signpost runs as, or set acme.storage to a directory that is", mnt)
		if err := acme.CheckStorage(mnt); fmt.Sprint(err) != want {
			t.Errorf("CheckStorage = %v, want %q", err, want)
		}
		if entries, _ := os.ReadDir(mnt); len(entries) != 1 {
			t.Errorf("the check left %d entries in %s, want only the filler", len(entries), mnt)
		}
	})
}
