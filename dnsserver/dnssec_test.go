package dnsserver

import (
	"bytes"
	"crypto"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/signpost-dev/signpost/config"
)

// testKey makes a combined signing key for origin.
func testKey(t testing.TB, origin string) ZoneKey {
	t.Helper()
	k := &dns.DNSKEY{
		Hdr:   dns.RR_Header{Name: origin, Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: 3600},
		Flags: dns.ZONE | dns.SEP, Protocol: 3, Algorithm: dns.ECDSAP256SHA256,
	}
	priv, err := k.Generate(256)
	if err != nil {
		t.Fatal(err)
	}
	return ZoneKey{DNSKEY: k, Signer: priv.(crypto.Signer)}
}

// testKeys makes a key for every zone of m that asks for DNSSEC.
func testKeys(t testing.TB, m *config.Model) map[string][]ZoneKey {
	t.Helper()
	keys := map[string][]ZoneKey{}
	for _, z := range m.Zones {
		if z.DNSSEC {
			keys[z.Origin] = []ZoneKey{testKey(t, z.Origin)}
		}
	}
	return keys
}

// signedTOML is testTOML with every zone signed.
var signedTOML = strings.Replace(testTOML, "[dns]", "[dns]\ndnssec = true", 1)

// checkSigned verifies a zone as transferred: every authoritative RRset
// has a valid signature by every key, valid at now, and the NSEC chain
// runs through every authoritative name, in canonical order, once.
func checkSigned(t *testing.T, origin string, records []dns.RR, now time.Time) {
	t.Helper()
	type setKey struct {
		name string
		typ  uint16
	}
	sets := map[setKey][]dns.RR{}
	sigs := map[setKey][]*dns.RRSIG{}
	var keys []*dns.DNSKEY
	cuts := map[string]bool{}
	for _, rr := range records {
		h := rr.Header()
		switch rr := rr.(type) {
		case *dns.RRSIG:
			sigs[setKey{h.Name, rr.TypeCovered}] = append(sigs[setKey{h.Name, rr.TypeCovered}], rr)
			continue
		case *dns.DNSKEY:
			keys = append(keys, rr)
		case *dns.NS:
			if h.Name != origin {
				cuts[h.Name] = true
			}
		}
		sets[setKey{h.Name, h.Rrtype}] = append(sets[setKey{h.Name, h.Rrtype}], rr)
	}
	if len(keys) == 0 {
		t.Fatalf("%s: no DNSKEY", origin)
	}
	below := func(name string) (bool, bool) { // below a cut, at a cut
		for c := range cuts {
			if name == c {
				return false, true
			}
			if dns.IsSubDomain(c, name) {
				return true, false
			}
		}
		return false, false
	}
	var names []string
	for k, rrs := range sets {
		under, at := below(k.name)
		if under || at && k.typ != dns.TypeDS && k.typ != dns.TypeNSEC {
			if len(sigs[k]) != 0 {
				t.Errorf("%s/%s is not authoritative but signed", k.name, dns.TypeToString[k.typ])
			}
			continue
		}
		if !slices.Contains(names, k.name) {
			names = append(names, k.name)
		}
		if len(sigs[k]) != len(keys) {
			t.Errorf("%s/%s has %d signatures, want one per key (%d)", k.name, dns.TypeToString[k.typ], len(sigs[k]), len(keys))
		}
		for _, sig := range sigs[k] {
			var key *dns.DNSKEY
			for _, dk := range keys {
				if dk.KeyTag() == sig.KeyTag {
					key = dk
				}
			}
			if key == nil {
				t.Errorf("%s/%s signed by key %d, not in the DNSKEY RRset", k.name, dns.TypeToString[k.typ], sig.KeyTag)
				continue
			}
			if err := sig.Verify(key, rrs); err != nil {
				t.Errorf("%s/%s: signature does not verify: %v", k.name, dns.TypeToString[k.typ], err)
			}
			if !sig.ValidityPeriod(now) {
				t.Errorf("%s/%s: signature not valid at %s: %s", k.name, dns.TypeToString[k.typ], now, sig)
			}
		}
	}
	slices.SortFunc(names, compareNames)
	for i, name := range names {
		nsec := sets[setKey{name, dns.TypeNSEC}]
		if len(nsec) != 1 {
			t.Errorf("%s has %d NSEC records, want 1", name, len(nsec))
			continue
		}
		if want := names[(i+1)%len(names)]; nsec[0].(*dns.NSEC).NextDomain != want {
			t.Errorf("NSEC %s points to %s, want %s", name, nsec[0].(*dns.NSEC).NextDomain, want)
		}
	}
}

