package acme

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"

	"github.com/signpost-dev/signpost/pgstore"
)

var errStopped = errors.New("acme: manager is stopped")

// gatedStorage is the certmagic storage of a Manager: a directory on disk
// or a PostgreSQL database (see backend), with three duties added.
//
// It refuses to write once close has returned. certmagic's jobs are
// cancelled by Stop but not waited for, so without the gate an obtain
// finishing late could write into storage that the next Manager (after
// a restart or in the next test) already owns.
//
// It checks what it loads. A certificate, private key, metadata or ACME
// account that does not parse would otherwise stop certmagic for that
// name for good (it gives up on any error but "not found"); instead the
// key and the keys that belong with it are renamed aside and Load says
// "not found", so a new certificate or account is obtained and nothing is
// deleted.
//
// It reports failures to the attempt that met them (see faultReport), so a
// storage fault (a full disk, a database that is down) ends the attempt at
// once and the Manager's own back-off, not certmagic's, decides when to
// try again.
type gatedStorage struct {
	backend
	log *slog.Logger
	now func() time.Time

	mu     sync.RWMutex // held for reading across every write, for writing by close
	closed bool
}

// backend is where a gatedStorage keeps its keys.
type backend interface {
	certmagic.Storage
	certmagic.TryLocker
	// where names key for a log line: a file path, or the key itself.
	where(key string) string
	// moveAside renames keys to key+suffix (or a free variant of it),
	// provided keys[0] still holds data, and returns old → new key.
	moveAside(ctx context.Context, keys []string, data []byte, suffix string) (map[string]string, error)
	// close releases what the backend holds (connections, locks).
	close()
	// String names the storage for certmagic's logs, without a password.
	String() string
}

// newStorage returns the storage acme.storage names: a postgres:// URL
// or a directory.
func newStorage(storage string, log *slog.Logger) (*gatedStorage, error) {
	s := &gatedStorage{log: log, now: time.Now}
	if pgstore.IsURL(storage) {
		db, err := pgstore.Open(pgstore.Options{URL: storage, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("acme: storage %w", err)
		}
		s.backend = dbBackend{db}
	} else {
		s.backend = fileBackend{&certmagic.FileStorage{Path: storage}}
	}
	return s, nil
}

func (s *gatedStorage) write(f func() error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errStopped
	}
	return f()
}

// close waits for writes in flight, refuses all later ones, and closes
// the backend.
func (s *gatedStorage) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.backend.close()
}

func (s *gatedStorage) Store(ctx context.Context, key string, value []byte) error {
	err := s.write(func() error { return s.backend.Store(ctx, key, value) })
	return reportFault(ctx, "store", err)
}

// Lock takes a lock, so it is a write. Unlock and Delete stay open after
// close: they only remove what this Manager created.
//
// With a directory, certmagic treats an empty lock file as stale but
// fails on one that holds something other than its JSON, every time:
// such a file, garbage or JSON cut short (io.ErrUnexpectedEOF, as a crash
// or a full disk leaves it), is moved aside like any file that does not
// parse, and the lock taken again.
func (s *gatedStorage) Lock(ctx context.Context, name string) error {
	err := s.write(func() error { return s.backend.Lock(ctx, name) })
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	if _, files := s.backend.(fileBackend); files && err != nil && (errors.As(err, &syntax) || errors.As(err, &typ) || errors.Is(err, io.ErrUnexpectedEOF)) {
		key := path.Join("locks", certmagic.StorageKeys.Safe(name)+".lock")
		if data, rerr := s.backend.Load(ctx, key); rerr == nil {
			if moved, qerr := s.quarantine(ctx, []string{key}, data); qerr == nil {
				s.log.Error("lock file does not parse; moved aside", "path", s.where(key), "moved_to", s.where(moved[key]), "error", err)
				err = s.write(func() error { return s.backend.Lock(ctx, name) })
			}
		}
	}
	return reportFault(ctx, "lock", err)
}

// TryLock keeps certmagic.TryLocker visible through the wrapper: the ARI
// update uses it to skip work another goroutine is already doing.
func (s *gatedStorage) TryLock(ctx context.Context, name string) (bool, error) {
	var got bool
	err := s.write(func() (err error) {
		got, err = s.backend.TryLock(ctx, name)
		return err
	})
	return got, reportFault(ctx, "lock", err)
}

func (s *gatedStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	keys, err := s.backend.List(ctx, prefix, recursive)
	return keys, reportFault(ctx, "list", err)
}

