package dnsserver

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dev/signpost/config"
	"github.com/signpost-dev/signpost/internal/testenv"
)

// floodTOML serves a zone with a TXT RRset of about 1 KB, the kind of
// answer an attacker reflects, and twenty small names for a legitimate
// client. Rate limiting is at 20 replies/s so that the flood needs only a
// second.
func floodTOML(rrl string) string {
	var b strings.Builder
	b.WriteString(`
[dns]
nameservers = ["ns1.flood.test"]
hostmaster = "hostmaster@flood.test"
` + rrl + `
[[zone]]
origin = "flood.test"
addresses = ["192.0.2.1"]
records = [
`)
	for i := range 4 {
		fmt.Fprintf(&b, "  \"big 300 IN TXT \\\"%d%s\\\"\",\n", i, strings.Repeat("x", 240))
	}
	for i := range 20 {
		fmt.Fprintf(&b, "  \"n%d 300 IN A 192.0.2.%d\",\n", i, i+10)
	}
	b.WriteString("]\n")
	return b.String()
}

func floodQuery(t testing.TB, id uint16, name string, qtype uint16, cookie []byte) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = id
	m.SetEdns0(1232, true)
	if cookie != nil {
		m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: hex.EncodeToString(cookie)}}
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// listenFrom opens a UDP socket on a loopback address of its own: Linux
// routes all of 127/8 to lo, so each is a distinct source to the server.
func listenFrom(t testing.TB, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Skipf("cannot bind %s (not Linux loopback?): %v", ip, err)
	}
	_ = c.SetReadBuffer(4 << 20)
	t.Cleanup(func() { c.Close() })
	return c
}

// exchangeFrom sends q from c and waits up to wait for the reply with its
// ID; it returns nil if none came.
func exchangeFrom(t testing.TB, c *net.UDPConn, server *net.UDPAddr, q []byte, wait time.Duration) *dns.Msg {
	t.Helper()
	if _, err := c.WriteToUDP(q, server); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(wait))
	for {
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			return nil
		}
		if n >= 2 && bytes.Equal(buf[:2], q[:2]) {
			var m dns.Msg
			if err := m.Unpack(buf[:n]); err != nil {
				t.Fatalf("reply %x does not parse: %v", buf[:n], err)
			}
			return &m
		}
	}
}

func cookieOf(m *dns.Msg) []byte {
	if o := m.IsEdns0(); o != nil {
		for _, e := range o.Option {
			if c, ok := e.(*dns.EDNS0_COOKIE); ok {
				b, _ := hex.DecodeString(c.Cookie)
				return b
			}
		}
	}
	return nil
}

const floodName = "big.flood.test."

// floodStats is what a flood got back.
type floodStats struct {
	sent, sentBytes     int64 // queries, and their bytes
	gotBytes, answers   int64
	truncated           int64
	fullLen             int // bytes of one unlimited answer
	legitOK, legitAsked int // a client in another /24
	legitTime           time.Duration
}

// ratio is the share of the bytes the flood would get unlimited.
func (f floodStats) ratio() float64 { return float64(f.gotBytes) / float64(f.sent*int64(f.fullLen)) }

// amplification is bytes out per byte in.
func (f floodStats) amplification() float64 { return float64(f.gotBytes) / float64(f.sentBytes) }

func (f floodStats) String() string {
	return fmt.Sprintf("%d queries, %d answers, %d truncated; %d of the %d bytes unlimited (%.1f%%); amplification %.2fx (unlimited %.1fx); other /24: %d of %d answered in %v",
		f.sent, f.answers, f.truncated, f.gotBytes, f.sent*int64(f.fullLen), 100*f.ratio(), f.amplification(),
		float64(f.fullLen)/float64(f.sentBytes/f.sent), f.legitOK, f.legitAsked, f.legitTime.Round(time.Millisecond))
}

