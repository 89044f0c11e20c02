package dnsserver

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/signpost-dev/signpost/config"
)

// tsigFudge is the time window we allow and ask for (RFC 8945 §10: 300s).
// A client's larger fudge does not widen it: miekg/dns and BIND
// (dns_tsig_verify) trust the fudge the client sends, so a captured UPDATE
// signed with fudge 65535 stays valid for 18 hours; here it is five minutes
// either way, whatever the client asks for.
const tsigFudge = 300

// maxSeenPerKey bounds the replay cache per key. Only a holder of the key
// can add to it, and a legitimate one sends a few signed messages a minute
// (a certbot run, a secondary's SOA checks and transfers), not 8192 in five
// minutes; at about 200 bytes an entry it stays under 2 MB a key.
const maxSeenPerKey = 8192

// errReplay and errSeenFull refuse a message whose MAC verified and whose
// time is in the window. They wrap dns.ErrTime, so the client gets BADTIME:
// RFC 8945 §5.2.3 answers its own replay check (a Time Signed earlier than
// one already seen) with BADTIME, and a client that gets it knows to sign
// afresh rather than that its key is wrong.
var (
	errReplay   = fmt.Errorf("%w: the same MAC was seen within the time window (a replay)", dns.ErrTime)
	errSeenFull = fmt.Errorf("%w: too many signed messages with this key within the time window", dns.ErrTime)
)

// keyring holds the TSIG keys of one model (RFC 8945). It is the
// dns.TsigProvider for every message we verify or sign: incoming TCP
// messages, UDP messages, our own replies and NOTIFYs. A key is used only
// with the algorithm it is configured with.
//
// Verify enforces the time window and the replay cache itself, so every
// transport that verifies through it gets both.
type keyring struct {
	keys map[string]*tsigKey
	// seen is the replay cache, shared by every keyring of one Server so
	// that a rebuild (each UPDATE makes one) does not forget it. nil: no
	// replay check, as for the client side of NOTIFY.
	seen *macCache
}

type tsigKey struct {
	cfg  *config.TSIGKey
	raw  []byte
	hash func() hash.Hash
}

func newKeyring(keys []*config.TSIGKey) keyring {
	k := keyring{keys: map[string]*tsigKey{}}
	for _, c := range keys {
		raw, err := base64.StdEncoding.DecodeString(c.Secret)
		if err != nil {
			continue // config checked it; a key we cannot use verifies nothing
		}
		h := sha256.New
		if c.Algorithm == dns.HmacSHA512 {
			h = sha512.New
		}
		k.keys[lower(c.Name)] = &tsigKey{cfg: c, raw: raw, hash: h}
	}
	return k
}

func (k keyring) Generate(msg []byte, t *dns.TSIG) ([]byte, error) {
	key := k.keys[lower(dns.Fqdn(t.Hdr.Name))]
	if key == nil {
		return nil, dns.ErrSecret
	}
	if !strings.EqualFold(dns.Fqdn(t.Algorithm), key.cfg.Algorithm) {
		return nil, dns.ErrKeyAlg
	}
	h := hmac.New(key.hash, key.raw)
	h.Write(msg)
	return h.Sum(nil), nil
}

// Verify checks t's MAC over msg, then its time against our clock within
// min(t.Fudge, 300s), then that its MAC is not one seen before. The time is
// checked after the MAC, as miekg/dns and BIND do since CVE-2017-3142, so
// an unsigned forgery learns nothing; the MAC is remembered only once all
// else passed, so only a key holder can fill the cache. miekg/dns checks
// the time again with the client's fudge; ours is never wider.
func (k keyring) Verify(msg []byte, t *dns.TSIG) error {
	want, err := k.Generate(msg, t)
	if err != nil {
		return err
	}
	got, err := hex.DecodeString(t.MAC)
	// A truncated MAC (RFC 8945 §5.2.2.1) is not accepted: it is just a
	// bad signature here.
	if err != nil || !hmac.Equal(want, got) {
		return dns.ErrSig
	}
	now := time.Now().Unix()
	window := int64(min(t.Fudge, tsigFudge))
	signed := int64(t.TimeSigned) // 48 bits on the wire: no overflow
	if now-signed > window || signed-now > window {
		return dns.ErrTime
	}
	if k.seen != nil {
		return k.seen.add(lower(dns.Fqdn(t.Hdr.Name)), string(got), signed+window, now)
	}
	return nil
}

