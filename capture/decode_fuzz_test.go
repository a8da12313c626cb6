package capture

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// FuzzDecodeEthernet checks that DecodeEthernet never panics, returns only
// its sentinel errors, and agrees with gopacket's layers wherever gopacket
// decodes Ethernet, up to two VLAN tags, one IP header (with IPv6 extension
// headers) and TCP without error.
func FuzzDecodeEthernet(f *testing.F) {
	for _, fr := range goodFrames() {
		b := fr.build()
		f.Add(b, 0)
		f.Add(b[:fr.headerLen()], len(b))
	}
	bad := goodFrames()["ipv4"]
	bad.fragOff = 3
	f.Add(bad.build(), 0)
	bad = goodFrames()["ipv6 chain"]
	bad.ext[3].fragOff = 8
	f.Add(bad.build(), 0)
	bad = goodFrames()["ipv4"]
	bad.zeroLen = true
	f.Add(bad.build(), 70000)

	f.Fuzz(func(t *testing.T, b []byte, extra int) {
		wire := len(b) + max(0, extra)%(1<<20)
		var p tcp.Packet
		err := DecodeEthernet(b, wire, &p)
		if err != nil && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotTCP) {
			t.Fatalf("unexpected error %v", err)
		}
		// The IP-level decoder must agree with the Ethernet one on untagged
		// frames whose IP version matches their EtherType. (DecodeIP goes by
		// the version alone; DecodeEthernet finds a mismatch malformed.)
		ipv4, ipv6 := len(b) > ethHeaderLen && b[12] == 0x08 && b[13] == 0x00, len(b) > ethHeaderLen && b[12] == 0x86 && b[13] == 0xdd
		if (ipv4 && b[14]>>4 != 4 || ipv6 && b[14]>>4 != 6) && err == nil {
			t.Fatalf("EtherType %#04x with IP version %d decoded: %+v", int(b[12])<<8|int(b[13]), b[14]>>4, p)
		}
		if ipv4 && b[14]>>4 == 4 || ipv6 && b[14]>>4 == 6 {
			var q tcp.Packet
			errIP := DecodeIP(b[ethHeaderLen:], wire-ethHeaderLen, &q)
			if (err == nil) != (errIP == nil) || err == nil && p != q {
				t.Fatalf("DecodeIP disagrees: %v %+v, DecodeEthernet: %v %+v", errIP, q, err, p)
			}
		}

		// The oracle: only frames that gopacket decodes cleanly and entirely
		// (no truncation, no zero IP length, whose meaning differs) down
		// to one TCP header.
		if extra > 0 {
			return
		}
		pkt := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.DecodeOptions{NoCopy: true})
		if pkt.ErrorLayer() != nil || pkt.Metadata().Truncated {
			return
		}
		tcpLayer, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok {
			return
		}
		// PayloadLen is computed from the IP length field and the header
		// lengths gopacket found (gopacket's own payload slices ignore the
		// IPv6 length when there is a hop-by-hop header).
		var tags, ips, ipPayload, hdrs int
		var src, dst netip.Addr
		afterIP := false
		for _, l := range pkt.Layers() {
			switch l := l.(type) {
			case *layers.Dot1Q:
				tags++
			case *layers.IPSecAH, *layers.IPSecESP:
				return // IPsec: the stack (xfrm) decides, not the decoder; it does not walk AH
			case *layers.IPv4:
				ips++
				if l.Length == 0 || l.Version != 4 {
					return // gopacket does not check the version; we do
				}
				if !ipv4ChecksumOK(l.Contents) {
					if !errors.Is(err, ErrMalformed) {
						t.Fatalf("bad IPv4 header checksum: %v, want ErrMalformed", err)
					}
					return
				}
				src, _ = netip.AddrFromSlice(l.SrcIP.To4())
				dst, _ = netip.AddrFromSlice(l.DstIP.To4())
				ipPayload = int(l.Length) - len(l.Contents)
				afterIP = true
			case *layers.IPv6:
				ips++
				if l.Length == 0 || l.Version != 6 {
					return
				}
				src, _ = netip.AddrFromSlice(l.SrcIP)
				dst, _ = netip.AddrFromSlice(l.DstIP)
				ipPayload = int(l.Length)
				afterIP = true
			default:
				if afterIP && l.LayerType() != gopacket.LayerTypePayload {
					hdrs += len(l.LayerContents())
				}
			}
		}
		if tags > maxVLANTags || ips != 1 {
			return // more than we decode by design
		}
		if ipPayload < hdrs {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("IP length %d below headers %d: %v, want ErrMalformed", ipPayload, hdrs, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("gopacket decodes %v, DecodeEthernet: %v", pkt, err)
		}
		want := tcp.Packet{
			Src:        netip.AddrPortFrom(src, uint16(tcpLayer.SrcPort)),
			Dst:        netip.AddrPortFrom(dst, uint16(tcpLayer.DstPort)),
			Seq:        tcpLayer.Seq,
			Ack:        tcpLayer.Ack,
			PayloadLen: uint32(ipPayload - hdrs),
			Window:     tcpLayer.Window,
			Flags:      tcpLayer.Contents[13],
		}
		if p != want {
			t.Fatalf("DecodeEthernet and gopacket disagree:\n got %+v\nwant %+v\n%v", p, want, pkt)
		}
	})
}