// flood sends floodName TXT queries from four addresses of 127.1.0.0/24,
// about 2000/s from each, and reads what comes back, while a resolver in
// 127.2.0.0/24 asks twenty names five times each, spread over a second,
// and while also runs; the flood lasts until both are done. Every reply
// must parse, and be either the whole answer or a truncated reply with
// the question and nothing else.
func flood(t *testing.T, server *net.UDPAddr, also func()) floodStats {
	var st floodStats
	// What one unlimited answer is: asked once, from a prefix of its own.
	ref := listenFrom(t, "127.3.0.1")
	full := exchangeFrom(t, ref, server, floodQuery(t, 1, floodName, dns.TypeTXT, nil), 2*time.Second)
	if full == nil || full.Truncated || len(full.Answer) != 4 {
		t.Fatalf("reference answer: %v", full)
	}
	full.Compress = true // as the server packs it
	fullBytes, _ := full.Pack()
	st.fullLen = len(fullBytes)
	if st.fullLen < 1000 {
		t.Fatalf("reference answer is %d bytes; the test wants about 1 KB", st.fullLen)
	}

	const senders, minPerSender = 4, 1000
	var (
		readers, senderWG    sync.WaitGroup
		gotBytes, answers    atomic.Int64
		truncated, sentBytes atomic.Int64
		sent                 atomic.Int64
		bad                  = make(chan string, 16)
		floodDone, others    atomic.Bool
	)
	report := func(msg string) {
		select {
		case bad <- msg:
		default:
		}
	}
	for i := range senders {
		c := listenFrom(t, fmt.Sprintf("127.1.0.%d", i+2))
		q := floodQuery(t, uint16(i), floodName, dns.TypeTXT, nil)
		readers.Add(1)
		senderWG.Add(1)
		go func() {
			defer senderWG.Done()
			for j := 0; j < minPerSender || !others.Load(); j++ {
				if _, err := c.WriteToUDP(q, server); err != nil {
					report(err.Error())
					return
				}
				sent.Add(1)
				sentBytes.Add(int64(len(q)))
				if j%2 == 1 {
					time.Sleep(time.Millisecond) // pace it: the kernel must not drop queries for us
				}
			}
		}()
		go func() {
			defer readers.Done()
			buf := make([]byte, 4096)
			for {
				_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				n, _, err := c.ReadFromUDP(buf)
				if err != nil {
					if floodDone.Load() {
						return
					}
					continue
				}
				gotBytes.Add(int64(n))
				var m dns.Msg
				if err := m.Unpack(buf[:n]); err != nil {
					report(fmt.Sprintf("flood reply %x does not parse: %v", buf[:n], err))
					continue
				}
				switch {
				case m.Truncated:
					// A slip: header, question (and OPT), nothing else.
					if len(m.Answer)+len(m.Ns) != 0 || len(m.Extra) > 1 || len(m.Extra) == 1 && m.IsEdns0() == nil ||
						len(m.Question) != 1 || m.Question[0].Name != floodName || m.Rcode != dns.RcodeSuccess {
						report("bad truncated reply:\n" + m.String())
					}
					truncated.Add(1)
				case len(m.Answer) == 4:
					answers.Add(1)
				default:
					report("bad flood reply:\n" + m.String())
				}
			}
		}()
	}

	var clients sync.WaitGroup
	legit := listenFrom(t, "127.2.0.2")
	clients.Add(2)
	go func() {
		defer clients.Done()
		start := time.Now()
		for i := range 100 {
			st.legitAsked++
			name := fmt.Sprintf("n%d.flood.test.", i%20)
			r := exchangeFrom(t, legit, server, floodQuery(t, uint16(5000+i), name, dns.TypeA, nil), 2*time.Second)
			if r != nil && !r.Truncated && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1 {
				st.legitOK++
			}
			time.Sleep(10 * time.Millisecond) // as a resolver would, not all at once
		}
		st.legitTime = time.Since(start)
	}()
	go func() {
		defer clients.Done()
		if also != nil {
			also()
		}
	}()
	clients.Wait()
	others.Store(true)
	senderWG.Wait()
	floodDone.Store(true)
	readers.Wait()
	close(bad)
	for msg := range bad {
		t.Error(msg)
	}
	st.sent, st.sentBytes = sent.Load(), sentBytes.Load()
	st.gotBytes, st.answers, st.truncated = gotBytes.Load(), answers.Load(), truncated.Load()
	return st
}

