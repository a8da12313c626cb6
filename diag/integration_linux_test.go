//go:build linux

package diag

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/internal/netns"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// checkFound checks the snapshot of a live, established connection.
func checkFound(t *testing.T, what string, s tcp.Snapshot, family uint8) {
	t.Helper()
	if s.Status != tcp.Found || s.State != tcp.StateEstablished || s.Family != family {
		t.Fatalf("%s: status %v state %d family %d; want found, 1, %d", what, s.Status, s.State, s.Family, family)
	}
	if s.Info.SndMSS == 0 || s.Info.RTT == 0 || s.CongName() == "" || s.Cookie == 0 || s.Inode == 0 {
		t.Errorf("%s: mss %d rtt %d cong %q cookie %d inode %d: want all non-zero",
			what, s.Info.SndMSS, s.Info.RTT, s.CongName(), s.Cookie, s.Inode)
	}
	if s.SndBuf == 0 || s.RcvBuf == 0 || s.InfoLen < tcpInfoLen6_7 || s.Time == 0 {
		t.Errorf("%s: sndbuf %d rcvbuf %d infolen %d time %d", what, s.SndBuf, s.RcvBuf, s.InfoLen, s.Time)
	}
	if s.Info.State != tcp.StateEstablished || s.Info.Options&tcp.OptWScale == 0 {
		t.Errorf("%s: tcp_info state %d options %#x", what, s.Info.State, s.Info.Options)
	}
}

func TestIntegrationFound(t *testing.T) {
	lab := newLab(t)
	a, b := lab.A.NetNS, lab.B.NetNS
	ca := openT(t, &Config{NetNS: a})
	cb := openT(t, &Config{NetNS: b})
	tests := []struct {
		name            string
		network, listen string
		serverNS        string
		serverDiag      *Client
		family          uint8
	}{
		{"loopback/ipv4", "tcp4", "127.0.0.1:0", a, ca, afInet},
		{"loopback/ipv6", "tcp6", "[::1]:0", a, ca, afInet6},
		{"veth/ipv4", "tcp4", lab.B.Addr4.String() + ":0", b, cb, afInet},
		{"veth/ipv6", "tcp6", "[" + lab.B.Addr6.String() + "]:0", b, cb, afInet6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln := listen(t, tt.serverNS, tt.network, tt.listen)
			p := dial(t, a, ln, tt.network, "")
			if _, err := p.client.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			cs := lookup1(t, ca, queryOf(p.client))
			checkFound(t, "client end", cs, tt.family)
			ss := lookup1(t, tt.serverDiag, queryOf(p.server))
			checkFound(t, "server end", ss, tt.family)
			if cs.Cookie == ss.Cookie {
				t.Errorf("both ends have cookie %d", cs.Cookie)
			}
			if ss.RQueue != 5 {
				t.Errorf("server RQueue = %d, want 5 unread bytes", ss.RQueue)
			}
			if again := lookup1(t, ca, queryOf(p.client)); again.Cookie != cs.Cookie || again.Inode != cs.Inode {
				t.Errorf("cookie/inode changed between lookups: %d/%d then %d/%d", cs.Cookie, cs.Inode, again.Cookie, again.Inode)
			}
		})
	}
}

func TestIntegrationAbsent(t *testing.T) {
	lab := newLab(t)
	ns := lab.A.NetNS
	c := openT(t, &Config{NetNS: ns})
	ln := listen(t, ns, "tcp4", "127.0.0.1:0")
	p := dial(t, ns, ln, "tcp4", "")

	port := ln.Addr().(*net.TCPAddr).AddrPort()
	onListener := tcp.Query{Local: port, Remote: netip.MustParseAddrPort("127.0.0.1:1")}
	if s := lookup1(t, c, onListener); s != (tcp.Snapshot{Time: s.Time, Status: tcp.NoSocket}) {
		t.Errorf("absent 4-tuple on a listening port: %+v, want only Status NoSocket", s)
	}
	if got := c.Stats().ListenerReplies; got != 1 {
		t.Errorf("ListenerReplies = %d, want 1", got)
	}
	noListener := tcp.Query{Local: netip.MustParseAddrPort("127.0.0.1:1"), Remote: queryOf(p.client).Local}
	if s := lookup1(t, c, noListener); s.Status != tcp.NoSocket {
		t.Errorf("absent 4-tuple without listener: %v", s.Status)
	}
	// The right ports, the wrong peer address.
	q := queryOf(p.client)
	q.Remote = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), q.Remote.Port())
	if s := lookup1(t, c, q); s.Status != tcp.NoSocket {
		t.Errorf("wrong peer address: %v", s.Status)
	}
	st := c.Stats()
	if st.NoSocket != 3 || st.Errors != 0 || st.Lookups != 3 || st.Batches != 3 {
		t.Errorf("stats %+v", st)
	}
}

