package config

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Problem is one thing wrong with (or worth knowing about) a configuration
// file, written the way a compiler writes it: file, line, key, what is wrong
// and what would be right.
type Problem struct {
	File string
	Line int    // 1-based; 0 when the key is not in the file (a missing key)
	Key  string // dotted path with indices, e.g. "zone[0].addresses[1]"; empty for the whole file
	Msg  string
}

func (p *Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Errors is every problem that makes a file invalid. Load and Parse return
// it (as error) so callers can print all of them, not just the first.
type Errors []*Problem

func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, p := range e {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// problems collects errors and warnings against one file, resolving each key
// to its line through the position index.
type problems struct {
	ctx      context.Context // the build gives up when it is done
	file     string
	pos      func() *positions
	errs     Errors
	warnings []*Problem
}

// stopped reports whether the build should give up; loops over zones and
// delegations ask every so often (every index i that is a multiple of 256).
func (ps *problems) stopped(i int) bool {
	return i%256 == 0 && ps.ctx.Err() != nil
}

func (ps *problems) errorf(key, format string, args ...any) {
	ps.errs = append(ps.errs, ps.problem(key, format, args...))
}

func (ps *problems) warnf(key, format string, args ...any) {
	ps.warnings = append(ps.warnings, ps.problem(key, format, args...))
}

func (ps *problems) problem(key, format string, args ...any) *Problem {
	return &Problem{File: ps.file, Line: ps.pos().line(key), Key: key, Msg: fmt.Sprintf(format, args...)}
}

// sorted orders problems by line so output reads top to bottom; problems
// without a line (missing keys) come last, in the order found.
func sorted(list []*Problem) []*Problem {
	slices.SortStableFunc(list, func(a, b *Problem) int {
		switch {
		case a.Line == b.Line:
			return 0
		case a.Line == 0:
			return 1
		case b.Line == 0:
			return -1
		}
		return a.Line - b.Line
	})
	return list
}

// closest returns the candidate nearest to s by edit distance, if it is near
// enough to be a plausible typo.
func closest(s string, candidates []string) string {
	best, bestDist := "", len(s)/2+2
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			// A swap of two neighbours is one typo, not two.
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev[j-1]) // approximates Damerau distance
			}
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
