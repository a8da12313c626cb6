//go:build linux

package exact

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/internal/netlab"
	"github.com/siftr-probe/siftr-probe/internal/netlab/labtest"
	"github.com/siftr-probe/siftr-probe/internal/traffic"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// sink keeps every record it is given.
type sink struct {
	mu   sync.Mutex
	recs []correlate.Record
}

func (s *sink) Submit(_ int, recs []correlate.Record, _ int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, recs...)
	return true
}

func (s *sink) Advance(int, int64) {}

// running is a Source running into an Engine.
type running struct {
	src  *Source
	eng  *correlate.Engine
	out  *sink
	stop context.CancelFunc
	done chan error
}

// open opens a source in the lab host h's namespace on its veth.
func open(t *testing.T, h *netlab.Host, cfg Config) *Source {
	t.Helper()
	cfg.NetNS = h.NetNS
	if cfg.Iface == "" {
		cfg.Iface = h.Iface
	}
	src, err := Open(&cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// start runs src into a fresh engine until finish.
func start(t *testing.T, src *Source) *running {
	t.Helper()
	r := &running{src: src, out: &sink{}, done: make(chan error, 1)}
	var err error
	if r.eng, err = correlate.NewEngine(nil, r.out, src.Producers()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	go func() { r.done <- src.Run(ctx, r.eng) }()
	return r
}

// finish stops the source and returns its records and counts.
func (r *running) finish(t *testing.T) ([]correlate.Record, correlate.Counts) {
	t.Helper()
	time.Sleep(20 * time.Millisecond) // the last ACKs
	r.stop()
	if err := <-r.done; err != nil {
		t.Fatalf("run: %v", err)
	}
	return r.out.recs, r.eng.Counts()
}

// checkIdentity asserts packets = records + sampled out + skips, per direction.
func checkIdentity(t *testing.T, recs []correlate.Record, c correlate.Counts) {
	t.Helper()
	var lines [2]uint64
	for _, r := range recs {
		lines[r.Pkt.Dir]++
	}
	for d := range 2 {
		if got := lines[d] + c.SampledOut[d] + c.SkipMalloc[d] + c.SkipTCPCB[d] + c.SkipInPCB[d]; got != c.Packets[d] {
			t.Errorf("direction %d: packets %d != records %d + sampled out %d + malloc %d + tcpcb %d + inpcb %d",
				d, c.Packets[d], lines[d], c.SampledOut[d], c.SkipMalloc[d], c.SkipTCPCB[d], c.SkipInPCB[d])
		}
	}
}

func listen(t *testing.T, h *netlab.Host, addr string) {
	t.Helper()
	var ln net.Listener
	if err := h.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	s := traffic.Serve(ln)
	t.Cleanup(func() { s.Close() })
}

// send makes one connection from h to addr, sends n bytes and waits for
// the connection to be over.
func send(t *testing.T, h *netlab.Host, addr string, n int64) netip.AddrPort {
	t.Helper()
	var c net.Conn
	if err := h.Do(func() (err error) { c, err = net.Dial("tcp", addr); return err }); err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	if _, err := traffic.Send(context.Background(), c, n); err != nil {
		t.Fatalf("send to %s: %v", addr, err)
	}
	return local
}

// TestIntegrationShortConnections makes many connections that send 4 KiB
// and close, and probes both ends. Every segment after the handshake is
// logged with an established-or-later state: the client skips only its
// SYN and the SYN-ACK it receives (tcpcb, SYN_SENT), the server only the
// SYN, its SYN-ACK and the ACK that completes the handshake (inpcb: the
// listener and the request socket), as SIFTR does. After-the-fact lookups
// lose many more (see bench/).
func TestIntegrationShortConnections(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true})
	listen(t, &lab.B, "10.77.0.2:5201")
	client := start(t, open(t, &lab.A, Config{Port: 5201}))
	server := start(t, open(t, &lab.B, Config{Port: 5201}))
	const conns = 200
	for range conns {
		send(t, &lab.A, "10.77.0.2:5201", 4<<10)
	}
	crecs, cc := client.finish(t)
	srecs, sc := server.finish(t)
	checkIdentity(t, crecs, cc)
	checkIdentity(t, srecs, sc)
	for _, side := range []struct {
		name         string
		recs         []correlate.Record
		c            correlate.Counts
		tcpcb, inpcb uint64
	}{
		{"client", crecs, cc, 2 * conns, 0},
		{"server", srecs, sc, 0, 3 * conns},
	} {
		tcpcb, inpcb := side.c.SkipTCPCB[0]+side.c.SkipTCPCB[1], side.c.SkipInPCB[0]+side.c.SkipInPCB[1]
		if tcpcb != side.tcpcb || inpcb != side.inpcb {
			t.Errorf("%s: %d tcpcb and %d inpcb skips for %d connections, want %d and %d: only the handshake",
				side.name, tcpcb, inpcb, conns, side.tcpcb, side.inpcb)
		}
		if m := side.c.SkipMalloc[0] + side.c.SkipMalloc[1]; m != 0 {
			t.Errorf("%s: %d malloc skips", side.name, m)
		}
		// Per connection at least: 3 data segments (4 KiB / 1448) and
		// the FIN exchange one way, their ACKs the other.
		if n := len(side.recs); n < 6*conns {
			t.Errorf("%s: %d records for %d connections", side.name, n, conns)
		}
		for _, r := range side.recs {
			if !correlate.Loggable(r.Snap.State) || r.Snap.Source != tcp.SourceExact || r.Staleness() != 0 {
				t.Fatalf("%s: record %+v: want an established-or-later state read at the packet", side.name, r)
			}
		}
	}
}

// TestIntegrationPPLPerSocket: with ppl = N every socket logs exactly
// every N-th of its counted segments, both directions together.
func TestIntegrationPPLPerSocket(t *testing.T) {
	const ppl = 5
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true})
	listen(t, &lab.B, "[::]:5201")
	r := start(t, open(t, &lab.A, Config{Port: 5201, PPL: ppl}))
	var clients []netip.AddrPort
	for _, addr := range []string{"10.77.0.2:5201", "[fd77::2]:5201", "10.77.0.2:5201"} {
		clients = append(clients, send(t, &lab.A, addr, 256<<10))
	}
	recs, c := r.finish(t)
	checkIdentity(t, recs, c)
	n := map[netip.AddrPort]int{}
	for _, rec := range recs {
		n[rec.Pkt.Local()]++
	}
	counted := c.Packets[0] + c.Packets[1] - (c.SkipTCPCB[0] + c.SkipTCPCB[1] + c.SkipInPCB[0] + c.SkipInPCB[1])
	// floor(k/ppl) per socket: the total is at most 3 short of floor(counted/ppl).
	total := uint64(len(recs))
	if total > counted/ppl || total+3 < counted/ppl {
		t.Errorf("ppl %d: %d records from %d counted segments, want floor(k/%d) per socket", ppl, total, counted, ppl)
	}
	if sampled := c.SampledOut[0] + c.SampledOut[1]; sampled != counted-total {
		t.Errorf("%d sampled out, want %d counted - %d logged", sampled, counted, total)
	}
	for _, cl := range clients {
		if n[cl] < 5 {
			t.Errorf("client %s: %d records", cl, n[cl])
		}
	}
}

