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
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"
)

var errStopped = errors.New("acme: manager is stopped")

// gatedStorage is the certmagic storage of a Manager: a directory on disk,
// with three duties added.
//
// It refuses to write once close has returned. certmagic's jobs are
// cancelled by Stop but not waited for, so without the gate an obtain
// finishing late could write into a directory that the next Manager (after
// a restart or in the next test) already owns.
//
// It checks what it loads. A certificate, private key, metadata or ACME
// account file that does not parse would otherwise stop certmagic for that
// name for good (it gives up on any error but "not found"); instead the
// file and the files that belong with it are renamed aside and Load says
// "not found", so a new certificate or account is obtained and nothing is
// deleted.
//
// It reports failures to the attempt that met them (see faultReport), so a
// storage fault ends the attempt at once and the Manager's own back-off,
// not certmagic's, decides when to try again.
type gatedStorage struct {
	certmagic.Storage
	files *certmagic.FileStorage // the same storage, for file names
	log   *slog.Logger
	now   func() time.Time

	mu     sync.RWMutex // held for reading across every write, for writing by close
	closed bool
}

func newStorage(dir string, log *slog.Logger) *gatedStorage {
	files := &certmagic.FileStorage{Path: dir}
	return &gatedStorage{Storage: files, files: files, log: log, now: time.Now}
}

func (s *gatedStorage) write(f func() error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errStopped
	}
	return f()
}

// close waits for writes in flight and refuses all later ones.
func (s *gatedStorage) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

func (s *gatedStorage) Store(ctx context.Context, key string, value []byte) error {
	err := s.write(func() error { return s.Storage.Store(ctx, key, value) })
	return reportFault(ctx, "store", err)
}

// Lock creates a lock file, so it is a write. Unlock and Delete stay open
// after close: they only remove what this Manager created.
//
// certmagic treats an empty lock file as stale but fails on one that holds
// something other than its JSON, every time: such a file, garbage or JSON
// cut short (io.ErrUnexpectedEOF, as a crash or a full disk leaves it), is
// moved aside like any file that does not parse, and the lock taken again.
func (s *gatedStorage) Lock(ctx context.Context, name string) error {
	err := s.write(func() error { return s.Storage.Lock(ctx, name) })
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	if err != nil && (errors.As(err, &syntax) || errors.As(err, &typ) || errors.Is(err, io.ErrUnexpectedEOF)) {
		file := filepath.Join(s.files.Path, "locks", certmagic.StorageKeys.Safe(name)+".lock")
		if data, rerr := os.ReadFile(file); rerr == nil {
			if moved, qerr := s.quarantine(file, data); qerr == nil {
				s.log.Error("lock file does not parse; moved aside", "path", file, "moved_to", moved[file], "error", err)
				err = s.write(func() error { return s.Storage.Lock(ctx, name) })
			}
		}
	}
	return reportFault(ctx, "lock", err)
}

// TryLock keeps certmagic.TryLocker visible through the wrapper: the ARI
// update uses it to skip work another goroutine is already doing.
func (s *gatedStorage) TryLock(ctx context.Context, name string) (bool, error) {
	tl, ok := s.Storage.(certmagic.TryLocker)
	if !ok {
		return false, errors.New("acme: storage cannot try locks")
	}
	var got bool
	err := s.write(func() (err error) {
		got, err = tl.TryLock(ctx, name)
		return err
	})
	return got, reportFault(ctx, "lock", err)
}

func (s *gatedStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	keys, err := s.Storage.List(ctx, prefix, recursive)
	return keys, reportFault(ctx, "list", err)
}

func (s *gatedStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	info, err := s.Storage.Stat(ctx, key)
	return info, reportFault(ctx, "stat", err)
}

// Load returns the file at key. A certificate, key or account file that
// does not parse is moved aside, with the files of its set, and reported
// as not existing.
func (s *gatedStorage) Load(ctx context.Context, key string) ([]byte, error) {
	data, err := s.Storage.Load(ctx, key)
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
	file := s.files.Filename(key)
	moved, err := s.quarantine(file, data)
	if err != nil {
		err = fmt.Errorf("acme: %s %s does not parse (%v), and moving it aside failed: %w", kind, file, perr, err)
		return nil, reportFault(ctx, "move aside", err)
	}
	what := "certificate file does not parse; moved aside with the files that belong to it, a new certificate will be obtained"
	if strings.HasPrefix(kind, "ACME account") {
		what = "ACME account file does not parse; moved aside with the files that belong to it, a new account will be registered"
	}
	s.log.Error(what, "path", file, "moved_to", moved[file], "kind", kind, "error", perr, "moved", len(moved))
	return nil, fmt.Errorf("acme: %s %s did not parse and was moved aside: %w", kind, file, fs.ErrNotExist)
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

// quarantine renames file, whose content was read as data, to
// <file>.corrupt-<UTC time>, and the other files of its set with the same
// suffix (see set), so the set stays together and none of it is
// overwritten by what replaces it. It returns old → new path for each file
// moved.
func (s *gatedStorage) quarantine(file string, data []byte) (map[string]string, error) {
	moved := map[string]string{}
	err := s.write(func() error {
		// The file may have been replaced since it was read, by a whole
		// new file (certmagic writes atomically); that one is not ours to
		// move. The caller retries and reads it.
		now, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		if !bytes.Equal(now, data) {
			return errors.New("changed while being read")
		}
		suffix := ".corrupt-" + s.now().UTC().Format("20060102T150405Z")
		for _, from := range set(file) {
			to := from + suffix
			// Never over an earlier one moved aside in the same second.
			for i := 2; ; i++ {
				if _, err := os.Lstat(to); err != nil {
					break // free, or Rename says why not
				}
				to = fmt.Sprintf("%s%s-%d", from, suffix, i)
			}
			if err := os.Rename(from, to); err != nil {
				return err
			}
			moved[from] = to
		}
		return nil
	})
	return moved, err
}

// set returns file and the files that belong with it: for a certificate
// file, the certificate, key and metadata of the same name; for an account
// file, the account's registration and key, which are every .json and
// .key file in its directory.
func set(file string) []string {
	dir, base := filepath.Split(file)
	files := []string{file}
	add := func(name string) {
		p := filepath.Join(dir, name)
		if p == file {
			return
		}
		if info, err := os.Lstat(p); err == nil && info.Mode().IsRegular() {
			files = append(files, p)
		}
	}
	if filepath.Base(filepath.Dir(filepath.Dir(dir))) == "users" {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if ext := filepath.Ext(e.Name()); ext == ".json" || ext == ".key" {
				add(e.Name())
			}
		}
		return files
	}
	stem := strings.TrimSuffix(base, filepath.Ext(base))
	for _, ext := range []string{".crt", ".key", ".json"} {
		add(stem + ext)
	}
	return files
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
