//go:build linux

// Command udpload loads a DNS server over UDP hard enough that the server,
// not the load generator, is the limit. dnsperf spends about as much CPU
// per query as the server it measures (a system call per query sent and per
// answer read), so on a machine with one core for the server and one for
// dnsperf the figures measure dnsperf's cost under each server as much as
// the server's own. udpload sends and reads up to -b queries per system
// call (sendmmsg, recvmmsg) and keeps -w queries outstanding, so the
// server's socket is never empty and its core is the one that saturates.
//
//	udpload -s 127.0.0.1 -p 5300 -d queries.txt -l 10 [-e] [-D] [-E 10:0102030405060708]
//
// The query file is dnsperf's: a name and a type per line, sent in order
// and again from the top. The report uses dnsperf's labels (Queries sent,
// completed, lost, per second), so scripts read either.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "udpload:", err)
		os.Exit(1)
	}
}

type options struct {
	server  netip.AddrPort
	file    string
	secs    float64
	window  int
	batch   int
	edns    bool
	do      bool
	option  *dns.EDNS0_LOCAL
	timeout time.Duration
}

func run() error {
	var o options
	host := flag.String("s", "127.0.0.1", "server `address`")
	port := flag.Int("p", 53, "server `port`")
	flag.StringVar(&o.file, "d", "", "query `file`: a name and a type per line, as dnsperf reads")
	flag.Float64Var(&o.secs, "l", 10, "run for this many `seconds`")
	flag.IntVar(&o.window, "w", 160, "queries outstanding at most")
	flag.IntVar(&o.batch, "b", 32, "queries per sendmmsg and answers per recvmmsg at most")
	flag.BoolVar(&o.edns, "e", false, "send EDNS (an OPT record, 1232-byte buffer)")
	flag.BoolVar(&o.do, "D", false, "set the DO bit (implies -e)")
	opt := flag.String("E", "", "add an EDNS option, `code:hexvalue` (implies -e), as dnsperf -E")
	flag.DurationVar(&o.timeout, "t", time.Second, "a query unanswered this long is lost")
	flag.Parse()

	addr, err := netip.ParseAddr(*host)
	if err != nil {
		return fmt.Errorf("-s: %v", err)
	}
	o.server = netip.AddrPortFrom(addr, uint16(*port))
	if *opt != "" {
		code, value, ok := strings.Cut(*opt, ":")
		c, cerr := strconv.ParseUint(code, 10, 16)
		v, verr := hex.DecodeString(value)
		if !ok || cerr != nil || verr != nil {
			return fmt.Errorf("-E %q: want code:hexvalue, as 10:0102030405060708", *opt)
		}
		o.option = &dns.EDNS0_LOCAL{Code: uint16(c), Data: v}
	}
	if o.window < 1 || o.window > maxWindow || o.batch < 1 || o.batch > o.window {
		return fmt.Errorf("want 1 <= -b <= -w <= %d", maxWindow)
	}
	queries, err := readQueries(o)
	if err != nil {
		return err
	}
	r, err := load(o, queries)
	if err != nil {
		return err
	}
	fmt.Printf("  Queries sent:         %d\n", r.sent)
	fmt.Printf("  Queries completed:    %d\n", r.completed)
	fmt.Printf("  Queries lost:         %d\n", r.lost)
	fmt.Printf("  Run time (s):         %.6f\n", r.elapsed.Seconds())
	fmt.Printf("  Queries per second:   %.6f\n", float64(r.completed)/r.elapsed.Seconds())
	return nil
}

// readQueries packs each line of the query file once; load only copies the
// bytes and sets the ID.
func readQueries(o options) ([][]byte, error) {
	f, err := os.Open(o.file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]byte
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], ";") {
			continue
		}
		t, ok := dns.StringToType[strings.ToUpper(fields[len(fields)-1])]
		if len(fields) != 2 || !ok {
			return nil, fmt.Errorf("%s:%d: want a name and a type", o.file, line)
		}
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(fields[0]), t)
		m.RecursionDesired = false
		if o.edns || o.do || o.option != nil {
			m.SetEdns0(1232, o.do)
			if o.option != nil {
				m.IsEdns0().Option = append(m.IsEdns0().Option, o.option)
			}
		}
		b, err := m.Pack()
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", o.file, line, err)
		}
		if len(b) > querySize {
			return nil, fmt.Errorf("%s:%d: the query is %d bytes, more than %d", o.file, line, len(b), querySize)
		}
		out = append(out, b)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no queries", o.file)
	}
	return out, nil
}

const (
	// maxWindow bounds the outstanding queries: a query's ID is its slot
	// in the window (12 bits) and the slot's generation (4 bits), so an
	// answer that comes after its query was counted lost does not complete
	// the slot's next query.
	maxWindow = 1 << 12
	querySize = 512
	replySize = 4096
)

type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

type result struct {
	sent, completed, lost int
	elapsed               time.Duration
}

