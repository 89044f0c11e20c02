package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports holds the architecture in place: every package depends on
// config and nothing else of ours, so the servers cannot grow into each
// other (DESIGN.md, "Arrows point toward config").
func TestImports(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go command not on PATH: cannot list dependencies")
	}
	const mod = "github.com/signpost-dev/signpost/"
	rules := map[string]struct {
		allowed []string
		why     string
	}{
		"config":     {nil, "config is the model; it depends on nothing of ours"},
		"dnsserver":  {[]string{"config"}, "servers answer from the model and never know about each other"},
		"httpserver": {[]string{"config"}, "httpserver gets certificates as a *tls.Config and never imports acme or certmagic's users"},
		"acme":       {[]string{"config", "pgstore"}, "acme declares the TXT store it needs; main hands it dnsserver"},
		"pgstore":    {nil, "pgstore is a certmagic storage; it knows nothing of signpost's model"},
		"probe":      {[]string{"config"}, "probe looks at the world from outside, like a remote server"},
		"syncwatch":  {[]string{"config"}, "the watch reads serials through a function main passes; it never imports the DNS server"},
		"monitor":    {nil, "monitor serves whatever collectors main registers; it knows none of them"},
	}
	for pkg, rule := range rules {
		out, err := exec.Command("go", "list", "-deps", mod+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s%s: %v\n%s", mod, pkg, err, out)
		}
		if !strings.Contains(string(out), mod+"config") && pkg != "config" && pkg != "probe" && pkg != "pgstore" && pkg != "monitor" {
			t.Errorf("%s does not depend on config; go list printed:\n%s", pkg, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			ours, ok := strings.CutPrefix(dep, mod)
			if !ok || ours == pkg {
				continue
			}
			allowed := false
			for _, a := range rule.allowed {
				allowed = allowed || ours == a
			}
			if !allowed {
				t.Errorf("%s imports %s: not allowed, because %s", pkg, ours, rule.why)
			}
		}
		if pkg == "httpserver" && strings.Contains(string(out), "github.com/caddyserver/certmagic") {
			t.Errorf("httpserver imports certmagic: the ACME HTTP-01 hook comes in as func(http.Handler) http.Handler")
		}
	}
}
