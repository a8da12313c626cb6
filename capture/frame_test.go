package capture

import (
	"encoding/binary"
	"net/netip"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// frame describes a test frame for build. The zero value of each field
// means "none" or "plain".
type frame struct {
	vlans    []uint16 // TPIDs of the VLAN tags, outermost first
	src, dst netip.AddrPort
	ipv4Opts int   // bytes of IPv4 options (a multiple of 4)
	ext      []ext // IPv6 extension headers, in order
	fragOff  uint16
	moreFrag bool
	proto    uint8 // IP protocol or last next header; 0 means TCP
	zeroLen  bool  // IP length field 0 (BIG TCP, GSO)
	tcpOpts  int   // bytes of TCP options (a multiple of 4)
	seq, ack uint32
	flags    uint8
	window   uint16
	payload  int
}

// ext is an IPv6 extension header: its protocol number and total length (a
// multiple of 8; fragment headers are always 8).
type ext struct {
	proto uint8
	len   int
	// fragOff and more apply to fragment headers.
	fragOff uint16
	more    bool
}

// headerLen is the length of every header up to the end of the TCP header.
func (f *frame) headerLen() int {
	n := ethHeaderLen + vlanTagLen*len(f.vlans) + tcpMinHeader + f.tcpOpts
	if f.src.Addr().Is4() {
		return n + ipv4MinHeader + f.ipv4Opts
	}
	n += ipv6Header
	for _, e := range f.ext {
		n += e.len
	}
	return n
}

// want is the Packet a decoder should return for f.
func (f *frame) want() tcp.Packet {
	return tcp.Packet{
		Src: f.src, Dst: f.dst, Seq: f.seq, Ack: f.ack,
		PayloadLen: uint32(f.payload), Window: f.window, Flags: f.flags,
	}
}

// build returns the Ethernet frame f describes, payload included.
func (f *frame) build() []byte {
	proto := f.proto
	if proto == 0 {
		proto = ipProtoTCP
	}
	tcp := make([]byte, tcpMinHeader+f.tcpOpts+f.payload)
	binary.BigEndian.PutUint16(tcp[0:], f.src.Port())
	binary.BigEndian.PutUint16(tcp[2:], f.dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], f.seq)
	binary.BigEndian.PutUint32(tcp[8:], f.ack)
	tcp[12] = byte((tcpMinHeader+f.tcpOpts)/4) << 4
	tcp[13] = f.flags
	binary.BigEndian.PutUint16(tcp[14:], f.window)
	for i := 0; i < f.tcpOpts; i++ {
		tcp[tcpMinHeader+i] = 1 // NOP
	}
	for i := tcpMinHeader + f.tcpOpts; i < len(tcp); i++ {
		tcp[i] = byte(i)
	}

	var ip []byte
	etherType := uint16(etherTypeIPv4)
	if f.src.Addr().Is4() {
		ihl := ipv4MinHeader + f.ipv4Opts
		ip = make([]byte, ihl)
		ip[0] = 0x40 | byte(ihl/4)
		total := ihl + len(tcp)
		if !f.zeroLen {
			binary.BigEndian.PutUint16(ip[2:], uint16(total))
		}
		frag := f.fragOff
		switch {
		case f.moreFrag:
			frag |= 0x2000 // MF
		case f.fragOff == 0:
			frag |= 0x4000 // DF
		}
		binary.BigEndian.PutUint16(ip[6:], frag)
		ip[8] = 64
		ip[9] = proto
		s, d := f.src.Addr().As4(), f.dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		for i := ipv4MinHeader; i < ihl; i++ {
			ip[i] = 1 // NOP option
		}
		setIPv4Checksum(ip)
	} else {
		etherType = etherTypeIPv6
		ip = make([]byte, ipv6Header)
		ip[0] = 0x60
		ip[7] = 64
		s, d := f.src.Addr().As16(), f.dst.Addr().As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		nextp := &ip[6]
		for _, e := range f.ext {
			*nextp = e.proto
			h := make([]byte, e.len)
			if e.proto == ipProtoFrag {
				off := e.fragOff << 3
				if e.more {
					off |= 1
				}
				binary.BigEndian.PutUint16(h[2:], off)
				binary.BigEndian.PutUint32(h[4:], 0x12345678)
			} else {
				h[1] = byte(e.len/8 - 1)
				if e.proto == ipProtoRouting {
					h[2] = 4 // segment routing type, segments left 0
				} else if e.len > 2 {
					h[2] = 1 // PadN option over the rest
					h[3] = byte(e.len - 4)
				}
			}
			ip = append(ip, h...)
			nextp = &ip[len(ip)-e.len]
		}
		*nextp = proto
		if !f.zeroLen {
			binary.BigEndian.PutUint16(ip[4:], uint16(len(ip)-ipv6Header+len(tcp)))
		}
	}

	b := make([]byte, 12, ethHeaderLen+vlanTagLen*len(f.vlans)+len(ip)+len(tcp))
	copy(b, []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1})
	for i, tpid := range f.vlans {
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, uint16(100+i))
	}
	b = binary.BigEndian.AppendUint16(b, etherType)
	b = append(b, ip...)
	return append(b, tcp...)
}

// setIPv4Checksum sets the checksum of the IPv4 header h (IHL bytes).
func setIPv4Checksum(h []byte) {
	h[10], h[11] = 0, 0
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
}
