package capture

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// Errors returned by the decoders. The ring counts frames by these reasons
// (Stats.Truncated, Stats.Malformed, Stats.Filtered); callers may test them
// with errors.Is.
var (
	// ErrTruncated means the frame ends before the end of the TCP header
	// (options included).
	ErrTruncated = errors.New("capture: frame truncated before end of TCP header")
	// ErrMalformed means the IP stack would drop the packet before TCP
	// sees it: an invalid IP or TCP header field (version, header length,
	// data offset, length fields too small for the headers), a bad IPv4
	// header checksum, an IP length larger than the packet, more than two
	// VLAN tags; or the packet is a non-first fragment, which carries no
	// TCP header.
	ErrMalformed = errors.New("capture: malformed IP/TCP header")
	// ErrNotTCP means the frame is well formed but is not IPv4/IPv6 TCP: another
	// EtherType or IP protocol, or an unsupported IPv6 extension header.
	ErrNotTCP = errors.New("capture: not a TCP packet")
)

// EtherTypes and IP protocol numbers the decoder knows.
const (
	etherTypeIPv4  = 0x0800
	etherTypeIPv6  = 0x86dd
	etherTypeVLAN  = 0x8100 // 802.1Q
	etherTypeQinQ  = 0x88a8 // 802.1ad
	ipProtoHopOpts = 0
	ipProtoTCP     = 6
	ipProtoRouting = 43
	ipProtoFrag    = 44
	ipProtoDstOpts = 60

	ethHeaderLen  = 14
	vlanTagLen    = 4
	maxVLANTags   = 2
	ipv4MinHeader = 20
	ipv6Header    = 40
	tcpMinHeader  = 20
	// maxIPv6ExtHeaders bounds the extension header walk. Each header is at
	// least 8 bytes, so the captured length bounds it too; this is a guard.
	maxIPv6ExtHeaders = 16
)

// DecodeEthernet decodes an Ethernet frame (with at most two 802.1Q/802.1ad
// tags) carrying IPv4 or IPv6 TCP into p. frame is the captured part of the
// frame, starting at the destination MAC; wireLen is the frame's full length
// on the wire (the kernel's tp_len), used when the IP length field is zero
// (BIG TCP, GSO). A wireLen shorter than the captured frame is raised to it.
//
// DecodeEthernet sets every field of p except Time and Dir. It does not
// retain frame, never allocates and never panics; on error p's contents are
// unspecified. Errors are ErrTruncated, ErrMalformed or ErrNotTCP.
//
// Like the IP stack, it refuses (ErrMalformed) an IPv4 header whose
// checksum is wrong and an IP length beyond wireLen: the kernel drops such
// packets before TCP, so no socket state belongs to them.
func DecodeEthernet(frame []byte, wireLen int, p *tcp.Packet) error {
	_, err := decodeEthernet(frame, wireLen, p)
	return err
}

// decodeEthernet is DecodeEthernet; it also returns the number of VLAN tags
// in the frame.
func decodeEthernet(frame []byte, wireLen int, p *tcp.Packet) (tags int, err error) {
	if len(frame) < ethHeaderLen {
		return 0, ErrTruncated
	}
	off := 12
	etherType := binary.BigEndian.Uint16(frame[off:])
	for ; etherType == etherTypeVLAN || etherType == etherTypeQinQ; tags++ {
		if tags == maxVLANTags {
			return tags, ErrMalformed
		}
		off += vlanTagLen
		if len(frame) < off+2 {
			return tags, ErrTruncated
		}
		etherType = binary.BigEndian.Uint16(frame[off:])
	}
	off += 2
	if wireLen < len(frame) {
		wireLen = len(frame)
	}
	switch etherType {
	case etherTypeIPv4:
		return tags, decodeIPv4(frame[off:], wireLen-off, p)
	case etherTypeIPv6:
		return tags, decodeIPv6(frame[off:], wireLen-off, p)
	}
	return tags, ErrNotTCP
}

// DecodeIP decodes an IPv4 or IPv6 TCP packet into p, choosing the version
// from the first nibble. b is the captured part of the packet, starting at
// the IP header; wireLen is the packet's full length from the IP header on,
// used when the IP length field is zero (BIG TCP, GSO). A wireLen shorter
// than b is raised to len(b).
//
// DecodeIP sets every field of p except Time and Dir. It does not retain b,
// never allocates and never panics; on error p's contents are unspecified.
// Errors are ErrTruncated, ErrMalformed or ErrNotTCP.
func DecodeIP(b []byte, wireLen int, p *tcp.Packet) error {
	if len(b) < 1 {
		return ErrTruncated
	}
	if wireLen < len(b) {
		wireLen = len(b)
	}
	switch b[0] >> 4 {
	case 4:
		return decodeIPv4(b, wireLen, p)
	case 6:
		return decodeIPv6(b, wireLen, p)
	}
	return ErrMalformed
}