func (s *gatedStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	info, err := s.backend.Stat(ctx, key)
	return info, reportFault(ctx, "stat", err)
}

// Load returns the value at key. A certificate, key or account that
// does not parse is moved aside, with the keys of its set, and reported
// as not existing.
func (s *gatedStorage) Load(ctx context.Context, key string) ([]byte, error) {
	data, err := s.backend.Load(ctx, key)
	if err != nil {
		return nil, reportFault(ctx, "load", err)
	}
	kind := kindOf(key)
	if kind == "" {
		return data, nil
	}
	perr := checkFile(kind, key, data)
	if perr == nil {
		return data, nil
	}
	where := s.where(key)
	moved, err := s.quarantine(ctx, s.set(ctx, key), data)
	if err != nil {
		err = fmt.Errorf("acme: %s %s does not parse (%v), and moving it aside failed: %w", kind, where, perr, err)
		return nil, reportFault(ctx, "move aside", err)
	}
	what := "certificate file does not parse; moved aside with the files that belong to it, a new certificate will be obtained"
	if strings.HasPrefix(kind, "ACME account") {
		what = "ACME account file does not parse; moved aside with the files that belong to it, a new account will be registered"
	}
	s.log.Error(what, "path", where, "moved_to", s.where(moved[key]), "kind", kind, "error", perr, "moved", len(moved))
	return nil, fmt.Errorf("acme: %s %s did not parse and was moved aside: %w", kind, where, fs.ErrNotExist)
}

// kindOf names what the file at a storage key holds, for the files Load
// checks; "" for every other key (locks, challenge tokens, OCSP staples).
// certmagic lays them out as certificates/<issuer>/<name>/<name>.{crt,key,json}
// and acme/<issuer>/users/<email>/<local part>.{json,key}.
func kindOf(key string) string {
	parts := strings.Split(key, "/")
	ext := path.Ext(key)
	stem := strings.TrimSuffix(parts[len(parts)-1], ext)
	switch {
	case len(parts) == 4 && parts[0] == "certificates" && stem == parts[2]:
		switch ext {
		case ".crt":
			return "certificate"
		case ".key":
			return "private key"
		case ".json":
			return "certificate metadata"
		}
	case len(parts) == 5 && parts[0] == "acme" && parts[2] == "users":
		switch ext {
		case ".key":
			return "ACME account key"
		case ".json":
			return "ACME account"
		}
	}
	return ""
}

// checkFile returns why data cannot be used as a file of kind, or nil.
func checkFile(kind, key string, data []byte) error {
	switch kind {
	case "certificate":
		return checkCertificates(data)
	case "private key", "ACME account key":
		_, err := certmagic.PEMDecodePrivateKey(data)
		return err
	case "certificate metadata":
		var res certmagic.CertificateResource
		return json.Unmarshal(data, &res)
	case "ACME account":
		var acct acme.Account
		return json.Unmarshal(data, &acct)
	}
	return fmt.Errorf("unknown kind of file %q at %s", kind, key)
}

// checkCertificates requires a PEM bundle of certificates, the first (the
// leaf) one that parses, and nothing else but whitespace: a file cut short
// loses the end of its last block, which crypto/tls would silently skip,
// serving a chain without its intermediate. The rest of the chain is only
// checked for whole PEM blocks: crypto/tls and certmagic parse only the
// leaf, and an intermediate Go rejects would otherwise be moved aside and
// ordered again forever.
func checkCertificates(data []byte) error {
	n := 0
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("PEM block %d is %q, want CERTIFICATE", n+1, block.Type)
		}
		if n == 0 {
			if _, err := x509.ParseCertificate(block.Bytes); err != nil {
				return fmt.Errorf("certificate 1: %w", err)
			}
		}
		n++
	}
	switch {
	case len(bytes.TrimSpace(rest)) > 0:
		return fmt.Errorf("%d bytes after certificate %d are not a complete PEM block (cut short?)", len(bytes.TrimSpace(rest)), n)
	case n == 0:
		return errors.New("no PEM certificate")
	}
	return nil
}

// quarantine renames keys, the first of which was read as data, to
// <key>.corrupt-<UTC time>, so the set stays together and none of it is
// overwritten by what replaces it. It returns old → new key for each key
// moved.
func (s *gatedStorage) quarantine(ctx context.Context, keys []string, data []byte) (map[string]string, error) {
	var moved map[string]string
	err := s.write(func() (err error) {
		// The first key may have been replaced since it was read, by a
		// whole new value (certmagic writes atomically); that one is not
		// ours to move. The caller retries and reads it.
		moved, err = s.backend.moveAside(ctx, keys, data, ".corrupt-"+s.now().UTC().Format("20060102T150405Z"))
		return err
	})
	return moved, err
}