// TestIntegrationTinyRingBuffer fills a one-page ring buffer before the
// reader starts: the segments it had no room for are malloc skips, and the
// identity holds.
func TestIntegrationTinyRingBuffer(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true})
	listen(t, &lab.B, "10.77.0.2:5201")
	src := open(t, &lab.A, Config{Port: 5201, RingBytes: MinRingBytes})
	send(t, &lab.A, "10.77.0.2:5201", 1<<20) // far more records than a page holds
	r := start(t, src)
	recs, c := r.finish(t)
	checkIdentity(t, recs, c)
	malloc := c.SkipMalloc[0] + c.SkipMalloc[1]
	if malloc == 0 || len(recs) == 0 || len(recs) > MinRingBytes/int(unsafeSizeofEvent()) {
		t.Errorf("%d records and %d malloc skips: want the ring's worth logged and the rest counted", len(recs), malloc)
	}
	if st := src.Stats(); st.RingFull[0]+st.RingFull[1] != malloc || st.Lost != 0 {
		t.Errorf("stats %+v: want RingFull = %d malloc skips, nothing lost", st, malloc)
	}
}

// TestIntegrationDetach attaches with each mode and checks that Close
// leaves nothing attached, and that two probes on one interface do not
// disturb each other.
func TestIntegrationDetach(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true})
	listen(t, &lab.B, "10.77.0.2:5201")
	var ifindex int
	lab.A.Do(func() error {
		ifi, err := net.InterfaceByName(lab.A.Iface)
		if err == nil {
			ifindex = ifi.Index
		}
		return err
	})
	for _, modes := range [][2]string{{AttachTCX, AttachTCX}, {AttachTC, AttachTC}, {AttachTCX, AttachTC}} {
		t.Run(modes[0]+"+"+modes[1], func(t *testing.T) {
			a := open(t, &lab.A, Config{Port: 5201, Attach: modes[0]})
			b := open(t, &lab.A, Config{Port: 5201, Attach: modes[1]})
			ra, rb := start(t, a), start(t, b)
			send(t, &lab.A, "10.77.0.2:5201", 64<<10)
			recsA, ca := ra.finish(t)
			recsB, cb := rb.finish(t)
			checkIdentity(t, recsA, ca)
			checkIdentity(t, recsB, cb)
			if ca != cb || len(recsA) != len(recsB) || len(recsA) == 0 {
				t.Errorf("two probes saw %d records %+v and %d records %+v: want the same", len(recsA), ca, len(recsB), cb)
			}
			for _, s := range []*Source{a, b} {
				if err := s.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			}
			if left := attached(t, &lab.A, ifindex); left != "" {
				t.Errorf("after Close: %s", left)
			}
		})
	}
}

