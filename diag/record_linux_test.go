//go:build linux

package diag

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/siftr-probe/siftr-probe/tcp"
)

var record = flag.Bool("record", false, "record kernel replies into testdata/ (TestRecordReplies; needs root)")

// TestRecordReplies records real inet_diag replies from the running kernel
// into testdata/, and tcp_info truncated to the lengths older kernels send.
// Run it with: go test -run TestRecordReplies -record ./diag/
func TestRecordReplies(t *testing.T) {
	if !*record {
		t.Skip("only with -record")
	}
	lab := newLab(t)
	ns := lab.A.NetNS
	c := openT(t, &Config{NetNS: ns})

	write := func(name string, b []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	exchange := func(name string, q tcp.Query) []byte {
		t.Helper()
		r, ok := makeRequest(q)
		if !ok {
			t.Fatalf("bad query %v", q)
		}
		d := rawExchange(t, ns, r)
		write(name, d)
		return d
	}

	ln4 := listen(t, ns, "tcp4", "127.0.0.1:0")
	p4 := dial(t, ns, ln4, "tcp4", "")
	// Move some data so the counters are not all zero.
	if _, err := p4.client.Write(make([]byte, 100000)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100000)
	if _, err := p4.server.Read(buf); err != nil {
		t.Fatal(err)
	}
	est := exchange("reply-established-v4.bin", queryOf(p4.client))

	ln6 := listen(t, ns, "tcp6", "[::1]:0")
	p6 := dial(t, ns, ln6, "tcp6", "")
	exchange("reply-established-v6.bin", queryOf(p6.server))

	lnd := listen(t, ns, "tcp", "[::]:0")
	pd := dial(t, ns, lnd, "tcp4", "127.0.0.1")
	exchange("reply-dualstack-v4mapped.bin", queryOf(pd.server))

	absent := queryOf(p4.client)
	absent.Local = netip.AddrPortFrom(absent.Local.Addr(), uint16(ln4.Addr().(*net.TCPAddr).Port))
	absent.Remote = netip.AddrPortFrom(absent.Remote.Addr(), 1)
	exchange("reply-listener.bin", absent)
	exchange("reply-enoent.bin", tcp.Query{
		Local:  netip.MustParseAddrPort("127.0.0.1:1"),
		Remote: netip.MustParseAddrPort("127.0.0.1:2"),
	})

	// CLOSE_WAIT: the peer closed, this end did not.
	pc := dial(t, ns, ln4, "tcp4", "")
	qs := queryOf(pc.server)
	pc.client.Close()
	if s := waitState(t, c, qs, tcp.StateCloseWait); s.State != tcp.StateCloseWait {
		t.Fatalf("state %d, want CLOSE_WAIT", s.State)
	}
	exchange("reply-closewait.bin", qs)
	// TIME_WAIT: the client closed first, then the server.
	qc := queryOf(pc.client)
	pc.server.Close()
	if s := waitState(t, c, qc, tcp.StateTimeWait); s.State != tcp.StateTimeWait {
		t.Fatalf("state %d, want TIME_WAIT", s.State)
	}
	exchange("reply-timewait.bin", qc)

	// tcp_info as this kernel sent it, and cut to older layouts.
	_, _, payload, _, _ := nextMessage(est)
	info := findAttr(t, payload[sizeofDiagMsg:], inetDiagInfo)
	write(fmt.Sprintf("tcpinfo-%d.bin", len(info)), info)
	for _, n := range []int{tcpInfoLenV1, tcpInfoLen4_19, tcpInfoLen5_4, tcpInfoLen6_2, tcpInfoLen6_7} {
		write(fmt.Sprintf("tcpinfo-%d.bin", n), info[:n])
	}
	t.Logf("tcp_info from this kernel: %d bytes", len(info))
}

// findAttr returns the value of the first attribute of type typ.
func findAttr(t testing.TB, attrs []byte, typ uint16) []byte {
	t.Helper()
	for len(attrs) >= sizeofNlattr {
		l := int(native.Uint16(attrs[0:2]))
		if l < sizeofNlattr || l > len(attrs) {
			break
		}
		if native.Uint16(attrs[2:4])&nlaTypeMask == typ {
			return attrs[sizeofNlattr:l]
		}
		if nlAlign(l) >= len(attrs) {
			break
		}
		attrs = attrs[nlAlign(l):]
	}
	t.Fatalf("no attribute %d", typ)
	return nil
}
