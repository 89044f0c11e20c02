// Package e2e runs two real Matrix homeservers (Dendrite) that federate
// through signpost, in a network namespace with its own DNS: a root zone
// served by NSD delegates chat.example.test to signpost and to an NSD
// secondary, Unbound resolves for every process, and Pebble issues every
// certificate. It is a module of its own so that Dendrite's dependencies
// stay out of signpost's go.mod.
package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary runs twice: outside, where it builds the programs and
// installs matrix-js-sdk (both need the network), and inside a new network
// and mount namespace, where it runs the tests. These variables carry what
// the outside prepared to the inside.
const (
	envInside = "SIGNPOST_E2E_INSIDE" // set in the namespace
	envSkip   = "SIGNPOST_E2E_SKIP"   // why the tests skip, when they must
	envBin    = "SIGNPOST_E2E_BIN"    // directory of signpost, dendrite, pebble
	envPebble = "SIGNPOST_E2E_PEBBLE" // Pebble's module directory (its test certificates)
	envJS     = "SIGNPOST_E2E_JS"     // directory holding node_modules, or why it is missing

	// envRequire, set by CI, turns every skip into a failure: CI installs
	// everything, so a skip there means the test did not run.
	envRequire = "SIGNPOST_E2E_REQUIRE"
)

// programs run from the system; without them the tests skip (CI installs
// them: .ci/run).
var programs = []string{"nsd", "unbound", "nsupdate", "ip"}

func TestMain(m *testing.M) {
	if os.Getenv(envInside) != "" {
		os.Exit(inside(m))
	}
	if reason := prerequisites(); reason != "" {
		os.Setenv(envSkip, reason)
		os.Exit(m.Run())
	}
	code := 1
	if err := prepare(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
	} else {
		code = enter()
	}
	os.RemoveAll(os.Getenv(envBin))
	os.Exit(code)
}

// prerequisites returns why the test world cannot be built here, or "".
func prerequisites() string {
	if os.Getuid() != 0 {
		return "not root: the test world needs a network namespace and its own /etc/resolv.conf"
	}
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Sprintf("%s not installed (Debian: nsd unbound bind9-dnsutils iproute2)", p)
		}
	}
	return ""
}

// prepare builds the programs into a cache directory and installs
// matrix-js-sdk, and records where in the environment; envBin is a
// directory of this run's own, for TestMain to remove.
func prepare() error {
	cache, err := os.UserCacheDir()
	if err != nil {
		return err
	}
	cache = filepath.Join(cache, "signpost-e2e")
	bin, err := build(cache)
	if err != nil {
		return err
	}
	os.Setenv(envBin, bin)
	dir, err := goOutput("list", "-m", "-f", "{{.Dir}}", "github.com/letsencrypt/pebble/v2")
	if err != nil {
		return err
	}
	os.Setenv(envPebble, dir)
	js, err := installJS(cache)
	if err != nil {
		// Only scenario 4 needs it; it skips with this reason.
		js = "missing: " + err.Error()
	}
	os.Setenv(envJS, js)
	return nil
}

