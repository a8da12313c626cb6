//go:build linux

package capture

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	vnetlink "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
	"github.com/siftr-probe/siftr-probe/internal/netns"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// recorder is a Handler that keeps copies of everything it is given and
// checks the Idle contract: no packet delivered after Idle(w, safe) has a
// Time before safe.
type recorder struct {
	mu         sync.Mutex
	pkts       []tcp.Packet
	workers    map[int]bool // workers that delivered a packet
	blocks     int
	idle       int
	idleCh     chan struct{} // gets a token per Idle call, if there is room
	safe       map[int]int64
	violations int   // packets older than their worker's last safe time (Block's or Idle's)
	backwards  int   // packets older than the previous one of their worker
	maxBack    int64 // largest step back in time within a worker, ns
	last       map[int]int64
	maxDelay   time.Duration // largest time from capture to delivery
}

func newRecorder() *recorder {
	return &recorder{
		workers: map[int]bool{},
		idleCh:  make(chan struct{}, 1),
		safe:    map[int]int64{},
		last:    map[int]int64{},
	}
}

func (r *recorder) Block(w int, pkts []tcp.Packet, safe int64) {
	now := time.Now().UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blocks++
	for _, p := range pkts {
		if p.Time < r.safe[w] {
			r.violations++
		}
		if last, ok := r.last[w]; ok && p.Time < last {
			r.backwards++
			r.maxBack = max(r.maxBack, last-p.Time)
		}
		r.last[w] = p.Time
		r.maxDelay = max(r.maxDelay, time.Duration(now-p.Time))
		r.workers[w] = true
	}
	r.pkts = append(r.pkts, pkts...)
	r.safe[w] = max(r.safe[w], safe)
}

func (r *recorder) Idle(w int, safe int64) {
	r.mu.Lock()
	r.idle++
	r.safe[w] = max(r.safe[w], safe)
	r.mu.Unlock()
	select {
	case r.idleCh <- struct{}{}:
	default:
	}
}

func (r *recorder) packets() []tcp.Packet {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]tcp.Packet(nil), r.pkts...)
}

// running is a Capture whose Run goroutine a test can stop and wait for.
type running struct {
	c      *Capture
	rec    *recorder
	cancel context.CancelFunc
	errc   chan error
}

