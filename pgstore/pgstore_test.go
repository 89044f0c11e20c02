package pgstore_test

import (
	"context"
	"errors"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/jackc/pgx/v5"

	"github.com/signpost-dev/signpost/internal/pgtest"
	"github.com/signpost-dev/signpost/pgstore"
)

func open(t *testing.T, url string, ttl time.Duration) *pgstore.Storage {
	t.Helper()
	s, err := pgstore.Open(pgstore.Options{URL: url, LockTTL: ttl, LockPoll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestConformance runs the same operations on certmagic's FileStorage and
// on a Storage, and requires the same answers, written out in full: the
// file storage is what certmagic was written against.
func TestConformance(t *testing.T) {
	url := pgtest.Start(t).NewDatabase("conformance")
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		s    certmagic.Storage
	}{
		{"file", &certmagic.FileStorage{Path: t.TempDir()}},
		{"postgres", open(t, url, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			for _, k := range []string{"acme/ca/users/a@b/a.json", "acme/ca/users/a@b/a.key", "certificates/ca/x.test/x.test.crt", "certificates/ca/x.test/x.test.key", "certificates/ca/xy.test/xy.test.crt", "certificates/ca0/z"} {
				if err := s.Store(ctx, k, []byte("value of "+k)); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Store(ctx, "certificates/ca/x.test/x.test.crt", []byte("second")); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Load(ctx, "certificates/ca/x.test/x.test.crt"); err != nil || string(got) != "second" {
				t.Errorf("Load after overwrite: %q, %v; want \"second\"", got, err)
			}
			for _, k := range []string{"nope", "certificates/ca/x", "certificates/ca/x.test/x"} {
				if _, err := s.Load(ctx, k); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("Load(%q): %v; want fs.ErrNotExist", k, err)
				}
			}
			exists := map[string]bool{"certificates": true, "certificates/ca": true, "certificates/ca/x.test/x.test.key": true,
				"certificates/c": false, "certificates/ca/x": false, "certificates/ca/x.test/x.test": false, "nope": false}
			for k, want := range exists {
				if got := s.Exists(ctx, k); got != want {
					t.Errorf("Exists(%q) = %v, want %v", k, got, want)
				}
			}
			lists := []struct {
				prefix    string
				recursive bool
				want      []string
			}{
				{"certificates", false, []string{"certificates/ca", "certificates/ca0"}},
				{"certificates/ca", false, []string{"certificates/ca/x.test", "certificates/ca/xy.test"}},
				{"certificates/ca", true, []string{"certificates/ca/x.test", "certificates/ca/x.test/x.test.crt", "certificates/ca/x.test/x.test.key", "certificates/ca/xy.test", "certificates/ca/xy.test/xy.test.crt"}},
				{"acme/ca/users/a@b", false, []string{"acme/ca/users/a@b/a.json", "acme/ca/users/a@b/a.key"}},
				{"certificates/ca0/z", false, nil}, // a value: nothing under it
			}
			for _, l := range lists {
				got, err := s.List(ctx, l.prefix, l.recursive)
				slices.Sort(got) // the file storage lists in walk order
				if err != nil || !slices.Equal(got, l.want) {
					t.Errorf("List(%q, %v) = %q, %v; want %q", l.prefix, l.recursive, got, err, l.want)
				}
			}
			if _, err := s.List(ctx, "certificates/nope", true); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("List of a missing prefix: %v; want fs.ErrNotExist", err)
			}
			info, err := s.Stat(ctx, "certificates/ca/x.test/x.test.crt")
			if err != nil || info.Key != "certificates/ca/x.test/x.test.crt" || !info.IsTerminal || info.Size != int64(len("second")) || time.Since(info.Modified) > time.Hour {
				t.Errorf("Stat of a value: %+v, %v; want terminal, size 6, modified just now", info, err)
			}
			info, err = s.Stat(ctx, "certificates/ca")
			if err != nil || info.Key != "certificates/ca" || info.IsTerminal {
				t.Errorf("Stat of a directory: %+v, %v; want not terminal", info, err)
			}
			if _, err := s.Stat(ctx, "certificates/c"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Stat of a missing key: %v; want fs.ErrNotExist", err)
			}
			// Delete removes a directory with everything under it, and
			// nothing that only shares a prefix of characters.
			if err := s.Delete(ctx, "certificates/ca/x.test"); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(ctx, "certificates/ca/x.test"); err != nil {
				t.Errorf("Delete of a missing key: %v; want nil", err)
			}
			got, err := s.List(ctx, "", true)
			slices.Sort(got)
			want := []string{"acme", "acme/ca", "acme/ca/users", "acme/ca/users/a@b", "acme/ca/users/a@b/a.json", "acme/ca/users/a@b/a.key",
				"certificates", "certificates/ca", "certificates/ca/xy.test", "certificates/ca/xy.test/xy.test.crt", "certificates/ca0", "certificates/ca0/z"}
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("after Delete, List(\"\", true) = %q, %v; want %q", got, err, want)
			}
		})
	}
}

