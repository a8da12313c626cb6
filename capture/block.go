package capture

import (
	"encoding/binary"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// The TPACKET_V3 ring layout the block walk reads (linux/if_packet.h), the
// same on every architecture, in the machine's byte order. The walk is
// portable so that it is tested everywhere on synthetic blocks;
// ring_linux_test.go checks these offsets against golang.org/x/sys/unix's
// mirrors of the kernel structs.
const (
	// blockHdrOff is the offset of the tpacket_hdr_v1 inside a
	// tpacket_block_desc; its fields, from there:
	blockHdrOff   = 8
	offBlkStatus  = 0 // block_status
	offBlkNumPkts = 4 // num_pkts
	offBlkFirst   = 8 // offset_to_first_pkt

	// tpacket3_hdr fields.
	offFrameNext    = 0  // tp_next_offset
	offFrameSec     = 4  // tp_sec
	offFrameNsec    = 8  // tp_nsec
	offFrameSnaplen = 12 // tp_snaplen
	offFrameLen     = 16 // tp_len
	offFrameStatus  = 20 // tp_status
	offFrameMac     = 24 // tp_mac (u16)
	offFrameNet     = 26 // tp_net (u16)
	offFrameVLANTCI = 32 // hv1.tp_vlan_tci

	// tpacketHdrLen is TPACKET_ALIGN(sizeof(struct tpacket3_hdr)): the
	// sockaddr_ll follows the header at this offset.
	tpacketHdrLen = 48
	// tpacketAlignment is TPACKET_ALIGNMENT.
	tpacketAlignment = 16
	// sockaddr_ll: its size and fields.
	sllLen        = 20
	offSllHatype  = 8  // u16
	offSllPkttype = 10 // u8

	// Block and frame status bits.
	statusKernel    = 0
	statusUser      = 1 << 0
	statusVLANValid = 1 << 4

	// sll_pkttype values.
	pktHost     = 0
	pktOutgoing = 4

	// sll_hatype values decoded from the Ethernet header.
	arphrdEther    = 1
	arphrdLoopback = 772

	// minFrame is a lower bound on the ring space one frame takes (header,
	// sockaddr_ll, Ethernet, IPv4 and TCP headers), used to size the
	// per-worker packet slice so that a block never outgrows it.
	minFrame = 128
)

var ne = binary.NativeEndian

// blockReader walks one ring's blocks in order: the part of a worker that
// needs no system call. Its counters are written by the worker's goroutine
// and read by Stats.
type blockReader struct {
	ring      []byte
	blockSize int
	blocks    int
	cur       int          // next block to read
	pkts      []tcp.Packet // reused for every block; len is the capacity in use
	// filter is the port filter frames are checked against once decoded
	// (the kernel's filter leaves some to user space); SetPort replaces it.
	filter atomic.Pointer[portFilter]
	// vlans are the VLAN ids of the captured interface's VLAN devices: an
	// inbound frame tagged with another id is not the interface's, and the
	// stack drops it.
	vlans map[uint16]bool

	// Counters. The padding keeps workers' counters off each other's
	// cache lines.
	_         [64]byte
	frames    atomic.Uint64
	packets   [2]atomic.Uint64
	notLocal  atomic.Uint64
	truncated atomic.Uint64
	malformed atomic.Uint64
	filtered  atomic.Uint64
	vlan      atomic.Uint64
	_         [64]byte
}

func newBlockReader(ring []byte, blockSize int, port uint16) *blockReader {
	r := &blockReader{
		ring: ring, blockSize: blockSize, blocks: len(ring) / blockSize,
		pkts: make([]tcp.Packet, blockSize/minFrame),
	}
	r.filter.Store(&portFilter{port: port})
	return r
}

// portFilter is the port filter of decoded frames: TCP segments with port
// (0: any) as source or destination port, and, after a change of port, also
// those of the previous port captured before the change (see
// Capture.SetPort).
type portFilter struct {
	port uint16
	// old is the previous port, kept for frames with a capture time before
	// oldUntil (ns since the Unix epoch); oldUntil 0 keeps none.
	old      uint16
	oldUntil int64
}

// accepts reports whether a segment between ports a and b captured at t
// passes the filter.
func (f *portFilter) accepts(a, b uint16, t int64) bool {
	if f.port == 0 || a == f.port || b == f.port {
		return true
	}
	return t < f.oldUntil && (f.old == 0 || a == f.old || b == f.old)
}

// blockStatus returns a pointer to the block_status word of block i.
func (r *blockReader) blockStatus(i int) *uint32 {
	return (*uint32)(unsafe.Pointer(&r.ring[i*r.blockSize+blockHdrOff+offBlkStatus]))
}

// ready reports whether the next block belongs to user space.
func (r *blockReader) ready() bool {
	return atomic.LoadUint32(r.blockStatus(r.cur))&statusUser != 0
}

// walkCounts are one block's contributions to the counters.
type walkCounts struct {
	frames, notLocal, truncated, malformed, filtered, vlan uint64
	dirs                                                   [2]uint64
}

// deliver decodes the current block, hands it back to the kernel, passes its
// packets to h and moves to the next block. The block is released before
// h.Block runs: the packets are copies, and the kernel can refill the block
// while the handler works.
func (r *blockReader) deliver(id int, h Handler) {
	base := r.cur * r.blockSize
	n, c := r.walk(r.ring[base : base+r.blockSize : base+r.blockSize])
	atomic.StoreUint32(r.blockStatus(r.cur), statusKernel)
	r.cur++
	if r.cur == r.blocks {
		r.cur = 0
	}
	r.frames.Add(c.frames)
	r.packets[tcp.DirIn].Add(c.dirs[tcp.DirIn])
	r.packets[tcp.DirOut].Add(c.dirs[tcp.DirOut])
	if c.notLocal|c.truncated|c.malformed|c.filtered|c.vlan != 0 {
		r.notLocal.Add(c.notLocal)
		r.truncated.Add(c.truncated)
		r.malformed.Add(c.malformed)
		r.filtered.Add(c.filtered)
		r.vlan.Add(c.vlan)
	}
	var safe int64
	for i := range n {
		safe = max(safe, r.pkts[i].Time)
	}
	if n > 0 {
		safe -= int64(StampLag)
	}
	h.Block(id, r.pkts[:n], safe)
}

// walk decodes the frames of one block into r.pkts and counts them.
func (r *blockReader) walk(block []byte) (n int, c walkCounts) {
	filter := r.filter.Load()
	numPkts := int(ne.Uint32(block[blockHdrOff+offBlkNumPkts:]))
	off := int(ne.Uint32(block[blockHdrOff+offBlkFirst:]))
	for i := 0; i < numPkts; i++ {
		c.frames++
		if off < blockHdrOff || off > len(block)-tpacketHdrLen-sllLen {
			c.malformed++ // corrupt frame offset: stop walking this block
			break
		}
		th := block[off : off+tpacketHdrLen]
		sll := block[off+tpacketHdrLen : off+tpacketHdrLen+sllLen]
		next := int(ne.Uint32(th[offFrameNext:]))
		if i < numPkts-1 && next < tpacketHdrLen+sllLen {
			// A sane kernel never links frames like this; stop after this
			// frame rather than loop over the same bytes, and count the
			// rest of the block as one malformed frame.
			numPkts = i + 1
			c.frames++
			c.malformed++
		}
		var dir tcp.Direction
		switch sll[offSllPkttype] {
		case pktHost:
			dir = tcp.DirIn
		case pktOutgoing:
			dir = tcp.DirOut
		default:
			c.notLocal++
			off += next
			continue
		}
		mac := off + int(ne.Uint16(th[offFrameMac:]))
		nh := off + int(ne.Uint16(th[offFrameNet:]))
		snap, wire := int(ne.Uint32(th[offFrameSnaplen:])), int(ne.Uint32(th[offFrameLen:]))
		if mac > len(block) || snap < 0 || snap > len(block)-mac || nh < mac || nh > mac+snap {
			c.malformed++
			off += next
			continue
		}
		if dir == tcp.DirIn && ne.Uint32(th[offFrameStatus:])&statusVLANValid != 0 {
			// The tag the driver or the stack took out of the frame: a
			// frame for a VLAN the interface has goes to that VLAN's
			// device (capture there to log it); any other id is dropped.
			if vid := uint16(ne.Uint32(th[offFrameVLANTCI:]) & 0xfff); vid != 0 && !r.vlans[vid] {
				c.vlan++
				off += next
				continue
			}
		}
		if n == len(r.pkts) {
			// Frames are at least minFrame bytes, so this does not happen;
			// if it did, the slice would grow once and stay grown.
			r.pkts = append(r.pkts, tcp.Packet{})
			r.pkts = r.pkts[:cap(r.pkts)]
		}
		p := &r.pkts[n]
		var err error
		tags := 0
		switch ne.Uint16(sll[offSllHatype:]) {
		case arphrdEther, arphrdLoopback:
			tags, err = decodeEthernet(block[mac:mac+snap], wire, p)
		default:
			err = DecodeIP(block[nh:mac+snap], wire-(nh-mac), p)
		}
		switch {
		case err == nil && dir == tcp.DirIn && tags > 0:
			// A tag still in a received frame (the stack takes the outer
			// one out before the capture sees it): the frame is for a
			// stacked VLAN device, not this interface's stack.
			c.vlan++
		case err == nil && !filter.accepts(p.Src.Port(), p.Dst.Port(), frameTime(th)):
			c.filtered++
		case err == nil:
			p.Time = frameTime(th)
			p.Dir = dir
			c.dirs[dir]++
			n++
		case err == ErrTruncated:
			c.truncated++
		case err == ErrMalformed:
			c.malformed++
		default:
			c.filtered++
		}
		off += next
	}
	return n, c
}

// frameTime is the capture time of the frame with tpacket3_hdr th, in ns
// since the Unix epoch.
func frameTime(th []byte) int64 {
	return int64(ne.Uint32(th[offFrameSec:]))*1e9 + int64(ne.Uint32(th[offFrameNsec:]))
}

// parseVLANConfig reads /proc/net/vlan/config ("NAME | VID | LOWER" rows
// after two header lines) and returns the ids of the VLANs on iface.
func parseVLANConfig(config, iface string) map[uint16]bool {
	var ids map[uint16]bool
	for i, ln := range strings.Split(config, "\n") {
		if i < 2 {
			continue
		}
		f := strings.Split(ln, "|")
		if len(f) != 3 || strings.TrimSpace(f[2]) != iface {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSpace(f[1]), 10, 12)
		if err != nil {
			continue
		}
		if ids == nil {
			ids = make(map[uint16]bool)
		}
		ids[uint16(v)] = true
	}
	return ids
}
