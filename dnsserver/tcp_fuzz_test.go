package dnsserver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// panicWatch counts the recovered panics a Server logs.
type panicWatch struct {
	mu sync.Mutex
	n  int
}

func (p *panicWatch) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if bytes.Contains(b, []byte("recovered panic")) {
		p.n++
	}
	return len(b), nil
}

func (p *panicWatch) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// framed appends msg to stream with its length prefix.
func framed(stream, msg []byte) []byte {
	stream = binary.BigEndian.AppendUint16(stream, uint16(len(msg)))
	return append(stream, msg...)
}

// FuzzTCPFraming feeds arbitrary byte streams (framed messages, lengths
// cut short, garbage) to a connection of a real server, with every key,
// transfer and update policy of the secondary tests. The server must not
// panic (its recover would log it), must end the connection when the
// client does, and every reply must parse, be a response, and carry the ID
// of one of the messages sent, in order. Run with
//
//	go test -run=NONE -fuzz=FuzzTCPFraming -fuzztime=3m ./dnsserver
func FuzzTCPFraming(f *testing.F) {
	pack := func(m *dns.Msg) []byte {
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	var mix []byte
	for _, q := range benchMix(f) {
		mix = framed(mix, q)
	}
	f.Add(mix)
	f.Add(mix[:len(mix)-1])
	f.Add(mix[:1])
	f.Add([]byte{0, 40, 1, 2})
	f.Add([]byte{0, 0, 0, 0})
	var raw []byte
	for _, c := range rawCases {
		raw = framed(raw, c.pkt)
	}
	f.Add(raw)
	padded := query(lookupCases[2])
	padded.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_PADDING{Padding: make([]byte, 5000)}}
	f.Add(framed(mix[:30], pack(padded)))
	// The special path: signed transfers (several messages), IXFR,
	// UPDATE, NOTIFY, the catalog zone, a bad signature.
	axfr, _ := signedQuery(f, axfrQuery("chat.example.com."), xfrKey, dns.HmacSHA256, xfrSecret, 0)
	ixfr := new(dns.Msg)
	ixfr.SetIxfr("chat.example.com.", 0, "ns.", "h.")
	ixfrSigned, _ := signedQuery(f, ixfr.Copy(), xfrKey, dns.HmacSHA256, xfrSecret, 0)
	upd := new(dns.Msg)
	upd.SetUpdate("chat.example.com.")
	upd.Insert([]dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: acmeName, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{"fuzz"}}})
	updSigned, _ := signedQuery(f, upd.Copy(), hsKey, dns.HmacSHA512, hsSecret, 0)
	notify := new(dns.Msg)
	notify.SetNotify("chat.example.com.")
	catSOA := new(dns.Msg)
	catSOA.SetQuestion(catalog, dns.TypeSOA)
	catSigned, _ := signedQuery(f, catSOA.Copy(), xfrKey, dns.HmacSHA256, xfrSecret, 0)
	badSig, _ := signedQuery(f, query(lookupCases[0]), otherKey, dns.HmacSHA256, xfrSecret, 0)
	special := framed(framed(framed(nil, axfr), mix[:40]), axfr)
	for _, b := range [][]byte{ixfrSigned, pack(ixfr), updSigned, pack(upd), pack(notify), pack(catSOA), catSigned, badSig} {
		special = framed(special, b)
	}
	f.Add(special)
	f.Add(framed(nil, axfr))
	f.Add(append(framed(nil, axfr), 0x12, 0x34, 0x56))
	// Garbage.
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add(bytes.Repeat([]byte{0xff}, 300))

	// The secondary's NOTIFYs go to the discard port, once.
	text := secondaryTOML("127.0.0.1:9")
	pw := &panicWatch{}
	s := startOnePort(f, testModel(f, text), Options{NotifyTries: 1, NotifyTimeout: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(pw, &slog.HandlerOptions{Level: slog.LevelError}))})
	f.Fuzz(func(t *testing.T, stream []byte) {
		// The IDs of the whole messages sent, in order.
		var ids []uint16
		for b := stream; len(b) >= 2; {
			l := int(binary.BigEndian.Uint16(b))
			if len(b) < 2+l {
				break
			}
			if l >= 2 {
				ids = append(ids, binary.BigEndian.Uint16(b[2:]))
			}
			b = b[2+l:]
		}
		conn, err := net.Dial("tcp", s.tcp)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			if _, err := conn.Write(stream); err == nil {
				_ = conn.(*net.TCPConn).CloseWrite()
			}
		}()
		next := 0 // index in ids of the message the last reply answered
		var l [2]byte
		for i := 0; ; i++ {
			if _, err := io.ReadFull(conn, l[:]); err != nil {
				if errors.Is(err, io.EOF) || strings.Contains(err.Error(), "reset") {
					break
				}
				t.Fatalf("reading reply %d: %v (the server must close when the client does)", i, err)
			}
			msg := make([]byte, binary.BigEndian.Uint16(l[:]))
			if _, err := io.ReadFull(conn, msg); err != nil {
				t.Fatalf("reply %d cut short: %v", i, err)
			}
			var m dns.Msg
			if err := m.Unpack(msg); err != nil {
				t.Fatalf("reply %d %x does not parse: %v", i, msg, err)
			}
			if !m.Response {
				t.Fatalf("reply %d %x is not a response", i, msg)
			}
			for next < len(ids) && ids[next] != m.Id {
				next++
			}
			if next == len(ids) {
				t.Fatalf("reply %d has ID %d, which no message sent at or after the last one answered has (%v)", i, m.Id, ids)
			}
		}
		<-wrote
		if n := pw.count(); n > 0 {
			t.Fatalf("the server recovered %d panics", n)
		}
	})
}
