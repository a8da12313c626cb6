package output

import (
	"net/netip"

	"github.com/siftr-probe/siftr-probe/correlate"
	"github.com/siftr-probe/siftr-probe/tcp"
)

// JSONL returns the JSON Lines format: one JSON object per line, with every
// SIFTR field under a snake_case name plus the packet's own header fields,
// both timestamps and more of tcp_info. Every object has a "type" key:
// "enable", "record" or "disable". FORMATS.md lists every key.
func JSONL() Format { return jsonlFormat{} }

type jsonlFormat struct{}

func (jsonlFormat) AppendHeader(dst []byte, h *Header) []byte {
	sec, usec := splitTime(timeNanos(h.Time))
	dst = append(dst, `{"type":"enable","enable_time_secs":`...)
	dst = appendInt(dst, sec)
	dst = appendJKey(dst, `,"enable_time_usecs":`, uint64(usec))
	dst = append(dst, `,"siftrver":"`+SIFTRVersion+`","sysname":"`+SysName+`"`...)
	dst = appendJKey(dst, `,"sysver":`, uint64(h.SysVer))
	dst = appendJKey(dst, `,"ipmode":`, uint64(h.IPMode))
	dst = append(dst, `,"state_source":"`...)
	dst = append(dst, h.StateSource.String()...)
	return append(dst, "\"}\n"...)
}

