package acme

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mholt/acmez/v3"
	acmeproto "github.com/mholt/acmez/v3/acme"
	"github.com/miekg/dns"
)

// dnsSolver answers DNS-01 from signpost's own zones: Present writes the
// TXT record into the TXTStore, Wait queries our own DNS listener and every
// secondary of the zone until each serves the value, CleanUp removes exactly
// that value. It never asks a public resolver: we and our secondaries are
// the authority for the zone, and the CA may ask any of us.
//
// It keeps no state of its own, so any number of challenges, including
// several under one name, can run at once; the store holds the values.
type dnsSolver struct{ m *Manager }

var (
	_ acmez.Solver = dnsSolver{}
	_ acmez.Waiter = dnsSolver{}
)

func txtRecord(chal acmeproto.Challenge) (name, value string) {
	return dns.CanonicalName(chal.DNS01TXTRecordName()), chal.DNS01KeyAuthorization()
}

func (s dnsSolver) Present(_ context.Context, chal acmeproto.Challenge) error {
	name, value := txtRecord(chal)
	if mod := s.m.model.Load(); mod == nil || mod.ZoneFor(chal.Identifier.Value) == nil {
		return fmt.Errorf("acme: dns-01 for %s: the name is outside every zone signpost serves", chal.Identifier.Value)
	}
	if err := s.m.store.AddTXT(name, value); err != nil {
		return fmt.Errorf("acme: dns-01 for %s: add TXT: %w", chal.Identifier.Value, err)
	}
	return nil
}

func (s dnsSolver) Wait(ctx context.Context, chal acmeproto.Challenge) error {
	name, value := txtRecord(chal)
	ctx, cancel := context.WithTimeout(ctx, s.m.dnsWait)
	defer cancel()
	for _, addr := range s.m.nameservers(name) {
		if err := waitTXT(ctx, addr, name, value); err != nil {
			return fmt.Errorf("acme: dns-01 for %s: %w", chal.Identifier.Value, err)
		}
	}
	return nil
}

// nameservers returns the servers that must serve a TXT record at name
// before the CA looks: our own listener, then every [[secondary]] of the
// zone holding name, at the address it takes NOTIFY on. A secondary copies
// the zone after our NOTIFY, so waiting for it costs a transfer, about as
// long as the NOTIFY round trip plus the secondary's reload.
func (m *Manager) nameservers(name string) []string {
	addrs := slices.Clone(m.dnsAddr)
	if mod := m.model.Load(); mod != nil {
		if z := mod.ZoneFor(name); z != nil {
			for _, sec := range mod.Secondaries(z.Origin) {
				addrs = append(addrs, sec.Notify.String())
			}
		}
	}
	return addrs
}

func (s dnsSolver) CleanUp(_ context.Context, chal acmeproto.Challenge) error {
	name, value := txtRecord(chal)
	if err := s.m.store.RemoveTXT(name, value); err != nil {
		return fmt.Errorf("acme: dns-01 for %s: remove TXT: %w", chal.Identifier.Value, err)
	}
	return nil
}

// waitTXT queries addr until it answers authoritatively with value among
// the TXT records of name, or ctx ends. The first query goes out at once:
// a store in the same process is normally served immediately, so issuance
// does not pay a fixed propagation delay.
func waitTXT(ctx context.Context, addr, name, value string) error {
	delay := 10 * time.Millisecond
	for {
		err := servesTXT(ctx, addr, name, value)
		if err == nil {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s did not serve TXT %s %q: %w (%w)", addr, name, value, err, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, time.Second)
	}
}

var errNotServed = errors.New("value not in the answer yet")

func servesTXT(ctx context.Context, addr, name, value string) error {
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeTXT)
	q.RecursionDesired = false
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	r, _, err := c.ExchangeContext(ctx, q, addr)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, q, addr)
	}
	switch {
	case err != nil:
		return err
	case r.Rcode != dns.RcodeSuccess:
		return fmt.Errorf("answer has rcode %s", dns.RcodeToString[r.Rcode])
	case !r.Authoritative:
		return errors.New("answer is not authoritative")
	}
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok && strings.EqualFold(txt.Hdr.Name, name) && strings.Join(txt.Txt, "") == value {
			return nil
		}
	}
	return errNotServed
}
