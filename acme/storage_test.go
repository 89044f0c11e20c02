package acme

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"
)

// TestCheckCertificates: only the leaf must parse, as for crypto/tls and
// certmagic; the rest of the chain needs only whole PEM blocks, so a file
// cut short is still caught and an intermediate Go cannot parse is not
// moved aside (and re-ordered) forever.
func TestCheckCertificates(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "chat.example.test"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"chat.example.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	// A DER SEQUENCE holding an INTEGER: framed, but no certificate.
	odd := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x00}}))
	inter := leaf // any whole block will do as an intermediate
	for _, tc := range []struct {
		name, data, err string // err: a substring of the error, "" for none
	}{
		{"leaf", leaf, ""},
		{"leaf and intermediate", leaf + inter, ""},
		{"intermediate Go cannot parse", leaf + odd, ""},
		{"intermediate cut short", leaf + inter[:len(inter)-40], "not a complete PEM block (cut short?)"},
		{"leaf cut short", leaf[:len(leaf)-40], "not a complete PEM block (cut short?)"},
		{"leaf Go cannot parse", odd + inter, "certificate 1: "},
		{"key instead", strings.ReplaceAll(leaf, "CERTIFICATE", "EC PRIVATE KEY"), `PEM block 1 is "EC PRIVATE KEY", want CERTIFICATE`},
		{"empty", "", "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkCertificates([]byte(tc.data))
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Errorf("got %v, want an error with %q", err, tc.err)
			}
		})
	}
}

// TestStorageLoggedWithoutPassword: certmagic logs its storage value
// (zap.Any), which reaches slog formatted with %+v.
func TestStorageLoggedWithoutPassword(t *testing.T) {
	s, err := newStorage("postgres://signpost:s3cret@db.example/certs", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	var buf strings.Builder
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "storage", s)
	if got := buf.String(); strings.Contains(got, "s3cret") || !strings.Contains(got, "pgstore:postgres://signpost:xxxxx@db.example/certs") {
		t.Errorf("logged %q; want the URL with its password hidden", got)
	}
}
