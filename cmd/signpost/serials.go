package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/signpost-dev/signpost/pgstore"
)

// serialsFile is where serve keeps the last SOA serial served per zone, so
// that after a restart no secondary sees a serial go backwards (config
// takes them as Options.Floor). With acme.storage a database, it is the
// key of the same name under "signpost/".
const serialsFile = "dns-serials.json"

// dbTimeout bounds each read or write of the serials in a database: the
// DNS server waits for neither, but start-up waits for the read.
const dbTimeout = 5 * time.Second

// readSerials returns the saved serials; none saved means none.
func readSerials(storage string) (map[string]uint32, error) {
	data, where, err := readState(storage, serialsFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var serials map[string]uint32
	if err := json.Unmarshal(data, &serials); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return serials, nil
}

// writeSerials replaces the saved serials atomically: a crash leaves the
// old ones or the new ones, never half of them.
func writeSerials(storage string, serials map[string]uint32) error {
	data, err := json.Marshal(serials)
	if err != nil {
		return err
	}
	return writeState(storage, serialsFile, data)
}

// readState reads the state file name (a slash-separated path) from
// storage, a directory or a database URL, where it is the key
// "signpost/"+name. It also returns where that is, for messages.
func readState(storage, name string) (data []byte, where string, err error) {
	if pgstore.IsURL(storage) {
		where = pgstore.Redact(storage) + " key signpost/" + name
		err = withDB(storage, func(ctx context.Context, db *pgstore.Storage) (err error) {
			data, err = db.Load(ctx, "signpost/"+name)
			return err
		})
		return data, where, err
	}
	where = filepath.Join(storage, filepath.FromSlash(name))
	data, err = os.ReadFile(where)
	return data, where, err
}

// writeState replaces the state file name in storage atomically, readable
// by signpost's user only (mode 0600, directories 0700).
func writeState(storage, name string, data []byte) error {
	if pgstore.IsURL(storage) {
		return withDB(storage, func(ctx context.Context, db *pgstore.Storage) error {
			return db.Store(ctx, "signpost/"+name, data)
		})
	}
	path := filepath.Join(storage, filepath.FromSlash(name))
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, filepath.Base(path)+".*") // mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after a successful rename this fails harmlessly
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// withDB runs f on the database at url, connected for this call only:
// serials are read once and written when a zone changes.
func withDB(url string, f func(context.Context, *pgstore.Storage) error) error {
	db, err := pgstore.Open(pgstore.Options{URL: url})
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	return f(ctx, db)
}
