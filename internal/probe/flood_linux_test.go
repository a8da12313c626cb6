//go:build linux

package probe

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
)

// flooder writes crafted TCP ACK segments from random source ports of
// host from's address to port on host to, into from's veth through an
// AF_PACKET socket: 4-tuples to's kernel has no socket for.
type flooder struct {
	fd   int
	ll   unix.SockaddrLinklayer
	src  net.HardwareAddr
	dst  net.HardwareAddr
	from *netlab.Host
	to   *netlab.Host
	port uint16
	skip atomic.Uint32 // a source port not to use (the real connection's)
	sent atomic.Uint64
}

func newFlooder(t *testing.T, from, to *netlab.Host, port uint16) *flooder {
	t.Helper()
	f := &flooder{from: from, to: to, port: port}
	if err := to.Do(func() error {
		ifi, err := net.InterfaceByName(to.Iface)
		if err == nil {
			f.dst = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := from.Do(func() error {
		ifi, err := net.InterfaceByName(from.Iface)
		if err != nil {
			return err
		}
		f.src = ifi.HardwareAddr
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		f.fd = fd
		f.ll = unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: 0x0008 /* htons(ETH_P_IP) */, Halen: 6}
		copy(f.ll.Addr[:], f.dst)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(f.fd) })
	return f
}

// frame crafts one ACK from a random source port.
func (f *flooder) frame(rng *rand.Rand, buf gopacket.SerializeBuffer) []byte {
	sport := uint16(1024 + rng.IntN(60000))
	if uint32(sport) == f.skip.Load() {
		sport++
	}
	eth := &layers.Ethernet{SrcMAC: f.src, DstMAC: f.dst, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP,
		SrcIP: f.from.Addr4.AsSlice(), DstIP: f.to.Addr4.AsSlice(), Id: uint16(rng.Uint32())}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(f.port),
		Seq: rng.Uint32(), Ack: rng.Uint32(), ACK: true, Window: 512}
	tcp.SetNetworkLayerForChecksum(ip)
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// run sends about rate frames a second until ctx is done.
func (f *flooder) run(ctx context.Context, rate int) {
	rng := rand.New(rand.NewPCG(11, 12))
	buf := gopacket.NewSerializeBuffer()
	const tick = 10 * time.Millisecond
	per := rate * int(tick) / int(time.Second)
	tk := time.NewTicker(tick)
	defer tk.Stop()
	for {
		for range per {
			if err := unix.Sendto(f.fd, f.frame(rng, buf), 0, &f.ll); err == nil {
				f.sent.Add(1)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

// TestIntegrationFlowTableFlood floods the probed port with ACKs from
// spoofed 4-tuples (several thousand a second, far more than the probe's
// small flow table holds) from before a real transfer starts until after
// it ends: the transfer is logged throughout, nearly every one of its
// packets with ppl 1, the flood's packets are counted (no socket), and the
// identity holds exactly.
func TestIntegrationFlowTableFlood(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 20e6})
	var ln net.Listener
	if err := lab.B.Do(func() (err error) { ln, err = net.Listen("tcp4", lab.B.Addr4.String()+":0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	logPath := filepath.Join(t.TempDir(), "flood.log")
	stop := startRun(t, Config{
		Iface: lab.B.Iface, NetNS: lab.B.NetNS, Port: port, LogFile: logPath, State: "diag", Stderr: io.Discard,
		MaxFlows: 64, MaxUnverifiedFlows: 512,
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The server reads everything and, before closing, says how many
	// segments its socket saw (no offloads: one segment, one packet).
	type segs struct{ in, out uint32 }
	served := make(chan segs, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- segs{}
			return
		}
		defer c.Close()
		io.Copy(io.Discard, c)
		var s segs
		rc, _ := c.(*net.TCPConn).SyscallConn()
		rc.Control(func(fd uintptr) {
			if ti, err := unix.GetsockoptTCPInfo(int(fd), syscall.IPPROTO_TCP, unix.TCP_INFO); err == nil {
				s = segs{ti.Segs_in, ti.Segs_out}
			}
		})
		served <- s
	}()

	fl := newFlooder(t, &lab.A, &lab.B, port)
	fctx, fstop := context.WithCancel(ctx)
	fdone := make(chan struct{})
	go func() { defer close(fdone); fl.run(fctx, 5000) }()
	// The flood alone first: it would fill a table without its own budget.
	time.Sleep(time.Second)

	var c net.Conn
	if err := lab.A.Do(func() (err error) {
		c, err = net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	client := c.LocalAddr().(*net.TCPAddr).AddrPort()
	fl.skip.Store(uint32(client.Port())) // a spoofed ACK sent before would be a record of it
	buf := make([]byte, 64<<10)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c)
	c.Close()
	sg := <-served
	time.Sleep(500 * time.Millisecond) // the flood goes on after the transfer
	fstop()
	<-fdone
	time.Sleep(200 * time.Millisecond)
	sum := stop()
	l := parseLog(t, logPath)
	real := 0
	for _, ln := range l.Lines {
		if ln.Remote.Port() == client.Port() {
			real++
		}
	}
	sent := fl.sent.Load()
	cn := sum.Counts
	e := sum.Engine
	t.Logf("flood: %d ACKs sent; transfer: %d segments in, %d out at the server; %d records of it; counts %+v; engine %+v; ring drops %d",
		sent, sg.in, sg.out, real, cn, e, sum.Capture.KernelDrops)
	if sent < 10000 {
		t.Fatalf("only %d flood segments sent", sent)
	}
	// Every segment of the transfer but the handshake's SYN and SYN-ACK
	// (skipped as inpcb) is logged, bar a few at a table eviction's edge.
	want := int(sg.in + sg.out - 2)
	if sg.in == 0 || real < want*95/100 || real > want {
		t.Errorf("%d records of the transfer, want about %d (its segments less the SYNs)", real, want)
	}
	if got := cn.SkipInPCB[0]; got+sum.Capture.KernelDrops < sent {
		t.Errorf("%d inbound inpcb skips, want the %d flood segments counted", got, sent)
	}
	if e.FlowsEvicted == 0 || e.ActiveFlows > 64+512 {
		t.Errorf("engine %+v: want flood flows evicted, the table within its bounds", e)
	}
	pkts, skipped := cn.Totals()
	if lines := uint64(len(l.Lines)); pkts != lines+cn.SampledOut[0]+cn.SampledOut[1]+skipped {
		t.Errorf("identity: %d packets != %d lines + %d sampled out + %d skipped", pkts, lines, cn.SampledOut[0]+cn.SampledOut[1], skipped)
	}
	if len(l.Disable) != 1 {
		t.Fatalf("%d disable lines", len(l.Disable))
	}
}
