package dnsserver

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports holds the arrows of DESIGN.md in place: dnsserver may use
// config, and no other signpost package.
func TestImports(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if rest, ok := strings.CutPrefix(pkg, "github.com/signpost-dev/signpost/"); ok && rest != "config" && rest != "dnsserver" {
			t.Errorf("dnsserver depends on %s; it may import config only (servers do not know about each other)", pkg)
		}
	}
}
