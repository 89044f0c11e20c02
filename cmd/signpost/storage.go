package main

import (
	"github.com/signpost-dev/signpost/acme"
	"github.com/signpost-dev/signpost/config"
)

// storageProblem checks on this machine that acme.storage can be written,
// when anything will be: certificates and the ACME account in mode "acme",
// the DNS serials when there are secondaries. config cannot check it (it
// does no I/O), so the problem is placed here, at the key's line.
func storageProblem(m *config.Model) *config.Problem {
	if m.ACME.Mode != config.ModeACME && len(m.SecondaryServers) == 0 {
		return nil
	}
	if err := acme.CheckStorage(m.ACME.Storage); err != nil {
		return m.Problemf("acme.storage", "%v", err)
	}
	return nil
}
