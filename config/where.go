package config

import "fmt"

// Problemf returns a problem with key as written in the file the model was
// read from, at the key's line (or its table's, if the key was left out),
// for checks that config cannot make itself because they need I/O, such
// as whether acme.storage is writable.
func (m *Model) Problemf(key, format string, args ...any) *Problem {
	line := 0
	if m.pos != nil {
		line = m.pos().line(key)
	}
	return &Problem{File: m.Path, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}
}
