package main

import (
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dev/signpost/config"
	"github.com/signpost-dev/signpost/dnsserver"
)

// The DNSSEC keys of a zone are kept in the state directory (acme.storage)
// under dnssec/<origin>.json, mode 0600, or with acme.storage a database
// under the key signpost/dnssec/<origin>.json: instances that share a
// database then sign with the same keys, and one DS serves them all.

// keyFile is what is stored for one zone.
type keyFile struct {
	Keys []storedKey `json:"keys"`
}

type storedKey struct {
	DNSKEY  string    `json:"dnskey"`  // presentation format
	Private string    `json:"private"` // BIND's Private-key-format v1.3
	Created time.Time `json:"created"`
	// Retiring: the old key of a roll (dnsserver.ZoneKey.Retiring).
	Retiring bool `json:"retiring,omitempty"`
}

func keysName(origin string) string {
	name := strings.TrimSuffix(origin, ".")
	if name == "" {
		name = "root"
	}
	return "dnssec/" + name + ".json"
}

// signedZones returns the origins of the zones m signs.
func signedZones(m *config.Model) []string {
	var out []string
	if m.DNSOff() {
		return nil
	}
	for _, z := range m.Zones {
		if z.DNSSEC {
			out = append(out, z.Origin)
		}
	}
	return out
}

// loadKeys returns the keys of every zone m signs, making and storing a
// key for a zone that has none yet.
func loadKeys(m *config.Model, now time.Time) (map[string][]dnsserver.ZoneKey, error) {
	keys := map[string][]dnsserver.ZoneKey{}
	for _, origin := range signedZones(m) {
		kf, err := readKeyFile(m.ACME.Storage, origin)
		if err != nil {
			return nil, err
		}
		if len(kf.Keys) == 0 {
			sk, err := newStoredKey(origin, now)
			if err != nil {
				return nil, err
			}
			kf.Keys = []storedKey{sk}
			if err := writeKeyFile(m.ACME.Storage, origin, kf); err != nil {
				return nil, fmt.Errorf("dnssec: storing the new key of %s: %w", origin, err)
			}
		}
		zk, err := kf.zoneKeys(origin)
		if err != nil {
			return nil, err
		}
		keys[origin] = zk
	}
	return keys, nil
}

func readKeyFile(storage, origin string) (keyFile, error) {
	var kf keyFile
	data, where, err := readState(storage, keysName(origin))
	if errors.Is(err, fs.ErrNotExist) {
		return kf, nil
	}
	if err != nil {
		return kf, fmt.Errorf("dnssec: reading the keys of %s: %w", origin, err)
	}
	if err := json.Unmarshal(data, &kf); err != nil {
		return kf, fmt.Errorf("dnssec: %s: %w; restore it from a backup, or move it aside to make a new key (and give the parent its new DS)", where, err)
	}
	return kf, nil
}

func writeKeyFile(storage, origin string, kf keyFile) error {
	data, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return err
	}
	return writeState(storage, keysName(origin), append(data, '\n'))
}

// newStoredKey makes a combined signing key, as Knot does by default:
// ECDSA P-256 with SHA-256 (algorithm 13), flags 257 (zone key, SEP).
func newStoredKey(origin string, now time.Time) (storedKey, error) {
	k := &dns.DNSKEY{
		Hdr:       dns.RR_Header{Name: origin, Rrtype: dns.TypeDNSKEY, Class: dns.ClassINET, Ttl: 3600},
		Flags:     dns.ZONE | dns.SEP,
		Protocol:  3,
		Algorithm: dns.ECDSAP256SHA256,
	}
	priv, err := k.Generate(256)
	if err != nil {
		return storedKey{}, fmt.Errorf("dnssec: making a key for %s: %w", origin, err)
	}
	return storedKey{DNSKEY: k.String(), Private: k.PrivateKeyString(priv), Created: now.UTC()}, nil
}

// zoneKeys parses the stored keys.
func (kf keyFile) zoneKeys(origin string) ([]dnsserver.ZoneKey, error) {
	var out []dnsserver.ZoneKey
	for i, sk := range kf.Keys {
		rr, err := dns.NewRR(sk.DNSKEY)
		k, ok := rr.(*dns.DNSKEY)
		if err != nil || !ok {
			return nil, fmt.Errorf("dnssec: key %d of %s: the dnskey field is not a DNSKEY record", i, origin)
		}
		priv, err := k.NewPrivateKey(sk.Private)
		if err != nil {
			return nil, fmt.Errorf("dnssec: key %d of %s: %w", i, origin, err)
		}
		signer, ok := priv.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("dnssec: key %d of %s: the private key cannot sign", i, origin)
		}
		out = append(out, dnsserver.ZoneKey{DNSKEY: k, Signer: signer, Retiring: sk.Retiring})
	}
	return out, nil
}