func (jsonlFormat) AppendRecord(dst []byte, r *correlate.Record) []byte {
	p := &r.Pkt
	s := r.Snap
	in := &s.Info
	local, remote := p.Local(), p.Remote()

	dst = append(dst, `{"type":"record","direction":"`...)
	if p.Dir == tcp.DirOut {
		dst = append(dst, "out"...)
	} else {
		dst = append(dst, "in"...)
	}
	dst = append(dst, `","time":`...)
	dst = appendSecUsec(dst, p.Time)
	dst = append(dst, `,"time_ns":`...)
	dst = appendInt(dst, p.Time)
	dst = appendJAddrPort(dst, `,"local_addr":"`, `,"local_port":`, local)
	dst = appendJAddrPort(dst, `,"remote_addr":"`, `,"remote_port":`, remote)

	dst = appendJKey(dst, `,"snd_ssthresh":`, uint64(SndSsthresh(r.Snap)))
	dst = appendJKey(dst, `,"snd_cwnd":`, uint64(SndCwnd(r.Snap)))
	dst = appendJKey(dst, `,"t_flags2":`, uint64(TFlags2(r.Snap)))
	dst = appendJKey(dst, `,"snd_wnd":`, uint64(in.SndWnd))
	dst = appendJKey(dst, `,"rcv_wnd":`, uint64(in.RcvWnd))
	dst = appendJKey(dst, `,"snd_scale":`, uint64(SndScale(r.Snap)))
	dst = appendJKey(dst, `,"rcv_scale":`, uint64(RcvScale(r.Snap)))
	dst = appendJKey(dst, `,"conn_state":`, uint64(ConnState(r.Snap)))
	dst = append(dst, `,"tcp_state":"`...)
	dst = append(dst, LinuxStateName(s.State)...)
	dst = append(dst, '"')
	dst = appendJKey(dst, `,"mss":`, uint64(in.SndMSS))
	dst = appendJKey(dst, `,"srtt_us":`, uint64(in.RTT))
	dst = appendJKey(dst, `,"sack_enabled":`, uint64(SACKEnabled(r.Snap)))
	dst = appendJKey(dst, `,"t_flags":`, uint64(TFlags(r.Snap)))
	dst = appendJKey(dst, `,"rto_us":`, uint64(in.RTO))
	dst = appendJKey(dst, `,"snd_buf_hiwater":`, uint64(s.SndBuf))
	dst = appendJKey(dst, `,"snd_buf_cc":`, uint64(s.WQueue))
	dst = appendJKey(dst, `,"rcv_buf_hiwater":`, uint64(s.RcvBuf))
	dst = appendJKey(dst, `,"rcv_buf_cc":`, uint64(s.RQueue))
	dst = appendJKey(dst, `,"inflight_bytes":`, uint64(Inflight(r.Snap)))
	dst = appendJKey(dst, `,"t_segqlen":`, 0)
	dst = appendJKey(dst, `,"flowid":`, uint64(FlowID(r.Snap)))
	dst = appendJKey(dst, `,"flowtype":`, FlowType)

	dst = appendJKey(dst, `,"seq":`, uint64(p.Seq))
	dst = appendJKey(dst, `,"ack":`, uint64(p.Ack))
	dst = appendJKey(dst, `,"tcp_flags":`, uint64(p.Flags))
	dst = append(dst, `,"tcp_flags_str":"`...)
	dst = AppendTCPFlags(dst, p.Flags)
	dst = append(dst, '"')
	dst = appendJKey(dst, `,"window":`, uint64(p.Window))
	dst = appendJKey(dst, `,"payload_len":`, uint64(p.PayloadLen))
	dst = append(dst, `,"snapshot_time_ns":`...)
	dst = appendInt(dst, s.Time)
	dst = append(dst, `,"staleness_ns":`...)
	dst = appendInt(dst, r.Staleness())
	dst = append(dst, `,"state_source":"`...)
	dst = append(dst, s.Source.String()...)
	dst = append(dst, '"')
	dst = appendOrigin(dst, r.Origin)
	dst = appendJKey(dst, `,"cookie":`, s.Cookie)
	dst = append(dst, `,"cong":"`...)
	dst = appendJSONBytes(dst, s.Cong[:])
	dst = append(dst, '"')
	dst = appendJKey(dst, `,"rttvar_us":`, uint64(in.RTTVar))
	dst = appendJKey(dst, `,"min_rtt_us":`, uint64(in.MinRTT))
	dst = appendJKey(dst, `,"retransmits":`, uint64(in.Retransmits))
	dst = appendJKey(dst, `,"total_retrans":`, uint64(in.TotalRetrans))
	dst = appendJKey(dst, `,"lost":`, uint64(in.Lost))
	dst = appendJKey(dst, `,"sacked":`, uint64(in.Sacked))
	dst = appendJKey(dst, `,"unacked":`, uint64(in.Unacked))
	dst = appendJKey(dst, `,"delivery_rate":`, in.DeliveryRate)
	dst = appendJKey(dst, `,"pacing_rate":`, in.PacingRate)
	dst = append(dst, `,"ca_state":"`...)
	dst = append(dst, CAStateName(in.CAState)...)
	dst = append(dst, '"')
	dst = appendJKey(dst, `,"bytes_acked":`, in.BytesAcked)
	dst = appendJKey(dst, `,"bytes_received":`, in.BytesReceived)
	dst = appendJKey(dst, `,"snd_cwnd_segs":`, uint64(in.SndCwnd))
	dst = appendJKey(dst, `,"snd_ssthresh_segs":`, uint64(in.SndSsthresh))
	dst = appendJKey(dst, `,"notsent_bytes":`, uint64(in.NotsentBytes))
	dst = appendJKey(dst, `,"delivered":`, uint64(in.Delivered))
	return append(dst, "}\n"...)
}

func (jsonlFormat) AppendFooterStart(dst []byte, f *Footer) []byte {
	c := &f.Counts
	pkts, skipped := c.Totals()
	sec, usec := splitTime(timeNanos(f.Time))
	dst = append(dst, `{"type":"disable","disable_time_secs":`...)
	dst = appendInt(dst, sec)
	dst = appendJKey(dst, `,"disable_time_usecs":`, uint64(usec))
	dst = appendJKey(dst, `,"num_inbound_tcp_pkts":`, c.Packets[0])
	dst = appendJKey(dst, `,"num_outbound_tcp_pkts":`, c.Packets[1])
	dst = appendJKey(dst, `,"total_tcp_pkts":`, pkts)
	dst = appendJKey(dst, `,"num_inbound_skipped_pkts_malloc":`, c.SkipMalloc[0])
	dst = appendJKey(dst, `,"num_outbound_skipped_pkts_malloc":`, c.SkipMalloc[1])
	dst = appendJKey(dst, `,"num_inbound_skipped_pkts_tcpcb":`, c.SkipTCPCB[0])
	dst = appendJKey(dst, `,"num_outbound_skipped_pkts_tcpcb":`, c.SkipTCPCB[1])
	dst = appendJKey(dst, `,"num_inbound_skipped_pkts_inpcb":`, c.SkipInPCB[0])
	dst = appendJKey(dst, `,"num_outbound_skipped_pkts_inpcb":`, c.SkipInPCB[1])
	dst = appendJKey(dst, `,"total_skipped_tcp_pkts":`, skipped)
	return append(dst, `,"flow_list":[`...)
}