// set returns key and the keys that belong with it: for a certificate,
// the certificate, key and metadata of the same name; for an account,
// the account's registration and key, which are every .json and .key
// in its directory.
func (s *gatedStorage) set(ctx context.Context, key string) []string {
	dir, base := path.Split(key)
	keys := []string{key}
	add := func(k string) {
		if k == key {
			return
		}
		if info, err := s.backend.Stat(ctx, k); err == nil && info.IsTerminal {
			keys = append(keys, k)
		}
	}
	if strings.HasPrefix(kindOf(key), "ACME account") {
		list, _ := s.backend.List(ctx, strings.TrimSuffix(dir, "/"), false)
		for _, k := range list {
			if ext := path.Ext(k); ext == ".json" || ext == ".key" {
				add(k)
			}
		}
		return keys
	}
	stem := strings.TrimSuffix(base, path.Ext(base))
	for _, ext := range []string{".crt", ".key", ".json"} {
		add(dir + stem + ext)
	}
	return keys
}

// fileBackend keeps keys as files under a directory, mode 0600.
type fileBackend struct{ *certmagic.FileStorage }

func (b fileBackend) where(key string) string { return b.Filename(key) }

func (b fileBackend) close() {}

func (b fileBackend) moveAside(_ context.Context, keys []string, data []byte, suffix string) (map[string]string, error) {
	now, err := os.ReadFile(b.Filename(keys[0]))
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(now, data) {
		return nil, errors.New("changed while being read")
	}
	moved := map[string]string{}
	for _, from := range keys {
		to := from + suffix
		// Never over an earlier one moved aside in the same second.
		for i := 2; ; i++ {
			if _, err := os.Lstat(b.Filename(to)); err != nil {
				break // free, or Rename says why not
			}
			to = fmt.Sprintf("%s%s-%d", from, suffix, i)
		}
		if err := os.Rename(b.Filename(from), b.Filename(to)); err != nil {
			return moved, err
		}
		moved[from] = to
	}
	return moved, nil
}

// dbBackend keeps keys in PostgreSQL, shared by every instance that
// names the same database.
type dbBackend struct{ *pgstore.Storage }

func (b dbBackend) where(key string) string { return key }

func (b dbBackend) close() { b.Close() }

func (b dbBackend) moveAside(ctx context.Context, keys []string, data []byte, suffix string) (map[string]string, error) {
	return b.MoveAside(ctx, keys, data, suffix)
}

// faultReport collects the first storage failure met while one attempt
// to load or obtain a certificate runs, and cancels that attempt: certmagic
// would otherwise retry an obtain on its own schedule (a minute, then
// longer), which a SIGHUP cannot shorten.
type faultReport struct {
	mu     sync.Mutex
	err    error
	cancel context.CancelFunc
}

type faultKey struct{}

// withFaultReport returns a context for one attempt, cancelled at the
// first storage fault, and the report to read the fault from.
func withFaultReport(ctx context.Context) (context.Context, *faultReport) {
	ctx, cancel := context.WithCancel(ctx)
	r := &faultReport{cancel: cancel}
	return context.WithValue(ctx, faultKey{}, r), r
}

// first returns the first fault, or nil.
func (r *faultReport) first() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// faultIn returns the first storage fault of the attempt ctx belongs to.
func faultIn(ctx context.Context) error {
	if r, ok := ctx.Value(faultKey{}).(*faultReport); ok {
		return r.first()
	}
	return nil
}

// reportFault passes err through, and if it is a storage failure (not a
// missing file, not a cancellation, not the gate after Stop) records it
// on the attempt that ctx belongs to and cancels that attempt.
func reportFault(ctx context.Context, op string, err error) error {
	if err == nil || errors.Is(err, fs.ErrNotExist) || errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errStopped) {
		return err
	}
	if r, ok := ctx.Value(faultKey{}).(*faultReport); ok {
		r.mu.Lock()
		if r.err == nil {
			r.err = fmt.Errorf("storage %s: %w", op, err)
		}
		r.mu.Unlock()
		r.cancel()
	}
	return err
}

var _ certmagic.TryLocker = (*gatedStorage)(nil)
