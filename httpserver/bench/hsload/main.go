// Command hsload measures full TLS handshakes per second: every connection
// is new and resumes nothing (the client asks for session tickets, as real
// peers do, but forgets them), which is what a federation peer that has not
// talked to us lately costs. wrk with
// "Connection: close" resumes sessions and so measures something else.
//
// It connects, completes the handshake, closes and starts over, from
// several goroutines, and prints "handshakes/s: N".
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("hsload", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8443", "server address")
	sni := fs.String("sni", "chat.example.com", "TLS server name")
	namesFile := fs.String("names", "", "file of TLS server names, one a line, taken in turn by each new connection instead of -sni (-client lean only)")
	conc := fs.Int("c", 8, "concurrent connections")
	dur := fs.Duration("d", 10*time.Second, "duration")
	curves := fs.String("curves", "X25519", "key exchange groups offered, comma-separated (X25519, P256, X25519MLKEM768)")
	version := fs.String("tls", "1.3", "TLS version: 1.2 or 1.3")
	get := fs.String("get", "", "after the handshake, GET this path over HTTP/1.1 and read the answer")
	alpn := fs.String("alpn", "", "ALPN protocols offered, comma-separated; none if empty (as openssl s_time)")
	client := fs.String("client", "lean", `"lean": a minimal TLS 1.3 client that checks nothing and so leaves the CPU to the server; "go": crypto/tls, which checks the server's signature and costs more than the server`)
	tickets := fs.Bool("tickets", true, "say the client takes session tickets, so the server issues them (the client never uses them): a fresh peer that would resume next time")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := &tls.Config{
		ServerName: *sni,
		// The certificate is the benchmark's own; the signature over the
		// handshake is still checked, as by any client.
		InsecureSkipVerify:     true,
		SessionTicketsDisabled: !*tickets,
		ClientSessionCache:     forgetful{},
	}
	if *alpn != "" {
		cfg.NextProtos = strings.Split(*alpn, ",")
	}
	names := []string{*sni}
	if *namesFile != "" {
		data, err := os.ReadFile(*namesFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hsload:", err)
			return 1
		}
		names = strings.Fields(string(data))
		if len(names) == 0 || *client != "lean" {
			fmt.Fprintln(os.Stderr, "hsload: -names needs a file with names in it, and -client lean")
			return 2
		}
	}
	// One lean client a name, since the name is in the ClientHello it
	// sends; connections take them in turn.
	var leans []*leanClient
	var next atomic.Uint64
	switch *client {
	case "lean":
		if *get != "" || *version != "1.3" || *curves != "X25519" {
			fmt.Fprintln(os.Stderr, "hsload: -get, -tls and -curves need -client go")
			return 2
		}
		var protos []string
		if *alpn != "" {
			protos = strings.Split(*alpn, ",")
		}
		for _, n := range names {
			l, err := newLeanClient(n, protos, *tickets)
			if err != nil {
				fmt.Fprintln(os.Stderr, "hsload:", err)
				return 1
			}
			leans = append(leans, l)
		}
	case "go":
	default:
		fmt.Fprintf(os.Stderr, "hsload: unknown client %q\n", *client)
		return 2
	}
	var request []byte
	if *get != "" {
		cfg.NextProtos = []string{"http/1.1"}
		request = []byte("GET " + *get + " HTTP/1.1\r\nHost: " + *sni + "\r\nConnection: close\r\n\r\n")
	}
	for c := range strings.SplitSeq(*curves, ",") {
		switch c {
		case "X25519":
			cfg.CurvePreferences = append(cfg.CurvePreferences, tls.X25519)
		case "P256":
			cfg.CurvePreferences = append(cfg.CurvePreferences, tls.CurveP256)
		case "X25519MLKEM768":
			cfg.CurvePreferences = append(cfg.CurvePreferences, tls.X25519MLKEM768)
		default:
			fmt.Fprintf(os.Stderr, "hsload: unknown curve %q\n", c)
			return 2
		}
	}
	switch *version {
	case "1.2":
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	case "1.3":
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	default:
		fmt.Fprintf(os.Stderr, "hsload: unknown TLS version %q\n", *version)
		return 2
	}

	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	// Errors caused by the end of the run are not failures; the socket
	// deadline from ctx can fire a moment before ctx.Err reports it.
	over := func() bool { return ctx.Err() != nil || time.Until(deadline(ctx)) <= 0 }
	var done, failed, resumed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range *conc {
		wg.Go(func() {
			var d net.Dialer
			for ctx.Err() == nil {
				c, err := d.DialContext(ctx, "tcp", *addr)
				if err != nil {
					if !over() {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
					continue
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if leans != nil {
					err = leans[next.Add(1)%uint64(len(leans))].handshake(c)
				} else {
					tc := tls.Client(c, cfg)
					err = tc.HandshakeContext(ctx)
					if err == nil && request != nil {
						err = exchange(tc, request)
					} else if err == nil && tc.ConnectionState().DidResume {
						resumed.Add(1)
					}
				}
				if err == nil && request == nil {
					// A clean end: the server sees the end of the stream
					// where a request would come, and closes.
					c.(*net.TCPConn).CloseWrite()
					_, err = io.Copy(io.Discard, c)
				}
				switch {
				case err == nil:
					done.Add(1)
				case !over():
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	fmt.Printf("handshakes: %d in %.2fs, failed: %d, resumed: %d\n", done.Load(), elapsed, failed.Load(), resumed.Load())
	fmt.Printf("handshakes/s: %.0f\n", float64(done.Load())/elapsed)
	if err, ok := firstErr.Load().(error); ok {
		fmt.Fprintln(os.Stderr, "hsload: first error:", err)
	}
	if done.Load() == 0 || resumed.Load() > 0 {
		return 1
	}
	return 0
}

// exchange sends request and reads until the server closes, and fails
// unless the answer is a 200.
func exchange(c *tls.Conn, request []byte) error {
	if _, err := c.Write(request); err != nil {
		return err
	}
	resp, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("answer %.40q", resp)
	}
	return nil
}

func deadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// forgetful is a session cache that keeps nothing: the client asks for
// tickets and so costs the server what a real peer costs, but never resumes.
type forgetful struct{}

func (forgetful) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (forgetful) Put(string, *tls.ClientSessionState)        {}