// TestSignedZone signs the test zones and checks them as a secondary gets
// them, then after a TXT record came: only what changed is signed again.
func TestSignedZone(t *testing.T) {
	s := New(Options{})
	m := testModel(t, signedTOML)
	s.SetKeys(testKeys(t, m))
	t.Cleanup(func() { s.Shutdown(t.Context()) })
	s.SetModel(m)
	ix := s.ix.Load()
	for _, z := range ix.zones {
		if !z.signed {
			t.Fatalf("zone %s not signed", z.origin)
		}
		checkSigned(t, z.origin, z.records, time.Now())
	}
	serial := ix.zones["chat.example.com."].serial
	hsSig := ix.zones["chat.example.com."].nodes["hs.chat.example.com."].get(dns.TypeA).sigs[0]
	if err := s.AddTXT("_acme-challenge.hs.chat.example.com.", "token"); err != nil {
		t.Fatal(err)
	}
	z := s.ix.Load().zones["chat.example.com."]
	// ECDSA signatures differ every time: the same one means it was kept.
	if got := z.nodes["hs.chat.example.com."].get(dns.TypeA).sigs[0]; got != hsSig {
		t.Errorf("hs A was signed again for a TXT record elsewhere:\n%s\n%s", hsSig, got)
	}
	checkSigned(t, z.origin, z.records, time.Now())
	if z.serial != serial+1 {
		t.Errorf("serial %d after the TXT record, want %d", z.serial, serial+1)
	}
	if z.nodes["_acme-challenge.hs.chat.example.com."].get(dns.TypeNSEC) == nil {
		t.Errorf("the TXT record's name has no NSEC")
	}
}

// TestResign: signatures last 14 days from an inception an hour back;
// the hourly check leaves a zone alone while they have 7 days or more to
// run, then signs it again with a new serial, and a secondary's copy
// never holds an expired signature.
func TestResign(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	s := New(Options{Now: clock})
	m := testModel(t, signedTOML)
	s.SetKeys(testKeys(t, m))
	t.Cleanup(func() { s.Shutdown(t.Context()) })
	s.SetModel(m)
	z := s.ix.Load().zones["chat.example.com."]
	sig := z.soa.sigs[0].(*dns.RRSIG)
	if got, want := time.Unix(int64(sig.Inception), 0), now.Add(-time.Hour); !got.Equal(want) {
		t.Errorf("inception %s, want %s", got, want)
	}
	if got, want := time.Unix(int64(sig.Expiration), 0), now.Add(14*24*time.Hour); !got.Equal(want) {
		t.Errorf("expiration %s, want %s", got, want)
	}
	serial := z.serial

	now = now.Add(7*24*time.Hour - time.Second) // not yet due
	s.resign()
	if z2 := s.ix.Load().zones["chat.example.com."]; z2 != z {
		t.Fatalf("zone rebuilt with 7 days of signatures left (serial %d -> %d)", serial, z2.serial)
	}

	now = now.Add(2 * time.Second) // due
	s.resign()
	z = s.ix.Load().zones["chat.example.com."]
	if z.serial != serial+1 {
		t.Errorf("serial %d after signing again, want %d", z.serial, serial+1)
	}
	checkSigned(t, z.origin, z.records, now.Add(8*24*time.Hour)) // valid a week on
	if got, want := time.Unix(int64(z.soa.sigs[0].(*dns.RRSIG).Expiration), 0), now.Add(14*24*time.Hour); !got.Equal(want) {
		t.Errorf("new expiration %s, want %s", got, want)
	}
	// The other zone was signed at the same time, so it is due too.
	if mz := s.ix.Load().zones["matrix.test."]; mz.serial != 2 {
		t.Errorf("matrix.test serial %d, want 2", mz.serial)
	}
}

