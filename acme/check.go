package acme

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/signpost-dev/signpost/pgstore"
)

// CheckStorage checks that dir can hold certificates. For a postgres://
// URL, it connects, within five seconds, and creates the tables if they
// are missing; the error names the database without its password. For a
// directory: it is a directory
// this process can write, or it does not exist yet and the nearest
// directory above it is one this process can write (certmagic creates
// the rest). It writes and removes a small file to find out, and creates
// nothing else. The error, if any, says what is wrong with dir and how to
// fix it, without naming the configuration key: the caller knows where
// dir was written.
func CheckStorage(dir string) error {
	if pgstore.IsURL(dir) {
		return checkDatabase(dir)
	}
	if dir == "" {
		return errors.New("is empty; set it to a directory signpost can write, e.g. \"/var/lib/signpost\"")
	}
	clean := filepath.Clean(dir)
	existing := clean
	for {
		info, err := os.Stat(existing)
		if err == nil {
			if info.IsDir() {
				break
			}
			kind := "a regular file"
			switch t := info.Mode().Type(); {
			case t&fs.ModeDevice != 0:
				kind = "a device"
			case t&fs.ModeNamedPipe != 0:
				kind = "a named pipe"
			case t&fs.ModeSocket != 0:
				kind = "a socket"
			case t != 0:
				kind = "a special file"
			}
			if existing == clean {
				return fmt.Errorf("%q is %s, not a directory; move it away or set acme.storage to a directory", dir, kind)
			}
			if kind != "a regular file" {
				return fmt.Errorf("%q is under %s %s; set acme.storage to a directory elsewhere", dir, kind, existing)
			}
			return fmt.Errorf("%q is under %s %s; remove %s or set acme.storage to a directory elsewhere", dir, kind, existing, existing)
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("%q cannot be checked: %v; make it a directory signpost can write", dir, unwrapPath(err))
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			return fmt.Errorf("%q cannot be created: no part of it exists", dir)
		}
		existing = parent
	}
	probe, err := os.CreateTemp(existing, ".signpost-check-*")
	if err == nil {
		// Some bytes too, so a full file system shows here and not at the
		// first certificate.
		_, err = probe.Write(make([]byte, 4096))
		if cerr := probe.Close(); err == nil {
			err = cerr
		}
		os.Remove(probe.Name())
	}
	switch {
	case err == nil:
		return nil
	case existing == clean:
		return fmt.Errorf("%q is not writable (%v); make it writable by the user signpost runs as, or set acme.storage to a directory that is", dir, unwrapPath(err))
	default:
		return fmt.Errorf("%q does not exist and cannot be created: %s is not writable (%v); create %s writable by the user signpost runs as, or set acme.storage to a directory that is", dir, existing, unwrapPath(err), dir)
	}
}

func checkDatabase(url string) error {
	db, err := pgstore.Open(pgstore.Options{URL: url})
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.Ping(ctx); err != nil {
		// pgconn puts each address tried on a line of its own; this is
		// one line of validate's output.
		reason := strings.Join(strings.Fields(err.Error()), " ")
		return fmt.Errorf("%s cannot be used (%s); check that PostgreSQL runs there and that the user may connect and create tables (or that they exist)", pgstore.Redact(url), reason)
	}
	return nil
}

// unwrapPath drops the operation and path of a *fs.PathError, which name
// the probe file rather than anything the user wrote.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