// TestSchemaConcurrent: instances starting together on an empty database
// all create the tables without failing (unserialised, concurrent CREATE
// TABLE IF NOT EXISTS can fail on the catalog's unique index), and the
// tables are made once.
func TestSchemaConcurrent(t *testing.T) {
	url := pgtest.Start(t).NewDatabase("schema")
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		s := open(t, url, 0)
		wg.Go(func() { errs[i] = s.Ping(context.Background()) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("instance %d: %v", i, err)
		}
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var tables []string
	rows, _ := conn.Query(ctx, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
	tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if want := []string{"signpost_certmagic_data", "signpost_certmagic_locks"}; err != nil || !slices.Equal(tables, want) {
		t.Errorf("tables %q, %v; want %q", tables, err, want)
	}
}

// TestLockExcludes: a lock held by one instance is refused to another,
// also while the holder's lease is renewed past its first expiry, and is
// free once released.
func TestLockExcludes(t *testing.T) {
	url := pgtest.Start(t).NewDatabase("locks")
	ctx := context.Background()
	a, b := open(t, url, 2*time.Second), open(t, url, 2*time.Second)
	if err := a.Lock(ctx, "issue_cert_x.test"); err != nil {
		t.Fatal(err)
	}
	first := expiry(t, url, "issue_cert_x.test")
	if ok, err := b.TryLock(ctx, "issue_cert_x.test"); ok || err != nil {
		t.Fatalf("b.TryLock while a holds it: %v, %v; want false, nil", ok, err)
	}
	// The holder renews: wait for the lease to move past where it started,
	// and past the first expiry, then b is still refused.
	waitFor(t, "lease renewed past its first expiry", func() bool {
		return expiry(t, url, "issue_cert_x.test").After(first) && dbNow(t, url).After(first)
	})
	if ok, err := b.TryLock(ctx, "issue_cert_x.test"); ok || err != nil {
		t.Fatalf("b.TryLock after the first lease ran out but was renewed: %v, %v; want false, nil", ok, err)
	}
	// Another name is independent.
	if ok, err := b.TryLock(ctx, "issue_cert_y.test"); !ok || err != nil {
		t.Fatalf("b.TryLock of another name: %v, %v; want true, nil", ok, err)
	}
	if err := a.Unlock(ctx, "issue_cert_x.test"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, "issue_cert_x.test"); !ok || err != nil {
		t.Fatalf("b.TryLock after a released it: %v, %v; want true, nil", ok, err)
	}
	// Within one process too, two holders of one name exclude each other.
	if ok, err := b.TryLock(ctx, "issue_cert_x.test"); ok || err != nil {
		t.Fatalf("second b.TryLock of a name b holds: %v, %v; want false, nil", ok, err)
	}
	if err := a.Unlock(ctx, "issue_cert_x.test"); err == nil {
		t.Error("a.Unlock of a lock b holds: nil error, want one")
	}
}

// TestLockTakenOverAfterHolderDies: a holder that stops renewing (it
// died) leaves its lock row behind; another instance waiting in Lock
// takes it over once the lease has run out, and not before.
func TestLockTakenOverAfterHolderDies(t *testing.T) {
	url := pgtest.Start(t).NewDatabase("takeover")
	ctx := context.Background()
	a, err := pgstore.Open(pgstore.Options{URL: url, LockTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Lock(ctx, "issue_cert_x.test"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// Dying: the renewing stops and nothing is released. Close would
	// release the lock, so the row is put back as it was.
	var owner string
	var expires time.Time
	if err := conn.QueryRow(ctx, "SELECT owner, expires FROM signpost_certmagic_locks WHERE name = $1", "issue_cert_x.test").Scan(&owner, &expires); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if _, err := conn.Exec(ctx, "INSERT INTO signpost_certmagic_locks VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET owner = $2, expires = $3", "issue_cert_x.test", owner, expires); err != nil {
		t.Fatal(err)
	}
	b := open(t, url, 2*time.Second)
	lctx, cancel := context.WithTimeout(ctx, 60*time.Second) // failure guard
	defer cancel()
	if err := b.Lock(lctx, "issue_cert_x.test"); err != nil {
		t.Fatalf("b.Lock after a died: %v", err)
	}
	if now := dbNow(t, url); now.Before(expires) {
		t.Errorf("b took the lock at %s, before a's lease ran out at %s", now, expires)
	}
	var got string
	if err := conn.QueryRow(ctx, "SELECT owner FROM signpost_certmagic_locks WHERE name = $1", "issue_cert_x.test").Scan(&got); err != nil || got == owner {
		t.Errorf("lock owner after take-over %q, %v; want another than the dead holder's %q", got, err, owner)
	}
}

// TestMoveAside renames a set of keys in one go, never over an existing
// key, and refuses when the first key changed since it was read.
func TestMoveAside(t *testing.T) {
	url := pgtest.Start(t).NewDatabase("aside")
	ctx := context.Background()
	s := open(t, url, 0)
	for _, k := range []string{"c/x.crt", "c/x.key", "c/x.crt.corrupt-T"} {
		if err := s.Store(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.MoveAside(ctx, []string{"c/x.crt", "c/x.key"}, []byte("something else"), ".corrupt-T"); err == nil || !strings.Contains(err.Error(), "changed while being read") {
		t.Errorf("MoveAside of a changed value: %v; want \"changed while being read\"", err)
	}
	moved, err := s.MoveAside(ctx, []string{"c/x.crt", "c/x.key"}, []byte("c/x.crt"), ".corrupt-T")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"c/x.crt": "c/x.crt.corrupt-T-2", "c/x.key": "c/x.key.corrupt-T"}; !maps.Equal(moved, want) {
		t.Errorf("moved %v, want %v", moved, want)
	}
	got, err := s.List(ctx, "c", false)
	if want := []string{"c/x.crt.corrupt-T", "c/x.crt.corrupt-T-2", "c/x.key.corrupt-T"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("after MoveAside, List = %q, %v; want %q", got, err, want)
	}
	if v, err := s.Load(ctx, "c/x.crt.corrupt-T-2"); err != nil || string(v) != "c/x.crt" {
		t.Errorf("moved value %q, %v; want the original", v, err)
	}
}

// TestNoPasswordShown: the password of the URL appears in no error and
// not in the name certmagic logs.
func TestNoPasswordShown(t *testing.T) {
	for _, url := range []string{
		"postgres://signpost:s3cret@db.example:5432/certs",
		"postgres://signpost@db.example/certs?password=s3cret",
		"postgres://signpost:s3cret@db.example:99999/certs",
		"postgres://signpost:s3cret@db.example/certs?sslmode=bogus",
	} {
		s, err := pgstore.Open(pgstore.Options{URL: url})
		var shown string
		if err != nil {
			shown = err.Error()
		} else {
			shown = s.String()
			s.Close()
		}
		if strings.Contains(shown, "s3cret") {
			t.Errorf("%s: shown as %q, with the password", url, shown)
		}
		if !strings.Contains(shown, "db.example") {
			t.Errorf("%s: shown as %q, without the host", url, shown)
		}
	}
}

func expiry(t *testing.T, url, name string) time.Time {
	t.Helper()
	return queryTime(t, url, "SELECT expires FROM signpost_certmagic_locks WHERE name = '"+name+"'")
}

func dbNow(t *testing.T, url string) time.Time {
	t.Helper()
	return queryTime(t, url, "SELECT now()")
}

func queryTime(t *testing.T, url, q string) time.Time {
	t.Helper()
	var v time.Time
	if err := pgtest.QueryRow(t, url, []any{&v}, q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return v
}

// waitFor polls cond until it holds; the limit is a failure guard.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 60s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