// startCapture opens a capture inside the namespace at nsPath and runs it
// with a recorder until the test ends.
func startCapture(t *testing.T, nsPath string, cfg Config) *running {
	t.Helper()
	var c *Capture
	if err := netns.Do(nsPath, func() (err error) {
		c, err = Open(&cfg)
		return err
	}); err != nil {
		t.Fatalf("open: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, rec: newRecorder(), cancel: cancel, errc: make(chan error, 1)}
	go func() { r.errc <- c.Run(ctx, r.rec) }()
	t.Cleanup(func() {
		cancel()
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return r
}

// stop cancels Run, waits for it and fails the test if it took too long or
// returned an error.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.errc:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

// checkContract checks what every capture test expects of the stats and the
// Idle contract.
func (r *running) checkContract(t *testing.T) {
	t.Helper()
	st := r.c.Stats()
	t.Logf("stats %+v; blocks %d, idle calls %d, per-worker steps back %d (max %v), max delivery delay %v",
		st, r.rec.blocks, r.rec.idle, r.rec.backwards, time.Duration(r.rec.maxBack), r.rec.maxDelay)
	got := st.Packets[tcp.DirIn] + st.Packets[tcp.DirOut]
	if sum := got + st.NotLocal + st.Truncated + st.Malformed + st.Filtered + st.VLAN; sum != st.Frames {
		t.Errorf("frames %d != delivered + skipped %d", st.Frames, sum)
	}
	if n := uint64(len(r.rec.packets())); n != got {
		t.Errorf("handler got %d packets, stats say %d", n, got)
	}
	if st.Truncated != 0 || st.Malformed != 0 || st.VLAN != 0 || st.KernelStatsErrors != 0 || st.DrainLeft != 0 {
		t.Errorf("unexpected skips: %+v", st)
	}
	// The filter passes IPv6 packets with extension headers for user space to
	// decide: the hop-by-hop MLD reports a new interface sends are such
	// packets (multicast, so NotLocal, or not TCP, so Filtered). A few of
	// them are expected (a dozen when retransmitted on a busy machine); the
	// other connection's packets, hundreds, must not be there.
	if st.Filtered+st.NotLocal > 32 {
		t.Errorf("too many skipped frames (other traffic passed the filter?): %+v", st)
	}
	if r.rec.violations != 0 {
		t.Errorf("%d packets delivered with Time before an earlier safe time of their worker", r.rec.violations)
	}
}

// transfer makes one TCP connection from client to server: the client sends
// up bytes, the server answers with down bytes, and both close. It returns
// the client's local address.
func transfer(t *testing.T, client, server string, dst netip.Addr, port uint16, up, down int) netip.AddrPort {
	t.Helper()
	return transferOpts(t, client, server, dst, port, up, down, nil)
}

// dstOpts returns an IPv6 destination options header of n bytes (a
// multiple of 8, at least 16), for IPV6_DSTOPTS: experimental options
// (type 0x1e, "skip if unknown") of up to 58 bytes, at most 4 of them
// (Linux accepts 8 per header), and the rest as padding (PadN of at most 7
// bytes, as Linux wants).
func dstOpts(n int) []byte {
	h := make([]byte, n)
	h[1] = byte(n/8 - 1)
	off := 2
	for k := 0; k < 4 && n-off >= 58+2; k++ {
		h[off], h[off+1] = 0x1e, 56
		off += 58
	}
	for n-off > 0 {
		pad := min(n-off, 7)
		if pad == 1 {
			h[off] = 0 // Pad1
		} else {
			h[off], h[off+1] = 1, byte(pad-2)
		}
		off += pad
	}
	return h
}

// transferOpts is transfer with IPv4 options (IP_OPTIONS) or IPv6
// destination options (IPV6_DSTOPTS) on the client's packets.
func transferOpts(t *testing.T, client, server string, dst netip.Addr, port uint16, up, down int, ipOpts []byte) netip.AddrPort {
	t.Helper()
	var ln net.Listener
	if err := netns.Do(server, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(dst, port).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		if _, err := io.Copy(io.Discard, c); err != nil {
			srvErr <- err
			return
		}
		_, err = c.Write(make([]byte, down))
		srvErr <- err
	}()
	d := net.Dialer{Timeout: 5 * time.Second}
	if ipOpts != nil {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				if dst.Is6() {
					serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, unix.IPV6_DSTOPTS, string(ipOpts))
					return
				}
				serr = unix.SetsockoptString(int(fd), unix.IPPROTO_IP, unix.IP_OPTIONS, string(ipOpts))
			})
			return errors.Join(err, serr)
		}
	}
	var c net.Conn
	if err := netns.Do(client, func() (err error) {
		c, err = d.Dial("tcp", ln.Addr().String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(make([]byte, up)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	n, err := io.Copy(io.Discard, c)
	if err != nil || n != int64(down) {
		t.Fatalf("read %d of %d bytes: %v", n, down, err)
	}
	if err := <-srvErr; err != nil {
		t.Fatal(err)
	}
	return c.LocalAddr().(*net.TCPAddr).AddrPort()
}

func TestIntegrationVeth(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true})
	const port, otherPort = 5201, 5202
	for _, tc := range []struct {
		name   string
		a, b   netip.Addr
		ipOpts []byte
	}{
		{"ipv4", lab.A.Addr4, lab.B.Addr4, nil},
		// IPv4 options on the client's packets: the kernel filter must find
		// the ports after the options (IHL 7), through its SKF_NET_OFF loads.
		{"ipv4 options", lab.A.Addr4, lab.B.Addr4, []byte{1, 1, 1, 1, 1, 1, 1, 0}},
		{"ipv6", lab.A.Addr6, lab.B.Addr6, nil},
		// 240 bytes of destination options on the client's packets: the
		// kernel filter must walk them to the TCP header and copy all of
		// it (a fixed snap length cut such packets and counted them
		// Truncated).
		{"ipv6 long destination options", lab.A.Addr6, lab.B.Addr6, dstOpts(240)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startCapture(t, lab.A.NetNS, Config{Iface: lab.A.Iface, Port: port, Workers: 2})
			if r.c.Workers() != 2 {
				t.Fatalf("Workers() = %d, want 2", r.c.Workers())
			}
			const up, down = 300 << 10, 100 << 10
			var other sync.WaitGroup
			other.Add(1)
			go func() {
				defer other.Done()
				transfer(t, lab.A.NetNS, lab.B.NetNS, tc.b, otherPort, 200<<10, 1000)
			}()
			local := transferOpts(t, lab.A.NetNS, lab.B.NetNS, tc.b, port, up, down, tc.ipOpts)
			other.Wait()
			r.stop(t)
			r.checkContract(t)

			remote := netip.AddrPortFrom(tc.b, port)
			if local.Addr() != tc.a {
				t.Fatalf("client address %v, want %v", local, tc.a)
			}
			var payload [2]uint64
			var syn [2]bool
			var count [2]int
			for _, p := range r.rec.packets() {
				if p.Local() != local || p.Remote() != remote {
					t.Fatalf("packet %+v: local %v remote %v, want %v %v", p, p.Local(), p.Remote(), local, remote)
				}
				wantSrc := local
				if p.Dir == tcp.DirIn {
					wantSrc = remote
				}
				if p.Src != wantSrc {
					t.Fatalf("packet %+v: dir %v but src %v", p, p.Dir, p.Src)
				}
				if p.Src.Addr().Is4() != tc.a.Is4() || p.Src.Addr().Is4In6() {
					t.Fatalf("packet %+v: address family", p)
				}
				count[p.Dir]++
				payload[p.Dir] += uint64(p.PayloadLen)
				if p.Flags&tcp.FlagSYN != 0 {
					syn[p.Dir] = true
				}
			}
			t.Logf("packets in %d out %d, payload in %d out %d", count[tcp.DirIn], count[tcp.DirOut], payload[tcp.DirIn], payload[tcp.DirOut])
			if !syn[tcp.DirIn] || !syn[tcp.DirOut] {
				t.Errorf("SYN seen (in, out) = %v, want both", syn)
			}
			// Retransmissions may add payload, never remove it.
			if payload[tcp.DirOut] < up || payload[tcp.DirIn] < down {
				t.Errorf("payload out %d in %d, want at least %d and %d", payload[tcp.DirOut], payload[tcp.DirIn], up, down)
			}
			if st := r.c.Stats(); st.KernelPackets < uint64(count[0]+count[1]) {
				t.Errorf("kernel packets %d < delivered %d", st.KernelPackets, count[0]+count[1])
			}
		})
	}
}

func TestIntegrationAllPortsSeesBoth(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true})
	r := startCapture(t, lab.A.NetNS, Config{Iface: lab.A.Iface, Workers: 1})
	a := transfer(t, lab.A.NetNS, lab.B.NetNS, lab.B.Addr4, 7001, 10<<10, 10)
	b := transfer(t, lab.A.NetNS, lab.B.NetNS, lab.B.Addr6, 7002, 10<<10, 10)
	r.stop(t)
	r.checkContract(t)
	seen := map[netip.AddrPort]int{}
	for _, p := range r.rec.packets() {
		seen[p.Local()]++
	}
	if seen[a] == 0 || seen[b] == 0 {
		t.Errorf("packets by local address %v, want both %v and %v", seen, a, b)
	}
}

