package dnsserver

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// hdr builds a 12-byte DNS header.
func hdr(id uint16, flags uint16, qd, an, ns, ar uint16) []byte {
	b := make([]byte, 12)
	for i, v := range []uint16{id, flags, qd, an, ns, ar} {
		binary.BigEndian.PutUint16(b[2*i:], v)
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var (
	qHS   = []byte("\x02hs\x04chat\x07example\x03com\x00\x00\x01\x00\x01") // hs.chat.example.com A IN
	qApex = []byte("\x04chat\x07example\x03com\x00\x00\x06\x00\x01")       // chat.example.com SOA IN
	optRR = []byte("\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00")         // OPT, 1232, version 0
	// TSIG with empty RDATA: FuzzHandle found that our reply to it carried
	// a TSIG one byte short of its RDLENGTH (testdata/fuzz/FuzzHandle).
	emptyTSIG = []byte("\x00\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x00")
	aRR       = []byte("\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x01\x02\x03\x04")
	formRD    = hdr(0x1234, 0x8100|dns.RcodeFormatError, 0, 0, 0, 0) // QR RD FORMERR
	formQD    = hdr(0x1234, 0x8000|dns.RcodeFormatError, 0, 0, 0, 0) // QR FORMERR: NSD drops RD when QDCOUNT > 1
)

type rawCase struct {
	name string
	pkt  []byte
	want []byte // nil: no reply at all
	// nsdDiffers marks a case where we knowingly answer otherwise than NSD.
	nsdDiffers bool
}

// rawCases is malformed or unusual input: each is dropped or gets exactly
// the reply NSD gives.
var rawCases = []rawCase{
	{name: "empty", pkt: []byte{}},
	{name: "short header", pkt: []byte{0x12, 0x34, 0x01, 0x00, 0x00}},
	{name: "response sent to us", pkt: cat(hdr(0x1234, 0x8000, 1, 0, 0, 0), qHS)},
	{name: "no question", pkt: hdr(0x1234, 0x0100, 0, 0, 0, 0), want: formRD},
	{name: "two questions", pkt: cat(hdr(0x1234, 0x0100, 2, 0, 0, 0), qHS, qHS), want: formQD},
	{name: "question count larger than the packet", pkt: cat(hdr(0x1234, 0x0100, 3, 0, 0, 0), qHS), want: formQD},
	{name: "record in answer section", pkt: cat(hdr(0x1234, 0x0100, 1, 1, 0, 0), qHS, aRR), want: formRD},
	{name: "record in authority section", pkt: cat(hdr(0x1234, 0x0100, 1, 0, 1, 0), qHS, aRR), want: formRD},
	{name: "A record in additional section", pkt: cat(hdr(0x1234, 0x0100, 1, 0, 0, 1), qHS, aRR), want: formRD},
	{name: "two OPT records", pkt: cat(hdr(0x1234, 0x0100, 1, 0, 0, 2), qHS, optRR, optRR), want: formRD},
	{name: "rcode set in query", pkt: cat(hdr(0x1234, 0x0103, 1, 0, 0, 0), qHS), want: formRD},
	{name: "label runs past the end", pkt: cat(hdr(0x1234, 0x0100, 1, 0, 0, 0), []byte("\x3fabc")), want: formRD},
	{name: "question without type and class", pkt: cat(hdr(0x1234, 0x0100, 1, 0, 0, 0), []byte("\x02hs\x00")), want: formRD},
	{name: "compression loop in question", pkt: cat(hdr(0x1234, 0x0100, 1, 0, 0, 0), []byte("\xc0\x0c\x00\x01\x00\x01")), want: formRD},
	{name: "OPT with an owner name", pkt: cat(hdr(0x1234, 0x0100, 1, 0, 0, 1), qHS, []byte("\x01x"), optRR[1:]), want: formRD},
	{name: "OPT truncated", pkt: cat(hdr(0x1234, 0x0100, 1, 0, 0, 1), qHS, optRR[:7]), want: formRD},
	{name: "TSIG with empty RDATA", pkt: cat(hdr(0x1234, 0x0100, 1, 0, 0, 1), qApex, emptyTSIG), want: formRD},
	{name: "UPDATE with an empty TSIG", pkt: cat(hdr(0x1234, 5<<11, 1, 0, 0, 1), qApex, emptyTSIG), want: hdr(0x1234, 0x8000|5<<11|dns.RcodeFormatError, 0, 0, 0, 0), nsdDiffers: true},
	{name: "opcode STATUS", pkt: cat(hdr(0x1234, 2<<11, 1, 0, 0, 0), qHS), want: hdr(0x1234, 0x8000|2<<11|dns.RcodeNotImplemented, 0, 0, 0, 0)},
	// NSD has no UPDATE (NOTIMP); an update whose zone section is not one
	// SOA question is malformed (RFC 2136 §3.1.1).
	{name: "opcode UPDATE", pkt: cat(hdr(0x1234, 5<<11, 1, 0, 0, 0), qHS), want: hdr(0x1234, 0x8000|5<<11|dns.RcodeFormatError, 0, 0, 0, 0), nsdDiffers: true},
	{name: "opcode 15", pkt: cat(hdr(0x1234, 15<<11, 1, 0, 0, 0), qHS), want: hdr(0x1234, 0x8000|15<<11|dns.RcodeNotImplemented, 0, 0, 0, 0)},
	// NOTIFY is for secondaries. For a name that is not a zone, NSD says
	// NXDOMAIN; for a zone, REFUSED with AA.
	{name: "opcode NOTIFY", pkt: cat(hdr(0x1234, 4<<11, 1, 0, 0, 0), qHS), want: hdr(0x1234, 0x8000|4<<11|dns.RcodeNameError, 0, 0, 0, 0)},
	{name: "NOTIFY for a zone", pkt: cat(hdr(0x1234, 4<<11|0x0400, 1, 0, 0, 0), qApex), want: hdr(0x1234, 0x8000|4<<11|0x0400|dns.RcodeRefused, 0, 0, 0, 0)},
}

// rawExchange sends pkt over UDP, then a probe query, and returns the reply
// to pkt, or nil if the probe's reply came back first: the server answers
// one socket's packets in order, so no reply by then means none at all.
func rawExchange(t testing.TB, addr string, pkt []byte) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	probe := new(dns.Msg)
	probe.SetQuestion("chat.example.com.", dns.TypeSOA)
	probe.Id = 0xbeef
	pb, _ := probe.Pack()
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(pb); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65535)
	var got []byte
	for {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("reading reply: %v", err)
		}
		if n >= 2 && binary.BigEndian.Uint16(buf) == 0xbeef && got == nil && (len(pkt) < 2 || binary.BigEndian.Uint16(pkt) != 0xbeef) {
			return nil
		}
		if got == nil {
			got = append([]byte(nil), buf[:n]...)
			continue
		}
		return got
	}
}

