//go:build linux

package capture

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// TestKernelStructLayout checks the x/sys/unix mirrors the ring reads
// against the kernel's uapi layouts (linux/if_packet.h), the same on every
// architecture.
func TestKernelStructLayout(t *testing.T) {
	var h unix.Tpacket3Hdr
	var bd unix.TpacketBlockDesc
	var v1 unix.TpacketHdrV1
	var sll unix.RawSockaddrLinklayer
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(tpacket3_hdr)", unsafe.Sizeof(h), 48},
		{"tpacket3_hdr.tp_next_offset", unsafe.Offsetof(h.Next_offset), 0},
		{"tpacket3_hdr.tp_sec", unsafe.Offsetof(h.Sec), 4},
		{"tpacket3_hdr.tp_nsec", unsafe.Offsetof(h.Nsec), 8},
		{"tpacket3_hdr.tp_snaplen", unsafe.Offsetof(h.Snaplen), 12},
		{"tpacket3_hdr.tp_len", unsafe.Offsetof(h.Len), 16},
		{"tpacket3_hdr.tp_status", unsafe.Offsetof(h.Status), 20},
		{"tpacket3_hdr.tp_mac", unsafe.Offsetof(h.Mac), 24},
		{"tpacket3_hdr.tp_net", unsafe.Offsetof(h.Net), 26},
		{"TPACKET_ALIGN(sizeof(tpacket3_hdr))", uintptr(tpacketHdrLen), 48},
		{"sizeof(tpacket_block_desc)", unsafe.Sizeof(bd), 48},
		{"tpacket_block_desc.hdr", unsafe.Offsetof(bd.Hdr), 8},
		{"blockHdrOff", uintptr(blockHdrOff), 8},
		{"sizeof(tpacket_hdr_v1)", unsafe.Sizeof(v1), 40},
		{"tpacket_hdr_v1.block_status", unsafe.Offsetof(v1.Block_status), 0},
		{"tpacket_hdr_v1.num_pkts", unsafe.Offsetof(v1.Num_pkts), 4},
		{"tpacket_hdr_v1.offset_to_first_pkt", unsafe.Offsetof(v1.Offset_to_first_pkt), 8},
		{"tpacket_hdr_v1.blk_len", unsafe.Offsetof(v1.Blk_len), 12},
		{"tpacket_hdr_v1.seq_num", unsafe.Offsetof(v1.Seq_num), 16},
		{"sizeof(sockaddr_ll)", unsafe.Sizeof(sll), 20},
		{"sockaddr_ll.sll_hatype", unsafe.Offsetof(sll.Hatype), 8},
		{"sockaddr_ll.sll_pkttype", unsafe.Offsetof(sll.Pkttype), 10},
		{"sizeof(tpacket_req3)", unsafe.Sizeof(unix.TpacketReq3{}), 28},
		{"sizeof(tpacket_stats_v3)", unsafe.Sizeof(unix.TpacketStatsV3{}), 12},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

// fakeFrame is one frame to put in a synthetic ring block.
type fakeFrame struct {
	pkttype uint8
	hatype  uint16
	data    []byte // from the link-layer header (or the IP header)
	netOff  int    // offset of the network header in data
	wire    int    // tp_len; 0 means len(data)
	sec     uint32
	nsec    uint32
}

// fillBlock writes frames into block i of w's ring the way the kernel does
// and marks the block as user-owned.
func fillBlock(t testing.TB, w *worker, i int, frames []fakeFrame) {
	t.Helper()
	block := w.ring[i*w.blockSize : (i+1)*w.blockSize]
	clear(block)
	bh := (*unix.TpacketHdrV1)(unsafe.Pointer(&block[blockHdrOff]))
	off := 48
	bh.Offset_to_first_pkt = uint32(off)
	const macOff = 80 // TPACKET_ALIGN(48 + sizeof(sockaddr_ll)) + 16, as the kernel pads it
	for j, f := range frames {
		size := (macOff + len(f.data) + tpacketAlignment - 1) &^ (tpacketAlignment - 1)
		if off+size > len(block) {
			t.Fatalf("block %d full at frame %d", i, j)
		}
		th := (*unix.Tpacket3Hdr)(unsafe.Pointer(&block[off]))
		th.Sec, th.Nsec = f.sec, f.nsec
		th.Snaplen = uint32(len(f.data))
		th.Len = uint32(f.wire)
		if f.wire == 0 {
			th.Len = uint32(len(f.data))
		}
		th.Mac = macOff
		th.Net = uint16(macOff + f.netOff)
		if j < len(frames)-1 {
			th.Next_offset = uint32(size)
		}
		sll := (*unix.RawSockaddrLinklayer)(unsafe.Pointer(&block[off+tpacketHdrLen]))
		sll.Family = unix.AF_PACKET
		sll.Hatype = f.hatype
		sll.Pkttype = f.pkttype
		copy(block[off+macOff:], f.data)
		off += size
	}
	bh.Num_pkts = uint32(len(frames))
	bh.Blk_len = uint32(off)
	bh.Block_status = unix.TP_STATUS_USER
}

func newFakeWorker(port uint16) *worker {
	const bs = 64 << 10
	return &worker{
		id: 3, fd: -1, ring: make([]byte, 2*bs), blockSize: bs, blocks: 2,
		pkts: make([]tcp.Packet, bs/minFrame), port: port,
	}
}

type blockRecorder struct {
	blocks [][]tcp.Packet
	worker int
}

func (r *blockRecorder) Block(w int, pkts []tcp.Packet) {
	r.worker = w
	r.blocks = append(r.blocks, append([]tcp.Packet(nil), pkts...))
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
	const host, out = unix.PACKET_HOST, unix.PACKET_OUTGOING
	frames := []fakeFrame{
		{pkttype: out, hatype: unix.ARPHRD_ETHER, data: e4, netOff: 14, sec: 100, nsec: 5},
		{pkttype: host, hatype: unix.ARPHRD_LOOPBACK, data: e6, netOff: 14, sec: 100, nsec: 6},
		{pkttype: unix.PACKET_BROADCAST, hatype: unix.ARPHRD_ETHER, data: e4, netOff: 14},
		{pkttype: unix.PACKET_OTHERHOST, hatype: unix.ARPHRD_ETHER, data: e4, netOff: 14},
		{pkttype: host, hatype: unix.ARPHRD_ETHER, data: e4[:40], netOff: 14},
		{pkttype: host, hatype: unix.ARPHRD_ETHER, data: other.build(), netOff: 14},
		{pkttype: host, hatype: unix.ARPHRD_ETHER, data: udp.build(), netOff: 14},
		{pkttype: host, hatype: unix.ARPHRD_ETHER, data: append([]byte(nil), e4[:14]...), netOff: 14},
		// A device without a link-layer header (tun): IP at tp_net.
		{pkttype: host, hatype: unix.ARPHRD_NONE, data: e4[14:], netOff: 0, sec: 101, nsec: 7},
		// A tunnel whose "link-layer" header the decoder must skip.
		{pkttype: out, hatype: unix.ARPHRD_IPGRE, data: append(make([]byte, 4), e6[14:]...), netOff: 4, sec: 101, nsec: 8},
	}
	w := newFakeWorker(f4.dst.Port())
	fillBlock(t, w, 0, frames)
	var rec blockRecorder
	if !w.ready() {
		t.Fatal("block 0 not ready")
	}
	w.deliver(&rec)
	if w.cur != 1 || w.ready() {
		t.Fatalf("after deliver: cur %d, ready %v", w.cur, w.ready())
	}
	if s := *w.blockStatus(0); s != unix.TP_STATUS_KERNEL {
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
	w.deliver(&rec)
	fillBlock(t, w, 0, nil)
	w.deliver(&rec)
	if w.cur != 1 || len(rec.blocks) != 3 || len(rec.blocks[1]) != 1 || len(rec.blocks[2]) != 0 {
		t.Errorf("wrap: cur %d, blocks %d", w.cur, len(rec.blocks))
	}
}

// TestDeliverCorruptBlock feeds frame offsets a sane kernel never writes:
// the walk must stop without reading outside the block.
func TestDeliverCorruptBlock(t *testing.T) {
	e4 := goodFrames()["ipv4"]
	data := e4.build()
	for _, corrupt := range []func(*unix.TpacketHdrV1, *unix.Tpacket3Hdr){
		func(bh *unix.TpacketHdrV1, _ *unix.Tpacket3Hdr) { bh.Offset_to_first_pkt = 1 << 30 },
		func(bh *unix.TpacketHdrV1, _ *unix.Tpacket3Hdr) { bh.Num_pkts = 1 << 20 },
		func(_ *unix.TpacketHdrV1, th *unix.Tpacket3Hdr) { th.Next_offset = 1 << 31 },
		func(_ *unix.TpacketHdrV1, th *unix.Tpacket3Hdr) { th.Snaplen = 1 << 31 },
		func(_ *unix.TpacketHdrV1, th *unix.Tpacket3Hdr) { th.Mac = 0xffff },
		func(_ *unix.TpacketHdrV1, th *unix.Tpacket3Hdr) { th.Net = 0 },
	} {
		w := newFakeWorker(0)
		fillBlock(t, w, 0, []fakeFrame{
			{pkttype: unix.PACKET_HOST, hatype: unix.ARPHRD_NONE, data: data[14:]},
			{pkttype: unix.PACKET_HOST, hatype: unix.ARPHRD_NONE, data: data[14:]},
		})
		bh := (*unix.TpacketHdrV1)(unsafe.Pointer(&w.ring[blockHdrOff]))
		corrupt(bh, (*unix.Tpacket3Hdr)(unsafe.Pointer(&w.ring[48])))
		w.deliver(&blockRecorder{})
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
		frames[i] = fakeFrame{pkttype: unix.PACKET_OUTGOING, hatype: unix.ARPHRD_ETHER, data: data, netOff: 14}
	}
	w := newFakeWorker(0)
	fillBlock(t, w, 0, frames)
	var h nopHandler
	if n := testing.AllocsPerRun(100, func() {
		*w.blockStatus(0) = unix.TP_STATUS_USER
		w.cur = 0
		w.deliver(h)
	}); n != 0 {
		t.Errorf("%v allocations per block", n)
	}
}

type nopHandler struct{}

func (nopHandler) Block(int, []tcp.Packet) {}
func (nopHandler) Idle(int, int64)         {}

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
		frames = append(frames, fakeFrame{pkttype: uint8(i % 2 * unix.PACKET_OUTGOING), hatype: unix.ARPHRD_ETHER, data: data[:f.headerLen()], wire: len(data), netOff: 14})
	}
	w := newFakeWorker(0)
	fillBlock(b, w, 0, frames)
	b.ReportAllocs()
	for b.Loop() {
		*w.blockStatus(0) = unix.TP_STATUS_USER
		w.cur = 0
		w.deliver(nopHandler{})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(frames)), "ns/frame")
}