func TestIntegrationLoopback(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{})
	for _, tc := range []struct {
		name string
		addr netip.Addr
		port uint16
	}{
		{"ipv4", netip.MustParseAddr("127.0.0.1"), 6001},
		{"ipv6", netip.IPv6Loopback(), 6002},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startCapture(t, lab.A.NetNS, Config{Iface: "lo", Port: tc.port})
			if r.c.Workers() != onlineCPUs() {
				t.Errorf("Workers() = %d with Workers 0, want the %d online CPUs", r.c.Workers(), onlineCPUs())
			}
			transfer(t, lab.A.NetNS, lab.A.NetNS, tc.addr, tc.port, 1<<20, 1<<20)
			r.stop(t)
			r.checkContract(t)
			type key struct {
				src, dst netip.AddrPort
				seq, ack uint32
				n        uint32
				flags    uint8
				window   uint16
			}
			seen := map[key][2]int{}
			pkts := r.rec.packets()
			for _, p := range pkts {
				k := key{p.Src, p.Dst, p.Seq, p.Ack, p.PayloadLen, p.Flags, p.Window}
				c := seen[k]
				c[p.Dir]++
				seen[k] = c
			}
			if len(pkts) == 0 {
				t.Fatal("no packets")
			}
			// Each transmission is seen once leaving and once arriving. A
			// retransmission identical to the original (a tail loss probe
			// on a busy machine) is a second transmission: seen twice each.
			for k, c := range seen {
				if c[0] != c[1] || c[0] == 0 {
					t.Errorf("packet %+v seen (in, out) = %v times, want as often in as out", k, c)
				}
			}
		})
	}
}

