package dnsserver

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dev/signpost/config"
)

// TestSipHash24 checks SipHash-2-4 against the reference paper (Aumasson
// and Bernstein 2012): Appendix A's worked example, and the first and last
// entries of the reference implementation's 64 test vectors (key 00..0f,
// message 00..len-1).
func TestSipHash24(t *testing.T) {
	var key [16]byte
	for i := range key {
		key[i] = byte(i)
	}
	k := sipKey(key)
	msg := make([]byte, 64)
	for i := range msg {
		msg[i] = byte(i)
	}
	for _, c := range []struct {
		n    int
		want uint64
	}{
		{15, 0xa129ca6149be45e5}, // Appendix A
		{0, 0x726fdb47dd0e0e31},  // vectors_sip64[0]
		{1, 0x74f839c593dc67fd},  // vectors_sip64[1]
		{63, 0x958a324ceb064572}, // vectors_sip64[63]
	} {
		if got := siphash24(k[0], k[1], msg[:c.n]); got != c.want {
			t.Errorf("SipHash-2-4 of %d bytes: got %016x, want %016x", c.n, got, c.want)
		}
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCookieRFC9018 reproduces the examples of RFC 9018 Appendix A: the
// reply's COOKIE option, byte for byte, and whether the query's server
// cookie was valid.
func TestCookieRFC9018(t *testing.T) {
	for _, c := range []struct {
		name, secret, previous, ip, query string
		now                               uint32
		valid                             bool
		reply                             string
	}{
		{"A.1 learning a new server cookie", "e5e973e5a6b2a43f48e7dc849e37bfcf", "", "198.51.100.100",
			"2464c4abcf10c957", 1559731985, false,
			"2464c4abcf10c957010000005cf79f111f8130c3eee29480"},
		{"A.2 a renewed cookie, 40 minutes later", "e5e973e5a6b2a43f48e7dc849e37bfcf", "", "198.51.100.100",
			"2464c4abcf10c957010000005cf79f111f8130c3eee29480", 1559734385, true,
			"2464c4abcf10c957010000005cf7a871d4a564a1442aca77"},
		// The example's cookie is 1h52m old, past §4.3's hour: its hash
		// verifies, but it is no longer valid. The reply is the same.
		{"A.3 another client, reserved bytes set", "e5e973e5a6b2a43f48e7dc849e37bfcf", "", "203.0.113.203",
			"fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5", 1559734700, false,
			"fc93fc62807ddb86010000005cf7a9acf73a7810aca2381e"},
		// Ten minutes after it was made, the same cookie is valid (the
		// reserved bytes are hashed as sent) and echoed.
		{"A.3's cookie when fresh", "e5e973e5a6b2a43f48e7dc849e37bfcf", "", "203.0.113.203",
			"fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5", 1559727985 + 600, true,
			"fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5"},
		{"A.4 IPv6, cookie made with the previous secret", "445536bcd2513298075a5d379663c962", "dd3bdf9344b678b185a6f5cb60fca715",
			"2001:db8:220:1:59de:d0f4:8769:82b8",
			"22681ab97d52c298010000005cf7c57926556bd0934c72f8", 1559741961, true,
			"22681ab97d52c298010000005cf7c609a6bb79d16625507a"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := config.DNS{CookieSecret: mustHex(t, c.secret)}
			if c.previous != "" {
				d.CookieSecretPrevious = mustHex(t, c.previous)
			}
			conf := newEDNSConf(&d, [16]byte{})
			var out [24]byte
			valid := conf.cookie(&out, mustHex(t, c.query), netip.MustParseAddr(c.ip), c.now)
			if got := hex.EncodeToString(out[:]); got != c.reply || valid != c.valid {
				t.Errorf("got %s valid=%v, want %s valid=%v", got, valid, c.reply, c.valid)
			}
		})
	}
}

// TestCookieTimestamps covers RFC 9018 §4.3's window: a valid cookie under
// half an hour old is echoed, one older is renewed, one over an hour old
// or over five minutes in the future is invalid, and so is a cookie for
// another address, another client cookie or another secret.
func TestCookieTimestamps(t *testing.T) {
	secret := mustHex(t, "0102030405060708090a0b0c0d0e0f10")
	conf := newEDNSConf(&config.DNS{CookieSecret: secret}, [16]byte{})
	other := newEDNSConf(&config.DNS{CookieSecret: mustHex(t, "ffffffffffffffffffffffffffffffff")}, [16]byte{})
	addr := netip.MustParseAddr("192.0.2.7")
	const now = 1_800_000_000
	client := mustHex(t, "0011223344556677")
	made := func(c *ednsConf, at uint32, a netip.Addr, cl []byte) []byte {
		var out [24]byte
		c.cookie(&out, cl, a, at)
		return out[:]
	}
	fresh := made(conf, now, addr, client) // what a new cookie at now is
	for _, c := range []struct {
		name  string
		query []byte
		valid bool
		echo  bool
	}{
		{"client cookie only", client, false, false},
		{"10 minutes old", made(conf, now-600, addr, client), true, true},
		{"exactly 30 minutes old", made(conf, now-1800, addr, client), true, true},
		{"31 minutes old", made(conf, now-1860, addr, client), true, false},
		{"exactly an hour old", made(conf, now-3600, addr, client), true, false},
		{"an hour and a second old", made(conf, now-3601, addr, client), false, false},
		{"5 minutes ahead", made(conf, now+300, addr, client), true, true},
		{"5 minutes and a second ahead", made(conf, now+301, addr, client), false, false},
		{"another address", made(conf, now-10, netip.MustParseAddr("192.0.2.8"), client), false, false},
		{"another secret", made(other, now-10, addr, client), false, false},
		{"another client cookie", append(append([]byte{}, client[:7]...), append([]byte{0x78}, made(conf, now-10, addr, client)[8:]...)...), false, false},
		{"a server cookie of 8 bytes", append(append([]byte{}, client...), 1, 0, 0, 0, 0, 0, 0, 0), false, false},
		{"version 2", func() []byte { b := made(conf, now-10, addr, client); b[8] = 2; return b }(), false, false},
	} {
		var out [24]byte
		valid := conf.cookie(&out, c.query, addr, now)
		want := fresh
		if c.name == "another client cookie" {
			want = made(conf, now, addr, c.query[:8])
		}
		if c.echo {
			want = c.query
		}
		if valid != c.valid || hex.EncodeToString(out[:]) != hex.EncodeToString(want) {
			t.Errorf("%s: got %x valid=%v, want %x valid=%v", c.name, out, valid, want, c.valid)
		}
	}
	// The timestamp of a fresh cookie is now, big-endian, after version 1
	// and three zero bytes.
	if fresh[8] != 1 || fresh[9]|fresh[10]|fresh[11] != 0 || binary.BigEndian.Uint32(fresh[12:]) != now {
		t.Errorf("fresh cookie %x: want version 1, reserved 0, timestamp %d", fresh, now)
	}
}

// TestCookieNoAlloc pins checking and making a cookie at zero allocations.
func TestCookieNoAlloc(t *testing.T) {
	conf := newEDNSConf(&config.DNS{}, [16]byte{1})
	addr := netip.MustParseAddr("2001:db8::1")
	var out [24]byte
	conf.cookie(&out, mustHex(t, "0011223344556677"), addr, 1000)
	q := append([]byte{}, out[:]...)
	if allocs := testing.AllocsPerRun(100, func() { conf.cookie(&out, q, addr, 1001) }); allocs != 0 {
		t.Errorf("%v allocations, want 0", allocs)
	}
}

// BenchmarkCookie is the cost of a query's cookie: verifying its server
// cookie and making a fresh one (the worst case: two SipHashes).
func BenchmarkCookie(b *testing.B) {
	conf := newEDNSConf(&config.DNS{}, [16]byte{1})
	addr := netip.MustParseAddr("192.0.2.1")
	var out [24]byte
	conf.cookie(&out, mustHex(b, "0011223344556677"), addr, 1000)
	q := append([]byte{}, out[:]...)
	b.ReportAllocs()
	for b.Loop() {
		if !conf.cookie(&out, q, addr, 1000+2000) {
			b.Fatal("invalid")
		}
	}
}

// FuzzCookie feeds arbitrary OPT option data, after a question and an OPT
// header, to both answering paths from a known sender. Neither may panic;
// when the fast path answers, its bytes and its cookie verdict must be the
// full path's; every reply must parse, and so must the truncated reply rate
// limiting would make of it. Run with
//
//	go test -run=NONE -fuzz=FuzzCookie ./dnsserver
func FuzzCookie(f *testing.F) {
	s := New(Options{})
	s.SetModel(testModel(f, strings.Replace(testTOML, "[dns]", "[dns]\nnsid = \"fuzz\"", 1)))
	ix := s.ix.Load()
	valid := testCookie(s, 600)
	opt := func(code uint16, data []byte) []byte {
		return append(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, code), uint16(len(data))), data...)
	}
	for _, seed := range [][]byte{
		nil,
		opt(dns.EDNS0COOKIE, valid[:8]),
		opt(dns.EDNS0COOKIE, valid),
		opt(dns.EDNS0COOKIE, testCookie(s, 3000)),
		opt(dns.EDNS0COOKIE, valid[:12]),
		append(opt(dns.EDNS0NSID, nil), opt(dns.EDNS0COOKIE, valid)...),
		append(opt(dns.EDNS0PADDING, make([]byte, 40)), opt(65001, []byte{1})...),
		opt(dns.EDNS0COOKIE, valid)[:10],
		append(opt(dns.EDNS0COOKIE, valid[:8]), opt(dns.EDNS0COOKIE, make([]byte, 41))...),
		opt(dns.EDNS0SUBNET, []byte{0, 1, 24, 0, 192, 0, 2}),
	} {
		for _, qi := range []byte{0, 1, 2} {
			f.Add(seed, qi, uint16(1232), true)
		}
	}
	questions := []struct {
		name  string
		qtype uint16
	}{
		{"Hs.chat.example.com.", dns.TypeA},       // precomputed answer
		{"nope.chat.example.com.", dns.TypeTXT},   // NXDOMAIN template
		{"example.org.", dns.TypeA},               // REFUSED template, with EDE
		{"big.chat.example.com.", dns.TypeTXT},    // near the size limit
		{"www.chat.example.com.", dns.TypeA},      // the full path (CNAME)
		{"x.wild.chat.example.com.", dns.TypeA},   // the full path (wildcard)
		{"child.chat.example.com.", dns.TypeAAAA}, // referral
	}
	f.Fuzz(func(t *testing.T, rdata []byte, qi byte, size uint16, do bool) {
		if len(rdata) > 2000 {
			return
		}
		q := questions[int(qi)%len(questions)]
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.Id = 0x1234
		pkt, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		pkt[11] = 1 // ARCOUNT: the OPT
		pkt = append(pkt, 0, 0, 41)
		pkt = binary.BigEndian.AppendUint16(pkt, size)
		flags := byte(0)
		if do {
			flags = 0x80
		}
		pkt = append(pkt, 0, 0, flags, 0)
		pkt = binary.BigEndian.AppendUint16(pkt, uint16(len(rdata)))
		pkt = append(pkt, rdata...)

		var eq ednsReq
		_ = parseOptions(rdata, &eq)
		// The first COOKIE option, which parseOptions may not reach.
		var first []byte
		for b := rdata; len(b) >= 4 && 4+int(binary.BigEndian.Uint16(b[2:])) <= len(b); b = b[4+int(binary.BigEndian.Uint16(b[2:])):] {
			if binary.BigEndian.Uint16(b) == dns.EDNS0COOKIE {
				first = b[4 : 4+int(binary.BigEndian.Uint16(b[2:]))]
				break
			}
		}
		var sc scratch
		fc, sl := testSender(s), testSender(s)
		fast := ix.fast.replyTo(pkt, make([]byte, 0, 4096), &sc, &fc)
		slow := s.handleRawFrom(ix, pkt, make([]byte, 0, 4096), (*fixedPeer)(&netip.AddrPort{}), &sl)
		if fast != nil && (!bytes.Equal(fast, slow) || fc.cookieOK != sl.cookieOK) {
			t.Fatalf("query %x: fast path %x (cookie %v), full path %x (cookie %v)", pkt, fast, fc.cookieOK, slow, sl.cookieOK)
		}
		if slow == nil {
			t.Fatalf("query %x: no reply", pkt)
		}
		var r dns.Msg
		if err := r.Unpack(slow); err != nil {
			t.Fatalf("reply %x to %x does not parse: %v", slow, pkt, err)
		}
		if c := cookieOf(&r); c != nil && (len(c) != 24 || len(first) < 8 || !bytes.Equal(c[:8], first[:8])) {
			t.Fatalf("reply cookie %x to query cookie %x", c, first)
		}
		rrlClassify(slow)
		var sm dns.Msg
		if err := sm.Unpack(slipReply(slow)); err != nil || !sm.Truncated || len(sm.Answer)+len(sm.Ns) != 0 {
			t.Fatalf("slipped reply %v to %x: %v", &sm, pkt, err)
		}
	})
}

