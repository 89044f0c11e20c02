// Package pgstore keeps certmagic's storage (certificates, their keys,
// the ACME account, challenge tokens and locks) in PostgreSQL, so that
// several signpost instances share one set of certificates: each name is
// ordered once, by whichever instance takes its lock first, and served
// by all of them.
//
// Two tables are created on first use, in the first schema of the
// connection's search_path: signpost_certmagic_data (key → value, with
// the time it was written) and signpost_certmagic_locks (name → holder
// and lease expiry). Keys at rest are protected by the database's own
// access control, as the file storage's are by mode 0600: whoever can
// read the table can read every private key.
//
// pgstore imports nothing of signpost's.
package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// IsURL reports whether an acme.storage value names a PostgreSQL database
// rather than a directory.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// Redact returns the URL with its password replaced by "xxxxx", for logs
// and error messages; anything that does not parse is returned as
// "postgres://(unparsable URL)" so that no part of it is shown.
func Redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "postgres://(unparsable URL)"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// Options configure a Storage.
type Options struct {
	// URL is the connection string, postgres://user@host:port/db?params;
	// libpq's environment variables (PGPASSWORD) and ~/.pgpass fill in
	// what it leaves out. Required.
	URL string

	// LockTTL is how long a lock outlives the last sign of life from its
	// holder: a holder renews its lease every LockTTL/4, and once the
	// lease has run out any instance may take the lock over. Zero means
	// 20 seconds.
	LockTTL time.Duration

	// LockPoll is how often Lock looks again at a lock held by someone
	// else. Zero means one second.
	LockPoll time.Duration

	// Logger receives a warning when a held lock is lost (its lease ran
	// out while the database was unreachable and another instance took
	// it). If nil, logs are discarded.
	Logger *slog.Logger
}

// Storage is a certmagic.Storage, certmagic.TryLocker and
// certmagic.Locker on PostgreSQL. It is safe for concurrent use.
//
// Locks are lease rows, not advisory locks: an advisory lock lives as
// long as one connection, so a restart of PostgreSQL or a dropped
// connection would release every lock at once, silently, while their
// holders carry on; a holder on a machine that vanished would keep its
// lock until TCP gave up on the connection, which takes hours by default.
// A lease row survives a database restart, is released by its holder's
// Unlock, and runs out LockTTL after its holder stops renewing it,
// because it died or cannot reach the database. All lease times are the
// database server's clock, so clocks of the instances need not agree.
// As with certmagic's file storage, a holder cut off from the database
// for longer than LockTTL may lose its lock while still working; certmagic
// tolerates that (it checks storage again after taking a lock).
type Storage struct {
	pool     *pgxpool.Pool
	redacted string
	ttl      time.Duration
	poll     time.Duration
	log      *slog.Logger

	schemaMu sync.Mutex
	schemaOK bool

	mu   sync.Mutex
	held map[string]*lease // lock name → the lease this process holds
}

// lease is a lock this process holds, and the goroutine renewing it.
type lease struct {
	owner string
	stop  context.CancelFunc
	done  chan struct{}
}

// Open returns a Storage for o.URL. It checks the URL but does not
// connect: the first operation does, and creates the tables if missing,
// so a database that is down delays certificates, not start-up.
func Open(o Options) (*Storage, error) {
	cfg, err := pgxpool.ParseConfig(o.URL)
	if err != nil {
		// pgconn's parse errors quote the whole connection string, password
		// included; say only what kind of problem it is.
		return nil, fmt.Errorf("%s: %s", Redact(o.URL), parseProblem(err))
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Redact(o.URL), err)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ttl := o.LockTTL
	if ttl <= 0 {
		ttl = 20 * time.Second
	}
	poll := o.LockPoll
	if poll <= 0 {
		poll = time.Second
	}
	return &Storage{pool: pool, redacted: Redact(o.URL), ttl: ttl, poll: poll, log: log, held: map[string]*lease{}}, nil
}

// parseProblem returns the cause of a connection string parse error
// without the string itself.
func parseProblem(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return "cannot be parsed as a PostgreSQL URL (" + msg + "); write postgres://user@host:port/database"
}

// Close releases the locks still held, as a process shutting down
// cleanly should (a lock it cannot release, the database being down, runs
// out after LockTTL), and closes the connections.
func (s *Storage) Close() {
	s.mu.Lock()
	leases := s.held
	s.held = map[string]*lease{}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for name, l := range leases {
		l.stop()
		<-l.done
		s.pool.Exec(ctx, "DELETE FROM signpost_certmagic_locks WHERE name = $1 AND owner = $2", name, l.owner)
	}
	s.pool.Close()
}

// String names the database without its password: certmagic logs it.
func (s *Storage) String() string { return "pgstore:" + s.redacted }

// Ping connects, if not yet connected, and creates the tables if missing.
func (s *Storage) Ping(ctx context.Context) error {
	return s.schema(ctx)
}