// decodeIPv4 decodes b, which starts at an IPv4 header; wireLen >= len(b).
func decodeIPv4(b []byte, wireLen int, p *tcp.Packet) error {
	if len(b) < ipv4MinHeader {
		return ErrTruncated
	}
	if b[0]>>4 != 4 {
		return ErrMalformed
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < ipv4MinHeader {
		return ErrMalformed
	}
	total := int(binary.BigEndian.Uint16(b[2:]))
	if total == 0 {
		// TSO/GSO and IPv4 BIG TCP buffers may carry a zero total length.
		total = wireLen
	}
	if total < ihl || total > wireLen {
		return ErrMalformed // the stack drops a packet shorter than its IP length
	}
	if binary.BigEndian.Uint16(b[6:])&0x1fff != 0 {
		return ErrMalformed // non-first fragment: no TCP header
	}
	if b[9] != ipProtoTCP {
		return ErrNotTCP
	}
	if len(b) < ihl {
		return ErrTruncated
	}
	if !ipv4ChecksumOK(b[:ihl]) {
		return ErrMalformed
	}
	sport, dport, err := decodeTCP(b[ihl:], total-ihl, p)
	if err != nil {
		return err
	}
	p.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[12:16])), sport)
	p.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[16:20])), dport)
	return nil
}

// decodeIPv6 decodes b, which starts at an IPv6 header; wireLen >= len(b).
func decodeIPv6(b []byte, wireLen int, p *tcp.Packet) error {
	if len(b) < ipv6Header {
		return ErrTruncated
	}
	if b[0]>>4 != 6 {
		return ErrMalformed
	}
	payload := int(binary.BigEndian.Uint16(b[4:]))
	if payload == 0 {
		// Jumbograms and BIG TCP/GSO buffers carry a zero payload length.
		payload = wireLen - ipv6Header
	}
	if payload > wireLen-ipv6Header {
		return ErrMalformed // the stack drops a packet shorter than its IP length
	}
	next := b[6]
	off := ipv6Header
	for i := 0; next != ipProtoTCP; i++ {
		if i == maxIPv6ExtHeaders {
			return ErrMalformed
		}
		var n int
		switch next {
		case ipProtoHopOpts, ipProtoRouting, ipProtoDstOpts:
			if len(b) < off+2 {
				return ErrTruncated
			}
			n = (int(b[off+1]) + 1) * 8
		case ipProtoFrag:
			if len(b) < off+4 {
				return ErrTruncated
			}
			if binary.BigEndian.Uint16(b[off+2:])&0xfff8 != 0 {
				return ErrMalformed // non-first fragment: no TCP header
			}
			n = 8
		default:
			return ErrNotTCP
		}
		next = b[off]
		off += n
		payload -= n
		if payload < 0 {
			return ErrMalformed
		}
		if len(b) < off {
			return ErrTruncated
		}
	}
	sport, dport, err := decodeTCP(b[off:], payload, p)
	if err != nil {
		return err
	}
	p.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])), sport)
	p.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[24:40])), dport)
	return nil
}

// ipv4ChecksumOK reports whether an IPv4 header's checksum is right: its
// 16-bit one's complement sum, checksum included, is 0xffff.
func ipv4ChecksumOK(h []byte) bool {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}

// decodeTCP decodes the TCP header at the start of b; segLen is the TCP
// segment's length (header and payload) from the IP length fields. It sets
// every TCP field of p and returns the ports for the IP decoder, which sets
// the addresses.
func decodeTCP(b []byte, segLen int, p *tcp.Packet) (sport, dport uint16, err error) {
	if len(b) < tcpMinHeader {
		return 0, 0, ErrTruncated
	}
	doff := int(b[12]>>4) * 4
	if doff < tcpMinHeader {
		return 0, 0, ErrMalformed
	}
	if len(b) < doff {
		return 0, 0, ErrTruncated
	}
	if segLen < doff {
		return 0, 0, ErrMalformed
	}
	p.Seq = binary.BigEndian.Uint32(b[4:])
	p.Ack = binary.BigEndian.Uint32(b[8:])
	p.Flags = b[13]
	p.Window = binary.BigEndian.Uint16(b[14:])
	p.PayloadLen = uint32(segLen - doff)
	return binary.BigEndian.Uint16(b[0:]), binary.BigEndian.Uint16(b[2:]), nil
}