// macCache remembers the MACs of the signed messages accepted while they
// could still be accepted: a message signed at time T with window W
// verifies only until T+W, so its MAC is forgotten after that. A captured
// signed UPDATE replayed within the window (after the delete that
// followed it, say) is refused instead of re-adding its record.
type macCache struct {
	mu    sync.Mutex
	byKey map[string]map[string]int64 // key name -> MAC -> last second it verifies
}

func newMACCache() *macCache { return &macCache{byKey: map[string]map[string]int64{}} }

// add records mac for key, valid until expires; it fails if mac is already
// there, or if key has maxSeenPerKey MACs that are all still valid.
func (c *macCache) add(key, mac string, expires, now int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := c.byKey[key]
	if seen == nil {
		seen = map[string]int64{}
		c.byKey[key] = seen
	}
	if until, ok := seen[mac]; ok && until >= now {
		return errReplay
	}
	if len(seen) >= maxSeenPerKey {
		for m, until := range seen {
			if until < now {
				delete(seen, m)
			}
		}
		if len(seen) >= maxSeenPerKey {
			// Forgetting one would let its message be replayed; the
			// key's holder is the only one who can get here.
			return errSeenFull
		}
	}
	seen[mac] = expires
	return nil
}

// tsigError is the TSIG error code for a failed verification (RFC 8945
// §5.2): an unknown key or an algorithm other than the key's is BADKEY, a
// time outside the fudge window BADTIME, anything else BADSIG.
func tsigError(err error) uint16 {
	switch {
	case errors.Is(err, dns.ErrSecret), errors.Is(err, dns.ErrKeyAlg):
		return dns.RcodeBadKey
	case errors.Is(err, dns.ErrTime):
		return dns.RcodeBadTime
	default:
		return dns.RcodeBadSig
	}
}

// sign packs resp with a TSIG record answering the request's reqTSIG and
// returns the message and its MAC. mac is the MAC the signature chains to:
// the request's for the first message of a reply, the previous message's
// for the next ones of a transfer, which are signed over the timers only
// (RFC 8945 §5.3.1). tsigErr is the TSIG error to report: BADKEY and
// BADSIG replies go unsigned, BADTIME replies are signed and carry our
// clock (§5.2.3, §5.3.2).
func (k keyring) sign(resp *dns.Msg, reqTSIG *dns.TSIG, mac string, timersOnly bool, tsigErr uint16) ([]byte, string, error) {
	now := uint64(time.Now().Unix())
	t := &dns.TSIG{
		Hdr:        dns.RR_Header{Name: reqTSIG.Hdr.Name, Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
		Algorithm:  reqTSIG.Algorithm,
		TimeSigned: now,
		Fudge:      tsigFudge,
		OrigId:     resp.Id,
		Error:      tsigErr,
	}
	if tsigErr == dns.RcodeBadTime {
		// The client checks our reply against its own time signed; our
		// clock goes in Other Data so it can see the skew.
		t.TimeSigned = reqTSIG.TimeSigned
		t.OtherLen = 6
		t.OtherData = hex.EncodeToString([]byte{byte(now >> 40), byte(now >> 32), byte(now >> 24), byte(now >> 16), byte(now >> 8), byte(now)})
	}
	resp.Extra = append(resp.Extra, t)
	return dns.TsigGenerateWithProvider(resp, k, mac, timersOnly)
}