// A server listening on [::] owns IPv4 connections through AF_INET6 sockets
// with v4-mapped addresses; an IPv4 query finds them.
func TestIntegrationDualStack(t *testing.T) {
	lab := newLab(t)
	a, b := lab.A.NetNS, lab.B.NetNS
	for _, tt := range []struct {
		name, raddr string
		serverNS    string
	}{
		{"loopback", "127.0.0.1", a},
		{"veth", lab.B.Addr4.String(), b},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := openT(t, &Config{NetNS: tt.serverNS})
			ln := listen(t, tt.serverNS, "tcp", "[::]:0")
			p := dial(t, a, ln, "tcp4", tt.raddr)
			mapped := queryOf(p.server)
			if !mapped.Local.Addr().Is4In6() {
				t.Fatalf("server socket address %v is not v4-mapped", mapped.Local)
			}
			plain := tcp.Query{
				Local:  netip.AddrPortFrom(mapped.Local.Addr().Unmap(), mapped.Local.Port()),
				Remote: netip.AddrPortFrom(mapped.Remote.Addr().Unmap(), mapped.Remote.Port()),
			}
			s1 := lookup1(t, c, plain)
			checkFound(t, "IPv4 query", s1, afInet6)
			s2 := lookup1(t, c, mapped)
			checkFound(t, "v4-mapped query", s2, afInet6)
			if s1.Cookie != s2.Cookie {
				t.Errorf("cookies differ: %d, %d", s1.Cookie, s2.Cookie)
			}
			// The same asked by hand as AF_INET6 with v4-mapped
			// addresses finds the same socket.
			d := rawExchange(t, tt.serverNS, mappedRequest(plain))
			typ, _, payload, _, _ := nextMessage(d)
			var s3 tcp.Snapshot
			parseReply(typ, payload, &s3)
			if s3.Status != tcp.Found || s3.Cookie != s1.Cookie {
				t.Errorf("AF_INET6 v4-mapped request: %v cookie %d", s3.Status, s3.Cookie)
			}
		})
	}
}

// timeWait makes a connection from A to B whose A end is in TIME_WAIT.
func timeWait(t *testing.T, c *Client, a string, ln *net.TCPListener) tcp.Query {
	t.Helper()
	p := dial(t, a, ln, "tcp4", "")
	q := queryOf(p.client)
	p.client.Close()
	if _, err := p.server.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("server read: %v, want EOF", err)
	}
	p.server.Close()
	if s := waitState(t, c, q, tcp.StateTimeWait); s.State != tcp.StateTimeWait {
		t.Fatalf("state %d, want TIME_WAIT", s.State)
	}
	return q
}

func TestIntegrationTimeWait(t *testing.T) {
	lab := newLab(t)
	c := openT(t, &Config{NetNS: lab.A.NetNS})
	ln := listen(t, lab.B.NetNS, "tcp4", lab.B.Addr4.String()+":0")
	q := timeWait(t, c, lab.A.NetNS, ln)
	s := lookup1(t, c, q)
	if s.Status != tcp.NotEstablished || s.State != tcp.StateTimeWait || s.InfoLen != 0 || s.Cookie == 0 {
		t.Errorf("TIME_WAIT socket: status %v state %d infolen %d cookie %d", s.Status, s.State, s.InfoLen, s.Cookie)
	}
}

