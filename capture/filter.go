package capture

import (
	"fmt"
	"slices"

	"golang.org/x/net/bpf"
)

// Kernel classic-BPF conventions used by the filter (linux/filter.h).
const (
	// skfNetOff makes an absolute or indirect load relative to the skb's
	// network header instead of the start of the frame (SKF_NET_OFF).
	skfNetOff = 0xfff00000 // -0x100000 as a uint32
	// filterSnapLen is what the filter returns for frames with VLAN tags in
	// the frame, which it leaves to user space to decode: the number of
	// bytes of the frame the kernel copies into the ring. It covers
	// Ethernet, two VLAN tags, an IPv6 header with a few extension headers,
	// and a TCP header with options.
	filterSnapLen = 256
	// filterExtHeaders is how many IPv6 extension headers the filter walks
	// to find the TCP header (and so the exact snap length, whatever their
	// size). A longer chain is accepted whole (deepSnapLen) for user space.
	filterExtHeaders = 8
	// deepSnapLen is the snap length for an IPv6 chain longer than the
	// filter walks: the whole packet (user space walks up to 16 headers).
	deepSnapLen = 0xffff
	// linkAllowance is what the filter adds for the link-layer header when
	// it returns the exact length of the IP and TCP headers: it reads them
	// relative to the network header and cannot see how long the link-layer
	// header is (14 bytes on Ethernet and lo, 0 on tun, 24 on IPoIB).
	linkAllowance = 32
)

// filterProgram returns the classic BPF program the rings attach: it keeps
// IPv4 and IPv6 TCP segments with one of ports as source or destination port
// (any port when ports is empty or holds 0; two ports while the port is being
// changed, see Capture.SetPort) and cuts them after the TCP header (plus
// linkAllowance), or to filterSnapLen bytes when it leaves the headers to
// user space. Copying only the headers keeps frames small: about 170 bytes
// of ring per packet instead of 340, so a ring holds twice as many.
//
// The program is link-type independent: it reads the EtherType from the
// skb's protocol (the SKF_AD_PROTOCOL ancillary load) and the IP and TCP
// headers relative to the network header (SKF_NET_OFF), so it works on
// Ethernet, loopback, tunnels and devices without a link-layer header.
//
//   - IPv4: protocol 6, fragment offset 0, port checked after the IHL.
//   - IPv6: the extension header chain (hop-by-hop 0, routing 43,
//     destination options 60, fragment 44) is walked, up to
//     filterExtHeaders headers, to the TCP header, where the port is
//     checked and the snap length measured, however long the chain: a
//     fixed snap length would cut long chains before the TCP header. A
//     non-first fragment is rejected, as in IPv4; any other next header
//     too. A longer chain is accepted whole for user space.
//   - 802.1Q and 802.1ad (a VLAN tag still in the frame, as on transmit
//     without tag offload) are accepted for user space to decode.
//
// Everything the filter accepts is decoded again in user space, which
// applies the port filter too and counts what fails it as Stats.Filtered.
func filterProgram(ports ...uint16) ([]bpf.RawInstruction, error) {
	if slices.Contains(ports, 0) {
		ports = nil
	}
	var a asm
	a.add(bpf.LoadExtension{Num: bpf.ExtProto})
	a.jeq(etherTypeIPv4, "ipv4", "")
	a.jeq(etherTypeIPv6, "ipv6", "")
	a.jeq(etherTypeVLAN, "accept", "")
	a.jeq(etherTypeQinQ, "accept", "reject")

	a.label("ipv4")
	a.add(bpf.LoadAbsolute{Off: skfNetOff + 9, Size: 1}) // protocol
	a.jeq(ipProtoTCP, "", "reject")
	a.add(bpf.LoadAbsolute{Off: skfNetOff + 6, Size: 2}) // flags, fragment offset
	a.jset(0x1fff, "reject", "")
	a.add(bpf.LoadMemShift{Off: skfNetOff}) // X = IHL*4
	a.ports(ports, "tcp4len", "reject")
	a.label("tcp4len") // snap length: link allowance + IHL*4 + TCP data offset*4
	a.add(bpf.LoadIndirect{Off: skfNetOff + 12, Size: 1})
	a.add(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0})
	a.add(bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 2})
	a.add(bpf.ALUOpX{Op: bpf.ALUOpAdd})
	a.add(bpf.ALUOpConstant{Op: bpf.ALUOpAdd, Val: linkAllowance})
	a.add(bpf.RetA{})

	a.label("accept")
	a.add(bpf.RetConstant{Val: filterSnapLen})
	a.label("reject")
	a.add(bpf.RetConstant{Val: 0})

	// IPv6. A = the next header, X = the offset (from the network header)
	// of the header it names; M[0] keeps a next header while X moves on.
	a.label("ipv6")
	a.add(bpf.LoadAbsolute{Off: skfNetOff + 6, Size: 1})
	a.add(bpf.LoadConstant{Dst: bpf.RegX, Val: ipv6Header})
	for i := range filterExtHeaders {
		ext, next := fmt.Sprintf("ext%d", i), fmt.Sprintf("hdr%d", i+1)
		a.jeq(ipProtoTCP, "tcp6", "")
		a.jeq(ipProtoHopOpts, ext, "")
		a.jeq(ipProtoRouting, ext, "")
		a.jeq(ipProtoDstOpts, ext, "")
		a.jeq(ipProtoFrag, "", "reject6")
		// Fragment header, 8 bytes: a non-first fragment has no TCP header.
		a.add(bpf.LoadIndirect{Off: skfNetOff + 2, Size: 2})
		a.jset(0xfff8, "reject6", "")
		a.add(bpf.LoadIndirect{Off: skfNetOff, Size: 1})
		a.add(bpf.StoreScratch{Src: bpf.RegA, N: 0})
		a.add(bpf.TXA{})
		a.add(bpf.ALUOpConstant{Op: bpf.ALUOpAdd, Val: 8})
		a.add(bpf.TAX{})
		a.add(bpf.LoadScratch{Dst: bpf.RegA, N: 0})
		a.jump(next)
		// Options and routing headers: (hdr ext len + 1) * 8 bytes.
		a.label(ext)
		a.add(bpf.LoadIndirect{Off: skfNetOff, Size: 1})
		a.add(bpf.StoreScratch{Src: bpf.RegA, N: 0})
		a.add(bpf.LoadIndirect{Off: skfNetOff + 1, Size: 1})
		a.add(bpf.ALUOpConstant{Op: bpf.ALUOpShiftLeft, Val: 3})
		a.add(bpf.ALUOpConstant{Op: bpf.ALUOpAdd, Val: 8})
		a.add(bpf.ALUOpX{Op: bpf.ALUOpAdd})
		a.add(bpf.TAX{})
		a.add(bpf.LoadScratch{Dst: bpf.RegA, N: 0})
		a.label(next)
	}
	a.jeq(ipProtoTCP, "tcp6", "")
	a.add(bpf.RetConstant{Val: deepSnapLen}) // a longer chain: for user space

	a.label("tcp6") // X = offset of the TCP header
	a.ports(ports, "tcp6len", "reject6")
	a.label("tcp6len") // snap length: link allowance + X + TCP data offset*4
	a.add(bpf.LoadIndirect{Off: skfNetOff + 12, Size: 1})
	a.add(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0})
	a.add(bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 2})
	a.add(bpf.ALUOpX{Op: bpf.ALUOpAdd})
	a.add(bpf.ALUOpConstant{Op: bpf.ALUOpAdd, Val: linkAllowance})
	a.add(bpf.RetA{})
	a.label("reject6")
	a.add(bpf.RetConstant{Val: 0})
	return a.assemble()
}