const schemaSQL = `
CREATE TABLE IF NOT EXISTS signpost_certmagic_data (
	key      text COLLATE "C" PRIMARY KEY,
	value    bytea NOT NULL,
	modified timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS signpost_certmagic_locks (
	name    text COLLATE "C" PRIMARY KEY,
	owner   text NOT NULL,
	expires timestamptz NOT NULL
);`

// schemaLock is the advisory lock key (an arbitrary constant) that
// serialises table creation: concurrent CREATE TABLE IF NOT EXISTS of the
// same table can fail on a unique index of the catalog.
const schemaLock = 0x5369676e706f7374 // "Signpost"

// schema creates the tables once per Storage, retrying on the next call
// after a failure.
func (s *Storage) schema(ctx context.Context) error {
	s.schemaMu.Lock()
	defer s.schemaMu.Unlock()
	if s.schemaOK {
		return nil
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(schemaLock)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, schemaSQL)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgstore: create tables: %w", err)
	}
	s.schemaOK = true
	return nil
}

// below returns the bounds of the keys strictly under dir: key >= lo and
// key < hi, in the "C" collation the key columns use. For the root ("")
// that is every key.
func below(dir string) (lo, hi string) {
	if dir == "" {
		return "", "\U0010FFFF"
	}
	return dir + "/", dir + "0" // '0' is the byte after '/'
}

