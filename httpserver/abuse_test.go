package httpserver

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestAbuseBar is issue 11's bar: 2,100 connections trickling a request
// body into the plain listener and 2,000 stalled TLS handshakes on the HTTPS
// listener, held at once while about 100 new slow-body connections a second
// keep coming, must not keep a fresh HTTPS GET or a fresh plain GET of
// /.well-known/matrix/server from being answered within a second, and the
// process's memory stays bounded.
//
// Before the listeners had budgets of their own and bodies went unread,
// the slow bodies filled the shared bound with connections that counted as
// busy, and every new HTTPS connection was closed at once.
func TestAbuseBar(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 8,000 sockets; skipped with -short")
	}
	const (
		bodies     = 2100
		handshakes = 2000
	)
	// Both ends of every socket live in this process.
	raiseFDLimit(t, 2*(bodies+handshakes)+1000)
	for _, tc := range []struct {
		name    string
		o       Options
		sources int // attacking source addresses on each listener
	}{
		// Under the per-source cap: only the budgets and eviction stand
		// between the attack and a fresh client.
		{"many sources", Options{}, 21},
		// Budgets far below the attack: eviction must make room.
		{"small budgets", Options{MaxConns: 500}, 21},
		// One address: the per-source cap holds it to a corner.
		{"one source", Options{}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
			ts := startServer(t, tc.o, mustParse(t, twoTenants))
			a := &attack{t: t, ts: ts, sources: tc.sources, stop: make(chan struct{})}
			t.Cleanup(a.end)

			// The slow bodies first, each answered (or closed) before the
			// handshakes start, so that every one is in its body when the
			// handshakes arrive.
			for i := range bodies {
				a.slowBody(i)
			}
			a.awaitAnswers()
			for i := range handshakes {
				a.stalledHandshake(i)
			}
			a.trickle()

			// The accept queue is first in, first out: the fresh
			// connections are admitted after every attacking one.
			c := freshClient(ts)
			for _, e := range []struct {
				name, url, addr string
			}{
				{"https", chatURL + "/.well-known/matrix/server", ts.tlsAddr},
				{"plain", "http://chat.example.com/.well-known/matrix/server", ts.plainAddr},
			} {
				c.addr = e.addr
				start := time.Now()
				check(t, c.Client, exchange{url: e.url, status: 200, want: docHeaders(chatServer, 86400), body: chatServer})
				if d := time.Since(start); d > time.Second {
					t.Errorf("fresh %s GET answered after %v, want within 1s", e.name, d)
				} else {
					t.Logf("fresh %s GET answered in %v", e.name, d.Round(time.Millisecond))
				}
			}
			a.checkBudgets(tc.o)
			logMemory(t)
		})
	}
}

// attack holds the attacking connections of TestAbuseBar.
type attack struct {
	t       *testing.T
	ts      *testServer
	sources int
	stop    chan struct{}
	wg      sync.WaitGroup

	mu     sync.Mutex
	bodies []net.Conn
	stalls []net.Conn
}

// slowBodyHead starts a request with a 200,000-byte body, which net/http
// would drain (up to 256 KiB) after the handler to keep the connection.
const slowBodyHead = "POST /.well-known/matrix/server HTTP/1.1\r\nHost: chat.example.com\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n{"

// source returns the i-th attacking address for a listener: 127.0.2.x for
// the plain one, 127.0.3.x for the HTTPS one. Fresh clients use 127.0.0.1.
func (a *attack) source(plain bool, i int) *net.TCPAddr {
	third := byte(3)
	if plain {
		third = 2
	}
	return &net.TCPAddr{IP: net.IPv4(127, 0, third, byte(1+i%a.sources))}
}

func (a *attack) dial(plain bool, i int) (net.Conn, error) {
	addr := a.ts.tlsAddr
	if plain {
		addr = a.ts.plainAddr
	}
	d := net.Dialer{LocalAddr: a.source(plain, i), Timeout: 10 * time.Second}
	return d.Dial("tcp", addr)
}

func (a *attack) slowBody(i int) {
	a.t.Helper()
	c, err := a.dial(true, i)
	if err != nil {
		a.t.Fatalf("slow body %d: %v", i, err)
	}
	a.mu.Lock()
	a.bodies = append(a.bodies, c)
	a.mu.Unlock()
	io.WriteString(c, slowBodyHead) // an error means the server closed it
}

func (a *attack) stalledHandshake(i int) {
	a.t.Helper()
	c, err := a.dial(false, i)
	if err != nil {
		a.t.Fatalf("stalled handshake %d: %v", i, err)
	}
	a.mu.Lock()
	a.stalls = append(a.stalls, c)
	a.mu.Unlock()
}

