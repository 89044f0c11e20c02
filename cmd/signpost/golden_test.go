package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the current output")

var goldenNow = func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }

// A golden file is a small archive: a header of "key: value" lines, then
// sections that start with "-- name --". Header keys:
//
//	args:   the command line after "signpost"; CONFIG is replaced by the
//	        path of the "-- signpost.toml --" section or of config:
//	config: a file the case uses instead of its own section
//
// The sections "stdout", "stderr" and "exit" hold what the run must print
// and return; `go test -update` rewrites them.
type golden struct {
	header   map[string]string
	order    []string
	sections map[string]string
}

func readGolden(t *testing.T, path string) *golden {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	g := &golden{header: map[string]string{}, sections: map[string]string{}}
	cur := ""
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "-- "); ok && strings.HasSuffix(name, " --") {
			cur = strings.TrimSuffix(name, " --")
			// An empty section has no lines: note it here, or set would
			// append it again and -update would write it twice.
			if _, ok := g.sections[cur]; !ok {
				g.order = append(g.order, cur)
				g.sections[cur] = ""
			}
			continue
		}
		if cur == "" {
			if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
				g.header[k] = strings.TrimSpace(v)
			}
			continue
		}
		g.sections[cur] += line
	}
	return g
}

func (g *golden) write(path string) error {
	var b strings.Builder
	for _, k := range []string{"args", "config"} {
		if v, ok := g.header[k]; ok {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	for _, name := range g.order {
		fmt.Fprintf(&b, "-- %s --\n%s", name, g.sections[name])
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func (g *golden) set(name, value string) {
	if _, ok := g.sections[name]; !ok {
		g.order = append(g.order, name)
	}
	g.sections[name] = value
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.golden")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".golden"), func(t *testing.T) {
			g := readGolden(t, file)
			dir := t.TempDir()
			config := filepath.Join(dir, "signpost.toml")
			if c, ok := g.header["config"]; ok {
				config = c
			} else if err := os.WriteFile(config, []byte(g.sections["signpost.toml"]), 0o644); err != nil {
				t.Fatal(err)
			}
			args := strings.Fields(strings.ReplaceAll(g.header["args"], "CONFIG", config))
			var stdout, stderr bytes.Buffer
			e := env{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }, now: goldenNow}
			code := e.run(context.Background(), args)
			clean := func(s string) string { return strings.ReplaceAll(s, dir+string(filepath.Separator), "") }
			got := map[string]string{"stdout": clean(stdout.String()), "stderr": clean(stderr.String()), "exit": strconv.Itoa(code) + "\n"}
			if *update {
				for _, name := range []string{"stdout", "stderr", "exit"} {
					g.set(name, got[name])
				}
				if err := g.write(file); err != nil {
					t.Fatal(err)
				}
				return
			}
			for _, name := range []string{"exit", "stdout", "stderr"} {
				if got[name] != g.sections[name] {
					t.Errorf("%s:\n--- got ---\n%s--- want ---\n%s", name, got[name], g.sections[name])
				}
			}
		})
	}
}
