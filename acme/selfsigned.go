package acme

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"time"
)

// Self-signed certificates are for trials: long enough that a trial never
// sees one expire, and replaced on a reload when they get close.
const (
	selfSignedLifetime = 365 * 24 * time.Hour
	selfSignedRenewal  = 30 * 24 * time.Hour
)

// selfSignedSet is an immutable set of names to serve certificates for;
// SetModel builds a new one and swaps it in. Certificates are made at the
// first handshake for a name, not for every name up front: a provider's
// 10,000 names took a second to start and 30 MB to hold, most of them for
// names nobody opened during a trial.
type selfSignedSet struct {
	names map[string]bool
	certs *selfSignedCerts // shared by every set of one Manager
}

// selfSignedCerts holds the certificates made so far, by name.
type selfSignedCerts struct {
	log   *slog.Logger
	mu    sync.Mutex // held while making one, so a name gets one certificate
	certs sync.Map   // name → *selfCert
}

// selfCert is a certificate without its parsed Leaf, which a handshake
// does not need: it is two thirds of the 4 KB a certificate takes, 27 MB
// for a provider's 10,000 names.
type selfCert struct {
	cert     *tls.Certificate
	notAfter time.Time
}

// get returns the certificate for an SNI name: an exact match, else a
// wildcard for its parent.
func (s *selfSignedSet) get(serverName string) (*selfCert, error) {
	name := strings.ToLower(strings.TrimSuffix(serverName, "."))
	if !s.names[name] {
		_, parent, ok := strings.Cut(name, ".")
		if !ok || !s.names["*."+parent] {
			return nil, fmt.Errorf("acme: no certificate for %q", serverName)
		}
		name = "*." + parent
	}
	return s.certs.get(name)
}

// get returns the certificate of name, made now if there is none yet or
// the one there is close to expiry.
func (c *selfSignedCerts) get(name string) (*selfCert, error) {
	fresh := func() *selfCert {
		if v, ok := c.certs.Load(name); ok {
			if sc := v.(*selfCert); time.Until(sc.notAfter) > selfSignedRenewal {
				return sc
			}
		}
		return nil
	}
	if cert := fresh(); cert != nil {
		return cert, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cert := fresh(); cert != nil {
		return cert, nil
	}
	cert, err := selfSigned(name, time.Now())
	if err != nil {
		return nil, fmt.Errorf("acme: self-signed certificate for %s: %w", name, err)
	}
	sc := &selfCert{cert: cert, notAfter: cert.Leaf.NotAfter}
	cert.Leaf = nil
	c.certs.Store(name, sc)
	c.log.Info("self-signed certificate created; clients will not trust it", "name", name, "not_after", sc.notAfter)
	return sc, nil
}

func (m *Manager) setSelfSigned(names []string) error {
	old := m.self.Load()
	next := &selfSignedSet{names: make(map[string]bool, len(names)), certs: old.certs}
	for _, name := range names {
		next.names[name] = true
	}
	for name := range old.names {
		if !next.names[name] {
			old.certs.certs.Delete(name)
			m.log.Info("certificate no longer managed", "name", name)
		}
	}
	m.self.Store(next)
	return nil
}

// selfSigned returns an ECDSA P-256 certificate for name signed by its own
// key. It is never written anywhere.
func selfSigned(name string, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"signpost self-signed"}},
		DNSNames:     []string{name},
		// A little slack for clients whose clocks run behind.
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