// A batch of 200 queries of every kind, in several batch sizes.
func TestIntegrationBatchMixed(t *testing.T) {
	lab := newLab(t)
	a, b := lab.A.NetNS, lab.B.NetNS
	type item struct {
		q      tcp.Query
		status tcp.Status
		family uint8
	}
	var kinds []item
	cc := openT(t, &Config{NetNS: a})

	ln4 := listen(t, a, "tcp4", "127.0.0.1:0")
	ln6 := listen(t, a, "tcp6", "[::1]:0")
	lnd := listen(t, a, "tcp", "[::]:0")
	lnv := listen(t, b, "tcp4", lab.B.Addr4.String()+":0")
	lnv6 := listen(t, b, "tcp6", "["+lab.B.Addr6.String()+"]:0")
	for range 3 {
		p := dial(t, a, ln4, "tcp4", "")
		kinds = append(kinds, item{queryOf(p.client), tcp.Found, afInet}, item{queryOf(p.server), tcp.Found, afInet})
		p = dial(t, a, ln6, "tcp6", "")
		kinds = append(kinds, item{queryOf(p.client), tcp.Found, afInet6}, item{queryOf(p.server), tcp.Found, afInet6})
		p = dial(t, a, lnd, "tcp4", "127.0.0.1")
		srv := queryOf(p.server)
		srv.Local = netip.AddrPortFrom(srv.Local.Addr().Unmap(), srv.Local.Port())
		srv.Remote = netip.AddrPortFrom(srv.Remote.Addr().Unmap(), srv.Remote.Port())
		kinds = append(kinds, item{queryOf(p.client), tcp.Found, afInet}, item{srv, tcp.Found, afInet6})
		p = dial(t, a, lnv, "tcp4", "")
		kinds = append(kinds, item{queryOf(p.client), tcp.Found, afInet})
		p = dial(t, a, lnv6, "tcp6", "")
		kinds = append(kinds, item{queryOf(p.client), tcp.Found, afInet6})
		kinds = append(kinds, item{timeWait(t, cc, a, lnv), tcp.NotEstablished, afInet})
	}
	lport := ln4.Addr().(*net.TCPAddr).AddrPort()
	kinds = append(kinds,
		item{tcp.Query{Local: lport, Remote: netip.MustParseAddrPort("127.0.0.1:7")}, tcp.NoSocket, 0},
		item{tcp.Query{Local: netip.MustParseAddrPort("[::1]:1"), Remote: netip.MustParseAddrPort("[::1]:2")}, tcp.NoSocket, 0},
		item{tcp.Query{Local: netip.MustParseAddrPort("127.0.0.1:1"), Remote: netip.MustParseAddrPort("[::1]:2")}, tcp.NoSocket, 0}, // invalid
		// A socket of namespace B is not visible from A.
		item{tcp.Query{Local: lnv.Addr().(*net.TCPAddr).AddrPort(), Remote: netip.MustParseAddrPort("10.77.0.1:9")}, tcp.NoSocket, 0},
	)

	qs := make([]tcp.Query, 200)
	want := make([]item, 200)
	for i := range qs {
		want[i] = kinds[(i*7)%len(kinds)]
		qs[i] = want[i].q
	}
	for _, batch := range []int{0, 1, 7, 64, 200, 1000} {
		t.Run(fmt.Sprintf("batch=%d", batch), func(t *testing.T) {
			c := openT(t, &Config{NetNS: a, BatchSize: batch})
			out := make([]tcp.Snapshot, len(qs))
			for round := range 2 {
				if err := c.Lookup(qs, out); err != nil {
					t.Fatal(err)
				}
				var nFound, nNot, nNo uint64
				for i, s := range out {
					if s.Status != want[i].status || (s.Status != tcp.NoSocket && s.Family != want[i].family) {
						t.Errorf("round %d query %d %v: status %v family %d, want %v %d",
							round, i, qs[i], s.Status, s.Family, want[i].status, want[i].family)
					}
					if s.Time == 0 {
						t.Errorf("query %d: no time", i)
					}
					switch s.Status {
					case tcp.Found:
						nFound++
					case tcp.NotEstablished:
						nNot++
					default:
						nNo++
					}
				}
				st := c.Stats()
				r := uint64(round + 1)
				if st.Lookups != 200*r || st.Found != nFound*r || st.NotEstablished != nNot*r || st.NoSocket != nNo*r {
					t.Errorf("stats %+v", st)
				}
			}
			// The cookie of each socket is the same in every batch.
			seen := map[tcp.Query]uint64{}
			for i, s := range out {
				if s.Status == tcp.NoSocket {
					continue
				}
				if ck, ok := seen[qs[i]]; ok && ck != s.Cookie {
					t.Errorf("query %v: cookies %d and %d", qs[i], ck, s.Cookie)
				}
				seen[qs[i]] = s.Cookie
			}
		})
	}
}

