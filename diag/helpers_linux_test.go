//go:build linux

package diag

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
	"github.com/siftr-probe/siftr-probe/internal/netns"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// listen opens a TCP listener inside ns (network "tcp4", "tcp6" or "tcp").
func listen(t testing.TB, ns, network, addr string) *net.TCPListener {
	t.Helper()
	var ln net.Listener
	err := netns.Do(ns, func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s %s in %s: %v", network, addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// connPair is one TCP connection: the dialing and the accepted socket.
type connPair struct {
	client, server *net.TCPConn
}

// dial connects from namespace ns to ln's port on raddr (ln's own address
// when raddr is empty) and accepts the connection.
func dial(t testing.TB, ns string, ln *net.TCPListener, network, raddr string) connPair {
	t.Helper()
	port := ln.Addr().(*net.TCPAddr).Port
	if raddr == "" {
		raddr = ln.Addr().(*net.TCPAddr).IP.String()
	}
	var c net.Conn
	err := netns.Do(ns, func() error {
		var err error
		c, err = net.DialTimeout(network, net.JoinHostPort(raddr, fmt.Sprint(port)), 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s %s:%d: %v", network, raddr, port, err)
	}
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	s, err := ln.AcceptTCP()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	p := connPair{client: c.(*net.TCPConn), server: s}
	t.Cleanup(func() { p.client.Close(); p.server.Close() })
	return p
}

// queryOf is the query for conn's own socket.
func queryOf(c net.Conn) tcp.Query {
	return tcp.Query{
		Local:  c.LocalAddr().(*net.TCPAddr).AddrPort(),
		Remote: c.RemoteAddr().(*net.TCPAddr).AddrPort(),
	}
}

func openT(t testing.TB, cfg *Config) *Client {
	t.Helper()
	c, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

func lookup1(t testing.TB, c *Client, q tcp.Query) tcp.Snapshot {
	t.Helper()
	var out [1]tcp.Snapshot
	if err := c.Lookup([]tcp.Query{q}, out[:]); err != nil {
		t.Fatalf("Lookup(%v): %v", q, err)
	}
	return out[0]
}

// rawExchange sends one request, built from r, on a fresh sock_diag socket
// in ns and returns the reply datagram as the kernel sent it.
func rawExchange(t testing.TB, ns string, r request) []byte {
	t.Helper()
	var out []byte
	err := netns.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_INET_DIAG)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
		var b [requestLen]byte
		putRequest(b[:], 42, &r)
		if _, err := unix.Write(fd, b[:]); err != nil {
			return err
		}
		buf := make([]byte, 8192)
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			return err
		}
		out = buf[:n]
		return nil
	})
	if err != nil {
		t.Fatalf("raw sock_diag exchange: %v", err)
	}
	return out
}

// mappedRequest asks for q as AF_INET6 with v4-mapped addresses.
func mappedRequest(q tcp.Query) request {
	r := request{family: afInet6, lport: q.Local.Port(), rport: q.Remote.Port()}
	r.local = netip.AddrFrom16(q.Local.Addr().Unmap().As16()).As16()
	r.remote = netip.AddrFrom16(q.Remote.Addr().Unmap().As16()).As16()
	return r
}

// waitState polls until q's socket is in state (or the deadline passes).
func waitState(t testing.TB, c *Client, q tcp.Query, state uint8) tcp.Snapshot {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := lookup1(t, c, q)
		if s.State == state || time.Now().After(deadline) {
			return s
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// newLab builds a lab and returns it; it skips without root.
func newLab(t testing.TB) *netlab.Lab {
	t.Helper()
	return labtest.NewT(t, netlab.Config{})
}

func netlabRoot(t testing.TB) { t.Helper(); labtest.RequireRoot(t) }
