package dnsserver

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// checkBadTime requires b to be NOTAUTH with TSIG error BADTIME, signed
// with hs's key over the request's MAC (RFC 8945 §5.2.3: the request's Time
// Signed, our clock in Other Data).
func checkBadTime(t *testing.T, b []byte, req *dns.Msg, reqMAC string, signed int64) {
	t.Helper()
	r := unpack(t, b)
	ts := r.IsTsig()
	if r.Id != req.Id || !r.Response || r.Rcode != dns.RcodeNotAuth || ts == nil || ts.Error != dns.RcodeBadTime {
		t.Fatalf("reply %v: want NOTAUTH with TSIG error BADTIME", r)
	}
	now := time.Now().Unix()
	other, _ := hex.DecodeString(ts.OtherData)
	var ours int64
	for _, c := range other {
		ours = ours<<8 | int64(c)
	}
	if ts.Hdr.Name != hsKey || ts.Algorithm != dns.HmacSHA512 || int64(ts.TimeSigned) != signed ||
		ts.Fudge != 300 || ts.OtherLen != 6 || ours < now-5 || ours > now || ts.MACSize != 64 {
		t.Errorf("BADTIME TSIG %v: want key %s, time signed %d, fudge 300, our time (%d) in other data, a MAC", ts, hsKey, signed, now)
	}
	// miekg/dns verifies no NOTAUTH reply (ErrAuth), so sign the parsed
	// reply again with the same TSIG fields: the bytes must come out the
	// same, MAC included.
	again := *ts
	again.MAC, again.MACSize = "", 0
	r.Extra[len(r.Extra)-1] = &again
	if b2, _, err := dns.TsigGenerate(r, hsSecret, reqMAC, false); err != nil || !bytes.Equal(b2, b) {
		t.Errorf("BADTIME reply %x is not signed over the request's MAC; signed again: %x, %v", b, b2, err)
	}
}

// TestTSIGReplay: a captured signed UPDATE, replayed after the delete that
// followed it, is refused with BADTIME over UDP and TCP and does not
// re-add its record; so is a replayed AXFR request. The UPDATE and the
// delete go through miekg/dns's client, which verifies our replies.
func TestTSIGReplay(t *testing.T) {
	s := startOnePort(t, testModel(t, secondaryTOML(startNotifySink(t, 0).addr)), Options{})
	cl := func(netw string) *dns.Client {
		return &dns.Client{Net: netw, Timeout: 5 * time.Second, TsigSecret: map[string]string{hsKey: hsSecret}}
	}
	// The add, captured on its way: the bytes miekg/dns's client sends.
	add := newUpdate("chat.example.com.")
	add.Insert([]dns.RR{txtRR(t, acmeName, 60, "captured")})
	signed := time.Now().Unix()
	captured, mac := signedQuery(t, add, hsKey, dns.HmacSHA512, hsSecret, signed)
	if r := unpack(t, udpExchange(t, s.udp, captured)); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("add: %v", r)
	}
	checkQuery(t, "udp", s.udp, tc{Qname: acmeName, Qtype: dns.TypeTXT, Rcode: dns.RcodeSuccess, AA: true,
		Answer: []string{acmeName + ` 60 IN TXT "captured"`}, Ns: apexNS, Extra: []string{ns1A, ns1AAA}})

	del := newUpdate("chat.example.com.")
	del.RemoveRRset([]dns.RR{txtRR(t, acmeName, 60, "")})
	del.SetTsig(hsKey, dns.HmacSHA512, 300, time.Now().Unix())
	r, _, err := cl("tcp").Exchange(del, s.tcp)
	if err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("delete: %v, %v", r, err)
	}
	for _, netw := range []string{"udp", "tcp"} {
		var b []byte
		if netw == "udp" {
			b = udpExchange(t, s.udp, bytes.Clone(captured))
		} else {
			b = tcpExchange(t, s.tcp, "", bytes.Clone(captured), func(int, *dns.Msg) bool { return true })[0]
		}
		t.Run("replayed add over "+netw, func(t *testing.T) {
			checkBadTime(t, b, add, mac, signed)
			checkQuery(t, "udp", s.udp, tc{Qname: acmeName, Qtype: dns.TypeTXT, Rcode: dns.RcodeNameError, AA: true, Ns: []string{negSOA(3)}})
		})
	}
	if got := s.Serials()["chat.example.com."]; got != 3 {
		t.Errorf("serial %d after add, delete and two replays, want 3", got)
	}

	// The same AXFR request twice: the second is a replay.
	axfr, amac := signedQuery(t, axfrQuery("chat.example.com."), xfrKey, dns.HmacSHA256, xfrSecret, 0)
	for i, want := range []uint16{0, dns.RcodeBadTime} {
		b := tcpExchange(t, s.tcp, "", bytes.Clone(axfr), func(_ int, m *dns.Msg) bool {
			return m.Rcode != dns.RcodeSuccess || len(m.Answer) > 1 && m.Answer[len(m.Answer)-1].Header().Rrtype == dns.TypeSOA
		})[0]
		r := unpack(t, b)
		if ts := r.IsTsig(); ts == nil || ts.Error != want {
			t.Errorf("AXFR %d: TSIG %v, want error %d", i, ts, want)
		}
		if i == 0 {
			if err := dns.TsigVerify(bytes.Clone(b), xfrSecret, amac, false); err != nil {
				t.Errorf("AXFR %d: reply signature: %v", i, err)
			}
		} else if r.Rcode != dns.RcodeNotAuth || len(r.Answer) != 0 {
			t.Errorf("replayed AXFR: %v, want NOTAUTH and nothing transferred", r)
		}
	}
}