func TestIntegrationCloseWhileBlocked(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{})
	var c *Capture
	if err := lab.A.Do(func() (err error) {
		c, err = Open(&Config{Iface: lab.A.Iface, Workers: 2, BlockTimeout: 20 * time.Millisecond})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	errc := make(chan error, 1)
	go func() { errc <- c.Run(context.Background(), rec) }()
	select {
	case <-rec.idleCh: // Run is polling an idle ring
	case <-time.After(5 * time.Second):
		t.Fatal("no Idle call")
	}
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("close took %v", d)
	}
	// Close has waited for Run's goroutines; Run's own return, and the
	// send above, come a moment later.
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("run still running a second after Close returned")
	}
	if err := c.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if err := c.Run(context.Background(), rec); !errors.Is(err, net.ErrClosed) {
		t.Errorf("run after close: %v, want net.ErrClosed", err)
	}
	_ = c.Stats()
}

func TestIntegrationIdle(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{})
	r := startCapture(t, lab.A.NetNS, Config{Iface: lab.A.Iface, Workers: 1, BlockTimeout: 2 * time.Millisecond})
	for i := 0; i < 3; i++ {
		select {
		case <-r.rec.idleCh:
		case <-time.After(5 * time.Second):
			t.Fatal("no Idle call on an idle ring")
		}
	}
	r.rec.mu.Lock()
	safe := r.rec.safe[0]
	r.rec.mu.Unlock()
	if lag := time.Since(time.Unix(0, safe)); lag < 5*time.Millisecond || lag > time.Second {
		t.Errorf("safe time is %v in the past, want 5ms (2 block timeouts + 1ms) plus a poll interval at most", lag)
	}
	r.stop(t)
}

// TestIntegrationDrain checks that packets captured just before the stop
// are delivered by the final drain.
func TestIntegrationDrain(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true})
	r := startCapture(t, lab.A.NetNS, Config{Iface: lab.A.Iface, Port: 5300, Workers: 2, BlockTimeout: 10 * time.Millisecond})
	transfer(t, lab.A.NetNS, lab.B.NetNS, lab.B.Addr4, 5300, 1000, 1000)
	r.stop(t) // right after the last packet: its block has not retired yet
	r.checkContract(t)
	var fin [2]bool
	for _, p := range r.rec.packets() {
		if p.Flags&tcp.FlagFIN != 0 {
			fin[p.Dir] = true
		}
	}
	if fin != [2]bool{true, true} {
		t.Errorf("FIN seen (in, out) = %v, want both: the drain lost packets", fin)
	}
}

func TestIntegrationNoInterface(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{})
	err := lab.A.Do(func() error {
		c, err := Open(&Config{Iface: "nosuch0"})
		if err == nil {
			c.Close()
		}
		return err
	})
	if !errors.Is(err, ErrNoInterface) || !strings.Contains(err.Error(), "nosuch0") {
		t.Fatalf("open unknown interface: %v, want ErrNoInterface naming it", err)
	}
}

// TestIntegrationPermission drops CAP_NET_RAW from one locked thread (Linux
// capabilities are per thread) and opens a capture there.
func TestIntegrationPermission(t *testing.T) {
	labtest.RequireRoot(t)
	errc := make(chan error, 1)
	go func() {
		// The thread keeps its reduced capabilities: never unlock it, so it
		// exits with this goroutine.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		data[unix.CAP_NET_RAW/32].Effective &^= 1 << (unix.CAP_NET_RAW % 32)
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		c, err := Open(&Config{Iface: "lo", Workers: 1})
		if err == nil {
			c.Close()
			err = errors.New("open succeeded without CAP_NET_RAW")
		}
		errc <- err
	}()
	err := <-errc
	if !errors.Is(err, os.ErrPermission) {
		t.Fatalf("open without CAP_NET_RAW: %v, want an os.ErrPermission error", err)
	}
	if !strings.HasPrefix(err.Error(), "capture: open ring on lo: socket: ") {
		t.Errorf("error message %q lacks context", err)
	}
}