func (jsonlFormat) AppendFlow(dst []byte, i int, fl *correlate.Flow) []byte {
	if i > 0 {
		dst = append(dst, ',')
	}
	dst = appendJAddrPort(dst, `{"local_addr":"`, `,"local_port":`, fl.Local)
	dst = appendJAddrPort(dst, `,"remote_addr":"`, `,"remote_port":`, fl.Remote)
	return append(dst, '}')
}

func (jsonlFormat) AppendFooterEnd(dst []byte) []byte { return append(dst, "]}\n"...) }

// appendOrigin appends where the record's socket lives: its network
// namespace and pod (empty strings and 0 when unknown).
func appendOrigin(dst []byte, o *correlate.Origin) []byte {
	var none correlate.Origin
	if o == nil {
		o = &none
	}
	dst = appendJKey(dst, `,"netns_inode":`, o.NetNS)
	for _, kv := range [...]struct{ key, v string }{
		{`,"netns_name":"`, o.NetNSName}, {`,"pod_namespace":"`, o.PodNamespace},
		{`,"pod_name":"`, o.PodName}, {`,"pod_uid":"`, o.PodUID}, {`,"container":"`, o.Container},
	} {
		dst = append(dst, kv.key...)
		dst = appendJSONBytes(dst, []byte(kv.v))
		dst = append(dst, '"')
	}
	return dst
}

// appendJKey appends key (`,"name":`) and v.
func appendJKey(dst []byte, key string, v uint64) []byte {
	dst = append(dst, key...)
	return appendUint(dst, v)
}

// appendJAddrPort appends addrKey, the address, a closing quote, portKey and the port.
// Addresses are never escaped: their text forms hold no character JSON needs escaped.
func appendJAddrPort(dst []byte, addrKey, portKey string, ap netip.AddrPort) []byte {
	dst = append(dst, addrKey...)
	dst = appendAddr(dst, ap.Addr())
	dst = append(dst, '"')
	dst = append(dst, portKey...)
	return appendUint(dst, uint64(ap.Port()))
}

const hexDigits = "0123456789abcdef"

// appendJSONBytes appends b, up to its first NUL, as the inside of a JSON
// string: '"', '\\' and bytes outside printable ASCII are escaped as \u00XX
// (the name is kernel-supplied; in practice it is [a-z0-9_]).
func appendJSONBytes(dst []byte, b []byte) []byte {
	for _, c := range b {
		switch {
		case c == 0:
			return dst
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20 || c >= 0x7f:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// tcpFlagLetters are tcpdump's flag letters in tcpdump's order.
var tcpFlagLetters = [...]struct {
	bit    uint8
	letter byte
}{
	{tcp.FlagFIN, 'F'},
	{tcp.FlagSYN, 'S'},
	{tcp.FlagRST, 'R'},
	{tcp.FlagPSH, 'P'},
	{tcp.FlagACK, '.'},
	{tcp.FlagURG, 'U'},
	{tcp.FlagECE, 'E'},
	{tcp.FlagCWR, 'W'},
}

// AppendTCPFlags appends the TCP flags byte as tcpdump prints it between
// brackets: F S R P . U E W in that order ('.' is ACK), so a SYN-ACK is "S.",
// a data segment "P." and a FIN-ACK "F."; no flag at all is "none".
func AppendTCPFlags(dst []byte, flags uint8) []byte {
	if flags == 0 {
		return append(dst, "none"...)
	}
	for _, f := range tcpFlagLetters {
		if flags&f.bit != 0 {
			dst = append(dst, f.letter)
		}
	}
	return dst
}
