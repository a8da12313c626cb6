package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/siftr-probe/siftr-probe/internal/buildinfo"
)

// Config configures a Server.
type Config struct {
	// Read returns the current stats; it is called once per scrape, possibly
	// concurrently, and is required.
	Read func() Stats
	// Health is called on every /healthz request: nil means healthy (200
	// "ok"), an error means unhealthy (503 and the error's text). A nil
	// Health is always healthy.
	Health func() error
	// Info is reported as siftr_build_info.
	Info buildinfo.Info
}

// NewRegistry returns a private registry holding c and the Go runtime and
// process collectors.
func NewRegistry(c prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		c,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler returns the HTTP handler for /metrics and /healthz.
func Handler(cfg *Config) http.Handler {
	reg := NewRegistry(NewCollector(cfg.Read, cfg.Info))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	health := cfg.Health
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if health != nil {
			if err := health(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, err.Error()+"\n")
				return
			}
		}
		io.WriteString(w, "ok\n")
	})
	return mux
}

// Server serves Handler on a listener, on a goroutine of its own.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{}
	err  error // Serve's error; written before done is closed

	closeOnce sync.Once
	closeErr  error
}

// Serve starts serving cfg's endpoints on ln and takes ownership of ln.
// Close stops it.
func Serve(ln net.Listener, cfg *Config) *Server {
	s := &Server{
		ln: ln,
		srv: &http.Server{
			Handler:           Handler(cfg),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	return s
}

// Addr is the address the server listens on (useful with port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops accepting connections, lets requests in progress finish until
// ctx is done, then closes every connection and waits for the serving
// goroutine. It returns the error that stopped serving early, if any, or
// ctx's error if requests had to be cut off. It is idempotent.
func (s *Server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		err := s.srv.Shutdown(ctx)
		if err != nil {
			s.srv.Close()
		}
		<-s.done
		s.closeErr = errors.Join(s.err, err)
	})
	return s.closeErr
}
