package capture

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// runFilter interprets the subset of classic BPF that filterProgram uses,
// with the Linux extensions it relies on: the SKF_AD_PROTOCOL ancillary
// load and loads relative to the network header (SKF_NET_OFF). pkt starts at
// the link-layer header, net is the network header's offset in it and proto
// is skb->protocol. Like the kernel, an out-of-bounds load rejects the
// packet.
func runFilter(t *testing.T, prog []bpf.RawInstruction, pkt []byte, net int, proto uint16) uint32 {
	t.Helper()
	const skfADProtocol = 0xfffff000 // SKF_AD_OFF + SKF_AD_PROTOCOL
	load := func(k uint32, size int) (uint32, bool) {
		off := int(int32(k))
		if k >= skfNetOff {
			off = net + int(k-skfNetOff)
		}
		if off < 0 || off+size > len(pkt) {
			return 0, false
		}
		switch size {
		case 1:
			return uint32(pkt[off]), true
		case 2:
			return uint32(binary.BigEndian.Uint16(pkt[off:])), true
		}
		return binary.BigEndian.Uint32(pkt[off:]), true
	}
	sizes := map[uint16]int{0x00: 4, 0x08: 2, 0x10: 1} // BPF_W, BPF_H, BPF_B
	var a, x uint32
	var mem [16]uint32
	for pc := 0; pc < len(prog); pc++ {
		ins := prog[pc]
		var ok bool
		switch op := ins.Op; {
		case op == 0x20 && ins.K == skfADProtocol: // ld #proto
			a = uint32(proto)
		case op&0xe7 == 0x20: // BPF_LD|BPF_ABS
			if a, ok = load(ins.K, sizes[op&0x18]); !ok {
				return 0
			}
		case op&0xe7 == 0x40: // BPF_LD|BPF_IND
			if a, ok = load(x+ins.K, sizes[op&0x18]); !ok {
				return 0
			}
		case op == 0xb1: // BPF_LDX|BPF_B|BPF_MSH
			v, ok := load(ins.K, 1)
			if !ok {
				return 0
			}
			x = (v & 0xf) * 4
		case op == 0x05: // BPF_JMP|BPF_JA
			pc += int(ins.K)
		case op == 0x15: // BPF_JMP|BPF_JEQ|BPF_K
			if a == ins.K {
				pc += int(ins.Jt)
			} else {
				pc += int(ins.Jf)
			}
		case op == 0x45: // BPF_JMP|BPF_JSET|BPF_K
			if a&ins.K != 0 {
				pc += int(ins.Jt)
			} else {
				pc += int(ins.Jf)
			}
		case op == 0x54: // BPF_ALU|BPF_AND|BPF_K
			a &= ins.K
		case op == 0x74: // BPF_ALU|BPF_RSH|BPF_K
			a >>= ins.K
		case op == 0x04: // BPF_ALU|BPF_ADD|BPF_K
			a += ins.K
		case op == 0x0c: // BPF_ALU|BPF_ADD|BPF_X
			a += x
		case op == 0x64: // BPF_ALU|BPF_LSH|BPF_K
			a <<= ins.K
		case op == 0x01: // BPF_LDX|BPF_IMM
			x = ins.K
		case op == 0x02: // BPF_ST
			mem[ins.K] = a
		case op == 0x60: // BPF_LD|BPF_MEM
			a = mem[ins.K]
		case op == 0x07: // BPF_MISC|BPF_TAX
			x = a
		case op == 0x87: // BPF_MISC|BPF_TXA
			a = x
		case op == 0x06: // BPF_RET|BPF_K
			return ins.K
		case op == 0x16: // BPF_RET|BPF_A
			return a
		default:
			t.Fatalf("instruction %d: opcode %#x not interpreted", pc, ins.Op)
		}
	}
	t.Fatal("program ran off its end")
	return 0
}

