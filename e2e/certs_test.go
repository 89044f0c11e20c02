package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
	"github.com/miekg/dns"
)

// obtain gets a certificate for names from Pebble with the given
// challenge solvers, and returns the chain and key as PEM files.
func (w *world) obtain(label string, names []string, solvers map[string]acmez.Solver) (certFile, keyFile string) {
	w.t.Helper()
	minica, err := os.ReadFile(w.minica)
	if err != nil {
		w.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(minica)
	client := acmez.Client{
		Client: &acme.Client{
			Directory:  "https://" + resolverIP + ":14000/dir",
			HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second},
		},
		ChallengeSolvers: solvers,
	}
	ctx := w.ctx()
	accountKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		w.t.Fatal(err)
	}
	account, err := client.NewAccount(ctx, acme.Account{TermsOfServiceAgreed: true, PrivateKey: accountKey})
	if err != nil {
		w.t.Fatalf("ACME account for %s: %v", label, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		w.t.Fatal(err)
	}
	certs, err := client.ObtainCertificateForSANs(ctx, account, key, names)
	if err != nil {
		w.t.Fatalf("certificate for %s %v: %v", label, names, err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		w.t.Fatal(err)
	}
	certFile = w.write(label+"/tls.crt", string(certs[0].ChainPEM))
	keyFile = w.write(label+"/tls.key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})))
	return certFile, keyFile
}

// nsupdateSolver answers DNS-01 challenges the way the README tells a
// homeserver's admin to: RFC 2136 UPDATEs signed with the homeserver's
// TSIG key, sent to signpost by BIND's nsupdate.
type nsupdateSolver struct{ w *world }

func (s nsupdateSolver) Present(ctx context.Context, c acme.Challenge) error {
	return s.update(ctx, "add", c)
}

func (s nsupdateSolver) CleanUp(ctx context.Context, c acme.Challenge) error {
	return s.update(ctx, "delete", c)
}

// Wait returns once signpost and its secondary both serve the value, as
// lego and certbot wait for propagation: the CA may ask either.
func (s nsupdateSolver) Wait(ctx context.Context, c acme.Challenge) error {
	name, want := dns.Fqdn(c.DNS01TXTRecordName()), c.DNS01KeyAuthorization()
	for _, ip := range []string{signpostIP, secondaryIP} {
		for {
			r, err := ask(ip, name, dns.TypeTXT)
			if err == nil && hasTXT(r, want) {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s never served TXT %s %q: %v", ip, name, want, err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

func hasTXT(r *dns.Msg, want string) bool {
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok && strings.Join(txt.Txt, "") == want {
			return true
		}
	}
	return false
}

func (s nsupdateSolver) update(ctx context.Context, op string, c acme.Challenge) error {
	script := fmt.Sprintf("server %s\nzone %s.\nupdate %s %s. 60 TXT %q\nsend\n",
		signpostIP, serverName, op, strings.TrimSuffix(c.DNS01TXTRecordName(), "."), c.DNS01KeyAuthorization())
	cmd := exec.CommandContext(ctx, "nsupdate", "-v", "-y", "hmac-sha512:"+hsKey+":"+hsSecret)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nsupdate %s: %v\n%s", op, err, out)
	}
	return nil
}

// http01Solver serves HTTP-01 key authorizations on ip:80 while a
// certificate is obtained.
type http01Solver struct {
	mu     sync.Mutex
	tokens map[string]string // path -> key authorization
}

func (s *http01Solver) Present(_ context.Context, c acme.Challenge) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[c.HTTP01ResourcePath()] = c.KeyAuthorization
	return nil
}

func (s *http01Solver) CleanUp(_ context.Context, c acme.Challenge) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, c.HTTP01ResourcePath())
	return nil
}

func (s *http01Solver) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	ka, ok := s.tokens[r.URL.Path]
	s.mu.Unlock()
	if !ok {
		http.NotFound(rw, r)
		return
	}
	rw.Write([]byte(ka))
}

// obtainHTTP01 gets a certificate for name, which resolves to ip, by
// HTTP-01 on ip:80.
func (w *world) obtainHTTP01(label, name, ip string) (certFile, keyFile string) {
	w.t.Helper()
	l, err := net.Listen("tcp", ip+":80")
	if err != nil {
		w.t.Fatal(err)
	}
	s := &http01Solver{tokens: map[string]string{}}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	defer srv.Close()
	return w.obtain(label, []string{name}, map[string]acmez.Solver{acme.ChallengeTypeHTTP01: s})
}
