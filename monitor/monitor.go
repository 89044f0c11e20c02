// Package monitor serves what watches a running signpost: /metrics for
// Prometheus, /healthz and /readyz for supervisors and load balancers, and
// /status, a JSON summary that `signpost status` prints. Everything in
// /status is derived from the same metrics Prometheus scrapes, so the two
// never disagree.
//
// monitor imports nothing of signpost's: main hands it a Gatherer and a
// readiness check.
package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configure a Server. Gatherer is required.
type Options struct {
	// Logger receives errors serving /metrics. If nil, logs are
	// discarded.
	Logger *slog.Logger
	// Gatherer is the registry every collector of the process is in.
	Gatherer prometheus.Gatherer
	// Ready returns what keeps the process from serving as it should (a
	// name without a valid certificate, say), one sentence each; none
	// means ready. If nil, the process is ready once it serves.
	Ready func() []string
	// Now is the clock for /status; time.Now if nil.
	Now func() time.Time
}

// Server is the HTTP server of the metrics listener.
type Server struct {
	o    Options
	http *http.Server
}

// New returns a Server; it serves once Serve is called.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{o: o}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(o.Logger.Handler(), slog.LevelError),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /status", s.status)
	// The timeouts bound what a slow client costs; a scrape of a few
	// hundred zones is written in milliseconds.
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
	}
	return s
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	var problems []string
	if s.o.Ready != nil {
		problems = s.o.Ready()
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, strings.Join(problems, "\n"))
		return
	}
	fmt.Fprintln(w, "ready")
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	mfs, err := s.o.Gatherer.Gather()
	if err != nil && len(mfs) == 0 {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	st := StatusOf(mfs, s.o.Now())
	if s.o.Ready != nil {
		st.NotReady = append(st.NotReady, s.o.Ready()...)
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(st) // an error means the client left
}

// Serve answers on l until Shutdown, then returns nil.
func (s *Server) Serve(l net.Listener) error {
	if err := s.http.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("monitor: serve %s: %w", l.Addr(), err)
	}
	return nil
}

// Shutdown stops Serve and waits for requests in flight until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.http.Shutdown(ctx); err != nil {
		return fmt.Errorf("monitor: shutdown: %w", err)
	}
	return nil
}
