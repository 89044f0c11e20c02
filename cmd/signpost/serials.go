package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// serialsFile is where serve keeps the last SOA serial served per zone, so
// that after a restart no secondary sees a serial go backwards (config
// takes them as Options.Floor).
const serialsFile = "dns-serials.json"

// readSerials returns the saved serials; a missing file means none.
func readSerials(dir string) (map[string]uint32, error) {
	data, err := os.ReadFile(filepath.Join(dir, serialsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var serials map[string]uint32
	if err := json.Unmarshal(data, &serials); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, serialsFile), err)
	}
	return serials, nil
}

// writeSerials replaces the saved serials atomically: a crash leaves the
// old file or the new one, never half of one.
func writeSerials(dir string, serials map[string]uint32) error {
	data, err := json.Marshal(serials)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, serialsFile+".*")
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
	return os.Rename(f.Name(), filepath.Join(dir, serialsFile))
}