// build compiles Dendrite and Pebble once per version into cache (they
// take minutes and never change), and signpost on every run (go build
// reuses its own cache, so that costs seconds).
func build(cache string) (string, error) {
	versions, err := goOutput("list", "-m", "-f", "{{.Path}}@{{.Version}}",
		"github.com/matrix-org/dendrite", "github.com/letsencrypt/pebble/v2")
	if err != nil {
		return "", err
	}
	goVersion, err := goOutput("env", "GOVERSION")
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(versions + goVersion))
	tools := filepath.Join(cache, "bin-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(filepath.Join(tools, "pebble")); err != nil {
		start := time.Now()
		fmt.Fprintf(os.Stderr, "e2e: building %s with %s into %s (once)\n", strings.ReplaceAll(versions, "\n", ", "), goVersion, tools)
		if err := os.MkdirAll(cache, 0o755); err != nil {
			return "", err
		}
		tmp, err := os.MkdirTemp(cache, "building-")
		if err != nil {
			return "", err
		}
		defer os.RemoveAll(tmp)
		// Pure Go SQLite: no cgo, so no C compiler is needed.
		if err := goRun([]string{"CGO_ENABLED=0"}, "build", "-o", tmp+"/",
			"github.com/matrix-org/dendrite/cmd/dendrite", "github.com/letsencrypt/pebble/v2/cmd/pebble"); err != nil {
			return "", err
		}
		// Another run may have finished first; then either copy will do.
		if err := os.Rename(tmp, tools); err != nil && !errors.Is(err, fs.ErrExist) && !errors.Is(err, syscall.ENOTEMPTY) {
			return "", err
		}
		fmt.Fprintf(os.Stderr, "e2e: built in %.0fs\n", time.Since(start).Seconds())
	}
	// A directory per run, so that runs from two checkouts at once do not
	// overwrite each other's signpost.
	bin, err := os.MkdirTemp(cache, "run-")
	if err != nil {
		return "", err
	}
	// From the product module itself, with its own go.mod: this module
	// never needs to follow the product's dependencies.
	if err := goRun(nil, "-C", "..", "build", "-o", bin+"/", "./cmd/signpost"); err != nil {
		return "", err
	}
	for _, p := range []string{"dendrite", "pebble"} {
		if err := os.Symlink(filepath.Join(tools, p), filepath.Join(bin, p)); err != nil {
			return "", err
		}
	}
	return bin, nil
}

// installJS installs js/package-lock.json with npm ci into a directory
// named for the lock file's hash, so a second run reuses it.
func installJS(cache string) (string, error) {
	lock, err := os.ReadFile("js/package-lock.json")
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(lock)
	dir := filepath.Join(cache, "js-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "matrix-js-sdk")); err == nil {
		return dir, nil
	}
	for _, p := range []string{"node", "npm"} {
		if _, err := exec.LookPath(p); err != nil {
			return "", fmt.Errorf("%s not installed (Node.js 20 or later)", p)
		}
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(cache, "installing-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	for _, f := range []string{"package.json", "package-lock.json"} {
		data, err := os.ReadFile(filepath.Join("js", f))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(tmp, f), data, 0o644); err != nil {
			return "", err
		}
	}
	cmd := exec.Command("npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm ci: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, fs.ErrExist) && !errors.Is(err, syscall.ENOTEMPTY) {
		return "", err
	}
	return dir, nil
}

func goOutput(args ...string) (string, error) {
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return strings.TrimSpace(string(out)), nil
}

func goRun(env []string, args ...string) error {
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return nil
}

// enter runs this test binary again in a new network namespace (only a
// loopback interface, so nothing leaves the machine) and a new mount
// namespace (so its /etc/resolv.conf is the test's), and returns its
// exit code.
func enter() int {
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Env = append(os.Environ(), envInside+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET,
		// As unshare(1) does, the child's mounts are made private, so the
		// bind mount below never shows outside.
		Unshareflags: syscall.CLONE_NEWNS,
		Pdeathsig:    syscall.SIGKILL,
	}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintf(os.Stderr, "e2e: cannot enter a network namespace: %v\n", err)
		return 1
	}
	return 0
}

// inside sets up the namespace: loopback up, and /etc/resolv.conf naming
// only the world's resolver, which every program (Go's resolver, glibc
// for Node and nsupdate) reads.
func inside(m *testing.M) int {
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: ip link set lo up: %v\n%s", err, out)
		return 1
	}
	f, err := os.CreateTemp("", "e2e-resolv-*.conf")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.Remove(f.Name())
	fmt.Fprintf(f, "nameserver %s\noptions timeout:2 attempts:2\n", resolverIP)
	f.Close()
	if err := syscall.Mount(f.Name(), "/etc/resolv.conf", "", syscall.MS_BIND, ""); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: bind mount over /etc/resolv.conf: %v\n", err)
		return 1
	}
	return m.Run()
}
