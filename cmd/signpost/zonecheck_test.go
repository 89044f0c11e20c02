package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// TestZoneCheckers feeds what `signpost zone` prints to BIND's and Knot's
// zone checkers, so the master files are what other servers accept.
func TestZoneCheckers(t *testing.T) {
	checkers := map[string]func(origin, file string) *exec.Cmd{
		"named-checkzone": func(origin, file string) *exec.Cmd {
			return exec.Command("named-checkzone", "-k", "fail", "-n", "fail", origin, file)
		},
		"kzonecheck": func(origin, file string) *exec.Cmd { return exec.Command("kzonecheck", "-o", origin, file) },
	}
	examples, _ := filepath.Glob("../../deploy/examples/*.toml")
	for name, check := range checkers {
		t.Run(name, func(t *testing.T) {
			if _, err := exec.LookPath(name); err != nil {
				t.Skipf("%s not installed (Debian: bind9-utils / knot-dnssecutils); .ci/run installs it", name)
			}
			for _, example := range examples {
				var stdout, stderr bytes.Buffer
				e := env{stdout: &stdout, stderr: &stderr, getenv: os.Getenv, now: goldenNow}
				if code := e.run(context.Background(), []string{"zone", "-config", example}); code != 0 {
					t.Fatalf("signpost zone -config %s: exit %d\n%s", example, code, stderr.String())
				}
				// One file per zone: split at the header line zone prints.
				for _, part := range regexp.MustCompile(`(?m)^; zone `).Split(stdout.String(), -1)[1:] {
					origin := regexp.MustCompile(`^\S+`).FindString(part)
					file := filepath.Join(t.TempDir(), "zone")
					if err := os.WriteFile(file, []byte("; zone "+part), 0o644); err != nil {
						t.Fatal(err)
					}
					if out, err := check(origin, file).CombinedOutput(); err != nil {
						t.Errorf("%s rejects zone %s from %s: %v\n%s", name, origin, example, err, out)
					}
				}
			}
		})
	}
}
