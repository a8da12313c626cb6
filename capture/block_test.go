package capture

import (
	"testing"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// fakeFrame is one frame to put in a synthetic ring block.
type fakeFrame struct {
	pkttype uint8
	hatype  uint16
	data    []byte // from the link-layer header (or the IP header)
	netOff  int    // offset of the network header in data
	vlanTCI uint16 // tp_vlan_tci with TP_STATUS_VLAN_VALID; 0: none
	wire    int    // tp_len; 0 means len(data)
	sec     uint32
	nsec    uint32
}

// fillBlock writes frames into block i of r's ring the way the kernel does
// and marks the block as user-owned.
func fillBlock(t testing.TB, r *blockReader, i int, frames []fakeFrame) {
	t.Helper()
	block := r.ring[i*r.blockSize : (i+1)*r.blockSize]
	clear(block)
	bh := block[blockHdrOff:]
	off := 48
	ne.PutUint32(bh[offBlkFirst:], uint32(off))
	const macOff = 80 // TPACKET_ALIGN(48 + sizeof(sockaddr_ll)) + 16, as the kernel pads it
	for j, f := range frames {
		size := (macOff + len(f.data) + tpacketAlignment - 1) &^ (tpacketAlignment - 1)
		if off+size > len(block) {
			t.Fatalf("block %d full at frame %d", i, j)
		}
		th := block[off:]
		ne.PutUint32(th[offFrameSec:], f.sec)
		ne.PutUint32(th[offFrameNsec:], f.nsec)
		ne.PutUint32(th[offFrameSnaplen:], uint32(len(f.data)))
		wire := f.wire
		if wire == 0 {
			wire = len(f.data)
		}
		ne.PutUint32(th[offFrameLen:], uint32(wire))
		ne.PutUint16(th[offFrameMac:], macOff)
		ne.PutUint16(th[offFrameNet:], uint16(macOff+f.netOff))
		if f.vlanTCI != 0 {
			ne.PutUint32(th[offFrameStatus:], statusVLANValid)
			ne.PutUint32(th[offFrameVLANTCI:], uint32(f.vlanTCI))
		}
		if j < len(frames)-1 {
			ne.PutUint32(th[offFrameNext:], uint32(size))
		}
		sll := block[off+tpacketHdrLen:]
		ne.PutUint16(sll[0:], 17) // AF_PACKET
		ne.PutUint16(sll[offSllHatype:], f.hatype)
		sll[offSllPkttype] = f.pkttype
		copy(block[off+macOff:], f.data)
		off += size
	}
	ne.PutUint32(bh[offBlkNumPkts:], uint32(len(frames)))
	ne.PutUint32(bh[offBlkStatus:], statusUser)
}

func newFakeReader(port uint16) *blockReader {
	const bs = 64 << 10
	return newBlockReader(make([]byte, 2*bs), bs, port)
}

// Link and packet types of the test frames (linux/if_arp.h, if_packet.h).
const (
	arphrdNone   = 0xfffe
	arphrdIPGRE  = 778
	pktBroadcast = 1
	pktOtherHost = 3
)

type blockRecorder struct {
	blocks [][]tcp.Packet
	safe   []int64
	worker int
}

func (r *blockRecorder) Block(w int, pkts []tcp.Packet, safe int64) {
	r.worker = w
	r.blocks = append(r.blocks, append([]tcp.Packet(nil), pkts...))
	r.safe = append(r.safe, safe)
}

func (r *blockRecorder) Idle(int, int64) {}

func TestDeliverBlock(t *testing.T) {
	good := goodFrames()
	f4, f6 := good["ipv4"], good["ipv6"]
	e4, e6 := f4.build(), f6.build()
	other := f4
	other.dst = netipPort(other.dst, 9999)
	udp := f4
	udp.proto = 17
	const host, out = pktHost, pktOutgoing
	frames := []fakeFrame{
		{pkttype: out, hatype: arphrdEther, data: e4, netOff: 14, sec: 100, nsec: 5},
		{pkttype: host, hatype: arphrdLoopback, data: e6, netOff: 14, sec: 100, nsec: 6},
		{pkttype: pktBroadcast, hatype: arphrdEther, data: e4, netOff: 14},
		{pkttype: pktOtherHost, hatype: arphrdEther, data: e4, netOff: 14},
		{pkttype: host, hatype: arphrdEther, data: e4[:40], wire: len(e4), netOff: 14},
		{pkttype: host, hatype: arphrdEther, data: other.build(), netOff: 14},
		{pkttype: host, hatype: arphrdEther, data: udp.build(), netOff: 14},
		{pkttype: host, hatype: arphrdEther, data: append([]byte(nil), e4[:14]...), netOff: 14},
		// A device without a link-layer header (tun): IP at tp_net.
		{pkttype: host, hatype: arphrdNone, data: e4[14:], netOff: 0, sec: 101, nsec: 7},
		// A tunnel whose "link-layer" header the decoder must skip.
		{pkttype: out, hatype: arphrdIPGRE, data: append(make([]byte, 4), e6[14:]...), netOff: 4, sec: 101, nsec: 8},
	}
	w := newFakeReader(f4.dst.Port())
	fillBlock(t, w, 0, frames)
	var rec blockRecorder
	if !w.ready() {
		t.Fatal("block 0 not ready")
	}
	w.deliver(3, &rec)
	if w.cur != 1 || w.ready() {
		t.Fatalf("after deliver: cur %d, ready %v", w.cur, w.ready())
	}
	if s := *w.blockStatus(0); s != statusKernel {
		t.Errorf("block 0 status %#x, want TP_STATUS_KERNEL", s)
	}
	if rec.worker != 3 || len(rec.blocks) != 1 {
		t.Fatalf("got worker %d, %d blocks", rec.worker, len(rec.blocks))
	}
	want := []tcp.Packet{f4.want(), f6.want(), f4.want(), f6.want()}
	want[0].Time, want[0].Dir = 100e9+5, tcp.DirOut
	want[1].Time, want[1].Dir = 100e9+6, tcp.DirIn
	want[2].Time, want[2].Dir = 101e9+7, tcp.DirIn
	want[3].Time, want[3].Dir = 101e9+8, tcp.DirOut
	got := rec.blocks[0]
	if len(got) != len(want) {
		t.Fatalf("got %d packets, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("packet %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	// The block's watermark: its newest packet time less StampLag (a
	// later block may hold a packet stamped up to StampLag earlier).
	if want := int64(101e9+8) - int64(StampLag); rec.safe[0] != want {
		t.Errorf("block watermark %d, want %d", rec.safe[0], want)
	}
	st := Stats{
		Frames: w.frames.Load(), Packets: [2]uint64{w.packets[0].Load(), w.packets[1].Load()},
		NotLocal: w.notLocal.Load(), Truncated: w.truncated.Load(), Malformed: w.malformed.Load(), Filtered: w.filtered.Load(),
	}
	wantStats := Stats{Frames: 10, Packets: [2]uint64{2, 2}, NotLocal: 2, Truncated: 2, Filtered: 2}
	if st != wantStats {
		t.Errorf("stats\n got %+v\nwant %+v", st, wantStats)
	}

	// The ring wraps around: block 1, then block 0 again.
	fillBlock(t, w, 1, frames[:1])
	w.deliver(3, &rec)
	fillBlock(t, w, 0, nil)
	w.deliver(3, &rec)
	if w.cur != 1 || len(rec.blocks) != 3 || len(rec.blocks[1]) != 1 || len(rec.blocks[2]) != 0 {
		t.Errorf("wrap: cur %d, blocks %d", w.cur, len(rec.blocks))
	}
	if rec.safe[2] != 0 {
		t.Errorf("watermark of a block without packets %d, want 0", rec.safe[2])
	}
}

// TestDeliverCorruptBlock feeds frame offsets a sane kernel never writes:
// the walk must stop without reading outside the block.
func TestDeliverCorruptBlock(t *testing.T) {
	e4 := goodFrames()["ipv4"]
	data := e4.build()
	for _, corrupt := range []func(bh, th []byte){
		func(bh, _ []byte) { ne.PutUint32(bh[offBlkFirst:], 1<<30) },
		func(bh, _ []byte) { ne.PutUint32(bh[offBlkNumPkts:], 1<<20) },
		func(_, th []byte) { ne.PutUint32(th[offFrameNext:], 1<<31) },
		func(_, th []byte) { ne.PutUint32(th[offFrameSnaplen:], 1<<31) },
		func(_, th []byte) { ne.PutUint16(th[offFrameMac:], 0xffff) },
		func(_, th []byte) { ne.PutUint16(th[offFrameNet:], 0) },
	} {
		w := newFakeReader(0)
		fillBlock(t, w, 0, []fakeFrame{
			{pkttype: pktHost, hatype: arphrdNone, data: data[14:]},
			{pkttype: pktHost, hatype: arphrdNone, data: data[14:]},
		})
		corrupt(w.ring[blockHdrOff:], w.ring[48:])
		w.deliver(3, &blockRecorder{})
		if w.malformed.Load() == 0 {
			t.Errorf("corrupt block: no frame counted as malformed")
		}
	}
}

func TestDeliverAllocs(t *testing.T) {
	e4 := goodFrames()["ipv4"]
	data := e4.build()
	frames := make([]fakeFrame, 200)
	for i := range frames {
		frames[i] = fakeFrame{pkttype: pktOutgoing, hatype: arphrdEther, data: data, netOff: 14}
	}
	w := newFakeReader(0)
	fillBlock(t, w, 0, frames)
	var h nopHandler
	if n := testing.AllocsPerRun(100, func() {
		*w.blockStatus(0) = statusUser
		w.cur = 0
		w.deliver(3, h)
	}); n != 0 {
		t.Errorf("%v allocations per block", n)
	}
}

type nopHandler struct{}

func (nopHandler) Block(int, []tcp.Packet, int64) {}
func (nopHandler) Idle(int, int64)                {}

// BenchmarkDeliverBlock measures the per-frame cost of walking and decoding
// a ring block of headers-only frames, as the filter's snap length makes
// them.
func BenchmarkDeliverBlock(b *testing.B) {
	good := goodFrames()
	var frames []fakeFrame
	for i := 0; i < 400; i++ {
		f := good["ipv4"]
		if i%2 == 1 {
			f = good["ipv6"]
		}
		data := f.build()
		frames = append(frames, fakeFrame{pkttype: uint8(i % 2 * pktOutgoing), hatype: arphrdEther, data: data[:f.headerLen()], wire: len(data), netOff: 14})
	}
	w := newFakeReader(0)
	fillBlock(b, w, 0, frames)
	b.ReportAllocs()
	for b.Loop() {
		*w.blockStatus(0) = statusUser
		w.cur = 0
		w.deliver(3, nopHandler{})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(frames)), "ns/frame")
}

// TestDeliverDiscardedByStack checks that frames the IP stack drops before
// TCP are counted, not delivered: a received frame tagged for a VLAN the
// interface has no device for, a tag still in a received frame, a bad IPv4
// header checksum, an IP length beyond the frame, three VLAN tags.
func TestDeliverDiscardedByStack(t *testing.T) {
	good := goodFrames()
	f4 := good["ipv4"]
	e4 := f4.build()
	tagged := f4
	tagged.vlans = []uint16{etherTypeVLAN}
	t1 := tagged.build()
	three := f4
	three.vlans = []uint16{etherTypeQinQ, etherTypeVLAN, etherTypeVLAN}
	badSum := append([]byte(nil), e4...)
	badSum[ethHeaderLen+10] ^= 1
	long := append([]byte(nil), e4...)
	ne.PutUint16(long[ethHeaderLen+2:], 0) // zero: from the wire length, fine
	setIPv4Checksum(long[ethHeaderLen : ethHeaderLen+20])
	long2 := append([]byte(nil), e4...)
	long2[ethHeaderLen+2], long2[ethHeaderLen+3] = 0x05, 0xdc // 1500 bytes in a 54-byte frame
	setIPv4Checksum(long2[ethHeaderLen : ethHeaderLen+20])
	frames := []fakeFrame{
		{pkttype: pktHost, hatype: arphrdEther, data: e4, netOff: 14, vlanTCI: 100},          // no VLAN 100 here
		{pkttype: pktHost, hatype: arphrdEther, data: e4, netOff: 14, vlanTCI: 0x2000 | 200}, // VLAN 200 (priority 1) is the interface's
		{pkttype: pktHost, hatype: arphrdEther, data: e4, netOff: 14, vlanTCI: 0x2000},       // priority tag, VLAN 0: the interface's own
		{pkttype: pktOutgoing, hatype: arphrdEther, data: e4, netOff: 14, vlanTCI: 100},      // sent by a VLAN device's socket
		{pkttype: pktHost, hatype: arphrdEther, data: t1, netOff: 18},                        // a second tag, still in the frame
		{pkttype: pktOutgoing, hatype: arphrdEther, data: t1, netOff: 18},                    // tagged on transmit without offload
		{pkttype: pktOutgoing, hatype: arphrdEther, data: three.build(), netOff: 26},
		{pkttype: pktHost, hatype: arphrdEther, data: badSum, netOff: 14},
		{pkttype: pktHost, hatype: arphrdEther, data: long2, netOff: 14},
		{pkttype: pktHost, hatype: arphrdEther, data: long[:54], wire: 1000, netOff: 14},
	}
	r := newFakeReader(0)
	r.vlans = map[uint16]bool{200: true}
	fillBlock(t, r, 0, frames)
	var rec blockRecorder
	r.deliver(3, &rec)
	st := Stats{
		Frames: r.frames.Load(), Packets: [2]uint64{r.packets[0].Load(), r.packets[1].Load()},
		NotLocal: r.notLocal.Load(), Truncated: r.truncated.Load(), Malformed: r.malformed.Load(), Filtered: r.filtered.Load(), VLAN: r.vlan.Load(),
	}
	want := Stats{Frames: 10, Packets: [2]uint64{3, 2}, VLAN: 2, Malformed: 3}
	if st != want {
		t.Errorf("stats\n got %+v\nwant %+v", st, want)
	}
	if len(rec.blocks) != 1 || len(rec.blocks[0]) != 5 {
		t.Fatalf("delivered %d packets, want 5", len(rec.blocks[0]))
	}
}

func TestParseVLANConfig(t *testing.T) {
	const config = `VLAN Dev name	 | VLAN ID
Name-Type: VLAN_NAME_TYPE_RAW_PLUS_VID_NO_PAD
eth0.100       | 100  | eth0
eth0.7         | 7  | eth0
veth-a.5       | 5  | veth-a
bad            | x  | eth0
`
	got := parseVLANConfig(config, "eth0")
	if len(got) != 2 || !got[100] || !got[7] {
		t.Errorf("eth0: %v, want 100 and 7", got)
	}
	if got := parseVLANConfig(config, "lo"); len(got) != 0 {
		t.Errorf("lo: %v, want none", got)
	}
}
