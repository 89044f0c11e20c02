package dnsserver

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/signpost-dev/signpost/config"
)

// tsigFudge is the time window we allow and ask for (RFC 8945 §10: 300s).
const tsigFudge = 300

// keyring holds the TSIG keys of one model (RFC 8945). It is the
// dns.TsigProvider for every message we verify or sign: incoming TCP
// messages (through dns.Server), UDP messages, our own replies and
// NOTIFYs. A key is used only with the algorithm it is configured with.
type keyring map[string]*tsigKey

type tsigKey struct {
	cfg  *config.TSIGKey
	raw  []byte
	hash func() hash.Hash
}

func newKeyring(keys []*config.TSIGKey) keyring {
	k := keyring{}
	for _, c := range keys {
		raw, err := base64.StdEncoding.DecodeString(c.Secret)
		if err != nil {
			continue // config checked it; a key we cannot use verifies nothing
		}
		h := sha256.New
		if c.Algorithm == dns.HmacSHA512 {
			h = sha512.New
		}
		k[lower(c.Name)] = &tsigKey{cfg: c, raw: raw, hash: h}
	}
	return k
}

func (k keyring) Generate(msg []byte, t *dns.TSIG) ([]byte, error) {
	key := k[lower(dns.Fqdn(t.Hdr.Name))]
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
