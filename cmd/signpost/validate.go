package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/signpost-dev/signpost/config"
)

func (e env) validate(args []string) int {
	path, code := e.configFlags("validate", args)
	if code >= 0 {
		return code
	}
	m, ok := e.load(context.Background(), path, nil)
	if !ok {
		return exitFail
	}
	// A warning, not an error: the file is fine, and serve starts anyway
	// (DNS and plain HTTP need no storage; certificates are retried until
	// it is fixed). systemd runs validate before start and reload, so exit
	// 1 here would stop a full or read-only disk from starting DNS at all.
	var machine []string
	if p := storageProblem(m); p != nil {
		machine = append(machine, p.String()+" (on this machine, not in the file: serve starts anyway and retries certificates until it is fixed)")
	}
	printModel(e.stdout, m, machine...)
	return exitOK
}

func (e env) zone(args []string) int {
	path, code := e.configFlags("zone", args)
	if code >= 0 {
		return code
	}
	m, ok := e.load(context.Background(), path, nil)
	if !ok {
		return exitFail
	}
	zones := m.Zones
	if m.Catalog != nil {
		zones = append(zones[:len(zones):len(zones)], m.Catalog)
	}
	for i, z := range zones {
		if i > 0 {
			fmt.Fprintln(e.stdout)
		}
		fmt.Fprintf(e.stdout, "; zone %s from %s\n", z.Origin, m.Path)
		if err := z.WriteMasterFile(e.stdout); err != nil {
			fmt.Fprintf(e.stderr, "signpost: %v\n", err)
			return exitFail
		}
	}
	// Signed zones are served with their DNSSEC records, made from keys
	// this does not print; the DS for the parent is what the user needs.
	writeDS(e.stdout, m, "; ")
	return exitOK
}

// printModel shows everything a model would serve: each zone as a master
// file, then each server name's three documents exactly as served. The
// warnings are the model's, then extra ones found outside the file.
func printModel(w io.Writer, m *config.Model, extra ...string) {
	fmt.Fprintf(w, "%s: valid\n", m.Path)
	for _, p := range m.Warnings {
		fmt.Fprintf(w, "warning: %s\n", p)
	}
	for _, p := range extra {
		fmt.Fprintf(w, "warning: %s\n", p)
	}
	dnsOn := "DNS on " + strings.Join(m.DNS.Listen, ", ")
	if m.DNSOff() {
		dnsOn = "DNS off (dns.listen = []): documents only"
		if len(m.Zones) > 0 {
			dnsOn += ", the zones below are not served"
		}
	}
	fmt.Fprintf(w, "\n%s; HTTPS on %s; plain HTTP on %s\n", dnsOn, m.HTTP.Listen, m.HTTP.PlainListen)
	if names := m.CertificateNames(); len(names) > 0 {
		how := "from " + m.ACME.Directory + " (" + strings.Join(m.ACME.Challenges, ", ") + ")"
		if m.ACME.Mode == config.ModeSelfSigned {
			how = "self-signed, for local trials only"
		}
		fmt.Fprintf(w, "certificates for %s: %s\n", strings.Join(names, ", "), how)
	}
	for _, sec := range m.SecondaryServers {
		key, zones := "unsigned", "every zone"
		if sec.Key != nil {
			key = "key " + sec.Key.Name
		}
		if sec.Zones != nil {
			zones = strings.Join(sec.Zones, ", ")
		} else if m.Catalog != nil {
			zones += " and the catalog"
		}
		fmt.Fprintf(w, "secondary %s (%s): NOTIFY and AXFR for %s\n", sec.Notify, key, zones)
	}
	for _, u := range m.Updates {
		fmt.Fprintf(w, "UPDATE with key %s: TXT at %s\n", u.Key.Name, strings.Join(u.Names, ", "))
	}
	for _, z := range m.Zones {
		fmt.Fprintf(w, "\nzone %s (serial %d)\n", z.Origin, z.SOA.Serial)
		z.WriteMasterFile(w)
	}
	if len(signedZones(m)) > 0 {
		fmt.Fprintln(w)
		writeDS(w, m, "")
	}
	if m.Catalog != nil {
		fmt.Fprintf(w, "\ncatalog zone %s (serial %d; for secondaries by AXFR only)\n", m.Catalog.Origin, m.Catalog.SOA.Serial)
		m.Catalog.WriteMasterFile(w)
	}
	for _, d := range m.Delegations {
		where := "outside every zone: documents only, its DNS records live elsewhere"
		if d.Zone != nil {
			where = "in zone " + d.Zone.Origin
		}
		fmt.Fprintf(w, "\nserver name %s (%s)\n", d.ServerName, where)
		fmt.Fprintf(w, "  /.well-known/matrix/server   %s\n", d.ServerDoc)
		fmt.Fprintf(w, "  /.well-known/matrix/client   %s\n", d.ClientDoc)
		if d.SupportDoc != nil {
			fmt.Fprintf(w, "  /.well-known/matrix/support  %s\n", d.SupportDoc)
		} else {
			fmt.Fprintf(w, "  /.well-known/matrix/support  404 (no [delegation.support])\n")
		}
	}
}
