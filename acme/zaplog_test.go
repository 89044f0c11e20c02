package acme

import (
	"bytes"
	"errors"
	"go/parser"
	"go/token"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestZapLogger shows exactly what certmagic's zap lines become in slog:
// levels remapped, keys renamed, durations in seconds, nothing after mute.
func TestZapLogger(t *testing.T) {
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	var muted atomic.Bool
	zl := newZapLogger(h, &muted, nil)

	zl.Named("obtain").Info("acquiring lock", zap.String("identifier", "chat.example.com"))
	zl.Named("obtain").Info("certificate obtained successfully", zap.String("identifier", "chat.example.com"), zap.String("issuer", "acme-v02.api.letsencrypt.org-directory"))
	zl.Named("obtain").Error("could not get certificate from issuer", zap.String("identifier", "chat.example.com"), zap.Error(errors.New("no such host")))
	zl.Named("obtain").Error("will retry", zap.Error(errors.New("boom")), zap.Int("attempt", 1), zap.Duration("retrying_in", time.Minute))
	zl.With(zap.Strings("subjects", []string{"a.example.com"})).Warn("certificate is in emergency renewal window; expiration imminent", zap.Duration("remaining", 90*time.Second))
	zl.Error("job failed", zap.String("subject", "b.example.com"))
	muted.Store(true)
	zl.Error("after stop")

	want := `level=DEBUG msg="acquiring lock" component=obtain name=chat.example.com
level=DEBUG msg="certificate obtained successfully" component=obtain issuer=acme-v02.api.letsencrypt.org-directory name=chat.example.com
level=WARN msg="could not get certificate from issuer" component=obtain error="no such host" name=chat.example.com
level=INFO msg="will retry" component=obtain attempt=1 error=boom retrying_in=60
level=WARN msg="certificate is in emergency renewal window; expiration imminent" remaining=90 subjects=[a.example.com]
level=ERROR msg="job failed" name=b.example.com
`
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}

	// A logger above debug is not even asked to format certmagic's chatter.
	buf.Reset()
	quiet := newZapLogger(slog.NewTextHandler(&buf, nil), new(atomic.Bool), nil)
	if quiet.Core().Enabled(zap.InfoLevel) {
		t.Error("info-level zap enabled for an info-level slog handler, though it maps to debug")
	}
	quiet.Info("acquiring lock")
	quiet.Error("will retry")
	if got := buf.String(); !strings.Contains(got, `msg="will retry"`) || strings.Contains(got, "acquiring lock") {
		t.Errorf("info handler wrote %q; want only the retry line", got)
	}
}

// TestImports holds the arrows of DESIGN.md in place: acme imports config
// and its PostgreSQL storage and nothing else of signpost's, and never the
// packages it is wired to.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ast, err := parser.ParseFile(fset, f, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range ast.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(path, "github.com/signpost-dev/signpost/") && path != "github.com/signpost-dev/signpost/config" && path != "github.com/signpost-dev/signpost/pgstore" {
				t.Errorf("%s imports %s; acme may import only config and pgstore of signpost's packages, and reaches the DNS and HTTP servers through TXTStore, TLSConfig and HTTPHandler", f, path)
			}
		}
	}
}
