package tcp

import "net/netip"

// Direction is the way a packet crossed the local host, seen from its socket.
type Direction uint8

const (
	// DirIn is a packet delivered to this host (sll_pkttype PACKET_HOST).
	DirIn Direction = iota
	// DirOut is a packet sent by this host (sll_pkttype PACKET_OUTGOING).
	DirOut
)

// String returns "i" or "o", the SIFTR direction letters.
func (d Direction) String() string {
	if d == DirOut {
		return "o"
	}
	return "i"
}

// TCP header flags, as in the TCP header's flags byte.
const (
	FlagFIN = 0x01
	FlagSYN = 0x02
	FlagRST = 0x04
	FlagPSH = 0x08
	FlagACK = 0x10
	FlagURG = 0x20
	FlagECE = 0x40
	FlagCWR = 0x80
)

// Packet is one decoded TCP segment (or TSO/GRO buffer) as seen by the ring.
// It is a plain value: no field refers to ring memory.
type Packet struct {
	// Time is the kernel's capture timestamp in nanoseconds since the Unix epoch.
	Time int64
	// Src and Dst are the IP source and destination with TCP ports, exactly as
	// on the wire: an IPv4 packet has 4-byte addresses (never v4-mapped).
	Src, Dst netip.AddrPort
	// Seq and Ack are the TCP sequence and acknowledgment numbers.
	Seq, Ack uint32
	// PayloadLen is the TCP payload length in bytes, from the IP length fields
	// (not from the captured length, which is cut to the headers).
	PayloadLen uint32
	// Window is the raw (unscaled) TCP window field.
	Window uint16
	// Flags is the TCP flags byte (FlagFIN...FlagCWR).
	Flags uint8
	// Dir is the packet's direction relative to this host.
	Dir Direction
	// Skb is the kernel's address of the packet's socket buffer where the
	// source knows it (exact mode), else 0. It joins records with kernel
	// traces in tests and benchmarks; it is never logged (it would reveal
	// kernel addresses to readers of the log).
	Skb uint64
}

// Local returns the local socket's address: the source of an outbound packet,
// the destination of an inbound one.
func (p *Packet) Local() netip.AddrPort {
	if p.Dir == DirOut {
		return p.Src
	}
	return p.Dst
}

// Remote returns the peer's address: the destination of an outbound packet,
// the source of an inbound one.
func (p *Packet) Remote() netip.AddrPort {
	if p.Dir == DirOut {
		return p.Dst
	}
	return p.Src
}
