package capture

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/siftr-probe/siftr-probe/tcp"
)

var (
	v4a = netip.MustParseAddrPort("10.77.0.1:40000")
	v4b = netip.MustParseAddrPort("10.77.0.2:5201")
	v6a = netip.MustParseAddrPort("[fd77::1]:40000")
	v6b = netip.MustParseAddrPort("[fd77::2]:5201")
)

// goodFrames are valid frames, each decoding to its want().
func goodFrames() map[string]frame {
	base4 := frame{src: v4a, dst: v4b, seq: 0x01020304, ack: 0xa0b0c0d0, flags: tcp.FlagACK | tcp.FlagPSH, window: 502, payload: 100}
	base6 := base4
	base6.src, base6.dst = v6a, v6b
	with := func(f frame, mod func(*frame)) frame { mod(&f); return f }
	return map[string]frame{
		"ipv4":             base4,
		"ipv4 options":     with(base4, func(f *frame) { f.ipv4Opts = 12 }),
		"ipv4 max options": with(base4, func(f *frame) { f.ipv4Opts = 40 }),
		"ipv4 tcp options": with(base4, func(f *frame) { f.tcpOpts = 12 }),
		"ipv4 syn":         with(base4, func(f *frame) { f.flags, f.payload, f.tcpOpts = tcp.FlagSYN, 0, 20 }),
		"ipv4 all flags":   with(base4, func(f *frame) { f.flags = 0xff }),
		"ipv4 first fragment": with(base4, func(f *frame) {
			f.moreFrag = true
		}),
		"ipv6":              base6,
		"ipv6 tcp options":  with(base6, func(f *frame) { f.tcpOpts = 40 }),
		"ipv6 hop-by-hop":   with(base6, func(f *frame) { f.ext = []ext{{proto: ipProtoHopOpts, len: 8}} }),
		"ipv6 routing":      with(base6, func(f *frame) { f.ext = []ext{{proto: ipProtoRouting, len: 24}} }),
		"ipv6 dest options": with(base6, func(f *frame) { f.ext = []ext{{proto: ipProtoDstOpts, len: 16}} }),
		"ipv6 first fragment": with(base6, func(f *frame) {
			f.ext = []ext{{proto: ipProtoFrag, len: 8, more: true}}
		}),
		"ipv6 chain": with(base6, func(f *frame) {
			f.ext = []ext{
				{proto: ipProtoHopOpts, len: 8},
				{proto: ipProtoDstOpts, len: 8},
				{proto: ipProtoRouting, len: 24},
				{proto: ipProtoFrag, len: 8},
				{proto: ipProtoDstOpts, len: 16},
			}
		}),
		"vlan ipv4":        with(base4, func(f *frame) { f.vlans = []uint16{etherTypeVLAN} }),
		"vlan ipv6":        with(base6, func(f *frame) { f.vlans = []uint16{etherTypeVLAN} }),
		"double vlan ipv4": with(base4, func(f *frame) { f.vlans = []uint16{etherTypeQinQ, etherTypeVLAN} }),
		"double vlan ipv6 chain": with(base6, func(f *frame) {
			f.vlans = []uint16{etherTypeVLAN, etherTypeVLAN}
			f.ext = []ext{{proto: ipProtoHopOpts, len: 8}}
		}),
		"ipv4 no payload": with(base4, func(f *frame) { f.payload = 0 }),
	}
}