// setLink runs fn on the interface named iface in the namespace at nsPath.
func setLink(t *testing.T, nsPath, iface string, fn func(vnetlink.Link) error) {
	t.Helper()
	if err := netns.Do(nsPath, func() error {
		l, err := vnetlink.LinkByName(iface)
		if err != nil {
			return err
		}
		return fn(l)
	}); err != nil {
		t.Fatalf("%s: %v", iface, err)
	}
}

// TestIntegrationInterfaceDownUp checks that a ring survives its interface
// going down (the socket reports ENETDOWN) and captures again once it is up.
func TestIntegrationInterfaceDownUp(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{})
	r := startCapture(t, lab.A.NetNS, Config{Iface: lab.A.Iface, Port: 7101, Workers: 1})
	setLink(t, lab.A.NetNS, lab.A.Iface, vnetlink.LinkSetDown)
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-r.errc:
		t.Fatalf("run returned when the interface went down: %v", err)
	default:
	}
	setLink(t, lab.A.NetNS, lab.A.Iface, vnetlink.LinkSetUp)
	transfer(t, lab.A.NetNS, lab.B.NetNS, lab.B.Addr4, 7101, 10<<10, 10<<10)
	r.stop(t)
	if n := len(r.rec.packets()); n < 6 {
		t.Errorf("%d packets after the interface came back up, want the whole connection", n)
	}
}

