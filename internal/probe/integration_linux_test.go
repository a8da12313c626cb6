//go:build linux

package probe

import (
	"context"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
	"github.com/siftr-probe/siftr-probe/internal/siftrlog"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// linkLocal returns the link-local IPv6 address of host h's veth, waiting
// for the kernel to add it once the link is up.
func linkLocal(t *testing.T, h *netlab.Host) netip.Addr {
	t.Helper()
	var ll netip.Addr
	for deadline := time.Now().Add(5 * time.Second); !ll.IsValid() && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err := h.Do(func() error {
			ifi, err := net.InterfaceByName(h.Iface)
			if err != nil {
				return err
			}
			addrs, err := ifi.Addrs()
			if err != nil {
				return err
			}
			for _, a := range addrs {
				if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is6() && p.Addr().IsLinkLocalUnicast() {
					ll = p.Addr()
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if !ll.IsValid() {
		t.Fatalf("no link-local address on %s", h.Iface)
	}
	return ll
}

// TestIntegrationOpenDiagsNetNS looks up a link-local IPv6 connection in a
// namespace the test is not in. The query's zone is an interface name that
// exists only in that namespace: the client finds the socket only if it
// resolves the name there, that is, if it was opened with the namespace in
// its Config.
func TestIntegrationOpenDiagsNetNS(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{})
	if _, err := net.InterfaceByName(lab.A.Iface); err == nil {
		t.Skipf("interface %s also exists in the test's namespace", lab.A.Iface)
	}
	llB := linkLocal(t, &lab.B)
	var ln net.Listener
	if err := lab.B.Do(func() (err error) { ln, err = net.Listen("tcp6", "[::]:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	remote := netip.AddrPortFrom(llB.WithZone(lab.A.Iface), port)
	var c net.Conn
	// Link-local addresses become usable once duplicate address detection
	// is done, about a second after the link came up.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		err := lab.A.Do(func() (err error) {
			c, err = net.DialTimeout("tcp6", remote.String(), time.Second)
			return err
		})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial %s: %v", remote, err)
		}
	}
	defer c.Close()
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	q := tcp.Query{Local: netip.AddrPortFrom(local.Addr().WithZone(lab.A.Iface), local.Port()), Remote: remote}

	ds, err := openDiags(lab.A.NetNS, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, d := range ds {
			d.Close()
		}
	}()
	if len(ds) != 2 {
		t.Fatalf("openDiags opened %d clients, want 2", len(ds))
	}
	for i, d := range ds {
		out := make([]tcp.Snapshot, 1)
		if err := d.Lookup([]tcp.Query{q}, out); err != nil {
			t.Fatal(err)
		}
		if out[0].Status != tcp.Found {
			t.Errorf("client %d: %v -> %v: status %v, want found (zone resolved outside the namespace?)", i, q.Local, q.Remote, out[0].Status)
		}
	}
}

// startRun makes a pipeline of cfg and runs it until the returned stop is
// called, which ends the run and returns its summary. It returns once
// capture has started.
func startRun(t *testing.T, cfg Config) (stop func() *Summary) {
	t.Helper()
	started := make(chan struct{})
	cfg.Started = func() { close(started) }
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan *Summary, 1)
	go func() {
		s, err := p.Run(ctx)
		if err != nil {
			t.Error(err)
		}
		done <- s
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the probe did not start")
	}
	return func() *Summary {
		cancel()
		s := <-done
		if s == nil {
			t.Fatal("no summary")
		}
		return s
	}
}

// parseLog reads the SIFTR log at path with the strict reader.
func parseLog(t *testing.T, path string) *siftrlog.Log {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := siftrlog.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