func TestDecodeEthernet(t *testing.T) {
	for name, f := range goodFrames() {
		t.Run(name, func(t *testing.T) {
			b := f.build()
			var got tcp.Packet
			if err := DecodeEthernet(b, len(b), &got); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if want := f.want(); got != want {
				t.Errorf("decode:\n got %+v\nwant %+v", got, want)
			}
			// Headers only, as the ring captures them: same result.
			got = tcp.Packet{}
			if err := DecodeEthernet(b[:f.headerLen()], len(b), &got); err != nil {
				t.Fatalf("decode headers only: %v", err)
			}
			if want := f.want(); got != want {
				t.Errorf("decode headers only:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestDecodeIP(t *testing.T) {
	for name, f := range goodFrames() {
		if len(f.vlans) != 0 {
			continue
		}
		t.Run(name, func(t *testing.T) {
			b := f.build()[ethHeaderLen:]
			var got tcp.Packet
			if err := DecodeIP(b[:f.headerLen()-ethHeaderLen], len(b), &got); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if want := f.want(); got != want {
				t.Errorf("decode:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestDecodeTruncated cuts every good frame at every length before the end
// of its TCP header.
func TestDecodeTruncated(t *testing.T) {
	for name, f := range goodFrames() {
		b := f.build()
		h := f.headerLen()
		for n := 0; n < h; n++ {
			var p tcp.Packet
			if err := DecodeEthernet(b[:n], len(b), &p); !errors.Is(err, ErrTruncated) {
				t.Errorf("%s cut to %d of %d header bytes: %v, want ErrTruncated", name, n, h, err)
			}
			if len(f.vlans) == 0 && n >= ethHeaderLen {
				if err := DecodeIP(b[ethHeaderLen:n], len(b)-ethHeaderLen, &p); !errors.Is(err, ErrTruncated) {
					t.Errorf("%s: DecodeIP cut to %d of %d header bytes: %v, want ErrTruncated", name, n, h, err)
				}
			}
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	base4 := frame{src: v4a, dst: v4b, payload: 10}
	base6 := frame{src: v6a, dst: v6b, payload: 10}
	with := func(f frame, mod func(*frame)) frame { mod(&f); return f }
	put16 := func(off int, v uint16) func([]byte) []byte {
		return func(b []byte) []byte { binary.BigEndian.PutUint16(b[off:], v); return b }
	}
	set := func(off int, v byte) func([]byte) []byte {
		return func(b []byte) []byte { b[off] = v; return b }
	}
	const ip, tcp4 = ethHeaderLen, ethHeaderLen + ipv4MinHeader
	for _, tc := range []struct {
		name string
		f    frame
		edit func([]byte) []byte
		want error
	}{
		{"ipv4 ihl 4", base4, set(ip, 0x44), ErrMalformed},
		{"ipv4 ihl 0", base4, set(ip, 0x40), ErrMalformed},
		{"ipv4 version 6 in 0x0800", base4, set(ip, 0x65), ErrMalformed},
		{"ipv6 version 4 in 0x86dd", base6, set(ip, 0x40), ErrMalformed},
		{"ipv4 total length below ihl", base4, put16(ip+2, 19), ErrMalformed},
		{"ipv4 total length below tcp header", base4, put16(ip+2, 39), ErrMalformed},
		{"ipv6 payload length below tcp header", base6, put16(ip+4, 19), ErrMalformed},
		{"ipv6 payload length below ext headers", with(base6, func(f *frame) { f.ext = []ext{{proto: ipProtoDstOpts, len: 16}} }), put16(ip+4, 8), ErrMalformed},
		{"tcp data offset 4", base4, set(tcp4+12, 0x40), ErrMalformed},
		{"tcp data offset 0", base4, set(tcp4+12, 0x00), ErrMalformed},
		{"tcp data offset beyond frame", with(base4, func(f *frame) { f.payload = 100 }), func(b []byte) []byte { b[tcp4+12] = 0xf0; return b[:tcp4+40] }, ErrTruncated},
		{"ipv4 non-first fragment", with(base4, func(f *frame) { f.fragOff = 185 }), nil, ErrMalformed},
		{"ipv4 last fragment", with(base4, func(f *frame) { f.fragOff = 1 }), nil, ErrMalformed},
		{"ipv6 non-first fragment", with(base6, func(f *frame) { f.ext = []ext{{proto: ipProtoFrag, len: 8, fragOff: 185, more: true}} }), nil, ErrMalformed},
		{"ipv4 udp", with(base4, func(f *frame) { f.proto = 17 }), nil, ErrNotTCP},
		{"ipv6 udp", with(base6, func(f *frame) { f.proto = 17 }), nil, ErrNotTCP},
		{"ipv6 esp", with(base6, func(f *frame) { f.proto = 50 }), nil, ErrNotTCP},
		{"ipv6 dest options then udp", with(base6, func(f *frame) { f.ext = []ext{{proto: ipProtoDstOpts, len: 8}}; f.proto = 17 }), nil, ErrNotTCP},
		{"arp", base4, put16(12, 0x0806), ErrNotTCP},
		{"three vlan tags", with(base4, func(f *frame) { f.vlans = []uint16{etherTypeQinQ, etherTypeVLAN, etherTypeVLAN} }), nil, ErrMalformed},
		{"ipv4 bad header checksum", base4, func(b []byte) []byte { b[ip+10] ^= 0x40; return b }, ErrMalformed},
		{"ipv4 checksum of another header", base4, func(b []byte) []byte { b[ip+8]--; return b }, ErrMalformed}, // TTL changed, checksum not
		{"ipv4 total length beyond the frame", base4, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[ip+2:], 41+20+10)
			setIPv4Checksum(b[ip : ip+20])
			return b
		}, ErrMalformed},
		{"ipv6 payload length beyond the frame", base6, put16(ip+4, 20+10+1), ErrMalformed},
		{"vlan then arp", with(base4, func(f *frame) { f.vlans = []uint16{etherTypeVLAN} }), put16(16, 0x0806), ErrNotTCP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.f.build()
			if tc.edit != nil {
				b = tc.edit(b)
			}
			var p tcp.Packet
			// The wire length is the built frame's: an edit that cuts the
			// frame cuts the capture, not the packet.
			if err := DecodeEthernet(b, max(len(b), len(tc.f.build())), &p); !errors.Is(err, tc.want) {
				t.Errorf("DecodeEthernet: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestDecodeIPVersion(t *testing.T) {
	var p tcp.Packet
	for _, b := range [][]byte{{0x00}, {0x50, 0, 0, 0}, {0xf0}} {
		if err := DecodeIP(b, len(b), &p); !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeIP(%x): %v, want ErrMalformed", b, err)
		}
	}
	if err := DecodeIP(nil, 0, &p); !errors.Is(err, ErrTruncated) {
		t.Errorf("DecodeIP(nil): %v, want ErrTruncated", err)
	}
}

// TestDecodeLengths checks where PayloadLen comes from: the IP length
// fields, not the captured or wire length, except when the IP length field
// is 0 (BIG TCP, GSO), where the wire length is used.
func TestDecodeLengths(t *testing.T) {
	for _, tc := range []struct {
		name    string
		f       frame
		pad     int // bytes of Ethernet padding after the packet
		wire    int // wire length given to the decoder (0: the frame's)
		headers bool
		want    uint32
	}{
		{name: "padded ack", f: frame{src: v4a, dst: v4b}, pad: 6, want: 0},
		{name: "ipv6 padded", f: frame{src: v6a, dst: v6b, payload: 3}, pad: 20, want: 3},
		{name: "ipv4 zero total length", f: frame{src: v4a, dst: v4b, zeroLen: true, tcpOpts: 12}, headers: true, wire: ethHeaderLen + 20 + 32 + 100000, want: 100000},
		{name: "ipv6 zero payload length", f: frame{src: v6a, dst: v6b, zeroLen: true, ext: []ext{{proto: ipProtoHopOpts, len: 8}}}, headers: true, wire: ethHeaderLen + 40 + 8 + 20 + 185000, want: 185000},
		{name: "gso buffer cut to headers", f: frame{src: v4a, dst: v4b, payload: 60000}, headers: true, wire: ethHeaderLen + 40 + 60000, want: 60000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.f.build()
			b = append(b, make([]byte, tc.pad)...)
			wire := len(b)
			if tc.wire != 0 {
				wire = tc.wire
			}
			if tc.headers {
				b = b[:tc.f.headerLen()]
			}
			var p tcp.Packet
			if err := DecodeEthernet(b, wire, &p); err != nil {
				t.Fatal(err)
			}
			if p.PayloadLen != tc.want {
				t.Errorf("PayloadLen = %d, want %d", p.PayloadLen, tc.want)
			}
		})
	}
}

func TestDecodeAllocs(t *testing.T) {
	for name, f := range goodFrames() {
		b := f.build()
		var p tcp.Packet
		if n := testing.AllocsPerRun(100, func() { _ = DecodeEthernet(b, len(b), &p) }); n != 0 {
			t.Errorf("%s: %v allocations per decode", name, n)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	frames := goodFrames()
	for _, name := range []string{"ipv4", "ipv4 options", "ipv6", "ipv6 chain", "double vlan ipv4"} {
		f := frames[name]
		buf := f.build()[:f.headerLen()]
		wire := len(f.build())
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var p tcp.Packet
			for b.Loop() {
				if err := DecodeEthernet(buf, wire, &p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
