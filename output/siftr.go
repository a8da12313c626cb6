package output

import (
	"net/netip"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// SIFTR returns the SIFTR 1.3.0 text format, byte-compatible with FreeBSD's
// siftr(4) log: a tab-separated enable line, one 27-field comma-separated
// data line per record, and a tab-separated disable line with the totals and
// the flow list. See FORMATS.md for the Linux source of every field.
func SIFTR() Format { return &siftrFormat{} }

// siftrFormat keeps the formatted state fields (7 to 27) of the last
// snapshot it formatted: every packet that one lookup served shares them
// (and the snapshot itself, see Record), and formatting those numbers is
// most of the cost of a line. Holding the pointer keeps the snapshot alive,
// so pointer identity is snapshot identity.
type siftrFormat struct {
	snap  *tcp.Snapshot
	state []byte
}

// appendAddr appends a as SIFTR prints addresses: dotted quad for IPv4
// (including v4-mapped IPv6, as a dual-stack socket sees an IPv4 peer) and
// the compressed form for IPv6.
func appendAddr(dst []byte, a netip.Addr) []byte {
	return a.Unmap().AppendTo(dst)
}

func (*siftrFormat) AppendHeader(dst []byte, h *Header) []byte {
	sec, usec := splitTime(timeNanos(h.Time))
	dst = append(dst, "enable_time_secs="...)
	dst = appendInt(dst, sec)
	dst = append(dst, "\tenable_time_usecs="...)
	dst = appendUsec6(dst, usec)
	dst = append(dst, "\tsiftrver="+SIFTRVersion+"\tsysname="+SysName+"\tsysver="...)
	dst = appendUint(dst, uint64(h.SysVer))
	dst = append(dst, "\tipmode="...)
	dst = appendUint(dst, uint64(h.IPMode))
	return append(dst, '\n')
}

func (f *siftrFormat) AppendRecord(dst []byte, r *correlate.Record) []byte {
	p := &r.Pkt
	local, remote := p.Local(), p.Remote()

	dst = append(dst, p.Dir.String()[0], ',')
	dst = appendSecUsec(dst, p.Time)
	dst = append(dst, ',')
	dst = appendAddr(dst, local.Addr())
	dst = append(dst, ',')
	dst = appendUint(dst, uint64(local.Port()))
	dst = append(dst, ',')
	dst = appendAddr(dst, remote.Addr())
	dst = append(dst, ',')
	dst = appendUint(dst, uint64(remote.Port()))

	if f.snap != r.Snap {
		f.state = appendState(f.state[:0], r)
		f.snap = r.Snap
	}
	return append(dst, f.state...)
}

// appendState appends fields 7 to 27 of a data line, which depend on the
// snapshot only, and the newline.
func appendState(dst []byte, r *correlate.Record) []byte {
	s := r.Snap
	dst = appendField(dst, uint64(SndSsthresh(r.Snap)))
	dst = appendField(dst, uint64(SndCwnd(r.Snap)))
	dst = appendField(dst, uint64(TFlags2(r.Snap)))
	dst = appendField(dst, uint64(s.Info.SndWnd))
	dst = appendField(dst, uint64(s.Info.RcvWnd))
	dst = appendField(dst, uint64(SndScale(r.Snap)))
	dst = appendField(dst, uint64(RcvScale(r.Snap)))
	dst = appendField(dst, uint64(ConnState(r.Snap)))
	dst = appendField(dst, uint64(s.Info.SndMSS))
	dst = appendField(dst, uint64(s.Info.RTT))
	dst = appendField(dst, uint64(SACKEnabled(r.Snap)))
	dst = appendField(dst, uint64(TFlags(r.Snap)))
	dst = appendField(dst, uint64(s.Info.RTO))
	dst = appendField(dst, uint64(s.SndBuf))
	dst = appendField(dst, uint64(s.WQueue))
	dst = appendField(dst, uint64(s.RcvBuf))
	dst = appendField(dst, uint64(s.RQueue))
	dst = appendField(dst, uint64(Inflight(r.Snap)))
	dst = append(dst, ",0"...) // t_segqlen: Linux does not export its out-of-order queue length
	dst = appendField(dst, uint64(FlowID(r.Snap)))
	dst = append(dst, ",63\n"...) // flowtype: FlowType
	return dst
}

// appendField appends ',' and v in decimal.
func appendField(dst []byte, v uint64) []byte {
	dst = append(dst, ',')
	return appendUint(dst, v)
}

func (*siftrFormat) AppendFooterStart(dst []byte, f *Footer) []byte {
	c := &f.Counts
	pkts, skipped := c.Totals()
	sec, usec := splitTime(timeNanos(f.Time))
	dst = append(dst, "disable_time_secs="...)
	dst = appendInt(dst, sec)
	dst = append(dst, "\tdisable_time_usecs="...)
	dst = appendUsec6(dst, usec)
	dst = appendKey(dst, "\tnum_inbound_tcp_pkts=", c.Packets[0])
	dst = appendKey(dst, "\tnum_outbound_tcp_pkts=", c.Packets[1])
	dst = appendKey(dst, "\ttotal_tcp_pkts=", pkts)
	dst = appendKey(dst, "\tnum_inbound_skipped_pkts_malloc=", c.SkipMalloc[0])
	dst = appendKey(dst, "\tnum_outbound_skipped_pkts_malloc=", c.SkipMalloc[1])
	dst = appendKey(dst, "\tnum_inbound_skipped_pkts_tcpcb=", c.SkipTCPCB[0])
	dst = appendKey(dst, "\tnum_outbound_skipped_pkts_tcpcb=", c.SkipTCPCB[1])
	dst = appendKey(dst, "\tnum_inbound_skipped_pkts_inpcb=", c.SkipInPCB[0])
	dst = appendKey(dst, "\tnum_outbound_skipped_pkts_inpcb=", c.SkipInPCB[1])
	dst = appendKey(dst, "\ttotal_skipped_tcp_pkts=", skipped)
	return append(dst, "\tflow_list="...)
}

func (*siftrFormat) AppendFlow(dst []byte, _ int, fl *correlate.Flow) []byte {
	dst = appendAddr(dst, fl.Local.Addr())
	dst = append(dst, ';')
	dst = appendUint(dst, uint64(fl.Local.Port()))
	dst = append(dst, '-')
	dst = appendAddr(dst, fl.Remote.Addr())
	dst = append(dst, ';')
	dst = appendUint(dst, uint64(fl.Remote.Port()))
	return append(dst, ',')
}

func (*siftrFormat) AppendFooterEnd(dst []byte) []byte { return append(dst, '\n') }

func appendKey(dst []byte, key string, v uint64) []byte {
	dst = append(dst, key...)
	return appendUint(dst, v)
}
