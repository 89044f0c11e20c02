//go:build linux

package dnsserver

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/miekg/dns"
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

// BenchmarkBatchManyZones answers batches of UDP queries as the reader
// does between a recvmmsg and a sendmmsg, over 1 or 10,000 zones, each
// query in another zone in random order (as bench/scale/run.sh asks, a
// quarter of them for names that do not exist). It reports the time per
// query: bench/scale's qps bar at 10,000 zones is within 10% of 1 zone.
func BenchmarkBatchManyZones(b *testing.B) {
	for _, zones := range []int{1, 1000, 10000} {
		for _, size := range []int{16, batchSize} {
			b.Run(fmt.Sprintf("zones=%d/batch=%d", zones, size), func(b *testing.B) {
				s := New(Options{})
				s.SetModel(providerModel(b, zones, 0, "", nil))
				ix := s.ix.Load()
				rng := rand.New(rand.NewPCG(1, 2))
				var qs [][]byte
				for i := range 4 * 10000 {
					o := tenant(rng.IntN(zones))
					q := []struct {
						name  string
						qtype uint16
					}{{"hs." + o, dns.TypeA}, {"_matrix-fed._tcp." + o, dns.TypeSRV}, {o, dns.TypeAAAA}, {"nope." + o, dns.TypeA}}[i%4]
					qs = append(qs, rawQuery(b, uint16(i), q.name+".", q.qtype, variant{edns: 1232}))
				}
				bt := newBatch(s, nil, false)
				for i := range bt.names {
					sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&bt.names[i]))
					sa.Family, sa.Addr = unix.AF_INET, [4]byte{127, 0, 0, 1}
				}
				b.ReportAllocs()
				b.ResetTimer()
				next := 0
				for b.Loop() {
					for i := range size {
						bt.recv[i].n = uint32(copy(bt.in[i][:], qs[next]))
						next = (next + 1) % len(qs)
					}
					bt.n = size
					if bt.answer(ix) != size {
						b.Fatal("a query without reply")
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/query")
			})
		}
	}
}