func TestMalformed(t *testing.T) {
	s := startServer(t, testModel(t, testTOML), Options{UDPReaders: 1})
	for _, c := range rawCases {
		t.Run(c.name, func(t *testing.T) {
			got := rawExchange(t, s.udp, c.pkt)
			if !bytes.Equal(got, c.want) {
				t.Errorf("reply %x, want %x", got, c.want)
			}
		})
	}
	// TCP: a malformed message gets FORMERR and the connection keeps
	// serving.
	conn, err := net.Dial("tcp", s.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dc := &dns.Conn{Conn: conn}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	bad := cat(hdr(0x1234, 0x0100, 2, 0, 0, 0), qHS, qHS)
	if _, err := dc.Write(bad); err != nil {
		t.Fatal(err)
	}
	r, err := dc.ReadMsg()
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeFormatError || r.Id != 0x1234 {
		t.Errorf("tcp reply %v, want FORMERR for id 0x1234", r)
	}
	// The empty TSIG too, header only, exactly as over UDP.
	if _, err := dc.Write(cat(hdr(0x1234, 0x0100, 1, 0, 0, 1), qApex, emptyTSIG)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	if n, err := dc.Read(buf); err != nil || !bytes.Equal(buf[:n], formRD) {
		t.Errorf("tcp reply to an empty TSIG %x, %v; want %x", buf[:n], err, formRD)
	}
	q := new(dns.Msg)
	q.SetQuestion("hs.chat.example.com.", dns.TypeA)
	if err := dc.WriteMsg(q); err != nil {
		t.Fatal(err)
	}
	if r, err := dc.ReadMsg(); err != nil || r.Id != q.Id || len(r.Answer) != 1 {
		t.Errorf("after FORMERR, query got %v, %v", r, err)
	}
}

// TestEDNSCorners: EDNS version 1 gets BADVERS with our version 0 (RFC 6891
// §6.1.3), and a class we have no data for is refused with EDE 21, as NSD
// does, over UDP and TCP.
func TestEDNSCorners(t *testing.T) {
	s := startServer(t, testModel(t, testTOML), Options{})
	for _, netw := range []string{"udp", "tcp"} {
		addr := s.udp
		if netw == "tcp" {
			addr = s.tcp
		}
		q := new(dns.Msg)
		q.SetQuestion("Hs.Chat.Example.Com.", dns.TypeA)
		q.SetEdns0(1232, true)
		q.IsEdns0().SetVersion(1)
		r := exchange(t, netw, addr, q)
		checkReply(t, q, r, tc{Rcode: dns.RcodeBadVers, EDNS: 1232, DO: true, RD: true})

		q = new(dns.Msg)
		q.SetQuestion("chat.example.com.", dns.TypeSOA)
		q.Question[0].Qclass = dns.ClassCHAOS
		q.SetEdns0(1232, false)
		r = exchange(t, netw, addr, q)
		checkReply(t, q, r, tc{Rcode: dns.RcodeRefused, EDNS: 1232, EDE: edeNotSupported, RD: true})

		q.Question[0].Qclass = dns.ClassHESIOD // no question echoed for other classes
		r = exchange(t, netw, addr, q)
		checkReply(t, q, r, tc{Rcode: dns.RcodeRefused, EDNS: 1232, EDE: edeNotSupported, RD: true})
	}
}

// TestClassANY: a query of class ANY (255) is answered from the class IN
// data as NSD answers it (TestInteropNSD compares the bytes): without AA,
// without the SOA of a negative answer and without the optional apex NS; a
// referral keeps its NS and glue, and a name outside every zone is refused
// with EDE 20 and the question echoed.
func TestClassANY(t *testing.T) {
	s := startServer(t, testModel(t, testTOML), Options{})
	cases := []tc{
		{Qname: "Hs.Chat.Example.Com.", Qtype: dns.TypeA, Answer: []string{hsA}},
		{Qname: "www.chat.example.com.", Qtype: dns.TypeA, EDNS: 1232, DO: true,
			Answer: []string{"www.chat.example.com. 300 IN CNAME hs.chat.example.com.", hsA}},
		{Qname: "_matrix-fed._tcp.chat.example.com.", Qtype: dns.TypeSRV, EDNS: 1232,
			Answer: []string{"_matrix-fed._tcp.chat.example.com. 3600 IN SRV 10 0 8448 hs.chat.example.com."}, Extra: []string{hsA, hsAAAA}},
		{Qname: "nope.chat.example.com.", Qtype: dns.TypeA, EDNS: 1232, Rcode: dns.RcodeNameError},
		{Qname: "hs.chat.example.com.", Qtype: dns.TypeTXT},
		{Qname: "x.child.chat.example.com.", Qtype: dns.TypeA,
			Ns:    []string{"child.chat.example.com. 300 IN NS ns.child.chat.example.com.", "child.chat.example.com. 300 IN NS ns.elsewhere.org."},
			Extra: []string{"ns.child.chat.example.com. 300 IN A 192.0.2.53"}},
		{Qname: "example.org.", Qtype: dns.TypeA, EDNS: 1232, Rcode: dns.RcodeRefused, EDE: edeNotAuthoritative},
	}
	for _, netw := range []string{"udp", "tcp"} {
		addr := s.udp
		if netw == "tcp" {
			addr = s.tcp
		}
		for _, c := range cases {
			t.Run(netw+" "+c.Qname+" "+dns.TypeToString[c.Qtype], func(t *testing.T) {
				q := query(c)
				q.Question[0].Qclass = dns.ClassANY
				checkReply(t, q, exchange(t, netw, addr, q), c)
			})
		}
	}
}