// awaitAnswers waits until the server has read the head of every slow-body
// request: it has answered it, closed the connection, or had two seconds
// for all of them, which is ample for reading 2,100 heads; a connection
// that has no answer by then is held in its body.
func (a *attack) awaitAnswers() {
	a.t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	answered, closed, held := 0, 0, 0
	for _, c := range a.bodies {
		c.SetReadDeadline(deadline)
		line, err := bufio.NewReader(c).ReadString('\n')
		c.SetReadDeadline(time.Time{})
		switch {
		case err == nil:
			answered++
			if want := "HTTP/1.1 405 Method Not Allowed\r\n"; line != want {
				a.t.Errorf("slow body answered %q, want %q", line, want)
			}
		case isTimeout(err):
			held++
		default:
			closed++
		}
	}
	a.t.Logf("slow bodies: %d answered with 405, %d closed before an answer, %d held without an answer", answered, closed, held)
}

// trickle sends a body byte every 2 s on each slow-body connection, and
// opens 100 new slow-body connections a second, until the test ends.
func (a *attack) trickle() {
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-a.stop:
				return
			case <-tick.C:
			}
			a.mu.Lock()
			conns := append([]net.Conn(nil), a.bodies...)
			a.mu.Unlock()
			for _, c := range conns {
				c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
				io.WriteString(c, " ")
			}
		}
	}()
	go func() {
		defer a.wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-a.stop:
				return
			case <-tick.C:
			}
			c, err := a.dial(true, i)
			if err != nil {
				continue
			}
			io.WriteString(c, slowBodyHead)
			a.mu.Lock()
			a.bodies = append(a.bodies, c)
			a.mu.Unlock()
		}
	}()
}

// end stops the attack and closes its connections, before the server's
// Shutdown runs.
func (a *attack) end() {
	close(a.stop)
	a.wg.Wait()
	for _, c := range append(a.bodies, a.stalls...) {
		c.Close()
	}
}

// checkBudgets compares the connections the server holds with its bounds.
func (a *attack) checkBudgets(o Options) {
	a.t.Helper()
	budget := orDefault(o.MaxConns, DefaultMaxConns)
	perSource := min(orDefault(o.MaxConnsPerSource, DefaultMaxConnsPerSource), budget)
	tlsHeld, plainHeld := a.ts.tlsConns.count(), a.ts.plainConns.count()
	a.t.Logf("held: %d on the HTTPS listener, %d on the plain one (budget %d each, %d per source)", tlsHeld, plainHeld, budget, perSource)
	if tlsHeld > budget || plainHeld > budget {
		a.t.Errorf("held %d HTTPS and %d plain connections, want at most %d each", tlsHeld, plainHeld, budget)
	}
	for i := range a.sources {
		for _, plain := range []bool{false, true} {
			lim := a.ts.tlsConns
			if plain {
				lim = a.ts.plainConns
			}
			src := a.source(plain, i)
			if n := lim.sourceCount(src.IP); n > perSource {
				a.t.Errorf("%s holds %d connections on the %s listener, want at most %d", src.IP, n, map[bool]string{false: "HTTPS", true: "plain"}[plain], perSource)
			}
		}
	}
	// The stalled handshakes are held as far as the bounds allow (less the
	// one the fresh connection displaced if the budget was full): the
	// server closes no more than it must.
	if want := min(2000, budget-1, perSource*a.sources); tlsHeld < want {
		a.t.Errorf("held %d HTTPS connections, want at least the %d stalled handshakes the bounds allow", tlsHeld, want)
	}
}

// freshClient is a client that opens a new connection from 127.0.0.1 for
// every request, to whatever address addr holds at the time.
type fresh struct {
	*http.Client
	addr string
}

func freshClient(ts *testServer) *fresh {
	f := &fresh{}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
			return d.DialContext(ctx, "tcp", f.addr)
		},
		TLSClientConfig:    &tls.Config{RootCAs: ts.pki.pool},
		DisableKeepAlives:  true,
		DisableCompression: true,
	}
	f.Client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	return f
}

// raiseFDLimit raises the soft limit on open files to at least n, and skips
// the test if the hard limit does not allow it.
func raiseFDLimit(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("cannot read the open-file limit: %v", err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Skipf("needs %d open files, the hard limit is %d (raise it with ulimit -Hn as root)", n, lim.Max)
	}
	old := lim.Cur
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("cannot raise the open-file limit from %d to %d: %v", old, n, err)
	}
	t.Cleanup(func() {
		lim.Cur = old
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	})
}

// logMemory reports the process's peak resident set and heap, and fails
// the test if the heap grew past a bound far above what 4,000 connections
// need (both ends of every socket are in this process).
func logMemory(t *testing.T) {
	t.Helper()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	hwm := "unknown"
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				hwm = strings.TrimSpace(v)
			}
		}
	}
	t.Logf("memory: peak RSS %s (whole test process, clients included); heap in use %d MiB, from the OS %d MiB; %d goroutines",
		hwm, ms.HeapInuse>>20, ms.Sys>>20, runtime.NumGoroutine())
	if bound := uint64(256 << 20); ms.HeapInuse > bound {
		t.Errorf("heap in use %d MiB, want under 256 MiB", ms.HeapInuse>>20)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
