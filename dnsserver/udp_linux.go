//go:build linux

package dnsserver

import (
	"context"
	"errors"
	"math/bits"
	"net"
	"net/netip"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchSize is how many packets one recvmmsg/sendmmsg moves. Under load a
// batch fills; when idle, recvmmsg returns whatever single packet is there.
const batchSize = 64 // at most 64: warm keeps a bit per packet

const (
	maxQuery = 4096 // larger queries are truncated by the kernel and dropped
	ctrlSize = 64   // room for one IP_PKTINFO or IPV6_PKTINFO message
)

// mmsghdr is struct mmsghdr from <sys/socket.h>; Go pads it like C does.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// udpReader answers packets from pc until it is closed. On Linux it moves
// packets in batches with recvmmsg and sendmmsg; other conns take the
// portable path.
func (s *Server) udpReader(pc net.PacketConn) error {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return s.udpReaderPortable(pc)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return s.udpReaderPortable(pc)
	}
	b := newBatch(s, rc, needPktinfo(uc))
	if b.pktinfo {
		if err := enablePktinfo(rc); err != nil {
			return err
		}
	}
	return b.run()
}

// needPktinfo says whether replies must name their source address: on a
// socket bound to the wildcard address the kernel would otherwise pick one,
// and a client talking to a secondary address would drop the reply.
func needPktinfo(uc *net.UDPConn) bool {
	la, ok := uc.LocalAddr().(*net.UDPAddr)
	return ok && (la.IP == nil || la.IP.IsUnspecified())
}

func enablePktinfo(rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		// Go opens a dual-stack IPv6 socket even for 0.0.0.0; IPV6_PKTINFO
		// then covers IPv4-mapped senders too.
		var domain int
		if domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); serr != nil {
			return
		}
		if domain == unix.AF_INET {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
	})
	return errors.Join(err, serr)
}

type batch struct {
	s       *Server
	rc      syscall.RawConn
	pktinfo bool

	recv  [batchSize]mmsghdr
	send  [batchSize]mmsghdr
	riov  [batchSize]unix.Iovec
	siov  [batchSize]unix.Iovec
	names [batchSize]unix.RawSockaddrInet6 // big enough for IPv4 too
	ctrl  [batchSize][ctrlSize]byte
	in    [batchSize][maxQuery]byte
	out   [batchSize][]byte
	hash  [batchSize]uint64
	sc    scratch

	n, nsend, sent int
	errno          syscall.Errno
	recvFn         func(fd uintptr) bool
	sendFn         func(fd uintptr) bool
}

func newBatch(s *Server, rc syscall.RawConn, pktinfo bool) *batch {
	b := &batch{s: s, rc: rc, pktinfo: pktinfo}
	for i := range b.recv {
		b.riov[i].Base = &b.in[i][0]
		b.riov[i].SetLen(maxQuery)
		h := &b.recv[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Iov = &b.riov[i]
		h.SetIovlen(1)
		b.out[i] = make([]byte, 0, maxQuery)
	}
	// Method values allocate; make them once, not per syscall.
	b.recvFn = b.doRecv
	b.sendFn = b.doSend
	return b
}

func (b *batch) doRecv(fd uintptr) bool {
	for i := range b.recv {
		h := &b.recv[i].hdr
		h.Namelen = unix.SizeofSockaddrInet6
		if b.pktinfo {
			h.Control = &b.ctrl[i][0]
			h.SetControllen(ctrlSize)
		}
		h.Flags = 0
	}
	for {
		// A raw syscall, without telling the scheduler: the socket is
		// non-blocking (Go opened it so), so the call returns at once.
		// Announced syscalls cost more than the answering: the runtime's
		// monitor then wakes every 20 µs to hand this P to another thread,
		// which finds nothing to do and sleeps again. Measured with
		// `signpost serve` and dnsperf: 2.5-2.9 µs of server CPU per query
		// before, 2.1-2.5 after.
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.recv[0])), batchSize, 0, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait until readable
		}
		b.n, b.errno = int(r), e
		return true
	}
}

func (b *batch) doSend(fd uintptr) bool {
	for b.nsend > 0 {
		// Raw for the reason doRecv gives; a non-blocking UDP send
		// returns EAGAIN rather than wait.
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.send[b.sent])), uintptr(b.nsend), 0, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			return false // wait until writable
		case e != 0:
			// This message cannot go (say, no route back); skip it and send
			// the rest.
			b.nsend--
			b.sent++
		default:
			b.nsend -= int(r)
			b.sent += int(r)
		}
	}
	return true
}

func (b *batch) run() error {
	for {
		b.n, b.errno = 0, 0
		if err := b.rc.Read(b.recvFn); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		switch b.errno {
		case 0:
		case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.ENOMEM, unix.ENOBUFS:
			continue // an ICMP error about an earlier reply, or memory pressure: keep serving
		default:
			return b.errno
		}
		m := b.answer(b.s.ix.Load()) // one model per batch: a reload applies from the next batch
		if m == 0 {
			continue
		}
		b.nsend, b.sent = m, 0
		if err := b.rc.Write(b.sendFn); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
	}
}

