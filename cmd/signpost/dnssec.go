package main

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dev/signpost/config"
	"github.com/signpost-dev/signpost/dnsserver"
	"github.com/signpost-dev/signpost/pgstore"
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
			if kf, err = createKeyFile(m.ACME.Storage, origin, now); err != nil {
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

// createKeyFile makes and stores the first key of origin. With a database
// that several instances share, it does so under the database's lock, and
// takes the key another instance stored first if there is one: instances
// starting together then sign with one key, which one DS covers.
func createKeyFile(storage, origin string, now time.Time) (keyFile, error) {
	sk, err := newStoredKey(origin, now)
	if err != nil {
		return keyFile{}, err
	}
	kf := keyFile{Keys: []storedKey{sk}}
	if !pgstore.IsURL(storage) {
		return kf, writeKeyFile(storage, origin, kf)
	}
	data, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return keyFile{}, err
	}
	key := "signpost/" + keysName(origin)
	err = withDB(storage, func(ctx context.Context, db *pgstore.Storage) error {
		if err := db.Lock(ctx, key); err != nil {
			return err
		}
		defer db.Unlock(context.WithoutCancel(ctx), key)
		have, err := db.Load(ctx, key)
		switch {
		case err == nil:
			kf = keyFile{}
			return json.Unmarshal(have, &kf)
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
		return db.Store(ctx, key, append(data, '\n'))
	})
	return kf, err
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

// writeDS prints, for each zone m signs, the DS records to give the
// parent, as master-file comments: a line per record, or why there are
// none yet. It only reads keys: serve makes them, as the user it runs as.
func writeDS(w io.Writer, m *config.Model, prefix string) {
	for _, origin := range signedZones(m) {
		kf, err := readKeyFile(m.ACME.Storage, origin)
		switch {
		case err != nil:
			fmt.Fprintf(w, "%sDNSSEC %s: %v\n", prefix, origin, err)
			continue
		case len(kf.Keys) == 0:
			fmt.Fprintf(w, "%sDNSSEC %s: no key yet; signpost serve makes one, then run this again for the DS record to give the registrar\n", prefix, origin)
			continue
		}
		keys, err := kf.zoneKeys(origin)
		if err != nil {
			fmt.Fprintf(w, "%sDNSSEC %s: %v\n", prefix, origin, err)
			continue
		}
		fmt.Fprintf(w, "%sDNSSEC %s: give the registrar (the parent zone) this DS record:\n", prefix, origin)
		for _, ds := range dnsserver.DS(origin, keys, m.DNS.TTL) {
			fmt.Fprintf(w, "%s  %s\n", prefix, ds)
		}
		if len(keys) > 1 {
			fmt.Fprintf(w, "%s  (a key roll is under way: see signpost dnssec roll)\n", prefix)
		}
	}
}

const dnssecUsage = `usage:
  signpost dnssec roll -zone ORIGIN [-config FILE]          start a key roll
  signpost dnssec roll -zone ORIGIN -finish [-config FILE]  end it once the parent has the new DS
`

// dnssec runs the dnssec subcommands: only roll, for now.
func (e env) dnssec(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] != "roll" {
		fmt.Fprint(e.stderr, dnssecUsage)
		return exitUsage
	}
	var zone string
	var finish bool
	path, code := e.configFlags("dnssec roll", args[1:], func(fs *flag.FlagSet) {
		fs.StringVar(&zone, "zone", "", "the `origin` of the zone whose key to roll")
		fs.BoolVar(&finish, "finish", false, "remove the old key: the parent publishes the new DS")
	})
	if code >= 0 {
		return code
	}
	m, ok := e.load(ctx, path, nil)
	if !ok {
		return exitFail
	}
	origin := dns.CanonicalName(zone)
	if zone == "" || !slices.Contains(signedZones(m), origin) {
		fmt.Fprintf(e.stderr, "signpost dnssec roll: -zone %q is not a zone %s signs; use one of: %s\n", zone, m.Path, strings.Join(signedZones(m), ", "))
		return exitUsage
	}
	kf, err := readKeyFile(m.ACME.Storage, origin)
	if err != nil {
		fmt.Fprintf(e.stderr, "signpost: %v\n", err)
		return exitFail
	}
	var retiring, active []storedKey
	for _, k := range kf.Keys {
		if k.Retiring {
			retiring = append(retiring, k)
		} else {
			active = append(active, k)
		}
	}
	switch {
	case len(kf.Keys) == 0:
		fmt.Fprintf(e.stderr, "signpost dnssec roll: %s has no key yet; signpost serve makes its first one\n", origin)
		return exitFail
	case finish && len(retiring) == 0:
		fmt.Fprintf(e.stderr, "signpost dnssec roll: no roll of %s to finish; start one with signpost dnssec roll -zone %s\n", origin, origin)
		return exitFail
	case !finish && len(retiring) > 0:
		fmt.Fprintf(e.stderr, "signpost dnssec roll: a roll of %s is under way; once the parent has the new DS, finish it with -finish\n", origin)
		return exitFail
	case finish:
		kf.Keys = active
	default:
		sk, err := newStoredKey(origin, e.now())
		if err != nil {
			fmt.Fprintf(e.stderr, "signpost: %v\n", err)
			return exitFail
		}
		for i := range kf.Keys {
			kf.Keys[i].Retiring = true
		}
		kf.Keys = append(kf.Keys, sk)
	}
	if err := writeKeyFile(m.ACME.Storage, origin, kf); err != nil {
		fmt.Fprintf(e.stderr, "signpost: storing the keys of %s: %v\n", origin, err)
		return exitFail
	}
	if finish {
		fmt.Fprintf(e.stdout, "%s: the old key is gone from the key store. Reload signpost (SIGHUP) to sign with the new key alone.\n", origin)
		return exitOK
	}
	fmt.Fprintf(e.stdout, "%s: a new key signs next to the old one. Reload signpost (SIGHUP): both keys then sign every RRset, and CDS/CDNSKEY name the new key only.\n", origin)
	fmt.Fprintf(e.stdout, "Give the registrar this DS in place of the old one (a parent that reads CDS does so itself):\n")
	keys, err := kf.zoneKeys(origin)
	if err == nil {
		for _, ds := range dnsserver.DS(origin, keys, m.DNS.TTL) {
			fmt.Fprintf(e.stdout, "  %s\n", ds)
		}
	}
	fmt.Fprintf(e.stdout, "Once the parent serves it, wait for the old DS's TTL to pass, then run: signpost dnssec roll -zone %s -finish\n", origin)
	return exitOK
}