func load(o options, queries [][]byte) (result, error) {
	// One OS thread does the sending and the reading, so pinning udpload
	// with taskset pins all of its work.
	runtime.LockOSThread()
	family := unix.AF_INET6
	if o.server.Addr().Is4() {
		family = unix.AF_INET
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return result{}, err
	}
	defer unix.Close(fd)
	// Room for a full window of answers, whatever the scheduler does.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20)
	var sa unix.Sockaddr
	if family == unix.AF_INET {
		sa = &unix.SockaddrInet4{Port: int(o.server.Port()), Addr: o.server.Addr().As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: int(o.server.Port()), Addr: o.server.Addr().As16()}
	}
	if err := unix.Connect(fd, sa); err != nil {
		return result{}, err
	}

	var (
		gen     = make([]uint8, o.window)
		sentAt  = make([]time.Time, o.window)
		busy    = make([]bool, o.window)
		free    = make([]uint16, 0, o.window)
		out     = make([][querySize]byte, o.window)
		in      = make([][replySize]byte, o.batch)
		send    = make([]mmsghdr, o.batch)
		recv    = make([]mmsghdr, o.batch)
		siov    = make([]unix.Iovec, o.batch)
		riov    = make([]unix.Iovec, o.batch)
		r       result
		next    int
		pending int
	)
	for i := o.window - 1; i >= 0; i-- {
		free = append(free, uint16(i))
	}
	for i := range recv {
		riov[i].Base = &in[i][0]
		riov[i].SetLen(replySize)
		recv[i].hdr.Iov = &riov[i]
		recv[i].hdr.SetIovlen(1)
		send[i].hdr.Iov = &siov[i]
		send[i].hdr.SetIovlen(1)
	}

	start := time.Now()
	end := start.Add(time.Duration(o.secs * float64(time.Second)))
	lastScan := start
	for {
		now := time.Now()
		if now.After(end) {
			break
		}
		// Send as many as the window allows, a batch per call.
		for len(free) > 0 {
			n := min(len(free), o.batch)
			for i := range n {
				slot := free[len(free)-1-i]
				q := queries[next]
				next = (next + 1) % len(queries)
				buf := &out[slot]
				copy(buf[:], q)
				binary.BigEndian.PutUint16(buf[:], uint16(gen[slot])<<12|slot)
				siov[i].Base = &buf[0]
				siov[i].SetLen(len(q))
				busy[slot], sentAt[slot] = true, now
			}
			m, err := sendmmsg(fd, send[:n])
			if err != nil {
				return r, err
			}
			free = free[:len(free)-m]
			r.sent += m
			pending += m
			if m < n {
				break // the socket's send buffer is full; read first
			}
		}
		// Read what has come; wait a little only when nothing has.
		got, err := recvmmsg(fd, recv, pending > 0 && len(free) == 0)
		if err != nil {
			return r, err
		}
		for i := range got {
			if recv[i].n < 12 {
				continue
			}
			id := binary.BigEndian.Uint16(in[i][:2])
			slot := id & (maxWindow - 1)
			if int(slot) >= o.window || !busy[slot] || uint8(id>>12) != gen[slot] {
				continue // late, after it was counted lost
			}
			busy[slot] = false
			gen[slot] = (gen[slot] + 1) & 0xf
			free = append(free, slot)
			pending--
			r.completed++
		}
		if now.Sub(lastScan) > o.timeout/4 {
			lastScan = now
			for slot := range busy {
				if busy[slot] && now.Sub(sentAt[slot]) > o.timeout {
					busy[slot] = false
					gen[slot] = (gen[slot] + 1) & 0xf
					free = append(free, uint16(slot))
					pending--
					r.lost++
				}
			}
		}
	}
	r.elapsed = time.Since(start)
	// What is still outstanding at the end is neither completed nor lost,
	// as in dnsperf: the run stopped before it could be answered.
	r.sent -= pending
	return r, nil
}

func sendmmsg(fd int, msgs []mmsghdr) (int, error) {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN || e == unix.ENOBUFS:
			return 0, nil
		case e == unix.ECONNREFUSED:
			return 0, errors.New("the server refused the queries (ICMP port unreachable): is it listening?")
		case e != 0:
			return 0, e
		}
		return int(n), nil
	}
}

// recvmmsg reads up to len(msgs) answers. With wait it waits up to 10 ms
// for the first, so a full window does not spin.
func recvmmsg(fd int, msgs []mmsghdr, wait bool) (int, error) {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			if !wait {
				return 0, nil
			}
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if _, err := unix.Poll(pfd, 10); err != nil && err != unix.EINTR {
				return 0, err
			}
			wait = false
			continue
		case e == unix.ECONNREFUSED:
			return 0, errors.New("the server refused the queries (ICMP port unreachable): is it listening?")
		case e != 0:
			return 0, e
		}
		return int(n), nil
	}
}