func TestFilter(t *testing.T) {
	const port, other = 5201, 5202
	good := goodFrames()
	type tc struct {
		name  string
		f     frame
		proto uint16 // skb->protocol; 0: from the frame's EtherType
		want  map[uint16]bool
	}
	all := map[uint16]bool{0: true, port: true, other: true}
	portOnly := map[uint16]bool{0: true, port: true}
	none := map[uint16]bool{}
	var cases []tc
	for name, f := range good {
		want := portOnly
		if len(f.vlans) != 0 {
			want = all // left to user space
		}
		cases = append(cases, tc{name: name, f: f, want: want})
		// Swap the ports: the port may be the source.
		f.src, f.dst = f.dst, f.src
		cases = append(cases, tc{name: name + " reversed", f: f, want: want})
	}
	base4 := good["ipv4"]
	base6 := good["ipv6"]
	with := func(f frame, mod func(*frame)) frame { mod(&f); return f }
	cases = append(cases,
		tc{name: "ipv4 other port", f: with(base4, func(f *frame) { f.dst = netipPort(f.dst, other) }), want: map[uint16]bool{0: true, other: true}},
		tc{name: "ipv4 options other port", f: with(base4, func(f *frame) { f.ipv4Opts = 40; f.dst = netipPort(f.dst, other) }), want: map[uint16]bool{0: true, other: true}},
		tc{name: "ipv6 other port", f: with(base6, func(f *frame) { f.dst = netipPort(f.dst, other) }), want: map[uint16]bool{0: true, other: true}},
		tc{name: "ipv4 udp", f: with(base4, func(f *frame) { f.proto = 17 }), want: none},
		tc{name: "ipv6 udp", f: with(base6, func(f *frame) { f.proto = 17 }), want: none},
		tc{name: "ipv6 esp", f: with(base6, func(f *frame) { f.proto = 50 }), want: none},
		tc{name: "ipv4 non-first fragment", f: with(base4, func(f *frame) { f.fragOff = 100 }), want: none},
		tc{name: "ipv4 first fragment", f: with(base4, func(f *frame) { f.moreFrag = true }), want: portOnly},
		tc{name: "arp", f: base4, proto: 0x0806, want: none},
		tc{name: "qinq tag in band", f: with(base4, func(f *frame) { f.vlans = []uint16{etherTypeQinQ} }), want: all},
		tc{name: "ipv6 240 bytes of extension headers", f: with(base6, func(f *frame) {
			f.ext = []ext{{proto: ipProtoHopOpts, len: 80}, {proto: ipProtoDstOpts, len: 80}, {proto: ipProtoRouting, len: 80}}
		}), want: portOnly},
		tc{name: "ipv6 2 KB destination options", f: with(base6, func(f *frame) { f.ext = []ext{{proto: ipProtoDstOpts, len: 2048}} }), want: portOnly},
		tc{name: "ipv6 eight extension headers", f: with(base6, func(f *frame) {
			for range 4 {
				f.ext = append(f.ext, ext{proto: ipProtoDstOpts, len: 8}, ext{proto: ipProtoFrag, len: 8})
			}
		}), want: portOnly},
		tc{name: "ipv6 nine extension headers: left to user space", f: with(base6, func(f *frame) {
			for range 9 {
				f.ext = append(f.ext, ext{proto: ipProtoDstOpts, len: 8})
			}
		}), want: all},
		tc{name: "ipv6 first fragment", f: with(base6, func(f *frame) { f.ext = []ext{{proto: ipProtoFrag, len: 8, more: true}} }), want: portOnly},
		tc{name: "ipv6 non-first fragment", f: with(base6, func(f *frame) { f.ext = []ext{{proto: ipProtoFrag, len: 8, fragOff: 100}} }), want: none},
		tc{name: "ipv6 dest options then udp", f: with(base6, func(f *frame) { f.ext = []ext{{proto: ipProtoDstOpts, len: 8}}; f.proto = 17 }), want: none},
		tc{name: "ipv6 extension headers other port", f: with(base6, func(f *frame) {
			f.ext = []ext{{proto: ipProtoHopOpts, len: 8}}
			f.dst = netipPort(f.dst, other)
		}), want: map[uint16]bool{0: true, other: true}},
	)
	for _, c := range cases {
		b := c.f.build()
		net := ethHeaderLen + vlanTagLen*len(c.f.vlans)
		proto := c.proto
		if proto == 0 {
			proto = binary.BigEndian.Uint16(b[12:])
		}
		// One port, or two while the port is being changed (SetPort):
		// the union of what each accepts.
		for _, ps := range [][]uint16{{0}, {port}, {other}, {port, other}, {other, port}, {port, 0}} {
			want := false
			for _, p := range ps {
				want = want || c.want[p]
			}
			prog, err := filterProgram(ps...)
			if err != nil {
				t.Fatal(err)
			}
			got := runFilter(t, prog, b, net, proto)
			if (got != 0) != want {
				t.Errorf("%s, ports %v: filter returned %d, want accepted = %v", c.name, ps, got, want)
			}
			if got == 0 {
				continue
			}
			checkSnapLen(t, fmt.Sprintf("%s, ports %v", c.name, ps), c.f, b, got)
			if len(c.f.vlans) == 0 && c.proto == 0 {
				// A device without a link-layer header (tun): the network
				// header is at 0 and the filter must give the same answer.
				if got := runFilter(t, prog, b[ethHeaderLen:], 0, proto); (got != 0) != want {
					t.Errorf("%s, ports %v, no link header: filter returned %d, want accepted = %v", c.name, ps, got, want)
				}
			}
		}
	}
}

// checkSnapLen checks the snap length the filter returned for frame b (f
// built): the frame cut to it decodes exactly as the whole frame does, and
// when the filter measured the headers itself (no VLAN tag in the frame, at
// most filterExtHeaders IPv6 extension headers) it copies no more than the
// headers and the link allowance.
func checkSnapLen(t *testing.T, what string, f frame, b []byte, snap uint32) {
	t.Helper()
	cut := b[:min(int(snap), len(b))]
	var whole, part tcp.Packet
	errWhole := DecodeEthernet(b, len(b), &whole)
	errPart := DecodeEthernet(cut, len(b), &part)
	if errWhole != errPart || whole != part {
		t.Errorf("%s: cut to %d bytes decodes as %+v (%v), whole frame as %+v (%v)", what, snap, part, errPart, whole, errWhole)
	}
	if len(f.vlans) == 0 && len(f.ext) <= filterExtHeaders {
		ipLen := ipv6Header
		for _, e := range f.ext {
			ipLen += e.len
		}
		if f.src.Addr().Is4() {
			ipLen = 20 + f.ipv4Opts
		}
		if want := uint32(linkAllowance + ipLen + 20 + f.tcpOpts); snap != want {
			t.Errorf("%s: snap length %d, want %d (link allowance + IP and TCP headers)", what, snap, want)
		}
	}
}

func TestFilterSnapLenCoversHeaders(t *testing.T) {
	// The deepest headers the filter passes to user space with a port check:
	// two VLAN tags, IPv4 with 40 bytes of options, TCP with 40.
	if n := ethHeaderLen + 2*vlanTagLen + 60 + 60; n > filterSnapLen {
		t.Errorf("headers of %d bytes exceed the snap length %d", n, filterSnapLen)
	}
}

func netipPort(ap netip.AddrPort, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr(), port)
}