// TestRRLFlood floods the server with large-answer queries from four
// addresses of one /24 while a client in another /24 asks its questions
// and a client in the flooded /24 that holds a server cookie asks its own.
// The flood gets a small fraction of the bytes it would get unlimited,
// fewer bytes than it sends, in truncated replies that parse; the other
// two lose nothing.
func TestRRLFlood(t *testing.T) {
	s := startServer(t, testModel(t, floodTOML("[dns.rrl]\nrate = 20\nslip = 2")), Options{})
	server := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s.udp))
	var cookie []byte
	cookieOK := 0
	st := flood(t, server, func() {
		c := listenFrom(t, "127.1.0.9")
		for try := 0; try < 30 && len(cookie) != 24; try++ {
			// Learning the cookie counts against the flooded prefix, so
			// the reply may be dropped; a truncated one carries it too.
			if r := exchangeFrom(t, c, server, floodQuery(t, uint16(7000+try), floodName, dns.TypeTXT, []byte("resolver")), 300*time.Millisecond); r != nil {
				cookie = cookieOf(r)
			}
		}
		for i := range 100 {
			if len(cookie) != 24 {
				return
			}
			r := exchangeFrom(t, c, server, floodQuery(t, uint16(8000+i), floodName, dns.TypeTXT, cookie), time.Second)
			if r != nil && !r.Truncated && len(r.Answer) == 4 && bytes.Equal(cookieOf(r), cookie) {
				cookieOK++
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	t.Logf("flood: %v; client with a cookie in the flooded /24: %d of 100", st, cookieOK)
	if st.ratio() > 0.10 {
		t.Errorf("the flood got %.1f%% of the unlimited bytes, want at most 10%%", 100*st.ratio())
	}
	if st.amplification() > 1 {
		t.Errorf("the flood got %.2f bytes per byte sent, want at most 1", st.amplification())
	}
	if st.truncated == 0 {
		t.Errorf("no truncated reply: slip sends none")
	}
	if st.legitOK < 99 {
		t.Errorf("client in another prefix: %d of 100 answered, want at least 99", st.legitOK)
	}
	if len(cookie) != 24 {
		t.Errorf("no server cookie learned during the flood")
	}
	if cookieOK != 100 {
		t.Errorf("client with a valid server cookie: %d of 100 answered in full, want 100", cookieOK)
	}
}

// TestRRLFloodNSD runs the same flood against signpost and NSD, both with
// NSD's default rate limiting (200 replies/s, slip 2, /24), and reports
// their amplification side by side. Both must keep the other /24's
// answers; signpost must not amplify more than NSD does by more than a
// margin for timing.
func TestRRLFloodNSD(t *testing.T) {
	m := testModel(t, floodTOML(""))
	nsdAddr := startNSDWith(t, m, "  rrl-ratelimit: 200\n  rrl-slip: 2\n  rrl-ipv4-prefix-length: 24\n  rrl-whitelist-ratelimit: 2000\n")
	s := startServer(t, m, Options{})
	ours := flood(t, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s.udp)), nil)
	nsd := flood(t, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(nsdAddr)), nil)
	t.Logf("signpost: %v", ours)
	t.Logf("NSD:      %v", nsd)
	if ours.legitOK < 99 {
		t.Errorf("signpost: client in another prefix: %d of 100 answered, want at least 99", ours.legitOK)
	}
	if ours.amplification() > nsd.amplification()*1.5+0.2 {
		t.Errorf("signpost amplifies %.2fx under flood, NSD %.2fx", ours.amplification(), nsd.amplification())
	}
}

