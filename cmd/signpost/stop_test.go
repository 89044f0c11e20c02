package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signpost-dev/signpost/internal/manyzones"
	"github.com/signpost-dev/signpost/internal/testenv"
)

// writeProvider writes a provider's file with n zones in a temporary
// directory and returns its path.
func writeProvider(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "provider.toml")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := manyzones.Write(f, n, manyzones.Options{Storage: filepath.Join(dir, "state")}); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestServeStopDuringStartUp: a SIGTERM that comes while the file is
// loading stops serve with exit code 0 before it serves anything.
func TestServeStopDuringStartUp(t *testing.T) {
	path := writeProvider(t, 500)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	stderr := &testenv.SyncBuffer{}
	e := env{stdout: io.Discard, stderr: stderr, getenv: func(string) string { return "" }, now: time.Now,
		ready: func(bound) { t.Error("serve became ready after SIGTERM") }}
	if code := e.run(ctx, []string{"serve", "-config", path}); code != exitOK {
		t.Errorf("exit %d, want %d:\n%s", code, exitOK, stderr)
	}
	if log := stderr.String(); strings.Contains(log, "msg=serving") {
		t.Errorf("serve started serving after SIGTERM:\n%s", log)
	}
}

// stopOnAsk is a context that is cancelled the first time anyone asks
// whether it is done after arm: the SIGTERM that comes in the middle of
// whatever runs next.
type stopOnAsk struct {
	context.Context
	cancel context.CancelFunc
	armed  atomic.Bool
}

func (c *stopOnAsk) Err() error {
	if c.armed.Load() {
		c.cancel()
	}
	return c.Context.Err()
}

// TestServeStopDuringReload: a SIGTERM that comes while a reload loads the
// file stops serve, with exit code 0, without finishing the reload.
func TestServeStopDuringReload(t *testing.T) {
	path := writeProvider(t, 500)
	inner, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx := &stopOnAsk{Context: inner, cancel: cancel}
	hup := make(chan os.Signal, 1)
	ready := make(chan bound, 1)
	stderr := &testenv.SyncBuffer{}
	e := env{stdout: io.Discard, stderr: stderr, getenv: func(string) string { return "" }, now: time.Now,
		hup: hup, ready: func(b bound) { ready <- b },
		reloaded: func(err error) { t.Errorf("reload finished (error %v) after SIGTERM", err) }}
	done := make(chan int, 1)
	go func() { done <- e.run(ctx, []string{"serve", "-config", path}) }()
	select {
	case <-ready:
	case code := <-done:
		t.Fatalf("serve exited with %d before it was ready:\n%s", code, stderr)
	}
	ctx.armed.Store(true)
	hup <- os.Interrupt // any signal value: serve only reads the channel
	if code := <-done; code != exitOK {
		t.Errorf("exit %d, want %d:\n%s", code, exitOK, stderr)
	}
	if log := stderr.String(); strings.Contains(log, "msg=reloaded") || !strings.Contains(log, "msg=stopping") {
		t.Errorf("want a stop without a finished reload; log:\n%s", log)
	}
}