// Replies lost to a full receive buffer are asked again.
func TestIntegrationOverrun(t *testing.T) {
	lab := newLab(t)
	ns := lab.A.NetNS
	c := openT(t, &Config{NetNS: ns, BatchSize: 128})
	var serr error
	if err := c.conn.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8192)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	ln := listen(t, ns, "tcp4", "127.0.0.1:0")
	var qs []tcp.Query
	for range 16 {
		p := dial(t, ns, ln, "tcp4", "")
		qs = append(qs, queryOf(p.client), queryOf(p.server))
	}
	for len(qs) < 128 {
		qs = append(qs, qs[:min(len(qs), 128-len(qs))]...)
	}
	out := make([]tcp.Snapshot, len(qs))
	if err := c.Lookup(qs, out); err != nil {
		t.Fatal(err)
	}
	for i, s := range out {
		if s.Status != tcp.Found {
			t.Errorf("query %d: %v", i, s.Status)
		}
	}
	st := c.Stats()
	if st.Overruns == 0 || st.Resent == 0 || st.Batches < 2 {
		t.Errorf("stats %+v: want overruns and resent queries", st)
	}
	t.Logf("stats %+v", st)
}

func TestIntegrationNetNS(t *testing.T) {
	lab := newLab(t)
	ns := lab.A.NetNS
	ln := listen(t, ns, "tcp4", "127.0.0.1:0")
	p := dial(t, ns, ln, "tcp4", "")
	q := queryOf(p.client)

	viaConfig := openT(t, &Config{NetNS: ns})
	checkFound(t, "Config.NetNS", lookup1(t, viaConfig, q), afInet)

	var inside *Client
	if err := netns.Do(ns, func() error {
		var err error
		inside, err = Open(nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer inside.Close()
	checkFound(t, "opened inside netns.Do", lookup1(t, inside, q), afInet)

	host := openT(t, nil)
	if s := lookup1(t, host, q); s.Status != tcp.NoSocket {
		t.Errorf("host namespace sees the lab's socket: %v", s.Status)
	}

	if _, err := Open(&Config{NetNS: "/nonexistent/ns"}); err == nil {
		t.Error("Open with a missing namespace succeeded")
	}
}

func TestIntegrationClose(t *testing.T) {
	netlabRoot(t)
	c, err := Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]tcp.Snapshot, 1)
	q := tcp.Query{Local: netip.MustParseAddrPort("127.0.0.1:1"), Remote: netip.MustParseAddrPort("127.0.0.1:2")}
	if err := c.Lookup([]tcp.Query{q, q}, out); err == nil {
		t.Error("Lookup with a short out succeeded")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := c.Lookup([]tcp.Query{q}, out); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Lookup after Close: %v, want net.ErrClosed", err)
	}
}

// An unprivileged user sees other users' TCP sockets, tcp_info included.
func TestIntegrationUnprivileged(t *testing.T) {
	lab := newLab(t)
	ns := lab.A.NetNS
	ln := listen(t, ns, "tcp4", "127.0.0.1:0")
	p := dial(t, ns, ln, "tcp4", "")
	q := queryOf(p.client)

	// The test binary, where user nobody can run it.
	dir, err := os.MkdirTemp("", "diag-unpriv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "diag.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}

	var outb strings.Builder
	err = netns.Do(ns, func() error {
		// Started from a thread inside the namespace, the child is in
		// it too, and as nobody it cannot leave it.
		cmd := exec.Command(bin, "-test.run=^TestUnprivilegedHelper$", "-test.v")
		cmd.Dir = "/"
		cmd.Env = append(os.Environ(), "DIAG_UNPRIV_QUERY="+q.Local.String()+","+q.Remote.String())
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		cmd.Stdout, cmd.Stderr = &outb, &outb
		return cmd.Run()
	})
	if err != nil {
		t.Fatalf("helper as nobody: %v\n%s", err, outb.String())
	}
	sc := bufio.NewScanner(strings.NewReader(outb.String()))
	for sc.Scan() {
		if line, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "RESULT "); ok {
			if line != "uid=65534 status=found state=1 mss>0=true rtt>0=true cookie>0=true" {
				t.Errorf("as nobody: %s", line)
			}
			return
		}
	}
	t.Fatalf("no result from helper:\n%s", outb.String())
}

