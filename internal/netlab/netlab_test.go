package netlab_test

import (
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
)

func TestIntegrationLabConnects(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{RateBitsPerSec: 50e6, NoOffloads: true})
	for _, dst := range []netip.Addr{lab.B.Addr4, lab.B.Addr6} {
		var ln net.Listener
		if err := lab.B.Do(func() (err error) {
			ln, err = net.Listen("tcp", netip.AddrPortFrom(dst, 0).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := ln.Accept()
			if err == nil {
				io.Copy(io.Discard, c)
				c.Close()
			}
		}()
		var c net.Conn
		if err := lab.A.Do(func() (err error) {
			c, err = net.Dial("tcp", ln.Addr().String())
			return err
		}); err != nil {
			t.Fatalf("dial %s: %v", ln.Addr(), err)
		}
		if _, err := c.Write(make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		c.Close()
		ln.Close()
	}
}