// startNSDWith is startNSD with extra (nsd.conf server: lines) for rate
// limiting, cookies and the like.
func startNSDWith(t testing.TB, m *config.Model, extra string) string {
	t.Helper()
	var zones []nsdZone
	for _, z := range m.Zones {
		var buf bytes.Buffer
		if err := z.WriteMasterFile(&buf); err != nil {
			t.Fatal(err)
		}
		zones = append(zones, nsdZone{z.Origin, buf.String()})
	}
	return startNSDZones(t, zones, extra)
}

// nsdZone is a zone for NSD to load: its origin and master file.
type nsdZone struct{ origin, text string }

// startNSDZones is startNSDWith for zones given as master files.
func startNSDZones(t testing.TB, zones []nsdZone, extra string) string {
	t.Helper()
	nsd, err := exec.LookPath("nsd")
	if err != nil {
		t.Skip("nsd not installed (apt-get install nsd): skipping the comparison with NSD")
	}
	dir := t.TempDir()
	port := testenv.FreePort(t)
	var conf strings.Builder
	conf.WriteString(testenv.NSDServerConf(dir, port, 1, extra))
	for i, z := range zones {
		file := fmt.Sprintf("zone%d.zone", i)
		if err := os.WriteFile(filepath.Join(dir, file), []byte(z.text), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&conf, "zone:\n  name: %q\n  zonefile: %q\n", z.origin, file)
	}
	confPath := filepath.Join(dir, "nsd.conf")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	testenv.RunDaemon(t, nsd, "-d", "-c", confPath)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	c := listenFrom(t, "127.6.0.1") // a prefix of its own, not to use up the flood's
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		if r := exchangeFrom(t, c, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)), floodQuery(t, uint16(i), zones[0].origin, dns.TypeSOA, nil), 200*time.Millisecond); r != nil && r.Rcode == dns.RcodeSuccess {
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("nsd did not start answering on %s", addr)
		}
	}
}

// TestRRLExemptAndTCP: an exempt prefix and TCP are never limited, and
// rate = 0 turns limiting off.
func TestRRLExemptAndTCP(t *testing.T) {
	s := startServer(t, testModel(t, floodTOML("[dns.rrl]\nrate = 5\nexempt = [\"127.4.0.0/16\"]")), Options{})
	server := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s.udp))
	// count sends 50 queries at once from ip and counts the full answers.
	count := func(ip string) int {
		return burst(t, server, ip, func(int) string { return "big.flood.test." },
			func(m *dns.Msg) bool { return !m.Truncated && len(m.Answer) == 4 })
	}
	if got := count("127.4.9.9"); got != 50 {
		t.Errorf("exempt prefix: %d of 50 answered, want 50", got)
	}
	// The burst is one second's worth; the rest is dropped or truncated.
	if got := count("127.5.0.1"); got < 5 || got > 10 {
		t.Errorf("limited prefix: %d of 50 answered in full, want the burst of 5 (and up to 5 more if sending took a second)", got)
	}
	cl := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	for i := range 50 {
		m := new(dns.Msg)
		m.SetQuestion("big.flood.test.", dns.TypeTXT)
		r, _, err := cl.Exchange(m, s.tcp)
		if err != nil || len(r.Answer) != 4 {
			t.Fatalf("TCP query %d: %v %v", i, r, err)
		}
	}
	s.SetModel(testModel(t, floodTOML("[dns.rrl]\nrate = 0")))
	if got := count("127.5.0.2"); got != 50 {
		t.Errorf("rate = 0: %d of 50 answered, want 50", got)
	}
}

