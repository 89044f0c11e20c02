//go:build linux

package main

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestLoadCounts runs udpload against a server that answers two names and
// never a third: every query it sends is answered or counted lost, the
// lost are the third name's, and the answered the other two's.
func TestLoadCounts(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var m dns.Msg
			if m.Unpack(buf[:n]) != nil || m.Question[0].Name == "drop.example." {
				continue
			}
			m.Response = true
			b, _ := m.Pack()
			_, _ = pc.WriteTo(b, from)
		}
	}()

	file := filepath.Join(t.TempDir(), "queries.txt")
	if err := os.WriteFile(file, []byte("a.example A\n; a comment\ndrop.example A\nb.example AAAA\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := options{
		server:  netip.MustParseAddrPort(pc.LocalAddr().String()),
		file:    file,
		secs:    0.5,
		window:  16,
		batch:   4,
		do:      true,
		timeout: 50 * time.Millisecond,
	}
	queries, err := readQueries(o)
	if err != nil {
		t.Fatal(err)
	}
	if len(queries) != 3 {
		t.Fatalf("%d queries read, want 3", len(queries))
	}
	r, err := load(o, queries)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sent %d completed %d lost %d", r.sent, r.completed, r.lost)
	if r.sent != r.completed+r.lost {
		t.Errorf("sent %d, completed %d + lost %d", r.sent, r.completed, r.lost)
	}
	// One query in three is lost. Those still outstanding at the end, at
	// most a window of them, are in neither count; each dropped one there
	// would have made lost one more, so completed may exceed twice lost by
	// up to two windows, and an answer on its way at the end makes it one less.
	if r.lost == 0 || r.completed < 2*r.lost-o.window-2 || r.completed > 2*(r.lost+o.window) {
		t.Errorf("completed %d, lost %d: want about two answered for each lost", r.completed, r.lost)
	}
}

func TestReadQueriesErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ text, want string }{
		{"a.example\n", ":1: want a name and a type"},
		{"a.example A\nb.example NOPE\n", ":2: want a name and a type"},
		{"; nothing\n", ": no queries"},
	} {
		file := filepath.Join(dir, "q.txt")
		if err := os.WriteFile(file, []byte(c.text), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := readQueries(options{file: file})
		if err == nil || err.Error() != file+c.want {
			t.Errorf("%q: error %v, want %s%s", c.text, err, file, c.want)
		}
	}
}
