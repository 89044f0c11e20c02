// Package testenv runs the reference programs tests talk to (NSD, Knot and
// other daemons) on loopback ports picked at run time. It imports nothing
// of ours.
package testenv

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Daemon is a server program started by RunDaemon.
type Daemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	logs SyncBuffer
	once sync.Once
}

// RunDaemon starts a server program in the foreground, logging its output
// to the test on failure, and stops it with SIGTERM (its children with it)
// at the end of the test unless Stop did so before.
func RunDaemon(t testing.TB, name string, args ...string) *Daemon {
	t.Helper()
	d := &Daemon{name: name, cmd: exec.Command(name, args...), done: make(chan struct{})}
	DieWithParent(d.cmd)
	d.cmd.Stdout, d.cmd.Stderr = &d.logs, &d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, d.logs.String())
		}
	})
	return d
}

// Stop ends the program with SIGTERM, or SIGKILL after 10 seconds, and
// returns once it has exited.
func (d *Daemon) Stop() {
	d.once.Do(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	})
}

// NSDServerConf is the server: and remote-control: part of an nsd.conf
// for a foreground NSD on 127.0.0.1:port keeping its files in dir; extra
// lines go at the end of server:.
func NSDServerConf(dir string, port, verbosity int, extra string) string {
	return fmt.Sprintf(`server:
  ip-address: 127.0.0.1@%d
  port: %d
  username: ""
  chroot: ""
  zonesdir: %q
  database: ""
  pidfile: %q
  xfrdfile: %q
  zonelistfile: %q
  server-count: 1
  verbosity: %d
%sremote-control:
  control-enable: no
`, port, port, dir, filepath.Join(dir, "nsd.pid"), filepath.Join(dir, "xfrd.state"), filepath.Join(dir, "zone.list"), verbosity, extra)
}

// FreePort returns a port that was free for both UDP and TCP on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		_ = l.Close()
		if err == nil {
			_ = pc.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// ListenDNS listens on one loopback port for both UDP and TCP, as a DNS
// server does: the kernel picks a free UDP port, whose TCP twin may be
// taken, so it tries again a few times.
func ListenDNS(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l
		}
		_ = pc.Close()
	}
	t.Fatal("no loopback port free for both UDP and TCP")
	return nil, nil
}

// ReusablePort returns a TCP port free on every one of hosts (127.0.0.1 if
// none) and outside the kernel's ephemeral range, for a test that binds it,
// closes it and binds it again later, as a restarted server does. A port
// from binding :0 is in that range, where any process's outgoing
// connection or :0 bind may take it in between; below the range only a
// program that names it can.
func ReusablePort(t testing.TB, hosts ...string) int {
	t.Helper()
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1"}
	}
	lo := 32768 // Linux's default ip_local_port_range starts here
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if _, err := fmt.Sscan(string(b), &lo); err != nil || lo <= 11000 {
			lo = 32768
		}
	}
	for range 100 {
		port := 10000 + rand.IntN(lo-11000)
		free := true
		var held []net.Listener
		for _, h := range hosts {
			l, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
			if err != nil {
				free = false
				break
			}
			held = append(held, l)
		}
		for _, l := range held {
			_ = l.Close()
		}
		if free {
			return port
		}
	}
	t.Fatal("no free port below the ephemeral range")
	return 0
}

// WaitSOA polls addr until it answers zone's SOA with serial, and returns
// how long that took. Polling is the only way to see another process pick
// up a change; the 10ms tick bounds the error of the figure.
func WaitSOA(t testing.TB, addr, zone string, serial uint32, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	cl := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		q := new(dns.Msg)
		q.SetQuestion(zone, dns.TypeSOA)
		if r, _, err := cl.Exchange(q, addr); err != nil {
			last = err.Error()
		} else if len(r.Answer) == 1 && r.Answer[0].(*dns.SOA).Serial == serial && r.Authoritative {
			return time.Since(start)
		} else {
			last = r.String()
		}
		if time.Since(start) > limit {
			t.Fatalf("%s did not serve %s with serial %d within %s; last answer: %s", addr, zone, serial, limit, last)
		}
		<-tick.C
	}
}

// SyncBuffer is a bytes.Buffer safe for concurrent use: a log handler's
// output that a test reads while servers write.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
