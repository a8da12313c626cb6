package output

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// PcapConfig configures OpenPcap.
type PcapConfig struct {
	// Path is the pcapng file, opened with OpenFile's rules (never through a
	// symbolic link, a regular file or a character device only) and locked
	// against a second writer (flock); the file is replaced: a locked
	// regular file is emptied first. Standard output is not supported.
	Path string
	// Iface names the captured interface (if_name).
	Iface string
	// Filter, if set, is the capture filter in libpcap syntax for
	// if_filter ("tcp port 5201").
	Filter string
	// Application is the section's shb_userappl ("siftr-probe v1.2.3").
	Application string
	// All writes the packets handed to Writer.SubmitPackets too: the
	// captured packets, logged or not. The packets that became records
	// are written once, with the record's state.
	All bool
	// QueueLen and QueuePackets bound the queue of SubmitPackets, in
	// batches and packets; 0 means DefaultQueueLen and DefaultQueueRecords.
	QueueLen, QueuePackets int
	// MaxHeld bounds the packets held back for ordering with All; past it
	// the oldest are written at once (PcapStats.Forced). 0 means
	// 2*DefaultMaxHeld.
	MaxHeld int
}

// Pcap is an open pcapng file for a Writer (WriterConfig.Pcap), which owns
// it from OpenWriter on and closes it with its log; or, with
// WriterConfig.KeepPcap, for a succession of Writers, one at a time, each
// adding to the file where the one before stopped, and closed by its
// opener.
type Pcap struct {
	cfg    PcapConfig
	sink   *sink
	header []byte
	// headed: the section and interface blocks are in the open file (the
	// Writer using it owns it, as its sink).
	headed bool
}

// pcapRules are the pcap file's: whole blocks, replaced at open.
var pcapRules = &sinkRules{what: "pcap file", replace: true, whole: wholeBlocks}

// OpenPcap opens the pcapng file cfg describes and prepares its section
// and interface blocks; nothing is written before the Writer starts. The
// errors are OpenFile's.
func OpenPcap(cfg *PcapConfig) (*Pcap, error) {
	if cfg == nil {
		return nil, errors.New("output: nil PcapConfig")
	}
	if cfg.Path == "" || cfg.Path == "-" {
		return nil, fmt.Errorf("output: pcap file: want a file path, not %q", cfg.Path)
	}
	hdr, err := pcapHeader(cfg)
	if err != nil {
		return nil, err
	}
	s, err := openSinkRules(cfg.Path, pcapRules, nil, nil)
	if err != nil {
		return nil, err
	}
	return &Pcap{cfg: *cfg, sink: s, header: hdr}, nil
}

// Close closes a Pcap that was never handed to a Writer, or whose Writers
// were opened with KeepPcap (once they are closed). It is idempotent.
func (p *Pcap) Close() error { return p.sink.Close() }

// Reopen reopens the pcap path, as Writer.Reopen does, while no Writer
// uses the Pcap (between the Writers of WriterConfig.KeepPcap): if the file
// was renamed or removed, a new one is created, and the next Writer starts
// it with its section and interface blocks.
func (p *Pcap) Reopen() error {
	reopened, err := p.sink.Reopen()
	if reopened {
		p.headed = false
	}
	if err != nil {
		return fmt.Errorf("output: reopen pcap: %w", err)
	}
	return nil
}

// pcapSnapLen is the interface's snap length: the longest headers written
// (IPv6 and TCP).
const pcapSnapLen = 60

// pcapHeader returns the section header and interface description blocks.
func pcapHeader(cfg *PcapConfig) ([]byte, error) {
	var b bytes.Buffer
	ng, err := pcapgo.NewNgWriterInterface(&b, pcapgo.NgInterface{
		Name:        cfg.Iface,
		Description: "IP and TCP headers rebuilt from decoded fields: no payload, no TCP options, TCP checksum 0 where there is payload",
		Filter:      cfg.Filter,
		OS:          runtime.GOOS,
		LinkType:    layers.LinkTypeRaw,
		SnapLength:  pcapSnapLen,
		// if_tsresol: pcapgo always writes nanoseconds (9).
		TimestampResolution: 9,
	}, pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{
		Hardware:    runtime.GOARCH,
		OS:          runtime.GOOS,
		Application: cfg.Application,
	}})
	if err == nil {
		err = ng.Flush()
	}
	if err != nil {
		return nil, fmt.Errorf("output: pcap header: %w", err)
	}
	return b.Bytes(), nil
}

// wholeBlocks returns how many bytes of p[:n] are whole pcapng blocks; p
// starts on a block.
func wholeBlocks(p []byte, n int) int {
	off := 0
	for off+8 <= n {
		l := int(binary.LittleEndian.Uint32(p[off+4:]))
		if l < 12 || l > n-off {
			break
		}
		off += l
	}
	return off
}

// pcapng block and option codes (draft-ietf-opsawg-pcapng).
const (
	ngBlockEPB     = 6
	ngOptEnd       = 0
	ngOptComment   = 1
	ngOptEPBFlags  = 2
	ngFlagInbound  = 1
	ngFlagOutbound = 2
)