// Store puts value at key, replacing what was there.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	if err := s.schema(ctx); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO signpost_certmagic_data (key, value, modified) VALUES ($1, $2, now())
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, modified = EXCLUDED.modified`, key, value)
	if err != nil {
		return fmt.Errorf("pgstore: store %s: %w", key, err)
	}
	return nil
}

// Load returns the value at key, or an error wrapping fs.ErrNotExist.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	if err := s.schema(ctx); err != nil {
		return nil, err
	}
	var value []byte
	err := s.pool.QueryRow(ctx, "SELECT value FROM signpost_certmagic_data WHERE key = $1", key).Scan(&value)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("pgstore: load %s: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("pgstore: load %s: %w", key, err)
	}
	return value, nil
}

// Delete removes key and every key under it; a missing key is no error.
func (s *Storage) Delete(ctx context.Context, key string) error {
	if err := s.schema(ctx); err != nil {
		return err
	}
	lo, hi := below(key)
	_, err := s.pool.Exec(ctx, "DELETE FROM signpost_certmagic_data WHERE key = $1 OR (key >= $2 AND key < $3)", key, lo, hi)
	if err != nil {
		return fmt.Errorf("pgstore: delete %s: %w", key, err)
	}
	return nil
}

// Exists reports whether key holds a value or has keys under it; false
// also when the database cannot be asked.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	if s.schema(ctx) != nil {
		return false
	}
	lo, hi := below(key)
	var ok bool
	err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM signpost_certmagic_data WHERE key = $1 OR (key >= $2 AND key < $3))", key, lo, hi).Scan(&ok)
	return err == nil && ok
}

// List returns the keys under prefix, as certmagic's FileStorage lists
// files and directories: without recursive, the immediate children (a
// "directory" once, by its own key); with it, every key and every
// directory below prefix. The keys are sorted. A prefix that is neither
// a value nor a directory gives fs.ErrNotExist.
func (s *Storage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	if err := s.schema(ctx); err != nil {
		return nil, err
	}
	lo, hi := below(prefix)
	rows, err := s.pool.Query(ctx, "SELECT key FROM signpost_certmagic_data WHERE key >= $1 AND key < $2 ORDER BY key", lo, hi)
	if err != nil {
		return nil, fmt.Errorf("pgstore: list %s: %w", prefix, err)
	}
	all, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("pgstore: list %s: %w", prefix, err)
	}
	if len(all) == 0 {
		if prefix != "" && s.Exists(ctx, prefix) {
			return nil, nil // a value, not a directory: nothing under it
		}
		return nil, fmt.Errorf("pgstore: list %s: %w", prefix, fs.ErrNotExist)
	}
	seen := map[string]bool{}
	var keys []string
	for _, k := range all {
		parts := strings.Split(strings.TrimPrefix(k, lo), "/")
		if !recursive {
			parts = parts[:1]
		}
		for i := range parts {
			name := path.Join(prefix, path.Join(parts[:i+1]...))
			if !seen[name] {
				seen[name] = true
				keys = append(keys, name)
			}
		}
	}
	slices.Sort(keys)
	return keys, nil
}

// Stat describes key: a value (IsTerminal, its size and when it was
// written) or a directory (the latest write under it).
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	if err := s.schema(ctx); err != nil {
		return certmagic.KeyInfo{}, err
	}
	var size int64
	var modified time.Time
	err := s.pool.QueryRow(ctx, "SELECT octet_length(value), modified FROM signpost_certmagic_data WHERE key = $1", key).Scan(&size, &modified)
	if err == nil {
		return certmagic.KeyInfo{Key: key, Modified: modified, Size: size, IsTerminal: true}, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return certmagic.KeyInfo{}, fmt.Errorf("pgstore: stat %s: %w", key, err)
	}
	lo, hi := below(key)
	var latest *time.Time
	err = s.pool.QueryRow(ctx, "SELECT max(modified) FROM signpost_certmagic_data WHERE key >= $1 AND key < $2", lo, hi).Scan(&latest)
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("pgstore: stat %s: %w", key, err)
	}
	if latest == nil {
		return certmagic.KeyInfo{}, fmt.Errorf("pgstore: stat %s: %w", key, fs.ErrNotExist)
	}
	return certmagic.KeyInfo{Key: key, Modified: *latest}, nil
}

// MoveAside renames each of keys to key+suffix (or key+suffix-2, -3, …
// when that is taken) in one transaction, provided keys[0] still holds
// expect: a value replaced since it was read is not the caller's to move.
// It returns old → new key for each key moved; keys without a value are
// skipped.
func (s *Storage) MoveAside(ctx context.Context, keys []string, expect []byte, suffix string) (map[string]string, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	if err := s.schema(ctx); err != nil {
		return nil, err
	}
	moved := map[string]string{}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var now []byte
		err := tx.QueryRow(ctx, "SELECT value FROM signpost_certmagic_data WHERE key = $1 FOR UPDATE", keys[0]).Scan(&now)
		if errors.Is(err, pgx.ErrNoRows) {
			return fs.ErrNotExist
		}
		if err != nil {
			return err
		}
		if string(now) != string(expect) {
			return errors.New("changed while being read")
		}
		for _, from := range keys {
			to := from + suffix
			for i := 2; ; i++ {
				var taken bool
				if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM signpost_certmagic_data WHERE key = $1)", to).Scan(&taken); err != nil {
					return err
				}
				if !taken {
					break
				}
				to = fmt.Sprintf("%s%s-%d", from, suffix, i)
			}
			tag, err := tx.Exec(ctx, "UPDATE signpost_certmagic_data SET key = $2 WHERE key = $1", from, to)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 1 {
				moved[from] = to
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: move %s aside: %w", keys[0], err)
	}
	return moved, nil
}

// Lock takes the lock name, waiting while another holder's lease runs.
func (s *Storage) Lock(ctx context.Context, name string) error {
	for {
		ok, err := s.TryLock(ctx, name)
		if err != nil || ok {
			return err
		}
		t := time.NewTimer(s.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("pgstore: lock %s: %w", name, ctx.Err())
		case <-t.C:
		}
	}
}

// TryLock takes the lock name if nobody holds it or its lease has run
// out, and reports whether it did.
func (s *Storage) TryLock(ctx context.Context, name string) (bool, error) {
	if err := s.schema(ctx); err != nil {
		return false, err
	}
	owner := newOwner()
	tag, err := s.pool.Exec(ctx, `INSERT INTO signpost_certmagic_locks (name, owner, expires)
		VALUES ($1, $2, now() + make_interval(secs => $3))
		ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, expires = EXCLUDED.expires
		WHERE signpost_certmagic_locks.expires < now()`, name, owner, s.ttl.Seconds())
	if err != nil {
		return false, fmt.Errorf("pgstore: lock %s: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil
	}
	lctx, stop := context.WithCancel(context.Background())
	l := &lease{owner: owner, stop: stop, done: make(chan struct{})}
	s.mu.Lock()
	old := s.held[name]
	s.held[name] = l
	s.mu.Unlock()
	if old != nil {
		// This process held it before, and its lease ran out while it
		// could not renew it; that holder has lost it.
		old.stop()
	}
	go s.renew(lctx, name, l)
	return true, nil
}

// renew extends l's lease every LockTTL/4 until stopped, or until it
// finds the lock taken over.
func (s *Storage) renew(ctx context.Context, name string, l *lease) {
	defer close(l.done)
	t := time.NewTicker(s.ttl / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, s.ttl/4)
		tag, err := s.pool.Exec(rctx, `UPDATE signpost_certmagic_locks SET expires = now() + make_interval(secs => $3)
			WHERE name = $1 AND owner = $2`, name, l.owner, s.ttl.Seconds())
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			// Keep trying: the lease is good until it runs out.
		case tag.RowsAffected() == 0:
			s.log.Warn("lock lost: its lease ran out before it could be renewed, and it was taken over or removed", "lock", name)
			return
		}
	}
}

// Unlock releases the lock name taken by Lock or TryLock.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	l := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if l == nil {
		return fmt.Errorf("pgstore: unlock %s: not held by this process", name)
	}
	l.stop()
	<-l.done
	_, err := s.pool.Exec(ctx, "DELETE FROM signpost_certmagic_locks WHERE name = $1 AND owner = $2", name, l.owner)
	if err != nil {
		// The lease runs out on its own after LockTTL.
		return fmt.Errorf("pgstore: unlock %s: %w", name, err)
	}
	return nil
}

func newOwner() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

var (
	_ certmagic.Storage   = (*Storage)(nil)
	_ certmagic.TryLocker = (*Storage)(nil)
)
