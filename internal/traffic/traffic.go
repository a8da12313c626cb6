// Package traffic is a built-in TCP bulk-transfer generator: a discard
// server and a sending client. The demo, the integration tests and the
// benchmarks use it so that no external program is needed.
package traffic

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Server accepts connections on a listener and reads each one to EOF,
// then closes it. Close stops it and waits for its goroutines.
type Server struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex // guards conns
	conn map[net.Conn]struct{}
}

// Serve starts a discard server on ln.
func Serve(ln net.Listener) *Server {
	s := &Server{ln: ln, conn: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s
}

// Addr is the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conn[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			io.Copy(io.Discard, c)
			c.Close()
			s.mu.Lock()
			delete(s.conn, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops accepting, closes open connections and waits.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conn {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// Result is what one transfer sent.
type Result struct {
	Bytes    int64
	Duration time.Duration
}

// Send writes to c until limit bytes are sent (0 = no limit) or ctx is done,
// then half-closes and waits for the server to close, so that the whole
// connection, FIN exchange included, is over when it returns. It closes c.
func Send(ctx context.Context, c net.Conn, limit int64) (Result, error) {
	defer c.Close()
	start := time.Now()
	buf := make([]byte, 128<<10)
	var sent int64
	stop := context.AfterFunc(ctx, func() { c.SetWriteDeadline(time.Now()) })
	defer stop()
	for limit == 0 || sent < limit {
		n := int64(len(buf))
		if limit > 0 {
			n = min(n, limit-sent)
		}
		w, err := c.Write(buf[:n])
		sent += int64(w)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return Result{sent, time.Since(start)}, err
		}
	}
	c.SetWriteDeadline(time.Time{})
	if tc, ok := c.(*net.TCPConn); ok {
		if err := tc.CloseWrite(); err != nil {
			return Result{sent, time.Since(start)}, err
		}
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, net.ErrClosed) {
		return Result{sent, time.Since(start)}, err
	}
	return Result{sent, time.Since(start)}, nil
}
