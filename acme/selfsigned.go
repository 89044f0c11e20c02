package acme

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Self-signed certificates are for trials: long enough that a trial never
// sees one expire, and replaced on a reload when they get close.
const (
	selfSignedLifetime = 365 * 24 * time.Hour
	selfSignedRenewal  = 30 * 24 * time.Hour
)

// selfSignedSet is an immutable name → certificate map; SetModel builds a
// new one and swaps it in.
type selfSignedSet struct {
	certs map[string]*tls.Certificate
}

// get returns the certificate for an SNI name: an exact match, else a
// wildcard for its parent.
func (s *selfSignedSet) get(serverName string) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(serverName, "."))
	if c := s.certs[name]; c != nil {
		return c, nil
	}
	if _, parent, ok := strings.Cut(name, "."); ok {
		if c := s.certs["*."+parent]; c != nil {
			return c, nil
		}
	}
	return nil, fmt.Errorf("acme: no certificate for %q", serverName)
}

func (m *Manager) setSelfSigned(names []string) error {
	old := m.self.Load()
	next := &selfSignedSet{certs: make(map[string]*tls.Certificate, len(names))}
	for _, name := range names {
		if c := old.certs[name]; c != nil && time.Until(c.Leaf.NotAfter) > selfSignedRenewal {
			next.certs[name] = c
			continue
		}
		c, err := selfSigned(name, time.Now())
		if err != nil {
			return fmt.Errorf("acme: self-signed certificate for %s: %w", name, err)
		}
		next.certs[name] = c
		m.log.Info("self-signed certificate created; clients will not trust it", "name", name, "not_after", c.Leaf.NotAfter)
	}
	for name := range old.certs {
		if next.certs[name] == nil {
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