// ports checks the TCP header at X: with ports empty it falls through;
// otherwise it goes on to accept, which must be the next instruction after
// it, if the source or destination port is one of ports, and to reject if
// neither is.
func (a *asm) ports(ports []uint16, accept, reject string) {
	if len(ports) == 0 {
		return
	}
	a.add(bpf.LoadIndirect{Off: skfNetOff, Size: 2}) // source port
	for _, p := range ports {
		a.jeq(uint32(p), accept, "")
	}
	a.add(bpf.LoadIndirect{Off: skfNetOff + 2, Size: 2}) // destination port
	for _, p := range ports[:len(ports)-1] {
		a.jeq(uint32(p), accept, "")
	}
	a.jeq(uint32(ports[len(ports)-1]), "", reject)
}

// asm is a tiny assembler for forward conditional jumps to named labels.
// A jump target "" means the next instruction.
type asm struct {
	prog   []bpf.Instruction
	labels map[string]int
	fixups []fixup
}

type fixup struct {
	at     int
	t, f   string
	always bool // an unconditional jump to t
}

func (a *asm) add(ins bpf.Instruction) { a.prog = append(a.prog, ins) }

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = make(map[string]int)
	}
	a.labels[name] = len(a.prog)
}

func (a *asm) jeq(val uint32, t, f string) { a.cond(bpf.JumpEqual, val, t, f) }

// jump is an unconditional forward jump to label to.
func (a *asm) jump(to string) {
	a.fixups = append(a.fixups, fixup{at: len(a.prog), t: to, always: true})
	a.add(bpf.Jump{})
}

func (a *asm) jset(bits uint32, t, f string) { a.cond(bpf.JumpBitsSet, bits, t, f) }

func (a *asm) cond(c bpf.JumpTest, val uint32, t, f string) {
	a.fixups = append(a.fixups, fixup{at: len(a.prog), t: t, f: f})
	a.add(bpf.JumpIf{Cond: c, Val: val})
}

func (a *asm) assemble() ([]bpf.RawInstruction, error) {
	skip := func(from int, to string) (int, error) {
		if to == "" {
			return 0, nil
		}
		at, ok := a.labels[to]
		if !ok || at <= from {
			return 0, fmt.Errorf("capture: bpf: bad jump from %d to %q", from, to)
		}
		return at - from - 1, nil
	}
	for _, fx := range a.fixups {
		t, err := skip(fx.at, fx.t)
		if err != nil {
			return nil, err
		}
		if fx.always {
			a.prog[fx.at] = bpf.Jump{Skip: uint32(t)}
			continue
		}
		ins := a.prog[fx.at].(bpf.JumpIf)
		f, err := skip(fx.at, fx.f)
		if err != nil {
			return nil, err
		}
		if t > 255 || f > 255 {
			return nil, fmt.Errorf("capture: bpf: jump from %d too long", fx.at)
		}
		ins.SkipTrue, ins.SkipFalse = uint8(t), uint8(f)
		a.prog[fx.at] = ins
	}
	raw, err := bpf.Assemble(a.prog)
	if err != nil {
		return nil, fmt.Errorf("capture: bpf: %w", err)
	}
	return raw, nil
}