// TestSignedUpdate: a TXT record written by RFC 2136 UPDATE into a signed
// zone is served signed, with the NSEC chain around it, a new serial and a
// NOTIFY; deleting it takes its NSEC away again.
func TestSignedUpdate(t *testing.T) {
	sink := startNotifySink(t, 0)
	m := testModel(t, strings.Replace(secondaryTOML(sink.addr), "[dns]", "[dns]\ndnssec = true", 1))
	s := startOnePort(t, m, Options{}, func(s *Server) { s.SetKeys(testKeys(t, m)) })
	sink.waitNotify(t, "chat.example.com.", 1)
	name := acmeName
	u := newUpdate("chat.example.com.")
	u.Insert([]dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{"by-update"}}})
	expectUpdate(t, s, "tcp", u, hs, dns.RcodeSuccess, 0)
	sink.waitNotify(t, "chat.example.com.", 2)
	z := s.ix.Load().zones["chat.example.com."]
	checkSigned(t, z.origin, z.records, time.Now())

	q := new(dns.Msg).SetQuestion(name, dns.TypeTXT)
	q.SetEdns0(1232, true)
	r := exchange(t, "udp", s.udp, q)
	var txt []dns.RR
	var sig *dns.RRSIG
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.TXT:
			txt = append(txt, rr)
		case *dns.RRSIG:
			sig = rr
		}
	}
	if len(txt) != 1 || sig == nil {
		t.Fatalf("answer %v, want the TXT record and its RRSIG", r.Answer)
	}
	if err := sig.Verify(s.signer.zoneKeys("chat.example.com.")[0].DNSKEY, txt); err != nil {
		t.Errorf("the UPDATE's record does not verify: %v", err)
	}

	d := newUpdate("chat.example.com.")
	d.Remove([]dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{"by-update"}}})
	expectUpdate(t, s, "tcp", d, hs, dns.RcodeSuccess, 0)
	sink.waitNotify(t, "chat.example.com.", 3)
	z = s.ix.Load().zones["chat.example.com."]
	checkSigned(t, z.origin, z.records, time.Now())
	if z.nodes[name] != nil {
		t.Errorf("%s still exists after its record went", name)
	}
}

// failingSigner is a key whose every signature fails.
type failingSigner struct{ crypto.Signer }

func (failingSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("the key is gone")
}

// TestSigningFails: a zone that cannot be signed is served unsigned,
// whole, without a stray signature or NSEC record, and the failure is
// logged.
func TestSigningFails(t *testing.T) {
	var logs bytes.Buffer
	s := New(Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	m := testModel(t, signedTOML)
	keys := testKeys(t, m)
	k := keys["chat.example.com."][0]
	k.Signer = failingSigner{k.Signer}
	keys["chat.example.com."] = []ZoneKey{k}
	s.SetKeys(keys)
	t.Cleanup(func() { s.Shutdown(t.Context()) })
	s.SetModel(m)
	z := s.ix.Load().zones["chat.example.com."]
	if z.signed {
		t.Fatal("zone signed with a failing key")
	}
	for _, rr := range z.records {
		switch rr.Header().Rrtype {
		case dns.TypeDNSKEY, dns.TypeRRSIG, dns.TypeNSEC, dns.TypeCDS, dns.TypeCDNSKEY:
			t.Errorf("unsigned zone transfers %s", rr)
		}
	}
	for _, nd := range z.nodes {
		for _, set := range nd.sets {
			if len(set.sigs) > 0 || set.typ == dns.TypeNSEC {
				t.Errorf("unsigned zone has %s/%s with %d signatures", set.name, dns.TypeToString[set.typ], len(set.sigs))
			}
		}
	}
	if !s.ix.Load().zones["matrix.test."].signed {
		t.Error("matrix.test, whose key works, is not signed")
	}
	if !strings.Contains(logs.String(), "the key is gone; serving chat.example.com. unsigned") {
		t.Errorf("log %q does not say why the zone is unsigned", logs.String())
	}
}