// TestCookiesOverUDP asks a real server over UDP: the reply echoes the
// client cookie with a server cookie that verifies under the configured
// secret for the client's address; a fresh server cookie is echoed, one
// 40 minutes old or two hours old is replaced; NSID is answered only when
// configured and asked for; a malformed cookie gets FORMERR.
func TestCookiesOverUDP(t *testing.T) {
	const secret = "8f3cf0f4c1a2b3d4e5f60718293a4b5c"
	text := strings.Replace(testTOML, "[dns]", "[dns]\nnsid = \"ns-test\"\ncookie_secret = \""+secret+"\"", 1)
	s := startServer(t, testModel(t, text), Options{})
	plain := startServer(t, testModel(t, testTOML), Options{})
	server := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s.udp))
	c := listenFrom(t, "127.0.0.1")
	client := []byte("\x01\x02\x03\x04\x05\x06\x07\x08")
	key := sipKey([16]byte(mustHex(t, secret)))
	local := netip.MustParseAddr("127.0.0.1")

	ask := func(srv *net.UDPAddr, cookie []byte, nsid bool) *dns.Msg {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion("hs.chat.example.com.", dns.TypeA)
		m.Id = 4242
		m.SetEdns0(1232, false)
		o := m.IsEdns0()
		if nsid {
			o.Option = append(o.Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID})
		}
		if cookie != nil {
			o.Option = append(o.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: hex.EncodeToString(cookie)})
		}
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		r := exchangeFrom(t, c, srv, b, 2*time.Second)
		if r == nil {
			t.Fatalf("no reply to %v", m)
		}
		return r
	}
	// options lists a reply's EDNS options as code=hex.
	options := func(r *dns.Msg) []string {
		var out []string
		if o := r.IsEdns0(); o != nil {
			for _, e := range o.Option {
				switch e := e.(type) {
				case *dns.EDNS0_NSID:
					out = append(out, "nsid="+e.Nsid)
				case *dns.EDNS0_COOKIE:
					out = append(out, "cookie="+e.Cookie)
				default:
					out = append(out, e.String())
				}
			}
		}
		return out
	}
	// check verifies a reply's server cookie and returns its timestamp.
	check := func(r *dns.Msg) uint32 {
		t.Helper()
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].String() != "hs.chat.example.com.\t300\tIN\tA\t198.51.100.7" {
			t.Fatalf("reply:\n%v", r)
		}
		got := cookieOf(r)
		if len(got) != 24 || !bytes.Equal(got[:8], client) || got[8] != 1 || got[9]|got[10]|got[11] != 0 {
			t.Fatalf("cookie %x: want the client cookie, then version 1 and reserved zero", got)
		}
		ts := binary.BigEndian.Uint32(got[12:])
		if d := int64(ts) - time.Now().Unix(); d < -5 || d > 5 {
			t.Errorf("server cookie timestamp %d is %ds from now", ts, d)
		}
		if h := cookieHash(key, client, got[8:16], local); binary.LittleEndian.Uint64(got[16:]) != h {
			t.Errorf("server cookie %x does not verify: hash want %016x", got[8:], h)
		}
		return ts
	}

	r := ask(server, client, true)
	check(r)
	first := cookieOf(r)
	if got, want := options(r), []string{"nsid=" + hex.EncodeToString([]byte("ns-test")), "cookie=" + hex.EncodeToString(first)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("options %v, want %v", got, want)
	}
	// A fresh server cookie comes back unchanged.
	if r := ask(server, first, false); !bytes.Equal(cookieOf(r), first) || len(options(r)) != 1 {
		t.Errorf("fresh cookie %x: got options %v, want it echoed alone", first, options(r))
	}
	conf := newEDNSConf(&config.DNS{CookieSecret: mustHex(t, secret)}, [16]byte{})
	for _, age := range []uint32{40 * 60, 2 * 3600} {
		var old [24]byte
		conf.cookie(&old, client, local, uint32(time.Now().Unix())-age)
		r := ask(server, old[:], false)
		check(r)
		if bytes.Equal(cookieOf(r), old[:]) {
			t.Errorf("a cookie %ds old was echoed; want a fresh one", age)
		}
	}
	// No NSID unless asked, nor from a server without dns.nsid.
	if r := ask(server, nil, false); len(options(r)) != 0 {
		t.Errorf("not asked: options %v, want none", options(r))
	}
	if r := ask(net.UDPAddrFromAddrPort(netip.MustParseAddrPort(plain.udp)), nil, true); len(options(r)) != 0 {
		t.Errorf("no dns.nsid: options %v, want none", options(r))
	}
	// A cookie of 12 bytes is malformed: FORMERR, header only.
	r = ask(server, append(append([]byte{}, client...), 1, 2, 3, 4), false)
	if want := (&dns.Msg{MsgHdr: dns.MsgHdr{Id: 4242, Response: true, RecursionDesired: true, Rcode: dns.RcodeFormatError}}).String(); r.String() != want || len(r.Question)+len(r.Extra) != 0 {
		t.Errorf("malformed cookie: got\n%v\nwant\n%v", r, want)
	}
}