// AppendEPB appends r's packet as a pcapng enhanced packet block for
// interface 0 (little-endian, nanosecond timestamps): its synthesized IP
// and TCP headers, epb_flags with its direction and, if r.Snap is not nil,
// a comment with the record's state (see the package's pcap doc). It does
// not allocate when dst has room.
func AppendEPB(dst []byte, r *correlate.Record) []byte {
	p := &r.Pkt
	start := len(dst)
	var h [28]byte
	binary.LittleEndian.PutUint32(h[0:], ngBlockEPB)
	// h[4:8], the total length, is filled in at the end; interface id 0.
	ts := uint64(p.Time)
	binary.LittleEndian.PutUint32(h[12:], uint32(ts>>32))
	binary.LittleEndian.PutUint32(h[16:], uint32(ts))
	dst = append(dst, h[:]...)
	hdrStart := len(dst)
	dst = appendHeaders(dst, p)
	capLen := len(dst) - hdrStart
	binary.LittleEndian.PutUint32(dst[start+20:], uint32(capLen))
	binary.LittleEndian.PutUint32(dst[start+24:], uint32(min(uint64(capLen)+uint64(p.PayloadLen), math.MaxUint32)))
	dst = pad4(dst, capLen)

	flags := uint32(ngFlagInbound)
	if p.Dir == tcp.DirOut {
		flags = ngFlagOutbound
	}
	var o [8]byte
	binary.LittleEndian.PutUint16(o[0:], ngOptEPBFlags)
	binary.LittleEndian.PutUint16(o[2:], 4)
	binary.LittleEndian.PutUint32(o[4:], flags)
	dst = append(dst, o[:]...)
	if r.Snap != nil {
		at := len(dst)
		dst = append(dst, o[:4]...)
		dst = AppendPcapComment(dst, r)
		n := len(dst) - at - 4
		binary.LittleEndian.PutUint16(dst[at:], ngOptComment)
		binary.LittleEndian.PutUint16(dst[at+2:], uint16(n))
		dst = pad4(dst, n)
	}
	// opt_endofopt, then the total length again.
	dst = append(dst, ngOptEnd, 0, 0, 0, 0, 0, 0, 0)
	total := uint32(len(dst) - start)
	binary.LittleEndian.PutUint32(dst[start+4:], total)
	binary.LittleEndian.PutUint32(dst[len(dst)-4:], total)
	return dst
}

// pad4 appends the zeros that pad n bytes to 32 bits.
func pad4(dst []byte, n int) []byte {
	var z [3]byte
	return append(dst, z[:(4-n&3)&3]...)
}

// AppendPcapComment appends the comment of a logged packet: the record's
// cwnd, ssthresh, srtt, flowid, state, state source and staleness, under
// the JSON lines keys and with their values. r.Snap must not be nil.
func AppendPcapComment(dst []byte, r *correlate.Record) []byte {
	s := r.Snap
	dst = append(dst, "snd_cwnd="...)
	dst = appendUint(dst, uint64(SndCwnd(s)))
	dst = append(dst, " snd_ssthresh="...)
	dst = appendUint(dst, uint64(SndSsthresh(s)))
	dst = append(dst, " srtt_us="...)
	dst = appendUint(dst, uint64(s.Info.RTT))
	dst = append(dst, " flowid="...)
	dst = appendUint(dst, uint64(FlowID(s)))
	dst = append(dst, " tcp_state="...)
	dst = append(dst, LinuxStateName(s.State)...)
	dst = append(dst, " state_source="...)
	dst = append(dst, s.Source.String()...)
	dst = append(dst, " staleness_ns="...)
	return appendInt(dst, r.Staleness())
}

// appendHeaders appends p's synthesized IPv4 or IPv6 header and TCP header.
func appendHeaders(dst []byte, p *tcp.Packet) []byte {
	const tcpLen = 20
	src, dstAddr := p.Src.Addr().Unmap(), p.Dst.Addr().Unmap()
	if src.Is4() && dstAddr.Is4() {
		var ip [20]byte
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(min(uint64(20+tcpLen)+uint64(p.PayloadLen), 0xffff)))
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
		ip[8] = 64
		ip[9] = 6
		s4, d4 := src.As4(), dstAddr.As4()
		copy(ip[12:], s4[:])
		copy(ip[16:], d4[:])
		binary.BigEndian.PutUint16(ip[10:], ipv4Checksum(ip[:]))
		dst = append(dst, ip[:]...)
	} else {
		var ip [40]byte
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(min(uint64(tcpLen)+uint64(p.PayloadLen), 0xffff)))
		ip[6] = 6
		ip[7] = 64
		s16, d16 := src.As16(), dstAddr.As16()
		copy(ip[8:], s16[:])
		copy(ip[24:], d16[:])
		dst = append(dst, ip[:]...)
	}
	var t [tcpLen]byte
	binary.BigEndian.PutUint16(t[0:], p.Src.Port())
	binary.BigEndian.PutUint16(t[2:], p.Dst.Port())
	binary.BigEndian.PutUint32(t[4:], p.Seq)
	binary.BigEndian.PutUint32(t[8:], p.Ack)
	t[12] = (tcpLen / 4) << 4
	t[13] = p.Flags
	binary.BigEndian.PutUint16(t[14:], p.Window)
	// The checksum covers the payload, which was never captured: it stays
	// 0, except for a segment without payload, whose synthesized segment
	// is whole (so that readers that check it do not flag every pure ACK).
	if p.PayloadLen == 0 {
		ipHdr := dst[len(dst)-20:]
		var sum uint32
		if ipHdr[0]>>4 != 4 {
			ipHdr = dst[len(dst)-40:]
			sum = sumWords(ipHdr[8:40]) + tcpLen + 6
		} else {
			sum = sumWords(ipHdr[12:20]) + tcpLen + 6
		}
		binary.BigEndian.PutUint16(t[16:], ^fold(sum+sumWords(t[:])))
	}
	return append(dst, t[:]...)
}

// sumWords adds b as big-endian 16-bit words (b has an even length).
func sumWords(b []byte) uint32 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	return sum
}

// fold folds a 32-bit one's complement sum into 16 bits.
func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// ipv4Checksum is the IPv4 header checksum of h, whose checksum field is 0.
func ipv4Checksum(h []byte) uint16 { return ^fold(sumWords(h)) }
