// Package pcaptest reads the pcapng files siftr-probe writes (--pcap) back
// for tests, with two independent readers: gopacket's pcapgo.NgReader
// (github.com/google/gopacket, the module the writer uses for its section
// and interface blocks) for the packets, and the maintained fork's
// (github.com/gopacket/gopacket), which also returns each packet's options
// (comments, epb_flags). The two must agree on every packet. It also runs
// tcpdump on a file. Only tests import it.
package pcaptest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	glayers "github.com/google/gopacket/layers"
	gpcapgo "github.com/google/gopacket/pcapgo"
	forkpcapgo "github.com/gopacket/gopacket/pcapgo"

	"github.com/google/gopacket"

	"github.com/siftr-probe/siftr-probe/tcp"
)

// Packet is one packet block, decoded.
type Packet struct {
	Time           int64 // ns since the epoch
	CapLen, Len    int   // captured and original length
	Comments       []string
	Dir            tcp.Direction // from epb_flags
	HasDir         bool          // epb_flags gave a direction
	Src, Dst       netip.AddrPort
	Seq, Ack       uint32
	Flags          uint8
	Window         uint16
	PayloadLen     int  // from the IP length field
	IPv4ChecksumOK bool // IPv4 only: the header checksum verifies
	TCPChecksumOK  bool // without payload only: the TCP checksum verifies
	Data           []byte
}

// File is a pcapng file's interface and packets.
type File struct {
	IfName   string
	IfFilter string
	LinkType uint16
	Packets  []Packet
}

// ReadFile reads the pcapng file at path; see Read.
func ReadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Read(b)
}

// Read parses a pcapng file with both readers and checks that they agree.
func Read(b []byte) (*File, error) {
	fr, err := forkpcapgo.NewNgReader(bytes.NewReader(b), forkpcapgo.DefaultNgReaderOptions)
	if err != nil {
		return nil, fmt.Errorf("fork reader: %w", err)
	}
	gr, err := gpcapgo.NewNgReader(bytes.NewReader(b), gpcapgo.DefaultNgReaderOptions)
	if err != nil {
		return nil, fmt.Errorf("gopacket reader: %w", err)
	}
	f := &File{LinkType: uint16(gr.LinkType())}
	if gr.NInterfaces() != 1 {
		return nil, fmt.Errorf("%d interfaces, want 1", gr.NInterfaces())
	}
	if intf, err := fr.Interface(0); err == nil {
		f.IfName, f.IfFilter = intf.Name, intf.Filter
	}
	for i := 0; ; i++ {
		data, ci, opts, ferr := fr.ReadPacketDataWithOptions()
		gdata, gci, gerr := gr.ReadPacketData()
		if errors.Is(ferr, io.EOF) && errors.Is(gerr, io.EOF) {
			return f, nil
		}
		if ferr != nil || gerr != nil {
			return nil, fmt.Errorf("packet %d: fork reader: %v; gopacket reader: %v", i, ferr, gerr)
		}
		if !bytes.Equal(data, gdata) || !ci.Timestamp.Equal(gci.Timestamp) || ci.Length != gci.Length || ci.CaptureLength != gci.CaptureLength {
			return nil, fmt.Errorf("packet %d: the readers disagree", i)
		}
		p := Packet{
			Time: ci.Timestamp.UnixNano(), CapLen: ci.CaptureLength, Len: ci.Length,
			Comments: opts.Comments, Data: append([]byte(nil), data...),
		}
		if opts.Flags != nil {
			switch opts.Flags.Direction {
			case forkpcapgo.NgEpbFlagDirectionInbound:
				p.Dir, p.HasDir = tcp.DirIn, true
			case forkpcapgo.NgEpbFlagDirectionOutbound:
				p.Dir, p.HasDir = tcp.DirOut, true
			}
		}
		if err := decode(&p, data); err != nil {
			return nil, fmt.Errorf("packet %d: %w", i, err)
		}
		f.Packets = append(f.Packets, p)
	}
}

// decode fills the header fields of p from LINKTYPE_RAW data.
func decode(p *Packet, data []byte) error {
	pkt := gopacket.NewPacket(data, glayers.LayerTypeIPv4, gopacket.Default)
	if len(data) > 0 && data[0]>>4 == 6 {
		pkt = gopacket.NewPacket(data, glayers.LayerTypeIPv6, gopacket.Default)
	}
	var src, dst netip.Addr
	var pseudo []byte
	switch ip := pkt.NetworkLayer().(type) {
	case *glayers.IPv4:
		src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
		dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
		p.PayloadLen = int(ip.Length) - int(ip.IHL)*4
		p.IPv4ChecksumOK = checksum(data[:int(ip.IHL)*4]) == 0
		pseudo = append(append([]byte(nil), data[12:20]...), 0, 6)
	case *glayers.IPv6:
		src, _ = netip.AddrFromSlice(ip.SrcIP)
		dst, _ = netip.AddrFromSlice(ip.DstIP)
		p.PayloadLen = int(ip.Length)
		pseudo = append(append([]byte(nil), data[8:40]...), 0, 6)
	default:
		return fmt.Errorf("no IP layer in %x", data)
	}
	t, ok := pkt.TransportLayer().(*glayers.TCP)
	if !ok {
		return fmt.Errorf("no TCP layer in %x", data)
	}
	p.PayloadLen -= int(t.DataOffset) * 4
	p.Src = netip.AddrPortFrom(src, uint16(t.SrcPort))
	p.Dst = netip.AddrPortFrom(dst, uint16(t.DstPort))
	p.Seq, p.Ack, p.Window = t.Seq, t.Ack, t.Window
	p.Flags = t.Contents[13]
	if p.PayloadLen == 0 {
		seg := t.Contents
		pseudo = append(pseudo, byte(len(seg)>>8), byte(len(seg)))
		p.TCPChecksumOK = checksum(append(pseudo, seg...)) == 0
	}
	return nil
}

// checksum is the Internet checksum of b: 0 over a header with a correct one.
func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// Tcpdump runs tcpdump -n -r path and returns the lines it printed on
// stdout. It returns exec.ErrNotFound (wrapped) when tcpdump is not installed.
func Tcpdump(path string) ([]string, error) {
	bin, err := exec.LookPath("tcpdump")
	if err != nil {
		for _, p := range []string{"/usr/bin/tcpdump", "/usr/sbin/tcpdump", "/sbin/tcpdump"} {
			if _, serr := os.Stat(p); serr == nil {
				bin, err = p, nil
				break
			}
		}
	}
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "-n", "-r", path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("tcpdump -r %s: %v: %s", path, err, stderr.String())
	}
	s := strings.TrimRight(string(out), "\n")
	if s == "" {
		return nil, nil
	}
	return strings.Split(s, "\n"), nil
}
