package probe

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run if goroutines from the probe, HTTP, TLS or DNS
// code outlive the tests, the way miekg/dns's leak_test.go does.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := leaked(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func leaked() error {
	// Connections close asynchronously after Close returns; give them a
	// moment, as goleak does, before calling anything a leak.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var bad []string
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "leaked()") {
				continue
			}
			for _, pkg := range []string{"signpost/probe.", "net/http.", "crypto/tls.", "miekg/dns."} {
				if strings.Contains(g, pkg) {
					bad = append(bad, g)
					break
				}
			}
		}
		if len(bad) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leaked %d goroutine(s):\n\n%s", len(bad), strings.Join(bad, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
