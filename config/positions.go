package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// positions maps every key path in a TOML document ("zone[1].records[0]")
// to the line it is written on, so that validation errors found long after
// decoding can still name a line.
type positions struct {
	lines map[string]int
	// keys maps where a key is written (line, column) to its indexed path,
	// to put indices into go-toml's unknown-key errors, which leave out
	// array indices and inline-table nesting.
	keys  map[[2]int]string
	keyAt func(unstable.Iterator, string)
}

func indexPositions(data []byte) *positions {
	pos := &positions{lines: map[string]int{}, keys: map[[2]int]string{}}
	var p unstable.Parser
	p.Reset(data)
	arrays := map[string]int{} // indexed path of an array of tables -> entries so far
	table := ""
	// go-toml's Parser.Shape counts lines from the start of the document
	// on every call, which made indexing quadratic in the file size (134 s
	// for 10,000 zones); one pass for where lines start and a binary search
	// per key keep it linear.
	starts := []int{0}
	for i, c := range data {
		if c == '\n' {
			starts = append(starts, i+1)
		}
	}
	// at returns the 1-based line and column (in bytes, as go-toml counts
	// them in its errors) of a node's first byte.
	at := func(n *unstable.Node) (int, int) {
		off := int(n.Raw.Offset)
		i, found := slices.BinarySearch(starts, off)
		if !found {
			i--
		}
		return i + 1, off - starts[i] + 1
	}
	lineOf := func(n *unstable.Node) int {
		if n.Raw.Length == 0 && n.Raw.Offset == 0 {
			return 0
		}
		line, _ := at(n)
		return line
	}
	// keyAt records the path of a key=value's last key part at its position.
	keyAt := func(it unstable.Iterator, path string) {
		var last *unstable.Node
		for it.Next() {
			last = it.Node()
		}
		if last != nil && (last.Raw.Length > 0 || last.Raw.Offset > 0) {
			line, column := at(last)
			pos.keys[[2]int{line, column}] = path
		}
	}
	pos.keyAt = keyAt
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			parts, line := keyOf(e.Key(), lineOf)
			path := ""
			for i, part := range parts {
				path = joinKey(path, part)
				if i == len(parts)-1 && e.Kind == unstable.ArrayTable {
					arrays[path]++
					path = fmt.Sprintf("%s[%d]", path, arrays[path]-1)
				} else if n, ok := arrays[path]; ok {
					path = fmt.Sprintf("%s[%d]", path, n-1)
				}
			}
			table = path
			pos.set(path, line)
		case unstable.KeyValue:
			parts, line := keyOf(e.Key(), lineOf)
			path := table
			for _, part := range parts {
				path = joinKey(path, part)
			}
			pos.set(path, line)
			keyAt(e.Key(), path)
			pos.walk(path, e.Value(), lineOf)
		}
	}
	return pos
}

func (pos *positions) walk(path string, n *unstable.Node, lineOf func(*unstable.Node) int) {
	switch n.Kind {
	case unstable.Array:
		i := 0
		for it := n.Children(); it.Next(); {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			elem := fmt.Sprintf("%s[%d]", path, i)
			if l := lineOf(c); l > 0 {
				pos.set(elem, l)
			} else {
				pos.set(elem, pos.lines[path])
			}
			pos.walk(elem, c, lineOf)
			i++
		}
	case unstable.InlineTable:
		for it := n.Children(); it.Next(); {
			c := it.Node()
			if c.Kind != unstable.KeyValue {
				continue
			}
			parts, line := keyOf(c.Key(), lineOf)
			sub := path
			for _, part := range parts {
				sub = joinKey(sub, part)
			}
			if line == 0 {
				line = pos.lines[path]
			}
			pos.set(sub, line)
			pos.keyAt(c.Key(), sub)
			pos.walk(sub, c.Value(), lineOf)
		}
	}
}

func keyOf(it unstable.Iterator, lineOf func(*unstable.Node) int) ([]string, int) {
	var parts []string
	line := 0
	for it.Next() {
		n := it.Node()
		parts = append(parts, string(n.Data))
		if line == 0 {
			line = lineOf(n)
		}
	}
	return parts, line
}

func (pos *positions) set(path string, line int) {
	if _, ok := pos.lines[path]; !ok && line > 0 {
		pos.lines[path] = line
	}
}

// line returns the line of key, or of its nearest enclosing key that is
// written in the file (a missing key is reported where its table starts).
func (pos *positions) line(key string) int {
	for key != "" {
		if l, ok := pos.lines[key]; ok {
			return l
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			return 0
		}
		key = key[:i]
	}
	return 0
}

// pathAt returns the indexed path of the key written at line and column,
// or "" if none is known there.
func (pos *positions) pathAt(line, column int) string {
	return pos.keys[[2]int{line, column}]
}

// tableOfPath names the table a key path is in, without indices
// ("delegation[0].support.contacts[1].rol" -> "delegation.support.contacts").
func tableOfPath(path string) string {
	if i := strings.LastIndex(path, "."); i >= 0 {
		path = path[:i]
	} else {
		return ""
	}
	var b strings.Builder
	depth := 0
	for _, r := range path {
		switch {
		case r == '[':
			depth++
		case r == ']':
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func joinKey(prefix, part string) string {
	if prefix == "" {
		return part
	}
	return prefix + "." + part
}
