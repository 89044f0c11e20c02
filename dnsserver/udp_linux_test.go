//go:build linux

package dnsserver

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestListenUDPBuffers: the sockets ListenUDP opens have NSD's buffer
// sizes, or the most the system allows without privilege.
func TestListenUDPBuffers(t *testing.T) {
	pcs, err := ListenUDP("127.0.0.1:0", 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, pc := range pcs {
		defer pc.Close()
	}
	limit := func(file string) int {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	privileged := os.Geteuid() == 0
	for _, c := range []struct {
		opt, size int
		max       string
	}{
		{unix.SO_RCVBUF, udpRcvBuf, "/proc/sys/net/core/rmem_max"},
		{unix.SO_SNDBUF, udpSndBuf, "/proc/sys/net/core/wmem_max"},
	} {
		want := c.size
		if !privileged {
			want = min(want, limit(c.max))
		}
		for _, pc := range pcs {
			rc, err := pc.(*net.UDPConn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var got int
			var gerr error
			if err := rc.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, c.opt) }); err != nil || gerr != nil {
				t.Fatal(err, gerr)
			}
			// Linux reports twice the size set, for its bookkeeping.
			if got < 2*want {
				t.Errorf("socket option %d: %d bytes, want at least %d", c.opt, got, 2*want)
			}
		}
	}
}