// TestUnprivilegedHelper runs in the child of TestIntegrationUnprivileged.
func TestUnprivilegedHelper(t *testing.T) {
	v := os.Getenv("DIAG_UNPRIV_QUERY")
	if v == "" {
		t.Skip("helper for TestIntegrationUnprivileged")
	}
	l, r, _ := strings.Cut(v, ",")
	q := tcp.Query{Local: netip.MustParseAddrPort(l), Remote: netip.MustParseAddrPort(r)}
	c, err := Open(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := lookup1(t, c, q)
	fmt.Printf("RESULT uid=%d status=%v state=%d mss>0=%v rtt>0=%v cookie>0=%v\n",
		os.Geteuid(), s.Status, s.State, s.Info.SndMSS > 0, s.Info.RTT > 0, s.Cookie > 0)
}

// A link-local IPv6 connection is bound to its interface: the query's zone
// (a name or a number) tells the kernel which.
func TestIntegrationLinkLocal(t *testing.T) {
	lab := newLab(t)
	a, b := lab.A.NetNS, lab.B.NetNS
	ll := lab.B.LinkLocal
	ln := listen(t, b, "tcp6", "[::]:0")
	port := ln.Addr().(*net.TCPAddr).Port
	var c net.Conn
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := netns.Do(a, func() error {
			var err error
			c, err = net.DialTimeout("tcp6", fmt.Sprintf("[%s%%%s]:%d", ll, lab.A.Iface, port), time.Second)
			return err
		})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial link-local: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // duplicate address detection
	}
	defer c.Close()
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	ca := openT(t, &Config{NetNS: a})
	q := queryOf(c)
	if q.Remote.Addr().Zone() != lab.A.Iface {
		t.Fatalf("remote %v: want zone %s", q.Remote, lab.A.Iface)
	}
	checkFound(t, "zone name", lookup1(t, ca, q), afInet6)

	var idx int
	netns.Do(a, func() error {
		ifi, err := net.InterfaceByName(lab.A.Iface)
		if err == nil {
			idx = ifi.Index
		}
		return err
	})
	numeric := tcp.Query{
		Local:  netip.AddrPortFrom(q.Local.Addr().WithZone(fmt.Sprint(idx)), q.Local.Port()),
		Remote: netip.AddrPortFrom(q.Remote.Addr().WithZone(fmt.Sprint(idx)), q.Remote.Port()),
	}
	checkFound(t, "numeric zone", lookup1(t, ca, numeric), afInet6)
	noZone := tcp.Query{
		Local:  netip.AddrPortFrom(q.Local.Addr().WithZone(""), q.Local.Port()),
		Remote: netip.AddrPortFrom(q.Remote.Addr().WithZone(""), q.Remote.Port()),
	}
	if s := lookup1(t, ca, noZone); s.Status != tcp.NoSocket {
		t.Errorf("link-local without zone: %v, want NoSocket (the socket is bound to its interface)", s.Status)
	}
	// What capture gives: addresses without zone, the capture interface's index.
	noZone.IfIndex = uint32(idx)
	checkFound(t, "IfIndex, no zone", lookup1(t, ca, noZone), afInet6)
	wrong := noZone
	wrong.IfIndex = uint32(idx) + 1000
	if s := lookup1(t, ca, wrong); s.Status != tcp.NoSocket {
		t.Errorf("link-local with another IfIndex: %v, want NoSocket", s.Status)
	}
}

// TestIntegrationIfIndexUnbound checks that an IfIndex does not hide sockets
// that are not bound to a device: the kernel matches them on any interface.
func TestIntegrationIfIndexUnbound(t *testing.T) {
	lab := newLab(t)
	ns := lab.A.NetNS
	ln := listen(t, ns, "tcp4", "127.0.0.1:0")
	p := dial(t, ns, ln, "tcp4", "")
	ca := openT(t, &Config{NetNS: ns})
	q := queryOf(p.client)
	for _, idx := range []uint32{1, 2, 999} {
		q.IfIndex = idx
		checkFound(t, fmt.Sprintf("IfIndex %d", idx), lookup1(t, ca, q), afInet)
	}
}