// TestTSIGFudge: the time window is min(the client's fudge, 300s). An
// UPDATE signed 3000s ahead with fudge 65535, which miekg/dns alone would
// accept, gets BADTIME and changes nothing; so do 310s either way. Inside
// the window it is accepted even with a fudge far larger, and a fudge
// smaller than 300s is honoured.
func TestTSIGFudge(t *testing.T) {
	s := startOnePort(t, testModel(t, secondaryTOML(startNotifySink(t, 0).addr)), Options{})
	// Serial 3 after the two accepted updates below; the rejected ones
	// come first and must leave serial 1.
	cases := []struct {
		name  string
		skew  int64
		fudge uint16
		ok    bool
	}{
		{"3000s ahead, fudge 65535", 3000, 65535, false},
		{"310s ahead, fudge 65535", 310, 65535, false},
		{"310s behind, fudge 65535", -310, 65535, false},
		{"100s behind, fudge 10", -100, 10, false},
		{"200s ahead, fudge 65535", 200, 65535, true},
		{"200s behind, fudge 300", -200, 300, true},
	}
	value := 0
	for _, c := range cases {
		for _, netw := range []string{"udp", "tcp"} {
			t.Run(c.name+" over "+netw, func(t *testing.T) {
				before := s.Serials()["chat.example.com."]
				value++
				m := newUpdate("chat.example.com.")
				m.Insert([]dns.RR{txtRR(t, acmeName, 60, "v"+string(rune('a'+value)))})
				signed := time.Now().Unix() + c.skew
				m.SetTsig(hsKey, dns.HmacSHA512, c.fudge, signed)
				cl := &dns.Client{Net: netw, Timeout: 5 * time.Second, TsigSecret: map[string]string{hsKey: hsSecret}}
				r, _, err := cl.Exchange(m, s.udp)
				if r == nil {
					t.Fatalf("no reply: %v", err)
				}
				after := s.Serials()["chat.example.com."]
				if c.ok {
					if err != nil || r.Rcode != dns.RcodeSuccess || after != before+1 {
						t.Errorf("reply %v, %v, serial %d -> %d: want NOERROR and a new serial", r, err, before, after)
					}
					return
				}
				// miekg/dns's client takes any NOTAUTH for a TSIG failure
				// and says ErrAuth; TestTSIGReplay checks the signature of
				// a BADTIME reply.
				if !errors.Is(err, dns.ErrAuth) {
					t.Errorf("client: %v, want ErrAuth", err)
				}
				ts := r.IsTsig()
				if r.Rcode != dns.RcodeNotAuth || ts == nil || ts.Error != dns.RcodeBadTime || int64(ts.TimeSigned) != signed || after != before {
					t.Errorf("reply %v, serial %d -> %d: want NOTAUTH, BADTIME at the request's time, no change", r, before, after)
				}
			})
		}
	}
}

// TestMACCacheBound: the replay cache holds at most maxSeenPerKey MACs a
// key; when they are all still valid the next message is refused rather
// than one forgotten (which would let it be replayed), and expired ones
// make room.
func TestMACCacheBound(t *testing.T) {
	c := newMACCache()
	const now = 1_000_000
	for i := range maxSeenPerKey {
		if err := c.add("k.", string(rune(i)), now+300, now); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
	}
	if err := c.add("k.", "new", now+300, now); !errors.Is(err, errSeenFull) {
		t.Errorf("add to a full cache: %v, want errSeenFull", err)
	}
	if err := c.add("other.", "new", now+300, now); err != nil {
		t.Errorf("another key: %v", err)
	}
	if err := c.add("k.", string(rune(0)), now+300, now); !errors.Is(err, errReplay) || !errors.Is(err, dns.ErrTime) {
		t.Errorf("a MAC seen before: %v, want errReplay (BADTIME)", err)
	}
	// 301 seconds on, every entry has expired.
	if err := c.add("k.", "new", now+601, now+301); err != nil {
		t.Errorf("after the window: %v", err)
	}
	if n := len(c.byKey["k."]); n != 1 {
		t.Errorf("%d MACs kept, want 1", n)
	}
}
