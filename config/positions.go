package config

import (
	"fmt"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// positions maps every key path in a TOML document ("zone[1].records[0]")
// to the line it is written on, so that validation errors found long after
// decoding can still name a line.
type positions struct {
	lines map[string]int
}

func indexPositions(data []byte) *positions {
	pos := &positions{lines: map[string]int{}}
	var p unstable.Parser
	p.Reset(data)
	arrays := map[string]int{} // indexed path of an array of tables -> entries so far
	table := ""
	lineOf := func(n *unstable.Node) int {
		if n.Raw.Length == 0 && n.Raw.Offset == 0 {
			return 0
		}
		return p.Shape(n.Raw).Start.Line
	}
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

// pathAt returns the indexed path written on line whose last element is
// name, used to put indices into go-toml's unindexed unknown-key errors.
func (pos *positions) pathAt(line int, name string) string {
	best := ""
	for path, l := range pos.lines {
		if l == line && (path == name || strings.HasSuffix(path, "."+name)) && (best == "" || len(path) < len(best)) {
			best = path
		}
	}
	return best
}

func joinKey(prefix, part string) string {
	if prefix == "" {
		return part
	}
	return prefix + "." + part
}
