package httpserver_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/signpost-dev/signpost/config"
	"github.com/signpost-dev/signpost/httpserver"
)

// A server on the plain listener, as behind a proxy (scenario S3).
func Example() {
	m, err := config.Parse("example.toml", []byte(`
[[delegation]]
server_name = "example.com"
server      = "matrix.example.com:443"
client      = "https://matrix.example.com"
`), config.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	s := httpserver.New(httpserver.Options{})
	s.SetModel(m)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	done := make(chan error, 1)
	go func() { done <- s.ServePlain(l) }()

	req, _ := http.NewRequest("GET", "http://"+l.Addr().String()+"/.well-known/matrix/server", nil)
	req.Host = "example.com" // as the proxy in front sends it
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.Status, resp.Header.Get("Content-Type"), resp.Header.Get("Access-Control-Allow-Origin"))
	fmt.Println(string(body))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.Shutdown(ctx)
	fmt.Println(<-done)
	// Output:
	// 200 OK application/json *
	// {"m.server":"matrix.example.com:443"}
	// <nil>
}