// attached describes the tc programs and filters left on ifindex in h.
func attached(t *testing.T, h *netlab.Host, ifindex int) string {
	t.Helper()
	var left string
	err := h.Do(func() error {
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
			if err != nil {
				return err
			}
			if len(res.Programs) > 0 {
				left += fmt.Sprintf("%d tcx programs on %v; ", len(res.Programs), at)
			}
		}
		lk, err := netlink.LinkByIndex(ifindex)
		if err != nil {
			return err
		}
		qs, err := netlink.QdiscList(lk)
		if err != nil {
			return err
		}
		for _, q := range qs {
			if q.Type() == "clsact" {
				left += "a clsact qdisc; "
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return left
}

// TestIntegrationStaleFilters leaves a cls_bpf filter as a killed probe
// would (named after a process that no longer exists): the next probe in
// tc mode removes it, and leaves other filters alone.
func TestIntegrationStaleFilters(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{})
	first := open(t, &lab.A, Config{Attach: AttachTC})
	var stale, live *netlink.BpfFilter
	err := lab.A.Do(func() error {
		// The filters first added, renamed after a dead process and
		// after this one (a probe that is still running).
		for _, f := range first.hooks.filters {
			dead := *f
			dead.Name = filterPrefix + "999999999"
			dead.Priority = f.Priority + 100
			if err := netlink.FilterAdd(&dead); err != nil {
				return err
			}
			stale = &dead
		}
		l := *first.hooks.filters[0]
		l.Priority += 200
		live = &l
		return netlink.FilterAdd(live)
	})
	if err != nil {
		t.Fatal(err)
	}
	first.hooks.filters = nil // forget them, as a killed probe does
	second := open(t, &lab.A, Config{Attach: AttachTC})
	names := map[string]int{}
	lab.A.Do(func() error {
		lk, _ := netlink.LinkByIndex(stale.LinkIndex)
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			fs, _ := netlink.FilterList(lk, parent)
			for _, f := range fs {
				if bf, ok := f.(*netlink.BpfFilter); ok {
					names[bf.Name]++
				}
			}
		}
		return nil
	})
	if names[stale.Name] != 0 {
		t.Errorf("filters %v: the dead probe's filter is still there", names)
	}
	// This process's: the first probe's two, the copy, the second's two.
	if names[live.Name] != 5 {
		t.Errorf("filters %v: a running probe's filter was removed", names)
	}
	second.Close()
	first.Close()
}

// TestOpenErrors: an unknown interface and bad settings are errors before
// anything is attached.
func TestOpenErrors(t *testing.T) {
	labtest.RequireRoot(t)
	if _, err := Open(&Config{Iface: "nosuch0"}); !errors.Is(err, ErrNoInterface) {
		t.Errorf("unknown interface: %v, want ErrNoInterface", err)
	}
	if _, err := Open(&Config{Iface: "lo", RingBytes: 5000}); err == nil {
		t.Error("a ring buffer size that is not a power of two was accepted")
	}
	if _, err := Open(&Config{Iface: "lo", Attach: "xdp"}); err == nil {
		t.Error("an unknown attach mode was accepted")
	}
}

// unsafeSizeofEvent is the ring buffer space one record takes: the event
// and the ring's 8-byte header.
func unsafeSizeofEvent() uintptr { return unsafe.Sizeof(probeEvent{}) + 8 }

// TestIntegrationDiscardedFrames sends, on an established connection's
// 4-tuple, inbound frames that IP would drop (a bad header checksum, an IP
// length past the frame's end) and frames tagged with a VLAN the
// interface does not have: none is counted as a packet or logged; they are
// counted as malformed and not local.
func TestIntegrationDiscardedFrames(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true})
	listen(t, &lab.B, "10.77.0.2:5201")
	var c net.Conn
	if err := lab.A.Do(func() (err error) { c, err = net.Dial("tcp", "10.77.0.2:5201"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := c.LocalAddr().(*net.TCPAddr).AddrPort()
	src := open(t, &lab.A, Config{Port: 5201})
	r := start(t, src)

	var dstMAC net.HardwareAddr
	lab.A.Do(func() error {
		ifi, err := net.InterfaceByName(lab.A.Iface)
		if err == nil {
			dstMAC = ifi.HardwareAddr
		}
		return err
	})
	const marker = 0x51f7a000 // the crafted segments' sequence numbers
	frames := map[string][]byte{
		"bad checksum": frame(dstMAC, client, marker+1, nil, func(ip []byte) { ip[10] ^= 0xff }, false),
		"long ip":      frame(dstMAC, client, marker+2, func(ip []byte) { ip[2], ip[3] = 0x05, 0xdc }, nil, false),
		"vlan 42":      frame(dstMAC, client, marker+3, nil, nil, true),
	}
	err := lab.B.Do(func() error {
		fd, err := rawSocket(lab.B.Iface)
		if err != nil {
			return err
		}
		defer closeFD(fd)
		for range 10 {
			for _, f := range frames {
				if err := writeFD(fd, f); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	recs, counts := r.finish(t)
	checkIdentity(t, recs, counts)
	for _, rec := range recs {
		if rec.Pkt.Seq&^0xf == marker {
			t.Errorf("a crafted frame was logged: %+v", rec.Pkt)
		}
	}
	st := src.Stats()
	if st.Malformed[0] != 20 || st.NotLocal[0] != 10 {
		t.Errorf("malformed %v, not local %v: want 20 inbound malformed (checksum, length) and 10 not local (VLAN)", st.Malformed, st.NotLocal)
	}
	if counts.Packets[0] != 0 {
		t.Errorf("%d inbound packets counted: the crafted frames must not count", counts.Packets[0])
	}
}

// frame builds an Ethernet frame to dst holding an IPv4 TCP ACK from
// 10.77.0.2:5201 to client with sequence number seq; pre and post, if
// set, change the IP header before and after its checksum is computed;
// vlan tags it.
func frame(dst net.HardwareAddr, client netip.AddrPort, seq uint32, pre, post func(ip []byte), vlan bool) []byte {
	ip := make([]byte, 40)
	ip[0], ip[2], ip[3], ip[8], ip[9] = 0x45, 0, 40, 64, 6
	copy(ip[12:16], netip.MustParseAddr("10.77.0.2").AsSlice())
	copy(ip[16:20], client.Addr().AsSlice())
	if pre != nil {
		pre(ip)
	}
	sum := uint32(0)
	for i := 0; i < 20; i += 2 {
		sum += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	ip[10], ip[11] = byte(^sum>>8), byte(^sum)
	th := ip[20:]
	th[0], th[1] = 5201>>8, 5201&0xff
	th[2], th[3] = byte(client.Port()>>8), byte(client.Port())
	th[4], th[5], th[6], th[7] = byte(seq>>24), byte(seq>>16), byte(seq>>8), byte(seq)
	th[12], th[13], th[14] = 5<<4, 0x10, 0x10
	if post != nil {
		post(ip)
	}
	eth := append(append([]byte{}, dst...), 0x02, 0, 0, 0, 0, 0x77)
	if vlan {
		eth = append(eth, 0x81, 0x00, 0x00, 42)
	}
	eth = append(eth, 0x08, 0x00)
	return append(eth, ip...)
}

// TestIntegrationChange changes ppl and then the port while two
// connections send, one on each port: each period's counts are exact (a
// socket keeps floor(its segments/ppl) of them), the identity holds over
// the run, and no record of the old port is later than the port change.
func TestIntegrationChange(t *testing.T) {
	lab := labtest.NewT(t, netlab.Config{NoOffloads: true, RateBitsPerSec: 50e6})
	listen(t, &lab.B, "10.77.0.2:5201")
	listen(t, &lab.B, "10.77.0.2:5202")
	src := open(t, &lab.A, Config{Port: 5201})
	r := start(t, src)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, addr := range []string{"10.77.0.2:5201", "10.77.0.2:5202"} {
		var c net.Conn
		if err := lab.A.Do(func() (err error) { c, err = net.Dial("tcp", addr); return err }); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { defer c.Close(); traffic.Send(ctx, c, 0) })
	}
	period := func() { time.Sleep(300 * time.Millisecond) }
	period()
	_, p1, err := src.Change(10, 5201)
	if err != nil {
		t.Fatal(err)
	}
	period()
	_, p2, err := src.Change(1, 5201)
	if err != nil {
		t.Fatal(err)
	}
	if ppl, port := src.Settings(); ppl != 1 || port != 5201 {
		t.Errorf("Settings() = %d, %d, want 1, 5201", ppl, port)
	}
	period()
	at, p3, err := src.Change(1, 5202)
	if err != nil {
		t.Fatal(err)
	}
	period()
	p4 := src.Sampled()
	cancel()
	wg.Wait()
	recs, c := r.finish(t)
	checkIdentity(t, recs, c)
	sum := func(a [2]uint64) uint64 { return a[0] + a[1] }
	for i, p := range []struct {
		c   correlate.SampleCounts
		ppl uint64
	}{{p1, 1}, {p2, 10}, {p3, 1}, {p4, 1}} {
		kept, out := sum(p.c.Sampled), sum(p.c.SampledOut)
		t.Logf("period %d (ppl %d): %d packets, %d sampled out, %d written", i+1, p.ppl, sum(p.c.Packets), out, kept)
		if kept == 0 || kept != (kept+out)/p.ppl {
			t.Errorf("period %d (ppl %d): %d written, %d sampled out: want floor(%d/%d) written",
				i+1, p.ppl, kept, out, kept+out, p.ppl)
		}
	}
	var late, newPort int
	for _, rec := range recs {
		switch rec.Pkt.Remote().Port() {
		case 5201:
			if rec.Pkt.Time >= at {
				late++
			}
		case 5202:
			newPort++
		}
	}
	if late != 0 {
		t.Errorf("%d records of the old port later than the change", late)
	}
	if newPort == 0 {
		t.Error("no record of the new port")
	}
}