// TestRRLClassify checks the kind and name each reply is counted under.
func TestRRLClassify(t *testing.T) {
	s := New(Options{})
	s.SetModel(testModel(t, testTOML))
	ix := s.ix.Load()
	for _, c := range []struct {
		name  string
		qtype uint16
		kind  byte
		key   string
	}{
		{"Hs.Chat.Example.Com.", dns.TypeA, rrlAnswer, "hs.chat.example.com."},
		{"nope.CHAT.example.com.", dns.TypeA, rrlNXDomain, "chat.example.com."},
		{"hs.chat.example.com.", dns.TypeTXT, rrlNoData, "chat.example.com."},
		{"x.y.matrix.test.", dns.TypeA, rrlNXDomain, "matrix.test."},
		{"deep.child.chat.example.com.", dns.TypeA, rrlReferral, "child.chat.example.com."},
		{"example.org.", dns.TypeA, rrlError, ""},
		{"chat.example.com.", dns.TypeAXFR, rrlError, ""},
	} {
		m := new(dns.Msg)
		m.SetQuestion(c.name, c.qtype)
		m.SetEdns0(1232, false)
		reply := ix.respond(m, false, nil)
		kind, name := rrlClassify(reply)
		key := ""
		if name != nil {
			n, _, err := dns.UnpackDomainName(name, 0)
			if err != nil {
				t.Fatalf("%s: name %x: %v", c.name, name, err)
			}
			key = strings.ToLower(n)
		}
		if kind != c.kind || key != c.key {
			t.Errorf("%s %s: got kind %d name %q, want %d %q", c.name, dns.TypeToString[c.qtype], kind, key, c.kind, c.key)
		}
	}
	if k, _ := rrlClassify(formerr([]byte{1, 2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0}, nil)); k != rrlError {
		t.Errorf("FORMERR: got kind %d, want error", k)
	}
}

// TestRRLBucket walks one bucket through its states: the burst, drops and
// slips in turn, refill with time, and sharing with another key.
func TestRRLBucket(t *testing.T) {
	r := newRRL()
	r.configure(config.RRL{Rate: 10, Slip: 3, IPv4Prefix: 24, IPv6Prefix: 56})
	c := r.conf.Load()
	var b atomic.Uint64
	now := int64(1_000_000)
	var got []rrlAction
	for range 16 {
		got = append(got, r.take(&b, 7, c, now))
	}
	want := []rrlAction{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, rrlDrop, rrlDrop, rrlSlip, rrlDrop, rrlDrop, rrlSlip}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("burst of 16 at rate 10, slip 3: got %v, want %v", got, want)
	}
	// 100 ms later one more reply is allowed, and no second one.
	if a, a2 := r.take(&b, 7, c, now+100_000), r.take(&b, 7, c, now+100_000); a != rrlSend || a2 == rrlSend {
		t.Errorf("after 100 ms: got %v then %v, want send then not", a, a2)
	}
	// Another key in the busy bucket shares its limit.
	if a := r.take(&b, 9, c, now+100_000); a == rrlSend {
		t.Errorf("another key in a busy bucket: got send, want limited")
	}
	// Once idle, the bucket is the next key's, with a full burst.
	later := now + 3_000_000
	for i := range 10 {
		if a := r.take(&b, 9, c, later); a != rrlSend {
			t.Fatalf("new key in an idle bucket, reply %d: got %v, want send", i, a)
		}
	}
	if b.Load()>>52 != 9 {
		t.Errorf("bucket tag %d, want 9", b.Load()>>52)
	}
	// Prefixes: /24 and /56 group addresses.
	for _, p := range []struct {
		a, b string
		same bool
	}{
		{"192.0.2.1", "192.0.2.254", true},
		{"192.0.2.1", "192.0.3.1", false},
		{"2001:db8:0:ff::1", "2001:db8:0:1::2", true},
		{"2001:db8:0:100::1", "2001:db8:0:1::2", false},
	} {
		x, y := netip.MustParseAddr(p.a).AsSlice(), netip.MustParseAddr(p.b).AsSlice()
		bits := 24
		if len(x) == 16 {
			bits = 56
		}
		maskBits(x, bits)
		maskBits(y, bits)
		if bytes.Equal(x, y) != p.same {
			t.Errorf("%s and %s in one prefix: got %v, want %v", p.a, p.b, !p.same, p.same)
		}
	}
}