// TestIntegrationInterfaceRemoved checks that Run fails with ErrNoInterface
// when the interface is deleted under it, instead of waiting forever.
func TestIntegrationInterfaceRemoved(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{})
	r := startCapture(t, lab.A.NetNS, Config{Iface: lab.A.Iface, Workers: 2})
	setLink(t, lab.A.NetNS, lab.A.Iface, vnetlink.LinkDel)
	select {
	case err := <-r.errc:
		if !errors.Is(err, ErrNoInterface) {
			t.Errorf("run: %v, want ErrNoInterface", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after the interface was deleted")
	}
}

// TestIntegrationStackDiscards injects, from B, frames that A's IP stack
// drops before TCP: ACKs tagged with a VLAN A has no device for (the kernel
// takes the tag out of the frame before the capture sees it, into
// tp_vlan_tci), ACKs with three tags (two stay in the frame), a bad IPv4
// header checksum, an IP length beyond the frame. None may be delivered;
// each is counted (VLAN or Malformed). A good ACK is delivered.
func TestIntegrationStackDiscards(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true})
	const port = 5313
	var macA net.HardwareAddr
	if err := lab.A.Do(func() error {
		ifi, err := net.InterfaceByName(lab.A.Iface)
		if err == nil {
			macA = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ack := frame{src: netip.AddrPortFrom(lab.B.Addr4, port), dst: netip.AddrPortFrom(lab.A.Addr4, 40000), flags: tcp.FlagACK, seq: 1, ack: 1, window: 100}
	build := func(f frame, edit func([]byte)) []byte {
		b := f.build()
		copy(b[0:6], macA)
		if edit != nil {
			edit(b)
		}
		return b
	}
	tagged, three := ack, ack
	tagged.vlans = []uint16{etherTypeVLAN}
	three.vlans = []uint16{etherTypeVLAN, etherTypeVLAN, etherTypeVLAN}
	ip := ethHeaderLen
	frames := [][]byte{
		build(ack, nil),
		build(tagged, nil),
		build(three, nil),
		build(ack, func(b []byte) { b[ip+10] ^= 0x10 }),
		build(ack, func(b []byte) {
			binary.BigEndian.PutUint16(b[ip+2:], 1000)
			setIPv4Checksum(b[ip : ip+20])
		}),
	}
	r := startCapture(t, lab.A.NetNS, Config{Iface: lab.A.Iface, Port: port, Workers: 1})
	if err := lab.B.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifi, err := net.InterfaceByName(lab.B.Iface)
		if err != nil {
			return err
		}
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], macA)
		for _, f := range frames {
			if err := unix.Sendto(fd, f, 0, sa); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Wait for all five to be read (MLD and other link traffic may come too).
	deadline := time.Now().Add(5 * time.Second)
	for st := r.c.Stats(); st.Packets[tcp.DirIn]+st.VLAN+st.Malformed < 5; st = r.c.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("frames not seen: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.stop(t)
	st := r.c.Stats()
	if st.Packets[tcp.DirIn] != 1 || st.VLAN != 2 || st.Malformed != 2 {
		t.Errorf("stats %+v: want 1 packet in, 2 VLAN, 2 malformed", st)
	}
	if pk := r.rec.packets(); len(pk) != 1 || pk[0].Src != ack.src {
		t.Errorf("delivered %+v, want the good ACK only", pk)
	}
}

// TestIntegrationSetPort changes the port while two connections send, one
// on each port, and compares with a capture of every port on the same
// interface: the old port's packets captured before the call are all
// delivered and none captured after the change; the new port's packets
// captured after the change are all delivered.
func TestIntegrationSetPort(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true})
	const oldPort, newPort = 7101, 7102
	ref := startCapture(t, lab.A.NetNS, Config{Iface: lab.A.Iface, Workers: 1})
	r := startCapture(t, lab.A.NetNS, Config{Iface: lab.A.Iface, Port: oldPort, Workers: 2})

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, port := range []uint16{oldPort, newPort} {
		var ln net.Listener
		if err := netns.Do(lab.B.NetNS, func() (err error) {
			ln, err = net.Listen("tcp", netip.AddrPortFrom(lab.B.Addr4, port).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		wg.Go(func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			io.Copy(io.Discard, c)
		})
		var c net.Conn
		if err := netns.Do(lab.A.NetNS, func() (err error) { c, err = net.Dial("tcp", ln.Addr().String()); return err }); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer c.Close()
			buf := make([]byte, 8<<10)
			for ctx.Err() == nil {
				if _, err := c.Write(buf); err != nil {
					return
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	callStart := time.Now().UnixNano()
	at, err := r.c.SetPort(newPort)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.c.Port(); got != newPort {
		t.Errorf("Port() = %d after SetPort(%d)", got, newPort)
	}
	t.Logf("SetPort took %v", time.Duration(time.Now().UnixNano()-callStart))
	time.Sleep(500 * time.Millisecond)
	cancel()
	wg.Wait()
	time.Sleep(20 * time.Millisecond)
	r.stop(t)
	ref.stop(t)
	if d := r.c.Stats().KernelDrops + ref.c.Stats().KernelDrops; d != 0 {
		t.Fatalf("%d ring drops: the comparison needs every packet", d)
	}

	// Packets of the two captures are matched by their headers, not their
	// times: each ring stamps its own copy.
	type key struct {
		dir      tcp.Direction
		src, dst netip.AddrPort
		seq, ack uint32
		flags    uint8
		length   uint32
	}
	keyOf := func(p *tcp.Packet) key { return key{p.Dir, p.Src, p.Dst, p.Seq, p.Ack, p.Flags, p.PayloadLen} }
	port := func(p *tcp.Packet) uint16 {
		if p.Src.Port() == oldPort || p.Dst.Port() == oldPort {
			return oldPort
		}
		if p.Src.Port() == newPort || p.Dst.Port() == newPort {
			return newPort
		}
		return 0
	}
	got := map[key]int{}
	var oldAfter, newAfter, newBefore int
	for _, p := range r.rec.packets() {
		got[keyOf(&p)]++
		switch port(&p) {
		case oldPort:
			if p.Time >= at {
				oldAfter++
			}
		case newPort:
			if p.Time >= at {
				newAfter++
			} else {
				newBefore++
			}
		default:
			t.Fatalf("packet of neither port: %+v", p)
		}
	}
	if oldAfter != 0 {
		t.Errorf("%d packets of the old port captured after the change were delivered", oldAfter)
	}
	if newAfter == 0 {
		t.Fatal("no packet of the new port after the change")
	}
	var missedOld, missedNew, oldRef, newRef int
	for _, p := range ref.rec.packets() {
		switch k := keyOf(&p); {
		case port(&p) == oldPort && p.Time < callStart:
			oldRef++
			if got[k] == 0 {
				missedOld++
			} else {
				got[k]--
			}
		case port(&p) == newPort && p.Time > at:
			newRef++
			if got[k] == 0 {
				missedNew++
			} else {
				got[k]--
			}
		}
	}
	t.Logf("old port: %d packets before the call; new port: %d after the change (%d delivered), %d during the call", oldRef, newRef, newAfter, newBefore)
	if missedOld != 0 {
		t.Errorf("%d of the old port's %d packets captured before the call were not delivered", missedOld, oldRef)
	}
	if missedNew != 0 {
		t.Errorf("%d of the new port's %d packets captured after the change were not delivered", missedNew, newRef)
	}
}