// answer answers the b.n packets received with ix, and returns how many
// replies it put in b.send.
func (b *batch) answer(ix *index) int {
	b.sc.now = time.Now() // one clock reading per batch, for cookies and RRL
	if ix.fast.cold {
		b.warm(ix.fast)
	}
	m := 0
	for i := range b.n {
		h := &b.recv[i]
		if h.hdr.Flags&unix.MSG_TRUNC != 0 {
			continue
		}
		out := b.s.answerPacket(ix, b.in[i][:h.n], b.out[i][:0], &b.sc, (*rawPeer)(&b.names[i]))
		if out == nil {
			continue
		}
		b.out[i] = out
		b.siov[m].Base = &out[0]
		b.siov[m].SetLen(len(out))
		sh := &b.send[m].hdr
		sh.Name = h.hdr.Name
		sh.Namelen = h.hdr.Namelen
		sh.Iov = &b.siov[m]
		sh.SetIovlen(1)
		sh.Control = nil
		sh.SetControllen(0)
		if b.pktinfo && h.hdr.Controllen > 0 {
			if l := replyPktinfo(b.ctrl[i][:h.hdr.Controllen]); l > 0 {
				sh.Control = &b.ctrl[i][0]
				sh.SetControllen(l)
			}
		}
		m++
	}
	// Counted before the replies go, so a client that has its reply
	// finds it counted.
	b.sc.tally.flush(&b.s.stats, transportUDP)
	return m
}

// warm warms the fast path's table for the packets received (fastIndex.warm).
func (b *batch) warm(f *fastIndex) {
	warmed := uint64(0) // bit i: b.hash[i] is packet i's
	for i := range b.n {
		if h := &b.recv[i]; h.hdr.Flags&unix.MSG_TRUNC == 0 {
			var ok bool
			if b.hash[i], ok = f.warm(b.in[i][:h.n], &b.sc); ok {
				warmed |= 1 << i
			}
		}
	}
	for m := warmed; m != 0; m &= m - 1 {
		f.warmEntry(b.hash[bits.TrailingZeros64(m)])
	}
}

// rawPeer is the sender's address as recvmmsg wrote it: a sockaddr_in6, or
// a sockaddr_in in the same space.
type rawPeer unix.RawSockaddrInet6

func (p *rawPeer) addrPort() netip.AddrPort {
	port := (*[2]byte)(unsafe.Pointer(&p.Port)) // network byte order
	n := uint16(port[0])<<8 | uint16(port[1])
	switch p.Family {
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(p.Addr).Unmap(), n)
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(p))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), n)
	}
	return netip.AddrPort{}
}

// replyPktinfo turns the packet info of a query into the control message
// that sends the reply from the address the query came to. It returns the
// length to send, 0 if there is nothing usable.
func replyPktinfo(c []byte) int {
	if len(c) < unix.SizeofCmsghdr {
		return 0
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
	data := unix.CmsgLen(0)
	switch {
	case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(c) >= data+unix.SizeofInet4Pktinfo:
		p := (*unix.Inet4Pktinfo)(unsafe.Pointer(&c[data]))
		p.Spec_dst = p.Addr
		p.Ifindex = 0
		return unix.CmsgSpace(unix.SizeofInet4Pktinfo)
	case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(c) >= data+unix.SizeofInet6Pktinfo:
		p := (*unix.Inet6Pktinfo)(unsafe.Pointer(&c[data]))
		if !(p.Addr[0] == 0xfe && p.Addr[1]&0xc0 == 0x80) {
			p.Ifindex = 0 // only a link-local source needs its interface
		}
		return unix.CmsgSpace(unix.SizeofInet6Pktinfo)
	}
	return 0
}

// ListenUDP opens n UDP sockets on addr (host:port) with SO_REUSEPORT, all
// on one port (the first socket's, when addr asks for :0), so the kernel
// spreads queries over them by source address and port. Serve each with
// ServeUDP: one socket per core answers faster than one socket read by
// several goroutines, which take turns on it.
func ListenUDP(addr string, n int) ([]net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
				return
			}
			setBuffer(int(fd), unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, udpRcvBuf)
			setBuffer(int(fd), unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, udpSndBuf)
		})
		return errors.Join(err, serr)
	}}
	var pcs []net.PacketConn
	for i := range n {
		a := addr
		if i > 0 {
			a = pcs[0].LocalAddr().String() // same port when addr asked for :0
		}
		pc, err := lc.ListenPacket(context.Background(), "udp", a)
		if err != nil {
			for _, p := range pcs {
				_ = p.Close()
			}
			return nil, err
		}
		pcs = append(pcs, pc)
	}
	return pcs, nil
}

// Socket buffers as NSD sets them (1 MiB to receive, 4 MiB to send): the
// Linux default of 208 KiB holds about 3,000 queries, which a burst fills
// while the readers are off the CPU, and the kernel then drops queries.
const (
	udpRcvBuf = 1 << 20
	udpSndBuf = 4 << 20
)

// setBuffer sets a socket buffer size with the option that may exceed the
// system's maximum (allowed with CAP_NET_ADMIN, as when started as root),
// else with the one capped at net.core.rmem_max / wmem_max. A buffer left
// smaller only costs queries under bursts, so failure is not an error.
func setBuffer(fd, force, normal, size int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, normal, size)
	}
}
