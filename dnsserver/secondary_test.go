package dnsserver

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dev/signpost/config"
	"github.com/signpost-dev/signpost/internal/testenv"
)

// TSIG secrets of the tests: 32 random-looking bytes each, 64 for the
// hmac-sha512 key.
const (
	xfrKey      = "xfr.example.com."
	xfrSecret   = "eGZyLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVmZ2hpaiE="
	otherKey    = "other.example.com."
	otherSecret = "b3RoZXItc2VjcmV0LTAxMjM0NTY3ODlhYmNkZWZnaCE="
	hsKey       = "hs.example.com."
	hsSecret    = "aHMtc2VjcmV0LTAxMjM0NTY3ODlhYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODlBQkNERUYhIQ=="
	catalog     = "catalog.signpost.invalid."
)

// secondaryTOML is testTOML plus what issue 7 adds: a catalog zone, three
// keys, one secondary (NOTIFY to notify, host:port; transfers from its
// address with xfr.example.com) and an update policy for hs.example.com.
func secondaryTOML(notify string) string {
	return strings.Replace(testTOML, "[dns]\n", "[dns]\ncatalog = \"catalog.signpost.invalid\"\n", 1) + fmt.Sprintf(`
[[key]]
name = "xfr.example.com"
secret = %q

[[key]]
name = "other.example.com"
secret = %q

[[key]]
name = "hs.example.com"
algorithm = "hmac-sha512"
secret = %q

[[secondary]]
address = %q
key = "xfr.example.com"

[[update]]
key = "hs.example.com"
names = ["chat.example.com", "*.chat.example.com", "matrix.test"]
`, xfrSecret, otherSecret, hsSecret, notify)
}

// notified is one NOTIFY a sink received.
type notified struct {
	msg  *dns.Msg
	tsig error // the verification result; nil also when unsigned
}

// notifySink is a secondary's NOTIFY listener: a miekg/dns server on
// 127.0.0.1:0 that knows the xfr key, records every NOTIFY and answers it
// (signed when it was), except the first drop ones, which it ignores.
type notifySink struct {
	addr string
	got  chan notified
	mu   sync.Mutex
	drop int
}

func startNotifySink(t testing.TB, drop int) *notifySink {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ns := &notifySink{addr: pc.LocalAddr().String(), got: make(chan notified, 1000), drop: drop}
	srv := &dns.Server{PacketConn: pc, TsigSecret: map[string]string{xfrKey: xfrSecret},
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			ns.got <- notified{msg: r, tsig: w.TsigStatus()}
			ns.mu.Lock()
			ignore := ns.drop > 0
			ns.drop--
			ns.mu.Unlock()
			if ignore {
				return
			}
			m := new(dns.Msg)
			m.SetReply(r)
			if t := r.IsTsig(); t != nil && w.TsigStatus() == nil {
				m.SetTsig(t.Hdr.Name, t.Algorithm, 300, time.Now().Unix())
			}
			_ = w.WriteMsg(m)
		})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan error, 1)
	go func() { done <- srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})
	return ns
}

// next returns the next NOTIFY, failing the test if none comes in time.
func (ns *notifySink) next(t testing.TB) notified {
	t.Helper()
	select {
	case n := <-ns.got:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no NOTIFY arrived")
		return notified{}
	}
}

// none checks that nothing arrived beyond what was read.
func (ns *notifySink) none(t testing.TB) {
	t.Helper()
	select {
	case n := <-ns.got:
		t.Errorf("unexpected NOTIFY %v", n.msg)
	default:
	}
}