// TestSlipReply checks the truncated reply made from a full one: header
// with TC, the question as asked, the OPT with its cookie, nothing else.
func TestSlipReply(t *testing.T) {
	s := New(Options{})
	s.SetModel(testModel(t, testTOML))
	ix := s.ix.Load()
	for _, v := range []variant{{}, {edns: 1232, do: true, mixed: true, opts: optCookie | optNSID}} {
		pkt := rawQueryFor(t, s, 77, "mail.chat.example.com.", dns.TypeMX, v)
		cl := testSender(s)
		var sc scratch
		full := ix.fast.replyTo(pkt, nil, &sc, &cl)
		var fm dns.Msg
		if err := fm.Unpack(full); err != nil || len(fm.Answer) == 0 {
			t.Fatalf("full reply: %v %v", &fm, err)
		}
		var m dns.Msg
		if err := m.Unpack(slipReply(append([]byte{}, full...))); err != nil {
			t.Fatal(err)
		}
		want := fm.Copy()
		want.Truncated = true
		want.Answer, want.Ns = nil, nil
		want.Extra = nil
		if o := fm.IsEdns0(); o != nil {
			want.Extra = []dns.RR{o}
		}
		if m.String() != want.String() {
			t.Errorf("slipped reply:\n%v\nwant\n%v", &m, want)
		}
	}
}

// BenchmarkRRL is the accounting of one reply: classify, hash, one bucket
// update; from 256 sources in 16 prefixes.
func BenchmarkRRL(b *testing.B) {
	s := New(Options{})
	s.SetModel(testModel(b, testTOML))
	ix := s.ix.Load()
	var sc scratch
	reply := append([]byte{}, ix.fast.reply(rawQuery(b, 1, "hs.chat.example.com.", dns.TypeA, variant{edns: 1232}), nil, &sc)...)
	var addrs []netip.Addr
	for i := range 256 {
		addrs = append(addrs, netip.AddrFrom4([4]byte{198, 51, byte(i % 16), byte(i)}))
	}
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.rrl.account(reply, addrs[i%len(addrs)], "", now)
	}
}

// TestRRLRandomNames: random names under one zone (NXDOMAIN) or under one
// wildcard share a bucket, so spraying them does not escape the limit,
// while one name asked as often in another zone has a bucket of its own.
func TestRRLRandomNames(t *testing.T) {
	s := startServer(t, testModel(t, testTOML+"\n[dns.rrl]\nrate = 5\n"), Options{})
	server := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s.udp))
	// spray sends 50 queries at once from ip, name(i) TXT, and counts
	// the replies that are not truncated.
	spray := func(ip string, name func(i int) string) int {
		return burst(t, server, ip, name, func(m *dns.Msg) bool { return !m.Truncated })
	}
	for _, c := range []struct {
		what string
		ip   string
		name func(i int) string
	}{
		{"random names under a wildcard", "127.7.0.1", func(i int) string { return fmt.Sprintf("r%d.wild.chat.example.com.", i) }},
		{"random missing names", "127.7.1.1", func(i int) string { return fmt.Sprintf("r%d.chat.example.com.", i) }},
	} {
		if got := spray(c.ip, c.name); got < 5 || got > 10 {
			t.Errorf("%s: %d of 50 answered in full, want the burst of 5 (and up to 5 more if sending took a second)", c.what, got)
		}
	}
}

// burst sends 50 TXT queries for name(i) at once from ip to server and
// counts the replies, read until none comes for half a second, that parse
// and that ok accepts.
func burst(t *testing.T, server *net.UDPAddr, ip string, name func(i int) string, ok func(*dns.Msg) bool) int {
	t.Helper()
	c := listenFrom(t, ip)
	for i := range 50 {
		if _, err := c.WriteToUDP(floodQuery(t, uint16(i), name(i), dns.TypeTXT, nil), server); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	buf := make([]byte, 4096)
	for {
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		l, _, err := c.ReadFromUDP(buf)
		if err != nil {
			return n
		}
		var m dns.Msg
		if m.Unpack(buf[:l]) == nil && ok(&m) {
			n++
		}
	}
}