// checkNotify requires n to be a NOTIFY for zone with serial, signed with
// the xfr key and verified by the sink.
func checkNotify(t testing.TB, n notified, zone string, serial uint32) {
	t.Helper()
	m := n.msg
	if m.Opcode != dns.OpcodeNotify || m.Response || !m.Authoritative || len(m.Question) != 1 ||
		m.Question[0] != (dns.Question{Name: zone, Qtype: dns.TypeSOA, Qclass: dns.ClassINET}) {
		t.Errorf("NOTIFY %v: want opcode NOTIFY, AA, question %s SOA IN", m, zone)
	}
	if len(m.Answer) != 1 {
		t.Fatalf("NOTIFY answer section %v, want the SOA", m.Answer)
	}
	if soa, ok := m.Answer[0].(*dns.SOA); !ok || soa.Hdr.Name != zone || soa.Serial != serial {
		t.Errorf("NOTIFY SOA %v, want %s serial %d", m.Answer[0], zone, serial)
	}
	if ts := m.IsTsig(); ts == nil || ts.Hdr.Name != xfrKey || ts.Algorithm != dns.HmacSHA256 || n.tsig != nil {
		t.Errorf("NOTIFY TSIG %v (verification: %v), want signed with %s and verified", ts, n.tsig, xfrKey)
	}
}

// startOnePort serves m on one loopback port for UDP and TCP, as a real
// listener does: secondaries ask over UDP and transfer over TCP from the
// one address they are given.
// before, if given, runs between New and SetModel.
func startOnePort(t testing.TB, m *config.Model, o Options, before ...func(*Server)) *testServer {
	t.Helper()
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	s := New(o)
	for _, f := range before {
		f(s)
	}
	s.SetModel(m)
	pc, l := testenv.ListenDNS(t)
	errs := make(chan error, 2)
	go func() { errs <- s.ServeUDP(pc) }()
	go func() { errs <- s.ServeTCP(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Errorf("Serve: %v", err)
			}
		}
	})
	addr := pc.LocalAddr().String()
	return &testServer{Server: s, udp: addr, tcp: addr}
}

// zoneText is the zone as `signpost zone` prints it, one record per line
// without the $ORIGIN line, with the serial replaced.
func zoneText(t testing.TB, z *config.Zone, serial uint32) []string {
	t.Helper()
	var b strings.Builder
	if err := z.WriteMasterFile(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")[1:]
	soa := dns.Copy(z.SOA).(*dns.SOA)
	soa.Serial = serial
	if lines[0] != z.SOA.String() {
		t.Fatalf("zone file starts with %q, not its SOA", lines[0])
	}
	lines[0] = soa.String()
	return lines
}

// signedQuery packs q signed with key (secret), at time signed ts (now if
// zero), and returns the bytes and the request MAC.
func signedQuery(t testing.TB, q *dns.Msg, key, alg, secret string, ts int64) ([]byte, string) {
	t.Helper()
	if ts == 0 {
		ts = time.Now().Unix()
	}
	q.SetTsig(key, alg, 300, ts)
	b, mac, err := dns.TsigGenerate(q, secret, "", false)
	if err != nil {
		t.Fatal(err)
	}
	return b, mac
}

// tcpExchange sends raw over TCP from local (an IP, "" for any) and reads
// replies until done says the last one came, returning each reply's bytes.
func tcpExchange(t testing.TB, addr, local string, raw []byte, done func(i int, m *dns.Msg) bool) [][]byte {
	t.Helper()
	c := dialFrom(t, addr, local)
	defer c.Close() // now, not at the end of the test: callers make hundreds
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	dc := &dns.Conn{Conn: c}
	if _, err := dc.Write(raw); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for i := 0; ; i++ {
		buf := make([]byte, dns.MaxMsgSize)
		n, err := dc.Read(buf)
		if err != nil {
			t.Fatalf("reading reply %d: %v", i, err)
		}
		var m dns.Msg
		if err := m.Unpack(buf[:n]); err != nil {
			t.Fatalf("reply %d does not parse: %v", i, err)
		}
		out = append(out, buf[:n])
		if done(i, &m) {
			return out
		}
	}
}

// udpExchange sends raw over UDP and returns the reply's bytes.
func udpExchange(t testing.TB, addr string, raw []byte) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(raw); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, dns.MaxMsgSize)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func unpack(t testing.TB, b []byte) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatalf("reply %x does not parse: %v", b, err)
	}
	return m
}

// rrStrings prints records for comparison.
func rrStrings(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, rr.String())
	}
	return out
}
